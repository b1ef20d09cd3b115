//! The Evidence Transparency Log as the kernel sees it: the Merkle tree over `etl.log`, which
//! prefix of it is durable, and signed tree heads. Reads only ever see the durable prefix.

use crate::error::KernelError;
use crate::hash::{Hash, domain_hash};
use crate::keys::{KeyId, Keyring, verify_signature};
pub use crate::leaf::LeafLocation;
use crate::merkle::MerkleTree;
use crate::request::{CapsuleBytes, Response, SignedTreeHead};

/// The 32-byte digest an STH signature covers: H("evidenceos:sth:v1", be64 size ‖ root).
/// Largest ETL leaf: what a C2SP entry bundle can hold (a big-endian u16 length, SPEC §10). The
/// request limits keep every leaf the kernel writes under it, so none is logged that could not
/// be published.
pub const MAX_LEAF_BYTES: usize = 65_535;

pub fn sth_digest(tree_size: u64, root_hash: &Hash) -> Hash {
    domain_hash("evidenceos:sth:v1", &[&tree_size.to_be_bytes(), root_hash])
}

/// The digest a revocation feed signature covers (SPEC §3):
/// H("evidenceos:revocations:v1", Σ[be64 len(id) ‖ id ‖ be64 ts ‖ be64 len(reason) ‖ reason]
///   ‖ be64 tree_size ‖ root ‖ be64 len(key_id) ‖ key_id), with id the revoked capsule hash.
pub fn revocation_feed_digest(entries: &[crate::request::RevocationEntry], sth: &SignedTreeHead) -> Hash {
    let mut body = Vec::with_capacity(entries.len() * 96 + 80);
    for entry in entries {
        body.extend_from_slice(&(entry.capsule_hash.len() as u64).to_be_bytes());
        body.extend_from_slice(&entry.capsule_hash);
        body.extend_from_slice(&entry.timestamp_unix.to_be_bytes());
        body.extend_from_slice(&(entry.reason.len() as u64).to_be_bytes());
        body.extend_from_slice(entry.reason.as_bytes());
    }
    body.extend_from_slice(&sth.tree_size.to_be_bytes());
    body.extend_from_slice(&sth.root_hash);
    body.extend_from_slice(&(sth.key_id.0.len() as u64).to_be_bytes());
    body.extend_from_slice(&sth.key_id.0);
    domain_hash("evidenceos:revocations:v1", &[&body])
}

pub fn sign_tree_head(keyring: &Keyring, tree_size: u64, root_hash: Hash) -> SignedTreeHead {
    let signature = keyring.sign(&sth_digest(tree_size, &root_hash));
    SignedTreeHead { tree_size, root_hash, key_id: keyring.active_key_id(), signature }
}

/// Checks an STH against the raw public key that `key_id` names.
pub fn verify_tree_head(public_key: &[u8; 32], sth: &SignedTreeHead) -> bool {
    KeyId::of_public_key(public_key) == sth.key_id
        && verify_signature(public_key, &sth_digest(sth.tree_size, &sth.root_hash), &sth.signature)
}

#[derive(Debug, Default)]
pub struct Etl {
    tree: MerkleTree,
    /// Byte offset in `etl.log` of each leaf's frame: replies name where a capsule is instead of
    /// the kernel keeping its bytes (8 bytes a leaf).
    offsets: Vec<u64>,
    /// Length of `etl.log` once every leaf appended so far is written.
    end: u64,
    /// Leaves known to be on stable storage; everything signed or proven stays within this.
    durable_size: u64,
    /// The last STH handed out; Ed25519 is deterministic, the cache only saves the signing cost.
    sth_cache: Option<SignedTreeHead>,
}

/// Why a leaf read for a reply is not the leaf the kernel named.
#[derive(Debug)]
pub enum LeafReadError {
    Io(std::io::Error),
    Damaged(crate::frame::DamageReason),
    /// The frame is intact but holds another payload: `etl.log` changed under the daemon.
    NotTheCapsule,
}

impl std::fmt::Display for LeafReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(error) => write!(f, "read failed: {error}"),
            Self::Damaged(reason) => write!(f, "damaged frame: {reason}"),
            Self::NotTheCapsule => f.write_str("the frame holds another payload than the capsule named"),
        }
    }
}

/// Reads the leaf at `at` with one positional read (`read_exact_at(offset, buffer)`), checks its
/// frame and that it is the capsule named, and returns its payload.
pub fn read_leaf(
    at: &LeafLocation,
    read_exact_at: impl FnOnce(u64, &mut [u8]) -> std::io::Result<()>,
) -> Result<Vec<u8>, LeafReadError> {
    let mut frame = vec![0; at.len as usize + crate::frame::FRAME_OVERHEAD];
    read_exact_at(at.offset, &mut frame).map_err(LeafReadError::Io)?;
    let payload = crate::frame::decode_record(&frame).map_err(LeafReadError::Damaged)?;
    if payload.len() != at.len as usize || crate::capsule::capsule_hash(payload) != at.capsule_hash {
        return Err(LeafReadError::NotTheCapsule);
    }
    Ok(payload.to_vec())
}

/// Reads the capsule `response` names in `etl.log`, if any, with [`read_leaf`]: what a runtime
/// does to a reply before it leaves the daemon.
pub fn read_capsule(
    response: &mut Response,
    read_exact_at: impl FnOnce(u64, &mut [u8]) -> std::io::Result<()>,
) -> Result<(), LeafReadError> {
    let capsule = match response {
        Response::Capsule { capsule, .. } => capsule,
        Response::FetchedCapsule(fetched) => &mut fetched.capsule,
        _ => return Ok(()),
    };
    if let CapsuleBytes::InLog(at) = capsule {
        *capsule = CapsuleBytes::Read(read_leaf(at, read_exact_at)?);
    }
    Ok(())
}

impl Etl {
    /// A log whose existing leaves are already durable (recovery): `offsets` holds each leaf's
    /// frame offset in `etl.log`, which is `end` bytes long.
    pub fn recovered(tree: MerkleTree, offsets: Vec<u64>, end: u64) -> Self {
        assert_eq!(tree.len(), offsets.len() as u64, "an offset for every leaf");
        assert!(offsets.last().is_none_or(|last| *last < end), "every leaf ends within the log");
        Self { durable_size: 0, tree, offsets, end, sth_cache: None }
    }

    /// Adds a leaf that is not yet durable, framing it onto `frames` (the bytes the next write
    /// of `etl.log` appends, in leaf order); returns its index.
    pub fn append(&mut self, payload: &[u8], frames: &mut Vec<u8>) -> u64 {
        // The input limits keep every leaf under it (capsule tests); past it is a kernel bug.
        assert!(payload.len() <= MAX_LEAF_BYTES, "ETL leaf of {} bytes cannot be published", payload.len());
        let index = self.tree.len();
        self.tree.push(crate::merkle::leaf_hash(payload));
        self.offsets.push(self.end);
        self.end += (payload.len() + crate::frame::FRAME_OVERHEAD) as u64;
        crate::frame::encode_into(payload, frames);
        index
    }

    /// Where the durable capsule leaf `index` is, for a reply to read it.
    pub fn capsule_location(&self, index: u64, capsule_hash: Hash) -> Option<LeafLocation> {
        if index >= self.durable_size {
            return None;
        }
        let at = usize::try_from(index).ok()?;
        let offset = self.offsets[at];
        let next = self.offsets.get(at + 1).copied().unwrap_or(self.end);
        let len = u32::try_from(next - offset).ok()? - crate::frame::FRAME_OVERHEAD as u32;
        Some(LeafLocation { index, offset, len, capsule_hash })
    }

    /// Length of `etl.log` once every appended leaf is written.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// All leaves up to `size` are now on stable storage.
    pub fn mark_durable(&mut self, size: u64) {
        assert!(size >= self.durable_size, "durable size never shrinks");
        assert!(size <= self.tree.len(), "cannot be durable beyond the tree");
        self.durable_size = size;
    }

    pub fn durable_size(&self) -> u64 {
        self.durable_size
    }

    /// Total leaves, durable or not.
    pub fn len(&self) -> u64 {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    pub fn root_at(&self, size: u64) -> Option<Hash> {
        self.tree.root_at(size)
    }

    /// STH for the durable size, signed by the active key.
    pub fn signed_tree_head(&mut self, keyring: &Keyring) -> SignedTreeHead {
        let size = self.durable_size;
        if let Some(sth) = &self.sth_cache
            && sth.tree_size == size
            && sth.key_id == keyring.active_key_id()
        {
            return sth.clone();
        }
        let root = self.tree.root_at(size).expect("durable size is within the tree");
        let sth = sign_tree_head(keyring, size, root);
        self.sth_cache = Some(sth.clone());
        sth
    }

    pub fn inclusion_proof(&self, leaf_index: u64) -> Result<Response, KernelError> {
        let size = self.durable_size;
        if leaf_index >= size {
            return Err(KernelError::not_found(format!("leaf {leaf_index} is not in the log (size {size})")));
        }
        let path = self.tree.inclusion_proof(leaf_index, size).expect("index checked against durable size");
        Ok(Response::InclusionProof {
            leaf_index,
            tree_size: size,
            leaf_hash: self.tree.leaf(leaf_index).expect("index checked"),
            path,
            root_hash: self.tree.root_at(size).expect("size checked"),
        })
    }

    /// RFC 9162 consistency proof; `second` 0 means the durable size.
    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Response, KernelError> {
        let second = if second == 0 { self.durable_size } else { second };
        if first > self.durable_size {
            return Err(KernelError::not_found(format!(
                "tree size {first} is beyond the log (size {})",
                self.durable_size
            )));
        }
        if first == 0 {
            return Err(KernelError::invalid_argument("first_tree_size must be at least 1"));
        }
        if first > second {
            return Err(KernelError::invalid_argument("first_tree_size exceeds second_tree_size"));
        }
        if second > self.durable_size {
            return Err(KernelError::not_found(format!(
                "tree size {second} is beyond the log (size {})",
                self.durable_size
            )));
        }
        Ok(Response::ConsistencyProof {
            first_tree_size: first,
            second_tree_size: second,
            first_root_hash: self.tree.root_at(first).expect("checked"),
            second_root_hash: self.tree.root_at(second).expect("checked"),
            path: self.tree.consistency_proof(first, second).expect("sizes checked"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyFile, key_file_name, key_id_for_seed, public_key_for_seed};
    use crate::merkle::{verify_consistency, verify_inclusion};

    fn vector() -> serde_json::Value {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors/etl_sth.json"))
            .expect("shared/vectors/etl_sth.json");
        serde_json::from_str(&text).unwrap()
    }

    fn keyring_from_hex(seed_hex: &str) -> Keyring {
        let seed: [u8; 32] = hex::decode(seed_hex).unwrap().try_into().unwrap();
        let id = key_id_for_seed(&seed);
        Keyring::from_files(&[KeyFile { name: key_file_name(&id), bytes: seed.to_vec() }], id.to_hex().as_bytes())
            .unwrap()
    }

    #[test]
    fn signed_tree_heads_match_the_vector_byte_for_byte() {
        let vector = vector();
        let keyring = keyring_from_hex(vector["signing_seed_hex"].as_str().unwrap());
        assert_eq!(keyring.active_key_id().to_hex(), vector["key_id_hex"].as_str().unwrap());
        let trees = vector["trees"].as_array().unwrap();
        assert_eq!(trees.len(), 8);
        for tree in trees {
            let mut etl = Etl::default();
            for entry in tree["entries_utf8"].as_array().unwrap() {
                etl.append(entry.as_str().unwrap().as_bytes(), &mut Vec::new());
            }
            let size = tree["tree_size"].as_u64().unwrap();
            etl.mark_durable(size);
            let root = etl.root_at(size).unwrap();
            assert_eq!(hex::encode(root), tree["root_hex"].as_str().unwrap());
            assert_eq!(hex::encode(sth_digest(size, &root)), tree["sth_digest_hex"].as_str().unwrap());
            let sth = etl.signed_tree_head(&keyring);
            assert_eq!(hex::encode(sth.signature), tree["sth_signature_hex"].as_str().unwrap());
            let public = keyring.public_key(&sth.key_id).unwrap();
            assert_eq!(hex::encode(public), vector["public_key_hex"].as_str().unwrap());
            assert!(verify_tree_head(&public, &sth));
        }
    }

    /// The kernel appends each leaf to etl.log as one frame (`frame::encode_into`), so a log of
    /// the vector's first three entries holds exactly the vector's bytes.
    #[test]
    fn the_log_of_three_entries_matches_the_vector_byte_for_byte() {
        let vector = vector();
        let tree = &vector["trees"][3];
        assert_eq!(tree["tree_size"].as_u64(), Some(3));
        let mut log = Vec::new();
        for entry in tree["entries_utf8"].as_array().unwrap() {
            crate::frame::encode_into(entry.as_str().unwrap().as_bytes(), &mut log);
        }
        assert_eq!(hex::encode(&log), vector["etl_log_hex_for_3_entries"].as_str().unwrap());
        let scanned = crate::frame::scan(&log, 0).unwrap();
        assert_eq!(scanned.records.len(), 3, "and reads back as three leaves");
    }

    #[test]
    fn reads_never_see_beyond_the_durable_size() {
        let keyring = keyring_from_hex(&"11".repeat(32));
        let mut etl = Etl::default();
        for n in 0..5 {
            etl.append(format!("leaf {n}").as_bytes(), &mut Vec::new());
        }
        etl.mark_durable(3);
        assert_eq!(etl.signed_tree_head(&keyring).tree_size, 3);
        assert_eq!(etl.inclusion_proof(3).unwrap_err().code, crate::error::ErrorCode::NotFound);
        assert_eq!(etl.consistency_proof(1, 4).unwrap_err().code, crate::error::ErrorCode::NotFound);
        assert_eq!(etl.consistency_proof(0, 3).unwrap_err().code, crate::error::ErrorCode::InvalidArgument);
        assert_eq!(etl.consistency_proof(3, 2).unwrap_err().code, crate::error::ErrorCode::InvalidArgument);
    }

    #[test]
    fn proofs_verify_against_the_signed_root() {
        let seed = [0x22; 32];
        let keyring = keyring_from_hex(&hex::encode(seed));
        let mut etl = Etl::default();
        for n in 0..13 {
            etl.append(format!("leaf {n}").as_bytes(), &mut Vec::new());
        }
        etl.mark_durable(13);
        let sth = etl.signed_tree_head(&keyring);
        assert!(verify_tree_head(&public_key_for_seed(&seed), &sth));
        let Response::InclusionProof { leaf_index, tree_size, leaf_hash, path, root_hash } =
            etl.inclusion_proof(6).unwrap()
        else {
            panic!("inclusion proof expected")
        };
        assert_eq!(root_hash, sth.root_hash);
        verify_inclusion(&leaf_hash, leaf_index, tree_size, &path, &root_hash).unwrap();
        let Response::ConsistencyProof { first_tree_size, second_tree_size, first_root_hash, second_root_hash, path } =
            etl.consistency_proof(5, 0).unwrap()
        else {
            panic!("consistency proof expected")
        };
        assert_eq!(second_tree_size, 13);
        verify_consistency(first_tree_size, second_tree_size, &first_root_hash, &second_root_hash, &path).unwrap();
    }

    #[test]
    fn a_durable_capsule_is_read_back_from_its_frame_and_checked() {
        let (mut etl, mut log) = (Etl::default(), Vec::new());
        let leaves: Vec<Vec<u8>> = (0..4).map(|n| format!("capsule {n}").repeat(n + 1).into_bytes()).collect();
        for leaf in &leaves {
            etl.append(leaf, &mut log);
        }
        assert_eq!(etl.end(), log.len() as u64, "the offsets follow the frames written");
        let hash = |n: usize| crate::capsule::capsule_hash(&leaves[n]);
        assert_eq!(etl.capsule_location(2, hash(2)), None, "not durable yet");
        etl.mark_durable(4);
        let read = |at: &LeafLocation, log: &[u8]| {
            read_leaf(at, |offset, buf| {
                let start = offset as usize;
                buf.copy_from_slice(log.get(start..start + buf.len()).ok_or(std::io::ErrorKind::UnexpectedEof)?);
                Ok(())
            })
        };
        for (n, leaf) in leaves.iter().enumerate() {
            let at = etl.capsule_location(n as u64, hash(n)).unwrap();
            assert_eq!(&read(&at, &log).unwrap(), leaf, "leaf {n}");
        }
        let last = etl.capsule_location(3, hash(3)).unwrap();
        let mut flipped = log.clone();
        flipped[last.offset as usize + 5] ^= 1;
        assert!(matches!(read(&last, &flipped), Err(LeafReadError::Damaged(_))));
        let other = etl.capsule_location(3, hash(2)).unwrap();
        assert!(matches!(read(&other, &log), Err(LeafReadError::NotTheCapsule)));
        assert!(matches!(read(&last, &log[..log.len() - 1]), Err(LeafReadError::Io(_))));
    }
}
