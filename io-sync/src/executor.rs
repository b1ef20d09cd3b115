//! Carries out kernel effects with blocking `std::fs` calls, in the order given.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use evidenceos_core::{Effect, FileId, Input, IoFailure, Kernel, Output, RowFile, Timestamp};

use crate::data_dir::{DataDir, DataDirError, write_atomically};
use crate::stats::RuntimeStats;

/// Wall-clock time for the kernel's `now`.
pub fn now() -> Timestamp {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
}

/// Open append handles for the logs and the two row files; `state.json` is only ever replaced
/// whole.
#[derive(Debug)]
pub struct FileExecutor {
    etl_path: PathBuf,
    journal_path: PathBuf,
    checkpoint_path: PathBuf,
    row_paths: [PathBuf; 2],
    etl: File,
    journal: File,
    row_files: [File; 2],
    /// Reads `etl.log` for replies that name a capsule.
    capsules: crate::CapsuleReader,
    /// The first effect that failed. Later effects were emitted on the assumption that it had
    /// succeeded (a batch's leaves follow its journal sync), so none of them may touch the disk.
    failed: Option<IoFailure>,
}

fn open_log(path: &PathBuf) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

impl FileExecutor {
    pub fn new(dir: &DataDir) -> Result<Self, DataDirError> {
        if !dir.is_locked() {
            return Err(DataDirError::Invalid(format!(
                "{} was opened read-only; only the lock holder writes kernel files",
                dir.root().display()
            )));
        }
        let etl_path = dir.path_of(FileId::Etl);
        let journal_path = dir.path_of(FileId::Journal);
        let row_paths = RowFile::ALL.map(|slot| dir.path_of(FileId::StateLog(slot)));
        let open = |path: &PathBuf| open_log(path).map_err(|source| DataDirError::Io { path: path.clone(), source });
        let etl = open(&etl_path)?;
        let capsules = crate::CapsuleReader::open(etl_path.clone())
            .map_err(|source| DataDirError::Io { path: etl_path.clone(), source })?;
        Ok(Self {
            etl,
            capsules,
            journal: open(&journal_path)?,
            row_files: [open(&row_paths[0])?, open(&row_paths[1])?],
            checkpoint_path: dir.path_of(FileId::Checkpoint),
            etl_path,
            journal_path,
            row_paths,
            failed: None,
        })
    }

    /// A reader of the capsules replies name, for the runtime that serves them.
    pub fn capsule_reader(&self) -> crate::CapsuleReader {
        self.capsules.clone()
    }

    fn log(&mut self, file: FileId) -> &mut File {
        match file {
            FileId::Etl => &mut self.etl,
            FileId::Journal => &mut self.journal,
            FileId::StateLog(slot) => &mut self.row_files[slot.index()],
            FileId::Checkpoint => {
                unreachable!("the checkpoint is never appended, synced or truncated")
            }
        }
    }

    fn path(&self, file: FileId) -> &PathBuf {
        match file {
            FileId::Etl => &self.etl_path,
            FileId::Journal => &self.journal_path,
            FileId::Checkpoint => &self.checkpoint_path,
            FileId::StateLog(slot) => &self.row_paths[slot.index()],
        }
    }

    /// Carries out one effect. After a failure every later effect fails without touching the
    /// disk: a batch's ETL leaves may be written only once its journal is durable, and both
    /// runtimes may already hold the effects that follow a failed one.
    pub fn execute(&mut self, effect: &Effect) -> Result<(), IoFailure> {
        if let Some(IoFailure(first)) = &self.failed {
            return Err(IoFailure(format!(
                "{}: not written after an earlier failure ({first})",
                effect.file().file_name()
            )));
        }
        #[cfg(feature = "crash-test-failpoints")]
        crate::failpoint::before(effect);
        let outcome = self.carry_out(effect);
        #[cfg(feature = "crash-test-failpoints")]
        crate::failpoint::after(effect);
        if let Err(failure) = &outcome {
            self.failed = Some(failure.clone());
        }
        outcome
    }

    /// [`Self::execute`], counted in `stats` (effects, syncs and their latency, bytes appended):
    /// the one place either runtime counts its storage work.
    pub fn execute_counted(&mut self, effect: &Effect, stats: &RuntimeStats) -> Result<(), IoFailure> {
        let started = std::time::Instant::now();
        let outcome = self.execute(effect);
        stats.effects.fetch_add(1, Ordering::Relaxed);
        match effect {
            Effect::Sync { .. } => stats.record_sync(started.elapsed()),
            Effect::Append { bytes, .. } => drop(stats.bytes_appended.fetch_add(bytes.len() as u64, Ordering::Relaxed)),
            Effect::Replace { .. } | Effect::Truncate { .. } => {}
        }
        outcome
    }

    fn carry_out(&mut self, effect: &Effect) -> Result<(), IoFailure> {
        let file = effect.file();
        let failure = |e: &dyn std::fmt::Display| IoFailure(format!("{}: {e}", file.file_name()));
        match effect {
            Effect::Append { file, bytes } => self.log(*file).write_all(bytes).map_err(|e| failure(&e)),
            Effect::Sync { file } => self.log(*file).sync_data().map_err(|e| failure(&e)),
            Effect::Truncate { file, len } => self.log(*file).set_len(*len).map_err(|e| failure(&e)),
            Effect::Replace { file, bytes } => {
                let path = self.path(*file).clone();
                write_atomically(&path, bytes).map_err(|e| failure(&e))?;
                // The append handle still points at the replaced inode: reopen it.
                if *file != FileId::Checkpoint {
                    *self.log(*file) = open_log(&path).map_err(|e| failure(&e))?;
                }
                Ok(())
            }
        }
    }
}

/// Drains the kernel, executing every effect inline. Returns the outputs that are not effects
/// (replies, events, wake-ups), in order.
pub fn drive(kernel: &mut Kernel, executor: &mut FileExecutor, now: Timestamp) -> Vec<Output> {
    let mut rest = Vec::new();
    while let Some(output) = kernel.poll() {
        match output {
            Output::Effect(id, effect) => {
                let outcome = executor.execute(&effect);
                kernel.handle(now, Input::Done { effect: id, outcome });
            }
            other => rest.push(other),
        }
    }
    rest
}

/// Applies signed canary resets that reached the governance log while no daemon was running:
/// the loaded environment is journaled once more (a reload), which is what applies them. Call
/// after recovery, before serving. Returns how many canaries were reset.
pub fn apply_pending_governance(kernel: &mut Kernel, executor: &mut FileExecutor) -> Result<usize, String> {
    let environment = kernel.environment().clone();
    let pending = kernel.state().claims.pending_canary_resets(&environment.canary_resets).len();
    if pending == 0 {
        return Ok(0);
    }
    let principal = evidenceos_core::Principal::new("system:startup", evidenceos_core::Role::Operator);
    let request = evidenceos_core::Request::Command(evidenceos_core::Command::ReloadEnvironment(Box::new(environment)));
    let id = evidenceos_core::RequestId(0);
    kernel.handle(now(), evidenceos_core::Input::Request { id, principal, request });
    for output in drive(kernel, executor, now()) {
        match output {
            Output::Reply(reply, Ok(_)) if reply == id => return Ok(pending),
            Output::Reply(reply, Err(error)) if reply == id => return Err(error.message),
            Output::Event(event) => crate::log_event(&event),
            _ => {}
        }
    }
    Err("the kernel did not answer the start-up reload (storage failure?)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use evidenceos_core::{Principal, RequestId, Response, Role};

    fn boot(dir: &DataDir) -> (Kernel, FileExecutor) {
        dir.ensure_signing_key().unwrap();
        let mut kernel = Kernel::recover(evidenceos_testkit::config(), dir.read_recovery_files().unwrap()).unwrap();
        let mut executor = FileExecutor::new(dir).unwrap();
        drive(&mut kernel, &mut executor, now());
        assert!(!kernel.is_recovering());
        (kernel, executor)
    }

    #[test]
    fn after_a_failed_effect_nothing_more_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        let (_kernel, mut executor) = boot(&dir);
        let etl_before = std::fs::read(tmp.path().join("etl.log")).unwrap();
        // A checkpoint whose temporary file cannot be created fails like a full disk would.
        std::fs::create_dir(tmp.path().join("state.json.tmp")).unwrap();
        let replace = Effect::Replace { file: FileId::Checkpoint, bytes: b"{}".to_vec() };
        assert!(executor.execute(&replace).is_err());
        let append = Effect::Append { file: FileId::Etl, bytes: b"a leaf whose journal failed".to_vec() };
        let refused = executor.execute(&append).unwrap_err();
        assert!(refused.0.contains("earlier failure"), "{refused:?}");
        assert!(executor.execute(&Effect::Sync { file: FileId::Etl }).is_err());
        assert_eq!(std::fs::read(tmp.path().join("etl.log")).unwrap(), etl_before, "nothing appended");
    }

    #[test]
    fn effects_land_on_disk_and_survive_a_restart() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        let (mut kernel, mut executor) = boot(&dir);
        let claims: Vec<Vec<u8>> = (0..3)
            .map(|n| {
                evidenceos_testkit::run_to_capsule(n, |principal, request| {
                    kernel.handle(now(), Input::Request { id: RequestId(0), principal, request });
                    let outputs = drive(&mut kernel, &mut executor, now());
                    outputs
                        .into_iter()
                        .find_map(|o| if let Output::Reply(_, reply) = o { Some(reply) } else { None })
                        .expect("answered")
                })
            })
            .collect();
        // Three revocations in one batch.
        for (n, claim) in (1..).zip(&claims) {
            let principal = Principal::new("op", Role::Operator);
            kernel.handle(
                now(),
                Input::Request { id: RequestId(n), principal, request: evidenceos_testkit::revoke(claim) },
            );
        }
        let outputs = drive(&mut kernel, &mut executor, now());
        let replies = outputs.iter().filter(|o| matches!(o, Output::Reply(_, Ok(Response::Revoked { .. })))).count();
        assert_eq!(replies, 3);
        let etl = std::fs::read(tmp.path().join("etl.log")).unwrap();
        assert_eq!(evidenceos_core::frame::scan(&etl, 0).unwrap().records.len(), 6);
        kernel.handle(now(), Input::Checkpoint);
        drive(&mut kernel, &mut executor, now());
        drop((kernel, executor, dir));
        let dir = DataDir::open(tmp.path()).unwrap();
        let (kernel, _) = boot(&dir);
        assert_eq!(kernel.durable_tree_size(), 6);
        assert!(!tmp.path().join("state.json.tmp").exists());
    }
}
