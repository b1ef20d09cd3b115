//! RFC 9162 inclusion and consistency proofs computed from tiles, and which tiles they need.
//!
//! Every proof hash is the tree hash of one range of leaves the RFC recursion visits. A range
//! splits into perfect subtrees of 2^k leaves; such a subtree is 2^(k mod 8) consecutive hashes of
//! one tile at level k div 8. Tiles are read once each, at the width the tree `size` gives them
//! (full where full, the partial right edge otherwise). Tile contents are not trusted: verify the
//! proof against a signed root ([`verify_inclusion`], [`verify_consistency`]); a wrong tile makes
//! that fail.

use std::collections::BTreeMap;

pub use evidenceos_core::merkle::{ProofError, verify_consistency, verify_inclusion};
use evidenceos_core::merkle::{empty_root, node_hash};

use crate::Hash;
use crate::builder::subtree_root;
use crate::tile::{BundleId, FULL_WIDTH, TILE_HEIGHT, TileId, TileReader, hashes_of};

/// Why a proof could not be computed from tiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TileProofError<E> {
    /// The index or sizes are out of range (same cases as the verifiers reject).
    Range(ProofError),
    /// A tile whose length is not its width × 32.
    WrongTileLength { tile: TileId, len: usize },
    /// The tile reader failed.
    Read(E),
    /// The proof built from the tiles does not verify against the given root(s): the tiles or
    /// the signed head are wrong (a split view if both are signed).
    Invalid(ProofError),
}

impl<E: std::fmt::Display> std::fmt::Display for TileProofError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TileProofError::Range(e) => write!(f, "proof request: {e}"),
            TileProofError::WrongTileLength { tile, len } => {
                write!(f, "tile {} has {len} bytes, want {}", tile.path(), tile.byte_len())
            }
            TileProofError::Read(e) => write!(f, "reading a tile: {e}"),
            TileProofError::Invalid(e) => write!(f, "proof from tiles does not verify: {e}"),
        }
    }
}

impl<E: std::fmt::Debug + std::fmt::Display> std::error::Error for TileProofError<E> {}

/// Leaves [start, start + len).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    start: u64,
    len: u64,
}

/// Largest power of two strictly less than `n` (n >= 2).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The ranges of an inclusion proof (RFC 9162 §2.1.3.1 PATH), leaf upwards.
fn inclusion_ranges(index: u64, size: u64) -> Result<Vec<Range>, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange);
    }
    let mut ranges = Vec::with_capacity(64);
    let (mut start, mut n) = (0u64, size);
    while n > 1 {
        let k = split_point(n);
        if index < start + k {
            ranges.push(Range { start: start + k, len: n - k });
            n = k;
        } else {
            ranges.push(Range { start, len: k });
            start += k;
            n -= k;
        }
    }
    ranges.reverse();
    Ok(ranges)
}

/// The ranges of a consistency proof (RFC 9162 §2.1.4.1 PROOF), in proof order.
fn consistency_ranges(old_size: u64, new_size: u64) -> Result<Vec<Range>, ProofError> {
    if old_size == 0 || old_size > new_size {
        return Err(ProofError::SizeOutOfRange);
    }
    let mut siblings = Vec::with_capacity(64);
    let (mut start, mut n, mut m, mut whole_old_tree) = (0u64, new_size, old_size, true);
    while m != n {
        let k = split_point(n);
        if m <= k {
            siblings.push(Range { start: start + k, len: n - k });
            n = k;
        } else {
            siblings.push(Range { start, len: k });
            start += k;
            n -= k;
            m -= k;
            whole_old_tree = false;
        }
    }
    let mut ranges = Vec::with_capacity(siblings.len() + 1);
    // An old tree that is a complete left subtree is the verifier's own root, so it is not sent.
    if !whole_old_tree {
        ranges.push(Range { start, len: n });
    }
    ranges.extend(siblings.into_iter().rev());
    Ok(ranges)
}

/// Where the hashes of a perfect subtree live: a tile, the first hash and how many.
#[derive(Debug, Clone, Copy)]
struct Part {
    tile: TileId,
    offset: usize,
    count: usize,
}

/// The perfect subtrees of `range` (largest first, as its tree hash combines them) in the tiles
/// of a tree of `size` leaves.
fn parts(range: Range, size: u64) -> Vec<Part> {
    debug_assert!(range.len >= 1 && range.start + range.len <= size, "proof: range outside the tree");
    let mut parts = Vec::new();
    let mut start = range.start;
    for bit in (0..64).rev() {
        let len = 1u64 << bit;
        if range.len & len == 0 {
            continue;
        }
        let level = bit / TILE_HEIGHT;
        let row_start = start >> (level * TILE_HEIGHT);
        let tile_index = row_start >> TILE_HEIGHT;
        let in_level = size >> (level * TILE_HEIGHT);
        let width = (in_level - tile_index * u64::from(FULL_WIDTH)).min(u64::from(FULL_WIDTH)) as u16;
        let tile = TileId::new(level as u8, tile_index, width).expect("proof: coordinates within a u64 tree");
        let offset = (row_start % u64::from(FULL_WIDTH)) as usize;
        parts.push(Part { tile, offset, count: 1 << (bit % TILE_HEIGHT) });
        start += len;
    }
    parts
}

fn tiles_for(ranges: &[Range], size: u64) -> Vec<TileId> {
    let mut tiles: Vec<TileId> = ranges.iter().flat_map(|r| parts(*r, size)).map(|p| p.tile).collect();
    tiles.sort();
    tiles.dedup();
    tiles
}

/// The tiles (at the widths of a tree of `size`) an inclusion proof of `index` needs.
pub fn inclusion_tiles(index: u64, size: u64) -> Result<Vec<TileId>, ProofError> {
    Ok(tiles_for(&inclusion_ranges(index, size)?, size))
}

/// The tiles (at the widths of the newer tree) a consistency proof `old_size` → `new_size` needs.
pub fn consistency_tiles(old_size: u64, new_size: u64) -> Result<Vec<TileId>, ProofError> {
    Ok(tiles_for(&consistency_ranges(old_size, new_size)?, new_size))
}

/// Reads each needed tile once and hashes every range.
fn range_hashes<R: TileReader>(
    reader: &mut R,
    ranges: &[Range],
    size: u64,
) -> Result<Vec<Hash>, TileProofError<R::Error>> {
    let mut tiles: BTreeMap<TileId, Vec<Hash>> = BTreeMap::new();
    for tile in tiles_for(ranges, size) {
        let data = reader.read_tile(tile).map_err(TileProofError::Read)?;
        let hashes = hashes_of(tile, &data).map_err(|(tile, len)| TileProofError::WrongTileLength { tile, len })?;
        tiles.insert(tile, hashes);
    }
    let hash_range = |range: &Range| {
        let subtrees: Vec<Hash> =
            parts(*range, size).iter().map(|p| subtree_root(&tiles[&p.tile][p.offset..p.offset + p.count])).collect();
        let (last, rest) = subtrees.split_last().expect("proof: a range has at least one leaf");
        rest.iter().rev().fold(*last, |acc, left| node_hash(left, &acc))
    };
    Ok(ranges.iter().map(hash_range).collect())
}

/// Inclusion proof of leaf `index` in the tree of `size` leaves, from tiles.
pub fn inclusion_proof<R: TileReader>(
    reader: &mut R,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, TileProofError<R::Error>> {
    let ranges = inclusion_ranges(index, size).map_err(TileProofError::Range)?;
    range_hashes(reader, &ranges, size)
}

/// Consistency proof from the tree of `old_size` leaves to the tree of `new_size`, from the
/// newer tree's tiles.
pub fn consistency_proof<R: TileReader>(
    reader: &mut R,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, TileProofError<R::Error>> {
    let ranges = consistency_ranges(old_size, new_size).map_err(TileProofError::Range)?;
    range_hashes(reader, &ranges, new_size)
}

/// Tree hash of the first `size` leaves, from tiles (a monitor compares it with a checkpoint).
pub fn root<R: TileReader>(reader: &mut R, size: u64) -> Result<Hash, TileProofError<R::Error>> {
    if size == 0 {
        return Ok(empty_root());
    }
    let hashes = range_hashes(reader, &[Range { start: 0, len: size }], size)?;
    Ok(hashes[0])
}

/// Leaf hash at `index` in the tree of `size` leaves, from its level-0 tile.
pub fn leaf_hash<R: TileReader>(reader: &mut R, index: u64, size: u64) -> Result<Hash, TileProofError<R::Error>> {
    if index >= size {
        return Err(TileProofError::Range(ProofError::IndexOutOfRange));
    }
    let hashes = range_hashes(reader, &[Range { start: index, len: 1 }], size)?;
    Ok(hashes[0])
}

/// The entry bundle holding leaf `index` in a tree of `size` leaves, and the entry's position in it.
pub fn bundle_for(index: u64, size: u64) -> Result<(BundleId, usize), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange);
    }
    let bundle_index = index >> TILE_HEIGHT;
    let width = (size - bundle_index * u64::from(FULL_WIDTH)).min(u64::from(FULL_WIDTH)) as u16;
    let bundle = BundleId::new(bundle_index, width).expect("proof: a bundle below the size has entries");
    Ok((bundle, (index % u64::from(FULL_WIDTH)) as usize))
}

/// Proves from tiles that `leaf_hash` is leaf `index` of the tree of `size` leaves with `root`.
pub fn prove_inclusion<R: TileReader>(
    reader: &mut R,
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    root: &Hash,
) -> Result<(), TileProofError<R::Error>> {
    let proof = inclusion_proof(reader, index, size)?;
    verify_inclusion(leaf_hash, index, size, &proof, root).map_err(TileProofError::Invalid)
}

/// Proves from the newer tree's tiles that the tree (`old_size`, `old_root`) is a prefix of
/// (`new_size`, `new_root`). An empty old tree is a prefix of every tree.
pub fn prove_consistency<R: TileReader>(
    reader: &mut R,
    (old_size, old_root): (u64, &Hash),
    (new_size, new_root): (u64, &Hash),
) -> Result<(), TileProofError<R::Error>> {
    if old_size == 0 {
        return Ok(());
    }
    let proof = consistency_proof(reader, old_size, new_size)?;
    verify_consistency(old_size, new_size, old_root, new_root, &proof).map_err(TileProofError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FIXTURE_SIZE, entry, fixture};
    use evidenceos_core::merkle::leaf_hash as hash_leaf;
    use proptest::prelude::*;

    #[test]
    fn reads_exactly_the_tiles_it_names_each_once() {
        let f = fixture();
        for (index, size) in [(0, 1), (5, 70_000), (69_999, 70_000), (65_535, 65_537), (300, 513)] {
            let mut store = f.store.reader();
            inclusion_proof(&mut store, index, size).unwrap();
            assert_eq!(store.reads, inclusion_tiles(index, size).unwrap(), "inclusion {index} in {size}");
        }
        for (old, new) in [(1, 70_000), (256, 65_536), (65_535, 70_000), (7, 7)] {
            let mut store = f.store.reader();
            consistency_proof(&mut store, old, new).unwrap();
            assert_eq!(store.reads, consistency_tiles(old, new).unwrap(), "consistency {old} -> {new}");
        }
    }

    #[test]
    fn a_million_leaf_inclusion_needs_few_tiles() {
        // O(log_256 n): at most the path tile and the right-edge tile per level.
        for index in [0, 123_456, 999_999] {
            let tiles = inclusion_tiles(index, 1_000_000).unwrap();
            assert!(tiles.len() <= 6, "{index}: {tiles:?}");
        }
        let tiles = inclusion_tiles(123_456, 1_000_000).unwrap();
        assert!(tiles.contains(&TileId::new(0, 482, 256).unwrap()));
        assert!(tiles.contains(&TileId::new(2, 0, 15).unwrap()));
    }

    #[test]
    fn a_tampered_tile_fails_verification() {
        let f = fixture();
        let (index, size) = (1_000, 70_000);
        let mut store = f.store.reader();
        let proof = inclusion_proof(&mut store, index, size).unwrap();
        let root = f.tree.root_at(size).unwrap();
        let leaf = hash_leaf(&entry(index));
        assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Ok(()));
        for tile in inclusion_tiles(index, size).unwrap() {
            let mut bad = TamperOne { inner: f.store.reader(), target: tile };
            let proof = inclusion_proof(&mut bad, index, size).unwrap();
            assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Err(ProofError::RootMismatch), "{tile:?}");
        }
    }

    struct TamperOne<'a> {
        inner: crate::testing::StoreReader<'a>,
        target: TileId,
    }

    impl TileReader for TamperOne<'_> {
        type Error = String;
        fn read_tile(&mut self, tile: TileId) -> Result<Vec<u8>, String> {
            let mut data = self.inner.read_tile(tile)?;
            if tile == self.target {
                // Flip every hash: whichever one the proof uses changes.
                for hash in data.chunks_exact_mut(32) {
                    hash[0] ^= 1;
                }
            }
            Ok(data)
        }
    }

    #[test]
    fn errors_are_typed() {
        let mut store = fixture().store.reader();
        assert_eq!(inclusion_proof(&mut store, 5, 5), Err(TileProofError::Range(ProofError::IndexOutOfRange)));
        assert_eq!(consistency_proof(&mut store, 0, 5), Err(TileProofError::Range(ProofError::SizeOutOfRange)));
        assert_eq!(consistency_proof(&mut store, 6, 5), Err(TileProofError::Range(ProofError::SizeOutOfRange)));
        struct Long;
        impl TileReader for Long {
            type Error = ();
            fn read_tile(&mut self, tile: TileId) -> Result<Vec<u8>, ()> {
                Ok(vec![0; tile.byte_len() + 1])
            }
        }
        let tile = TileId::new(0, 0, 2).unwrap();
        assert_eq!(inclusion_proof(&mut Long, 0, 2), Err(TileProofError::WrongTileLength { tile, len: 65 }));
        let missing = inclusion_proof(&mut store, 0, FIXTURE_SIZE + 1);
        assert!(matches!(missing, Err(TileProofError::Read(_))), "{missing:?}");
    }

    #[test]
    fn consistency_edge_cases_equal_the_in_memory_tree() {
        let f = fixture();
        let pairs = [(1, 1), (7, 7), (256, 256), (1, 2), (2, 3), (4, 5), (256, 257), (256, 65_536), (65_536, 70_000)];
        for (old, new) in pairs.into_iter().chain((1..=40).flat_map(|new| (1..=new).map(move |old| (old, new)))) {
            let proof = consistency_proof(&mut f.store.reader(), old, new).unwrap();
            assert_eq!(proof, f.tree.consistency_proof(old, new).unwrap(), "{old} -> {new}");
        }
    }

    #[test]
    fn prove_checks_against_the_roots() {
        let f = fixture();
        let (index, size) = (4_242, 69_000);
        let root = f.tree.root_at(size).unwrap();
        let leaf = hash_leaf(&entry(index));
        assert_eq!(prove_inclusion(&mut f.store.reader(), &leaf, index, size, &root), Ok(()));
        let other = hash_leaf(b"not the entry");
        let rejected = prove_inclusion(&mut f.store.reader(), &other, index, size, &root);
        assert_eq!(rejected, Err(TileProofError::Invalid(ProofError::RootMismatch)));
        let old = (1_000, &f.tree.root_at(1_000).unwrap());
        assert_eq!(prove_consistency(&mut f.store.reader(), old, (size, &root)), Ok(()));
        let split_view = (1_000, &[0; 32]);
        let rejected = prove_consistency(&mut f.store.reader(), split_view, (size, &root));
        assert_eq!(rejected, Err(TileProofError::Invalid(ProofError::RootMismatch)));
        assert_eq!(prove_consistency(&mut f.store.reader(), (0, &[0; 32]), (size, &root)), Ok(()));
    }

    #[test]
    fn bundle_for_names_the_bundle_at_the_trees_width() {
        assert_eq!(bundle_for(0, 1), Ok((BundleId::new(0, 1).unwrap(), 0)));
        assert_eq!(bundle_for(300, 70_000), Ok((BundleId::new(1, 256).unwrap(), 44)));
        assert_eq!(bundle_for(69_999, 70_000), Ok((BundleId::new(273, 112).unwrap(), 111)));
        assert_eq!(bundle_for(5, 5), Err(ProofError::IndexOutOfRange));
    }

    #[test]
    fn root_and_leaf_from_tiles() {
        let f = fixture();
        let mut store = f.store.reader();
        assert_eq!(root(&mut store, 0), Ok(empty_root()));
        for size in [1, 255, 256, 257, 65_536, 69_999, 70_000] {
            assert_eq!(root(&mut store, size), Ok(f.tree.root_at(size).unwrap()), "{size}");
        }
        assert_eq!(leaf_hash(&mut store, 68_000, 70_000), Ok(hash_leaf(&entry(68_000))));
        assert_eq!(leaf_hash(&mut store, 7, 7), Err(TileProofError::Range(ProofError::IndexOutOfRange)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn inclusion_from_tiles_equals_the_in_memory_tree(size in 1..=FIXTURE_SIZE, seed in any::<u64>()) {
            let f = fixture();
            let index = seed % size;
            let mut store = f.store.reader();
            let proof = inclusion_proof(&mut store, index, size).unwrap();
            prop_assert_eq!(&proof, &f.tree.inclusion_proof(index, size).unwrap());
            let root = f.tree.root_at(size).unwrap();
            prop_assert_eq!(verify_inclusion(&hash_leaf(&entry(index)), index, size, &proof, &root), Ok(()));
        }

        #[test]
        fn consistency_from_tiles_equals_the_in_memory_tree(new in 1..=FIXTURE_SIZE, seed in any::<u64>()) {
            let f = fixture();
            let old = 1 + seed % new;
            let mut store = f.store.reader();
            let proof = consistency_proof(&mut store, old, new).unwrap();
            prop_assert_eq!(&proof, &f.tree.consistency_proof(old, new).unwrap());
            let (old_root, new_root) = (f.tree.root_at(old).unwrap(), f.tree.root_at(new).unwrap());
            prop_assert_eq!(verify_consistency(old, new, &old_root, &new_root, &proof), Ok(()));
        }

    }

    proptest! {
        // Every index of a tree is many proofs: few trees.
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn small_trees_prove_every_index(size in 1u64..600) {
            let f = fixture();
            for index in 0..size {
                let mut store = f.store.reader();
                prop_assert_eq!(inclusion_proof(&mut store, index, size).unwrap(), f.tree.inclusion_proof(index, size).unwrap());
            }
        }
    }
}
