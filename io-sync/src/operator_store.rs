//! Writes operator tooling makes to a data directory, possibly while a daemon runs: atomic
//! replacement of operator files and durable appends to the governance event log. Writers take
//! `governance.lock` (not the daemon's `kernel.lock`), so two operators never interleave.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use evidenceos_core::governance::{GovernanceEvent, GovernanceLog, LOG_FILE};

use crate::data_dir::{DataDirError, sync_parent, try_lock_exclusive, write_atomically};

const LOCK_FILE: &str = "governance.lock";

/// An existing data directory, locked for one operator writer.
#[derive(Debug)]
pub struct OperatorStore {
    root: PathBuf,
    _lock: File,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io { path: path.to_path_buf(), source }
}

impl OperatorStore {
    /// Opens `root`, which must already be a data directory (it has `keys/`): operator tools
    /// never create one by accident from a mistyped path.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, DataDirError> {
        let root = root.into();
        if !root.join("keys").is_dir() {
            return Err(DataDirError::Invalid(format!(
                "{} is not an EvidenceOS data directory (no keys/); start evidenceosd on it once first",
                root.display()
            )));
        }
        let lock_path = root.join(LOCK_FILE);
        match try_lock_exclusive(&lock_path)? {
            Some(lock) => Ok(Self { root, _lock: lock }),
            None => Err(DataDirError::Invalid(format!(
                "{} is held by another evidenceosctl changing this data directory; retry when it is done",
                lock_path.display()
            ))),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The governance log, parsed and chain-checked (signatures are the caller's to verify).
    pub fn read_log(&self) -> Result<GovernanceLog, DataDirError> {
        read_log(&self.root)
    }

    /// Appends one event line and makes it durable before returning. `log` is the log as read
    /// under this store's lock: an unterminated last line (an append that died before its
    /// fsync, so never reported as done) is cut off first.
    pub fn append_event(&self, log: &GovernanceLog, event: &GovernanceEvent) -> Result<(), DataDirError> {
        assert_eq!(event.prev_event_id().ok(), Some(log.head()), "an event must extend the log it was made for");
        let path = self.root.join(LOG_FILE);
        let existed = path.exists();
        let mut file = OpenOptions::new().create(true).append(true).mode(0o600).open(&path).map_err(io_error(&path))?;
        if log.torn_bytes > 0 {
            file.set_len(log.valid_len as u64).map_err(io_error(&path))?;
        }
        let mut line = event.to_json();
        line.push(b'\n');
        file.write_all(&line).map_err(io_error(&path))?;
        file.sync_data().map_err(io_error(&path))?;
        if !existed {
            sync_parent(&path)?;
        }
        Ok(())
    }

    /// Durably replaces `relative` (e.g. `nullspec/active_map.json`), creating its directory.
    pub fn replace(&self, relative: &str, bytes: &[u8]) -> Result<(), DataDirError> {
        let path = self.root.join(relative);
        let parent = path.parent().expect("a file inside the data directory");
        if !parent.is_dir() {
            fs::create_dir_all(parent).map_err(io_error(parent))?;
            sync_parent(parent)?;
        }
        write_atomically(&path, bytes)
    }
}

/// Reads and chain-checks `etl_governance_events.log` (empty when absent).
pub fn read_log(root: &Path) -> Result<GovernanceLog, DataDirError> {
    let path = root.join(LOG_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(DataDirError::Io { path, source }),
    };
    GovernanceLog::parse(&bytes).map_err(|e| DataDirError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use evidenceos_core::governance::EventType;
    use serde_json::json;

    const SEED: [u8; 32] = [4; 32];

    fn data_dir() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("keys")).unwrap();
        tmp
    }

    fn event(previous: &str) -> GovernanceEvent {
        let payload = json!({"claim_name": "c", "holdout_ref": "demo", "reason": "r"});
        GovernanceEvent::sign(EventType::CanaryReset, 0, "ops", payload, previous, &SEED)
    }

    #[test]
    fn appends_are_lines_that_chain_and_a_torn_tail_is_cut_first() {
        let tmp = data_dir();
        let store = OperatorStore::open(tmp.path()).unwrap();
        let first = event("");
        store.append_event(&store.read_log().unwrap(), &first).unwrap();
        // A writer that died mid-line: its bytes were never acknowledged.
        let mut file = OpenOptions::new().append(true).open(tmp.path().join(LOG_FILE)).unwrap();
        file.write_all(b"{\"event_id\":\"half").unwrap();
        let log = store.read_log().unwrap();
        assert_eq!((log.events.len(), log.torn_bytes), (1, 17));
        let second = event(&first.event_id);
        store.append_event(&log, &second).unwrap();
        let log = store.read_log().unwrap();
        assert_eq!(log.events, vec![first, second]);
        assert_eq!(log.torn_bytes, 0);
    }

    #[test]
    fn one_writer_at_a_time_and_only_on_a_data_directory() {
        let tmp = data_dir();
        let _held = OperatorStore::open(tmp.path()).unwrap();
        assert!(OperatorStore::open(tmp.path()).unwrap_err().to_string().contains("another evidenceosctl"));
        let plain = tempfile::tempdir().unwrap();
        assert!(
            OperatorStore::open(plain.path()).unwrap_err().to_string().contains("not an EvidenceOS data directory")
        );
    }

    #[test]
    fn replace_creates_the_directory_and_leaves_no_temp_file() {
        let tmp = data_dir();
        let store = OperatorStore::open(tmp.path()).unwrap();
        store.replace("nullspec/active_map.json", b"{\"mappings\":[]}").unwrap();
        assert_eq!(fs::read(tmp.path().join("nullspec/active_map.json")).unwrap(), b"{\"mappings\":[]}");
        assert!(!tmp.path().join("nullspec/active_map.json.tmp").exists());
    }
}
