//! EvidenceOS kernel: every judgement of the daemon, pure and deterministic.
//!
//! No files, sockets, clocks, threads or randomness: runtimes feed [`Input`]s to
//! [`Kernel::handle`] and carry out the [`Output`]s drained from [`Kernel::poll`].
#![forbid(unsafe_code)]

pub mod canary;
pub mod canonical;
pub mod capsule;
pub mod checkpoint;
pub mod claim;
pub mod claims;
pub mod environment;
pub mod error;
pub mod etl;
pub mod evalue;
pub mod frame;
pub mod governance;
pub mod guest;
pub mod hash;
pub mod hexbytes;
pub mod holdout;
pub mod ids;
pub mod io;
pub mod journal;
pub mod kernel;
pub mod keys;
pub mod leaf;
pub mod ledger;
pub mod memdisk;
pub mod merkle;
pub mod nullspec;
pub mod operator;
pub mod oracle;
pub mod pool;
pub mod request;
pub mod state;
pub mod state_log;
pub mod table;
pub mod totals;
pub mod validate;

pub use error::{ErrorCode, KernelError};
pub use io::{
    Effect, EffectId, FileId, FileInput, Input, IoFailure, LogEvent, Notification, Output, RequestId, RowFile,
    Timestamp,
};
pub use kernel::{Kernel, KernelConfig, RecoveryError, RecoveryFiles};
pub use request::{Command, Principal, Query, Request, Response, Role, SignedTreeHead};

/// Written into journal headers and checkpoints; replay across versions is allowed only while
/// regenerated ETL leaves match the log.
pub const KERNEL_VERSION: &str = env!("CARGO_PKG_VERSION");
