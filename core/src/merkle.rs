//! RFC 6962 / RFC 9162 Merkle tree for a transparency log: an in-memory tree that grows by
//! appending leaf hashes, inclusion and consistency proof generation, and proof verification.
//!
//! Hashing (RFC 9162 §2.1.1): leaf hash = SHA-256(0x00 ‖ leaf), node hash = SHA-256(0x01 ‖ left ‖ right),
//! the tree over n > 1 leaves splits at k = the largest power of two strictly less than n, and the
//! root of the empty tree is SHA-256("").

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// RFC 6962 leaf hash: SHA-256(0x00 ‖ leaf).
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    Sha256::new().chain_update([0x00]).chain_update(leaf).finalize().into()
}

/// RFC 6962 interior node hash: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new().chain_update([0x01]).chain_update(left).chain_update(right).finalize().into()
}

/// Root of the empty tree: SHA-256("").
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Largest power of two strictly less than `n`. Requires `n >= 2`.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2, "split_point needs at least two leaves, got {n}");
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Converts a leaf count or position that is known to be at most the number of stored leaves.
fn to_usize(x: u64) -> usize {
    usize::try_from(x).expect("merkle: value bounded by an in-memory length must fit in usize")
}

/// In-memory Merkle tree that grows by appending leaf hashes.
///
/// Every aligned complete subtree hash is stored (about 2 hashes per leaf), so appends are O(1)
/// amortized and roots and proofs of any prefix are O(log n); the log is never rehashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleTree {
    // Layout: levels[h][i] = hash of the complete subtree over leaves [i*2^h, (i+1)*2^h), so levels[0] holds the leaf hashes and levels[h].len() == len >> h for every h; levels.len() == max(1, bit length of len).
    levels: Vec<Vec<Hash>>,
}

impl Default for MerkleTree {
    fn default() -> Self {
        Self::new()
    }
}

impl MerkleTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self { levels: vec![Vec::new()] }
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.levels[0].len() as u64
    }

    /// True if the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.levels[0].is_empty()
    }

    /// Appends one leaf, given as its leaf hash (see [`leaf_hash`]).
    pub fn push(&mut self, leaf_hash: Hash) {
        self.levels[0].push(leaf_hash);
        // Every level whose length becomes even completes a subtree one level up.
        let mut h = 0;
        while self.levels[h].len() & 1 == 0 {
            let n = self.levels[h].len();
            let parent = node_hash(&self.levels[h][n - 2], &self.levels[h][n - 1]);
            if h + 1 == self.levels.len() {
                self.levels.push(Vec::new());
            }
            self.levels[h + 1].push(parent);
            h += 1;
        }
        self.debug_check_invariants();
    }

    /// Drops every leaf at position `new_len` or later (no-op if `new_len >= len`).
    pub fn truncate(&mut self, new_len: u64) {
        if new_len >= self.len() {
            return;
        }
        for (h, level) in self.levels.iter_mut().enumerate() {
            level.truncate(to_usize(new_len >> h));
        }
        while self.levels.len() > 1 && self.levels.last().is_some_and(Vec::is_empty) {
            self.levels.pop();
        }
        self.debug_check_invariants();
    }

    /// Leaf hash at `index`, if present.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        let index = usize::try_from(index).ok()?;
        self.levels[0].get(index).copied()
    }

    /// Root of the whole tree ([`empty_root`] when empty).
    pub fn root(&self) -> Hash {
        self.root_at(self.len()).expect("merkle: the current length is always a valid prefix")
    }

    /// Root of the prefix of `size` leaves; `None` if `size > len`. O(log n).
    pub fn root_at(&self, size: u64) -> Option<Hash> {
        if size > self.len() {
            return None;
        }
        if size == 0 {
            return Some(empty_root());
        }
        Some(self.subtree_hash(0, size))
    }

    /// Inclusion proof (RFC 9162 §2.1.3.1 PATH) for leaf `index` in the tree of the first `size`
    /// leaves, ordered from the leaf upwards; `None` if `index >= size` or `size > len`.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Option<Vec<Hash>> {
        if index >= size || size > self.len() {
            return None;
        }
        // Walk down from the root of [0, size) towards the leaf, collecting siblings top-down.
        let mut siblings = Vec::with_capacity(64);
        let (mut start, mut n) = (0u64, size);
        while n > 1 {
            let k = split_point(n);
            if index < start + k {
                siblings.push(self.subtree_hash(start + k, n - k));
                n = k;
            } else {
                siblings.push(self.subtree_hash(start, k));
                start += k;
                n -= k;
            }
        }
        siblings.reverse();
        Some(siblings)
    }

    /// Consistency proof (RFC 9162 §2.1.4.1 PROOF) between the trees of the first `old_size`
    /// and first `new_size` leaves. `None` if `old_size == 0`, `old_size > new_size` or
    /// `new_size > len`; `Some(vec![])` if `old_size == new_size`.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Option<Vec<Hash>> {
        if old_size == 0 || old_size > new_size || new_size > self.len() {
            return None;
        }
        // SUBPROOF(m, D[start..start+n], b), unrolled: siblings are collected top-down and the
        // recursion bottoms out at m == n.
        let mut siblings = Vec::with_capacity(64);
        let (mut start, mut n, mut m, mut whole_old_tree) = (0u64, new_size, old_size, true);
        while m != n {
            let k = split_point(n);
            if m <= k {
                siblings.push(self.subtree_hash(start + k, n - k));
                n = k;
            } else {
                siblings.push(self.subtree_hash(start, k));
                start += k;
                n -= k;
                m -= k;
                whole_old_tree = false;
            }
        }
        let mut proof = Vec::with_capacity(siblings.len() + 1);
        if !whole_old_tree {
            proof.push(self.subtree_hash(start, n));
        }
        proof.extend(siblings.into_iter().rev());
        Some(proof)
    }

    /// Approximate heap bytes held by the tree (capacity based).
    pub fn memory_bytes(&self) -> usize {
        self.levels.capacity() * std::mem::size_of::<Vec<Hash>>()
            + self.levels.iter().map(|level| level.capacity() * std::mem::size_of::<Hash>()).sum::<usize>()
    }

    /// MTH of leaves [start, start + n). Every range visited by the RFC recursion has `start`
    /// aligned to a multiple of the smallest power of two >= n, so a power-of-two `n` is one
    /// stored complete subtree (O(1)) and any other `n` recurses only down its right edge.
    fn subtree_hash(&self, start: u64, n: u64) -> Hash {
        assert!(
            n >= 1 && start + n <= self.len(),
            "merkle: subtree [{start}, {start}+{n}) outside the tree of {} leaves",
            self.len()
        );
        if n.is_power_of_two() {
            let h = n.trailing_zeros() as usize;
            debug_assert!(start & (n - 1) == 0, "merkle: complete subtree at {start} of {n} leaves is not aligned");
            return self.levels[h][to_usize(start >> h)];
        }
        let k = split_point(n);
        node_hash(&self.subtree_hash(start, k), &self.subtree_hash(start + k, n - k))
    }

    /// Checks the storage invariants (debug builds only).
    fn debug_check_invariants(&self) {
        if cfg!(debug_assertions) {
            let len = self.len();
            let want_levels = (64 - len.leading_zeros() as usize).max(1);
            debug_assert_eq!(self.levels.len(), want_levels, "merkle: wrong number of levels for {len} leaves");
            for (h, level) in self.levels.iter().enumerate() {
                debug_assert_eq!(
                    level.len() as u64,
                    len >> h,
                    "merkle: level {h} has the wrong length for {len} leaves"
                );
            }
        }
    }
}

/// Why a proof was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofError {
    /// Inclusion: the leaf index is not below the tree size.
    IndexOutOfRange,
    /// Consistency: the old size is larger than the new size, or the old size is 0.
    SizeOutOfRange,
    /// The proof does not have the number of hashes the sizes require.
    WrongProofLength,
    /// The recomputed root does not match the expected root.
    RootMismatch,
}

impl std::fmt::Display for ProofError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProofError::IndexOutOfRange => "leaf index out of range",
            ProofError::SizeOutOfRange => "tree size out of range",
            ProofError::WrongProofLength => "wrong proof length",
            ProofError::RootMismatch => "root mismatch",
        })
    }
}

impl std::error::Error for ProofError {}

/// One step of the RFC 9162 verification walk (§2.1.3.2 step 4, §2.1.4.2 step 6) without the
/// hashing: returns whether the proof hash goes on the left, and advances `fn_`/`sn`.
fn walk_step(fn_: &mut u64, sn: &mut u64) -> bool {
    let left = *fn_ & 1 == 1 || *fn_ == *sn;
    if left && *fn_ & 1 == 0 {
        while *fn_ & 1 == 0 && *fn_ != 0 {
            *fn_ >>= 1;
            *sn >>= 1;
        }
    }
    *fn_ >>= 1;
    *sn >>= 1;
    left
}

/// Number of walk steps from (fn_, sn) until sn reaches 0.
fn walk_len(mut fn_: u64, mut sn: u64) -> usize {
    let mut steps = 0;
    while sn != 0 {
        walk_step(&mut fn_, &mut sn);
        steps += 1;
    }
    steps
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2) of `leaf_hash` at `index` in the tree of
/// `size` leaves with root `root`.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange);
    }
    let (mut fn_, mut sn) = (index, size - 1);
    if proof.len() != walk_len(fn_, sn) {
        return Err(ProofError::WrongProofLength);
    }
    let mut r = *leaf_hash;
    for p in proof {
        if sn == 0 {
            return Err(ProofError::WrongProofLength);
        }
        r = if walk_step(&mut fn_, &mut sn) { node_hash(p, &r) } else { node_hash(&r, p) };
    }
    if sn != 0 {
        return Err(ProofError::WrongProofLength);
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Verifies a consistency proof (RFC 9162 §2.1.4.2) between the tree of `old_size` leaves with
/// root `old_root` and the tree of `new_size` leaves with root `new_root`.
///
/// `old_size > new_size` and `old_size == 0` are rejected with [`ProofError::SizeOutOfRange`]
/// (a tree of size 0 is consistent with everything, so such a "proof" proves nothing; the
/// caller decides what growing from an empty log means). `old_size == new_size` verifies iff
/// the proof is empty and the roots are equal.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size || old_size == 0 {
        return Err(ProofError::SizeOutOfRange);
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::WrongProofLength);
        }
        if old_root != new_root {
            return Err(ProofError::RootMismatch);
        }
        return Ok(());
    }
    // Steps 3-4: skip the levels where the old tree is a right child along its right edge.
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    // Step 2: for a power-of-two old size the old root itself is the first path element and
    // is not sent.
    let old_is_complete = old_size.is_power_of_two();
    let expected = walk_len(fn_, sn) + usize::from(!old_is_complete);
    if proof.len() != expected {
        return Err(ProofError::WrongProofLength);
    }
    let (first, rest) = if old_is_complete {
        (old_root, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (first, rest),
            None => return Err(ProofError::WrongProofLength),
        }
    };
    // Steps 5-7.
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if sn == 0 {
            return Err(ProofError::WrongProofLength);
        }
        if walk_step(&mut fn_, &mut sn) {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
        } else {
            sr = node_hash(&sr, c);
        }
    }
    if sn != 0 {
        return Err(ProofError::WrongProofLength);
    }
    if fr != *old_root || sr != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use proptest::prelude::*;
    use serde::Deserialize;
    use std::path::{Path, PathBuf};

    // ---------------------------------------------------------------------------------------
    // Naive RFC 6962 model: MTH, PATH and PROOF straight from the recursive definitions.
    // ---------------------------------------------------------------------------------------

    fn naive_split(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    fn naive_mth(d: &[Hash]) -> Hash {
        match d.len() {
            0 => empty_root(),
            1 => d[0],
            n => {
                let k = naive_split(n);
                node_hash(&naive_mth(&d[..k]), &naive_mth(&d[k..]))
            }
        }
    }

    fn naive_path(m: usize, d: &[Hash]) -> Vec<Hash> {
        let n = d.len();
        if n <= 1 {
            return Vec::new();
        }
        let k = naive_split(n);
        if m < k {
            let mut p = naive_path(m, &d[..k]);
            p.push(naive_mth(&d[k..]));
            p
        } else {
            let mut p = naive_path(m - k, &d[k..]);
            p.push(naive_mth(&d[..k]));
            p
        }
    }

    fn naive_subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if b { Vec::new() } else { vec![naive_mth(d)] };
        }
        let k = naive_split(n);
        if m <= k {
            let mut p = naive_subproof(m, &d[..k], b);
            p.push(naive_mth(&d[k..]));
            p
        } else {
            let mut p = naive_subproof(m - k, &d[k..], false);
            p.push(naive_mth(&d[..k]));
            p
        }
    }

    fn naive_proof(m: usize, d: &[Hash]) -> Vec<Hash> {
        naive_subproof(m, d, true)
    }

    fn test_leaves(seed: u64, n: usize) -> Vec<Hash> {
        (0..n as u64).map(|i| leaf_hash(&[seed.to_le_bytes(), i.to_le_bytes()].concat())).collect()
    }

    fn tree_of(leaves: &[Hash]) -> MerkleTree {
        let mut t = MerkleTree::new();
        for l in leaves {
            t.push(*l);
        }
        t
    }

    fn flip_bit(h: &Hash, bit: usize) -> Hash {
        let mut h = *h;
        h[(bit / 8) % 32] ^= 1 << (bit % 8);
        h
    }

    // ---------------------------------------------------------------------------------------
    // 1. transparency-dev test vectors.
    // ---------------------------------------------------------------------------------------

    const VECTOR_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors/rfc6962");

    #[derive(Deserialize)]
    struct InclusionVector {
        #[serde(rename = "leafIdx")]
        leaf_idx: Option<u64>,
        #[serde(rename = "treeSize")]
        tree_size: Option<u64>,
        root: Option<String>,
        #[serde(rename = "leafHash")]
        leaf_hash: Option<String>,
        proof: Option<Vec<Option<String>>>,
        desc: Option<String>,
        #[serde(rename = "wantErr")]
        want_err: bool,
    }

    #[derive(Deserialize)]
    struct ConsistencyVector {
        size1: Option<u64>,
        size2: Option<u64>,
        root1: Option<String>,
        root2: Option<String>,
        proof: Option<Vec<Option<String>>>,
        desc: Option<String>,
        #[serde(rename = "wantErr")]
        want_err: bool,
    }

    fn vector_bytes(field: Option<&str>) -> Vec<u8> {
        match field {
            Some(s) => {
                base64::engine::general_purpose::STANDARD.decode(s).unwrap_or_else(|e| panic!("bad base64 {s:?}: {e}"))
            }
            None => Vec::new(),
        }
    }

    /// Strict decoding of a leaf hash or proof element: the typed API only accepts 32-byte
    /// hashes, so any other length (the vectors use "", "WrongLeaf") is rejected while
    /// decoding, as the reference verifier rejects a leaf hash of the wrong size.
    fn vector_hash_strict(field: Option<&str>) -> Option<Hash> {
        <Hash>::try_from(vector_bytes(field).as_slice()).ok()
    }

    /// Tolerant decoding of a root. The reference compares roots byte for byte without a length
    /// check (a 1 -> 1 consistency check with two equal 12-byte "roots" must verify), so a root
    /// of another length is mapped to a 32-byte stand-in that is injective in the bytes and never
    /// a real tree hash: equal values stay equal, different values stay different.
    fn vector_root(field: Option<&str>, odd_roots: &mut usize) -> Hash {
        let bytes = vector_bytes(field);
        <Hash>::try_from(bytes.as_slice()).unwrap_or_else(|_| {
            *odd_roots += 1;
            Sha256::new()
                .chain_update(b"merkle test stand-in for a non-32-byte root:")
                .chain_update(&bytes)
                .finalize()
                .into()
        })
    }

    fn vector_proof(proof: &Option<Vec<Option<String>>>) -> Option<Vec<Hash>> {
        proof.iter().flatten().map(|p| vector_hash_strict(p.as_deref())).collect()
    }

    fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read vector dir {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                json_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "json") {
                out.push(path);
            }
        }
    }

    /// Outcome of one vector: rejected while decoding (a non-32-byte leaf hash or proof
    /// element cannot be passed to the typed API; carries what the verifier says when those
    /// values are replaced by stand-ins too), or the verifier's result.
    #[derive(Debug)]
    enum Outcome {
        RejectedAtDecode(Result<(), ProofError>),
        Verified(Result<(), ProofError>),
    }

    fn vector_proof_tolerant(proof: &Option<Vec<Option<String>>>, odd: &mut usize) -> Vec<Hash> {
        proof.iter().flatten().map(|p| vector_root(p.as_deref(), odd)).collect()
    }

    #[test]
    fn transparency_dev_vectors() {
        let root_dir = Path::new(VECTOR_DIR);
        let mut files = Vec::new();
        json_files(root_dir, &mut files);
        files.sort();

        let (mut inclusion, mut consistency, mut happy) = (0, 0, 0);
        let (mut odd_roots, mut decode_rejects) = (0, Vec::new());
        let mut failures = Vec::new();
        for path in &files {
            let rel = path.strip_prefix(root_dir).expect("under vector dir");
            let text = std::fs::read_to_string(path).expect("read vector");
            let kind = rel.components().next().and_then(|c| c.as_os_str().to_str());
            let (outcome, want_err, desc) = match kind {
                Some("inclusion") => {
                    inclusion += 1;
                    let v: InclusionVector =
                        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", rel.display()));
                    let root = vector_root(v.root.as_deref(), &mut odd_roots);
                    let leaf = vector_hash_strict(v.leaf_hash.as_deref());
                    let proof = vector_proof(&v.proof);
                    let (index, size) = (v.leaf_idx.expect("leafIdx"), v.tree_size.expect("treeSize"));
                    let outcome = match (leaf, proof) {
                        (Some(leaf), Some(proof)) => {
                            Outcome::Verified(verify_inclusion(&leaf, index, size, &proof, &root))
                        }
                        _ => {
                            let mut ignored = 0;
                            let leaf = vector_root(v.leaf_hash.as_deref(), &mut ignored);
                            let proof = vector_proof_tolerant(&v.proof, &mut ignored);
                            Outcome::RejectedAtDecode(verify_inclusion(&leaf, index, size, &proof, &root))
                        }
                    };
                    (outcome, v.want_err, v.desc)
                }
                Some("consistency") => {
                    consistency += 1;
                    let v: ConsistencyVector =
                        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", rel.display()));
                    let root1 = vector_root(v.root1.as_deref(), &mut odd_roots);
                    let root2 = vector_root(v.root2.as_deref(), &mut odd_roots);
                    let (size1, size2) = (v.size1.expect("size1"), v.size2.expect("size2"));
                    let outcome = match vector_proof(&v.proof) {
                        Some(proof) => Outcome::Verified(verify_consistency(size1, size2, &root1, &root2, &proof)),
                        None => {
                            let proof = vector_proof_tolerant(&v.proof, &mut 0);
                            Outcome::RejectedAtDecode(verify_consistency(size1, size2, &root1, &root2, &proof))
                        }
                    };
                    (outcome, v.want_err, v.desc)
                }
                _ => panic!("unexpected vector file {}", rel.display()),
            };
            if !want_err {
                happy += 1;
            }
            let rejected = match &outcome {
                Outcome::RejectedAtDecode(with_stand_ins) => {
                    // The verifier must reject these on its own as well, except where the
                    // stand-ins collude: root and leaf are both the empty string, which the
                    // reference only rejects because of the leaf hash length.
                    let name = rel.display().to_string();
                    if with_stand_ins.is_ok() && name != "inclusion/single-entry/empty-root-and-leaf.json" {
                        failures.push(format!("{name}: verifier accepts it with stand-ins"));
                    }
                    decode_rejects.push(name);
                    true
                }
                Outcome::Verified(r) => r.is_err(),
            };
            if rejected != want_err {
                failures.push(format!(
                    "{} ({}): wantErr={want_err}, got {outcome:?}",
                    rel.display(),
                    desc.unwrap_or_default()
                ));
            }
        }
        assert!(failures.is_empty(), "vector failures:\n{}", failures.join("\n"));
        let checked = inclusion + consistency;
        assert!(checked > 150, "only {checked} vector files found under {VECTOR_DIR}");
        assert!(inclusion > 50 && consistency > 50, "{inclusion} inclusion, {consistency} consistency");
        assert!(happy >= 10, "only {happy} happy-path vectors");
        eprintln!(
            "vectors: {checked} files ({inclusion} inclusion, {consistency} consistency, \
             {happy} must verify); {odd_roots} non-32-byte roots; {} rejected at decode: {:?}",
            decode_rejects.len(),
            decode_rejects
        );
    }

    // ---------------------------------------------------------------------------------------
    // 2. Known roots from etl_sth.json.
    // ---------------------------------------------------------------------------------------

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn etl_known_roots() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors/etl_sth.json");
        let text = std::fs::read_to_string(path).expect("read etl_sth.json");
        let v: serde_json::Value = serde_json::from_str(&text).expect("parse etl_sth.json");
        let trees = v["trees"].as_array().expect("trees array");
        assert_eq!(trees.len(), 8, "expected trees for 0..=7 entries");

        let entries: Vec<String> = (0..7).map(|i| format!(r#"{{"kind":"example","n":{i}}}"#)).collect();
        let mut full = MerkleTree::new();
        for e in &entries {
            full.push(leaf_hash(e.as_bytes()));
        }
        for (k, t) in trees.iter().enumerate() {
            assert_eq!(t["tree_size"].as_u64(), Some(k as u64));
            if let Some(listed) = t["entries_utf8"].as_array() {
                let listed: Vec<&str> = listed.iter().filter_map(|e| e.as_str()).collect();
                assert_eq!(listed, entries[..k].iter().map(String::as_str).collect::<Vec<_>>());
            }
            let want = t["root_hex"].as_str().expect("root_hex");
            let tree = tree_of(&entries[..k].iter().map(|e| leaf_hash(e.as_bytes())).collect::<Vec<_>>());
            assert_eq!(hex(&tree.root()), want, "root of {k} entries");
            assert_eq!(hex(&full.root_at(k as u64).expect("prefix")), want, "root_at({k})");
        }
        assert_eq!(hex(&empty_root()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    // ---------------------------------------------------------------------------------------
    // 3. Property tests against the naive model.
    // ---------------------------------------------------------------------------------------

    /// Picks a value in 0..bound (bound > 0) from a random u64.
    fn pick(r: u64, bound: usize) -> usize {
        (r % bound as u64) as usize
    }

    /// Tree sizes 1..=4096, half of them at or next to a power of two.
    fn tree_size() -> impl Strategy<Value = usize> {
        prop_oneof![
            1usize..=4096,
            (0u32..=12, 0usize..3).prop_map(|(e, d)| ((1usize << e) + d).saturating_sub(1).clamp(1, 4096)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn prop_matches_naive_model(
            n in tree_size(),
            seed in any::<u64>(),
            picks in proptest::collection::vec(any::<(u64, u64, u64)>(), 6),
        ) {
            let d = test_leaves(seed, n);
            let tree = tree_of(&d);
            prop_assert_eq!(tree.len(), n as u64);
            prop_assert_eq!(tree.root(), naive_mth(&d));
            prop_assert_eq!(tree.root_at(n as u64 + 1), None);

            for &(a, b, bit) in &picks {
                let bit = bit as usize;
                // Prefix roots.
                let s = pick(a, n + 1);
                prop_assert_eq!(tree.root_at(s as u64), Some(naive_mth(&d[..s])));

                // Inclusion of leaf i in the tree of size s.
                let s = 1 + pick(a, n);
                let i = pick(b, s);
                let (i64_, s64) = (i as u64, s as u64);
                let root = naive_mth(&d[..s]);
                let proof = tree.inclusion_proof(i64_, s64).expect("valid inclusion request");
                prop_assert_eq!(&proof, &naive_path(i, &d[..s]));
                prop_assert_eq!(verify_inclusion(&d[i], i64_, s64, &proof, &root), Ok(()));
                if !proof.is_empty() {
                    let mut bad = proof.clone();
                    let j = pick(b >> 32, bad.len());
                    bad[j] = flip_bit(&bad[j], bit);
                    prop_assert!(verify_inclusion(&d[i], i64_, s64, &bad, &root).is_err());
                }
                prop_assert!(verify_inclusion(&flip_bit(&d[i], bit), i64_, s64, &proof, &root).is_err());
                prop_assert!(verify_inclusion(&d[i], i64_, s64, &proof, &flip_bit(&root, bit)).is_err());
                // A different size, with that size's real root, must not verify.
                let s2 = 1 + pick(bit as u64, n);
                if s2 != s && i < s2 {
                    let root2 = tree.root_at(s2 as u64).expect("prefix");
                    prop_assert!(verify_inclusion(&d[i], i64_, s2 as u64, &proof, &root2).is_err());
                }
                prop_assert_eq!(
                    verify_inclusion(&d[i], s64, s64, &proof, &root),
                    Err(ProofError::IndexOutOfRange)
                );
                prop_assert_eq!(tree.inclusion_proof(s64, s64), None);

                // Consistency between sizes m <= s.
                let m = 1 + pick(b, s);
                let m64 = m as u64;
                let old_root = naive_mth(&d[..m]);
                let proof = tree.consistency_proof(m64, s64).expect("valid consistency request");
                prop_assert_eq!(&proof, &naive_proof(m, &d[..s]));
                prop_assert_eq!(verify_consistency(m64, s64, &old_root, &root, &proof), Ok(()));
                if !proof.is_empty() {
                    let mut bad = proof.clone();
                    let j = pick(a >> 32, bad.len());
                    bad[j] = flip_bit(&bad[j], bit);
                    prop_assert!(verify_consistency(m64, s64, &old_root, &root, &bad).is_err());
                }
                prop_assert!(verify_consistency(m64, s64, &flip_bit(&old_root, bit), &root, &proof).is_err());
                prop_assert!(verify_consistency(m64, s64, &old_root, &flip_bit(&root, bit), &proof).is_err());
                // Wrong old size or wrong new size (with the real roots for those sizes).
                let other = 1 + pick(bit as u64 >> 3, n);
                if other != m && other <= s {
                    let r = tree.root_at(other as u64).expect("prefix");
                    prop_assert!(verify_consistency(other as u64, s64, &r, &root, &proof).is_err());
                }
                if other != s && other >= m {
                    let r = tree.root_at(other as u64).expect("prefix");
                    prop_assert!(verify_consistency(m64, other as u64, &old_root, &r, &proof).is_err());
                }
                if m < s {
                    prop_assert!(verify_consistency(s64, m64, &root, &old_root, &proof).is_err());
                }
            }
        }

        #[test]
        fn prop_truncate_matches_fresh_tree(
            n in 1usize..=1024,
            cut in any::<u64>(),
            extra in 0usize..=300,
            seed in any::<u64>(),
        ) {
            let d = test_leaves(seed, n);
            let m = pick(cut, n + 1);
            let mut tree = tree_of(&d);
            tree.truncate(m as u64);
            let fresh = tree_of(&d[..m]);
            prop_assert_eq!(&tree, &fresh);
            prop_assert_eq!(tree.len(), m as u64);
            prop_assert_eq!(tree.root(), naive_mth(&d[..m]));
            prop_assert_eq!(tree.leaf(m as u64), None);

            let more = test_leaves(seed ^ 0x5555, extra);
            let (mut tree, mut fresh) = (tree, fresh);
            for l in &more {
                tree.push(*l);
                fresh.push(*l);
            }
            prop_assert_eq!(&tree, &fresh);
            let all: Vec<Hash> = d[..m].iter().chain(&more).copied().collect();
            prop_assert_eq!(tree.root(), naive_mth(&all));
            if !all.is_empty() {
                let size = all.len();
                let i = pick(cut >> 20, size);
                prop_assert_eq!(
                    tree.inclusion_proof(i as u64, size as u64),
                    Some(naive_path(i, &all))
                );
                let old = 1 + pick(cut >> 40, size);
                prop_assert_eq!(
                    tree.consistency_proof(old as u64, size as u64),
                    Some(naive_proof(old, &all))
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Verification never panics on arbitrary (untrusted) sizes, indices and proofs.
        #[test]
        fn prop_verify_never_panics(
            a in any::<u64>(),
            b in any::<u64>(),
            small in 0u64..64,
            proof in proptest::collection::vec(any::<[u8; 32]>(), 0..70),
            r1 in any::<[u8; 32]>(),
            r2 in any::<[u8; 32]>(),
        ) {
            for (x, y) in [(a, b), (small, b), (a, small), (small, small + 1), (u64::MAX - 1, u64::MAX)] {
                let _ = verify_inclusion(&r1, x, y, &proof, &r2);
                let _ = verify_consistency(x, y, &r1, &r2, &proof);
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // 4. Exhaustive small trees.
    // ---------------------------------------------------------------------------------------

    #[test]
    fn exhaustive_up_to_64() {
        let d = test_leaves(7, 64);
        let prefix_roots: Vec<Hash> = (0..=64).map(|s| naive_mth(&d[..s])).collect();
        let mut tree = MerkleTree::new();
        assert_eq!(tree.root(), empty_root());
        for n in 1..=64usize {
            tree.push(d[n - 1]);
            let n64 = n as u64;
            assert_eq!(tree.len(), n64);
            assert_eq!(tree.root(), prefix_roots[n]);
            assert_eq!(tree.leaf(n64 - 1), Some(d[n - 1]));
            for (s, want) in prefix_roots.iter().enumerate().take(n + 1) {
                assert_eq!(tree.root_at(s as u64), Some(*want), "root_at({s}) of {n}");
            }
            for i in 0..n {
                let proof = tree.inclusion_proof(i as u64, n64).expect("inclusion");
                assert_eq!(proof, naive_path(i, &d[..n]), "PATH({i}, {n})");
                assert_eq!(verify_inclusion(&d[i], i as u64, n64, &proof, &prefix_roots[n]), Ok(()));
            }
            for m in 1..=n {
                let proof = tree.consistency_proof(m as u64, n64).expect("consistency");
                assert_eq!(proof, naive_proof(m, &d[..n]), "PROOF({m}, {n})");
                assert_eq!(
                    verify_consistency(m as u64, n64, &prefix_roots[m], &prefix_roots[n], &proof),
                    Ok(()),
                    "verify PROOF({m}, {n})"
                );
            }
            assert_eq!(tree.inclusion_proof(n64, n64), None);
            assert_eq!(tree.inclusion_proof(0, n64 + 1), None);
            assert_eq!(tree.consistency_proof(0, n64), None);
            assert_eq!(tree.consistency_proof(n64, n64 + 1), None);
            assert_eq!(tree.consistency_proof(n64, n64 - 1), None);
            assert_eq!(tree.consistency_proof(n64, n64), Some(Vec::new()));
        }
    }

    // ---------------------------------------------------------------------------------------
    // 5. Truncation, edge cases, misc.
    // ---------------------------------------------------------------------------------------

    #[test]
    fn truncate_exhaustive_small() {
        let d = test_leaves(11, 40);
        let extra = test_leaves(12, 43);
        for n in 0..=40usize {
            for m in 0..=n + 2 {
                let mut t = tree_of(&d[..n]);
                t.truncate(m as u64);
                let kept = m.min(n);
                let mut fresh = tree_of(&d[..kept]);
                assert_eq!(t, fresh, "truncate {n} -> {m}");
                assert_eq!(t.root(), naive_mth(&d[..kept]));
                for (j, l) in extra.iter().enumerate().take(n + 3) {
                    t.push(*l);
                    fresh.push(*l);
                    assert_eq!(t, fresh, "truncate {n} -> {m}, then {} pushes", j + 1);
                }
                let all: Vec<Hash> = d[..kept].iter().chain(&extra[..n + 3]).copied().collect();
                assert_eq!(t.root(), naive_mth(&all));
            }
        }
    }

    #[test]
    fn empty_tree() {
        let t = MerkleTree::default();
        assert!(t.is_empty());
        assert_eq!(t.len(), 0);
        assert_eq!(t.root(), empty_root());
        assert_eq!(t.root_at(0), Some(empty_root()));
        assert_eq!(t.root_at(1), None);
        assert_eq!(t.leaf(0), None);
        assert_eq!(t.leaf(u64::MAX), None);
        assert_eq!(t.inclusion_proof(0, 0), None);
        assert_eq!(t.consistency_proof(0, 0), None);
    }

    #[test]
    fn verify_edge_cases() {
        let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
        assert_eq!(verify_consistency(1, 1, &a, &a, &[]), Ok(()));
        assert_eq!(verify_consistency(1, 1, &a, &b, &[]), Err(ProofError::RootMismatch));
        assert_eq!(verify_consistency(1, 1, &a, &a, &[a]), Err(ProofError::WrongProofLength));
        assert_eq!(verify_consistency(2, 1, &a, &a, &[]), Err(ProofError::SizeOutOfRange));
        // Size 0 never verifies (matches the transparency-dev "additional" vectors).
        assert_eq!(verify_consistency(0, 0, &a, &a, &[]), Err(ProofError::SizeOutOfRange));
        assert_eq!(verify_consistency(0, 1, &a, &b, &[]), Err(ProofError::SizeOutOfRange));
        assert_eq!(verify_consistency(1, 2, &a, &b, &[]), Err(ProofError::WrongProofLength));
        assert_eq!(verify_inclusion(&a, 0, 1, &[], &a), Ok(()));
        assert_eq!(verify_inclusion(&a, 0, 1, &[], &b), Err(ProofError::RootMismatch));
        assert_eq!(verify_inclusion(&a, 0, 0, &[], &a), Err(ProofError::IndexOutOfRange));
        assert_eq!(verify_inclusion(&a, u64::MAX, 1, &[], &a), Err(ProofError::IndexOutOfRange));
        assert_eq!(verify_inclusion(&a, 0, 2, &[], &a), Err(ProofError::WrongProofLength));
        assert_eq!(ProofError::RootMismatch.to_string(), "root mismatch");
        let e: Box<dyn std::error::Error> = Box::new(ProofError::WrongProofLength);
        assert_eq!(e.to_string(), "wrong proof length");
    }

    /// The size is bound to a proof only through the root: the path for leaf 0 of 3 leaves has
    /// the same shape as for 4 leaves, so it "verifies" for size 4 against the size-3 root. Safe,
    /// since a (size, root) pair always comes from a signed tree head, but worth knowing.
    #[test]
    fn size_is_bound_by_the_root() {
        let d = test_leaves(3, 4);
        let t = tree_of(&d);
        let proof = t.inclusion_proof(0, 3).expect("proof");
        let root3 = t.root_at(3).expect("root");
        assert_eq!(verify_inclusion(&d[0], 0, 4, &proof, &root3), Ok(()));
        let root4 = t.root_at(4).expect("root");
        assert_eq!(verify_inclusion(&d[0], 0, 4, &proof, &root4), Err(ProofError::RootMismatch));
    }

    #[test]
    fn storage_is_about_two_hashes_per_leaf() {
        let n = 1u64 << 12;
        let mut t = MerkleTree::new();
        for i in 0..n {
            t.push(leaf_hash(&i.to_le_bytes()));
        }
        let stored: usize = t.levels.iter().map(Vec::len).sum();
        assert_eq!(stored as u64, 2 * n - 1);
        assert_eq!(t.levels.len(), 13);
        let bytes = t.memory_bytes();
        assert!(bytes >= stored * 32 && bytes <= 4 * stored * 32 + 4096, "{bytes} bytes");
        t.truncate(n - 1);
        assert_eq!(t.levels.len(), 12);
        assert_eq!(t.root(), naive_mth(&test_leaves_from(&t)));
    }

    fn test_leaves_from(t: &MerkleTree) -> Vec<Hash> {
        (0..t.len()).map(|i| t.leaf(i).expect("leaf")).collect()
    }
}
