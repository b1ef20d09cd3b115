//! Operator governance commands (seed operations guide): keys, NullSpecs, oracle records, the
//! epoch, canaries, the governance log and the offline audit. They work on the data directory
//! directly; the daemon picks the changes up at its next reload (SIGHUP) or restart.
//!
//! Every mutation follows one path ([`Operator::record`]): check the signer against the trusted
//! keys, build the signed governance event and the new files, load the result through the
//! daemon's own loader, and only then append the event (fsync) and replace the files (atomic,
//! durable). The event goes first: a crash in between leaves a recorded change not yet in
//! effect, which `audit` reports, never an unrecorded change in effect.

pub(crate) mod audit;
pub(crate) mod canary;
pub(crate) mod epoch;
pub(crate) mod events;
pub(crate) mod keys;
pub(crate) mod nullspec;
pub(crate) mod oracle;
pub(crate) mod recovered;

use std::collections::BTreeMap;
use std::path::Path;

use evidenceos_core::environment::{Environment, OperatorFiles, Settings, parse_trusted_keys};
use evidenceos_core::governance::{EventType, GovernanceEvent, GovernanceLog};
use evidenceos_core::holdout::HoldoutFiles;
use evidenceos_core::keys::public_key_for_seed;
use evidenceos_core::operator::parse_epoch_control;
use evidenceos_io_sync::{DataDir, OperatorStore};
use serde_json::Value;

use super::operator_args::SignerArgs;

pub(crate) const ORACLE_CONFIG_FILE: &str = "oracle_operator_config.json";
pub(crate) const EPOCH_CONTROL_FILE: &str = "epoch_control.json";
pub(crate) const ACTIVE_MAP_FILE: &str = "nullspec/active_map.json";

/// A command's failure: one line for stderr.
pub(crate) type Outcome<T> = Result<T, String>;

/// An operator's signing key, checked against the entry it claims to be.
pub(crate) struct Signer {
    pub(crate) seed: [u8; 32],
    pub(crate) key_id: String,
}

impl Signer {
    /// Reads the seed file. With `trusted`, `--key-id` must name a trusted key whose public key
    /// is this seed's: a wrong file or a wrong id is refused before anything is signed.
    pub(crate) fn load(args: &SignerArgs, trusted: Option<&BTreeMap<String, [u8; 32]>>) -> Outcome<Self> {
        let seed = read_seed(&args.signing_key)?;
        if let Some(trusted) = trusted {
            let public = trusted.get(&args.key_id).ok_or_else(|| {
                format!(
                    "--key-id {} is not in trusted_oracle_keys.json (publish its public key there first)",
                    args.key_id
                )
            })?;
            if *public != public_key_for_seed(&seed) {
                return Err(format!(
                    "--signing-key {} is not the key trusted as {} (its public key differs): wrong key file or --key-id",
                    args.signing_key.display(),
                    args.key_id
                ));
            }
        }
        Ok(Self { seed, key_id: args.key_id.clone() })
    }
}

/// A raw 32-byte Ed25519 seed file.
pub(crate) fn read_seed(path: &Path) -> Outcome<[u8; 32]> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("{}: expected a raw 32-byte Ed25519 seed, found {} bytes", path.display(), bytes.len()))
}

/// A data directory opened for governance: locked against other operators, its operator files
/// and governance log read and verified.
pub(crate) struct Operator {
    pub(crate) store: OperatorStore,
    pub(crate) files: OperatorFiles,
    pub(crate) holdouts: Vec<HoldoutFiles>,
    pub(crate) trusted: BTreeMap<String, [u8; 32]>,
    pub(crate) log: GovernanceLog,
    /// The environment the files give now (the daemon's after its next reload).
    pub(crate) environment: Environment,
}

impl Operator {
    pub(crate) fn open(root: &Path) -> Outcome<Self> {
        let store = OperatorStore::open(root).map_err(|e| e.to_string())?;
        let reader = DataDir::open_read_only(root).map_err(|e| e.to_string())?;
        let files = reader.read_operator_files().map_err(|e| e.to_string())?;
        let holdouts = reader.read_holdouts().map_err(|e| e.to_string())?;
        let trusted = match &files.trusted_keys {
            Some(bytes) => parse_trusted_keys(bytes).map_err(|e| e.to_string())?,
            None => BTreeMap::new(),
        };
        let log = store.read_log().map_err(|e| e.to_string())?;
        log.verify(&trusted).map_err(|e| e.to_string())?;
        let environment = load(&holdouts, &files)
            .map_err(|e| format!("the data directory's operator files do not load now; fix that first: {e}"))?;
        Ok(Self { store, files, holdouts, trusted, log, environment })
    }

    pub(crate) fn signer(&self, args: &SignerArgs) -> Outcome<Signer> {
        Signer::load(args, Some(&self.trusted))
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.environment.epoch
    }

    /// Signs the event for a change (extending the log), lets `build` produce the files the
    /// change writes, checks the result loads in the daemon, then makes both durable. Returns
    /// the event and the environment the daemon will load.
    pub(crate) fn record(
        &self,
        signer: &Signer,
        event_type: EventType,
        payload: Value,
        build: impl FnOnce(&GovernanceEvent) -> Outcome<Vec<Write>>,
    ) -> Outcome<(GovernanceEvent, Environment)> {
        let event =
            GovernanceEvent::sign(event_type, self.epoch(), &signer.key_id, payload, self.log.head(), &signer.seed);
        let writes = build(&event)?;
        self.commit(event, writes)
    }

    /// Records an already signed event that extends the log, with the files it writes: the
    /// result must load in the daemon; then the event is appended and the files replaced.
    pub(crate) fn commit(&self, event: GovernanceEvent, writes: Vec<Write>) -> Outcome<(GovernanceEvent, Environment)> {
        let mut files = self.files.clone();
        let mut log_bytes = files.governance_log.take().unwrap_or_default();
        log_bytes.truncate(self.log.valid_len);
        log_bytes.extend_from_slice(&event.to_json());
        log_bytes.push(b'\n');
        files.governance_log = Some(log_bytes);
        for write in &writes {
            write.stage(&mut files);
        }
        let environment =
            load(&self.holdouts, &files).map_err(|e| format!("refused: the daemon would not load the result: {e}"))?;
        self.store.append_event(&self.log, &event).map_err(|e| e.to_string())?;
        for write in &writes {
            self.store.replace(&write.path, &write.bytes).map_err(|e| e.to_string())?;
        }
        Ok((event, environment))
    }
}

/// One file a change replaces, relative to the data directory.
pub(crate) struct Write {
    pub(crate) path: String,
    pub(crate) bytes: Vec<u8>,
}

impl Write {
    /// Puts the new bytes where the daemon's loader will look for them.
    fn stage(&self, files: &mut OperatorFiles) {
        match self.path.as_str() {
            ORACLE_CONFIG_FILE => files.oracle_config = Some(self.bytes.clone()),
            EPOCH_CONTROL_FILE => files.epoch_control = Some(self.bytes.clone()),
            ACTIVE_MAP_FILE => files.active_map = Some(self.bytes.clone()),
            path => {
                if let Some(name) = path.strip_prefix("nullspec/") {
                    files.contracts.retain(|(existing, _)| existing != name);
                    files.contracts.push((name.to_string(), self.bytes.clone()));
                    files.contracts.sort();
                }
                // Anything else (keys/) is not operator material the loader reads.
            }
        }
    }
}

/// The daemon's loader, as SIGHUP runs it (default settings: they are flags, not files).
pub(crate) fn load(holdouts: &[HoldoutFiles], files: &OperatorFiles) -> Outcome<Environment> {
    Environment { settings: Settings::default(), ..Environment::default() }
        .with_holdouts(holdouts)
        .and_then(|env| env.with_operator_files(files))
        .map_err(|e| e.to_string())
}

/// The epoch the data directory's files set, read without the operator lock.
pub(crate) fn current_epoch(root: &Path) -> Outcome<u64> {
    let reader = DataDir::open_read_only(root).map_err(|e| e.to_string())?;
    let files = reader.read_operator_files().map_err(|e| e.to_string())?;
    let trusted = match &files.trusted_keys {
        Some(bytes) => parse_trusted_keys(bytes).map_err(|e| e.to_string())?,
        None => BTreeMap::new(),
    };
    match &files.epoch_control {
        Some(bytes) => Ok(parse_epoch_control(bytes, &trusted)?.forced_epoch),
        None => Ok(0),
    }
}

/// Compact JSON on one line (results of changes: easy to grep and to parse).
pub(crate) fn line(value: &Value) -> String {
    format!("{value}\n")
}

/// Indented JSON (listings and documents meant to be read).
pub(crate) fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("plain JSON");
    text.push('\n');
    text
}

/// Writes a document an operator asked for with --out: a new file, durably.
pub(crate) fn write_document(path: &Path, bytes: &[u8]) -> Outcome<()> {
    evidenceos_io_sync::write_atomically(path, bytes).map_err(|e| e.to_string())
}
