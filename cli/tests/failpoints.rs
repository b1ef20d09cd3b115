//! With the real binary built with `crash-test-failpoints`: for each named failpoint, a client
//! drives claims until the daemon aborts there; after a restart every request whose reply the
//! client received is present, with its capsule and a verifiable proof.
//! Run with `cargo test -p evidenceos-cli --features crash-test-failpoints --test failpoints`.
#![cfg(feature = "crash-test-failpoints")]

mod support;

use std::path::Path;

use evidenceos_core::SignedTreeHead;
use evidenceos_core::etl::verify_tree_head;
use evidenceos_core::hash::sha256;
use evidenceos_core::keys::KeyId;
use evidenceos_core::merkle::{leaf_hash, verify_inclusion};
use evidenceos_grpc::v2;
use evidenceos_grpc::v2::evidence_os_client::EvidenceOsClient;
use tonic::Request;
use tonic::transport::Channel;

const FAILPOINTS: [&str; 15] = [
    "before_journal_append",
    "after_journal_append",
    "before_journal_sync",
    "after_journal_sync",
    "before_etl_append",
    "after_etl_append",
    "before_etl_sync",
    "after_etl_sync",
    "before_checkpoint_replace",
    "after_checkpoint_replace",
    "before_journal_compaction",
    "after_journal_compaction",
    "after_etl_append_execute_claim",
    "after_etl_append_execute_claim_v2",
    "after_etl_append_revoke_claim",
];

const AGENT: &str = "agent-secret";
const AUDITOR: &str = "auditor-secret";

fn req<T>(message: T, token: &str, id: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request.metadata_mut().insert("x-request-id", id.parse().unwrap());
    request
}

fn start(data: &Path, log_dir: &Path, failpoint: Option<&str>) -> support::Daemon {
    let mut env = vec![("EVIDENCEOS_AGENT_TOKENS", AGENT), ("EVIDENCEOS_AUDITOR_TOKENS", AUDITOR)];
    if let Some(name) = failpoint {
        env.push(("EVIDENCEOS_CRASH_FAILPOINT", name));
    }
    support::start_with(data, log_dir, &["--enable-insecure-v1", "--checkpoint-every", "2"], &env)
}

/// What the client saw acknowledged.
#[derive(Default)]
struct Acked {
    /// (claim id, capsule hash) of executed claims.
    capsules: Vec<(Vec<u8>, Vec<u8>)>,
    /// Capsule hashes whose revocation was acknowledged.
    revoked: Vec<Vec<u8>>,
}

/// Runs lifecycles until an RPC fails (the daemon aborted); returns what was acknowledged.
async fn drive(client: &mut EvidenceOsClient<Channel>) -> Acked {
    let mut acked = Acked::default();
    let module = wat::parse_file(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/claim_mod3.wat")).unwrap();
    for round in 0..6 {
        let name = format!("claim-{round}");
        let create = support::claim_request(&name, "fast", "demo");
        let Ok(created) = client.create_claim_v2(req(create, AGENT, &format!("c{round}"))).await else { return acked };
        let id = created.into_inner().claim_id;
        let artifacts = vec![v2::Artifact { artifact_hash: sha256(&module).to_vec(), kind: "wasm".into() }];
        let commit = v2::CommitArtifactsRequest { claim_id: id.clone(), artifacts, wasm_module: module.clone() };
        if client.commit_artifacts(req(commit, AGENT, "-")).await.is_err() {
            return acked;
        }
        if client.freeze_gates(req(v2::FreezeGatesRequest { claim_id: id.clone() }, AGENT, "-")).await.is_err() {
            return acked;
        }
        let capsule_hash = if round % 2 == 0 {
            let execute = v2::ExecuteClaimV2Request { claim_id: id.clone() };
            match client.execute_claim_v2(req(execute, AGENT, &format!("e{round}"))).await {
                Ok(r) => r.into_inner().capsule_hash,
                Err(_) => return acked,
            }
        } else {
            let legacy = v2::ExecuteClaimRequest {
                claim_id: id.clone(),
                decision: 1,
                reason_codes: vec![1],
                canonical_output: vec![3],
            };
            match client.execute_claim(req(legacy, AGENT, "-")).await {
                Ok(r) => r.into_inner().capsule_hash,
                Err(_) => return acked,
            }
        };
        acked.capsules.push((id.clone(), capsule_hash.clone()));
        if round == 2 {
            let revoke = v2::RevokeClaimRequest { claim_id: id, reason: "withdrawn".into() };
            if client.revoke_claim(req(revoke, AGENT, &format!("r{round}"))).await.is_err() {
                return acked;
            }
            acked.revoked.push(capsule_hash);
        }
    }
    acked
}

#[tokio::test]
async fn every_failpoint_aborts_and_recovery_keeps_every_acknowledged_request() {
    for failpoint in FAILPOINTS {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        support::install_demo_holdout(&data);

        let mut daemon = start(&data, tmp.path(), Some(failpoint));
        let mut client = EvidenceOsClient::connect(daemon.addr.clone()).await.unwrap();
        let acked = drive(&mut client).await;
        drop(client);
        let status = daemon.wait();
        assert!(!status.success(), "{failpoint}: the daemon must have aborted (it ran the whole workload)");
        assert!(daemon.log().contains(&format!("failpoint {failpoint} reached")), "{failpoint}: aborted elsewhere");

        let daemon = start(&data, tmp.path(), None);
        let mut client = EvidenceOsClient::connect(daemon.addr.clone()).await.unwrap();
        let sth =
            client.get_signed_tree_head(req(v2::GetSignedTreeHeadRequest {}, AUDITOR, "-")).await.unwrap().into_inner();
        let sth = SignedTreeHead {
            tree_size: sth.tree_size,
            root_hash: sth.root_hash.try_into().unwrap(),
            key_id: KeyId(sth.key_id.try_into().unwrap()),
            signature: sth.signature.try_into().unwrap(),
        };
        let key = client.get_public_key(req(v2::GetPublicKeyRequest { key_id: vec![] }, AUDITOR, "-")).await.unwrap();
        assert!(verify_tree_head(&key.into_inner().ed25519_public_key.try_into().unwrap(), &sth), "{failpoint}");
        for (claim_id, capsule_hash) in &acked.capsules {
            let fetched = client
                .fetch_capsule(req(v2::FetchCapsuleRequest { claim_id: claim_id.clone() }, AUDITOR, "-"))
                .await
                .unwrap_or_else(|e| panic!("{failpoint}: acknowledged capsule lost: {e}"))
                .into_inner();
            assert_eq!(&fetched.capsule_hash, capsule_hash, "{failpoint}");
            let proof = fetched.inclusion_proof.unwrap();
            let path: Vec<[u8; 32]> = proof.audit_path.iter().map(|h| h.clone().try_into().unwrap()).collect();
            let root: [u8; 32] = fetched.root_hash.try_into().unwrap();
            verify_inclusion(&leaf_hash(&fetched.capsule_bytes), proof.leaf_index, proof.tree_size, &path, &root)
                .unwrap_or_else(|e| panic!("{failpoint}: {e}"));
        }
        let feed =
            client.get_revocation_feed(req(v2::GetRevocationFeedRequest {}, AUDITOR, "-")).await.unwrap().into_inner();
        for revoked in &acked.revoked {
            assert!(feed.entries.iter().any(|e| &e.claim_id == revoked), "{failpoint}: acknowledged revocation lost");
        }
        drop(client);
        daemon.stop();
    }
}
