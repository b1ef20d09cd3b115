//! The kernel's boundary: what runtimes feed in (inputs) and what they must carry out (outputs).
//! Files are logical names; only runtimes know paths.

use crate::error::KernelError;
use crate::request::{Principal, Request, Response};

/// Milliseconds since the Unix epoch, supplied by the runtime. The kernel never reads a clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn saturating_add_ms(self, ms: u64) -> Self {
        Self(self.0.saturating_add(ms))
    }
}

/// Durable files the kernel writes. Each maps to one path in the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileId {
    /// `etl.log`: the transparency log.
    Etl,
    /// `journal.log`: accepted commands since the last checkpoint.
    Journal,
    /// `state.json`: the checkpoint (where the journal, `etl.log` and the row files stand).
    Checkpoint,
    /// `state.0.log` and `state.1.log`: the checkpointed rows (see `state_log`), appended by
    /// each checkpoint (only what changed); compaction moves from one to the other.
    StateLog(RowFile),
}

/// Which of the two row files: generation `g` of the rows lives in `state.<g mod 2>.log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RowFile {
    Zero,
    One,
}

impl RowFile {
    pub const ALL: [RowFile; 2] = [RowFile::Zero, RowFile::One];

    pub fn of_generation(generation: u64) -> Self {
        if generation.is_multiple_of(2) { Self::Zero } else { Self::One }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl FileId {
    pub const ALL: [FileId; 5] = [
        FileId::Etl,
        FileId::Journal,
        FileId::Checkpoint,
        FileId::StateLog(RowFile::Zero),
        FileId::StateLog(RowFile::One),
    ];

    /// The file's name inside the data directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Etl => "etl.log",
            Self::Journal => "journal.log",
            Self::Checkpoint => "state.json",
            Self::StateLog(RowFile::Zero) => "state.0.log",
            Self::StateLog(RowFile::One) => "state.1.log",
        }
    }
}

/// A file recovery reads from start to end: the bytes (tests and in-memory disks), or a reader
/// and the file's length, so recovery never holds a file of the whole history in memory
/// (`etl.log` and the row files reach gigabytes at 10^6 claims).
pub enum FileInput {
    Bytes(Vec<u8>),
    Stream { len: u64, reader: Box<dyn ReadSeek> },
}

/// What a streamed [`FileInput`] reads through: a file, in practice.
pub trait ReadSeek: std::io::Read + std::io::Seek + Send {}

impl<T: std::io::Read + std::io::Seek + Send> ReadSeek for T {}

impl FileInput {
    pub fn len(&self) -> u64 {
        match self {
            Self::Bytes(bytes) => bytes.len() as u64,
            Self::Stream { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole file in memory (offline tools that need it all anyway).
    pub fn read_all(self) -> std::io::Result<Vec<u8>> {
        match self {
            Self::Bytes(bytes) => Ok(bytes),
            Self::Stream { len, mut reader } => {
                let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
                reader.read_to_end(&mut bytes)?;
                Ok(bytes)
            }
        }
    }

    pub fn into_reader(self) -> Box<dyn ReadSeek> {
        match self {
            Self::Bytes(bytes) => Box::new(std::io::Cursor::new(bytes)),
            Self::Stream { reader, .. } => reader,
        }
    }
}

impl Default for FileInput {
    fn default() -> Self {
        Self::Bytes(Vec::new())
    }
}

impl std::fmt::Debug for FileInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes(bytes) => write!(f, "FileInput::Bytes({} bytes)", bytes.len()),
            Self::Stream { len, .. } => write!(f, "FileInput::Stream({len} bytes)"),
        }
    }
}

/// Opaque id the kernel gives each effect; the runtime echoes it back in `Input::Done`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EffectId(pub u64);

/// Caller-chosen id correlating a request with its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Runtimes carry out effects one at a time in the order the kernel emits them, across files too,
/// and carry out none after one has failed: recovery relies on a journal sync finishing (and
/// succeeding) before the leaves it explains are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Append bytes at the end of the file (creating it if absent).
    Append { file: FileId, bytes: Vec<u8> },
    /// Make every completed write to the file durable (`fdatasync`).
    Sync { file: FileId },
    /// Atomically replace the whole file: temp file, write, fsync, rename, fsync directory.
    Replace { file: FileId, bytes: Vec<u8> },
    /// Cut the file to `len` bytes (a later `Sync` makes it durable).
    Truncate { file: FileId, len: u64 },
}

impl Effect {
    pub fn file(&self) -> FileId {
        match self {
            Self::Append { file, .. }
            | Self::Sync { file }
            | Self::Replace { file, .. }
            | Self::Truncate { file, .. } => *file,
        }
    }
}

/// Why a runtime could not carry out an effect. Only the description travels: after a storage
/// failure nothing on disk can be trusted, so the kernel's reaction does not depend on the kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoFailure(pub String);

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A decoded, authenticated request.
    Request { id: RequestId, principal: Principal, request: Request },
    /// An effect finished.
    Done { effect: EffectId, outcome: Result<(), IoFailure> },
    /// A deadline announced by `Output::Wake` has passed (or may have).
    Tick,
    /// Write a checkpoint as soon as the kernel is idle (clean shutdown, operator request).
    Checkpoint,
}

/// Structured, greppable events for the runtime to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    TornTailTruncated {
        file: FileId,
        valid_len: u64,
        dropped_bytes: u64,
    },
    MissingLeavesReappended {
        count: u64,
    },
    JournalReplayed {
        records: u64,
        from_seq: u64,
        to_seq: u64,
    },
    Recovered {
        tree_size: u64,
        journal_seq: u64,
    },
    /// A checkpoint of an older format was loaded; the next one is written in the current one.
    CheckpointMigrated {
        from_format: String,
        /// Capsule copies the old checkpoint carried (capsules are read from `etl.log`).
        capsule_copies_dropped: u64,
        /// Settled claims whose wasm module and artifact list were dropped.
        code_dropped: u64,
    },
    CheckpointWritten {
        journal_seq: u64,
        tree_size: u64,
        /// Rows appended to a row file (changed since the previous checkpoint, or copied by
        /// compaction) and their bytes.
        rows: u64,
        row_bytes: u64,
        /// Size of the `state.json` written.
        checkpoint_bytes: u64,
    },
    /// Compaction finished: `state.json` names row-file generation `generation` alone, which
    /// holds every live row once; the previous file was emptied.
    RowsCompacted {
        generation: u64,
        records: u64,
        bytes: u64,
    },
    /// A group of commands became durable with one sync (group commit at work).
    BatchDurable {
        commands: u64,
        leaves: u64,
    },
    StorageFailed {
        file: FileId,
        reason: String,
    },
    ProtocolViolation {
        reason: String,
    },
}

/// Something subscribers want to hear about, released only once durable.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    /// One revocation, signed as a one-entry feed under the head that covers it.
    Revocation(Box<crate::request::RevocationFeed>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Notify(Notification),
    Effect(EffectId, Effect),
    Reply(RequestId, Result<Response, KernelError>),
    Event(LogEvent),
    /// Call `handle(now, Input::Tick)` at or after this time. Only the earliest deadline is given.
    Wake(Timestamp),
}
