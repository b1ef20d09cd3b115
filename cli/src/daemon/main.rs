//! `evidenceosd`: the EvidenceOS verification kernel daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use evidenceos_core::environment::Settings;
use evidenceos_core::state::Policy;
use evidenceos_core::{Kernel, KernelConfig};
use evidenceos_io_sync::{DataDir, FileExecutor, SigningKeyStatus, drive, log_event, now};

mod publish;
mod reload;
mod security;
#[cfg(feature = "runtime-sync")]
mod serve_sync;
#[cfg(feature = "runtime-tokio")]
mod serve_tokio;
mod serving;
mod tiles;

use security::security;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RuntimeKind {
    /// Multi-threaded async runtime (tokio) serving gRPC over HTTP/2.
    #[cfg(feature = "runtime-tokio")]
    Tokio,
    /// One blocking thread serving the Connect protocol (unary POST, protobuf or JSON bodies)
    /// over HTTP/1.1; the commands ready in one loop turn share one batch of fsyncs.
    #[cfg(feature = "runtime-sync")]
    Sync,
}

#[cfg(feature = "runtime-tokio")]
const DEFAULT_RUNTIME: RuntimeKind = RuntimeKind::Tokio;
#[cfg(not(feature = "runtime-tokio"))]
const DEFAULT_RUNTIME: RuntimeKind = RuntimeKind::Sync;

#[cfg(not(any(feature = "runtime-tokio", feature = "runtime-sync")))]
compile_error!("evidenceosd needs a runtime: enable feature runtime-tokio, runtime-sync or both");

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// EvidenceOS verification kernel daemon.
///
/// With --runtime tokio (the default) serves the EvidenceOS gRPC API (packages evidenceos.v2 and
/// evidenceos.v1, grpc.health.v1 and server reflection) from one listener. With --runtime sync
/// one blocking thread serves every unary RPC over the Connect protocol on HTTP/1.1
/// (POST /evidenceos.v2.EvidenceOS/<Method>, application/proto or application/json bodies), one
/// request at a time; WatchRevocations is replaced by polling GetRevocationFeed.
///
/// All state lives in the data directory, the same for both runtimes: the
/// transparency log (etl.log), the journal of accepted commands (journal.log), the checkpoint
/// (state.json) and the signing keys (keys/). A missing signing key is generated on first start.
/// One daemon per data directory: a second one is refused.
///
/// Logs go to stderr (filter with EVIDENCEOS_LOG, e.g. EVIDENCEOS_LOG=debug). Once serving, one
/// line on stdout says where it listens and which key signs tree heads. SIGTERM or SIGINT stops
/// accepting, finishes in-flight requests, writes a checkpoint and exits 0.
#[derive(Debug, Parser)]
#[command(name = "evidenceosd", version, about, long_about)]
struct Args {
    /// Address to listen on (use port 0 to pick a free port; the chosen one is printed).
    #[arg(long, default_value = "127.0.0.1:50051", env = "EVIDENCEOS_LISTEN")]
    listen: SocketAddr,

    /// Data directory; created if absent.
    #[arg(long, default_value = "./evidenceos-data", env = "EVIDENCEOS_DATA_DIR")]
    data_dir: PathBuf,

    /// Which runtime serves requests.
    #[arg(long, value_enum, default_value_t = DEFAULT_RUNTIME, env = "EVIDENCEOS_RUNTIME")]
    runtime: RuntimeKind,

    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "EVIDENCEOS_LOG_FORMAT")]
    log_format: LogFormat,

    /// Enforce principal access credit: each new principal starts with balance = limit = N.
    /// Off when not given (no credit is charged).
    #[arg(long, value_name = "N")]
    default_credit_limit: Option<u64>,

    /// Most of a shared (global) holdout pool's budget, in percent, that one principal's open
    /// reservations may total; a CreateClaim/CreateClaimV2 beyond it is RESOURCE_EXHAUSTED. A
    /// principal holding nothing may always reserve what fits. 100 turns the cap off.
    #[arg(
        long,
        default_value_t = evidenceos_core::state::DEFAULT_MAX_PRINCIPAL_RESERVATION_SHARE_PERCENT,
        value_name = "PERCENT",
        value_parser = clap::value_parser!(u8).range(1..=100)
    )]
    max_principal_reservation_share_percent: u8,

    /// Canary drift level alpha_drift in millionths (SPEC §5.8): a claim name's canary freezes
    /// once the e-values of its executions after the first certification multiply to 1/alpha_drift.
    #[arg(long, default_value_t = 1000, value_name = "MICROS", value_parser = clap::value_parser!(u32).range(1..1_000_000))]
    canary_alpha_drift_micros: u32,

    /// On SIGTERM/SIGINT, how long in-flight RPCs may take before open connections are cut.
    /// The kernel's own work (journal, ETL, checkpoint) always completes.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    shutdown_grace_secs: u64,

    /// Production mode: refuses to start without TLS, without authentication, or with insecure
    /// development switches; claims need an operator-activated NullSpec.
    #[arg(long, env = "EVIDENCEOS_PRODUCTION_MODE", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    production: bool,

    /// Server certificate chain (PEM). Enables TLS 1.2/1.3; needs --tls-key.
    #[arg(long, value_name = "PEM")]
    tls_cert: Option<PathBuf>,

    /// Private key of --tls-cert (PEM).
    #[arg(long, value_name = "PEM")]
    tls_key: Option<PathBuf>,

    /// CA certificate (PEM) that signs client certificates; with --require-client-cert, every
    /// client must present a certificate it verifies (mTLS).
    #[arg(long, value_name = "PEM")]
    mtls_client_ca: Option<PathBuf>,

    /// Require client certificates (needs --mtls-client-ca).
    #[arg(long)]
    require_client_cert: bool,

    /// Client certificates with the operator role, by hex SHA-256 of the certificate (DER),
    /// comma-separated. Other verified certificates are agents.
    #[arg(long, value_delimiter = ',', value_name = "SHA256")]
    operator_cert_fingerprints: Vec<String>,

    /// Client certificates with the auditor role, by hex SHA-256 of the certificate (DER).
    #[arg(long, value_delimiter = ',', value_name = "SHA256")]
    auditor_cert_fingerprints: Vec<String>,

    /// HMAC request-signing key `KID:HEXSECRET[:ROLE]` (role agent|auditor|operator, default
    /// agent); repeatable. Prefer EVIDENCEOS_HMAC_KEYS (comma list) or --auth-hmac-key-file.
    #[arg(long, env = "EVIDENCEOS_HMAC_KEYS", hide_env_values = true, value_delimiter = ',', value_name = "KID:HEX")]
    auth_hmac_key: Vec<String>,

    /// File with one HMAC key `KID:HEXSECRET[:ROLE]` per line (# comments allowed).
    #[arg(long, value_name = "FILE")]
    auth_hmac_key_file: Option<PathBuf>,

    /// Bearer token with the auditor role (SPEC §2.2). Prefer the EVIDENCEOS_AUTH_TOKEN variable:
    /// command lines are visible to other local users.
    #[arg(long, env = "EVIDENCEOS_AUTH_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    auth_token: Option<String>,

    /// File holding the auditor bearer token (first line; surrounding whitespace ignored).
    #[arg(long, value_name = "FILE")]
    auth_token_file: Option<PathBuf>,

    /// Bearer tokens with the agent role (comma-separated or repeated). Env: EVIDENCEOS_AGENT_TOKENS.
    #[arg(long, env = "EVIDENCEOS_AGENT_TOKENS", hide_env_values = true, value_delimiter = ',', value_name = "TOKENS")]
    agent_tokens: Vec<String>,

    /// Bearer tokens with the auditor role. Env: EVIDENCEOS_AUDITOR_TOKENS.
    #[arg(
        long,
        env = "EVIDENCEOS_AUDITOR_TOKENS",
        hide_env_values = true,
        value_delimiter = ',',
        value_name = "TOKENS"
    )]
    auditor_tokens: Vec<String>,

    /// Bearer tokens with the operator role. Env: EVIDENCEOS_OPERATOR_TOKENS.
    #[arg(
        long,
        env = "EVIDENCEOS_OPERATOR_TOKENS",
        hide_env_values = true,
        value_delimiter = ',',
        value_name = "TOKENS"
    )]
    operator_tokens: Vec<String>,

    /// Serve Prometheus/OpenMetrics text at http://ADDR/metrics (plain HTTP: keep it on a
    /// private interface). Off when not given.
    #[arg(long, env = "EVIDENCEOS_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,

    /// Largest request message accepted, in bytes; larger ones get RESOURCE_EXHAUSTED before
    /// they are decoded. Size it for your largest claim module.
    #[arg(long, default_value_t = evidenceos_grpc::DEFAULT_MAX_REQUEST_BYTES, value_name = "BYTES")]
    max_request_bytes: usize,

    /// Serve the legacy ExecuteClaim, whose decision the client supplies (no oracle, no e-value).
    /// Only for migrating old clients; such capsules say `eprocess_kind: client_decision_v1`.
    #[arg(long)]
    enable_insecure_v1: bool,

    /// Open connections beyond this are closed as soon as they are accepted.
    #[arg(long, default_value_t = 256, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=65_536))]
    max_connections: u64,

    /// A request must arrive whole within this many milliseconds (of its first byte; over gRPC, of
    /// its headers), or it is cut off: the sync runtime closes its connection (others are served
    /// meanwhile), gRPC fails the call with DEADLINE_EXCEEDED. Sync runtime: also bounds writing
    /// an answer to a client that does not read it; nobody else is served during that write.
    #[arg(long, default_value_t = 10_000, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    request_timeout_ms: u64,

    /// Connections idle this long (no call in flight, nothing sent or received) are closed.
    #[arg(long, default_value_t = 60, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout_secs: u64,

    /// Write a checkpoint after this many journal records (bounds replay time at restart).
    #[arg(long, default_value_t = 4096, value_name = "RECORDS", value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_every: u64,

    #[command(flatten)]
    publish: publish::PublishArgs,

    #[command(flatten)]
    tiles: tiles::TilesArgs,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EVIDENCEOS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Token flags whose values came from the command line rather than the environment.
const SECRET_FLAGS: [&str; 5] = ["auth_token", "agent_tokens", "auditor_tokens", "operator_tokens", "auth_hmac_key"];

fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Args::command().get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    init_logging(args.log_format);
    for flag in SECRET_FLAGS {
        if matches.value_source(flag) == Some(clap::parser::ValueSource::CommandLine) {
            let variable = format!("EVIDENCEOS_{}", flag.to_ascii_uppercase());
            tracing::warn!(event = "secret_on_command_line", flag = %flag.replace('_', "-"), "secrets on the command line are visible to other local users; use {variable} instead");
        }
    }
    match run(args) {
        Ok(code) => code,
        Err(message) => {
            tracing::error!(event = "startup_failed", "{message}");
            ExitCode::from(1)
        }
    }
}

fn run(args: Args) -> Result<ExitCode, String> {
    // Configuration errors first: nothing is touched on disk for a daemon that will not start.
    let security = security(&args)?;
    let dir = DataDir::open(&args.data_dir).map_err(|e| e.to_string())?;
    match dir.ensure_signing_key().map_err(|e| e.to_string())? {
        SigningKeyStatus::Generated(id) => {
            tracing::info!(event = "signing_key_generated", key_id = %id, "generated a new ETL signing key")
        }
        SigningKeyStatus::Existing(id) => {
            tracing::info!(event = "signing_key_loaded", key_id = %id, "using the existing ETL signing key")
        }
    }
    let config = KernelConfig {
        policy: Policy {
            default_credit_limit: args.default_credit_limit,
            max_principal_reservation_share_percent: args.max_principal_reservation_share_percent,
        },
        checkpoint_every: args.checkpoint_every,
        ..KernelConfig::default()
    };
    match args.default_credit_limit {
        Some(limit) => tracing::info!(
            event = "credit_enforcement",
            enabled = true,
            default_limit = limit,
            "principal credit is enforced"
        ),
        None => tracing::info!(
            event = "credit_enforcement",
            enabled = false,
            "principal credit is not enforced (no --default-credit-limit)"
        ),
    }

    tracing::info!(
        event = "reservation_share",
        percent = args.max_principal_reservation_share_percent,
        "one principal's reservations are capped at this share of a shared holdout pool"
    );
    let settings = settings_from(&args);
    if settings.insecure_v1 {
        tracing::warn!(event = "insecure_v1_enabled", "legacy ExecuteClaim with client-supplied decisions is enabled");
    }
    let environment = dir.read_environment(settings).map_err(|e| e.to_string())?;
    tracing::info!(
        event = "environment_loaded",
        holdouts = environment.holdouts.len(),
        nullspecs = environment.nullspecs.len(),
        active_nullspecs = environment.active_nullspecs.len(),
        "operator material loaded"
    );
    if !environment.settings.production {
        tracing::warn!(
            event = "development_nullspec",
            "development mode: claims without an active NullSpec are judged under the development NullSpec (fair-coin guessing of the holdout labels); production refuses them"
        );
    }
    let config = KernelConfig { environment, ..config };
    if let Some(path) = dir.foreign_intent_record() {
        tracing::warn!(
            event = "pending_mutation_not_applied",
            path = %path.display(),
            "pending_mutation.json (the compatible implementation's intent record) is present and is NOT applied: this daemon's intent record is journal.log. If the compatible implementation last ran on this directory, let it finish its own recovery first; then move the file out of the data directory"
        );
    }
    let files = dir.read_recovery_files().map_err(|e| e.to_string())?;
    let mut kernel =
        Kernel::recover(config, files).map_err(|e| format!("recovery of {} failed: {e}", args.data_dir.display()))?;
    let mut executor = FileExecutor::new(&dir).map_err(|e| e.to_string())?;
    for output in drive(&mut kernel, &mut executor, now()) {
        if let evidenceos_core::Output::Event(event) = output {
            log_event(&event);
        }
    }
    if kernel.is_failed() || kernel.is_recovering() {
        return Err("could not make the recovered data directory durable (see storage_failed above)".into());
    }
    let resets = evidenceos_io_sync::apply_pending_governance(&mut kernel, &mut executor)
        .map_err(|e| format!("applying signed canary resets from the governance log failed: {e}"))?;
    if resets > 0 {
        tracing::info!(event = "canary_reset_applied", canaries = resets, "applied signed canary resets at start-up");
    }

    #[cfg(feature = "crash-test-failpoints")]
    {
        tracing::warn!(
            event = "failpoints_armed",
            "crash-test failpoints are armed: never run this build in production"
        );
        evidenceos_io_sync::arm_failpoints();
    }
    match args.runtime {
        #[cfg(feature = "runtime-tokio")]
        RuntimeKind::Tokio => {
            let runtime =
                tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
            runtime.block_on(serve_tokio::serve(args, security, kernel, executor, std::sync::Arc::new(dir)))
        }
        #[cfg(feature = "runtime-sync")]
        RuntimeKind::Sync => serve_sync::serve(args, security, kernel, executor, dir),
    }
}

/// GetServerInfo's feature flags, from the flags the daemon runs with.
fn feature_flags(args: &Args) -> evidenceos_grpc::v2::FeatureFlags {
    evidenceos_grpc::v2::FeatureFlags {
        insecure_v1_enabled: args.enable_insecure_v1,
        tls_enabled: args.tls_cert.is_some(),
        mtls_enabled: args.require_client_cert,
        ..Default::default()
    }
}

fn settings_from(args: &Args) -> Settings {
    Settings {
        insecure_v1: args.enable_insecure_v1,
        production: args.production,
        canary_alpha_drift_micros: args.canary_alpha_drift_micros,
        ..Settings::default()
    }
}
