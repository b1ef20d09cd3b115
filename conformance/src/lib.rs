//! Conformance harness for the EvidenceOS kernel.
//!
//! A vector (`vectors/*.json`, see [`vector`]) is a list of timed requests. [`run::run_reference`]
//! replays it through the kernel over the in-memory disk and renders every output and the final
//! files as text, which `tests/vectors.rs` snapshot-tests. [`runtimes`] replays the same vector on
//! io-sync and io-tokio against real directories; `tests/runtimes.rs` requires identical replies
//! and byte-identical data directories.
#![forbid(unsafe_code)]

pub mod data_dir;
pub mod error;
pub mod run;
pub mod runtimes;
pub mod transcript;
pub mod vector;

pub use data_dir::{DataDirContents, differences};
pub use error::HarnessError;
pub use run::{ReferenceRun, Reply, reply_differences, run_reference};
pub use runtimes::{RuntimeRun, run_io_sync, run_io_tokio};
pub use vector::{
    ArtifactSpec, FromStep, HexBytes, HoldoutSpec, Step, StepPrincipal, StepRequest, VECTORS_DIR, Vector, WAT_DIR,
    load_dir,
};
