//! The kernel: one input in (`handle`), outputs drained (`poll`) until there are none.
//!
//! Commands are applied to memory when admitted, but their replies wait in `staged` until the
//! journal records (and ETL leaves) of everything before them are synced. Only one storage phase
//! is in flight at a time; whatever arrives meanwhile forms the next batch, so one sync covers
//! many commands (group commit) without timers. Reads see only the durable ETL prefix.

use std::collections::VecDeque;

use crate::capsule::capsule_hash;
use crate::checkpoint::{LoadError, Loaded, RowsAt};
use crate::error::KernelError;
use crate::etl::Etl;
use crate::frame;
use crate::io::FileInput;
use crate::io::RowFile;
use crate::io::{Effect, EffectId, FileId, Input, IoFailure, LogEvent, Output, RequestId, Timestamp};
use crate::journal::JournalRecord;
use crate::keys::{KeyId, Keyring};
use crate::request::{Command, IdempotencyKey, Principal, Query, Request, Response};
use crate::state::{Policy, State};

#[derive(Debug, Clone)]
pub struct KernelConfig {
    /// Settings written into the journal header and used for commands accepted from now on.
    pub policy: Policy,
    /// Holdouts, NullSpecs and kernel settings the claims are judged with.
    pub environment: crate::environment::Environment,
    /// Write a checkpoint after this many journal records (and once the journal since the last
    /// checkpoint reaches 1/[`CHECKPOINT_JOURNAL_FRACTION`] of that checkpoint's size).
    pub checkpoint_every: u64,
    /// Write a checkpoint after this long without one while records are uncovered.
    pub checkpoint_idle_ms: u64,
    /// Most commands in one storage batch (bounds the latency one sync adds).
    pub max_batch_commands: usize,
    /// Most journal + ETL bytes in one storage batch.
    pub max_batch_bytes: usize,
    /// Most commands waiting for a batch; beyond it new commands are refused at once.
    pub max_staged_commands: usize,
    /// Compaction starts once the row files hold at least this many records and more than
    /// twice the live rows (superseded rows are then over half of what recovery reads).
    pub compaction_min_records: u64,
    /// While compaction runs, each checkpoint copies unchanged rows worth at least this many
    /// bytes, and at least twice its changed rows' bytes (so a pass outruns the rows that change
    /// meanwhile), and no more (bounding what compaction adds to a checkpoint).
    pub compaction_copy_bytes: u64,
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            environment: crate::environment::Environment::default(),
            checkpoint_every: 4096,
            checkpoint_idle_ms: 10_000,
            max_batch_commands: 1024,
            max_batch_bytes: 8 * 1024 * 1024,
            max_staged_commands: 16 * 1024,
            compaction_min_records: 100_000,
            compaction_copy_bytes: 1 << 20,
        }
    }
}

/// A periodic checkpoint also waits until the journal written since the last one is at least
/// this fraction of that checkpoint's size. Rewriting the state then costs at most this many
/// journal bytes' worth of writing per journal byte, however large the state grows (a fixed
/// record interval would make each command's share grow with the state), and replay stays
/// bounded by a fraction of the checkpoint that recovery reads anyway.
pub const CHECKPOINT_JOURNAL_FRACTION: u64 = 8;

impl KernelConfig {
    /// The largest damaged tail recovery may treat as a torn write: one batch, or one
    /// checkpoint-sized batch, plus a record's framing.
    pub fn max_torn_tail(&self) -> usize {
        self.max_batch_bytes.max(frame::MAX_PAYLOAD_BYTES) * 2 + frame::FRAME_OVERHEAD
    }
}

/// The data directory as bytes (`etl.log` and the row files as readers), read by the runtime before the
/// kernel starts.
#[derive(Debug, Default)]
pub struct RecoveryFiles {
    pub keys: Vec<crate::keys::KeyFile>,
    pub active_key_id: Vec<u8>,
    pub etl: FileInput,
    pub journal: Vec<u8>,
    pub checkpoint: Option<Vec<u8>>,
    /// `state.0.log` and `state.1.log`, by [`crate::io::RowFile`] index (empty when absent).
    pub row_files: [FileInput; 2],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryError {
    Keys(crate::keys::KeyError),
    EtlCorrupt(frame::ScanError),
    /// Reading `etl.log` failed.
    EtlUnreadable(String),
    JournalCorrupt(frame::ScanError),
    BadCheckpoint(String),
    /// A row file lacks or damages rows `state.json` covers, or has rows without it.
    BadRowFile {
        file: FileId,
        reason: String,
    },
    /// A journal record that cannot be decoded or does not follow its predecessor.
    BadJournal {
        record: usize,
        reason: String,
    },
    /// The checkpoint covers more leaves than `etl.log` holds, or a different root.
    CheckpointDisagreesWithLog {
        reason: String,
    },
    /// The operator files set an epoch older than the one the journal already reached.
    EpochWentBack {
        files: u64,
        journal: u64,
    },
    /// Replaying the journal produced a leaf different from the one on disk.
    LeafMismatch {
        index: u64,
    },
    /// `etl.log` holds leaves that neither `state.json` nor `journal.log` explains. A crash cannot
    /// leave them (a batch's journal is synced before its leaves are written), so they may be
    /// signed history whose journal was lost, e.g. by restoring `etl.log` without it.
    UnexplainedLeaves {
        /// Leaves the checkpoint and journal account for.
        explained: u64,
        /// Complete leaves in `etl.log`.
        on_disk: u64,
    },
}

impl std::fmt::Display for RecoveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Keys(e) => write!(f, "signing keys: {e}"),
            Self::EtlCorrupt(e) => write!(f, "etl.log: {e}"),
            Self::EtlUnreadable(reason) => write!(f, "etl.log: {reason}"),
            Self::JournalCorrupt(e) => write!(f, "journal.log: {e}"),
            Self::BadCheckpoint(reason) => write!(f, "state.json: {reason}"),
            Self::BadRowFile { file, reason } => write!(f, "{}: {reason}", file.file_name()),
            Self::BadJournal { record, reason } => {
                write!(f, "journal.log record {record}: {reason}")
            }
            Self::CheckpointDisagreesWithLog { reason } => {
                write!(f, "state.json disagrees with etl.log: {reason}")
            }
            Self::EpochWentBack { files, journal } => write!(
                f,
                "epoch_control.json sets epoch {files}, but epoch {journal} is already in force; epochs never go back"
            ),
            Self::LeafMismatch { index } => write!(
                f,
                "etl.log leaf {index} differs from the leaf the journal replay produces; refusing to start (corruption or an incompatible kernel version)"
            ),
            Self::UnexplainedLeaves { explained, on_disk } => write!(
                f,
                "etl.log holds {on_disk} leaves but state.json and journal.log explain only {explained}: {} unexplained leaves may be signed history, so they are not deleted; restore journal.log, state.json and the row files state.0.log and state.1.log from the same backup as etl.log, or move etl.log, state.json, the row files and journal.log out of the data directory to start an empty log",
                on_disk - explained
            ),
        }
    }
}

impl std::error::Error for RecoveryError {}

/// Reads `state.json` and the row files it covers. Returns the checkpoint (none on a fresh
/// directory) and the effects that cut each row file to what it covers: rows past that belong
/// to a checkpoint a crash interrupted (the journal still holds their commands), and a file
/// `state.json` does not name is empty (compaction retired it).
fn load_checkpoint(files: &mut RecoveryFiles) -> Result<(Option<Loaded>, Vec<Effect>), RecoveryError> {
    let on_disk = files.row_files.each_ref().map(FileInput::len);
    let Some(checkpoint) = &files.checkpoint else {
        if let Some(slot) = RowFile::ALL.into_iter().find(|slot| on_disk[slot.index()] > 0) {
            return Err(RecoveryError::BadRowFile {
                file: FileId::StateLog(slot),
                reason: format!(
                    "holds {} bytes of checkpointed rows but state.json is missing; restore state.json, the row files and journal.log from the same backup as etl.log",
                    on_disk[slot.index()]
                ),
            });
        }
        return Ok((None, Vec::new()));
    };
    let loaded = crate::checkpoint::load(checkpoint, std::mem::take(&mut files.row_files)).map_err(|e| match e {
        LoadError::Checkpoint(reason) => RecoveryError::BadCheckpoint(reason),
        LoadError::Rows { file, reason } => RecoveryError::BadRowFile { file, reason },
    })?;
    let mut covered = [0u64; 2];
    for at in std::iter::once(loaded.rows).chain(loaded.compacting) {
        covered[RowFile::of_generation(at.generation).index()] = at.len;
    }
    let mut repair = Vec::new();
    for slot in RowFile::ALL {
        if on_disk[slot.index()] != covered[slot.index()] {
            repair.push(Effect::Truncate { file: FileId::StateLog(slot), len: covered[slot.index()] });
            repair.push(Effect::Sync { file: FileId::StateLog(slot) });
        }
    }
    Ok((Some(loaded), repair))
}

/// What streaming `etl.log` at recovery found.
struct EtlScanned {
    scan: frame::StreamScan,
    /// The tree of the leaves the checkpoint covers.
    tree: crate::merkle::MerkleTree,
    /// Each leaf's frame offset, those beyond the checkpoint included.
    offsets: Vec<u64>,
    /// Leaves past those, to compare with the journal's replay.
    beyond: Vec<Vec<u8>>,
    migration: crate::claims::SettledMigration,
}

/// Streams `etl.log`: hashes the first `covered` leaves into a tree and checks each settled
/// claim's capsule hash against its leaf; keeps the leaves after them (one journal's worth at
/// most). No capsule is kept: replies read it by offset.
fn scan_etl(
    etl: crate::io::FileInput,
    max_tail: usize,
    covered: u64,
    claims: &mut crate::claims::Claims,
) -> Result<EtlScanned, RecoveryError> {
    let wanted = claims.capsule_leaves();
    let mut next_wanted = wanted.iter().peekable();
    let mut tree = crate::merkle::MerkleTree::new();
    let (mut offsets, mut end) = (Vec::with_capacity(wanted.len()), 0u64);
    let mut beyond = Vec::new();
    let scan = frame::scan_stream(etl, max_tail, |index, payload| {
        offsets.push(end);
        end += (payload.len() + frame::FRAME_OVERHEAD) as u64;
        if index >= covered {
            beyond.push(payload.to_vec());
            return Ok(());
        }
        tree.push(crate::merkle::leaf_hash(payload));
        if let Some((_, hash)) = next_wanted.next_if(|(at, _)| *at == index)
            && capsule_hash(payload) != hash.0
        {
            return Err(format!("leaf {index} is not the capsule {hash}"));
        }
        Ok(())
    })
    .map_err(|e| match e {
        frame::StreamScanError::Scan(e) => RecoveryError::EtlCorrupt(e),
        frame::StreamScanError::Io(e) => RecoveryError::EtlUnreadable(e.to_string()),
        frame::StreamScanError::Visit(reason) => RecoveryError::CheckpointDisagreesWithLog { reason },
    })?;
    if let Some((index, _)) = next_wanted.next() {
        let reason = format!("capsule leaf {index} is beyond the checkpoint");
        return Err(RecoveryError::CheckpointDisagreesWithLog { reason });
    }
    debug_assert_eq!(end, scan.valid_len, "the offsets follow the frames");
    let migration = claims.settle_loaded().map_err(|reason| RecoveryError::CheckpointDisagreesWithLog { reason })?;
    claims.index_settled();
    Ok(EtlScanned { scan, tree, offsets, beyond, migration })
}

/// Where the state's rows stand: the current row file, the compaction in progress if any, and
/// how many records both hold (what recovery would read).
#[derive(Debug, Default)]
struct RowsFiles {
    /// Covered length includes the checkpoint in flight, if any.
    current: RowsAt,
    compaction: Option<Compaction>,
    records: u64,
}

#[derive(Debug)]
struct Compaction {
    into: RowsAt,
    cursor: crate::state_log::Cursor,
    /// Records in `into`.
    records: u64,
}

impl RowsFiles {
    /// As a checkpoint left them; a compaction in progress restarts its walk from the first
    /// row (rows it copied before are simply copied again).
    fn of(loaded: &Loaded) -> Self {
        let [current_records, compacting_records] = loaded.row_records;
        let compaction = loaded.compacting.map(|into| Compaction {
            into,
            cursor: crate::state_log::Cursor::default(),
            records: compacting_records,
        });
        Self { current: loaded.rows, compaction, records: current_records + compacting_records }
    }
}

/// A reply waiting for everything before it to become durable, with the bytes its command adds.
#[derive(Debug)]
struct Staged {
    request: RequestId,
    reply: Result<Response, KernelError>,
    journal_bytes: Vec<u8>,
    etl_bytes: Vec<u8>,
    leaves: u64,
}

/// A checkpoint taken at a moment when memory equals the durable journal: the rows changed
/// since the previous one (appended to a row file) and the `state.json` that covers them.
#[derive(Debug)]
struct Snapshot {
    journal_seq: u64,
    tree_size: u64,
    /// The row file the rows are appended to.
    file: FileId,
    rows: Vec<u8>,
    row_count: u64,
    checkpoint: Vec<u8>,
    /// The row file a finished compaction retired: emptied once `state.json` no longer names it.
    retired: Option<FileId>,
    /// The event announcing that compaction, logged once the checkpoint is durable.
    compacted: Option<LogEvent>,
}

/// What to do when every effect of the in-flight phase has completed.
#[derive(Debug)]
enum Completion {
    Batch {
        replies: Vec<(RequestId, Result<Response, KernelError>)>,
        tree_size: u64,
        journal_seq: u64,
        records: u64,
        journal_bytes: u64,
        snapshot: Option<Snapshot>,
    },
    Repair {
        tree_size: u64,
        snapshot: Snapshot,
    },
    Checkpoint {
        snapshot_seq: u64,
        tree_size: u64,
        rows: u64,
        row_bytes: u64,
        checkpoint_bytes: u64,
        /// The row file this checkpoint made the only one, when it finished a compaction.
        compacted: Option<LogEvent>,
    },
    Compaction,
}

#[derive(Debug)]
struct InFlight {
    /// Effects not yet completed, with their file (named in the failure event if one fails).
    outstanding: Vec<(EffectId, FileId)>,
    then: Completion,
}

#[derive(Debug)]
pub struct Kernel {
    config: KernelConfig,
    keyring: Keyring,
    state: State,
    etl: Etl,
    /// Seq of the last admitted command.
    last_seq: u64,
    /// Seq of the last command whose journal record is durable.
    durable_seq: u64,
    /// Durable journal records not yet covered by a checkpoint.
    uncovered_records: u64,
    /// Their framed bytes.
    uncovered_journal_bytes: u64,
    /// Bytes the last checkpoint wrote (or is writing): its rows and `state.json`.
    checkpoint_bytes: u64,
    /// The row files, as they stand once the last checkpoint started is durable.
    rows: RowsFiles,
    staged: VecDeque<Staged>,
    in_flight: Option<InFlight>,
    next_effect: u64,
    checkpoint_requested: bool,
    checkpoint_deadline: Option<Timestamp>,
    /// Revocations already announced through `Output::Notify`.
    notified_revocations: usize,
    /// Set by recovery until the repaired files are durable; reads wait for it.
    recovering: bool,
    failed: bool,
    outputs: VecDeque<Output>,
}

impl Kernel {
    /// Validates and replays the data directory, returning a kernel whose first outputs are the
    /// effects that repair the disk (torn tails, leaves missing from `etl.log`) followed by a
    /// checkpoint and a fresh journal. Run them before serving.
    pub fn recover(config: KernelConfig, mut files: RecoveryFiles) -> Result<Self, RecoveryError> {
        let keyring =
            crate::keys::Keyring::from_files(&files.keys, &files.active_key_id).map_err(RecoveryError::Keys)?;
        let mut outputs = VecDeque::new();
        let max_tail = config.max_torn_tail();

        let (loaded, mut repair) = load_checkpoint(&mut files)?;
        let rows = loaded.as_ref().map_or(RowsFiles::default(), RowsFiles::of);
        let (mut state, mut seq, covered_leaves, format) = match loaded {
            Some(c) => (c.state, c.journal_seq, Some((c.tree_size, c.root_hash_hex)), Some(c.format)),
            None => (State::default(), 0, None, None),
        };

        let (checkpoint_leaves, checkpoint_root) =
            covered_leaves.unwrap_or((0, hex::encode(crate::merkle::empty_root())));
        let etl = scan_etl(std::mem::take(&mut files.etl), max_tail, checkpoint_leaves, &mut state.claims)?;
        if etl.scan.torn_bytes > 0 {
            outputs.push_back(Output::Event(LogEvent::TornTailTruncated {
                file: FileId::Etl,
                valid_len: etl.scan.valid_len,
                dropped_bytes: etl.scan.torn_bytes,
            }));
        }
        let on_disk = etl.scan.records;
        if on_disk < checkpoint_leaves {
            return Err(RecoveryError::CheckpointDisagreesWithLog {
                reason: format!("checkpoint covers {checkpoint_leaves} leaves, log holds {on_disk}"),
            });
        }
        let mut tree = etl.tree;
        if hex::encode(tree.root()) != checkpoint_root {
            return Err(RecoveryError::CheckpointDisagreesWithLog {
                reason: format!("root of the first {checkpoint_leaves} leaves does not match the checkpoint"),
            });
        }
        let migration = etl.migration;
        if let Some(from) = format.filter(|f| f != crate::checkpoint::CHECKPOINT_FORMAT) {
            outputs.push_back(Output::Event(LogEvent::CheckpointMigrated {
                from_format: from,
                capsule_copies_dropped: migration.capsule_copies_dropped,
                code_dropped: migration.code_dropped,
            }));
        }

        // Replay journal entries after the checkpoint, regenerating their leaves.
        let journal_scan = frame::scan(&files.journal, max_tail).map_err(RecoveryError::JournalCorrupt)?;
        if journal_scan.torn_bytes > 0 {
            outputs.push_back(Output::Event(LogEvent::TornTailTruncated {
                file: FileId::Journal,
                valid_len: journal_scan.valid_len,
                dropped_bytes: journal_scan.torn_bytes,
            }));
        }
        let mut regenerated: Vec<Vec<u8>> = Vec::new();
        let mut policy: Option<Policy> = None;
        // Replay judges each command under the environment it was accepted with.
        let mut environment = config.environment.clone();
        let checkpoint_seq = seq;
        for (position, record) in journal_scan.records.iter().enumerate() {
            let bad = |reason: String| RecoveryError::BadJournal { record: position, reason };
            match JournalRecord::from_payload(record.payload).map_err(bad)? {
                JournalRecord::Header { base_seq, policy: header_policy, environment: header_environment, .. } => {
                    if let Some(recorded) = header_environment {
                        environment = *recorded;
                    }
                    if position != 0 {
                        return Err(bad("header in the middle of the journal".into()));
                    }
                    if base_seq > seq {
                        return Err(bad(format!("journal starts after seq {base_seq}, checkpoint covers only {seq}")));
                    }
                    policy = Some(header_policy);
                }
                JournalRecord::Entry { seq: entry_seq, now_ms, principal, command, idempotency } => {
                    let Some(policy) = &policy else {
                        return Err(bad("entry before the journal header".into()));
                    };
                    if entry_seq <= checkpoint_seq {
                        continue; // covered by the checkpoint (a crash came before compaction)
                    }
                    if entry_seq != seq + 1 {
                        return Err(bad(format!("expected seq {}, found {entry_seq}", seq + 1)));
                    }
                    let next_leaf = checkpoint_leaves + regenerated.len() as u64;
                    let applied = state
                        .apply_command(
                            &environment,
                            policy,
                            &principal,
                            Timestamp(now_ms),
                            &command,
                            idempotency.as_ref(),
                            next_leaf,
                        )
                        .map_err(|e| bad(format!("replayed command was refused: {e}")))?;
                    regenerated.extend(applied.leaves);
                    if let Command::ReloadEnvironment(new) = command {
                        environment = *new;
                    }
                    seq = entry_seq;
                }
            }
        }
        if config.environment.epoch < environment.epoch {
            return Err(RecoveryError::EpochWentBack { files: config.environment.epoch, journal: environment.epoch });
        }
        if seq > checkpoint_seq {
            let records = seq - checkpoint_seq;
            outputs.push_back(Output::Event(LogEvent::JournalReplayed {
                records,
                from_seq: checkpoint_seq + 1,
                to_seq: seq,
            }));
        }

        // Compare regenerated leaves with the log and re-append missing ones. Leaves past the
        // journal are never dropped: no crash leaves them, so only lost files can explain them.
        let beyond_checkpoint = etl.beyond;
        if beyond_checkpoint.len() > regenerated.len() {
            return Err(RecoveryError::UnexplainedLeaves {
                explained: checkpoint_leaves + regenerated.len() as u64,
                on_disk,
            });
        }
        for (i, payload) in regenerated.iter().enumerate() {
            if let Some(on_disk) = beyond_checkpoint.get(i)
                && on_disk != payload
            {
                return Err(RecoveryError::LeafMismatch { index: checkpoint_leaves + i as u64 });
            }
            tree.push(crate::merkle::leaf_hash(payload));
        }
        let keep = beyond_checkpoint.len();
        if etl.scan.torn_bytes > 0 {
            repair.push(Effect::Truncate { file: FileId::Etl, len: etl.scan.valid_len });
        }
        let missing = &regenerated[keep..];
        let (mut offsets, mut end) = (etl.offsets, etl.scan.valid_len);
        if !missing.is_empty() {
            let mut bytes = Vec::new();
            for payload in missing {
                offsets.push(end + bytes.len() as u64);
                frame::encode_into(payload, &mut bytes);
            }
            end += bytes.len() as u64;
            repair.push(Effect::Append { file: FileId::Etl, bytes });
            outputs.push_back(Output::Event(LogEvent::MissingLeavesReappended { count: missing.len() as u64 }));
        }
        repair.push(Effect::Sync { file: FileId::Etl });

        let mut kernel = Self {
            config,
            keyring,
            state,
            etl: Etl::recovered(tree, offsets, end),
            last_seq: seq,
            durable_seq: seq,
            uncovered_records: 0,
            uncovered_journal_bytes: 0,
            checkpoint_bytes: 0,
            rows,
            staged: VecDeque::new(),
            in_flight: None,
            next_effect: 0,
            checkpoint_requested: false,
            checkpoint_deadline: None,
            notified_revocations: 0,
            recovering: true,
            failed: false,
            outputs,
        };
        // Every boot ends with a checkpoint and a fresh journal whose header carries the policy
        // now in force, so a changed flag never alters how older records replay.
        let snapshot = kernel.snapshot();
        let tree_size = kernel.etl.len();
        kernel.start(repair, Completion::Repair { tree_size, snapshot });
        Ok(kernel)
    }

    pub fn handle(&mut self, now: Timestamp, input: Input) {
        self.handle_all(now, [input]);
    }

    /// Takes several inputs as if they had arrived together, then starts storage once: commands
    /// admitted here share one batch (one journal sync, one ETL sync) when nothing is in flight,
    /// where one `handle` each would give the first its own batch. Queries among them are
    /// answered at once, on the state before the commands that follow them.
    pub fn handle_all(&mut self, now: Timestamp, inputs: impl IntoIterator<Item = Input>) {
        for input in inputs {
            self.take(now, input);
        }
        self.pump();
        self.check_invariants();
    }

    fn take(&mut self, now: Timestamp, input: Input) {
        match input {
            Input::Request { id, principal, request } => match request {
                Request::Query(query) => {
                    let reply = self.answer(now, &principal, query);
                    self.outputs.push_back(Output::Reply(id, reply));
                }
                Request::Command(command) => self.admit(now, id, principal, command, None),
                Request::IdempotentCommand { key, command } => self.admit(now, id, principal, command, Some(key)),
            },
            Input::Done { effect, outcome } => self.complete(now, effect, outcome),
            Input::Tick => {
                if self.checkpoint_deadline.is_some_and(|deadline| now >= deadline) {
                    self.checkpoint_deadline = None;
                    self.checkpoint_requested = true;
                }
            }
            Input::Checkpoint => self.checkpoint_requested = true,
        }
    }

    /// Asserts what holds between inputs (TigerBeetle style). The O(1) checks run in every
    /// build; those that walk the staged queue or the whole state grow with it, so they run in
    /// debug builds (tests, proptests, integration tests) only.
    pub fn check_invariants(&self) {
        let durable = self.etl.durable_size();
        assert!(durable <= self.etl.len(), "durable tree size {durable} beyond the tree");
        assert!(self.durable_seq <= self.last_seq, "durable journal seq beyond the last admitted command");
        assert!(self.staged.len() <= self.config.max_staged_commands, "staged queue over its limit");
        assert!(self.in_flight.as_ref().is_none_or(|f| !f.outstanding.is_empty()), "a phase that can never complete");
        if let Some(compaction) = &self.rows.compaction {
            let next = self.rows.current.generation + 1;
            assert_eq!(compaction.into.generation, next, "compacting into a generation other than the next");
            assert!(compaction.records <= self.rows.records, "the compacting file counted beyond both files");
        }
        if cfg!(debug_assertions) {
            self.check_pipeline();
            self.state.check_invariants();
        }
    }

    /// Every admitted leaf and journal record not yet durable is staged or in flight, exactly once.
    fn check_pipeline(&self) {
        if self.failed {
            // Pending work was refused and nothing on disk is trusted: there is nothing to balance.
            return;
        }
        let durable = self.etl.durable_size();
        let staged_leaves: u64 = self.staged.iter().map(|s| s.leaves).sum();
        let staged_records = self.staged.iter().filter(|s| !s.journal_bytes.is_empty()).count() as u64;
        let (flying_leaves, flying_records) = match self.in_flight.as_ref().map(|f| &f.then) {
            Some(Completion::Batch { tree_size, journal_seq, .. }) => {
                (tree_size - durable, journal_seq - self.durable_seq)
            }
            Some(Completion::Repair { tree_size, .. }) => (tree_size - durable, 0),
            _ => (0, 0),
        };
        assert_eq!(
            self.etl.len() - durable,
            staged_leaves + flying_leaves,
            "leaves neither durable, staged nor in flight"
        );
        assert_eq!(
            self.last_seq - self.durable_seq,
            staged_records + flying_records,
            "journal records unaccounted for"
        );
    }

    pub fn poll(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Nothing staged, nothing in flight: safe to stop.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_none() && self.staged.is_empty()
    }

    /// After a storage failure the kernel refuses commands; the runtime should exit non-zero.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    pub fn is_recovering(&self) -> bool {
        self.recovering
    }

    pub fn active_key_id(&self) -> KeyId {
        self.keyring.active_key_id()
    }

    pub fn durable_tree_size(&self) -> u64 {
        self.etl.durable_size()
    }

    pub fn durable_journal_seq(&self) -> u64 {
        self.durable_seq
    }

    /// Leaves of the tree the state stands for, durable or not. Right after [`Kernel::recover`],
    /// before its repair completes, this is the size the log has once repaired, while
    /// [`Kernel::durable_tree_size`] is still 0 (offline readers never complete the repair).
    pub fn tree_size(&self) -> u64 {
        self.etl.len()
    }

    /// A signed head for the durable size, without going through a request (runtimes use it
    /// for logs; tests for checks that must not disturb the output queue).
    pub fn signed_tree_head(&mut self) -> Result<crate::request::SignedTreeHead, KernelError> {
        if self.recovering {
            return Err(KernelError::unavailable("kernel is recovering"));
        }
        Ok(self.etl.signed_tree_head(&self.keyring))
    }

    /// The state as of the last admitted command (read-only; for inspection and tests).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The environment later commands are judged under.
    pub fn environment(&self) -> &crate::environment::Environment {
        &self.config.environment
    }

    fn answer(&mut self, now: Timestamp, principal: &Principal, query: Query) -> Result<Response, KernelError> {
        if self.recovering {
            return Err(KernelError::unavailable("kernel is recovering"));
        }
        match query {
            Query::GetPublicKey { key_id } => {
                let key_id = if key_id.is_empty() {
                    self.keyring.active_key_id()
                } else {
                    let bytes: [u8; 32] = key_id
                        .as_slice()
                        .try_into()
                        .map_err(|_| KernelError::invalid_argument("key_id must be 32 bytes"))?;
                    KeyId(bytes)
                };
                let public_key =
                    self.keyring.public_key(&key_id).ok_or_else(|| KernelError::not_found("unknown key_id"))?;
                Ok(Response::PublicKey { key_id, public_key })
            }
            Query::GetSignedTreeHead => Ok(Response::SignedTreeHead(self.etl.signed_tree_head(&self.keyring))),
            Query::GetInclusionProof { leaf_index } => {
                require_auditor(principal)?;
                self.etl.inclusion_proof(leaf_index)
            }
            Query::GetConsistencyProof { first_tree_size, second_tree_size } => {
                require_auditor(principal)?;
                self.etl.consistency_proof(first_tree_size, second_tree_size)
            }
            Query::GetCapsule { claim_id } => {
                let (capsule, capsule_hash, etl_index) = self.durable_capsule(principal, &claim_id)?;
                Ok(Response::Capsule { capsule, capsule_hash, etl_index })
            }
            Query::FetchCapsule { claim_id } => {
                let (capsule, capsule_hash, etl_index) = self.durable_capsule(principal, &claim_id)?;
                let sth = self.etl.signed_tree_head(&self.keyring);
                let Response::InclusionProof { path: inclusion_path, leaf_hash, .. } =
                    self.etl.inclusion_proof(etl_index)?
                else {
                    unreachable!("inclusion_proof answers with an inclusion proof")
                };
                let Response::ConsistencyProof { path: consistency_path, .. } =
                    self.etl.consistency_proof(etl_index + 1, sth.tree_size)?
                else {
                    unreachable!("consistency_proof answers with a consistency proof")
                };
                Ok(Response::FetchedCapsule(Box::new(crate::request::FetchedCapsule {
                    capsule,
                    capsule_hash,
                    etl_index,
                    sth,
                    inclusion_path,
                    leaf_hash,
                    consistency_path,
                })))
            }
            Query::GetRevocationFeed => {
                let durable = self.etl.durable_size();
                let entries: Vec<crate::request::RevocationEntry> = self
                    .state
                    .claims
                    .revocations
                    .iter()
                    .filter(|r| r.etl_index < durable)
                    .map(|r| crate::request::RevocationEntry {
                        capsule_hash: r.capsule_hash.0,
                        timestamp_unix: r.timestamp_unix,
                        reason: r.reason.clone(),
                    })
                    .collect();
                let sth = self.etl.signed_tree_head(&self.keyring);
                let signature = self.keyring.sign(&crate::etl::revocation_feed_digest(&entries, &sth));
                Ok(Response::RevocationFeed(Box::new(crate::request::RevocationFeed { entries, sth, signature })))
            }
            Query::LedgerTotals => {
                require_auditor(principal)?;
                Ok(Response::LedgerTotals(self.state.claims.totals(now)))
            }
            Query::GetHoldoutPoolBudgets { holdout_id, scope } => {
                require_auditor(principal)?;
                self.state.claims.pool_budgets(&self.config.environment, &holdout_id, &scope)
            }
        }
    }

    /// Where a claim's durable capsule is in `etl.log` (the runtime reads it), its hash and index.
    fn durable_capsule(
        &self,
        principal: &Principal,
        claim_id: &[u8],
    ) -> Result<(crate::request::CapsuleBytes, crate::hash::Hash, u64), KernelError> {
        let record = self.state.claims.durable_capsule(principal, claim_id, self.etl.durable_size())?;
        let at = self.etl.capsule_location(record.etl_index, record.hash.0).expect("a durable leaf has an offset");
        Ok((crate::request::CapsuleBytes::InLog(at), record.hash.0, record.etl_index))
    }

    fn admit(
        &mut self,
        now: Timestamp,
        id: RequestId,
        principal: Principal,
        command: Command,
        key: Option<IdempotencyKey>,
    ) {
        if self.failed {
            self.outputs.push_back(Output::Reply(id, Err(KernelError::storage_failed())));
            return;
        }
        if self.staged.len() >= self.config.max_staged_commands {
            let busy = KernelError::resource_exhausted("kernel queue is full; retry later");
            self.outputs.push_back(Output::Reply(id, Err(busy)));
            return;
        }
        if let Some(key) = &key {
            let retry = match key.validate() {
                Err(error) => Some(Err(error)),
                Ok(()) => self.state.recorded_reply(&principal, key),
            };
            if let Some(reply) = retry {
                // Queued behind earlier commands: the original may not be durable yet.
                let staged = Staged { request: id, reply, journal_bytes: Vec::new(), etl_bytes: Vec::new(), leaves: 0 };
                self.staged.push_back(staged);
                return;
            }
        }
        let checked = command.validate().and_then(|()| command.authorize(&principal));
        let applied = checked.and_then(|()| {
            self.state.apply_command(
                &self.config.environment,
                &self.config.policy,
                &principal,
                now,
                &command,
                key.as_ref(),
                self.etl.len(),
            )
        });
        // Even a refusal waits its turn: it was decided on state that earlier, not yet durable,
        // commands produced.
        let staged = match applied {
            Ok(applied) => {
                if let Command::ReloadEnvironment(new) = &command {
                    // Later commands are judged under the new environment; the swap is journaled.
                    self.config.environment = (**new).clone();
                }
                self.last_seq += 1;
                let journal_bytes =
                    JournalRecord::entry(self.last_seq, now, &principal, &command, key.as_ref()).to_frame();
                let mut etl_bytes = Vec::new();
                for leaf in &applied.leaves {
                    self.etl.append(leaf, &mut etl_bytes);
                }
                Staged {
                    request: id,
                    reply: applied.response,
                    journal_bytes,
                    etl_bytes,
                    leaves: applied.leaves.len() as u64,
                }
            }
            Err(error) => {
                Staged { request: id, reply: Err(error), journal_bytes: Vec::new(), etl_bytes: Vec::new(), leaves: 0 }
            }
        };
        self.staged.push_back(staged);
    }

    fn complete(&mut self, now: Timestamp, effect: EffectId, outcome: Result<(), IoFailure>) {
        let Some(in_flight) = self.in_flight.as_mut() else {
            return self.fail_protocol(format!("completion for {effect:?} with nothing in flight"));
        };
        let Some(position) = in_flight.outstanding.iter().position(|(id, _)| *id == effect) else {
            return self.fail_protocol(format!("completion for unknown {effect:?}"));
        };
        let (_, file) = in_flight.outstanding.remove(position);
        if let Err(IoFailure(reason)) = outcome {
            return self.fail_storage(file, reason);
        }
        if !in_flight.outstanding.is_empty() {
            return;
        }
        let finished = self.in_flight.take().expect("checked above");
        match finished.then {
            Completion::Batch { replies, tree_size, journal_seq, records, journal_bytes, snapshot } => {
                let leaves = tree_size - self.etl.durable_size();
                self.outputs
                    .push_back(Output::Event(LogEvent::BatchDurable { commands: replies.len() as u64, leaves }));
                self.etl.mark_durable(tree_size);
                self.notify_durable_revocations();
                self.durable_seq = journal_seq;
                self.uncovered_records += records;
                self.uncovered_journal_bytes += journal_bytes;
                for (request, reply) in replies {
                    self.outputs.push_back(Output::Reply(request, reply));
                }
                if let Some(snapshot) = snapshot {
                    self.start_checkpoint(snapshot);
                } else if self.uncovered_records > 0 && self.checkpoint_deadline.is_none() {
                    let deadline = now.saturating_add_ms(self.config.checkpoint_idle_ms);
                    self.checkpoint_deadline = Some(deadline);
                    self.outputs.push_back(Output::Wake(deadline));
                }
            }
            Completion::Repair { tree_size, snapshot } => {
                self.etl.mark_durable(tree_size);
                // Revocations from before this boot were announced by the previous process.
                self.notified_revocations = self.state.claims.revocations.len();
                self.recovering = false;
                self.outputs.push_back(Output::Event(LogEvent::Recovered { tree_size, journal_seq: self.durable_seq }));
                self.start_checkpoint(snapshot);
            }
            Completion::Checkpoint { snapshot_seq, tree_size, rows, row_bytes, checkpoint_bytes, compacted } => {
                self.outputs.push_back(Output::Event(LogEvent::CheckpointWritten {
                    journal_seq: snapshot_seq,
                    tree_size,
                    rows,
                    row_bytes,
                    checkpoint_bytes,
                }));
                self.outputs.extend(compacted.map(Output::Event));
                // The journal holds nothing past the snapshot: later commands are still staged.
                debug_assert_eq!(self.durable_seq, snapshot_seq);
                let header =
                    JournalRecord::header(snapshot_seq, &self.config.policy, &self.config.environment).to_frame();
                self.start(vec![Effect::Replace { file: FileId::Journal, bytes: header }], Completion::Compaction);
            }
            Completion::Compaction => {
                self.uncovered_records = 0;
                self.uncovered_journal_bytes = 0;
                self.checkpoint_deadline = None;
            }
        }
    }

    /// Announces revocations whose leaves just became durable, each signed as a one-entry feed.
    fn notify_durable_revocations(&mut self) {
        let durable = self.etl.durable_size();
        while let Some(record) = self.state.claims.revocations.get(self.notified_revocations) {
            if record.etl_index >= durable {
                break;
            }
            let entry = crate::request::RevocationEntry {
                capsule_hash: record.capsule_hash.0,
                timestamp_unix: record.timestamp_unix,
                reason: record.reason.clone(),
            };
            let sth = self.etl.signed_tree_head(&self.keyring);
            let entries = vec![entry];
            let signature = self.keyring.sign(&crate::etl::revocation_feed_digest(&entries, &sth));
            let feed = crate::request::RevocationFeed { entries, sth, signature };
            self.outputs.push_back(Output::Notify(crate::io::Notification::Revocation(Box::new(feed))));
            self.notified_revocations += 1;
        }
    }

    /// Starts the next storage phase if none is running.
    fn pump(&mut self) {
        if self.failed || self.in_flight.is_some() || self.recovering {
            return;
        }
        // Refusals at the front depend only on durable state now: release them.
        while self.staged.front().is_some_and(|s| s.journal_bytes.is_empty()) {
            let staged = self.staged.pop_front().expect("checked");
            self.outputs.push_back(Output::Reply(staged.request, staged.reply));
        }
        if !self.staged.is_empty() {
            self.start_batch();
        } else if self.checkpoint_requested {
            self.checkpoint_requested = false;
            if self.uncovered_records > 0 {
                let snapshot = self.snapshot();
                self.start_checkpoint(snapshot);
            }
        }
    }

    fn start_batch(&mut self) {
        // Due once the records this batch makes durable reach the interval; a due batch takes
        // everything staged, so count all of it.
        let staged_records = self.staged.iter().filter(|s| !s.journal_bytes.is_empty()).count() as u64;
        let staged_bytes: u64 = self.staged.iter().map(|s| s.journal_bytes.len() as u64).sum();
        let checkpoint_due = self.checkpoint_requested
            || (self.uncovered_records + staged_records >= self.config.checkpoint_every
                && self.uncovered_journal_bytes + staged_bytes >= self.checkpoint_bytes / CHECKPOINT_JOURNAL_FRACTION);
        let (mut journal, mut etl) = (Vec::new(), Vec::new());
        let mut replies = Vec::new();
        let (mut leaves, mut records) = (0u64, 0u64);
        while let Some(next) = self.staged.front() {
            let over_limit = replies.len() >= self.config.max_batch_commands
                || journal.len() + etl.len() + next.journal_bytes.len() + next.etl_bytes.len()
                    > self.config.max_batch_bytes;
            // A due checkpoint needs memory to equal the journal, so it takes everything staged.
            if !replies.is_empty() && over_limit && !checkpoint_due {
                break;
            }
            let staged = self.staged.pop_front().expect("checked");
            records += u64::from(!staged.journal_bytes.is_empty());
            leaves += staged.leaves;
            journal.extend_from_slice(&staged.journal_bytes);
            etl.extend_from_slice(&staged.etl_bytes);
            replies.push((staged.request, staged.reply));
        }
        let tree_size = self.etl.durable_size() + leaves;
        let journal_seq = self.durable_seq + records;
        let journal_bytes = journal.len() as u64;
        debug_assert!(journal_seq <= self.last_seq && tree_size <= self.etl.len());
        let snapshot = (checkpoint_due && self.staged.is_empty()).then(|| {
            self.checkpoint_requested = false;
            self.snapshot()
        });
        // Crash boundary: the journal is durable before any of its leaves is written, so every
        // leaf a crash can leave behind is explained by the journal, and recovery may refuse any
        // other (it could be signed history whose journal was lost).
        let mut effects = Vec::with_capacity(4);
        if !journal.is_empty() {
            effects.push(Effect::Append { file: FileId::Journal, bytes: journal });
        }
        if records > 0 {
            effects.push(Effect::Sync { file: FileId::Journal });
        }
        if !etl.is_empty() {
            effects.push(Effect::Append { file: FileId::Etl, bytes: etl });
        }
        if leaves > 0 {
            effects.push(Effect::Sync { file: FileId::Etl });
        }
        self.start(effects, Completion::Batch { replies, tree_size, journal_seq, records, journal_bytes, snapshot });
    }

    fn start_checkpoint(&mut self, snapshot: Snapshot) {
        self.checkpoint_bytes = (snapshot.rows.len() + snapshot.checkpoint.len()) as u64;
        let then = Completion::Checkpoint {
            snapshot_seq: snapshot.journal_seq,
            tree_size: snapshot.tree_size,
            rows: snapshot.row_count,
            row_bytes: snapshot.rows.len() as u64,
            checkpoint_bytes: snapshot.checkpoint.len() as u64,
            compacted: snapshot.compacted,
        };
        let mut effects = Vec::with_capacity(3);
        // Crash boundary: the rows are durable before `state.json` names them. A crash before
        // the replace leaves rows past the covered length, which recovery cuts (the journal
        // still holds their commands).
        if !snapshot.rows.is_empty() {
            effects.push(Effect::Append { file: snapshot.file, bytes: snapshot.rows });
            effects.push(Effect::Sync { file: snapshot.file });
        }
        effects.push(Effect::Replace { file: FileId::Checkpoint, bytes: snapshot.checkpoint });
        // Crash boundary: only once `state.json` names the compacted file alone may the old one
        // be emptied (a crash before leaves it whole and unnamed; recovery empties it).
        if let Some(retired) = snapshot.retired {
            effects.push(Effect::Truncate { file: retired, len: 0 });
            effects.push(Effect::Sync { file: retired });
        }
        self.start(effects, then);
    }

    /// Emits `effects` and waits for all of them before running `then`.
    fn start(&mut self, effects: Vec<Effect>, then: Completion) {
        assert!(self.in_flight.is_none(), "one storage phase at a time");
        assert!(!effects.is_empty(), "every phase writes something, or its completion would never come");
        let mut outstanding = Vec::with_capacity(effects.len());
        for effect in effects {
            let id = EffectId(self.next_effect);
            self.next_effect += 1;
            outstanding.push((id, effect.file()));
            self.outputs.push_back(Output::Effect(id, effect));
        }
        self.in_flight = Some(InFlight { outstanding, then });
    }

    /// State as of the last admitted command. Callers ensure that equals the durable journal.
    /// Takes the changed rows (and, while compacting, a slice of the unchanged ones): the
    /// checkpoint this starts must be written (or the kernel fails).
    fn snapshot(&mut self) -> Snapshot {
        let tree_size = self.etl.len();
        self.start_compaction_if_due();
        let mut rows = Vec::new();
        let mut row_count = crate::state_log::take_changes(&mut self.state, &mut rows);
        let budget = self.config.compaction_copy_bytes.max(2 * rows.len() as u64);
        let (file, mut retired) = match self.rows.compaction.as_mut() {
            Some(compaction) => {
                row_count += crate::state_log::copy_rows(&mut self.state, &mut compaction.cursor, budget, &mut rows);
                compaction.into.len += rows.len() as u64;
                compaction.records += row_count;
                (compaction.into.file(), None)
            }
            None => {
                self.rows.current.len += rows.len() as u64;
                (self.rows.current.file(), None)
            }
        };
        self.rows.records += row_count;
        let mut compacted = None;
        if self.rows.compaction.as_ref().is_some_and(|c| c.cursor.is_done()) {
            let done = self.rows.compaction.take().expect("checked");
            retired = Some(self.rows.current.file());
            self.rows = RowsFiles { current: done.into, compaction: None, records: done.records };
            compacted = Some(LogEvent::RowsCompacted {
                generation: done.into.generation,
                records: done.records,
                bytes: done.into.len,
            });
        }
        let checkpoint = crate::checkpoint::CheckpointRef {
            format: crate::checkpoint::CHECKPOINT_FORMAT,
            kernel_version: crate::KERNEL_VERSION,
            journal_seq: self.last_seq,
            tree_size,
            root_hash_hex: hex::encode(self.etl.root_at(tree_size).expect("whole tree")),
            rows: self.rows.current,
            compacting: self.rows.compaction.as_ref().map(|c| c.into),
            untabled: crate::checkpoint::UntabledRef::of(&self.state),
        };
        let checkpoint = crate::canonical::to_vec(&checkpoint).expect("checkpoint is plain JSON");
        Snapshot { journal_seq: self.last_seq, tree_size, file, rows, row_count, checkpoint, retired, compacted }
    }

    /// Starts compacting into the next row file once superseded rows are most of what the
    /// files hold (and there are enough of them to be worth it).
    fn start_compaction_if_due(&mut self) {
        if self.rows.compaction.is_some() || self.rows.records < self.config.compaction_min_records {
            return;
        }
        if self.rows.records > 2 * crate::state_log::live_rows(&mut self.state) {
            let into = RowsAt { generation: self.rows.current.generation + 1, len: 0 };
            self.rows.compaction = Some(Compaction { into, cursor: crate::state_log::Cursor::default(), records: 0 });
        }
    }

    fn fail_storage(&mut self, file: FileId, reason: String) {
        self.outputs.push_back(Output::Event(LogEvent::StorageFailed { file, reason }));
        self.enter_failed_state();
    }

    fn fail_protocol(&mut self, reason: String) {
        self.outputs.push_back(Output::Event(LogEvent::ProtocolViolation { reason }));
        self.enter_failed_state();
    }

    /// After a failed write or sync nothing on disk can be trusted: refuse everything pending.
    fn enter_failed_state(&mut self) {
        self.failed = true;
        if let Some(InFlight { then: Completion::Batch { replies, .. }, .. }) = self.in_flight.take() {
            for (request, _) in replies {
                self.outputs.push_back(Output::Reply(request, Err(KernelError::storage_failed())));
            }
        }
        for staged in self.staged.drain(..) {
            self.outputs.push_back(Output::Reply(staged.request, Err(KernelError::storage_failed())));
        }
    }
}

fn require_auditor(principal: &Principal) -> Result<(), KernelError> {
    if principal.is_auditor_or_operator() {
        Ok(())
    } else {
        Err(KernelError::permission_denied("auditor or operator role required"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etl::verify_tree_head;
    use crate::keys::{KeyFile, key_file_name, key_id_for_seed, public_key_for_seed};
    use crate::memdisk::MemDisk;
    use crate::request::{Role, SignedTreeHead};

    const ROWS_0: FileId = FileId::StateLog(RowFile::Zero);

    const SEED: [u8; 32] = [7; 32];
    const NOW: Timestamp = Timestamp(1_750_000_000_000);

    fn keys() -> (Vec<KeyFile>, Vec<u8>) {
        let id = key_id_for_seed(&SEED);
        (vec![KeyFile { name: key_file_name(&id), bytes: SEED.to_vec() }], format!("{id}\n").into_bytes())
    }

    /// One holdout, so the tests can run real claims: their capsules and revocations are the
    /// only ETL leaves a kernel writes.
    fn config() -> KernelConfig {
        let labels: Vec<u8> = (0..64).map(|i| u8::from(i % 3 == 0)).collect();
        let holdout = crate::holdout::holdout_files("demo", [0xd0; 32], &labels, 1_700_000_000);
        let environment = crate::environment::Environment::default().with_holdouts(&[holdout]).unwrap();
        KernelConfig { checkpoint_every: 1000, environment, ..KernelConfig::default() }
    }

    fn boot(disk: &mut MemDisk, config: KernelConfig) -> Kernel {
        let (keys, active) = keys();
        let mut kernel = Kernel::recover(config, disk.recovery_files(keys, active)).unwrap();
        disk.drive(&mut kernel, NOW);
        assert!(!kernel.is_recovering() && kernel.is_idle());
        kernel
    }

    fn operator() -> Principal {
        Principal::new("op", Role::Operator)
    }

    /// Runs claim `n` through create, commit, freeze and execute (four commands, one capsule
    /// leaf) and returns its id.
    /// CreateClaimV2 of claim `n` on the test holdout.
    fn create_claim(n: u8) -> Command {
        let create = crate::request::CreateClaimV2::fast_legacy(format!("leaf-{n}"), "demo");
        Command::CreateClaimV2(Box::new(create))
    }

    fn claim_module() -> Vec<u8> {
        wat::parse_file(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/claim_all_zero.wat")).unwrap()
    }

    fn executed_claim(disk: &mut MemDisk, kernel: &mut Kernel, n: u8) -> Vec<u8> {
        let mut call = |command: Command| {
            send(kernel, 900, Request::Command(command));
            let reply = replies(&disk.drive(kernel, NOW)).pop().expect("answered once durable");
            reply.1.expect("claim step accepted")
        };
        let Response::ClaimCreated { claim_id, .. } = call(create_claim(n)) else { panic!("ClaimCreated expected") };
        let claim_id = claim_id.to_vec();
        let module = claim_module();
        let artifacts =
            vec![crate::request::ArtifactInput { kind: "wasm".into(), hash: crate::hash::sha256(&module).to_vec() }];
        call(Command::CommitArtifacts { claim_id: claim_id.clone(), artifacts, wasm_module: module });
        call(Command::FreezeGates { claim_id: claim_id.clone() });
        assert!(matches!(call(Command::ExecuteClaimV2 { claim_id: claim_id.clone() }), Response::Executed(_)));
        claim_id
    }

    /// One command, one ETL leaf: the revocation of an executed claim.
    fn revoke(claim_id: &[u8]) -> Request {
        Request::Command(Command::RevokeClaim { claim_id: claim_id.to_vec(), reason: "test".into() })
    }

    fn revoked() -> Result<Response, KernelError> {
        Ok(Response::Revoked { state: crate::claim::ClaimState::Revoked, timestamp_unix: NOW.0 / 1000 })
    }

    fn grant(amount: u64) -> Request {
        Request::Command(Command::GrantCredit { principal_id: "agent".into(), amount, reason: "r".into() })
    }

    fn send(kernel: &mut Kernel, id: u64, request: Request) {
        kernel.handle(NOW, Input::Request { id: RequestId(id), principal: operator(), request });
    }

    fn replies(outputs: &[Output]) -> Vec<(u64, Result<Response, KernelError>)> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Reply(id, reply) => Some((id.0, reply.clone())),
                _ => None,
            })
            .collect()
    }

    fn sth(kernel: &mut Kernel) -> SignedTreeHead {
        kernel.handle(
            NOW,
            Input::Request {
                id: RequestId(999),
                principal: operator(),
                request: Request::Query(Query::GetSignedTreeHead),
            },
        );
        match kernel.poll() {
            Some(Output::Reply(_, Ok(Response::SignedTreeHead(sth)))) => sth,
            other => panic!("expected an STH, got {other:?}"),
        }
    }

    #[test]
    fn fresh_start_writes_checkpoint_and_journal_header_and_signs_size_zero() {
        let mut disk = MemDisk::new();
        let mut kernel = boot(&mut disk, config());
        assert!(!disk.contents(FileId::Checkpoint).is_empty());
        let journal = frame::scan(disk.contents(FileId::Journal), 0).unwrap();
        assert_eq!(journal.records.len(), 1, "header only");
        let head = sth(&mut kernel);
        assert_eq!(head.tree_size, 0);
        assert!(verify_tree_head(&public_key_for_seed(&SEED), &head));
    }

    #[test]
    fn a_command_is_answered_only_after_its_records_are_synced() {
        let mut disk = MemDisk::new();
        let mut kernel = boot(&mut disk, config());
        let claim = executed_claim(&mut disk, &mut kernel, 0);
        send(&mut kernel, 1, revoke(&claim));
        let mut effects = Vec::new();
        while let Some(output) = kernel.poll() {
            match output {
                Output::Effect(id, effect) => effects.push((id, effect)),
                Output::Reply(..) => panic!("reply before durability"),
                _ => {}
            }
        }
        let kinds: Vec<String> = effects.iter().map(|(_, e)| format!("{:?}", std::mem::discriminant(e))).collect();
        assert_eq!(kinds.len(), 4, "append journal, append etl, sync both: {effects:?}");
        assert_eq!(sth(&mut kernel).tree_size, 1, "reads see only durable leaves");
        for (id, effect) in effects {
            disk.apply(&effect).unwrap();
            kernel.handle(NOW, Input::Done { effect: id, outcome: Ok(()) });
        }
        let outputs = disk.drive(&mut kernel, NOW);
        assert_eq!(replies(&outputs), vec![(1, revoked())]);
        assert_eq!(sth(&mut kernel).tree_size, 2);
    }

    #[test]
    fn commands_arriving_during_a_sync_share_the_next_one() {
        let mut disk = MemDisk::new();
        let mut kernel = boot(&mut disk, config());
        let claims: Vec<Vec<u8>> = (0..5).map(|n| executed_claim(&mut disk, &mut kernel, n)).collect();
        send(&mut kernel, 1, revoke(&claims[0]));
        let first_batch: Vec<Output> = std::iter::from_fn(|| kernel.poll()).collect();
        for id in 2..=5 {
            send(&mut kernel, id, revoke(&claims[id as usize - 1]));
        }
        assert!(kernel.poll().is_none(), "nothing more is written while a batch is in flight");
        for output in first_batch {
            if let Output::Effect(id, effect) = output {
                disk.apply(&effect).unwrap();
                kernel.handle(NOW, Input::Done { effect: id, outcome: Ok(()) });
            }
        }
        let outputs = disk.drive(&mut kernel, NOW);
        let journal_syncs =
            outputs.iter().filter(|o| matches!(o, Output::Effect(_, Effect::Sync { file: FileId::Journal }))).count();
        assert_eq!(journal_syncs, 1, "four commands, one sync");
        let ids: Vec<u64> = replies(&outputs).into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, vec![1, 2, 3, 4, 5], "replies in admission order");
        assert_eq!(sth(&mut kernel).tree_size, 10, "five capsules, five revocations");
    }

    #[test]
    fn commands_handed_in_together_share_one_batch_and_queries_among_them_are_answered_at_once() {
        let mut disk = MemDisk::new();
        let mut kernel = boot(&mut disk, config());
        let claims: Vec<Vec<u8>> = (0..4).map(|n| executed_claim(&mut disk, &mut kernel, n)).collect();
        let mut inputs: Vec<Input> = (1..=4)
            .map(|id| Input::Request {
                id: RequestId(id),
                principal: operator(),
                request: revoke(&claims[id as usize - 1]),
            })
            .collect();
        let sth_query = Request::Query(Query::GetSignedTreeHead);
        inputs.insert(2, Input::Request { id: RequestId(9), principal: operator(), request: sth_query });
        kernel.handle_all(NOW, inputs);
        let Some(Output::Reply(RequestId(9), Ok(Response::SignedTreeHead(head)))) = kernel.poll() else {
            panic!("the query is answered before any effect")
        };
        assert_eq!(head.tree_size, 4, "on the durable log: no revocation yet");
        let outputs = disk.drive(&mut kernel, NOW);
        let syncs = |file| {
            outputs.iter().filter(|o| matches!(o, Output::Effect(_, Effect::Sync { file: f }) if *f == file)).count()
        };
        assert_eq!((syncs(FileId::Journal), syncs(FileId::Etl)), (1, 1), "four commands, one batch: {outputs:?}");
        let ids: Vec<u64> = replies(&outputs).into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, vec![1, 2, 3, 4], "replies in admission order");
        assert_eq!(sth(&mut kernel).tree_size, 8);
    }

    #[test]
    fn refusals_wait_behind_earlier_commands_and_change_nothing() {
        let mut disk = MemDisk::new();
        let mut kernel = boot(&mut disk, config());
        send(&mut kernel, 1, Request::Command(Command::SetCreditLimit { principal_id: "agent".into(), limit: 5 }));
        send(&mut kernel, 2, grant(6));
        let outputs = disk.drive(&mut kernel, NOW);
        let got = replies(&outputs);
        assert_eq!(got[0], (1, Ok(Response::CreditLimit { credit_limit: 5 })));
        assert_eq!(got[1].1.as_ref().unwrap_err().code, crate::ErrorCode::ResourceExhausted);
        kernel.handle(NOW, Input::Request { id: RequestId(3), principal: Principal::anonymous(), request: grant(1) });
        let got = replies(&disk.drive(&mut kernel, NOW));
        assert_eq!(got[0].1.as_ref().unwrap_err().code, crate::ErrorCode::PermissionDenied);
        assert_eq!(kernel.state().credits["agent"].balance, 0);
    }

    #[test]
    fn a_storage_failure_fails_pending_and_later_commands() {
        let mut disk = MemDisk::new();
        let mut kernel = boot(&mut disk, config());
        let claims = [executed_claim(&mut disk, &mut kernel, 0), executed_claim(&mut disk, &mut kernel, 1)];
        disk.fail_effect(1);
        send(&mut kernel, 1, revoke(&claims[0]));
        let outputs = disk.drive(&mut kernel, NOW);
        assert!(kernel.is_failed());
        assert!(outputs.iter().any(|o| matches!(o, Output::Event(LogEvent::StorageFailed { .. }))));
        assert_eq!(replies(&outputs)[0].1.as_ref().unwrap_err().code, crate::ErrorCode::Unavailable);
        send(&mut kernel, 2, revoke(&claims[1]));
        assert_eq!(
            replies(&disk.drive(&mut kernel, NOW))[0].1.as_ref().unwrap_err().code,
            crate::ErrorCode::Unavailable
        );
    }

    #[test]
    fn forged_completions_fail_the_kernel() {
        let mut disk = MemDisk::new();
        let mut kernel = boot(&mut disk, config());
        kernel.handle(NOW, Input::Done { effect: EffectId(12345), outcome: Ok(()) });
        assert!(kernel.is_failed());
    }

    #[test]
    fn restart_replays_the_journal_to_the_same_state_and_tree() {
        let mut disk = MemDisk::new();
        let mut kernel = boot(&mut disk, config());
        let claims: Vec<Vec<u8>> = (0..7).map(|n| executed_claim(&mut disk, &mut kernel, n)).collect();
        for (id, claim) in (0..).zip(&claims) {
            send(&mut kernel, id, revoke(claim));
            send(&mut kernel, 100 + id, grant(1 + id));
        }
        disk.drive(&mut kernel, NOW);
        assert_eq!(kernel.durable_tree_size(), 14);
        let head = sth(&mut kernel);
        let state = kernel.state().clone();
        disk.crash();
        let mut again = boot(&mut disk, config());
        assert_eq!(again.state(), &state);
        assert_eq!(sth(&mut again), head);
    }

    #[test]
    fn checkpoints_compact_the_journal_and_recover_identically() {
        let mut disk = MemDisk::new();
        let mut kernel = boot(&mut disk, KernelConfig { checkpoint_every: 3, ..config() });
        // Fifteen commands: three claims of four, three revocations.
        let claims: Vec<Vec<u8>> = (0..3).map(|n| executed_claim(&mut disk, &mut kernel, n)).collect();
        for (id, claim) in (0..).zip(&claims) {
            send(&mut kernel, id, revoke(claim));
            disk.drive(&mut kernel, NOW);
        }
        let journal = frame::scan(disk.contents(FileId::Journal), 0).unwrap();
        assert!(journal.records.len() <= 4, "journal compacted: {} records", journal.records.len());
        let head = sth(&mut kernel);
        disk.crash();
        let mut again = boot(&mut disk, config());
        assert_eq!(sth(&mut again), head);
        assert_eq!(again.durable_journal_seq(), 15);
    }

    /// What each checkpoint appends to a row file and the `state.json` it writes, in order.
    fn checkpoint_writes(outputs: &[Output]) -> Vec<(usize, usize)> {
        let mut writes = Vec::new();
        let mut rows = 0;
        for output in outputs {
            match output {
                Output::Effect(_, Effect::Append { file: FileId::StateLog(_), bytes }) => rows = bytes.len(),
                Output::Effect(_, Effect::Replace { file: FileId::Checkpoint, bytes }) => {
                    writes.push((rows, bytes.len()));
                    rows = 0;
                }
                _ => {}
            }
        }
        writes
    }

    #[test]
    fn checkpoints_write_only_what_changed_and_never_rewrite_history() {
        let mut disk = MemDisk::new();
        let mut kernel = boot(&mut disk, KernelConfig { checkpoint_every: 1, ..config() });
        let mut writes = Vec::new();
        let mut log_before = Vec::new();
        for id in 0..400 {
            let grant = Command::GrantCredit { principal_id: format!("agent-{id:03}"), amount: 1, reason: "r".into() };
            send(&mut kernel, id, Request::Command(grant));
            writes.extend(checkpoint_writes(&disk.drive(&mut kernel, NOW)));
            let log = disk.contents(ROWS_0).to_vec();
            assert!(log.starts_with(&log_before), "the row file is only appended to");
            log_before = log;
        }
        // Each record is due (checkpoint_every 1) and each checkpoint costs one account's row and
        // a state.json of constant size, however many accounts came before.
        assert_eq!(writes.len(), 400, "{writes:?}");
        let ((first_rows, first_json), (last_rows, last_json)) = (writes[0], writes[399]);
        assert_eq!(first_rows, last_rows, "the 400th checkpoint appends what the first did");
        assert!(last_json <= first_json + 8, "state.json grew only by digits: {first_json} → {last_json}");
        let journal = frame::scan(disk.contents(FileId::Journal), 0).unwrap();
        assert_eq!(journal.records.len(), 1, "compacted at each: only the header is left");
        let state = kernel.state().clone();
        disk.crash();
        assert_eq!(boot(&mut disk, config()).state(), &state);
    }

    /// Records in both row files.
    fn row_records(disk: &MemDisk) -> usize {
        RowFile::ALL
            .iter()
            .map(|slot| frame::scan(disk.contents(FileId::StateLog(*slot)), 0).unwrap().records.len())
            .sum()
    }

    #[test]
    fn compaction_keeps_the_row_files_near_the_live_rows_and_recovers_the_same_state() {
        let mut disk = MemDisk::new();
        let config =
            KernelConfig { checkpoint_every: 1, compaction_min_records: 20, compaction_copy_bytes: 1, ..config() };
        let mut kernel = boot(&mut disk, config.clone());
        let mut compacted = Vec::new();
        for id in 0..300 {
            // Ten accounts, each rewritten every tenth command: superseded rows pile up.
            let principal_id = format!("agent-{}", id % 10);
            send(
                &mut kernel,
                id,
                Request::Command(Command::GrantCredit { principal_id, amount: 1, reason: "r".into() }),
            );
            for output in disk.drive(&mut kernel, NOW) {
                if let Output::Event(LogEvent::RowsCompacted { generation, .. }) = output {
                    compacted.push(generation);
                }
            }
            // Without compaction the files would hold one record per command.
            assert!(row_records(&disk) <= 60, "{} records after command {id}", row_records(&disk));
        }
        assert!(compacted.len() >= 5, "{compacted:?}");
        assert!(compacted.windows(2).all(|pair| pair[1] == pair[0] + 1), "{compacted:?}");
        let state = kernel.state().clone();
        disk.crash();
        assert_eq!(boot(&mut disk, config).state(), &state);
    }

    /// A kernel that accepted one grant, durable, with its checkpoint asked for (not yet run).
    fn one_grant_then_checkpoint(disk: &mut MemDisk) -> Kernel {
        let mut kernel = boot(disk, config());
        send(&mut kernel, 1, grant(3));
        disk.drive(&mut kernel, NOW);
        kernel.handle(NOW, Input::Checkpoint);
        kernel
    }

    #[test]
    fn rows_without_their_state_json_refuse_to_start() {
        let mut disk = MemDisk::new();
        let mut kernel = one_grant_then_checkpoint(&mut disk);
        disk.drive(&mut kernel, NOW);
        let files = disk.recovery_files(keys().0, keys().1);
        assert!(!files.row_files[0].is_empty());
        let refused = Kernel::recover(config(), RecoveryFiles { checkpoint: None, ..files }).unwrap_err();
        assert!(matches!(refused, RecoveryError::BadRowFile { file: ROWS_0, .. }), "{refused}");
        assert!(refused.to_string().contains("state.json is missing"), "{refused}");
    }

    #[test]
    fn a_crash_between_the_rows_and_state_json_cuts_the_rows_and_replays_the_journal() {
        let mut disk = MemDisk::new();
        let mut kernel = one_grant_then_checkpoint(&mut disk);
        let covered = disk.contents(ROWS_0).len();
        // Carry out the checkpoint's row append and sync, then crash before its state.json.
        while let Some(output) = kernel.poll() {
            if let Output::Effect(id, effect) = output {
                if matches!(effect, Effect::Replace { file: FileId::Checkpoint, .. }) {
                    break;
                }
                let outcome = disk.apply(&effect);
                kernel.handle(NOW, Input::Done { effect: id, outcome });
            }
        }
        assert!(disk.contents(ROWS_0).len() > covered, "the rows reached the disk");
        let state = kernel.state().clone();
        disk.crash();
        let mut again = boot(&mut disk, config());
        assert_eq!(again.state(), &state, "the journal still held the command");
        assert_eq!(again.durable_journal_seq(), 1);
        // Recovery cut the uncovered rows, then checkpointed the replayed ones after them.
        let log = frame::scan(disk.contents(ROWS_0), 0).unwrap();
        assert_eq!(log.torn_bytes, 0);
        again.handle(NOW, Input::Checkpoint);
        disk.drive(&mut again, NOW);
        disk.crash();
        assert_eq!(boot(&mut disk, config()).state(), &state);
    }

    #[test]
    fn idle_checkpoint_fires_on_tick_after_the_deadline() {
        let mut disk = MemDisk::new();
        let mut kernel = boot(&mut disk, config());
        send(&mut kernel, 1, grant(1));
        let outputs = disk.drive(&mut kernel, NOW);
        let wake = outputs.iter().find_map(|o| if let Output::Wake(at) = o { Some(*at) } else { None }).unwrap();
        assert_eq!(wake, NOW.saturating_add_ms(config().checkpoint_idle_ms));
        kernel.handle(NOW, Input::Tick);
        assert!(kernel.poll().is_none(), "deadline not reached");
        kernel.handle(wake, Input::Tick);
        let outputs = disk.drive(&mut kernel, wake);
        assert!(outputs.iter().any(|o| matches!(o, Output::Event(LogEvent::CheckpointWritten { journal_seq: 1, .. }))));
    }

    #[test]
    fn leaves_past_the_journal_refuse_to_start_and_missing_ones_are_reappended() {
        let mut disk = MemDisk::new();
        let mut kernel = boot(&mut disk, config());
        executed_claim(&mut disk, &mut kernel, 0);
        let head = sth(&mut kernel);
        // A leaf no journal record explains may be signed history: never delete it.
        let mut etl = disk.contents(FileId::Etl).to_vec();
        frame::encode_into(b"orphan", &mut etl);
        let (keys, active) = keys();
        let mut files = disk.recovery_files(keys.clone(), active.clone());
        files.etl = FileInput::Bytes(etl);
        let refused = Kernel::recover(config(), files).unwrap_err();
        assert_eq!(refused, RecoveryError::UnexplainedLeaves { explained: 1, on_disk: 2 });
        let message = refused.to_string();
        assert!(message.contains("etl.log holds 2 leaves") && message.contains("1 unexplained"), "{message}");
        // A journaled leaf missing from the log is regenerated byte for byte.
        let mut files = disk.recovery_files(keys, active);
        files.etl = FileInput::default();
        let mut again = Kernel::recover(config(), files).unwrap();
        let outputs = disk.drive(&mut again, NOW);
        assert!(outputs.iter().any(|o| matches!(o, Output::Event(LogEvent::MissingLeavesReappended { count: 1 }))));
        assert_eq!(sth(&mut again), head);
    }

    #[test]
    fn a_log_restored_without_journal_and_checkpoint_refuses_to_start() {
        let mut disk = MemDisk::new();
        let mut kernel = boot(&mut disk, config());
        for n in 0..3 {
            executed_claim(&mut disk, &mut kernel, n);
        }
        let (keys, active) = keys();
        let mut files = disk.recovery_files(keys, active);
        files.journal.clear();
        files.checkpoint = None;
        assert_eq!(
            Kernel::recover(config(), files).unwrap_err(),
            RecoveryError::UnexplainedLeaves { explained: 0, on_disk: 3 }
        );
    }

    #[test]
    fn a_batch_syncs_its_journal_before_writing_its_leaves() {
        let mut disk = MemDisk::new();
        let mut kernel = boot(&mut disk, config());
        let claim_id = executed_claim(&mut disk, &mut kernel, 0);
        send(&mut kernel, 1, revoke(&claim_id));
        let effects: Vec<Effect> = disk
            .drive(&mut kernel, NOW)
            .into_iter()
            .filter_map(|o| if let Output::Effect(_, e) = o { Some(e) } else { None })
            .collect();
        let journal_sync = effects.iter().position(|e| *e == Effect::Sync { file: FileId::Journal });
        let etl_append = effects.iter().position(|e| matches!(e, Effect::Append { file: FileId::Etl, .. }));
        assert!(journal_sync.unwrap() < etl_append.unwrap(), "{effects:?}");
    }

    #[test]
    fn a_leaf_that_differs_from_its_replay_refuses_to_start() {
        let mut disk = MemDisk::new();
        let mut kernel = boot(&mut disk, config());
        executed_claim(&mut disk, &mut kernel, 0);
        let (keys, active) = keys();
        let mut files = disk.recovery_files(keys, active);
        files.etl = FileInput::Bytes(frame::encode(b"tampered"));
        assert_eq!(Kernel::recover(config(), files).unwrap_err(), RecoveryError::LeafMismatch { index: 0 });
    }

    #[test]
    fn replay_uses_the_policy_recorded_in_the_journal() {
        let mut disk = MemDisk::new();
        let mut kernel = boot(
            &mut disk,
            KernelConfig { policy: Policy { default_credit_limit: Some(10), ..Policy::default() }, ..config() },
        );
        send(&mut kernel, 1, Request::Command(Command::SetCreditLimit { principal_id: "agent".into(), limit: 20 }));
        send(&mut kernel, 2, grant(4));
        disk.drive(&mut kernel, NOW);
        let state = kernel.state().clone();
        assert_eq!(state.credits["agent"].balance, 14);
        disk.crash();
        let again = boot(&mut disk, config());
        assert_eq!(again.state(), &state, "a restart without the flag replays under the recorded policy");
    }

    #[test]
    fn reads_are_refused_until_recovery_is_durable() {
        let disk = MemDisk::new();
        let (keys, active) = keys();
        let mut kernel = Kernel::recover(config(), disk.recovery_files(keys, active)).unwrap();
        kernel.handle(
            NOW,
            Input::Request {
                id: RequestId(1),
                principal: operator(),
                request: Request::Query(Query::GetSignedTreeHead),
            },
        );
        let reply =
            std::iter::from_fn(|| kernel.poll()).find_map(|o| if let Output::Reply(_, r) = o { Some(r) } else { None });
        assert_eq!(reply.unwrap().unwrap_err().code, crate::ErrorCode::Unavailable);
    }

    #[test]
    #[should_panic(expected = "leaves neither durable, staged nor in flight")]
    fn invariants_catch_a_leaf_that_no_batch_will_write() {
        let mut disk = MemDisk::new();
        let mut kernel = boot(&mut disk, config());
        kernel.check_invariants();
        kernel.etl.append(b"a leaf appended behind the pipeline's back", &mut Vec::new());
        kernel.check_invariants();
    }

    #[test]
    #[should_panic(expected = "journal records unaccounted for")]
    fn invariants_catch_a_command_admitted_without_its_journal_record() {
        let mut disk = MemDisk::new();
        let mut kernel = boot(&mut disk, config());
        kernel.last_seq += 1;
        kernel.check_invariants();
    }

    #[test]
    #[should_panic(expected = "compacting into a generation other than the next")]
    fn invariants_catch_a_compaction_into_the_current_row_file() {
        let mut disk = MemDisk::new();
        let mut kernel = boot(&mut disk, config());
        let into = kernel.rows.current;
        kernel.rows.compaction = Some(Compaction { into, cursor: crate::state_log::Cursor::default(), records: 0 });
        kernel.check_invariants();
    }

    #[test]
    fn a_settled_claim_drops_its_code_and_its_capsule_is_served_from_the_log_after_restart() {
        use crate::request::CapsuleBytes;
        let mut disk = MemDisk::new();
        let mut kernel = boot(&mut disk, config());
        let claim_id = executed_claim(&mut disk, &mut kernel, 0);
        let id = crate::ids::ClaimId(claim_id.clone().try_into().unwrap());
        let claim = &kernel.state().claims.claims[&id];
        assert!(claim.wasm.is_empty() && claim.artifacts.is_empty(), "a settled claim keeps no code");
        assert_eq!(kernel.state().claims.settled_claims, 1);
        let capsule = frame::scan(disk.contents(FileId::Etl), 0).unwrap().records.last().unwrap().payload.to_vec();
        kernel.handle(NOW, Input::Checkpoint);
        disk.drive(&mut kernel, NOW);
        let checkpoint = String::from_utf8(disk.contents(FileId::Checkpoint).to_vec()).unwrap();
        assert!(checkpoint.contains("evidenceos.checkpoint.v3"), "{checkpoint}");
        let rows = String::from_utf8_lossy(disk.contents(ROWS_0)).into_owned();
        assert!(rows.contains("\"capsule\":{") && !rows.contains("\"bytes\""), "no capsule copy: {rows}");
        disk.crash();
        let mut again = boot(&mut disk, config());
        assert_eq!(again.state(), kernel.state());
        assert_eq!(again.state().claims.settled_claims, 1, "recounted from the checkpoint");
        let query = Request::Query(Query::GetCapsule { claim_id });
        again.handle(NOW, Input::Request { id: RequestId(5), principal: operator(), request: query });
        // The kernel names the leaf; reading it is the runtime's (here MemDisk's) work.
        let Some(Output::Reply(_, Ok(Response::Capsule { capsule: CapsuleBytes::InLog(at), capsule_hash, .. }))) =
            again.poll()
        else {
            panic!("a capsule located in etl.log expected")
        };
        assert_eq!(capsule_hash, crate::capsule::capsule_hash(&capsule));
        let mut read = Response::Capsule { capsule: CapsuleBytes::InLog(at), capsule_hash, etl_index: at.index };
        crate::etl::read_capsule(&mut read, |offset, buffer| disk.read_exact_at(FileId::Etl, offset, buffer)).unwrap();
        let Response::Capsule { capsule: served, .. } = read else { unreachable!() };
        assert_eq!(served, CapsuleBytes::Read(capsule));
    }

    #[test]
    #[should_panic(expected = "which lacks it")]
    fn invariants_catch_a_capsule_index_entry_without_its_claim() {
        let mut disk = MemDisk::new();
        let mut kernel = boot(&mut disk, config());
        let claim = crate::ids::ClaimId(executed_claim(&mut disk, &mut kernel, 1).try_into().unwrap());
        kernel.check_invariants();
        kernel.state.claims.capsule_claims.insert(crate::ids::CapsuleHash([0xab; 32]), claim);
        kernel.check_invariants();
    }

    /// One step of the command-sequence proptest: `slot` picks a claim seen so far.
    #[derive(Debug, Clone)]
    enum Step {
        Create(u8),
        Commit(usize),
        Freeze(usize),
        Execute(usize),
        Revoke(usize),
        Grant(u64),
        /// Carry out every pending effect (otherwise commands pile up behind the in-flight batch).
        Drive,
        Checkpoint,
        /// Crash, losing what was not synced, and recover.
        Restart,
    }

    fn any_step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            (0u8..6).prop_map(Step::Create),
            (0usize..8).prop_map(Step::Commit),
            (0usize..8).prop_map(Step::Freeze),
            (0usize..8).prop_map(Step::Execute),
            (0usize..8).prop_map(Step::Revoke),
            (0u64..3).prop_map(Step::Grant),
            Just(Step::Drive),
            Just(Step::Drive),
            Just(Step::Checkpoint),
            Just(Step::Restart),
        ]
    }

    fn step_command(step: &Step, claims: &[Vec<u8>]) -> Option<Command> {
        let pick = |slot: &usize| claims.get(slot % claims.len().max(1)).cloned().unwrap_or_else(|| vec![0xee; 32]);
        Some(match step {
            Step::Create(n) => create_claim(*n),
            Step::Commit(slot) => {
                let module = claim_module();
                let hash = crate::hash::sha256(&module).to_vec();
                let artifacts = vec![crate::request::ArtifactInput { kind: "wasm".into(), hash }];
                Command::CommitArtifacts { claim_id: pick(slot), artifacts, wasm_module: module }
            }
            Step::Freeze(slot) => Command::FreezeGates { claim_id: pick(slot) },
            Step::Execute(slot) => Command::ExecuteClaimV2 { claim_id: pick(slot) },
            Step::Revoke(slot) => Command::RevokeClaim { claim_id: pick(slot), reason: "test".into() },
            Step::Grant(amount) => {
                Command::GrantCredit { principal_id: "agent".into(), amount: *amount, reason: "r".into() }
            }
            Step::Drive | Step::Checkpoint | Step::Restart => return None,
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// `handle` asserts `check_invariants` after every input, so any sequence of commands,
        /// completions, checkpoints and crashes that breaks one fails here; a restart must also
        /// recover the state that was durable.
        #[test]
        fn invariants_hold_over_any_command_sequence(steps in proptest::collection::vec(any_step(), 1..40)) {
            let mut disk = MemDisk::new();
            let mut kernel = boot(&mut disk, config());
            let mut claims: Vec<Vec<u8>> = Vec::new();
            for (i, step) in steps.iter().enumerate() {
                let outputs = match step {
                    Step::Drive => disk.drive(&mut kernel, NOW),
                    Step::Checkpoint => {
                        kernel.handle(NOW, Input::Checkpoint);
                        disk.drive(&mut kernel, NOW)
                    }
                    Step::Restart => {
                        disk.drive(&mut kernel, NOW);
                        let durable = kernel.state().clone();
                        disk.crash();
                        kernel = boot(&mut disk, config());
                        proptest::prop_assert_eq!(kernel.state(), &durable);
                        Vec::new()
                    }
                    _ => {
                        let command = step_command(step, &claims).expect("a command step");
                        send(&mut kernel, i as u64, Request::Command(command));
                        Vec::new()
                    }
                };
                for (_, reply) in replies(&outputs) {
                    if let Ok(Response::ClaimCreated { claim_id, .. }) = reply
                        && !claims.contains(&claim_id.to_vec())
                    {
                        claims.push(claim_id.to_vec());
                    }
                }
                kernel.check_invariants();
            }
        }
    }
}
