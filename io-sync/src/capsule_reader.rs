//! Reads the capsules replies name from `etl.log`. The kernel keeps where a capsule is, not its
//! bytes (they would cost more than a kilobyte of memory per settled claim); both runtimes read
//! them here, off the kernel's path, before the reply leaves the daemon.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use evidenceos_core::{ErrorCode, KernelError, Response};

/// A read-only handle on `etl.log`, shared by every reply (positional reads need no lock).
#[derive(Debug, Clone)]
pub struct CapsuleReader {
    file: Arc<File>,
    path: Arc<Path>,
}

impl CapsuleReader {
    /// Opens `etl.log` for reading. The kernel only names durable leaves, and durable leaves are
    /// never rewritten or cut, so one handle serves for the daemon's life.
    pub fn open(path: PathBuf) -> std::io::Result<Self> {
        let file = File::open(&path)?;
        Ok(Self { file: Arc::new(file), path: path.into() })
    }

    /// Reads the capsule `reply` names, if any. A leaf that cannot be read, or that is not the
    /// capsule named, turns the reply into an internal error and is logged
    /// (`event=capsule_read_failed`): a reply never carries other bytes than the log's.
    pub fn read_into(&self, reply: &mut Result<Response, KernelError>) {
        let Ok(response) = reply else { return };
        let read =
            evidenceos_core::etl::read_capsule(response, |offset, buffer| self.file.read_exact_at(buffer, offset));
        if let Err(error) = read {
            tracing::error!(
                event = "capsule_read_failed",
                path = %self.path.display(),
                %error,
                "a capsule named by the kernel could not be read back from etl.log"
            );
            *reply = Err(KernelError::new(ErrorCode::Internal, format!("capsule unreadable from etl.log: {error}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use evidenceos_core::etl::Etl;
    use evidenceos_core::request::CapsuleBytes;

    fn capsule_reply(etl: &Etl, index: u64, hash: [u8; 32]) -> Result<Response, KernelError> {
        let at = etl.capsule_location(index, hash).unwrap();
        Ok(Response::Capsule { capsule: CapsuleBytes::InLog(at), capsule_hash: hash, etl_index: index })
    }

    #[test]
    fn a_named_capsule_is_read_and_a_changed_log_is_an_error_not_other_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("etl.log");
        let (mut etl, mut log) = (Etl::default(), Vec::new());
        let leaves = [b"{\"first\":1}".to_vec(), b"{\"second\":2}".to_vec()];
        for leaf in &leaves {
            etl.append(leaf, &mut log);
        }
        etl.mark_durable(2);
        std::fs::write(&path, &log).unwrap();
        let reader = CapsuleReader::open(path.clone()).unwrap();
        let hash = evidenceos_core::capsule::capsule_hash(&leaves[1]);
        let mut reply = capsule_reply(&etl, 1, hash);
        reader.read_into(&mut reply);
        let Ok(Response::Capsule { capsule, .. }) = reply else { panic!("a capsule expected: {reply:?}") };
        assert_eq!(capsule.as_read(), Some(&leaves[1][..]));

        let mut other = capsule_reply(&etl, 0, hash);
        reader.read_into(&mut other);
        assert_eq!(other.unwrap_err().code, ErrorCode::Internal, "leaf 0 is not that capsule");
        std::fs::write(&path, &log[..log.len() - 3]).unwrap();
        let mut cut = capsule_reply(&etl, 1, hash);
        reader.read_into(&mut cut);
        assert_eq!(cut.unwrap_err().code, ErrorCode::Internal, "a cut log is no capsule");
    }
}
