//! Claims end to end over gRPC against the real daemon: the three outcomes, revocation with
//! taint, the signed feed and its live stream, and capsule proofs checked with the verifier.

use std::path::Path;
use std::time::Duration;

use evidenceos_core::SignedTreeHead;
use evidenceos_core::etl::{revocation_feed_digest, verify_tree_head};
use evidenceos_core::hash::sha256;
use evidenceos_core::keys::{KeyId, verify_signature};
use evidenceos_core::merkle::{leaf_hash, verify_consistency, verify_inclusion};
use evidenceos_core::request::RevocationEntry;
use evidenceos_grpc::v2;
use evidenceos_grpc::v2::evidence_os_client::EvidenceOsClient;
use tonic::Code;
use tonic::transport::Channel;

const AGENT: &str = "agent-secret";
const OTHER_AGENT: &str = "other-agent-secret";
const AUDITOR: &str = "auditor-secret";

mod support;

use support::{Daemon, install_demo_holdout};

fn start(data_dir: &Path, log_dir: &Path) -> Daemon {
    let tokens = format!("{AGENT},{OTHER_AGENT}");
    let env = [("EVIDENCEOS_AGENT_TOKENS", tokens.as_str()), ("EVIDENCEOS_AUDITOR_TOKENS", AUDITOR)];
    support::start_with(data_dir, log_dir, &[], &env)
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// Authenticated, with an `x-request-id` (required by CreateClaimV2, ExecuteClaimV2, RevokeClaim).
fn retryable<T>(message: T, token: &str, request_id: &str) -> tonic::Request<T> {
    let mut request = with_token(message, token);
    request.metadata_mut().insert("x-request-id", request_id.parse().unwrap());
    request
}

fn wasm(name: &str) -> Vec<u8> {
    wat::parse_file(Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../examples/{name}.wat"))).unwrap()
}

fn create_request(name: &str, lane: &str) -> v2::CreateClaimV2Request {
    v2::CreateClaimV2Request {
        claim_name: name.into(),
        metadata: Some(v2::ClaimMetadataV2 {
            lane: lane.into(),
            alpha_micros: 50_000,
            epoch_config_ref: "epoch/v1".into(),
            output_schema_id: "EVIDENCEOS_SC_V0".into(),
        }),
        signals: Some(v2::TopicSignalsV2::default()),
        holdout_ref: "demo".into(),
        epoch_size: 1,
        oracle_num_symbols: 4,
        access_credit: 64,
        oracle_id: "accuracy".into(),
        nullspec_id: String::new(),
        dp_epsilon_budget: None,
        dp_delta_budget: None,
    }
}

/// create → commit → freeze → seal → execute; returns (claim id, execution).
async fn run_claim(
    client: &mut EvidenceOsClient<Channel>,
    name: &str,
    lane: &str,
    module: &str,
    depends_on: &[Vec<u8>],
) -> (Vec<u8>, v2::ExecuteClaimV2Response) {
    let created = client
        .create_claim_v2(retryable(create_request(name, lane), AGENT, &format!("create-{name}")))
        .await
        .unwrap()
        .into_inner();
    let module = wasm(module);
    let mut artifacts = vec![v2::Artifact { artifact_hash: sha256(&module).to_vec(), kind: "wasm".into() }];
    artifacts
        .extend(depends_on.iter().map(|hash| v2::Artifact { artifact_hash: hash.clone(), kind: "capsule".into() }));
    let claim_id = created.claim_id;
    let commit = v2::CommitArtifactsRequest { claim_id: claim_id.clone(), artifacts, wasm_module: module };
    assert_eq!(client.commit_artifacts(with_token(commit, AGENT)).await.unwrap().into_inner().state, 2);
    let freeze = v2::FreezeGatesRequest { claim_id: claim_id.clone() };
    assert_eq!(client.freeze_gates(with_token(freeze, AGENT)).await.unwrap().into_inner().state, 3);
    let seal = v2::SealClaimRequest { claim_id: claim_id.clone() };
    assert_eq!(client.seal_claim(with_token(seal, AGENT)).await.unwrap().into_inner().state, 3);
    let execute = v2::ExecuteClaimV2Request { claim_id: claim_id.clone() };
    let executed =
        client.execute_claim_v2(retryable(execute, AGENT, &format!("execute-{name}"))).await.unwrap().into_inner();
    (claim_id, executed)
}

fn sth_of(message: &v2::SignedTreeHead) -> SignedTreeHead {
    SignedTreeHead {
        tree_size: message.tree_size,
        root_hash: message.root_hash.clone().try_into().unwrap(),
        key_id: KeyId(message.key_id.clone().try_into().unwrap()),
        signature: message.signature.clone().try_into().unwrap(),
    }
}

#[tokio::test]
async fn claims_end_to_end_over_grpc() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    install_demo_holdout(&data);
    let daemon = start(&data, tmp.path());
    let mut client = EvidenceOsClient::connect(daemon.addr.clone()).await.unwrap();

    let unauthenticated = client.create_claim_v2(create_request("x", "fast")).await.unwrap_err();
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
    let no_request_id = client.create_claim_v2(with_token(create_request("x", "fast"), AGENT)).await.unwrap_err();
    assert_eq!(no_request_id.code(), Code::InvalidArgument);

    let (good, certified) = run_claim(&mut client, "mod3-hypothesis", "fast", "claim_mod3", &[]).await;
    assert_eq!((certified.state, certified.decision, certified.certified), (6, 1, true));
    assert!(certified.e_value >= 320.0);
    // A retried execute returns the recorded reply; the same id with another body is refused.
    let retry = v2::ExecuteClaimV2Request { claim_id: good.clone() };
    let replayed = client.execute_claim_v2(retryable(retry, AGENT, "execute-mod3-hypothesis")).await.unwrap();
    assert_eq!(replayed.into_inner(), certified);
    let other_body = v2::ExecuteClaimV2Request { claim_id: vec![7; 32] };
    let reused = client.execute_claim_v2(retryable(other_body, AGENT, "execute-mod3-hypothesis")).await.unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists);

    let (_, rejected) = run_claim(&mut client, "all-zero", "fast", "claim_all_zero", &[]).await;
    assert_eq!((rejected.state, rejected.decision), (7, 2), "REVOKED by REJECT");
    let (_, deferred) = run_claim(&mut client, "mod3-heavy", "heavy", "claim_mod3", &[]).await;
    assert_eq!((deferred.state, deferred.decision), (10, 3), "FROZEN by DEFER");

    // Another agent may not touch the claim; an agent may not read capsules.
    let stranger = v2::RevokeClaimRequest { claim_id: good.clone(), reason: "mine now".into() };
    assert_eq!(
        client.revoke_claim(retryable(stranger, OTHER_AGENT, "revoke-stranger")).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let agent_fetch = v2::FetchCapsuleRequest { claim_id: good.clone() };
    assert_eq!(client.fetch_capsule(with_token(agent_fetch, AGENT)).await.unwrap_err().code(), Code::PermissionDenied);

    // A dependent claim, then a live subscription, then the revocation.
    let (child, child_run) =
        run_claim(&mut client, "builds-on-mod3", "fast", "claim_mod3", std::slice::from_ref(&certified.capsule_hash))
            .await;
    assert_eq!(child_run.state, 6);
    let mut stream =
        client.watch_revocations(with_token(v2::WatchRevocationsRequest {}, AUDITOR)).await.unwrap().into_inner();
    let revoke = v2::RevokeClaimRequest { claim_id: good.clone(), reason: "retracted by author".into() };
    let revoked = client.revoke_claim(retryable(revoke, AGENT, "revoke-1")).await.unwrap().into_inner();
    assert_eq!(revoked.state, 7);

    let pushed = tokio::time::timeout(Duration::from_secs(10), stream.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(pushed.entries.len(), 1);
    assert_eq!(pushed.entries[0].claim_id, certified.capsule_hash);
    let pushed_sth = sth_of(pushed.signed_tree_head.as_ref().unwrap());
    let public: [u8; 32] = client
        .get_public_key(with_token(v2::GetPublicKeyRequest { key_id: pushed.key_id.clone() }, AUDITOR))
        .await
        .unwrap()
        .into_inner()
        .ed25519_public_key
        .try_into()
        .unwrap();
    assert!(verify_tree_head(&public, &pushed_sth));
    let entries = vec![RevocationEntry {
        capsule_hash: certified.capsule_hash.clone().try_into().unwrap(),
        timestamp_unix: revoked.timestamp_unix,
        reason: "retracted by author".into(),
    }];
    assert!(verify_signature(&public, &revocation_feed_digest(&entries, &pushed_sth), &pushed.signature));

    // The dependent is TAINTED: creating an existing claim returns it with its state.
    let again = client
        .create_claim_v2(retryable(create_request("builds-on-mod3", "fast"), AGENT, "create-again"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((again.claim_id, again.state), (child, 8));

    let feed =
        client.get_revocation_feed(with_token(v2::GetRevocationFeedRequest {}, AUDITOR)).await.unwrap().into_inner();
    assert_eq!(feed.entries.len(), 1);
    // The feed carries the head its signature covers (SPEC §1 field 4): verify with it alone.
    let head = sth_of(feed.signed_tree_head.as_ref().expect("GetRevocationFeed returns its head"));
    assert_eq!(head.key_id.0.as_slice(), feed.key_id.as_slice());
    assert!(verify_tree_head(&public, &head), "the returned head is itself signed");
    assert!(verify_signature(&public, &revocation_feed_digest(&entries, &head), &feed.signature));
    let other_size = SignedTreeHead { tree_size: head.tree_size - 1, ..head.clone() };
    assert!(!verify_signature(&public, &revocation_feed_digest(&entries, &other_size), &feed.signature));

    // FetchCapsule: inclusion at the signed head, consistency from the capsule's size to it.
    let fetched = client
        .fetch_capsule(with_token(v2::FetchCapsuleRequest { claim_id: good.clone() }, AUDITOR))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.capsule_hash, sha256(&fetched.capsule_bytes).to_vec());
    assert_eq!(fetched.capsule_hash, certified.capsule_hash);
    let sth = sth_of(fetched.signed_tree_head.as_ref().unwrap());
    assert!(verify_tree_head(&public, &sth));
    let inclusion = fetched.inclusion_proof.unwrap();
    assert_eq!(inclusion.leaf_hash, leaf_hash(&fetched.capsule_bytes).to_vec());
    let path: Vec<[u8; 32]> = inclusion.audit_path.iter().map(|h| h.clone().try_into().unwrap()).collect();
    verify_inclusion(
        &leaf_hash(&fetched.capsule_bytes),
        inclusion.leaf_index,
        inclusion.tree_size,
        &path,
        &sth.root_hash,
    )
    .unwrap();
    let consistency = fetched.consistency_proof.unwrap();
    assert!(consistency.new_tree_size > consistency.old_tree_size, "the log grew after the capsule");
    let first = client
        .get_consistency_proof(with_token(
            v2::GetConsistencyProofRequest {
                first_tree_size: consistency.old_tree_size,
                second_tree_size: consistency.new_tree_size,
            },
            AUDITOR,
        ))
        .await
        .unwrap()
        .into_inner();
    let old_root: [u8; 32] = first.first_root_hash.try_into().unwrap();
    let path: Vec<[u8; 32]> = consistency.path.iter().map(|h| h.clone().try_into().unwrap()).collect();
    verify_consistency(consistency.old_tree_size, consistency.new_tree_size, &old_root, &sth.root_hash, &path).unwrap();

    // One access line per RPC, with the principal as a digest and never the token itself.
    let log = daemon.log();
    assert!(log.contains(r#"method="/evidenceos.v2.EvidenceOS/ExecuteClaimV2""#), "{log}");
    assert!(log.contains(r#"code="7""#), "the PERMISSION_DENIED above is logged");
    assert!(log.contains(r#"principal="bearer:"#));
    for secret in [AGENT, OTHER_AGENT, AUDITOR] {
        assert!(!log.contains(secret), "a token reached the log");
    }

    // Everything acknowledged survives a restart.
    drop(client);
    daemon.stop();
    let daemon = start(&data, tmp.path());
    let mut client = EvidenceOsClient::connect(daemon.addr.clone()).await.unwrap();
    let after = client
        .get_capsule(with_token(v2::GetCapsuleRequest { claim_id: good.clone() }, AUDITOR))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.capsule_bytes, fetched.capsule_bytes);
    let feed =
        client.get_revocation_feed(with_token(v2::GetRevocationFeedRequest {}, AUDITOR)).await.unwrap().into_inner();
    assert_eq!(feed.entries.len(), 1);
    drop(client);
    daemon.stop();
}

#[tokio::test]
async fn a_signed_nullspec_activated_by_sighup_judges_the_next_claim() {
    use evidenceos_core::keys::{key_id_for_seed, public_key_for_seed};
    use evidenceos_core::nullspec::{NullSpecContract, SCHEMA, from_calibration_buckets};
    use evidenceos_core::oracle::OracleResolution;

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    install_demo_holdout(&data);
    let daemon = start(&data, tmp.path());
    let mut client = EvidenceOsClient::connect(daemon.addr.clone()).await.unwrap();

    // The operator publishes a key and a contract for (accuracy, demo) at the fast lane's
    // oracle resolution (4 symbols, epoch 0, TTL 1, delta 0).
    let seed = [0x42; 32];
    let kid = key_id_for_seed(&seed).to_hex();
    let trusted = format!(r#"{{"keys":{{"{kid}":"{}"}}}}"#, hex::encode(public_key_for_seed(&seed)));
    std::fs::write(data.join("trusted_oracle_keys.json"), trusted).unwrap();
    let resolution = OracleResolution::new(4, None, 0, 1, 0.0).unwrap().hash();
    let (kind, eprocess) = from_calibration_buckets(&[40, 30, 20, 0], 0.5);
    let unsigned = NullSpecContract {
        schema: SCHEMA.to_string(),
        nullspec_id: [0; 32],
        oracle_id: "accuracy".into(),
        oracle_resolution_hash: resolution,
        holdout_handle: "demo".into(),
        epoch_created: 0,
        ttl_epochs: 10,
        kind,
        eprocess,
        calibration_manifest_hash: None,
        created_by: kid,
        signature_ed25519: Vec::new(),
    };
    let contract = NullSpecContract::sign(unsigned, &seed);
    let id = hex::encode(contract.nullspec_id);
    std::fs::create_dir_all(data.join("nullspec")).unwrap();
    std::fs::write(data.join(format!("nullspec/{id}.json")), contract.to_json()).unwrap();
    let map =
        format!(r#"{{"mappings":[{{"oracle_id":"accuracy","holdout_handle":"demo","nullspec_id_hex":"{id}"}}]}}"#);
    std::fs::write(data.join("nullspec/active_map.json"), map).unwrap();
    daemon.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !daemon.log().contains("nullspecs_after=1") {
        assert!(std::time::Instant::now() < deadline, "no config_reload:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (claim, executed) = run_claim(&mut client, "under-contract", "fast", "claim_mod3", &[]).await;
    assert_eq!(executed.reason_codes[0], executed.decision as u32);
    let capsule =
        client.get_capsule(with_token(v2::GetCapsuleRequest { claim_id: claim }, AUDITOR)).await.unwrap().into_inner();
    let capsule: serde_json::Value = serde_json::from_slice(&capsule.capsule_bytes).unwrap();
    assert_eq!(capsule["nullspec_id_hex"], id.as_str(), "judged under the activated contract");
    assert_eq!(capsule["eprocess_kind"], "DirichletMultinomialMixture");
    drop(client);
    daemon.stop();
}

/// Restoring `etl.log` (and keys) without `journal.log`, `state.json` and the row files must not cost the signed
/// history: the daemon refuses to start, says why and what to do, and leaves the log untouched.
#[tokio::test]
async fn a_log_restored_without_its_journal_refuses_to_start_and_stays_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    install_demo_holdout(&data);
    let daemon = start(&data, tmp.path());
    let mut client = EvidenceOsClient::connect(daemon.addr.clone()).await.unwrap();
    run_claim(&mut client, "restored-a", "fast", "claim_all_zero", &[]).await;
    run_claim(&mut client, "restored-b", "fast", "claim_all_zero", &[]).await;
    let head = client.get_signed_tree_head(with_token(v2::GetSignedTreeHeadRequest {}, AGENT)).await.unwrap();
    let leaves = head.into_inner().tree_size;
    assert_eq!(leaves, 2, "one capsule per claim");
    daemon.stop();

    // A backup made without journal.log: the journal and the checkpoint are gone.
    let journal = std::fs::read(data.join("journal.log")).unwrap();
    let checkpoint = std::fs::read(data.join("state.json")).unwrap();
    let rows = std::fs::read(data.join("state.0.log")).unwrap();
    std::fs::remove_file(data.join("journal.log")).unwrap();
    std::fs::remove_file(data.join("state.json")).unwrap();
    std::fs::remove_file(data.join("state.0.log")).unwrap();
    let etl_before = std::fs::read(data.join("etl.log")).unwrap();
    let (status, stderr) = start_expecting_refusal(&data, tmp.path());
    assert!(!status.success(), "refused with a success status; stderr:\n{stderr}");
    assert!(stderr.contains(&format!("etl.log holds {leaves} leaves")), "{stderr}");
    assert!(stderr.contains(&format!("{leaves} unexplained leaves")), "{stderr}");
    assert!(stderr.contains("restore journal.log, state.json and the row files"), "{stderr}");
    assert_eq!(std::fs::read(data.join("etl.log")).unwrap(), etl_before, "etl.log must stay byte for byte");

    // With the whole backup back the daemon starts, and a leftover intent record of the
    // compatible implementation is named in the log rather than silently ignored.
    std::fs::write(data.join("journal.log"), journal).unwrap();
    std::fs::write(data.join("state.json"), checkpoint).unwrap();
    std::fs::write(data.join("state.0.log"), rows).unwrap();
    std::fs::write(data.join("pending_mutation.json"), b"{}").unwrap();
    let daemon = start(&data, tmp.path());
    let mut client = EvidenceOsClient::connect(daemon.addr.clone()).await.unwrap();
    let head = client.get_signed_tree_head(with_token(v2::GetSignedTreeHeadRequest {}, AGENT)).await.unwrap();
    assert_eq!(head.into_inner().tree_size, leaves);
    assert!(daemon.log().contains("pending_mutation_not_applied"), "{}", daemon.log());
    daemon.stop();
}

/// Runs the daemon on `data` and waits (bounded) for it to exit; a daemon that starts serving
/// instead is killed and fails the test.
fn start_expecting_refusal(data: &Path, log_dir: &Path) -> (std::process::ExitStatus, String) {
    let log = log_dir.join("refused.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_evidenceosd"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + support::START_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon started instead of refusing:\n{}", std::fs::read_to_string(&log).unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, std::fs::read_to_string(&log).unwrap())
}
