//! The daemon's state as recovery would rebuild it from the checkpoint and the journal, computed
//! in memory without touching the data directory (no lock, no repair written), so it is right
//! while the daemon runs.

use std::path::Path;

use evidenceos_core::environment::Settings;
use evidenceos_core::{FileInput, Kernel, KernelConfig, LogEvent, Output, RecoveryFiles};
use evidenceos_io_sync::DataDir;

use super::Outcome;

/// A running daemon may replace the checkpoint between our reads of it and of the journal;
/// such a torn snapshot fails to replay, and reading again settles it.
const ATTEMPTS: usize = 5;

pub(crate) struct Recovered {
    pub(crate) kernel: Kernel,
    /// The files recovery read (`etl` emptied: see `etl`, and the row files streamed away).
    pub(crate) files: RecoveryFiles,
    /// `etl.log` as recovery read it, whole: the audit scans it again itself.
    pub(crate) etl: Vec<u8>,
    /// What recovery would report or repair (torn tails, replayed records, dropped leaves).
    pub(crate) events: Vec<LogEvent>,
}

pub(crate) fn recover(root: &Path) -> Outcome<Recovered> {
    let reader = DataDir::open_read_only(root).map_err(|e| e.to_string())?;
    let mut last_error = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let environment = reader.read_environment(Settings::default()).map_err(|e| e.to_string())?;
        let mut files = reader.read_recovery_files().map_err(|e| e.to_string())?;
        let config = KernelConfig { environment, ..KernelConfig::default() };
        // The kernel streams the row files; the audit keeps its own copy of the other files.
        let etl = std::mem::take(&mut files.etl).read_all().map_err(|e| format!("etl.log: {e}"))?;
        let for_kernel = RecoveryFiles {
            keys: files.keys.clone(),
            active_key_id: files.active_key_id.clone(),
            etl: FileInput::Bytes(etl.clone()),
            journal: files.journal.clone(),
            checkpoint: files.checkpoint.clone(),
            row_files: std::mem::take(&mut files.row_files),
        };
        match Kernel::recover(config, for_kernel) {
            Ok(mut kernel) => {
                let mut events = Vec::new();
                // Only the outputs queued by recovery itself: effects are not carried out.
                while let Some(output) = kernel.poll() {
                    if let Output::Event(event) = output {
                        events.push(event);
                    }
                }
                return Ok(Recovered { kernel, files, etl, events });
            }
            Err(error) => last_error = error.to_string(),
        }
    }
    Err(format!("recovering {} in memory failed: {last_error}", root.display()))
}
