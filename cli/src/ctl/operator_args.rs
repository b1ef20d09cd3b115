//! The command line of the operator (governance) subcommands. These work on a data directory
//! directly, with or without a daemon running on it, and never talk to the daemon: changes are
//! applied by the daemon when it reloads (`kill -HUP`), or at restart for a new signing key.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::args::{Lane, parse_hash_hex};

const AFTER_MUTATION: &str = "\
Every change is checked first (signature, trusted key, the daemon's own loader on the resulting
files) and refused with a one-line error and no file touched when anything is wrong. Then one
signed event is appended to etl_governance_events.log (fsync) and the files are replaced
atomically (temp file, fsync, rename, directory fsync). The result is one JSON object on stdout.
Apply it with `kill -HUP <evidenceosd pid>`.";

/// The data directory of an evidenceosd (it must exist: these commands never create one).
#[derive(Debug, Args)]
pub(crate) struct DataDirArg {
    /// The daemon's data directory (as given to evidenceosd --data-dir).
    #[arg(long, value_name = "DIR", env = "EVIDENCEOS_DATA_DIR")]
    pub(crate) data_dir: PathBuf,
}

/// The operator key that signs a change.
#[derive(Debug, Args)]
pub(crate) struct SignerArgs {
    /// File holding the operator's raw 32-byte Ed25519 seed (like keys/*.key; mode 0600).
    #[arg(long, value_name = "FILE")]
    pub(crate) signing_key: PathBuf,

    /// Name of the entry in <data-dir>/trusted_oracle_keys.json whose public key verifies
    /// --signing-key.
    #[arg(long, value_name = "KID")]
    pub(crate) key_id: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    Generate(KeysGenerateArgs),
    List(KeysListArgs),
    Activate(KeysActivateArgs),
}

/// Generate a fresh Ed25519 seed into a new file (mode 0600), offline.
///
/// Prints the key id (SHA-256 of the public key, as ETL signing keys are named) and the public
/// key. Use the file as an ETL signing key (`keys activate --key-file`) or as an operator key:
/// publish its public key in <data-dir>/trusted_oracle_keys.json as {"keys":{"<KID>":"<hex>"}},
/// then sign changes with --signing-key FILE --key-id KID. Refuses to overwrite a file.
#[derive(Debug, Args)]
pub(crate) struct KeysGenerateArgs {
    /// Where to write the 32-byte seed; must not exist yet.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: PathBuf,
}

/// List the ETL signing keys (marking the active one) and the trusted operator keys.
///
/// ETL keys are the files keys/<key id>.key (the daemon loads all of them, so tree heads signed
/// by any of them stay verifiable); the active one is named by keys/active_key_id. Operator keys
/// are the entries of trusted_oracle_keys.json. Read only.
///
/// Each ETL key also gets its vkey under the log's origin (c2sp.org/signed-note): what
/// `log verify --vkey` and `log monitor --vkey` take to check published checkpoints.
#[derive(Debug, Args)]
pub(crate) struct KeysListArgs {
    #[command(flatten)]
    pub(crate) dir: DataDirArg,

    /// The daemon's --log-origin, if it sets one (default: the same default the daemon uses,
    /// derived from the active signing key id).
    #[arg(long, value_name = "NAME", value_parser = parse_log_origin)]
    pub(crate) log_origin: Option<evidenceos_tlog::checkpoint::Origin>,
}

fn parse_log_origin(text: &str) -> Result<evidenceos_tlog::checkpoint::Origin, String> {
    evidenceos_tlog::note::KeyName::new(text).map_err(|e| format!("not a log origin (no spaces or '+'): {e}"))
}

/// Make a key the daemon's ETL signing key from its next start (SPEC §4).
///
/// With --key-file the seed is installed as keys/<key id>.key first; with --etl-key-id a key
/// already in keys/ is reactivated. keys/active_key_id is replaced atomically and a signed
/// key_rotated event is recorded. The running daemon keeps signing with the old key until it is
/// restarted; every old key stays in keys/, so tree heads it signed remain verifiable
/// (GetPublicKey with their key id).
#[derive(Debug, Args)]
#[command(after_help = AFTER_MUTATION)]
pub(crate) struct KeysActivateArgs {
    #[command(flatten)]
    pub(crate) dir: DataDirArg,

    /// A 32-byte seed file (from `keys generate`) to install and activate.
    #[arg(long, value_name = "FILE", conflicts_with = "etl_key_id", required_unless_present = "etl_key_id")]
    pub(crate) key_file: Option<PathBuf>,

    /// Id (64 hex digits) of a key already in <data-dir>/keys/ to activate again.
    #[arg(long, value_name = "HEX", value_parser = parse_hash_hex)]
    pub(crate) etl_key_id: Option<[u8; 32]>,

    #[command(flatten)]
    pub(crate) signer: SignerArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum NullspecCommand {
    Create(NullspecCreateArgs),
    Install(NullspecInstallArgs),
    Activate(NullspecActivateArgs),
    List(NullspecListArgs),
    Show(NullspecShowArgs),
}

/// Author and sign a NullSpec contract (SPEC §5.4); prints it (or writes --out).
///
/// Either from calibration: --from-calibration-buckets FILE ({"counts":[c_0,..]}, one count per
/// oracle bucket) and --alpha X give p0_i = (c_i+1)/Σ(c+1) and a Dirichlet-multinomial mixture
/// with every alpha_i = X. Or explicit: --p0 and --alt (comma-separated, one value per bucket)
/// give a likelihood ratio against a fixed alternative. The contract is bound to the oracle
/// resolution hash claims pin at freeze (see `oracle show --num-symbols`), signed by
/// --signing-key and names --key-id as its signer. Touches no data directory (with --data-dir it
/// only checks the signer is trusted there and takes the current epoch as --epoch-created).
#[derive(Debug, Args)]
pub(crate) struct NullspecCreateArgs {
    /// Oracle the contract judges (as claims name it in CreateClaimV2 oracle_id).
    /// Oracle id (as claims name it in CreateClaimV2 oracle_id).
    #[arg(long, value_name = "ID")]
    pub(crate) oracle_id: String,

    /// Holdout the contract judges: its directory name under holdouts/.
    #[arg(long, value_name = "REF")]
    pub(crate) holdout: String,

    /// Oracle resolution hash (64 hex digits) the claims pin; `oracle show` prints it.
    #[arg(long, value_name = "HEX", value_parser = parse_hash_hex)]
    pub(crate) resolution_hash: [u8; 32],

    /// JSON file {"counts":[..]}: calibration counts per oracle bucket.
    #[arg(long, value_name = "FILE", requires = "alpha", conflicts_with_all = ["p0", "alt"])]
    pub(crate) from_calibration_buckets: Option<PathBuf>,

    /// Dirichlet concentration for every bucket (with --from-calibration-buckets), > 0.
    #[arg(long, value_name = "X")]
    pub(crate) alpha: Option<f64>,

    /// Null distribution over the buckets, comma-separated (sums to 1).
    #[arg(
        long,
        value_name = "P,P,..",
        value_delimiter = ',',
        requires = "alt",
        required_unless_present = "from_calibration_buckets"
    )]
    pub(crate) p0: Vec<f64>,

    /// Fixed alternative distribution over the buckets, comma-separated (sums to 1).
    #[arg(long, value_name = "Q,Q,..", value_delimiter = ',', requires = "p0")]
    pub(crate) alt: Vec<f64>,

    /// Epochs the contract stays valid after --epoch-created.
    #[arg(long, value_name = "N")]
    pub(crate) ttl_epochs: u64,

    /// Epoch the contract starts at. Default: the data directory's epoch with --data-dir, else 0.
    #[arg(long, value_name = "N")]
    pub(crate) epoch_created: Option<u64>,

    /// Calibration manifest hash (64 hex digits) to bind into the contract.
    #[arg(long, value_name = "HEX", value_parser = parse_hash_hex)]
    pub(crate) calibration_hash: Option<[u8; 32]>,

    /// Data directory to check the signer against (read only).
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,

    /// Write the contract here instead of printing it.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) signer: SignerArgs,
}

/// Install a signed NullSpec contract as nullspec/<id>.json (not yet active).
///
/// The contract must verify against the data directory's trusted keys (id, signer, signature,
/// parameters). Records a signed nullspec_install event.
#[derive(Debug, Args)]
#[command(after_help = AFTER_MUTATION)]
pub(crate) struct NullspecInstallArgs {
    #[command(flatten)]
    pub(crate) dir: DataDirArg,

    /// The contract JSON (from `nullspec create`).
    #[arg(long, value_name = "FILE")]
    pub(crate) contract: PathBuf,

    #[command(flatten)]
    pub(crate) signer: SignerArgs,
}

/// Make an installed contract the one that judges claims of an oracle on a holdout.
///
/// Replaces the (oracle, holdout) entry of nullspec/active_map.json. The contract must be
/// installed, made for that oracle and holdout, and unexpired at the current epoch. Records a
/// signed nullspec_activate event naming the contract it replaces, if any.
#[derive(Debug, Args)]
#[command(after_help = AFTER_MUTATION)]
pub(crate) struct NullspecActivateArgs {
    #[command(flatten)]
    pub(crate) dir: DataDirArg,

    /// Oracle id (as claims name it in CreateClaimV2 oracle_id).
    #[arg(long, value_name = "ID")]
    pub(crate) oracle_id: String,

    /// Holdout directory name under holdouts/.
    #[arg(long, value_name = "REF")]
    pub(crate) holdout: String,

    /// Id of the installed contract (64 hex digits).
    #[arg(long, value_name = "HEX", value_parser = parse_hash_hex)]
    pub(crate) nullspec_id: [u8; 32],

    #[command(flatten)]
    pub(crate) signer: SignerArgs,
}

/// List installed NullSpec contracts with their status (active, expired) at the current epoch.
///
/// Reads nullspec/*.json and nullspec/active_map.json through the daemon's loader, so only
/// contracts that verify are listed (a bad one is an error naming it). Read only.
#[derive(Debug, Args)]
pub(crate) struct NullspecListArgs {
    #[command(flatten)]
    pub(crate) dir: DataDirArg,
}

/// Print one installed contract and its status.
///
/// The whole signed contract as installed, plus where it is active and whether it has expired
/// at the current epoch. Read only.
#[derive(Debug, Args)]
pub(crate) struct NullspecShowArgs {
    #[command(flatten)]
    pub(crate) dir: DataDirArg,

    /// Id of the installed contract (64 hex digits).
    #[arg(long, value_name = "HEX", value_parser = parse_hash_hex)]
    pub(crate) nullspec_id: [u8; 32],
}

#[derive(Debug, Subcommand)]
pub(crate) enum OracleCommand {
    List(OracleListArgs),
    Show(OracleShowArgs),
    SetTtl(OracleSetTtlArgs),
    RotateCalibration(OracleRotateCalibrationArgs),
}

/// List the oracles known to the data directory and the TTL and calibration each pins.
///
/// Known oracles: `default` (what claims without an oracle_id use), every oracle with a signed
/// record in oracle_operator_config.json, and every oracle an installed NullSpec names. Oracles
/// without a record use the daemon's default TTL (1 epoch) and no calibration.
#[derive(Debug, Args)]
pub(crate) struct OracleListArgs {
    #[command(flatten)]
    pub(crate) dir: DataDirArg,
}

/// Show one oracle's record and the resolution claims would pin if frozen now.
///
/// The resolution hash printed for --num-symbols and --lane is what a NullSpec for this oracle
/// must be created with (`nullspec create --resolution-hash`).
#[derive(Debug, Args)]
pub(crate) struct OracleShowArgs {
    #[command(flatten)]
    pub(crate) dir: DataDirArg,

    /// Oracle id (as claims name it in CreateClaimV2 oracle_id).
    #[arg(long, value_name = "ID")]
    pub(crate) oracle_id: String,

    /// Oracle alphabet size of the claims (CreateClaimV2 oracle_num_symbols).
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u32).range(2..))]
    pub(crate) num_symbols: u32,

    /// Lane of the claims (it sets the oracle's hysteresis).
    #[arg(long, value_enum, default_value_t = Lane::Fast)]
    pub(crate) lane: Lane,
}

/// Set how many epochs an oracle's pinned resolution stays valid (SPEC §5.7).
///
/// Writes the oracle's re-signed record in oracle_operator_config.json (calibration kept) and
/// records a signed oracle_ttl_set event. Claims sealed after the reload pin the new TTL; a
/// SEALED claim whose epoch is more than TTL past its pin becomes STALE.
#[derive(Debug, Args)]
#[command(after_help = AFTER_MUTATION)]
pub(crate) struct OracleSetTtlArgs {
    #[command(flatten)]
    pub(crate) dir: DataDirArg,

    /// Oracle id (as claims name it in CreateClaimV2 oracle_id).
    #[arg(long, value_name = "ID")]
    pub(crate) oracle_id: String,

    /// The new TTL in epochs (> 0).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) ttl_epochs: u64,

    /// Allow an oracle id the data directory does not know yet (creates its first record).
    #[arg(long)]
    pub(crate) new_oracle: bool,

    #[command(flatten)]
    pub(crate) signer: SignerArgs,
}

/// Rotate an oracle's calibration manifest hash (SPEC §5.7).
///
/// Writes the oracle's re-signed record (TTL kept) with the new hash and calibration epoch and
/// records a signed oracle_calibration_rotated event. Claims sealed after the reload pin a
/// resolution with the new calibration; NullSpecs bound to the old resolution no longer match
/// them.
#[derive(Debug, Args)]
#[command(after_help = AFTER_MUTATION)]
pub(crate) struct OracleRotateCalibrationArgs {
    #[command(flatten)]
    pub(crate) dir: DataDirArg,

    /// Oracle id (as claims name it in CreateClaimV2 oracle_id).
    #[arg(long, value_name = "ID")]
    pub(crate) oracle_id: String,

    /// The new calibration manifest hash (64 hex digits).
    #[arg(long, value_name = "HEX", value_parser = parse_hash_hex)]
    pub(crate) calib_hash: [u8; 32],

    /// Epoch the calibration was made at. Default: the current epoch.
    #[arg(long, value_name = "N")]
    pub(crate) calibration_epoch: Option<u64>,

    /// Allow an oracle id the data directory does not know yet (creates its first record).
    #[arg(long)]
    pub(crate) new_oracle: bool,

    #[command(flatten)]
    pub(crate) signer: SignerArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum EpochCommand {
    Advance(EpochAdvanceArgs),
    Show(EpochShowArgs),
}

/// Advance the kernel epoch (strictly increasing; SPEC §5.7).
///
/// Writes a signed epoch_control.json and records a signed epoch_advanced event whose id the
/// record carries. After the reload, SEALED claims whose pinned TTL has passed become STALE and
/// NullSpecs past their TTL expire.
#[derive(Debug, Args)]
#[command(after_help = AFTER_MUTATION)]
pub(crate) struct EpochAdvanceArgs {
    #[command(flatten)]
    pub(crate) dir: DataDirArg,

    /// The new epoch; must be greater than the current one.
    #[arg(long, value_name = "EPOCH")]
    pub(crate) to: u64,

    #[command(flatten)]
    pub(crate) signer: SignerArgs,
}

/// Print the epoch the data directory's operator files set.
///
/// The forced_epoch of the verified epoch_control.json (0 without one): the daemon's epoch
/// after its next reload. Read only.
#[derive(Debug, Args)]
pub(crate) struct EpochShowArgs {
    #[command(flatten)]
    pub(crate) dir: DataDirArg,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CanaryCommand {
    Status(CanaryStatusArgs),
    SignReset(CanarySignResetArgs),
    Reset(CanaryResetArgs),
}

/// The drift canary of a claim name on a holdout (SPEC §5.8), as the daemon holds it now.
///
/// Computed read-only from the checkpoint and the journal, so it is exact while the daemon
/// runs. Also says whether a signed reset is in the governance log but not applied yet (the
/// daemon applies it at its next reload or start).
#[derive(Debug, Args)]
pub(crate) struct CanaryStatusArgs {
    #[command(flatten)]
    pub(crate) dir: DataDirArg,

    /// Claim name the canary belongs to (CreateClaimV2 claim_name).
    #[arg(long, value_name = "NAME")]
    pub(crate) claim_name: String,

    /// Holdout directory name under holdouts/.
    #[arg(long, value_name = "REF")]
    pub(crate) holdout: String,
}

/// Sign a canary_reset governance event document (incident workflow, step one).
///
/// The event extends the data directory's governance log as it is now (it names the log's last
/// event); if the log moves on before `canary reset` records it, sign again. Prints the event
/// (or writes --out); keep it with the incident's records.
#[derive(Debug, Args)]
pub(crate) struct CanarySignResetArgs {
    #[command(flatten)]
    pub(crate) dir: DataDirArg,

    /// Claim name the canary belongs to (CreateClaimV2 claim_name).
    #[arg(long, value_name = "NAME")]
    pub(crate) claim_name: String,

    /// Holdout directory name under holdouts/.
    #[arg(long, value_name = "REF")]
    pub(crate) holdout: String,

    /// Why the canary is reset (incident reference), up to 1024 bytes.
    #[arg(long, value_name = "TEXT")]
    pub(crate) reason: String,

    /// Write the event here instead of printing it.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) signer: SignerArgs,
}

/// Record a signed canary_reset event; the daemon resets the canary at its next reload.
///
/// The event (from `canary sign-reset`) must verify against the trusted keys, name this claim
/// name and holdout, extend the current log, and the canary must be frozen. Nothing else is
/// written: the daemon applies the reset itself, through its journal, when it reloads.
#[derive(Debug, Args)]
#[command(after_help = AFTER_MUTATION)]
pub(crate) struct CanaryResetArgs {
    #[command(flatten)]
    pub(crate) dir: DataDirArg,

    /// Claim name the canary belongs to (CreateClaimV2 claim_name).
    #[arg(long, value_name = "NAME")]
    pub(crate) claim_name: String,

    /// Holdout directory name under holdouts/.
    #[arg(long, value_name = "REF")]
    pub(crate) holdout: String,

    /// The signed event document.
    #[arg(long, value_name = "FILE")]
    pub(crate) governance_event: PathBuf,
}

#[derive(Debug, Subcommand)]
pub(crate) enum GovernanceCommand {
    /// Read and verify etl_governance_events.log.
    #[command(subcommand)]
    Events(EventsCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum EventsCommand {
    List(EventsListArgs),
    Show(EventsShowArgs),
    Verify(EventsVerifyArgs),
}

/// List the governance events: line, id, type, epoch, signer.
///
/// Ids and the hash chain are checked while reading (a broken log is an error naming the line);
/// signatures are checked by `governance events verify`. Read only.
#[derive(Debug, Args)]
pub(crate) struct EventsListArgs {
    #[command(flatten)]
    pub(crate) dir: DataDirArg,

    /// Only events of this type (e.g. canary_reset).
    #[arg(long, value_name = "TYPE")]
    pub(crate) event_type: Option<String>,
}

/// Print one event in full.
///
/// The event as recorded (type, epoch, signer, payload, signature) and its line. Read only.
#[derive(Debug, Args)]
pub(crate) struct EventsShowArgs {
    #[command(flatten)]
    pub(crate) dir: DataDirArg,

    /// The event id (64 hex digits) or a unique prefix of at least 8.
    #[arg(long, value_name = "HEX")]
    pub(crate) event_id: String,
}

/// Check every event: id, chain, signature under a trusted key, payload of resets.
///
/// Exit status 0 when the whole log verifies, 1 with the first bad line otherwise.
#[derive(Debug, Args)]
pub(crate) struct EventsVerifyArgs {
    #[command(flatten)]
    pub(crate) dir: DataDirArg,
}

/// Offline check of a whole data directory; exit status 1 at the first inconsistency.
///
/// Checks, in order: every ETL record's framing and CRC; the Merkle tree rebuilt from the leaves
/// against the checkpoint's size and root; the checkpoint and journal replayed as the daemon
/// would recover them (every replayed leaf equal to the log's); holdouts, trusted keys, oracle
/// records, the epoch record, NullSpec contracts and the active map through the daemon's
/// loader; every governance event (id, chain, signature); and that each oracle record, the
/// epoch record, each installed contract and each activation is the one its latest governance
/// event recorded. Prints a JSON summary. Safe while a daemon runs (reads only); an unfinished
/// final ETL record is reported, not an error (recovery truncates it).
#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    #[command(flatten)]
    pub(crate) dir: DataDirArg,
}
