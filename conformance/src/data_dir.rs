//! A data directory as bytes, and a precise account of how two of them differ.

use std::collections::BTreeMap;
use std::path::Path;

use evidenceos_core::FileId;
use evidenceos_core::memdisk::MemDisk;

use crate::error::{HarnessError, io_error};
use crate::vector::Vector;

/// Directory of the signing keys inside a data directory.
pub const KEYS_DIR: &str = "keys";
/// The file naming the active key inside `keys/`.
pub const ACTIVE_KEY_FILE: &str = "active_key_id";
/// io-sync's single-writer lock: runtime plumbing, not kernel data.
pub const LOCK_FILE: &str = "kernel.lock";

/// Every regular file of a directory tree by `/`-separated relative path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataDirContents {
    pub files: BTreeMap<String, Vec<u8>>,
}

impl DataDirContents {
    /// Reads every file under `root`, recursively.
    pub fn read(root: &Path) -> Result<Self, HarnessError> {
        let mut contents = Self::default();
        contents.read_into(root, "")?;
        Ok(contents)
    }

    fn read_into(&mut self, dir: &Path, prefix: &str) -> Result<(), HarnessError> {
        for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            let path = entry.path();
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if entry.file_type().map_err(io_error(&path))?.is_dir() {
                self.read_into(&path, &format!("{name}/"))?;
            } else {
                let bytes = std::fs::read(&path).map_err(io_error(&path))?;
                self.files.insert(name, bytes);
            }
        }
        Ok(())
    }

    /// The kernel files as `disk` holds them plus the vector's key files.
    pub fn expected(vector: &Vector, disk: &MemDisk) -> Self {
        let mut files = BTreeMap::new();
        for file in FileId::ALL {
            files.insert(file.file_name().to_string(), disk.contents(file).to_vec());
        }
        for key in vector.key_files() {
            files.insert(format!("{KEYS_DIR}/{}", key.name), key.bytes);
        }
        files.insert(format!("{KEYS_DIR}/{ACTIVE_KEY_FILE}"), vector.active_key_id_file());
        Self { files }
    }

    /// The same contents without io-sync's lock file, if it is there and empty (a lock file with
    /// contents is kept, so the comparison reports it).
    pub fn without_empty_lock_file(&self) -> Self {
        let mut files = self.files.clone();
        if files.get(LOCK_FILE).is_some_and(Vec::is_empty) {
            files.remove(LOCK_FILE);
        }
        Self { files }
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(Vec::as_slice)
    }
}

/// Every way `b` differs from `a`: missing and extra files, and for a differing file its two
/// sizes and the first offset where the bytes part. Empty when the two are byte-identical.
pub fn differences(a_label: &str, a: &DataDirContents, b_label: &str, b: &DataDirContents) -> Vec<String> {
    let mut found = Vec::new();
    for (name, a_bytes) in &a.files {
        match b.files.get(name) {
            None => found.push(format!("{name}: in {a_label}, missing from {b_label}")),
            Some(b_bytes) if b_bytes != a_bytes => {
                let offset =
                    a_bytes.iter().zip(b_bytes).position(|(x, y)| x != y).unwrap_or(a_bytes.len().min(b_bytes.len()));
                found.push(format!(
                    "{name}: {a_label} has {} bytes, {b_label} has {}; first difference at byte {offset}",
                    a_bytes.len(),
                    b_bytes.len()
                ));
            }
            Some(_) => {}
        }
    }
    for name in b.files.keys().filter(|name| !a.files.contains_key(*name)) {
        found.push(format!("{name}: in {b_label}, missing from {a_label}"));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(files: &[(&str, &[u8])]) -> DataDirContents {
        DataDirContents { files: files.iter().map(|(name, bytes)| (name.to_string(), bytes.to_vec())).collect() }
    }

    #[test]
    fn identical_contents_have_no_differences() {
        let a = contents(&[("etl.log", b"abc"), ("keys/k.key", b"k")]);
        assert_eq!(differences("a", &a, "b", &a.clone()), Vec::<String>::new());
    }

    #[test]
    fn every_kind_of_difference_is_reported() {
        let a = contents(&[("etl.log", b"abcd"), ("journal.log", b"j")]);
        let b = contents(&[("etl.log", b"abXdef"), ("state.json", b"{}")]);
        assert_eq!(
            differences("mem", &a, "disk", &b),
            vec![
                "etl.log: mem has 4 bytes, disk has 6; first difference at byte 2".to_string(),
                "journal.log: in mem, missing from disk".to_string(),
                "state.json: in disk, missing from mem".to_string(),
            ]
        );
        let prefix = contents(&[("etl.log", b"ab")]);
        assert_eq!(
            differences("mem", &prefix, "disk", &contents(&[("etl.log", b"abc")])),
            vec!["etl.log: mem has 2 bytes, disk has 3; first difference at byte 2".to_string()]
        );
    }

    #[test]
    fn reads_nested_files_and_drops_only_an_empty_lock() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("keys")).unwrap();
        std::fs::write(tmp.path().join("keys/active_key_id"), b"id\n").unwrap();
        std::fs::write(tmp.path().join(LOCK_FILE), b"").unwrap();
        let read = DataDirContents::read(tmp.path()).unwrap();
        assert_eq!(read, contents(&[("keys/active_key_id", b"id\n"), (LOCK_FILE, b"")]));
        assert_eq!(read.without_empty_lock_file(), contents(&[("keys/active_key_id", b"id\n")]));
        std::fs::write(tmp.path().join(LOCK_FILE), b"pid").unwrap();
        let read = DataDirContents::read(tmp.path()).unwrap();
        assert!(read.without_empty_lock_file().get(LOCK_FILE).is_some());
    }
}
