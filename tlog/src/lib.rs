//! The ETL in the transparency-log ecosystem's formats (C2SP): signed notes, checkpoints,
//! witness cosignatures, tiles and entry bundles, proofs from tiles, and the witness protocol's
//! messages.
//!
//! Pure: no files, sockets or clocks; time is passed in and tiles are read through
//! [`TileReader`], which the caller implements over a directory, a bucket or HTTP.
//!
//! - Publishing (sequencer side): feed each durable ETL payload to [`builder::LogTiler::append`]
//!   (refuse payloads [`builder::check_entry`] rejects before logging them); store the completed
//!   full tiles and bundles, then the partial ones from [`builder::LogTiler::partial`], then the
//!   checkpoint from [`checkpoint::Checkpoint::sign_with`] last. Restart with
//!   [`builder::LogTiler::resume`] from what the store holds.
//! - Witnesses: [`witness::AddCheckpoint`] with a consistency proof ([`proof::consistency_proof`]
//!   from the tiles, or the in-memory tree), [`witness::AddCheckpointResponse::parse`], then
//!   [`cosignature::verify`] each line and [`note::SignedNote::push_signature`] the valid ones.
//!   [`witness::Witness`] is a conforming witness for tests.
//! - Verifying clients: [`checkpoint::CheckpointPolicy::verify`], then [`proof::inclusion_tiles`]
//!   (fetch those in parallel), [`proof::bundle_for`] + [`builder::parse_bundle`] for the entry,
//!   and [`proof::prove_inclusion`] / [`proof::prove_consistency`].
#![forbid(unsafe_code)]

pub mod builder;
pub mod checkpoint;
pub mod cosignature;
pub mod note;
pub mod proof;
pub mod tile;
pub mod witness;

#[cfg(test)]
mod cross_check;

pub use evidenceos_core::merkle::Hash;
pub use tile::{BundleId, TileId, TilePath, TileReader};

/// ASCII decimal without leading zeros ("0" alone for zero) that fits in 64 bits: the one
/// spelling of sizes, levels and widths in every format here.
pub(crate) fn parse_canonical_decimal(s: &str) -> Option<u64> {
    let canonical = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if !canonical {
        return None;
    }
    s.parse().ok()
}

/// A log of synthetic entries with its tiles, shared by the builder and proof tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::collections::BTreeMap;
    use std::sync::OnceLock;

    use evidenceos_core::merkle::{MerkleTree, leaf_hash};

    use crate::Hash;
    use crate::builder::{Tile, TileBuilder};
    use crate::tile::{FULL_WIDTH, TileId, TileReader};

    /// Leaves in the shared fixture: three tile levels, partial tiles at each.
    pub(crate) const FIXTURE_SIZE: u64 = 70_000;

    pub(crate) fn entry(i: u64) -> Vec<u8> {
        format!("entry {i}").into_bytes()
    }

    /// Every hash of each tile level of a tree, served at any width a smaller tree would have.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct RowStore {
        rows: BTreeMap<u8, Vec<Hash>>,
    }

    impl RowStore {
        /// From the full tiles a builder completed (in order) and its final partial tiles.
        pub(crate) fn from_tiles(full: &[Tile], partial: &[Tile]) -> Self {
            let mut rows: BTreeMap<u8, Vec<Hash>> = BTreeMap::new();
            for tile in full.iter().chain(partial) {
                let row = rows.entry(tile.id.level()).or_default();
                assert_eq!(row.len() as u64, tile.id.index() * u64::from(FULL_WIDTH), "tiles out of order");
                row.extend(tile.data.chunks_exact(32).map(|c| <Hash>::try_from(c).unwrap()));
            }
            Self { rows }
        }

        /// A reader that records what it was asked for.
        pub(crate) fn reader(&self) -> StoreReader<'_> {
            StoreReader { store: self, reads: Vec::new() }
        }
    }

    #[derive(Debug)]
    pub(crate) struct StoreReader<'a> {
        store: &'a RowStore,
        pub(crate) reads: Vec<TileId>,
    }

    impl TileReader for StoreReader<'_> {
        type Error = String;

        fn read_tile(&mut self, tile: TileId) -> Result<Vec<u8>, String> {
            self.reads.push(tile);
            let start = usize::try_from(tile.index() * u64::from(FULL_WIDTH)).unwrap();
            let row = self.store.rows.get(&tile.level()).ok_or_else(|| format!("no level {}", tile.level()))?;
            let hashes = row.get(start..start + usize::from(tile.width())).ok_or_else(|| tile.path())?;
            Ok(hashes.iter().flatten().copied().collect())
        }
    }

    pub(crate) struct Fixture {
        pub(crate) tree: MerkleTree,
        pub(crate) store: RowStore,
    }

    pub(crate) fn fixture() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(|| {
            let (mut tree, mut builder, mut full) = (MerkleTree::new(), TileBuilder::new(), Vec::new());
            for i in 0..FIXTURE_SIZE {
                let hash = leaf_hash(&entry(i));
                tree.push(hash);
                builder.push(hash, &mut full);
            }
            Fixture { tree, store: RowStore::from_tiles(&full, &builder.partial_tiles()) }
        })
    }
}
