//! Incremental tile and entry-bundle construction as the log grows: each appended leaf costs
//! O(1) amortized hashing (one 256-hash subtree root per completed tile), never a rescan. State
//! is the right edge only: fewer than 256 hashes per level and fewer than 256 pending entries.

use evidenceos_core::merkle::{empty_root, leaf_hash, node_hash};

use crate::Hash;
use crate::tile::{BundleId, FULL_WIDTH, TILE_HEIGHT, TileId, TileReader, hashes_of};

/// Largest entry an entry bundle can hold (big-endian u16 length prefix).
pub const MAX_ENTRY_BYTES: usize = u16::MAX as usize;
// The kernel's leaf limit is this one: nothing is logged that could not be published.
const _: () = assert!(MAX_ENTRY_BYTES == evidenceos_core::etl::MAX_LEAF_BYTES);

/// A tile's contents, ready to store under [`TileId::path`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tile {
    pub id: TileId,
    pub data: Vec<u8>,
}

/// An entry bundle's contents, ready to store under [`BundleId::path`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub id: BundleId,
    pub data: Vec<u8>,
}

/// Why entries, bundles or a resumed state were rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError<E> {
    /// An entry over [`MAX_ENTRY_BYTES`] cannot be published; refuse it before it is logged.
    EntryTooLarge { len: usize },
    /// A bundle that does not hold exactly `width` length-prefixed entries.
    MalformedBundle,
    /// A tile whose length is not its width × 32.
    WrongTileLength { tile: TileId, len: usize },
    /// The state rebuilt from stored partial tiles does not have the expected root.
    RootMismatch,
    /// A stored partial bundle whose entries do not hash to the stored level-0 tile.
    BundleMismatch,
    /// The tile reader failed.
    Read(E),
}

impl<E: std::fmt::Display> std::fmt::Display for BuildError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::EntryTooLarge { len } => {
                write!(f, "entry of {len} bytes exceeds the {MAX_ENTRY_BYTES}-byte entry bundle limit")
            }
            BuildError::MalformedBundle => f.write_str("malformed entry bundle"),
            BuildError::WrongTileLength { tile, len } => {
                write!(f, "tile {} has {len} bytes, want {}", tile.path(), tile.byte_len())
            }
            BuildError::RootMismatch => f.write_str("stored tiles do not match the expected root"),
            BuildError::BundleMismatch => f.write_str("stored entry bundle does not match the stored tiles"),
            BuildError::Read(e) => write!(f, "reading a tile: {e}"),
        }
    }
}

impl<E: std::fmt::Debug + std::fmt::Display> std::error::Error for BuildError<E> {}

/// Refuses an entry that no entry bundle can hold. The daemon calls this before logging.
pub fn check_entry<E>(entry: &[u8]) -> Result<(), BuildError<E>> {
    if entry.len() > MAX_ENTRY_BYTES {
        return Err(BuildError::EntryTooLarge { len: entry.len() });
    }
    Ok(())
}

/// Splits a bundle into exactly `width` entries.
pub fn parse_bundle<E>(data: &[u8], width: u16) -> Result<Vec<&[u8]>, BuildError<E>> {
    let mut entries = Vec::with_capacity(usize::from(width));
    let mut rest = data;
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_be_bytes(*len));
        let (entry, tail) = tail.split_at_checked(len).ok_or(BuildError::MalformedBundle)?;
        entries.push(entry);
        rest = tail;
    }
    if !rest.is_empty() || entries.len() != usize::from(width) {
        return Err(BuildError::MalformedBundle);
    }
    Ok(entries)
}

/// RFC 6962 tree hash over `hashes` taken as already-hashed nodes (MTH of a run of subtrees).
pub(crate) fn subtree_root(hashes: &[Hash]) -> Hash {
    match hashes {
        [] => empty_root(),
        [one] => *one,
        _ => {
            let k = 1usize << (usize::BITS - 1 - (hashes.len() - 1).leading_zeros());
            node_hash(&subtree_root(&hashes[..k]), &subtree_root(&hashes[k..]))
        }
    }
}

fn tile_data(hashes: &[Hash]) -> Vec<u8> {
    hashes.iter().flatten().copied().collect()
}

/// Hash tiles of a growing tree, built from its leaf hashes appended in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TileBuilder {
    size: u64,
    // rows[l] = the hashes of the level-l tile being filled; rows[l].len() == (size >> 8l) % 256.
    rows: Vec<Vec<Hash>>,
}

impl TileBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one RFC 6962 leaf hash; every tile that became full is pushed to `completed`
    /// (level 0 first, then the levels above it completes).
    pub fn push(&mut self, leaf_hash: Hash, completed: &mut Vec<Tile>) {
        self.size = self.size.checked_add(1).expect("tile builder: a log cannot exceed 2^64 - 1 leaves");
        let mut hash = leaf_hash;
        let mut level = 0usize;
        loop {
            if self.rows.len() == level {
                self.rows.push(Vec::with_capacity(usize::from(FULL_WIDTH)));
            }
            self.rows[level].push(hash);
            if self.rows[level].len() < usize::from(FULL_WIDTH) {
                break;
            }
            // A full tile at level l exists only once 256^(l+1) <= size < 2^64, so l + 1 <= 7.
            let hashes = std::mem::replace(&mut self.rows[level], Vec::with_capacity(usize::from(FULL_WIDTH)));
            let index = (self.size >> (TILE_HEIGHT as usize * (level + 1))) - 1;
            let level_u8 = u8::try_from(level).expect("tile builder: at most 8 levels");
            let id = TileId::new(level_u8, index, FULL_WIDTH).expect("tile builder: full tile coordinates are valid");
            hash = subtree_root(&hashes);
            completed.push(Tile { id, data: tile_data(&hashes) });
            level += 1;
        }
        self.debug_check_invariants();
    }

    /// The partial tiles of the current size (the right edge, published with a checkpoint).
    pub fn partial_tiles(&self) -> Vec<Tile> {
        let mut tiles = Vec::new();
        for (level, row) in self.rows.iter().enumerate().filter(|(_, row)| !row.is_empty()) {
            // Level 7 is the top of a u64 tree: its index is 0 (a shift by 64 would overflow).
            let index = self.size.checked_shr(TILE_HEIGHT * (level as u32 + 1)).unwrap_or(0);
            let width = u16::try_from(row.len()).expect("tile builder: a row holds fewer than 256 hashes");
            let level = u8::try_from(level).expect("tile builder: at most 8 levels");
            let id = TileId::new(level, index, width).expect("tile builder: partial tile coordinates are valid");
            tiles.push(Tile { id, data: tile_data(row) });
        }
        tiles
    }

    /// Root of the tree of the current size: the right edge's perfect subtrees, largest (leftmost)
    /// first, folded from the right.
    pub fn root(&self) -> Hash {
        let mut subtrees: Vec<Hash> = Vec::new();
        for row in self.rows.iter().rev() {
            let mut start = 0;
            for bit in (0..TILE_HEIGHT).rev() {
                let len = 1usize << bit;
                if row.len() & len != 0 {
                    subtrees.push(subtree_root(&row[start..start + len]));
                    start += len;
                }
            }
        }
        let Some((last, rest)) = subtrees.split_last() else {
            return empty_root();
        };
        rest.iter().rev().fold(*last, |acc, left| node_hash(left, &acc))
    }

    /// Rebuilds the state of a tree of `size` leaves from its stored partial tiles, and checks
    /// it against the tree's `root` (a restart resumes from what the store holds).
    pub fn resume<R: TileReader>(size: u64, root: &Hash, reader: &mut R) -> Result<Self, BuildError<R::Error>> {
        let mut rows = Vec::new();
        let mut level = 0u32;
        while level < 8 && size >> (TILE_HEIGHT * level) > 0 {
            let in_level = size >> (TILE_HEIGHT * level);
            let width = (in_level % u64::from(FULL_WIDTH)) as u16;
            let mut row = Vec::with_capacity(usize::from(FULL_WIDTH));
            if width > 0 {
                let level_u8 = level as u8;
                let id = TileId::new(level_u8, in_level >> TILE_HEIGHT, width).expect("tile builder: valid partial");
                let data = reader.read_tile(id).map_err(BuildError::Read)?;
                row = hashes_of(id, &data).map_err(|(tile, len)| BuildError::WrongTileLength { tile, len })?;
            }
            rows.push(row);
            level += 1;
        }
        let builder = Self { size, rows };
        if builder.root() != *root {
            return Err(BuildError::RootMismatch);
        }
        builder.debug_check_invariants();
        Ok(builder)
    }

    fn debug_check_invariants(&self) {
        if cfg!(debug_assertions) {
            for (level, row) in self.rows.iter().enumerate() {
                let want = (self.size >> (TILE_HEIGHT as usize * level)) % u64::from(FULL_WIDTH);
                debug_assert_eq!(row.len() as u64, want, "tile builder: level {level} row out of step");
            }
        }
    }
}

/// Entry bundles of a growing log, built from its entries appended in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleBuilder {
    size: u64,
    // The length-prefixed entries of the bundle being filled: (size % 256) of them.
    pending: Vec<u8>,
}

impl BundleBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends an entry; returns the bundle it completed, if any.
    pub fn push<E>(&mut self, entry: &[u8]) -> Result<Option<Bundle>, BuildError<E>> {
        check_entry(entry)?;
        let len = u16::try_from(entry.len()).expect("bundle builder: checked against MAX_ENTRY_BYTES");
        self.pending.extend_from_slice(&len.to_be_bytes());
        self.pending.extend_from_slice(entry);
        self.size = self.size.checked_add(1).expect("bundle builder: a log cannot exceed 2^64 - 1 leaves");
        if !self.size.is_multiple_of(u64::from(FULL_WIDTH)) {
            return Ok(None);
        }
        let id = BundleId::new((self.size >> TILE_HEIGHT) - 1, FULL_WIDTH).expect("bundle builder: full bundle");
        Ok(Some(Bundle { id, data: std::mem::take(&mut self.pending) }))
    }

    /// The partial bundle of the current size, if the size is not a multiple of 256.
    pub fn partial(&self) -> Option<Bundle> {
        let width = (self.size % u64::from(FULL_WIDTH)) as u16;
        let id = BundleId::new(self.size >> TILE_HEIGHT, width).ok()?;
        Some(Bundle { id, data: self.pending.clone() })
    }

    /// Rebuilds the state at `size` from the stored partial bundle of that size (`None` when the
    /// size is a multiple of 256). Its entries are checked later against the tiles by the caller.
    pub fn resume<E>(size: u64, partial: Option<&[u8]>) -> Result<Self, BuildError<E>> {
        let width = (size % u64::from(FULL_WIDTH)) as u16;
        let pending = match partial {
            Some(data) if width > 0 => {
                parse_bundle::<E>(data, width)?;
                data.to_vec()
            }
            None if width == 0 => Vec::new(),
            _ => return Err(BuildError::MalformedBundle),
        };
        Ok(Self { size, pending })
    }
}

/// Hash tiles and entry bundles together, so every leaf hash is the hash of its entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogTiler {
    tiles: TileBuilder,
    bundles: BundleBuilder,
}

/// Objects that became immutable after an append.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Completed {
    pub tiles: Vec<Tile>,
    pub bundles: Vec<Bundle>,
}

impl LogTiler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Resumes at `size` from what a store holds for that size: its partial tiles (checked
    /// against `root`) and its partial entry bundle (each entry checked against its leaf hash).
    pub fn resume<R: TileReader>(
        size: u64,
        root: &Hash,
        reader: &mut R,
        partial_bundle: Option<&[u8]>,
    ) -> Result<Self, BuildError<R::Error>> {
        let tiles = TileBuilder::resume(size, root, reader)?;
        let bundles = BundleBuilder::resume(size, partial_bundle)?;
        let width = (size % u64::from(FULL_WIDTH)) as u16;
        let entries = parse_bundle::<R::Error>(&bundles.pending, width)?;
        let leaves = tiles.rows.first().map_or(&[][..], Vec::as_slice);
        if entries.len() != leaves.len() || entries.iter().zip(leaves).any(|(e, leaf)| leaf_hash(e) != *leaf) {
            return Err(BuildError::BundleMismatch);
        }
        Ok(Self { tiles, bundles })
    }

    pub fn size(&self) -> u64 {
        self.tiles.size()
    }

    pub fn root(&self) -> Hash {
        self.tiles.root()
    }

    /// Appends one log entry; an oversized entry changes nothing.
    pub fn append<E>(&mut self, entry: &[u8], completed: &mut Completed) -> Result<(), BuildError<E>> {
        if let Some(bundle) = self.bundles.push(entry)? {
            completed.bundles.push(bundle);
        }
        self.tiles.push(leaf_hash(entry), &mut completed.tiles);
        Ok(())
    }

    /// The partial tiles and bundle of the current size.
    pub fn partial(&self) -> (Vec<Tile>, Option<Bundle>) {
        (self.tiles.partial_tiles(), self.bundles.partial())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FIXTURE_SIZE, RowStore, entry, fixture};
    use evidenceos_core::merkle::MerkleTree;
    use proptest::prelude::*;

    fn build(size: u64) -> (TileBuilder, Vec<Tile>) {
        let (mut builder, mut full) = (TileBuilder::new(), Vec::new());
        for i in 0..size {
            builder.push(leaf_hash(&entry(i)), &mut full);
        }
        (builder, full)
    }

    fn shape(tiles: &[Tile]) -> Vec<(u8, u64, u16)> {
        tiles.iter().map(|t| (t.id.level(), t.id.index(), t.id.width())).collect()
    }

    #[test]
    fn tiles_of_the_spec_example_size_70000() {
        let (builder, full) = build(70_000);
        let level0 = full.iter().filter(|t| t.id.level() == 0).count();
        assert_eq!(level0, 273);
        assert_eq!(shape(&full[full.len() - 1..]), [(0, 272, 256)]);
        assert_eq!(shape(&full.iter().filter(|t| t.id.level() == 1).cloned().collect::<Vec<_>>()), [(1, 0, 256)]);
        assert_eq!(full.len(), 274);
        assert_eq!(shape(&builder.partial_tiles()), [(0, 273, 112), (1, 1, 17), (2, 0, 1)]);
        let (builder, full) = build(256);
        assert_eq!(shape(&full), [(0, 0, 256)]);
        assert_eq!(shape(&builder.partial_tiles()), [(1, 0, 1)]);
    }

    #[test]
    fn tile_hashes_are_leaf_hashes_and_256_leaf_subtree_roots() {
        let (_, full) = build(65_536 + 3);
        let level1 = full.iter().find(|t| t.id.level() == 1).unwrap();
        for (i, tile) in full.iter().filter(|t| t.id.level() == 0).enumerate() {
            let mut chunk = MerkleTree::new();
            for j in 0..256 {
                let leaf = leaf_hash(&entry(i as u64 * 256 + j));
                assert_eq!(tile.data[j as usize * 32..][..32], leaf);
                chunk.push(leaf);
            }
            assert_eq!(level1.data[i * 32..][..32], chunk.root(), "level-1 hash {i}");
        }
        assert_eq!(shape(&full[full.len() - 2..]), [(0, 255, 256), (1, 0, 256)]);
    }

    #[test]
    fn resume_from_stored_partial_tiles_continues_identically() {
        let (mut builder, mut full) = build(65_800);
        let store = RowStore::from_tiles(&full, &builder.partial_tiles());
        let mut resumed = TileBuilder::resume(65_800, &builder.root(), &mut store.reader()).unwrap();
        assert_eq!(resumed, builder);
        let mut after = Vec::new();
        for i in 65_800..66_100 {
            builder.push(leaf_hash(&entry(i)), &mut full);
            resumed.push(leaf_hash(&entry(i)), &mut after);
        }
        assert_eq!(resumed, builder);
        assert_eq!(after.as_slice(), &full[full.len() - after.len()..]);
        assert_eq!(after.len(), 1);
        assert_eq!(TileBuilder::resume(65_800, &[0; 32], &mut store.reader()), Err(BuildError::RootMismatch));
    }

    #[test]
    fn partial_tiles_of_the_largest_tree_reach_level_7() {
        let size = u64::MAX;
        let rows = (0..8).map(|l| vec![[l as u8; 32]; ((size >> (8 * l)) % 256) as usize]).collect();
        let builder = TileBuilder { size, rows };
        let tiles = builder.partial_tiles();
        assert_eq!(tiles.len(), 8);
        assert_eq!(shape(&tiles[7..]), [(7, 0, 255)]);
        assert_eq!(shape(&tiles[..1]), [(0, size >> 8, 255)]);
    }

    #[test]
    fn resume_rejects_a_tile_of_the_wrong_length() {
        struct Short;
        impl TileReader for Short {
            type Error = ();
            fn read_tile(&mut self, _: TileId) -> Result<Vec<u8>, ()> {
                Ok(vec![0; 31])
            }
        }
        let tile = TileId::new(0, 0, 5).unwrap();
        assert_eq!(TileBuilder::resume(5, &[0; 32], &mut Short), Err(BuildError::WrongTileLength { tile, len: 31 }));
    }

    #[test]
    fn bundles_hold_length_prefixed_entries_and_refuse_oversized_ones() {
        let mut bundles = BundleBuilder::new();
        assert_eq!(
            bundles.push::<()>(&vec![0; MAX_ENTRY_BYTES + 1]),
            Err(BuildError::EntryTooLarge { len: MAX_ENTRY_BYTES + 1 })
        );
        assert_eq!(bundles.size(), 0);
        assert_eq!(bundles.push::<()>(&vec![1; MAX_ENTRY_BYTES]), Ok(None));
        assert_eq!(bundles.push::<()>(b""), Ok(None));
        let partial = bundles.partial().unwrap();
        assert_eq!(partial.id.path(), "tile/entries/000.p/2");
        assert_eq!(&partial.data[..2], &[0xff, 0xff]);
        let entries = parse_bundle::<()>(&partial.data, 2).unwrap();
        assert_eq!(entries, [&vec![1; MAX_ENTRY_BYTES][..], b""]);
        let mut completed = None;
        for i in 2..256 {
            completed = bundles.push::<()>(&entry(i)).unwrap();
        }
        let full = completed.unwrap();
        assert_eq!(full.id.path(), "tile/entries/000");
        assert_eq!(parse_bundle::<()>(&full.data, 256).unwrap()[255], entry(255));
        assert_eq!(bundles.partial(), None);
    }

    #[test]
    fn parse_bundle_rejects_truncation_and_wrong_counts() {
        let mut bundles = BundleBuilder::new();
        for i in 0..3 {
            bundles.push::<()>(&entry(i)).unwrap();
        }
        let data = bundles.partial().unwrap().data;
        assert_eq!(parse_bundle::<()>(&data, 2), Err(BuildError::MalformedBundle));
        assert_eq!(parse_bundle::<()>(&data, 4), Err(BuildError::MalformedBundle));
        assert_eq!(parse_bundle::<()>(&data[..data.len() - 1], 3), Err(BuildError::MalformedBundle));
        assert_eq!(parse_bundle::<()>(&[0], 1), Err(BuildError::MalformedBundle));
        let resumed = BundleBuilder::resume::<()>(3, Some(&data)).unwrap();
        assert_eq!(resumed, bundles);
        assert_eq!(BundleBuilder::resume::<()>(4, Some(&data)), Err(BuildError::MalformedBundle));
        assert_eq!(BundleBuilder::resume::<()>(3, None), Err(BuildError::MalformedBundle));
        assert_eq!(BundleBuilder::resume::<()>(256, None).unwrap().partial(), None);
    }

    #[test]
    fn log_tiler_keeps_tiles_and_bundles_in_step() {
        let mut tiler = LogTiler::new();
        let mut completed = Completed::default();
        for i in 0..300 {
            tiler.append::<()>(&entry(i), &mut completed).unwrap();
        }
        assert_eq!(
            tiler.append::<()>(&vec![0; MAX_ENTRY_BYTES + 1], &mut completed),
            Err(BuildError::EntryTooLarge { len: MAX_ENTRY_BYTES + 1 })
        );
        assert_eq!(tiler.size(), 300);
        assert_eq!(shape(&completed.tiles), [(0, 0, 256)]);
        assert_eq!(completed.bundles.len(), 1);
        let bundle = parse_bundle::<()>(&completed.bundles[0].data, 256).unwrap();
        for (j, e) in bundle.iter().enumerate() {
            assert_eq!(completed.tiles[0].data[j * 32..][..32], leaf_hash(e));
        }
        let (tiles, bundle) = tiler.partial();
        assert_eq!(shape(&tiles), [(0, 1, 44), (1, 0, 1)]);
        assert_eq!(bundle.unwrap().id.path(), "tile/entries/001.p/44");
        assert_eq!(tiler.root(), fixture().tree.root_at(300).unwrap());
    }

    #[test]
    fn log_tiler_resumes_from_stored_objects_and_checks_the_bundle() {
        let (mut tiler, mut completed) = (LogTiler::new(), Completed::default());
        for i in 0..600 {
            tiler.append::<()>(&entry(i), &mut completed).unwrap();
        }
        let (partial_tiles, bundle) = tiler.partial();
        let store = RowStore::from_tiles(&completed.tiles, &partial_tiles);
        let bundle = bundle.unwrap().data;
        let resumed = LogTiler::resume(600, &tiler.root(), &mut store.reader(), Some(&bundle)).unwrap();
        assert_eq!(resumed, tiler);
        let mut other = BundleBuilder::new();
        for i in 512..600 {
            other.push::<()>(&entry(i + 1)).unwrap();
        }
        let wrong = other.partial().unwrap().data;
        let resumed = LogTiler::resume(600, &tiler.root(), &mut store.reader(), Some(&wrong));
        assert_eq!(resumed, Err(BuildError::BundleMismatch));
        let resumed = LogTiler::resume(600, &tiler.root(), &mut store.reader(), None);
        assert_eq!(resumed, Err(BuildError::MalformedBundle));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn root_matches_the_in_memory_tree(size in 0..=FIXTURE_SIZE) {
            let (builder, _) = build(size);
            prop_assert_eq!(builder.root(), fixture().tree.root_at(size).unwrap());
        }
    }
}
