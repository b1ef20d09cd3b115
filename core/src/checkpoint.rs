//! Checkpoints (format v3): `state.json` says where the journal and the log stand, which row file
//! (`state.<n>.log`, see [`crate::state_log`]) holds the state's rows and how much of it, and
//! holds the little state kept outside tables. Each checkpoint appends the rows changed since
//! the previous one: it costs what changed, never what history holds, and no checkpoint
//! rewrites the rows of settled claims.
//!
//! Formats v1 and v2 kept every table inside `state.json`. They still load: their rows are all
//! marked changed, so the first checkpoint after them writes the whole state to `state.0.log`.

use serde::{Deserialize, Serialize};

use crate::claims::{Claims, RevocationRecord};
use crate::io::FileInput;
use crate::state::State;

pub const CHECKPOINT_FORMAT: &str = "evidenceos.checkpoint.v3";
/// Whole state in `state.json`, settled claims without their capsule copies and code.
pub const CHECKPOINT_FORMAT_V2: &str = "evidenceos.checkpoint.v2";
/// Whole state in `state.json`, settled claims with a copy of each capsule and their code.
pub const CHECKPOINT_FORMAT_V1: &str = "evidenceos.checkpoint.v1";

/// Where a checkpoint stands, whatever its format: what `evidenceosctl audit` reports.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CheckpointHead {
    pub format: String,
    pub journal_seq: u64,
    pub tree_size: u64,
    /// Root of the first `tree_size` leaves, so recovery detects a log that changed under it.
    pub root_hash_hex: String,
}

/// `state.json` of format v3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub format: String,
    pub kernel_version: String,
    pub journal_seq: u64,
    pub tree_size: u64,
    pub root_hash_hex: String,
    /// The row file holding the state, and how many of its bytes this checkpoint covers;
    /// recovery cuts anything after them (rows of a checkpoint a crash interrupted, which the
    /// journal still holds).
    pub rows: RowsAt,
    /// While compaction runs: the next row file, read on top of `rows`.
    pub compacting: Option<RowsAt>,
    pub untabled: Untabled,
}

/// A row file by generation (`state.<generation mod 2>.log`), and the bytes of it covered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowsAt {
    pub generation: u64,
    pub len: u64,
}

impl RowsAt {
    pub fn file(self) -> crate::io::FileId {
        crate::io::FileId::StateLog(crate::io::RowFile::of_generation(self.generation))
    }
}

/// The state kept in `state.json` itself: revocations, which are rare.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Untabled {
    pub revocations: Vec<RevocationRecord>,
}

/// The same JSON as [`Checkpoint`], borrowing what it writes.
#[derive(Debug, Serialize)]
pub struct CheckpointRef<'a> {
    pub format: &'a str,
    pub kernel_version: &'a str,
    pub journal_seq: u64,
    pub tree_size: u64,
    pub root_hash_hex: String,
    pub rows: RowsAt,
    pub compacting: Option<RowsAt>,
    pub untabled: UntabledRef<'a>,
}

#[derive(Debug, Serialize)]
pub struct UntabledRef<'a> {
    pub revocations: &'a [RevocationRecord],
}

impl<'a> UntabledRef<'a> {
    pub fn of(state: &'a State) -> Self {
        Self { revocations: &state.claims.revocations }
    }
}

/// `state.json` of formats v1 and v2: the whole state inside.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct WholeCheckpoint {
    format: String,
    #[allow(dead_code)]
    kernel_version: String,
    journal_seq: u64,
    tree_size: u64,
    root_hash_hex: String,
    state: State,
}

/// A checkpoint read back: the state it recorded, before recovery attaches capsules and
/// replays the journal.
#[derive(Debug)]
pub struct Loaded {
    pub format: String,
    pub journal_seq: u64,
    pub tree_size: u64,
    pub root_hash_hex: String,
    pub rows: RowsAt,
    pub compacting: Option<RowsAt>,
    /// Records read from `rows` and from `compacting` (superseded ones included).
    pub row_records: [u64; 2],
    pub state: State,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// `state.json` is unreadable or of an unknown format.
    Checkpoint(String),
    /// A row file lacks or damages rows the checkpoint covers.
    Rows { file: crate::io::FileId, reason: String },
}

/// Reads `state.json` and the parts of the row files it covers (`row_files`, by [`RowFile`]
/// index).
///
/// [`RowFile`]: crate::io::RowFile
pub fn load(checkpoint: &[u8], row_files: [FileInput; 2]) -> Result<Loaded, LoadError> {
    #[derive(Deserialize)]
    struct Format {
        format: String,
    }
    let format = serde_json::from_slice::<Format>(checkpoint).map_err(|e| LoadError::Checkpoint(e.to_string()))?;
    match format.format.as_str() {
        CHECKPOINT_FORMAT => load_v3(checkpoint, row_files),
        CHECKPOINT_FORMAT_V2 | CHECKPOINT_FORMAT_V1 => {
            let whole: WholeCheckpoint =
                serde_json::from_slice(checkpoint).map_err(|e| LoadError::Checkpoint(e.to_string()))?;
            Ok(Loaded {
                format: whole.format,
                journal_seq: whole.journal_seq,
                tree_size: whole.tree_size,
                root_hash_hex: whole.root_hash_hex,
                // No row file is covered: the first checkpoint writes every row to generation 0.
                rows: RowsAt::default(),
                compacting: None,
                row_records: [0, 0],
                state: whole.state,
            })
        }
        other => Err(LoadError::Checkpoint(format!("unknown format {other:?}"))),
    }
}

fn load_v3(checkpoint: &[u8], row_files: [FileInput; 2]) -> Result<Loaded, LoadError> {
    let head: Checkpoint = serde_json::from_slice(checkpoint).map_err(|e| LoadError::Checkpoint(e.to_string()))?;
    if head.compacting.is_some_and(|next| next.generation != head.rows.generation + 1) {
        return Err(LoadError::Checkpoint("the compacting row file is not the next generation".into()));
    }
    let mut state =
        State { claims: Claims { revocations: head.untabled.revocations, ..Claims::default() }, ..State::default() };
    let mut files = row_files.map(Some);
    let mut row_records = [0, 0];
    // The current file first, then the one being compacted into: later rows win.
    for (n, at) in std::iter::once(head.rows).chain(head.compacting).enumerate() {
        let slot = crate::io::RowFile::of_generation(at.generation);
        let input = files[slot.index()].take().expect("two generations in a row use both files");
        row_records[n] = crate::state_log::read_rows(input, at.len, &mut state)
            .map_err(|reason| LoadError::Rows { file: at.file(), reason })?;
    }
    Ok(Loaded {
        format: head.format,
        journal_seq: head.journal_seq,
        tree_size: head.tree_size,
        root_hash_hex: head.root_hash_hex,
        rows: head.rows,
        compacting: head.compacting,
        row_records,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canary::Canary;
    use crate::state::{CreditAccount, IdempotencyRecord};
    use crate::state_log::take_changes;

    /// Generation 0 as the only row file.
    fn rows(bytes: Vec<u8>) -> [FileInput; 2] {
        [FileInput::Bytes(bytes), FileInput::default()]
    }

    fn checkpoint_bytes(state: &State, state_log_len: u64) -> Vec<u8> {
        crate::canonical::to_vec(&CheckpointRef {
            format: CHECKPOINT_FORMAT,
            kernel_version: "0.1.0",
            journal_seq: 3,
            tree_size: 5,
            root_hash_hex: "ab".repeat(32),
            rows: RowsAt { generation: 0, len: state_log_len },
            compacting: None,
            untabled: UntabledRef::of(state),
        })
        .unwrap()
    }

    fn sample_state() -> State {
        let mut state = State::default();
        state.credits.insert("agent".into(), CreditAccount { balance: 4, limit: Some(7) });
        state.claims.canaries.insert("name/demo".into(), Canary::default());
        state.idempotency_order.insert(0, "agent\nm\n1".into());
        state.idempotency.insert(
            "agent\nm\n1".into(),
            IdempotencyRecord {
                body_hash_hex: "00".repeat(32),
                reply: crate::state::RecordedReply::Revoked {
                    state: crate::claim::ClaimState::Revoked,
                    timestamp_unix: 9,
                },
            },
        );
        state
    }

    #[test]
    fn a_checkpoint_and_its_rows_load_back_to_the_same_state() {
        let mut state = sample_state();
        let mut log = Vec::new();
        assert_eq!(take_changes(&mut state, &mut log), 4);
        let json = checkpoint_bytes(&state, log.len() as u64);
        let owned: Checkpoint = serde_json::from_slice(&json).unwrap();
        assert_eq!(crate::canonical::to_vec(&owned).unwrap(), json, "borrowed and owned forms agree");
        let loaded = load(&json, rows(log.clone())).unwrap();
        assert_eq!(loaded.state, state);
        assert_eq!(loaded.state.claims.canaries.changed_len(), 0, "loaded rows are not changes");
    }

    #[test]
    fn later_records_win_and_removals_remove() {
        let mut state = sample_state();
        let mut log = Vec::new();
        take_changes(&mut state, &mut log);
        state.credits.get_mut("agent").unwrap().balance = 1;
        state.claims.canaries.remove("name/demo");
        assert_eq!(take_changes(&mut state, &mut log), 2, "only what changed is written again");
        assert_eq!(take_changes(&mut state, &mut Vec::new()), 0);
        let loaded = load(&checkpoint_bytes(&state, log.len() as u64), rows(log)).unwrap();
        assert_eq!(loaded.state.credits.get("agent").unwrap().balance, 1);
        assert!(loaded.state.claims.canaries.is_empty());
    }

    #[test]
    fn rows_past_the_checkpoint_are_ignored_and_missing_or_damaged_ones_refused() {
        let mut state = sample_state();
        let mut log = Vec::new();
        take_changes(&mut state, &mut log);
        let covered = log.len() as u64;
        let json = checkpoint_bytes(&state, covered);
        let mut longer = log.clone();
        longer.extend_from_slice(b"rows of an interrupted checkpoint");
        assert_eq!(load(&json, rows(longer)).unwrap().state, state);
        assert!(matches!(load(&json, rows(log[..log.len() - 1].to_vec())), Err(LoadError::Rows { .. })));
        let mut damaged = log.clone();
        damaged[6] ^= 1;
        assert!(matches!(load(&json, rows(damaged)), Err(LoadError::Rows { .. })));
    }

    #[test]
    fn whole_state_checkpoints_load_with_every_row_to_write() {
        let state = sample_state();
        let whole = serde_json::json!({
            "format": CHECKPOINT_FORMAT_V2, "kernel_version": "0.1.0", "journal_seq": 3, "tree_size": 5,
            "root_hash_hex": "ab".repeat(32), "state": serde_json::to_value(&state).unwrap(),
        });
        let mut loaded = load(&serde_json::to_vec(&whole).unwrap(), rows(b"ignored".to_vec())).unwrap();
        assert_eq!((loaded.format.as_str(), loaded.rows), (CHECKPOINT_FORMAT_V2, RowsAt::default()));
        assert_eq!(loaded.state, state);
        assert_eq!(take_changes(&mut loaded.state, &mut Vec::new()), 4);
        let unknown = br#"{"format":"evidenceos.checkpoint.v9"}"#;
        assert!(matches!(load(unknown, rows(Vec::new())), Err(LoadError::Checkpoint(_))));
    }
}
