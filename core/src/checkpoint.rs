//! Checkpoints (format v3): `state.json` says where the journal and the log stand and holds the
//! little state kept outside tables; `state.log` is append-only, and each checkpoint appends
//! the table rows changed since the previous one (the latest record of a key wins). A
//! checkpoint therefore costs what changed since the last one, never what history holds, and
//! no checkpoint rewrites the rows of settled claims.
//!
//! Formats v1 and v2 kept every table inside `state.json`. They still load: their rows are all
//! marked changed, so the first checkpoint after them writes the whole state to `state.log`.

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::canary::Canary;
use crate::claims::{Claim, Claims, RevocationRecord};
use crate::ids::{ClaimId, TopicId};
use crate::pool::{Pool, PoolKey};
use crate::state::{CreditAccount, IdempotencyRecord, State};
use crate::table::Table;

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
    /// Bytes of `state.log` this checkpoint covers; recovery cuts anything after them (rows of
    /// a checkpoint that a crash interrupted, which the journal still holds).
    pub state_log_len: u64,
    pub untabled: Untabled,
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
    pub state_log_len: u64,
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
    pub state_log_len: u64,
    pub state: State,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// `state.json` is unreadable or of an unknown format.
    Checkpoint(String),
    /// `state.log` lacks or damages rows the checkpoint covers.
    StateLog(String),
}

/// `state.log` as recovery reads it.
pub enum StateLogInput {
    /// The whole file (tests and in-memory disks).
    Bytes(Vec<u8>),
    /// A reader at the start of the file, and the file's length: recovery reads only the rows
    /// the checkpoint covers, one at a time, and never holds the file (gigabytes at 10^6 claims).
    Stream { len: u64, reader: Box<dyn std::io::Read + Send> },
}

impl StateLogInput {
    pub fn len(&self) -> u64 {
        match self {
            Self::Bytes(bytes) => bytes.len() as u64,
            Self::Stream { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn into_reader(self) -> Box<dyn std::io::Read + Send> {
        match self {
            Self::Bytes(bytes) => Box::new(std::io::Cursor::new(bytes)),
            Self::Stream { reader, .. } => reader,
        }
    }
}

impl Default for StateLogInput {
    fn default() -> Self {
        Self::Bytes(Vec::new())
    }
}

impl std::fmt::Debug for StateLogInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes(bytes) => write!(f, "StateLogInput::Bytes({} bytes)", bytes.len()),
            Self::Stream { len, .. } => write!(f, "StateLogInput::Stream({len} bytes)"),
        }
    }
}

/// Buffer for reading `state.log` rows: large reads, small memory.
const STATE_LOG_READ_BUFFER: usize = 1 << 20;

/// Reads `state.json` and the part of `state.log` it covers.
pub fn load(checkpoint: &[u8], state_log: StateLogInput) -> Result<Loaded, LoadError> {
    #[derive(Deserialize)]
    struct Format {
        format: String,
    }
    let format = serde_json::from_slice::<Format>(checkpoint).map_err(|e| LoadError::Checkpoint(e.to_string()))?;
    match format.format.as_str() {
        CHECKPOINT_FORMAT => load_v3(checkpoint, state_log),
        CHECKPOINT_FORMAT_V2 | CHECKPOINT_FORMAT_V1 => {
            let whole: WholeCheckpoint =
                serde_json::from_slice(checkpoint).map_err(|e| LoadError::Checkpoint(e.to_string()))?;
            Ok(Loaded {
                format: whole.format,
                journal_seq: whole.journal_seq,
                tree_size: whole.tree_size,
                root_hash_hex: whole.root_hash_hex,
                // Nothing of `state.log` is covered: the first checkpoint writes every row.
                state_log_len: 0,
                state: whole.state,
            })
        }
        other => Err(LoadError::Checkpoint(format!("unknown format {other:?}"))),
    }
}

fn load_v3(checkpoint: &[u8], state_log: StateLogInput) -> Result<Loaded, LoadError> {
    let head: Checkpoint = serde_json::from_slice(checkpoint).map_err(|e| LoadError::Checkpoint(e.to_string()))?;
    if state_log.len() < head.state_log_len {
        return Err(LoadError::StateLog(format!(
            "state.json covers {} bytes of state.log, which holds {}",
            head.state_log_len,
            state_log.len()
        )));
    }
    let mut state =
        State { claims: Claims { revocations: head.untabled.revocations, ..Claims::default() }, ..State::default() };
    // Rows past the covered length belong to an interrupted checkpoint: never read.
    let covered = std::io::Read::take(state_log.into_reader(), head.state_log_len);
    let mut reader = std::io::BufReader::with_capacity(STATE_LOG_READ_BUFFER, covered);
    let (mut payload, mut offset) = (Vec::new(), 0u64);
    // The covered bytes were synced before state.json named them: no torn tail is allowed.
    while crate::frame::read_record(&mut reader, &mut payload)
        .map_err(|e| LoadError::StateLog(format!("record at offset {offset}: {e}")))?
    {
        let change: RowChange = serde_json::from_slice(&payload)
            .map_err(|e| LoadError::StateLog(format!("record at offset {offset}: {e}")))?;
        change.restore_into(&mut state);
        offset += (payload.len() + crate::frame::FRAME_OVERHEAD) as u64;
    }
    debug_assert_eq!(offset, head.state_log_len, "take() ends reading at the covered length");
    Ok(Loaded {
        format: head.format,
        journal_seq: head.journal_seq,
        tree_size: head.tree_size,
        root_hash_hex: head.root_hash_hex,
        state_log_len: head.state_log_len,
        state,
    })
}

/// The tables of the state, named as `state.log` records (and v1/v2 `state.json`) name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TableName {
    Credits,
    Claims,
    TopicPools,
    HoldoutPools,
    Canaries,
    Idempotency,
    IdempotencyOrder,
}

impl TableName {
    const ALL: [TableName; 7] = [
        TableName::Credits,
        TableName::Claims,
        TableName::TopicPools,
        TableName::HoldoutPools,
        TableName::Canaries,
        TableName::Idempotency,
        TableName::IdempotencyOrder,
    ];
    const NAMES: [&'static str; 7] =
        ["credits", "claims", "topic_pools", "holdout_pools", "canaries", "idempotency", "idempotency_order"];

    fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|table| table.name() == name)
    }
}

/// One `state.log` record: `[table, key, row]`, the row `null` when the key was removed.
#[derive(Debug, Clone, PartialEq)]
enum RowChange {
    Credit(String, Option<CreditAccount>),
    Claim(ClaimId, Option<Box<Claim>>),
    TopicPool(TopicId, Option<Pool>),
    HoldoutPool(PoolKey, Option<Pool>),
    Canary(String, Option<Canary>),
    Idempotency(String, Option<IdempotencyRecord>),
    IdempotencyOrder(u64, Option<String>),
}

impl RowChange {
    fn restore_into(self, state: &mut State) {
        match self {
            Self::Credit(key, row) => state.credits.restore(key, row),
            Self::Claim(key, row) => state.claims.claims.restore(key, row.map(|claim| *claim)),
            Self::TopicPool(key, row) => state.claims.topic_pools.restore(key, row),
            Self::HoldoutPool(key, row) => state.claims.holdout_pools.restore(key, row),
            Self::Canary(key, row) => state.claims.canaries.restore(key, row),
            Self::Idempotency(key, row) => state.idempotency.restore(key, row),
            Self::IdempotencyOrder(key, row) => state.idempotency_order.restore(key, row),
        }
    }
}

impl<'de> Deserialize<'de> for RowChange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(RowChangeVisitor)
    }
}

struct RowChangeVisitor;

/// The key and row after the table name.
fn key_and_row<'de, A, K, V>(seq: &mut A) -> Result<(K, Option<V>), A::Error>
where
    A: SeqAccess<'de>,
    K: Deserialize<'de>,
    V: Deserialize<'de>,
{
    let key = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &"[table, key, row]"))?;
    let row = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(2, &"[table, key, row]"))?;
    if seq.next_element::<de::IgnoredAny>()?.is_some() {
        return Err(de::Error::invalid_length(4, &"[table, key, row]"));
    }
    Ok((key, row))
}

impl<'de> Visitor<'de> for RowChangeVisitor {
    type Value = RowChange;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a state.log record [table, key, row]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RowChange, A::Error> {
        let name: String = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let table = TableName::parse(&name).ok_or_else(|| de::Error::unknown_variant(&name, &TableName::NAMES))?;
        Ok(match table {
            TableName::Credits => key_and_row(&mut seq).map(|(k, v)| RowChange::Credit(k, v))?,
            TableName::Claims => key_and_row(&mut seq).map(|(k, v)| RowChange::Claim(k, v))?,
            TableName::TopicPools => key_and_row(&mut seq).map(|(k, v)| RowChange::TopicPool(k, v))?,
            TableName::HoldoutPools => key_and_row(&mut seq).map(|(k, v)| RowChange::HoldoutPool(k, v))?,
            TableName::Canaries => key_and_row(&mut seq).map(|(k, v)| RowChange::Canary(k, v))?,
            TableName::Idempotency => key_and_row(&mut seq).map(|(k, v)| RowChange::Idempotency(k, v))?,
            TableName::IdempotencyOrder => key_and_row(&mut seq).map(|(k, v)| RowChange::IdempotencyOrder(k, v))?,
        })
    }
}

/// Appends to `out` one framed record per row changed since the last call, table by table in
/// key order (the same bytes on every runtime). Returns how many records it appended.
pub fn take_changes(state: &mut State, out: &mut Vec<u8>) -> u64 {
    let mut records = 0;
    records += append_table(TableName::Credits, &mut state.credits, out);
    records += append_table(TableName::Claims, &mut state.claims.claims, out);
    records += append_table(TableName::TopicPools, &mut state.claims.topic_pools, out);
    records += append_table(TableName::HoldoutPools, &mut state.claims.holdout_pools, out);
    records += append_table(TableName::Canaries, &mut state.claims.canaries, out);
    records += append_table(TableName::Idempotency, &mut state.idempotency, out);
    records += append_table(TableName::IdempotencyOrder, &mut state.idempotency_order, out);
    records
}

fn append_table<K: Ord + Clone + Serialize, V: Serialize>(
    table: TableName,
    rows: &mut Table<K, V>,
    out: &mut Vec<u8>,
) -> u64 {
    let changed = rows.take_changed();
    for (key, row) in &changed {
        let payload = crate::canonical::to_vec(&(table.name(), key, row)).expect("state rows are plain JSON");
        crate::frame::encode_into(&payload, out);
    }
    changed.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint_bytes(state: &State, state_log_len: u64) -> Vec<u8> {
        crate::canonical::to_vec(&CheckpointRef {
            format: CHECKPOINT_FORMAT,
            kernel_version: "0.1.0",
            journal_seq: 3,
            tree_size: 5,
            root_hash_hex: "ab".repeat(32),
            state_log_len,
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
        let loaded = load(&json, StateLogInput::Bytes(log.clone())).unwrap();
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
        let loaded = load(&checkpoint_bytes(&state, log.len() as u64), StateLogInput::Bytes(log)).unwrap();
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
        assert_eq!(load(&json, StateLogInput::Bytes(longer)).unwrap().state, state);
        assert!(matches!(
            load(&json, StateLogInput::Bytes(log[..log.len() - 1].to_vec())),
            Err(LoadError::StateLog(_))
        ));
        let mut damaged = log.clone();
        damaged[6] ^= 1;
        assert!(matches!(load(&json, StateLogInput::Bytes(damaged)), Err(LoadError::StateLog(_))));
    }

    #[test]
    fn records_name_their_table_key_and_row() {
        let mut state = State::default();
        state.credits.insert("agent".into(), CreditAccount { balance: 4, limit: None });
        state.credits.insert("gone".into(), CreditAccount::default());
        state.credits.take_changed();
        state.credits.remove("gone");
        let mut log = Vec::new();
        take_changes(&mut state, &mut log);
        let scan = crate::frame::scan(&log, 0).unwrap();
        assert_eq!(scan.records[0].payload, br#"["credits","gone",null]"#);
        let unknown = br#"["ledgers","x",null]"#;
        assert!(serde_json::from_slice::<RowChange>(unknown).unwrap_err().to_string().contains("unknown variant"));
        assert!(serde_json::from_slice::<RowChange>(br#"["credits","x",null,1]"#).is_err());
    }

    #[test]
    fn whole_state_checkpoints_load_with_every_row_to_write() {
        let state = sample_state();
        let whole = serde_json::json!({
            "format": CHECKPOINT_FORMAT_V2, "kernel_version": "0.1.0", "journal_seq": 3, "tree_size": 5,
            "root_hash_hex": "ab".repeat(32), "state": serde_json::to_value(&state).unwrap(),
        });
        let mut loaded = load(&serde_json::to_vec(&whole).unwrap(), StateLogInput::Bytes(b"ignored".to_vec())).unwrap();
        assert_eq!((loaded.format.as_str(), loaded.state_log_len), (CHECKPOINT_FORMAT_V2, 0));
        assert_eq!(loaded.state, state);
        assert_eq!(take_changes(&mut loaded.state, &mut Vec::new()), 4);
        let unknown = br#"{"format":"evidenceos.checkpoint.v9"}"#;
        assert!(matches!(load(unknown, StateLogInput::default()), Err(LoadError::Checkpoint(_))));
    }
}
