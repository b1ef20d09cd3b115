//! The command line of `evidenceosctl` (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::operator_args::{
    AuditArgs, CanaryCommand, EpochCommand, GovernanceCommand, KeysCommand, NullspecCommand, OracleCommand,
};

/// Client and operator tool for the EvidenceOS daemon.
///
/// `claim` and `capsule` talk gRPC (package evidenceos.v2) to a running evidenceosd; their results
/// go to stdout as aligned `key: value` lines or, with --json, as one JSON object. The operator
/// commands (keys, nullspec, oracle, epoch, canary, governance, audit) work on the daemon's data
/// directory, running or not, print JSON, and every change they make is signed and recorded in
/// etl_governance_events.log; the daemon applies changes at its next SIGHUP. Progress and errors
/// go to stderr. Exit status: 0 when the command did its job, 1 when it failed (one line on stderr
/// says why), 2 for a command-line error.
#[derive(Debug, Parser)]
#[command(name = "evidenceosctl", version, about, long_about)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) connection: Connection,

    #[command(subcommand)]
    pub(crate) command: Command,
}

const CONNECTION: &str = "Connection (before or after the subcommand)";

/// How to reach and authenticate to the daemon; accepted before or after the subcommand.
#[derive(Debug, Args)]
pub(crate) struct Connection {
    /// gRPC endpoint of the daemon: http://HOST:PORT (plaintext), or https://HOST:PORT for a
    /// daemon started with --tls-cert (always the case with --production); https needs --ca-cert.
    #[arg(long, global = true, default_value = "http://127.0.0.1:50051", value_name = "URL", help_heading = CONNECTION)]
    pub(crate) endpoint: String,

    /// CA certificate (PEM) that signs the daemon's TLS certificate; required for an https://
    /// endpoint (system trust roots are not used), refused with http://.
    #[arg(long, global = true, value_name = "PEM", help_heading = CONNECTION)]
    pub(crate) ca_cert: Option<PathBuf>,

    /// Name to verify in the daemon's certificate, when it differs from the endpoint's host (e.g.
    /// the endpoint is an IP address and the certificate names a DNS name).
    #[arg(long, global = true, value_name = "NAME", help_heading = CONNECTION)]
    pub(crate) tls_server_name: Option<String>,

    /// Client certificate (PEM) for a daemon that requires one (--mtls-client-ca with
    /// --require-client-cert): the daemon takes the caller's identity and role from it. Needs
    /// --client-key and an https:// endpoint.
    #[arg(long, global = true, value_name = "PEM", help_heading = CONNECTION)]
    pub(crate) client_cert: Option<PathBuf>,

    /// Private key (PEM) of --client-cert.
    #[arg(long, global = true, value_name = "PEM", help_heading = CONNECTION)]
    pub(crate) client_key: Option<PathBuf>,

    /// Sign every request with the HMAC key KID (SPEC §2.3: x-request-id, x-evidenceos-key-id,
    /// x-evidenceos-timestamp, x-evidenceos-signature); the daemon gives the key's role. The secret
    /// comes from --hmac-key-file or else the EVIDENCEOS_HMAC_KEYS variable, never the command line.
    #[arg(long, global = true, value_name = "KID", help_heading = CONNECTION)]
    pub(crate) hmac_key_id: Option<String>,

    /// File of HMAC keys in the daemon's --auth-hmac-key-file format (`KID:HEXSECRET[:ROLE]` per
    /// line, # comments); the entry of --hmac-key-id is used. Keep it mode 0600. Without it, the
    /// EVIDENCEOS_HMAC_KEYS variable gives the same entries, comma-separated.
    #[arg(long, global = true, value_name = "FILE", requires = "hmac_key_id", help_heading = CONNECTION)]
    pub(crate) hmac_key_file: Option<PathBuf>,

    /// Bearer token, sent as the `authorization: Bearer <TOKEN>` header. The daemon maps it to a
    /// role: agent tokens may run claims, auditor or operator tokens may fetch capsules and proofs.
    /// Prefer the EVIDENCEOS_TOKEN variable: command lines are visible to other local users. The
    /// token is never printed.
    #[arg(
        long,
        global = true,
        env = "EVIDENCEOS_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        help_heading = CONNECTION
    )]
    pub(crate) token: Option<Token>,

    /// Deadline in seconds for connecting and for each RPC.
    #[arg(
        long,
        global = true,
        default_value_t = 30,
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(1..=86_400),
        help_heading = CONNECTION
    )]
    pub(crate) timeout_secs: u64,
}

/// A bearer token. Its `Debug` form is redacted so it never reaches a log or a panic message.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Token(pub(crate) String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl std::str::FromStr for Token {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Err("the token is empty".into());
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("a token must be printable ASCII without spaces (it travels in an HTTP header)".into());
        }
        Ok(Self(text.to_string()))
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run claims: create, commit, seal and execute claim code against a holdout.
    #[command(subcommand)]
    Claim(ClaimCommand),

    /// Fetch claim capsules and verify them against the transparency log.
    #[command(subcommand)]
    Capsule(CapsuleCommand),

    /// ETL signing keys and operator keys: generate, list, activate (at restart).
    #[command(subcommand)]
    Keys(KeysCommand),

    /// NullSpec contracts: create (sign), install, activate, list, show.
    #[command(subcommand)]
    Nullspec(NullspecCommand),

    /// Oracle operator records: list, show, set-ttl, rotate-calibration.
    #[command(subcommand)]
    Oracle(OracleCommand),

    /// The kernel epoch: advance (signed), show.
    #[command(subcommand)]
    Epoch(EpochCommand),

    /// Drift canaries: status, sign-reset, reset (signed governance event).
    #[command(subcommand)]
    Canary(CanaryCommand),

    /// The governance event log: list, show, verify.
    #[command(subcommand)]
    Governance(GovernanceCommand),

    Audit(AuditArgs),

    /// The published transparency log (evidenceosd --publish-dir): verify entries, monitor.
    #[command(subcommand)]
    Log(super::log::LogCommand),
}

impl Command {
    /// Operator and log commands work on files and never connect to the daemon.
    pub(crate) fn is_offline(&self) -> bool {
        !matches!(self, Self::Claim(_) | Self::Capsule(_))
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum ClaimCommand {
    Run(RunArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum CapsuleCommand {
    Verify(VerifyArgs),
}

/// Run claim code against a holdout and print the daemon's verdict.
///
/// Drives one claim through its whole lifecycle: CreateClaimV2, CommitArtifacts (the module with
/// its SHA-256 as artifact "wasm", plus one "capsule" artifact per --depends-on), FreezeGates,
/// SealClaim and ExecuteClaimV2. Each step prints one progress line on stderr; the outcome (claim
/// id, state, decision, reason codes, e-value, certified, canonical output, capsule hash, ETL
/// index) goes to stdout. Needs a token with the agent (or operator) role when the daemon has
/// authentication configured.
///
/// The claim id binds the name, the holdout, every setting below and the SHA-256 of the module and
/// of its dependencies, so running the same code with the same settings again finds the claim that
/// already ran; that is reported as an error (pick another --name for a fresh claim).
///
/// Exit status 0 means the claim ran and has a capsule, whatever the verdict: CERTIFIED (decision
/// APPROVE), REVOKED (REJECT) or FROZEN (DEFER, e.g. on the heavy lane) are all successful runs;
/// check the state or `certified` in the output. Exit status 1 means a step failed; the message
/// names the step and the gRPC status code.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Claim code: WebAssembly text (.wat, compiled here) or a binary module (.wasm). It must
    /// export `memory` and `run`, and may import only `oracle_query` and `emit_structured_claim`.
    #[arg(long, value_name = "FILE")]
    pub(crate) wasm: PathBuf,

    /// Holdout to evaluate against: the name of its directory holdouts/<REF>/ in the daemon's
    /// data directory.
    #[arg(long, value_name = "REF")]
    pub(crate) holdout: String,

    /// Claim name (1..128 characters of A-Z a-z 0-9 . _ : / -). Claims with the same name, holdout
    /// and settings share one topic budget. Default: the file name of --wasm without its extension.
    #[arg(long, value_name = "NAME")]
    pub(crate) name: Option<String>,

    /// Oracle id; with the holdout it selects the active NullSpec that judges the claim.
    #[arg(long, default_value = "default", value_name = "ID")]
    pub(crate) oracle_id: String,

    /// Significance level alpha in millionths (50000 = 0.05). A claim certifies only if its
    /// evidence (wealth) reaches 2^k / alpha, k being the bits its oracle calls leaked.
    #[arg(long, default_value_t = 50_000, value_name = "N", value_parser = clap::value_parser!(u32).range(1..1_000_000))]
    pub(crate) alpha_micros: u32,

    /// Execution lane.
    #[arg(long, value_enum, default_value_t = Lane::Fast)]
    pub(crate) lane: Lane,

    /// Size N of the oracle's output alphabet; each oracle answer leaks log2(N) bits, charged
    /// (times the dependence tax) against the claim's budget.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u32).range(2..))]
    pub(crate) num_symbols: u32,

    /// The claim's budget, both in k bits and in access credit.
    #[arg(long, default_value_t = 64, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) access_credit: u64,

    /// Schema of the claim's canonical output.
    #[arg(long, value_enum, default_value_t = OutputSchema::ScV0, value_name = "SCHEMA")]
    pub(crate) output_schema: OutputSchema,

    /// Capsule hash (64 hex digits) of an earlier claim this one builds on; repeat for several.
    /// If one of them is revoked later, this claim becomes TAINTED.
    #[arg(long, value_name = "CAPSULE_HASH_HEX", value_parser = parse_hash_hex)]
    pub(crate) depends_on: Vec<[u8; 32]>,

    /// Print the outcome as one JSON object instead of `key: value` lines.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Fetch a claim's capsule and check it against the signed transparency log.
///
/// Calls FetchCapsule, GetPublicKey (for the key that signed the tree head) and
/// GetConsistencyProof, then checks, printing one line per check: the capsule hash is the SHA-256
/// of the capsule bytes; the bytes are a claim capsule (schema evidenceos.v2.claim_capsule) for
/// the requested claim id; the public key's id (its SHA-256) is the tree head's key id; the tree
/// head's Ed25519 signature verifies; the capsule is included in the signed tree (RFC 6962 leaf
/// hash and inclusion proof); and the tree just after the capsule was appended is a prefix of the
/// signed tree (consistency proof).
///
/// FetchCapsule and GetConsistencyProof need an auditor or operator token. Exit status 0 when
/// every check passes, 1 when any check fails (all checks are still printed) or an RPC fails.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// Id of the claim whose capsule to verify (64 hex digits, as printed by `claim run`).
    #[arg(long, value_name = "HEX", value_parser = parse_hash_hex)]
    pub(crate) claim_id: [u8; 32],

    /// Print the report as one JSON object instead of one line per check.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Lane {
    /// Up to 32 oracle calls, 1,000,000 fuel, 4 memory pages; may certify.
    Fast,
    /// Up to 8 oracle calls, 250,000 fuel, 2 memory pages, stronger hysteresis; always decides
    /// DEFER, leaving the claim FROZEN.
    Heavy,
}

impl Lane {
    pub(crate) fn wire(self) -> &'static str {
        match self {
            Self::Fast => "fast",
            Self::Heavy => "heavy",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputSchema {
    /// The legacy schema: one canonical oracle symbol.
    #[value(name = "legacy/v1")]
    LegacyV1,
    /// One canonical oracle symbol.
    #[value(name = "EVIDENCEOS_SC_V0")]
    ScV0,
}

impl OutputSchema {
    pub(crate) fn wire(self) -> &'static str {
        match self {
            Self::LegacyV1 => "legacy/v1",
            Self::ScV0 => "EVIDENCEOS_SC_V0",
        }
    }
}

/// Parses exactly 32 bytes written as 64 hex digits.
pub(crate) fn parse_hash_hex(text: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out)
        .map_err(|_| format!("expected 64 hex digits (32 bytes), got {} characters", text.len()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("evidenceosctl").chain(args.iter().copied()))
    }

    fn run_args(cli: Cli) -> RunArgs {
        match cli.command {
            Command::Claim(ClaimCommand::Run(args)) => args,
            other => panic!("expected claim run, got {other:?}"),
        }
    }

    const HASH: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn claim_run_defaults() {
        let cli = parse(&["claim", "run", "--wasm", "examples/claim_mod3.wat", "--holdout", "demo"]).unwrap();
        assert_eq!(cli.connection.endpoint, "http://127.0.0.1:50051");
        assert_eq!(cli.connection.timeout_secs, 30);
        let args = run_args(cli);
        assert_eq!(args.wasm, PathBuf::from("examples/claim_mod3.wat"));
        assert_eq!(args.holdout, "demo");
        assert_eq!(args.name, None);
        assert_eq!(args.oracle_id, "default");
        assert_eq!(args.alpha_micros, 50_000);
        assert_eq!(args.lane, Lane::Fast);
        assert_eq!(args.num_symbols, 4);
        assert_eq!(args.access_credit, 64);
        assert_eq!(args.output_schema, OutputSchema::ScV0);
        assert!(args.depends_on.is_empty());
        assert!(!args.json);
    }

    #[test]
    fn claim_run_with_every_flag_and_connection_flags_after_the_subcommand() {
        let cli = parse(&[
            "claim",
            "run",
            "--wasm",
            "x.wasm",
            "--holdout",
            "h",
            "--name",
            "my-claim",
            "--oracle-id",
            "accuracy",
            "--alpha-micros",
            "1000",
            "--lane",
            "heavy",
            "--num-symbols",
            "8",
            "--access-credit",
            "128",
            "--output-schema",
            "legacy/v1",
            "--depends-on",
            HASH,
            "--depends-on",
            &"ff".repeat(32),
            "--json",
            "--endpoint",
            "http://10.0.0.1:7000",
            "--token",
            "s3cret",
            "--timeout-secs",
            "5",
        ])
        .unwrap();
        assert_eq!(cli.connection.endpoint, "http://10.0.0.1:7000");
        assert_eq!(cli.connection.token, Some(Token("s3cret".into())));
        assert_eq!(cli.connection.timeout_secs, 5);
        let args = run_args(cli);
        assert_eq!(args.name.as_deref(), Some("my-claim"));
        assert_eq!(args.oracle_id, "accuracy");
        assert_eq!(args.alpha_micros, 1000);
        assert_eq!((args.lane, args.lane.wire()), (Lane::Heavy, "heavy"));
        assert_eq!(args.num_symbols, 8);
        assert_eq!(args.access_credit, 128);
        assert_eq!(args.output_schema.wire(), "legacy/v1");
        assert_eq!(args.depends_on, vec![parse_hash_hex(HASH).unwrap(), [0xff; 32]]);
        assert!(args.json);
    }

    #[test]
    fn connection_flags_before_the_subcommand() {
        let cli = parse(&["--endpoint", "http://h:1", "capsule", "verify", "--claim-id", HASH, "--json"]).unwrap();
        assert_eq!(cli.connection.endpoint, "http://h:1");
        match cli.command {
            Command::Capsule(CapsuleCommand::Verify(args)) => {
                assert_eq!(hex::encode(args.claim_id), HASH);
                assert!(args.json);
            }
            other => panic!("expected capsule verify, got {other:?}"),
        }
    }

    #[test]
    fn bad_values_are_rejected() {
        let base = ["claim", "run", "--wasm", "a.wat", "--holdout", "demo"];
        let with = |extra: &[&str]| parse(&[&base[..], extra].concat());
        assert!(with(&[]).is_ok());
        for bad in [
            &["--lane", "medium"][..],
            &["--output-schema", "cbrn/v1"],
            &["--alpha-micros", "0"],
            &["--alpha-micros", "1000000"],
            &["--num-symbols", "1"],
            &["--access-credit", "0"],
            &["--depends-on", "abc"],
            &["--depends-on", &"zz".repeat(32)],
            &["--timeout-secs", "0"],
            &["--token", "has space"],
            &["--token", ""],
        ] {
            assert!(with(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(parse(&["claim", "run", "--wasm", "a.wat"]).is_err(), "--holdout is required");
        assert!(parse(&["claim", "run", "--holdout", "demo"]).is_err(), "--wasm is required");
        assert!(parse(&["capsule", "verify"]).is_err(), "--claim-id is required");
        assert!(parse(&["capsule", "verify", "--claim-id", &HASH[..62]]).is_err());
    }

    #[test]
    fn the_token_comes_from_the_environment_and_is_never_shown() {
        let command = Cli::command();
        let token = command.get_arguments().find(|a| a.get_id() == "token").unwrap();
        assert_eq!(token.get_env(), Some(std::ffi::OsStr::new("EVIDENCEOS_TOKEN")));
        assert!(token.is_hide_env_values_set());
        let cli = parse(&["--token", "topsecret", "capsule", "verify", "--claim-id", HASH]).unwrap();
        assert!(!format!("{cli:?}").contains("topsecret"));
    }

    #[test]
    fn every_subcommand_and_flag_is_documented() {
        fn check(command: &clap::Command, path: &str) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" {
                    assert!(arg.get_help().is_some(), "{path} --{id} has no help text");
                }
            }
            // `help` subcommands are clap's own.
            for sub in command.get_subcommands().filter(|sub| sub.get_name() != "help") {
                let path = format!("{path} {}", sub.get_name());
                assert!(sub.get_about().is_some(), "{path} has no about text");
                if sub.get_subcommands().next().is_none() {
                    assert!(sub.get_long_about().is_some(), "{path} has no long about text");
                }
                check(sub, &path);
            }
        }
        let mut command = Cli::command();
        command.build();
        check(&command, "evidenceosctl");
    }
}
