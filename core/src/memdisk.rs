//! An in-memory disk that carries out kernel effects: the reference executor for tests and the
//! conformance harness. Each file has a durable image and a volatile one; `crash` keeps only
//! what a completed sync (or atomic replace) made durable.

use std::collections::BTreeMap;

use crate::io::{Effect, FileId, Input, IoFailure, Output, Timestamp};
use crate::kernel::{Kernel, RecoveryFiles};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct MemFile {
    durable: Vec<u8>,
    volatile: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemDisk {
    files: BTreeMap<FileId, MemFile>,
    /// When set, the effect with this ordinal (0-based, counted over all effects) fails.
    fail_at: Option<u64>,
    /// A broken disk whose syncs persist nothing: proves crash checks catch lost data.
    lying_sync: bool,
    effects_applied: u64,
}

impl MemDisk {
    pub fn new() -> Self {
        Self::default()
    }

    /// A disk holding `files` durably, e.g. a data directory an older kernel version wrote.
    pub fn with_durable_files(files: impl IntoIterator<Item = (FileId, Vec<u8>)>) -> Self {
        let files = files.into_iter().map(|(id, bytes)| (id, MemFile { durable: bytes.clone(), volatile: bytes }));
        Self { files: files.collect(), ..Self::default() }
    }

    /// A disk that acknowledges syncs without persisting anything (a deliberately broken model).
    pub fn with_lying_sync() -> Self {
        Self { lying_sync: true, ..Self::default() }
    }

    /// Makes the `n`th effect from now on fail, as an fsync error would.
    pub fn fail_effect(&mut self, n: u64) {
        self.fail_at = Some(self.effects_applied + n);
    }

    pub fn apply(&mut self, effect: &Effect) -> Result<(), IoFailure> {
        let ordinal = self.effects_applied;
        self.effects_applied += 1;
        if self.fail_at == Some(ordinal) {
            return Err(IoFailure(format!("injected failure of effect {ordinal}")));
        }
        let file = self.files.entry(effect.file()).or_default();
        match effect {
            Effect::Append { bytes, .. } => file.volatile.extend_from_slice(bytes),
            Effect::Sync { .. } if self.lying_sync => {}
            Effect::Sync { .. } => file.durable.clone_from(&file.volatile),
            Effect::Replace { bytes, .. } => {
                file.durable.clone_from(bytes);
                file.volatile.clone_from(bytes);
            }
            Effect::Truncate { len, .. } => file.volatile.truncate(*len as usize),
        }
        Ok(())
    }

    /// Current contents as a reader (and the next recovery after a clean stop) would see them.
    pub fn contents(&self, file: FileId) -> &[u8] {
        self.files.get(&file).map_or(&[], |f| f.volatile.as_slice())
    }

    /// Loses everything not made durable.
    pub fn crash(&mut self) {
        for file in self.files.values_mut() {
            file.volatile.clone_from(&file.durable);
        }
    }

    /// Loses everything not made durable, except that a file whose unsynced change was an
    /// append keeps `keep(file, unsynced_len)` bytes of it: a write torn at any byte.
    pub fn crash_torn(&mut self, mut keep: impl FnMut(FileId, usize) -> usize) {
        for (id, file) in &mut self.files {
            let appended_only = file.volatile.len() > file.durable.len() && file.volatile.starts_with(&file.durable);
            let kept = if appended_only {
                let unsynced = file.volatile.len() - file.durable.len();
                file.durable.len() + keep(*id, unsynced).min(unsynced)
            } else {
                0
            };
            if appended_only {
                file.volatile.truncate(kept);
            } else {
                file.volatile.clone_from(&file.durable);
            }
            // Whatever survived is what the disk now holds.
            file.durable.clone_from(&file.volatile);
        }
    }

    /// The files as `Kernel::recover` wants them, with the given keys.
    pub fn recovery_files(&self, keys: Vec<crate::keys::KeyFile>, active_key_id: Vec<u8>) -> RecoveryFiles {
        let checkpoint = self.files.get(&FileId::Checkpoint).map(|f| f.volatile.clone());
        RecoveryFiles {
            keys,
            active_key_id,
            etl: crate::io::FileInput::Bytes(self.contents(FileId::Etl).to_vec()),
            journal: self.contents(FileId::Journal).to_vec(),
            checkpoint,
            row_files: crate::io::RowFile::ALL
                .map(|slot| crate::io::FileInput::Bytes(self.contents(FileId::StateLog(slot)).to_vec())),
        }
    }

    /// Drains the kernel, carrying out each effect at once and reporting it done, and reading
    /// the capsule each reply names from `etl.log`, as a runtime does.
    /// Returns every output in order (effects included) for inspection.
    pub fn drive(&mut self, kernel: &mut Kernel, now: Timestamp) -> Vec<Output> {
        let mut seen = Vec::new();
        while let Some(mut output) = kernel.poll() {
            match &mut output {
                Output::Effect(id, effect) => {
                    let outcome = self.apply(effect);
                    kernel.handle(now, Input::Done { effect: *id, outcome });
                }
                Output::Reply(_, Ok(response)) => {
                    let read = crate::etl::read_capsule(response, |offset, buffer| {
                        self.read_exact_at(FileId::Etl, offset, buffer)
                    });
                    read.expect("a capsule the kernel names is in etl.log");
                }
                _ => {}
            }
            seen.push(output);
        }
        seen
    }

    /// Reads `buffer.len()` bytes at `offset` of what a reader sees of `file`.
    pub fn read_exact_at(&self, file: FileId, offset: u64, buffer: &mut [u8]) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        let bytes = self.contents(file).get(start..start + buffer.len()).ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buffer.copy_from_slice(bytes);
        Ok(())
    }
}
