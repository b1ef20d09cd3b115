//! Blocking IO for the EvidenceOS kernel: the data directory (one writer, keys, loading) and an
//! executor that carries out kernel effects with plain `std::fs` calls, one at a time.
#![forbid(unsafe_code)]

mod data_dir;
mod events;
mod executor;
#[cfg(feature = "crash-test-failpoints")]
mod failpoint;
#[cfg(feature = "crash-test-failpoints")]
pub use failpoint::arm as arm_failpoints;

pub use data_dir::{DataDir, DataDirError, SigningKeyStatus};
pub use events::log_event;
pub use executor::{FileExecutor, drive, now};
