//! Blocking IO for the EvidenceOS kernel: the data directory (one writer, keys, loading), an
//! executor that carries out kernel effects with plain `std::fs` calls, one at a time, and the
//! operator store that governance tooling writes through.
#![forbid(unsafe_code)]

mod capsule_reader;
mod data_dir;
mod events;
mod executor;
#[cfg(feature = "crash-test-failpoints")]
mod failpoint;
pub mod http_client;
pub mod https_trust;
mod operator_store;
pub mod publish;
pub mod publish_store;
mod runtime;
mod stats;
pub mod witnessing;
#[cfg(feature = "crash-test-failpoints")]
pub use failpoint::arm as arm_failpoints;

pub use capsule_reader::CapsuleReader;
pub use data_dir::{
    DataDir, DataDirError, SigningKeyStatus, SigningKeys, sync_parent, write_atomically, write_atomically_with_mode,
};
pub use events::log_event;
pub use executor::{FileExecutor, apply_pending_governance, drive, now};
pub use operator_store::{OperatorStore, read_log as read_governance_log};
pub use runtime::{BlockingRuntime, Observe, Stopped, TakenNotifications};
pub use stats::{BATCH_BUCKETS, RuntimeStats, SYNC_BUCKETS_US};
