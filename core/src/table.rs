//! A keyed table of the checkpointed state that remembers which rows changed since the last
//! checkpoint took them, so a checkpoint writes only those rows (to a row file) and never the
//! history that did not change.
//!
//! Every way to change a row goes through [`Table`]'s methods, which record the key; a row read
//! mutably but left equal is merely written again, which is harmless.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone)]
pub struct Table<K: Ord, V> {
    rows: BTreeMap<K, V>,
    /// Keys inserted, changed or removed since [`Table::take_changed`] last ran.
    changed: BTreeSet<K>,
}

impl<K: Ord, V> Default for Table<K, V> {
    fn default() -> Self {
        Self { rows: BTreeMap::new(), changed: BTreeSet::new() }
    }
}

/// Equal rows make equal tables, whatever is pending for the next checkpoint.
impl<K: Ord, V: PartialEq> PartialEq for Table<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.rows == other.rows
    }
}

impl<K: Ord + Clone, V> Table<K, V> {
    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.rows.get(key)
    }

    pub fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.rows.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.rows.iter()
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.rows.values()
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.rows.keys()
    }

    /// Rows with keys after `after` (all rows when `None`), in key order.
    pub fn rows_after(&self, after: Option<&K>) -> impl Iterator<Item = (&K, &V)> {
        use std::ops::Bound::{Excluded, Unbounded};
        let start = after.map_or(Unbounded, Excluded);
        self.rows.range((start, Unbounded))
    }

    pub fn first_key(&self) -> Option<&K> {
        self.rows.keys().next()
    }

    pub fn last_key(&self) -> Option<&K> {
        self.rows.keys().next_back()
    }

    /// The row, marked changed: the caller may modify it.
    pub fn get_mut<Q: Ord + ?Sized + ToOwned<Owned = K>>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        let row = self.rows.get_mut(key)?;
        self.changed.insert(key.to_owned());
        Some(row)
    }

    pub fn insert(&mut self, key: K, row: V) -> Option<V> {
        self.changed.insert(key.clone());
        self.rows.insert(key, row)
    }

    pub fn remove<Q: Ord + ?Sized + ToOwned<Owned = K>>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let removed = self.rows.remove(key)?;
        self.changed.insert(key.to_owned());
        Some(removed)
    }

    /// The row under `key`, inserted from `make` if absent, marked changed.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        self.changed.insert(key.clone());
        self.rows.entry(key).or_insert_with(make)
    }

    /// Rows changed since the last call, each with its current row (`None`: removed), in key
    /// order. Clears the record of changes: the caller writes them to a checkpoint.
    pub fn take_changed(&mut self) -> Vec<(K, Option<&V>)> {
        let changed = std::mem::take(&mut self.changed);
        changed
            .into_iter()
            .map(|key| {
                let row = self.rows.get(&key);
                (key, row)
            })
            .collect()
    }

    /// How many rows a checkpoint taken now would write.
    pub fn changed_len(&self) -> usize {
        self.changed.len()
    }

    /// Marks every row changed: the next checkpoint writes the whole table (a migration from a
    /// format that kept the table elsewhere).
    pub fn mark_all_changed(&mut self) {
        self.changed = self.rows.keys().cloned().collect();
    }

    /// Every row in key order, mutably and *not* marked changed: only for fields a checkpoint
    /// never writes (recovery attaching what it reads from `etl.log`).
    pub fn iter_mut_unrecorded(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.rows.iter_mut()
    }

    /// Sets a row as a checkpoint recorded it, without marking it changed (recovery).
    pub fn restore(&mut self, key: K, row: Option<V>) {
        match row {
            Some(row) => drop(self.rows.insert(key, row)),
            None => drop(self.rows.remove(&key)),
        }
    }
}

/// Like a map's index: panics when the key is absent.
impl<K: Ord + Borrow<Q>, Q: Ord + ?Sized, V> std::ops::Index<&Q> for Table<K, V> {
    type Output = V;

    fn index(&self, key: &Q) -> &V {
        &self.rows[key]
    }
}

impl<'a, K: Ord, V> IntoIterator for &'a Table<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::collections::btree_map::Iter<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.rows.iter()
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for Table<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(rows: I) -> Self {
        Self { rows: rows.into_iter().collect(), changed: BTreeSet::new() }
    }
}

/// Serialized as the map of its rows: the shape checkpoint formats v1 and v2 kept every table in.
impl<K: Ord + Serialize, V: Serialize> Serialize for Table<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.rows.serialize(serializer)
    }
}

/// Read from a whole-state checkpoint (formats v1 and v2): every row is new to the row files, so
/// all are marked changed and the next checkpoint writes them.
impl<'de, K: Ord + Clone + Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for Table<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let rows = BTreeMap::<K, V>::deserialize(deserializer)?;
        let changed = rows.keys().cloned().collect();
        Ok(Self { rows, changed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_is_taken_once_with_its_latest_row() {
        let mut table: Table<u8, &str> = [(1, "a"), (2, "b")].into_iter().collect();
        assert_eq!(table.changed_len(), 0, "collected rows are not changes");
        table.insert(3, "c");
        *table.get_mut(&1).unwrap() = "A";
        table.remove(&2);
        *table.get_or_insert_with(4, || "d") = "D";
        assert!(table.get_mut(&9).is_none());
        assert!(table.remove(&9).is_none(), "removing nothing is no change");
        let taken: Vec<(u8, Option<&str>)> = table.take_changed().into_iter().map(|(k, v)| (k, v.copied())).collect();
        assert_eq!(taken, vec![(1, Some("A")), (2, None), (3, Some("c")), (4, Some("D"))]);
        assert!(table.take_changed().is_empty(), "taken changes are cleared");
    }

    #[test]
    fn restored_rows_are_not_changes_and_loaded_maps_are() {
        let mut table: Table<u8, u8> = Table::default();
        table.restore(1, Some(10));
        table.restore(2, Some(20));
        table.restore(1, None);
        assert_eq!(table.iter().collect::<Vec<_>>(), vec![(&2, &20)]);
        assert_eq!(table.changed_len(), 0);
        let loaded: Table<u8, u8> = serde_json::from_str(r#"{"5":50,"6":60}"#).unwrap();
        assert_eq!(loaded.changed_len(), 2, "a whole-state checkpoint's rows go to a row file next");
        assert_eq!(serde_json::to_string(&loaded).unwrap(), r#"{"5":50,"6":60}"#);
    }

    #[test]
    fn equality_ignores_pending_changes() {
        let a: Table<u8, u8> = [(1, 1)].into_iter().collect();
        let mut b = Table::default();
        b.insert(1, 1);
        assert_eq!(a, b);
    }
}
