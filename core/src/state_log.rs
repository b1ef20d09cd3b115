//! The state's rows on disk: `state.0.log` and `state.1.log`, append-only files of framed (SPEC §3)
//! canonical JSON records `[table, key, row]`, `row` being `null` for a removed key; the latest
//! record of a key wins. A checkpoint appends the rows changed since the previous one to the
//! file `state.json` names as current.
//!
//! Superseded rows are reclaimed by compaction, which never rewrites a file: when the current
//! file holds more than twice the live rows, checkpoints start appending to the other file
//! instead, each one both its changed rows and a slice of the unchanged ones (a cursor walks
//! every table in key order). Once the cursor has passed every table, the other file holds every
//! live row; `state.json` then names it alone and the old file is emptied. Until then recovery
//! reads the old file's rows, then the new file's on top.

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::canary::Canary;
use crate::claims::Claim;
use crate::ids::{ClaimId, TopicId};
use crate::io::FileInput;
use crate::pool::{Pool, PoolKey};
use crate::state::{CreditAccount, IdempotencyRecord, State};
use crate::table::Table;

/// Buffer for reading rows: large reads, small memory.
const READ_BUFFER: usize = 1 << 20;

/// Reads the first `covered` bytes of `input` (synced before `state.json` named them, so no torn
/// tail is allowed) into `state`, in order. Returns how many records they hold.
pub fn read_rows(input: FileInput, covered: u64, state: &mut State) -> Result<u64, String> {
    if input.len() < covered {
        return Err(format!("state.json covers {covered} bytes of it, and it holds {}", input.len()));
    }
    // Rows past the covered length belong to an interrupted checkpoint: never read.
    let limited = std::io::Read::take(input.into_reader(), covered);
    let mut reader = std::io::BufReader::with_capacity(READ_BUFFER, limited);
    let (mut payload, mut offset, mut records) = (Vec::new(), 0u64, 0u64);
    while crate::frame::read_record(&mut reader, &mut payload).map_err(|e| format!("record at offset {offset}: {e}"))? {
        let change: RowChange =
            serde_json::from_slice(&payload).map_err(|e| format!("record at offset {offset}: {e}"))?;
        change.restore_into(state);
        offset += (payload.len() + crate::frame::FRAME_OVERHEAD) as u64;
        records += 1;
    }
    debug_assert_eq!(offset, covered, "take() ends reading at the covered length");
    Ok(records)
}

/// The tables of the state, named as row-file records (and v1/v2 `state.json`) name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableName {
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

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|table| table.name() == name)
    }
}

/// One row-file record: `[table, key, row]`, the row `null` when the key was removed.
#[derive(Debug, Clone, PartialEq)]
pub enum RowChange {
    Credit(String, Option<CreditAccount>),
    Claim(ClaimId, Option<Box<Claim>>),
    TopicPool(TopicId, Option<Pool>),
    HoldoutPool(PoolKey, Option<Pool>),
    Canary(String, Option<Canary>),
    Idempotency(String, Option<IdempotencyRecord>),
    IdempotencyOrder(u64, Option<String>),
}

impl RowChange {
    pub fn restore_into(self, state: &mut State) {
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
        f.write_str("a row-file record [table, key, row]")
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

/// What a table's keys are: ordered, and written to and read from rows.
trait RowKey: Ord + Clone + Serialize + serde::de::DeserializeOwned {}

impl<K: Ord + Clone + Serialize + serde::de::DeserializeOwned> RowKey for K {}

/// Something done to every table of the state, in [`TableName::ALL`] order: the one list of which
/// field each table is.
trait TableVisitor {
    fn visit<K: RowKey, V: Serialize>(&mut self, table: TableName, rows: &mut Table<K, V>);
}

fn visit_tables(state: &mut State, visitor: &mut impl TableVisitor) {
    visitor.visit(TableName::Credits, &mut state.credits);
    visitor.visit(TableName::Claims, &mut state.claims.claims);
    visitor.visit(TableName::TopicPools, &mut state.claims.topic_pools);
    visitor.visit(TableName::HoldoutPools, &mut state.claims.holdout_pools);
    visitor.visit(TableName::Canaries, &mut state.claims.canaries);
    visitor.visit(TableName::Idempotency, &mut state.idempotency);
    visitor.visit(TableName::IdempotencyOrder, &mut state.idempotency_order);
}

fn encode_row<K: Serialize, V: Serialize>(table: TableName, key: &K, row: Option<&V>, out: &mut Vec<u8>) {
    let payload = crate::canonical::to_vec(&(table.name(), key, row)).expect("state rows are plain JSON");
    crate::frame::encode_into(&payload, out);
}

/// Appends to `out` one framed record per row changed since the last call, table by table in
/// key order (the same bytes on every runtime). Returns how many records it appended.
pub fn take_changes(state: &mut State, out: &mut Vec<u8>) -> u64 {
    struct Changes<'a> {
        out: &'a mut Vec<u8>,
        records: u64,
    }
    impl TableVisitor for Changes<'_> {
        fn visit<K: RowKey, V: Serialize>(&mut self, table: TableName, rows: &mut Table<K, V>) {
            for (key, row) in rows.take_changed() {
                encode_row(table, &key, row, self.out);
                self.records += 1;
            }
        }
    }
    let mut changes = Changes { out, records: 0 };
    visit_tables(state, &mut changes);
    changes.records
}

/// Live rows in every table (what a compacted row file holds).
pub fn live_rows(state: &mut State) -> u64 {
    struct Count(u64);
    impl TableVisitor for Count {
        fn visit<K: RowKey, V: Serialize>(&mut self, _: TableName, rows: &mut Table<K, V>) {
            self.0 += rows.len() as u64;
        }
    }
    let mut count = Count(0);
    visit_tables(state, &mut count);
    count.0
}

/// How far compaction has re-written the unchanged rows: the table it is in (an index into
/// [`TableName::ALL`]) and the last key it wrote there, as canonical JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    table: usize,
    after: Option<Vec<u8>>,
}

impl Cursor {
    /// Every table has been walked.
    pub fn is_done(&self) -> bool {
        self.table == TableName::ALL.len()
    }
}

/// Appends live rows after `cursor` to `out`, moving the cursor, until they take at least
/// `budget` bytes or every table has been walked. Returns how many it appended.
pub fn copy_rows(state: &mut State, cursor: &mut Cursor, budget: u64, out: &mut Vec<u8>) -> u64 {
    struct Copy<'a> {
        cursor: &'a mut Cursor,
        /// `out.len()` at which the budget is spent.
        stop_at: usize,
        records: u64,
        out: &'a mut Vec<u8>,
        index: usize,
    }
    impl TableVisitor for Copy<'_> {
        fn visit<K: RowKey, V: Serialize>(&mut self, table: TableName, rows: &mut Table<K, V>) {
            let index = self.index;
            self.index += 1;
            if index != self.cursor.table || self.out.len() >= self.stop_at {
                return;
            }
            let after: Option<K> =
                self.cursor.after.as_ref().map(|key| serde_json::from_slice(key).expect("written by this cursor"));
            let mut last = None;
            for (key, row) in rows.rows_after(after.as_ref()) {
                if self.out.len() >= self.stop_at {
                    break;
                }
                encode_row(table, key, Some(row), self.out);
                self.records += 1;
                last = Some(key);
            }
            match last {
                Some(key) if self.out.len() >= self.stop_at => {
                    self.cursor.after = Some(crate::canonical::to_vec(key).expect("keys are plain JSON"));
                }
                // The table is exhausted: the next one starts from its first key.
                _ => *self.cursor = Cursor { table: index + 1, after: None },
            }
        }
    }
    let stop_at = out.len().saturating_add(usize::try_from(budget).unwrap_or(usize::MAX));
    let mut copy = Copy { cursor, stop_at, records: 0, out, index: 0 };
    // Tables are visited in cursor order, so one pass either spends the budget or walks to the end.
    visit_tables(state, &mut copy);
    debug_assert!(copy.cursor.is_done() || copy.out.len() >= stop_at);
    copy.records
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with_rows() -> State {
        let mut state = State::default();
        for name in ["a", "b", "c"] {
            state.credits.insert(name.into(), CreditAccount { balance: 1, limit: None });
        }
        state.claims.canaries.insert("x/demo".into(), Canary::default());
        state.idempotency_order.insert(4, "slot".into());
        state
    }

    fn keys_of(bytes: &[u8]) -> Vec<String> {
        let scan = crate::frame::scan(bytes, 0).unwrap();
        let rows = scan.records.iter().map(|r| serde_json::from_slice::<serde_json::Value>(r.payload).unwrap());
        rows.map(|row| format!("{}:{}", row[0].as_str().unwrap(), row[1])).collect()
    }

    #[test]
    fn copying_walks_every_live_row_once_in_table_and_key_order_within_its_budget() {
        let mut state = state_with_rows();
        let mut cursor = Cursor::default();
        let mut out = Vec::new();
        let mut slices = Vec::new();
        while !cursor.is_done() {
            let before = out.len();
            // A budget of one byte is spent by the first row: one row per call.
            slices.push(copy_rows(&mut state, &mut cursor, 1, &mut out));
            assert!(out.len() > before || cursor.is_done(), "every call makes progress");
        }
        assert_eq!(slices, [1, 1, 1, 1, 1, 0], "the last call finds the walk at its end");
        assert_eq!(
            keys_of(&out),
            [r#"credits:"a""#, r#"credits:"b""#, r#"credits:"c""#, r#"canaries:"x/demo""#, "idempotency_order:4"]
        );
        assert_eq!(live_rows(&mut state), 5);
        assert_eq!(copy_rows(&mut state, &mut cursor, 1, &mut out), 0, "a finished walk copies nothing");
        let mut whole = Vec::new();
        assert_eq!(copy_rows(&mut state, &mut Cursor::default(), u64::MAX, &mut whole), 5);
        assert_eq!(whole, out, "the same rows in one call");
    }

    #[test]
    fn a_row_removed_behind_or_ahead_of_the_cursor_is_neither_skipped_nor_resurrected() {
        let mut state = state_with_rows();
        let mut cursor = Cursor::default();
        let mut out = Vec::new();
        copy_rows(&mut state, &mut cursor, 1, &mut out);
        // The cursor sits after "a": removing it must not shift the walk past "b".
        state.credits.remove("a");
        state.credits.remove("c");
        copy_rows(&mut state, &mut cursor, u64::MAX, &mut out);
        assert_eq!(keys_of(&out), [r#"credits:"a""#, r#"credits:"b""#, r#"canaries:"x/demo""#, "idempotency_order:4"]);
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
}
