//! `evidenceosctl capsule verify`: fetch a capsule with its proofs and check every claim the daemon
//! makes about it. The checks are a pure function of the fetched messages ([`verify`]).

use evidenceos_core::SignedTreeHead;
use evidenceos_core::etl::verify_tree_head;
use evidenceos_core::hash::{Hash, sha256};
use evidenceos_core::keys::KeyId;
use evidenceos_core::merkle::{leaf_hash, verify_consistency, verify_inclusion};
use evidenceos_grpc::v2;
use serde_json::json;

use super::client::{CONSISTENCY, Client, FETCH, Failure, PUBLIC_KEY};

pub(crate) const CAPSULE_SCHEMA: &str = "evidenceos.v2.claim_capsule";

/// Everything the daemon sent about one capsule.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Fetched {
    pub(crate) capsule: v2::FetchCapsuleResponse,
    /// GetPublicKey for the key id of the capsule's signed tree head.
    pub(crate) public_key: v2::GetPublicKeyResponse,
    /// GetConsistencyProof(etl_index + 1, tree size of the signed tree head).
    pub(crate) consistency: v2::GetConsistencyProofResponse,
}

/// One check: a stable name, its result, and a short explanation of what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Check {
    pub(crate) name: &'static str,
    pub(crate) ok: bool,
    pub(crate) detail: String,
}

pub(crate) const CAPSULE_HASH: &str = "capsule-hash";
pub(crate) const CAPSULE_CONTENT: &str = "capsule-content";
pub(crate) const SIGNING_KEY: &str = "signing-key";
pub(crate) const TREE_HEAD_SIGNATURE: &str = "tree-head-signature";
pub(crate) const INCLUSION: &str = "inclusion";
pub(crate) const CONSISTENCY_CHECK: &str = "consistency";

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Report {
    pub(crate) claim_id: Hash,
    pub(crate) capsule_hash: Vec<u8>,
    pub(crate) etl_index: u64,
    pub(crate) tree_size: u64,
    pub(crate) root_hash: Vec<u8>,
    pub(crate) key_id: Vec<u8>,
    pub(crate) checks: Vec<Check>,
}

impl Report {
    pub(crate) fn verified(&self) -> bool {
        self.checks.iter().all(|check| check.ok)
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        let checks: Vec<serde_json::Value> = self
            .checks
            .iter()
            .map(|check| json!({"check": check.name, "ok": check.ok, "detail": check.detail}))
            .collect();
        json!({
            "claim_id": hex::encode(self.claim_id),
            "capsule_hash": hex::encode(&self.capsule_hash),
            "etl_index": self.etl_index,
            "tree_size": self.tree_size,
            "root_hash": hex::encode(&self.root_hash),
            "key_id": hex::encode(&self.key_id),
            "verified": self.verified(),
            "checks": checks,
        })
    }

    pub(crate) fn to_text(&self) -> String {
        let width = self.checks.iter().map(|check| check.name.len()).max().unwrap_or(0);
        let mut text: String = self
            .checks
            .iter()
            .map(|check| {
                let status = if check.ok { "ok" } else { "FAILED" };
                format!("{status:<6} {:<width$}  {}\n", check.name, check.detail)
            })
            .collect();
        let failed = self.checks.iter().filter(|check| !check.ok).count();
        if failed == 0 {
            text.push_str(&format!(
                "capsule {} verified at tree size {}\n",
                hex::encode(&self.capsule_hash),
                self.tree_size
            ));
        } else {
            text.push_str(&format!(
                "capsule {} NOT verified: {failed} of {} checks failed\n",
                hex::encode(&self.capsule_hash),
                self.checks.len()
            ));
        }
        text
    }
}

fn hash32(bytes: &[u8], what: &str) -> Result<Hash, String> {
    bytes.try_into().map_err(|_| format!("{what} is {} bytes, expected 32", bytes.len()))
}

fn hashes(list: &[Vec<u8>], what: &str) -> Result<Vec<Hash>, String> {
    list.iter().enumerate().map(|(i, bytes)| hash32(bytes, &format!("{what} hash {i}"))).collect()
}

fn short(bytes: &[u8]) -> String {
    let text = hex::encode(bytes);
    if text.len() > 16 { format!("{}…", &text[..16]) } else { text }
}

fn signed_tree_head(capsule: &v2::FetchCapsuleResponse) -> Result<SignedTreeHead, String> {
    let sth = capsule.signed_tree_head.as_ref().ok_or("the response has no signed tree head")?;
    Ok(SignedTreeHead {
        tree_size: sth.tree_size,
        root_hash: hash32(&sth.root_hash, "the tree head's root")?,
        key_id: KeyId(hash32(&sth.key_id, "the tree head's key id")?),
        signature: sth
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| format!("the tree head's signature is {} bytes, expected 64", sth.signature.len()))?,
    })
}

fn public_key(fetched: &Fetched) -> Result<[u8; 32], String> {
    let key = &fetched.public_key.ed25519_public_key;
    key.as_slice().try_into().map_err(|_| format!("the public key is {} bytes, expected 32", key.len()))
}

fn check_capsule_hash(capsule: &v2::FetchCapsuleResponse) -> Result<String, String> {
    let computed = sha256(&capsule.capsule_bytes);
    if capsule.capsule_hash == computed {
        Ok(format!("SHA-256 of the {} capsule bytes is the capsule hash", capsule.capsule_bytes.len()))
    } else {
        Err(format!(
            "SHA-256 of the capsule bytes is {} but the daemon says {}",
            short(&computed),
            short(&capsule.capsule_hash)
        ))
    }
}

fn check_capsule_content(claim_id: &Hash, capsule: &v2::FetchCapsuleResponse) -> Result<String, String> {
    let value: serde_json::Value =
        serde_json::from_slice(&capsule.capsule_bytes).map_err(|e| format!("the capsule is not JSON: {e}"))?;
    let field = |name: &str| value.get(name).and_then(serde_json::Value::as_str);
    match field("schema") {
        Some(CAPSULE_SCHEMA) => {}
        Some(other) => return Err(format!("schema is {other:?}, expected {CAPSULE_SCHEMA}")),
        None => return Err(format!("no schema field, expected {CAPSULE_SCHEMA}")),
    }
    let wanted = hex::encode(claim_id);
    match field("claim_id_hex") {
        Some(id) if id.eq_ignore_ascii_case(&wanted) => {}
        Some(id) => return Err(format!("the capsule is for claim {}, not {}", short_hex(id), short(claim_id))),
        None => return Err("the capsule has no claim_id_hex".into()),
    }
    let state = field("state").unwrap_or("?");
    let decision = field("decision").unwrap_or("?");
    Ok(format!("{CAPSULE_SCHEMA} for claim {} (state {state}, decision {decision})", short(claim_id)))
}

fn short_hex(text: &str) -> String {
    if text.len() > 16 { format!("{}…", text.get(..16).unwrap_or(text)) } else { text.to_string() }
}

fn check_signing_key(fetched: &Fetched) -> Result<String, String> {
    let key = public_key(fetched)?;
    let sth = signed_tree_head(&fetched.capsule)?;
    let key_id = KeyId::of_public_key(&key);
    if key_id == sth.key_id {
        Ok(format!("SHA-256 of the public key is the tree head's key id {}", short(&key_id.0)))
    } else {
        Err(format!(
            "SHA-256 of the public key is {} but the tree head names key {}",
            short(&key_id.0),
            short(&sth.key_id.0)
        ))
    }
}

fn check_tree_head_signature(fetched: &Fetched) -> Result<String, String> {
    let sth = signed_tree_head(&fetched.capsule)?;
    let key = public_key(fetched)?;
    if fetched.capsule.tree_size != sth.tree_size || fetched.capsule.root_hash != sth.root_hash {
        return Err(format!(
            "the response's tree size {} and root {} differ from its signed tree head's ({}, {})",
            fetched.capsule.tree_size,
            short(&fetched.capsule.root_hash),
            sth.tree_size,
            short(&sth.root_hash)
        ));
    }
    if verify_tree_head(&key, &sth) {
        Ok(format!("Ed25519 signature over tree size {} and root {} verifies", sth.tree_size, short(&sth.root_hash)))
    } else {
        Err(format!("the signature over tree size {} does not verify with key {}", sth.tree_size, short(&key)))
    }
}

fn check_inclusion(capsule: &v2::FetchCapsuleResponse) -> Result<String, String> {
    let sth = signed_tree_head(capsule)?;
    let proof = capsule.inclusion_proof.as_ref().ok_or("the response has no inclusion proof")?;
    let leaf = leaf_hash(&capsule.capsule_bytes);
    if proof.leaf_hash != leaf {
        return Err(format!(
            "the proof's leaf hash {} is not the RFC 6962 leaf hash {} of the capsule bytes",
            short(&proof.leaf_hash),
            short(&leaf)
        ));
    }
    if proof.leaf_index != capsule.etl_index || proof.tree_size != sth.tree_size {
        return Err(format!(
            "the proof is for leaf {} of {} leaves, but the capsule is leaf {} and the tree head has {}",
            proof.leaf_index, proof.tree_size, capsule.etl_index, sth.tree_size
        ));
    }
    let path = hashes(&proof.audit_path, "audit path")?;
    verify_inclusion(&leaf, capsule.etl_index, sth.tree_size, &path, &sth.root_hash)
        .map_err(|e| format!("inclusion proof of leaf {} in tree size {}: {e}", capsule.etl_index, sth.tree_size))?;
    Ok(format!(
        "leaf {} is in the signed tree of size {} ({}-hash audit path)",
        capsule.etl_index,
        sth.tree_size,
        path.len()
    ))
}

fn check_consistency(fetched: &Fetched) -> Result<String, String> {
    let capsule = &fetched.capsule;
    let sth = signed_tree_head(capsule)?;
    let old_size = capsule.etl_index.checked_add(1).ok_or("the ETL index is out of range")?;
    let proof = capsule.consistency_proof.as_ref().ok_or("the response has no consistency proof")?;
    if proof.old_tree_size != old_size || proof.new_tree_size != sth.tree_size {
        return Err(format!(
            "the proof is from size {} to {}, expected {old_size} to {}",
            proof.old_tree_size, proof.new_tree_size, sth.tree_size
        ));
    }
    let old_root = hash32(&fetched.consistency.first_root_hash, "the root at the capsule's size")?;
    if fetched.consistency.second_root_hash != sth.root_hash {
        return Err(format!(
            "GetConsistencyProof says the root at size {} is {}, the tree head says {}",
            sth.tree_size,
            short(&fetched.consistency.second_root_hash),
            short(&sth.root_hash)
        ));
    }
    let path = hashes(&proof.path, "consistency path")?;
    verify_consistency(old_size, sth.tree_size, &old_root, &sth.root_hash, &path)
        .map_err(|e| format!("consistency proof from size {old_size} to {}: {e}", sth.tree_size))?;
    if old_size == sth.tree_size {
        return Ok(format!(
            "the capsule is the signed tree's last leaf; the root at size {old_size} is the signed root"
        ));
    }
    Ok(format!(
        "the tree at size {old_size} (root {}) is a prefix of the signed tree of size {} ({}-hash path)",
        short(&old_root),
        sth.tree_size,
        path.len()
    ))
}

/// Runs every check on what the daemon sent for `claim_id`; never stops at the first failure.
pub(crate) fn verify(claim_id: &Hash, fetched: &Fetched) -> Report {
    let capsule = &fetched.capsule;
    let results = [
        (CAPSULE_HASH, check_capsule_hash(capsule)),
        (CAPSULE_CONTENT, check_capsule_content(claim_id, capsule)),
        (SIGNING_KEY, check_signing_key(fetched)),
        (TREE_HEAD_SIGNATURE, check_tree_head_signature(fetched)),
        (INCLUSION, check_inclusion(capsule)),
        (CONSISTENCY_CHECK, check_consistency(fetched)),
    ];
    let checks = results
        .into_iter()
        .map(|(name, result)| match result {
            Ok(detail) => Check { name, ok: true, detail },
            Err(detail) => Check { name, ok: false, detail },
        })
        .collect();
    let sth = capsule.signed_tree_head.clone().unwrap_or_default();
    Report {
        claim_id: *claim_id,
        capsule_hash: capsule.capsule_hash.clone(),
        etl_index: capsule.etl_index,
        tree_size: sth.tree_size,
        root_hash: sth.root_hash,
        key_id: sth.key_id,
        checks,
    }
}

/// Fetches the capsule, the key that signed its tree head, and the root at the capsule's size.
pub(crate) async fn fetch(client: &mut Client, claim_id: &Hash) -> Result<Fetched, Failure> {
    let request = client.request(v2::FetchCapsuleRequest { claim_id: claim_id.to_vec() });
    let capsule = client.rpc.fetch_capsule(request).await.map_err(client.failure(FETCH))?.into_inner();
    let sth = capsule.signed_tree_head.clone().unwrap_or_default();

    let request = client.request(v2::GetPublicKeyRequest { key_id: sth.key_id.clone() });
    let public_key = client.rpc.get_public_key(request).await.map_err(client.failure(PUBLIC_KEY))?.into_inner();

    // A head that does not cover the capsule cannot be checked for consistency at all; the
    // consistency check then fails on the sizes without asking the daemon.
    let consistency = match capsule.etl_index.checked_add(1) {
        Some(first) if first <= sth.tree_size => {
            let request = client
                .request(v2::GetConsistencyProofRequest { first_tree_size: first, second_tree_size: sth.tree_size });
            client.rpc.get_consistency_proof(request).await.map_err(client.failure(CONSISTENCY))?.into_inner()
        }
        _ => v2::GetConsistencyProofResponse::default(),
    };
    Ok(Fetched { capsule, public_key, consistency })
}

#[cfg(test)]
mod tests {
    use evidenceos_core::etl::sign_tree_head;
    use evidenceos_core::keys::{KeyFile, Keyring, key_file_name, key_id_for_seed, public_key_for_seed};
    use evidenceos_core::merkle::MerkleTree;

    use super::*;

    const SEED: [u8; 32] = [7; 32];
    const CLAIM: Hash = [0xc1; 32];

    fn keyring(seed: [u8; 32]) -> Keyring {
        let id = key_id_for_seed(&seed);
        let files = [KeyFile { name: key_file_name(&id), bytes: seed.to_vec() }];
        Keyring::from_files(&files, id.to_hex().as_bytes()).unwrap()
    }

    fn capsule_bytes(schema: &str, claim_id: &Hash) -> Vec<u8> {
        // serde_json's default map sorts keys: canonical like the daemon's capsules.
        serde_json::to_vec(&json!({
            "schema": schema,
            "claim_id_hex": hex::encode(claim_id),
            "state": "CERTIFIED",
            "decision": "APPROVE",
            "e_value": 1280.0,
        }))
        .unwrap()
    }

    /// A log of `size` leaves holding `capsule` at `index`, and what the daemon would send for it.
    fn fixture_with(capsule: Vec<u8>, index: u64, size: u64) -> Fetched {
        let mut tree = MerkleTree::new();
        for i in 0..size {
            let leaf = if i == index { capsule.clone() } else { format!("{{\"other\":{i}}}").into_bytes() };
            tree.push(leaf_hash(&leaf));
        }
        let keys = keyring(SEED);
        let sth = sign_tree_head(&keys, size, tree.root());
        let sth_message = v2::SignedTreeHead {
            tree_size: sth.tree_size,
            root_hash: sth.root_hash.to_vec(),
            signature: sth.signature.to_vec(),
            key_id: sth.key_id.0.to_vec(),
        };
        let to_vecs = |hashes: Vec<Hash>| hashes.into_iter().map(|h| h.to_vec()).collect::<Vec<_>>();
        let consistency_path = to_vecs(tree.consistency_proof(index + 1, size).unwrap());
        Fetched {
            capsule: v2::FetchCapsuleResponse {
                capsule_hash: sha256(&capsule).to_vec(),
                etl_index: index,
                signed_tree_head: Some(sth_message),
                inclusion_proof: Some(v2::MerkleInclusionProof {
                    leaf_hash: leaf_hash(&capsule).to_vec(),
                    leaf_index: index,
                    tree_size: size,
                    audit_path: to_vecs(tree.inclusion_proof(index, size).unwrap()),
                }),
                consistency_proof: Some(v2::MerkleConsistencyProof {
                    old_tree_size: index + 1,
                    new_tree_size: size,
                    path: consistency_path.clone(),
                }),
                root_hash: tree.root().to_vec(),
                tree_size: size,
                capsule_bytes: capsule,
            },
            public_key: v2::GetPublicKeyResponse {
                ed25519_public_key: public_key_for_seed(&SEED).to_vec(),
                key_id: sth.key_id.0.to_vec(),
            },
            consistency: v2::GetConsistencyProofResponse {
                consistent: true,
                first_root_hash: tree.root_at(index + 1).unwrap().to_vec(),
                second_root_hash: tree.root().to_vec(),
                path: consistency_path,
            },
        }
    }

    /// Capsule at leaf 2 of 6: the consistency proof from size 3 to 6 is not trivial.
    fn fixture() -> Fetched {
        fixture_with(capsule_bytes(CAPSULE_SCHEMA, &CLAIM), 2, 6)
    }

    fn failed(report: &Report) -> Vec<&'static str> {
        report.checks.iter().filter(|check| !check.ok).map(|check| check.name).collect()
    }

    fn flip(bytes: &mut [u8]) {
        bytes[0] ^= 1;
    }

    #[test]
    fn a_valid_capsule_passes_every_check() {
        for (index, size) in [(2, 6), (0, 1), (5, 6), (3, 4), (0, 8), (6, 13)] {
            let report = verify(&CLAIM, &fixture_with(capsule_bytes(CAPSULE_SCHEMA, &CLAIM), index, size));
            assert!(report.verified(), "leaf {index} of {size}: {report:#?}");
            assert_eq!(report.checks.len(), 6);
            assert_eq!((report.etl_index, report.tree_size), (index, size));
        }
        let report = verify(&CLAIM, &fixture());
        assert!(report.to_text().ends_with(&format!(
            "capsule {} verified at tree size 6\n",
            hex::encode(sha256(&capsule_bytes(CAPSULE_SCHEMA, &CLAIM)))
        )));
    }

    #[test]
    fn each_tampered_field_fails_its_check() {
        type Tamper = fn(&mut Fetched);
        let cases: Vec<(&str, Tamper, Vec<&str>)> = vec![
            ("capsule bytes", |f| f.capsule.capsule_bytes.push(b' '), vec![CAPSULE_HASH, INCLUSION]),
            ("capsule hash", |f| flip(&mut f.capsule.capsule_hash), vec![CAPSULE_HASH]),
            ("capsule hash length", |f| f.capsule.capsule_hash.truncate(31), vec![CAPSULE_HASH]),
            (
                "public key of another seed",
                |f| f.public_key.ed25519_public_key = public_key_for_seed(&[8; 32]).to_vec(),
                vec![SIGNING_KEY, TREE_HEAD_SIGNATURE],
            ),
            (
                "public key length",
                |f| {
                    f.public_key.ed25519_public_key.pop();
                },
                vec![SIGNING_KEY, TREE_HEAD_SIGNATURE],
            ),
            ("tree head signature", |f| flip(&mut sth(f).signature), vec![TREE_HEAD_SIGNATURE]),
            ("tree head key id", |f| flip(&mut sth(f).key_id), vec![SIGNING_KEY, TREE_HEAD_SIGNATURE]),
            (
                "tree head root",
                |f| flip(&mut sth(f).root_hash),
                vec![TREE_HEAD_SIGNATURE, INCLUSION, CONSISTENCY_CHECK],
            ),
            ("tree head size", |f| sth(f).tree_size = 7, vec![TREE_HEAD_SIGNATURE, INCLUSION, CONSISTENCY_CHECK]),
            ("response root", |f| flip(&mut f.capsule.root_hash), vec![TREE_HEAD_SIGNATURE]),
            ("response size", |f| f.capsule.tree_size = 5, vec![TREE_HEAD_SIGNATURE]),
            ("audit path hash", |f| flip(&mut inclusion(f).audit_path[0]), vec![INCLUSION]),
            (
                "audit path too short",
                |f| {
                    inclusion(f).audit_path.pop();
                },
                vec![INCLUSION],
            ),
            ("audit path too long", |f| inclusion(f).audit_path.push(vec![0; 32]), vec![INCLUSION]),
            ("proof leaf hash", |f| flip(&mut inclusion(f).leaf_hash), vec![INCLUSION]),
            ("proof leaf index", |f| inclusion(f).leaf_index = 1, vec![INCLUSION]),
            ("etl index", |f| f.capsule.etl_index = 1, vec![INCLUSION, CONSISTENCY_CHECK]),
            ("consistency path hash", |f| flip(&mut consistency(f).path[0]), vec![CONSISTENCY_CHECK]),
            (
                "consistency path too short",
                |f| {
                    consistency(f).path.pop();
                },
                vec![CONSISTENCY_CHECK],
            ),
            ("consistency old size", |f| consistency(f).old_tree_size = 2, vec![CONSISTENCY_CHECK]),
            ("root at the capsule's size", |f| flip(&mut f.consistency.first_root_hash), vec![CONSISTENCY_CHECK]),
            ("root at the head's size", |f| flip(&mut f.consistency.second_root_hash), vec![CONSISTENCY_CHECK]),
            ("no root at the capsule's size", |f| f.consistency.first_root_hash.clear(), vec![CONSISTENCY_CHECK]),
            ("no inclusion proof", |f| f.capsule.inclusion_proof = None, vec![INCLUSION]),
            ("no consistency proof", |f| f.capsule.consistency_proof = None, vec![CONSISTENCY_CHECK]),
            (
                "no signed tree head",
                |f| f.capsule.signed_tree_head = None,
                vec![SIGNING_KEY, TREE_HEAD_SIGNATURE, INCLUSION, CONSISTENCY_CHECK],
            ),
        ];
        for (what, tamper, expected) in cases {
            let mut fetched = fixture();
            tamper(&mut fetched);
            let report = verify(&CLAIM, &fetched);
            assert_eq!(failed(&report), expected, "tampered {what}: {report:#?}");
            assert!(!report.verified());
            assert!(report.to_text().contains(&format!("NOT verified: {} of 6 checks failed", expected.len())));
        }
    }

    #[test]
    fn the_capsule_must_be_the_requested_claims() {
        let wrong_schema = fixture_with(capsule_bytes("evidenceos.v1.something", &CLAIM), 2, 6);
        let report = verify(&CLAIM, &wrong_schema);
        assert_eq!(failed(&report), [CAPSULE_CONTENT]);
        assert!(report.checks[1].detail.contains("schema is \"evidenceos.v1.something\""));

        let other_claim = verify(&[0xc2; 32], &fixture());
        assert_eq!(failed(&other_claim), [CAPSULE_CONTENT]);
        assert!(other_claim.checks[1].detail.starts_with("the capsule is for claim c1c1"));

        let not_json = fixture_with(b"\x00not json".to_vec(), 2, 6);
        assert_eq!(failed(&verify(&CLAIM, &not_json)), [CAPSULE_CONTENT]);
    }

    #[test]
    fn json_report_shape() {
        let mut fetched = fixture();
        flip(&mut inclusion(&mut fetched).leaf_hash);
        let value = verify(&CLAIM, &fetched).to_json();
        let keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["capsule_hash", "checks", "claim_id", "etl_index", "key_id", "root_hash", "tree_size", "verified"]
        );
        assert_eq!(value["claim_id"], hex::encode(CLAIM));
        assert_eq!(value["verified"], false);
        assert_eq!((value["etl_index"].as_u64(), value["tree_size"].as_u64()), (Some(2), Some(6)));
        assert_eq!(value["key_id"], key_id_for_seed(&SEED).to_hex());
        let checks = value["checks"].as_array().unwrap();
        let names: Vec<&str> = checks.iter().map(|c| c["check"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [CAPSULE_HASH, CAPSULE_CONTENT, SIGNING_KEY, TREE_HEAD_SIGNATURE, INCLUSION, CONSISTENCY_CHECK]
        );
        let oks: Vec<bool> = checks.iter().map(|c| c["ok"].as_bool().unwrap()).collect();
        assert_eq!(oks, [true, true, true, true, false, true]);
        assert!(checks.iter().all(|c| c["detail"].as_str().is_some_and(|d| !d.is_empty())));
    }

    fn sth(fetched: &mut Fetched) -> &mut v2::SignedTreeHead {
        fetched.capsule.signed_tree_head.as_mut().unwrap()
    }

    fn inclusion(fetched: &mut Fetched) -> &mut v2::MerkleInclusionProof {
        fetched.capsule.inclusion_proof.as_mut().unwrap()
    }

    fn consistency(fetched: &mut Fetched) -> &mut v2::MerkleConsistencyProof {
        fetched.capsule.consistency_proof.as_mut().unwrap()
    }
}
