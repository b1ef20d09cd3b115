//! The data directory: created if absent, locked for one writer, signing key provisioned, and
//! read into bytes for `Kernel::recover`.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use evidenceos_core::FileInput;
use evidenceos_core::RowFile;
use evidenceos_core::environment::{Environment, OperatorFiles, Settings};
use evidenceos_core::holdout::HoldoutFiles;
use evidenceos_core::keys::{KeyFile, KeyId, key_file_name, key_id_for_seed};
use evidenceos_core::{FileId, RecoveryFiles};

pub(crate) const LOCK_FILE: &str = "kernel.lock";
pub(crate) const KEYS_DIR: &str = "keys";
pub(crate) const ACTIVE_KEY_FILE: &str = "active_key_id";
pub(crate) const HOLDOUTS_DIR: &str = "holdouts";
pub(crate) const NULLSPEC_DIR: &str = "nullspec";
pub(crate) const TRUSTED_KEYS_FILE: &str = "trusted_oracle_keys.json";
/// The compatible implementation's intent record; this kernel's journal supersedes it.
pub(crate) const FOREIGN_INTENT_FILE: &str = "pending_mutation.json";

#[derive(Debug)]
pub enum DataDirError {
    /// Another process holds `kernel.lock`.
    Locked(PathBuf),
    /// A key file readable by others than its owner.
    KeyModeTooOpen {
        path: PathBuf,
        mode: u32,
    },
    Io {
        path: PathBuf,
        source: io::Error,
    },
    /// Operator material (holdouts, NullSpecs, trusted keys) that does not validate.
    Invalid(String),
}

impl std::fmt::Display for DataDirError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Locked(path) => write!(
                f,
                "{} is locked by another running evidenceosd; stop it first (one daemon per data directory)",
                path.display()
            ),
            Self::KeyModeTooOpen { path, mode } => write!(
                f,
                "{} has mode {mode:04o}; signing keys must be private: chmod 600 {}",
                path.display(),
                path.display()
            ),
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Invalid(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for DataDirError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io { path: path.to_path_buf(), source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningKeyStatus {
    Existing(KeyId),
    Generated(KeyId),
}

impl SigningKeyStatus {
    pub fn key_id(&self) -> KeyId {
        match self {
            Self::Existing(id) | Self::Generated(id) => *id,
        }
    }
}

/// An open, exclusively locked data directory. The lock is an advisory `flock` released by the
/// OS when the process exits in any way, so a crash never leaves a stale lock behind.
#[derive(Debug)]
pub struct DataDir {
    root: PathBuf,
    /// `None` for a read-only view ([`DataDir::open_read_only`]), which never writes.
    lock: Option<File>,
}

impl DataDir {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, DataDirError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(io_error(&root))?;
        let lock_path = root.join(LOCK_FILE);
        let lock = try_lock_exclusive(&lock_path)?.ok_or(DataDirError::Locked(lock_path))?;
        Ok(Self { root, lock: Some(lock) })
    }

    /// A read-only view of an existing data directory, for offline tools (audit, status) that
    /// must work while a daemon holds the lock. It takes no lock and creates nothing; a
    /// [`crate::FileExecutor`] refuses it.
    pub fn open_read_only(root: impl Into<PathBuf>) -> Result<Self, DataDirError> {
        let root = root.into();
        let metadata = fs::metadata(&root).map_err(io_error(&root))?;
        if !metadata.is_dir() {
            return Err(DataDirError::Invalid(format!("{} is not a directory", root.display())));
        }
        Ok(Self { root, lock: None })
    }

    /// True when this process holds the data directory's writer lock.
    pub fn is_locked(&self) -> bool {
        self.lock.is_some()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path_of(&self, file: FileId) -> PathBuf {
        self.root.join(file.file_name())
    }

    /// Makes sure an active signing key exists. A missing one is generated from OS randomness
    /// and written durably (key file first, then `active_key_id`) before the kernel boots.
    pub fn ensure_signing_key(&self) -> Result<SigningKeyStatus, DataDirError> {
        let keys_dir = self.root.join(KEYS_DIR);
        let active_path = keys_dir.join(ACTIVE_KEY_FILE);
        if active_path.exists() {
            let text = fs::read_to_string(&active_path).map_err(io_error(&active_path))?;
            let id =
                evidenceos_core::hash::parse_hash_hex(text.trim_end()).map(KeyId).ok_or_else(|| DataDirError::Io {
                    path: active_path.clone(),
                    source: io::Error::new(io::ErrorKind::InvalidData, "expected 64 hex characters"),
                })?;
            return Ok(SigningKeyStatus::Existing(id));
        }
        fs::create_dir_all(&keys_dir).map_err(io_error(&keys_dir))?;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| DataDirError::Io {
            path: keys_dir.clone(),
            source: io::Error::other(format!("no OS randomness for a signing key: {e}")),
        })?;
        let key_id = key_id_for_seed(&seed);
        write_atomically(&keys_dir.join(key_file_name(&key_id)), &seed)?;
        write_atomically(&active_path, format!("{key_id}\n").as_bytes())?;
        Ok(SigningKeyStatus::Generated(key_id))
    }

    /// The compatible implementation's `pending_mutation.json`, if one was left here. This kernel
    /// never applies it (journal.log is its intent record), so the operator must be told.
    pub fn foreign_intent_record(&self) -> Option<PathBuf> {
        let path = self.root.join(FOREIGN_INTENT_FILE);
        path.exists().then_some(path)
    }

    /// Reads everything `Kernel::recover` needs. Key files must be mode 0600 or stricter.
    pub fn read_recovery_files(&self) -> Result<RecoveryFiles, DataDirError> {
        let SigningKeys { keys, active_key_id } = self.read_signing_keys()?;
        Ok(RecoveryFiles {
            keys,
            active_key_id,
            etl: self.open_streamed(FileId::Etl)?,
            journal: read_or_empty(&self.path_of(FileId::Journal))?,
            checkpoint: read_optional(&self.path_of(FileId::Checkpoint))?,
            row_files: [
                self.open_streamed(FileId::StateLog(RowFile::Zero))?,
                self.open_streamed(FileId::StateLog(RowFile::One))?,
            ],
        })
    }

    /// A kernel file as a reader (empty when absent): recovery streams `etl.log` and the row
    /// files instead of holding them.
    fn open_streamed(&self, file: FileId) -> Result<FileInput, DataDirError> {
        let path = self.path_of(file);
        match fs::File::open(&path) {
            Ok(file) => {
                let len = file.metadata().map_err(io_error(&path))?.len();
                Ok(FileInput::Stream { len, reader: Box::new(file) })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileInput::default()),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    /// Only the signing keys of `keys/` (what the publisher and `evidenceosctl keys` need),
    /// without reading the logs. Key files must be mode 0600 or stricter.
    pub fn read_signing_keys(&self) -> Result<SigningKeys, DataDirError> {
        let keys_dir = self.root.join(KEYS_DIR);
        let mut keys = Vec::new();
        let entries = fs::read_dir(&keys_dir).map_err(io_error(&keys_dir))?;
        for entry in entries {
            let entry = entry.map_err(io_error(&keys_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".key") {
                continue;
            }
            let path = entry.path();
            let mode = entry.metadata().map_err(io_error(&path))?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(DataDirError::KeyModeTooOpen { path, mode });
            }
            let bytes = fs::read(&path).map_err(io_error(&path))?;
            keys.push(KeyFile { name, bytes });
        }
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        let active_path = keys_dir.join(ACTIVE_KEY_FILE);
        let active_key_id = fs::read(&active_path).map_err(io_error(&active_path))?;
        Ok(SigningKeys { keys, active_key_id })
    }
}

/// The key files of `keys/` (sorted by name) and the `active_key_id` file, as bytes.
#[derive(Debug, Clone)]
pub struct SigningKeys {
    pub keys: Vec<KeyFile>,
    pub active_key_id: Vec<u8>,
}

impl DataDir {
    /// Every `holdouts/<ref>/` directory as bytes (manifest.json and labels.bin).
    pub fn read_holdouts(&self) -> Result<Vec<HoldoutFiles>, DataDirError> {
        let dir = self.root.join(HOLDOUTS_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(DataDirError::Io { path: dir, source }),
        };
        let mut holdouts = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error(&dir))?;
            if !entry.file_type().map_err(io_error(&dir))?.is_dir() {
                continue;
            }
            let path = entry.path();
            let holdout_ref = entry.file_name().to_string_lossy().into_owned();
            let manifest_path = path.join("manifest.json");
            let labels_path = path.join("labels.bin");
            holdouts.push(HoldoutFiles {
                holdout_ref,
                manifest: fs::read(&manifest_path).map_err(io_error(&manifest_path))?,
                labels: fs::read(&labels_path).map_err(io_error(&labels_path))?,
            });
        }
        holdouts.sort_by(|a, b| a.holdout_ref.cmp(&b.holdout_ref));
        Ok(holdouts)
    }

    /// `trusted_oracle_keys.json`, `oracle_operator_config.json`, `epoch_control.json`,
    /// `nullspec/*.json` and `nullspec/active_map.json` as bytes.
    pub fn read_operator_files(&self) -> Result<OperatorFiles, DataDirError> {
        let dir = self.root.join(NULLSPEC_DIR);
        let mut contracts = Vec::new();
        match fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(io_error(&dir))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.ends_with(".json") && name != "active_map.json" {
                        let path = entry.path();
                        contracts.push((name, fs::read(&path).map_err(io_error(&path))?));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(DataDirError::Io { path: dir, source }),
        }
        contracts.sort();
        Ok(OperatorFiles {
            oracle_config: read_optional(&self.root.join("oracle_operator_config.json"))?,
            epoch_control: read_optional(&self.root.join("epoch_control.json"))?,
            trusted_keys: read_optional(&self.root.join(TRUSTED_KEYS_FILE))?,
            contracts,
            active_map: read_optional(&dir.join("active_map.json"))?,
            governance_log: read_optional(&self.root.join(evidenceos_core::governance::LOG_FILE))?,
        })
    }

    /// The validated environment the kernel judges claims with.
    pub fn read_environment(&self, settings: Settings) -> Result<Environment, DataDirError> {
        let holdouts = self.read_holdouts()?;
        let nullspecs = self.read_operator_files()?;
        Environment { settings, ..Environment::default() }
            .with_holdouts(&holdouts)
            .and_then(|env| env.with_operator_files(&nullspecs))
            .map_err(|e| DataDirError::Invalid(e.to_string()))
    }
}

/// Takes an advisory exclusive `flock` on `path` (created 0600 if absent) without waiting:
/// `None` when another process holds it. The OS releases it when the process exits.
pub(crate) fn try_lock_exclusive(path: &Path) -> Result<Option<File>, DataDirError> {
    let file =
        OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(path).map_err(io_error(path))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(source)) => Err(DataDirError::Io { path: path.to_path_buf(), source }),
    }
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, DataDirError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DataDirError::Io { path: path.to_path_buf(), source }),
    }
}

fn read_or_empty(path: &Path) -> Result<Vec<u8>, DataDirError> {
    Ok(read_optional(path)?.unwrap_or_default())
}

/// Durable atomic replace: write a temporary file, fsync it, rename over the target, fsync the
/// directory. Only one process writes a data directory (the lock), so one temp name suffices.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DataDirError> {
    write_atomically_with_mode(path, bytes, 0o600)
}

/// [`write_atomically`] with the new file's permission bits (published files are world-readable).
pub fn write_atomically_with_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), DataDirError> {
    let tmp = temp_path(path);
    let mut file =
        OpenOptions::new().create(true).truncate(true).write(true).mode(mode).open(&tmp).map_err(io_error(&tmp))?;
    file.write_all(bytes).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_error(path))?;
    sync_parent(path)
}

pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().expect("a file path").to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Fsyncs the directory holding `path`, so a create or rename in it survives a crash.
pub fn sync_parent(path: &Path) -> Result<(), DataDirError> {
    let parent = parent_dir(path);
    File::open(parent).and_then(|dir| dir.sync_all()).map_err(io_error(parent))
}

/// The directory a file path names its file in. A bare name (`ops.key`) has the empty path as
/// its `Path::parent`, which no system call opens: its directory is the current one.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if parent.as_os_str().is_empty() => Path::new("."),
        Some(parent) => parent,
        None => panic!("{} names no file inside a directory", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_open_generates_a_private_key_and_reopen_reuses_it() {
        let tmp = tempfile::tempdir().unwrap();
        let status = {
            let dir = DataDir::open(tmp.path().join("data")).unwrap();
            dir.ensure_signing_key().unwrap()
        };
        let SigningKeyStatus::Generated(id) = status else { panic!("expected a new key") };
        let key_path = tmp.path().join("data/keys").join(key_file_name(&id));
        let mode = fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read(&key_path).unwrap().len(), 32);
        let dir = DataDir::open(tmp.path().join("data")).unwrap();
        assert_eq!(dir.ensure_signing_key().unwrap(), SigningKeyStatus::Existing(id));
        let files = dir.read_recovery_files().unwrap();
        assert_eq!(files.keys.len(), 1);
        assert!(files.checkpoint.is_none() && files.etl.is_empty());
    }

    #[test]
    fn a_bare_file_name_lives_in_the_current_directory() {
        assert_eq!(parent_dir(Path::new("ops.key")), Path::new("."));
        assert_eq!(parent_dir(Path::new("./ops.key")), Path::new("."));
        assert_eq!(parent_dir(Path::new("keys/ops.key")), Path::new("keys"));
        assert_eq!(parent_dir(Path::new("/ops.key")), Path::new("/"));
        sync_parent(Path::new("a-file-in-the-current-directory")).unwrap();
    }

    #[test]
    fn a_second_writer_is_refused_with_a_clear_message() {
        let tmp = tempfile::tempdir().unwrap();
        let _first = DataDir::open(tmp.path()).unwrap();
        let err = DataDir::open(tmp.path()).unwrap_err();
        assert!(matches!(err, DataDirError::Locked(_)));
        assert!(err.to_string().contains("locked by another running evidenceosd"));
    }

    #[test]
    fn the_lock_is_released_when_the_holder_goes_away() {
        let tmp = tempfile::tempdir().unwrap();
        drop(DataDir::open(tmp.path()).unwrap());
        assert!(DataDir::open(tmp.path()).is_ok());
    }

    #[test]
    fn holdouts_load_and_a_bad_one_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        assert!(dir.read_environment(Settings::default()).unwrap().holdouts.is_empty());
        let files = evidenceos_core::holdout::holdout_files("demo", [5; 32], &[1, 0, 1], 0);
        let holdout_dir = tmp.path().join("holdouts/demo");
        fs::create_dir_all(&holdout_dir).unwrap();
        fs::write(holdout_dir.join("manifest.json"), &files.manifest).unwrap();
        fs::write(holdout_dir.join("labels.bin"), &files.labels).unwrap();
        let env = dir.read_environment(Settings::default()).unwrap();
        assert_eq!(env.holdouts["demo"].labels, vec![1, 0, 1]);
        fs::write(holdout_dir.join("labels.bin"), [1, 1, 1]).unwrap();
        let err = dir.read_environment(Settings::default()).unwrap_err().to_string();
        assert!(err.contains("holdouts/demo") && err.contains("labels_sha256_hex"), "{err}");
    }

    #[test]
    fn group_readable_keys_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        let id = dir.ensure_signing_key().unwrap().key_id();
        let key_path = tmp.path().join("keys").join(key_file_name(&id));
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = dir.read_recovery_files().unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
