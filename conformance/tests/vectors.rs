//! Every vector through the MemDisk reference: transcript and final files snapshot-tested, plus
//! checks of what the snapshots must show (durability order, verifiable STHs and proofs) and the
//! shared ETL vector.

use std::collections::BTreeSet;
use std::path::Path;

use evidenceos_conformance::{ReferenceRun, StepRequest, VECTORS_DIR, Vector, load_dir, run_reference};
use evidenceos_core::etl::{revocation_feed_digest, verify_tree_head};
use evidenceos_core::frame;
use evidenceos_core::hash::sha256;
use evidenceos_core::keys::{public_key_for_seed, verify_signature};
use evidenceos_core::merkle::{MerkleTree, leaf_hash, verify_consistency, verify_inclusion};
use evidenceos_core::{Effect, FileId, Notification, Output, Response};

const SHARED_ETL_VECTOR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors/etl_sth.json");
const SNAPSHOTS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots");

fn vectors() -> Vec<Vector> {
    let vectors = load_dir(Path::new(VECTORS_DIR)).unwrap_or_else(|e| panic!("{e}"));
    assert!(vectors.len() >= 4, "expected at least 4 vectors in {VECTORS_DIR}, found {}", vectors.len());
    vectors
}

fn reference_runs() -> Vec<ReferenceRun> {
    vectors().iter().map(|vector| run_reference(vector).unwrap_or_else(|e| panic!("{e}"))).collect()
}

#[test]
fn every_vector_matches_its_snapshots() {
    for run in reference_runs() {
        let name = &run.vector.name;
        let mut settings = insta::Settings::clone_current();
        settings.set_description(format!("vectors/{name}.json: {}", run.vector.description));
        settings.set_omit_expression(true);
        settings.bind(|| {
            insta::assert_snapshot!(format!("{name}_transcript"), run.transcript());
            insta::assert_snapshot!(format!("{name}_files"), run.files());
        });
    }
}

#[test]
fn every_snapshot_belongs_to_a_vector() {
    let expected: BTreeSet<String> = vectors()
        .iter()
        .flat_map(|v| ["transcript", "files"].map(|kind| format!("vectors__{}_{kind}.snap", v.name)))
        .collect();
    let stored: BTreeSet<String> = std::fs::read_dir(SNAPSHOTS_DIR)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("vectors__") && name.ends_with(".snap"))
        .collect();
    let orphans: Vec<&String> = stored.difference(&expected).collect();
    assert!(orphans.is_empty(), "snapshots without a vector (delete them): {orphans:?}");
}

/// Queries are answered at once; accepted commands only after the syncs that make their journal
/// record (and leaves) durable; refused commands without writing anything, except a failed
/// execution, whose charge and release are journaled before the refusal is answered.
#[test]
fn replies_follow_the_durability_rules() {
    let mut commands_checked = 0;
    for run in reference_runs() {
        for (index, (step, outputs)) in run.vector.steps.iter().zip(&run.steps).enumerate() {
            let context = format!("{} step {index}", run.vector.name);
            let reply_at = outputs
                .iter()
                .position(|o| matches!(o, Output::Reply(id, _) if id.0 == index as u64))
                .unwrap_or_else(|| panic!("{context}: no reply"));
            let before = &outputs[..reply_at];
            let synced = |file: FileId| {
                before.iter().any(|o| matches!(o, Output::Effect(_, Effect::Sync { file: f }) if *f == file))
            };
            let wrote = before.iter().any(|o| matches!(o, Output::Effect(..)));
            match (&step.request, &run.replies[index]) {
                (request, _) if !request.is_command() => assert_eq!(reply_at, 0, "{context}: a query waited"),
                // An execution whose claim code failed is refused but changes state (what it
                // saw is charged, its reservation released): journaled, durable, no leaves.
                (StepRequest::ExecuteClaimV2 { .. }, Err(_)) if wrote => {
                    assert!(synced(FileId::Journal), "{context}: refusal answered before its journal sync");
                    let leaves =
                        before.iter().any(|o| matches!(o, Output::Effect(_, Effect::Append { file: FileId::Etl, .. })));
                    assert!(!leaves, "{context}: a refused execution appended leaves");
                }
                (_, Err(_)) => assert!(!wrote, "{context}: a refused command wrote {before:?}"),
                (_, Ok(response)) => {
                    commands_checked += 1;
                    assert!(synced(FileId::Journal), "{context}: answered before its journal sync");
                    let appends_leaves = matches!(response, Response::Executed(_) | Response::Revoked { .. });
                    let appended =
                        before.iter().any(|o| matches!(o, Output::Effect(_, Effect::Append { file: FileId::Etl, .. })));
                    assert_eq!(appends_leaves, appended, "{context}: ETL appends before {response:?}");
                    if appended {
                        assert!(synced(FileId::Etl), "{context}: leaf answered before the ETL sync");
                    }
                }
            }
        }
    }
    assert!(commands_checked > 20, "only {commands_checked} accepted commands checked");
}

/// Root of a tree over `leaves`, computed independently of the kernel's ETL.
fn merkle_root(leaves: &[Vec<u8>]) -> [u8; 32] {
    let mut tree = MerkleTree::new();
    for leaf in leaves {
        tree.push(leaf_hash(leaf));
    }
    tree.root()
}

/// The leaves of the run's final `etl.log`.
fn etl_leaves(run: &ReferenceRun) -> Vec<Vec<u8>> {
    let bytes = run.disk.contents(FileId::Etl);
    let scan = frame::scan(bytes, 0).unwrap_or_else(|e| panic!("{}: etl.log: {e:?}", run.vector.name));
    assert_eq!(scan.valid_len, bytes.len() as u64, "{}: etl.log has a torn tail", run.vector.name);
    scan.records.iter().map(|record| record.payload.to_vec()).collect()
}

/// Every STH verifies under the vector's key, and every proof verifies against the logged leaves
/// and the STH of the same size. (Which leaf is which is checked for capsules below.)
#[test]
fn tree_heads_and_proofs_verify() {
    let mut verified = 0;
    for run in reference_runs() {
        let public_key = public_key_for_seed(&run.vector.signing_seed);
        let leaves = etl_leaves(&run);
        let mut roots = std::collections::BTreeMap::new();
        for reply in run.replies.iter().flatten() {
            if let Response::SignedTreeHead(sth) = reply {
                assert!(verify_tree_head(&public_key, sth), "{}: STH {sth:?} does not verify", run.vector.name);
                roots.insert(sth.tree_size, sth.root_hash);
                verified += 1;
            }
        }
        for reply in run.replies.iter().flatten() {
            match reply {
                Response::InclusionProof { leaf_index, tree_size, leaf_hash: hash, path, root_hash } => {
                    assert_eq!(*hash, leaf_hash(&leaves[*leaf_index as usize]));
                    verify_inclusion(hash, *leaf_index, *tree_size, path, root_hash).unwrap();
                    if let Some(root) = roots.get(tree_size) {
                        assert_eq!(root, root_hash, "{}: proof root differs from the STH", run.vector.name);
                    }
                    verified += 1;
                }
                Response::ConsistencyProof {
                    first_tree_size,
                    second_tree_size,
                    first_root_hash,
                    second_root_hash,
                    path,
                } => {
                    verify_consistency(*first_tree_size, *second_tree_size, first_root_hash, second_root_hash, path)
                        .unwrap();
                    for (size, root) in [(first_tree_size, first_root_hash), (second_tree_size, second_root_hash)] {
                        if let Some(signed) = roots.get(size) {
                            assert_eq!(signed, root, "{}: consistency root differs from the STH", run.vector.name);
                        }
                    }
                    verified += 1;
                }
                _ => {}
            }
        }
    }
    assert!(verified >= 20, "only {verified} STHs and proofs verified");
}

/// What the claim vectors answer holds together: every capsule an execution reported is the
/// logged leaf at its index and is what GetCapsule and FetchCapsule later serve; fetched capsules
/// verify against their signed head; revocation feeds and notifications are signed.
#[test]
fn capsules_and_revocation_feeds_verify() {
    let (mut capsules, mut fetched_checked, mut feeds) = (0, 0, 0);
    for run in reference_runs() {
        let name = &run.vector.name;
        let public_key = public_key_for_seed(&run.vector.signing_seed);
        let leaves = etl_leaves(&run);
        let mut executed = std::collections::BTreeMap::new();
        for reply in run.replies.iter().flatten() {
            if let Response::Executed(execution) = reply {
                let leaf = &leaves[execution.etl_index as usize];
                assert_eq!(sha256(leaf), execution.capsule_hash, "{name}: capsule at {}", execution.etl_index);
                executed.insert(execution.capsule_hash, execution.etl_index);
                capsules += 1;
            }
        }
        for reply in run.replies.iter().flatten() {
            match reply {
                Response::Capsule { capsule, capsule_hash, etl_index } => {
                    assert_eq!(executed.get(capsule_hash), Some(etl_index), "{name}: served an unreported capsule");
                    assert_eq!(
                        Some(&leaves[*etl_index as usize][..]),
                        capsule.as_read(),
                        "{name}: capsule {etl_index}"
                    );
                }
                Response::FetchedCapsule(f) => {
                    assert_eq!(
                        executed.get(&f.capsule_hash),
                        Some(&f.etl_index),
                        "{name}: fetched an unreported capsule"
                    );
                    let capsule = f.capsule.as_read().expect("read from etl.log");
                    assert_eq!(leaves[f.etl_index as usize], capsule, "{name}: fetched capsule {}", f.etl_index);
                    assert_eq!(f.leaf_hash, leaf_hash(capsule));
                    assert!(verify_tree_head(&public_key, &f.sth), "{name}: fetched capsule's STH");
                    verify_inclusion(&f.leaf_hash, f.etl_index, f.sth.tree_size, &f.inclusion_path, &f.sth.root_hash)
                        .unwrap();
                    let old_size = f.etl_index + 1;
                    let old_root = merkle_root(&leaves[..old_size as usize]);
                    verify_consistency(old_size, f.sth.tree_size, &old_root, &f.sth.root_hash, &f.consistency_path)
                        .unwrap();
                    fetched_checked += 1;
                }
                Response::RevocationFeed(feed) => {
                    assert!(verify_tree_head(&public_key, &feed.sth), "{name}: feed STH");
                    let digest = revocation_feed_digest(&feed.entries, &feed.sth);
                    assert!(verify_signature(&public_key, &digest, &feed.signature), "{name}: feed signature");
                    feeds += 1;
                }
                _ => {}
            }
        }
        let notifications = run.steps.iter().flatten().chain(&run.shutdown).filter_map(|output| match output {
            Output::Notify(Notification::Revocation(feed)) => Some(feed),
            _ => None,
        });
        for feed in notifications {
            let digest = revocation_feed_digest(&feed.entries, &feed.sth);
            assert!(verify_signature(&public_key, &digest, &feed.signature), "{name}: notification signature");
            feeds += 1;
        }
    }
    assert!(capsules >= 7, "only {capsules} executions checked");
    assert!(fetched_checked >= 4, "only {fetched_checked} fetched capsules checked");
    assert!(feeds >= 3, "only {feeds} revocation feeds checked");
}

/// The shared vector's key through the kernel: the size-0 head and the public key equal the
/// vector's. Its entries are not leaves a kernel writes; `core::etl` checks every tree of it.
#[test]
fn etl_sth_vector_matches_the_shared_vector() {
    let shared: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(SHARED_ETL_VECTOR).unwrap()).unwrap();
    let text = |value: &serde_json::Value| value.as_str().unwrap().to_string();
    let vector = Vector::load(&Path::new(VECTORS_DIR).join("etl_sth_vector.json")).unwrap();
    assert_eq!(hex::encode(vector.signing_seed), text(&shared["signing_seed_hex"]));
    let run = run_reference(&vector).unwrap();

    let (mut sizes_seen, mut keys_seen) = (Vec::new(), 0);
    for reply in run.replies.iter().flatten() {
        match reply {
            Response::SignedTreeHead(sth) => {
                assert_eq!(sth.key_id.to_hex(), text(&shared["key_id_hex"]));
                if sth.tree_size == 0 {
                    let tree = &shared["trees"][0];
                    assert_eq!(hex::encode(sth.root_hash), text(&tree["root_hex"]), "root at size 0");
                    assert_eq!(hex::encode(sth.signature), text(&tree["sth_signature_hex"]), "signature at size 0");
                }
                sizes_seen.push(sth.tree_size);
            }
            Response::PublicKey { key_id, public_key } => {
                assert_eq!(key_id.to_hex(), text(&shared["key_id_hex"]));
                assert_eq!(hex::encode(public_key), text(&shared["public_key_hex"]));
                keys_seen += 1;
            }
            _ => {}
        }
    }
    assert_eq!(sizes_seen, vec![0, 1, 2], "a head before any leaf, after the capsule, after the revocation");
    assert_eq!(keys_seen, 1);
}
