//! Cross-checks against an independent implementation of the same specifications: the
//! `signed_note` and `tlog_tiles` crates (Cloudflare's port of Go's sumdb/note and sumdb/tlog).
//! Their tiles use the Go layout (`tile/8/<L>/...`); the contents are the same for height 8.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::Verifier as _;
use signed_note::{Note as TheirNote, Signer as _, StandardSigner, StandardVerifier, VerifierList, Verifiers as _};
use tlog_tiles::{
    Checkpoint as TheirCheckpoint, Hash as TheirHash, HashReader, Tile as TheirTile, TileHashReader,
    TileReader as TheirTileReader,
};

use crate::builder::{Tile, TileBuilder};
use crate::checkpoint::Checkpoint;
use crate::cosignature::Cosigner;
use crate::note::{KeyName, NoteLimits, NoteSigner, NoteText, SignatureType, SignedNote, VerifierKey, key_id};
use crate::testing::{FIXTURE_SIZE, entry, fixture};
use crate::tile::{TileId, TileReader};
use crate::{Hash, proof};

fn name(s: &str) -> KeyName {
    KeyName::new(s).unwrap()
}

/// Their signer for the same seed, through their private-key string format.
fn their_signer(key: &VerifierKey, seed: &[u8; 32]) -> StandardSigner {
    let mut material = vec![0x01];
    material.extend_from_slice(seed);
    let skey = format!("PRIVATE+KEY+{}+{}+{}", key.name(), key.key_id(), BASE64.encode(material));
    StandardSigner::new(&skey).unwrap()
}

fn their_verifiers(vkey: &str) -> VerifierList {
    VerifierList::new(vec![Box::new(StandardVerifier::new(vkey).unwrap())])
}

#[test]
fn key_ids_and_vkeys_agree() {
    for (n, seed) in [("log.example/etl", 1u8), ("example.com/behind-the-sofa", 2), ("a", 3)] {
        let ours = NoteSigner::new(name(n), &[seed; 32]).verifier_key();
        let mut material = vec![0x01];
        material.extend_from_slice(&ours.public_key());
        assert_eq!(signed_note::key_id(n, &material), ours.key_id().0, "{n}");
        let theirs = StandardVerifier::new(&ours.to_string()).unwrap();
        assert_eq!(signed_note::Verifier::key_id(&theirs), ours.key_id().0);
        // Type 0x04 ids follow the same formula with the other type byte.
        let cosigner = Cosigner::new(name(n), &[seed; 32]).verifier_key();
        material[0] = 0x04;
        assert_eq!(signed_note::key_id(n, &material), cosigner.key_id().0);
        assert_eq!(key_id(&name(n), SignatureType::Cosignature, &ours.public_key()), cosigner.key_id());
    }
}

#[test]
fn note_signatures_verify_both_ways() {
    let seed = [7; 32];
    let signer = NoteSigner::new(name("log.example/etl"), &seed);
    let vkey = signer.verifier_key();
    let text = NoteText::new("log.example/etl\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n".into()).unwrap();

    // Ours → theirs.
    let ours = SignedNote::new(text.clone(), signer.sign(&text));
    let parsed = TheirNote::from_bytes(&ours.to_bytes()).unwrap();
    let (verified, _) = parsed.verify(&their_verifiers(&vkey.to_string())).unwrap();
    assert_eq!(verified.len(), 1);

    // Theirs → ours.
    let mut theirs = TheirNote::new(text.as_str().as_bytes(), &[]).unwrap();
    let their_signer = their_signer(&vkey, &seed);
    assert_eq!(their_signer.key_id(), vkey.key_id().0);
    theirs.add_sigs(&[&their_signer]).unwrap();
    let bytes = theirs.to_bytes();
    assert_eq!(bytes, ours.to_bytes(), "Ed25519 is deterministic: the same note byte for byte");
    let note = SignedNote::parse(&bytes, NoteLimits::DEFAULT).unwrap();
    assert!(note.verify(&[vkey]).is_ok());

    // A bad signature by a known key is rejected by both.
    let mut tampered = bytes.clone();
    let at = tampered.len() - 10;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    assert!(
        TheirNote::from_bytes(&tampered).unwrap().verify(&their_verifiers(&signer.verifier_key().to_string())).is_err()
    );
    assert!(SignedNote::parse(&tampered, NoteLimits::DEFAULT).unwrap().verify(&[signer.verifier_key()]).is_err());
}

/// A type-0x04 verifier written here from the cosignature spec, plugged into their note
/// verification (their crate has none).
struct SpecCosignatureVerifier {
    name: String,
    id: u32,
    key: ed25519_dalek::VerifyingKey,
}

impl signed_note::Verifier for SpecCosignatureVerifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.id
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(sig) = <[u8; 72]>::try_from(sig) else { return false };
        let timestamp = u64::from_be_bytes(sig[..8].try_into().unwrap());
        let mut message = format!("cosignature/v1\ntime {timestamp}\n").into_bytes();
        message.extend_from_slice(msg);
        let signature = ed25519_dalek::Signature::from_slice(&sig[8..]).unwrap();
        self.key.verify(&message, &signature).is_ok()
    }
}

#[test]
fn cosignatures_verify_with_their_note_verification() {
    let witness = Cosigner::new(name("witness.example/w1"), &[8; 32]);
    let vkey = witness.verifier_key();
    let text = Checkpoint::new(name("log.example/etl"), 9, [4; 32]).to_text();
    let note = SignedNote::new(text.clone(), witness.cosign(&text, 1_700_000_000).unwrap());
    let key = ed25519_dalek::VerifyingKey::from_bytes(&vkey.public_key()).unwrap();
    let verifier = SpecCosignatureVerifier { name: vkey.name().to_string(), id: vkey.key_id().0, key };
    let list = VerifierList::new(vec![Box::new(verifier)]);
    assert!(list.verifier(vkey.name().as_str(), vkey.key_id().0).is_ok());
    let (verified, _) = TheirNote::from_bytes(&note.to_bytes()).unwrap().verify(&list).unwrap();
    assert_eq!(verified.len(), 1);
}

#[test]
fn checkpoint_text_agrees() {
    let root: Hash = core::array::from_fn(|i| i as u8);
    let ours = Checkpoint::new(name("log.example/etl"), 1_234_567, root);
    let theirs = TheirCheckpoint::new("log.example/etl", 1_234_567, TheirHash(root), "").unwrap();
    assert_eq!(ours.to_text().as_str().as_bytes(), theirs.to_bytes());
    let with_extension = format!("{}ext\n", ours.to_text().as_str());
    let parsed = TheirCheckpoint::from_bytes(with_extension.as_bytes()).unwrap();
    let mine = Checkpoint::parse(&NoteText::new(with_extension).unwrap()).unwrap();
    assert_eq!((parsed.origin(), parsed.size(), parsed.hash().0), (mine.origin().as_str(), mine.size(), root));
    assert_eq!(parsed.extension(), "ext\n");
}

/// Their stored-hash layout for the fixture's leaves.
struct StoredHashes(Vec<TheirHash>);

impl HashReader for StoredHashes {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<TheirHash>, tlog_tiles::Error> {
        indexes.iter().map(|&i| self.0.get(i as usize).copied().ok_or(tlog_tiles::Error::IndexesNotInTree)).collect()
    }
}

fn stored_hashes(size: u64) -> StoredHashes {
    let mut stored = StoredHashes(Vec::new());
    for i in 0..size {
        let new = tlog_tiles::stored_hashes(i, &entry(i), &stored).unwrap();
        stored.0.extend(new);
    }
    stored
}

fn their_path(tile: &TheirTile) -> String {
    tile.path().strip_prefix("tile/8/").map(|rest| format!("tile/{rest}")).unwrap()
}

#[test]
fn tiles_agree_in_paths_and_contents() {
    let size = 65_536 + 256 * 3 + 7;
    let stored = stored_hashes(size);
    let (mut builder, mut ours) = (TileBuilder::new(), Vec::<Tile>::new());
    for i in 0..size {
        builder.push(evidenceos_core::merkle::leaf_hash(&entry(i)), &mut ours);
    }
    ours.extend(builder.partial_tiles());
    let theirs = TheirTile::new_tiles(8, 0, size);
    assert_eq!(theirs.len(), ours.len());
    let mut their_tiles: Vec<(String, Vec<u8>)> =
        theirs.iter().map(|t| (their_path(t), t.read_data(&stored).unwrap())).collect();
    let mut our_tiles: Vec<(String, Vec<u8>)> = ours.into_iter().map(|t| (t.id.path(), t.data)).collect();
    their_tiles.sort();
    our_tiles.sort();
    assert_eq!(our_tiles, their_tiles);
    assert_eq!(tlog_tiles::tree_hash(size, &stored).unwrap().0, builder.root());
}

/// Our tiles, served to their tile-verifying hash reader.
struct OurTiles;

impl TheirTileReader for OurTiles {
    fn height(&self) -> u8 {
        8
    }

    fn read_tiles(&self, tiles: &[TheirTile]) -> Result<Vec<Vec<u8>>, tlog_tiles::Error> {
        let mut reader = fixture().store.reader();
        let read = |t: &TheirTile| {
            let id = TileId::new(t.level(), t.level_index(), t.width() as u16).unwrap();
            reader.read_tile(id).map_err(tlog_tiles::Error::InvalidInput)
        };
        tiles.iter().map(read).collect()
    }

    fn save_tiles(&self, _: &[TheirTile], _: &[Vec<u8>]) {}
}

#[test]
fn proofs_agree_and_our_tiles_pass_their_tile_checks() {
    let f = fixture();
    let cases = [(0, 1), (1, 2), (255, 256), (256, 257), (1_000, 65_536), (65_535, 65_537), (12_345, FIXTURE_SIZE)];
    for (index, size) in cases {
        let root = f.tree.root_at(size).unwrap();
        let theirs = TileHashReader::new(size, TheirHash(root), &OurTiles);
        let their_proof = tlog_tiles::prove_record(size, index, &theirs).unwrap();
        let our_proof = proof::inclusion_proof(&mut f.store.reader(), index, size).unwrap();
        assert_eq!(our_proof, their_proof.iter().map(|h| h.0).collect::<Vec<_>>(), "inclusion {index} in {size}");
        let leaf = TheirHash(evidenceos_core::merkle::leaf_hash(&entry(index)));
        let ours_as_theirs: Vec<TheirHash> = our_proof.iter().copied().map(TheirHash).collect();
        tlog_tiles::check_record(&ours_as_theirs, size, TheirHash(root), index, leaf).unwrap();

        let old = index + 1;
        let their_proof = tlog_tiles::prove_tree(size, old, &theirs).unwrap();
        let our_proof = proof::consistency_proof(&mut f.store.reader(), old, size).unwrap();
        assert_eq!(our_proof, their_proof.iter().map(|h| h.0).collect::<Vec<_>>(), "consistency {old} -> {size}");
        let old_root = TheirHash(f.tree.root_at(old).unwrap());
        let ours_as_theirs: Vec<TheirHash> = our_proof.iter().copied().map(TheirHash).collect();
        tlog_tiles::check_tree(&ours_as_theirs, size, TheirHash(root), old, old_root).unwrap();
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn random_proofs_agree(size in 1..=FIXTURE_SIZE, seed in proptest::prelude::any::<u64>()) {
        let f = fixture();
        let (index, old) = (seed % size, 1 + (seed >> 20) % size);
        let root = TheirHash(f.tree.root_at(size).unwrap());
        let theirs = TileHashReader::new(size, root, &OurTiles);
        let their_inclusion: Vec<Hash> = tlog_tiles::prove_record(size, index, &theirs).unwrap().iter().map(|h| h.0).collect();
        proptest::prop_assert_eq!(proof::inclusion_proof(&mut f.store.reader(), index, size).unwrap(), their_inclusion);
        let their_consistency: Vec<Hash> = tlog_tiles::prove_tree(size, old, &theirs).unwrap().iter().map(|h| h.0).collect();
        proptest::prop_assert_eq!(proof::consistency_proof(&mut f.store.reader(), old, size).unwrap(), their_consistency);
    }
}
