//! Starts the real `evidenceosd` on loopback with a temporary data directory and talks to it as a
//! client would. Every wait is bounded.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use evidenceos_core::SignedTreeHead;
use evidenceos_core::etl::verify_tree_head;
use evidenceos_core::keys::KeyId;
use evidenceos_grpc::{v1, v2};
use tonic::Code;

mod support;

use support::{Daemon, start};

async fn client(daemon: &Daemon) -> v2::evidence_os_client::EvidenceOsClient<tonic::transport::Channel> {
    v2::evidence_os_client::EvidenceOsClient::connect(daemon.addr.clone()).await.expect("connect")
}

async fn signed_tree_head(daemon: &Daemon) -> SignedTreeHead {
    let sth = client(daemon).await.get_signed_tree_head(v2::GetSignedTreeHeadRequest {}).await.unwrap().into_inner();
    SignedTreeHead {
        tree_size: sth.tree_size,
        root_hash: sth.root_hash.try_into().unwrap(),
        key_id: KeyId(sth.key_id.try_into().unwrap()),
        signature: sth.signature.try_into().unwrap(),
    }
}

async fn public_key(daemon: &Daemon, key_id: &[u8]) -> Result<[u8; 32], tonic::Status> {
    let reply = client(daemon).await.get_public_key(v2::GetPublicKeyRequest { key_id: key_id.to_vec() }).await?;
    let reply = reply.into_inner();
    assert_eq!(KeyId::of_public_key(&reply.ed25519_public_key.clone().try_into().unwrap()).0.to_vec(), reply.key_id);
    Ok(reply.ed25519_public_key.try_into().unwrap())
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn first_start_creates_keys_and_serves_a_verifiable_empty_tree_head() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let daemon = start(&data, tmp.path());

    let key_file = data.join("keys").join(format!("{}.key", daemon.key_id));
    assert_eq!(mode(&key_file), 0o600);
    assert_eq!(std::fs::read(&key_file).unwrap().len(), 32);
    assert_eq!(std::fs::read_to_string(data.join("keys/active_key_id")).unwrap(), format!("{}\n", daemon.key_id));

    let sth = signed_tree_head(&daemon).await;
    assert_eq!(sth.tree_size, 0);
    assert_eq!(sth.root_hash, evidenceos_core::hash::sha256(b""));
    assert_eq!(sth.key_id.to_hex(), daemon.key_id);
    let public = public_key(&daemon, &[]).await.unwrap();
    assert!(verify_tree_head(&public, &sth), "STH must verify with the key from GetPublicKey");
    assert_eq!(public_key(&daemon, &sth.key_id.0).await.unwrap(), public);
    assert_eq!(public_key(&daemon, &[9; 32]).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(public_key(&daemon, &[9; 3]).await.unwrap_err().code(), Code::InvalidArgument);

    let mut client = client(&daemon).await;
    let info = client.get_server_info(v2::GetServerInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.protocol_semver, "2.1.0");
    assert_eq!(info.proto_hash.len(), 64);
    assert_eq!(client.health(v2::HealthRequest {}).await.unwrap().into_inner().status, "SERVING");
    let status = client.create_claim(v2::CreateClaimRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "empty ids are malformed");
    // No authentication configured: the caller is the anonymous agent, never an operator or auditor.
    let grant = v2::GrantCreditRequest { principal_id: "p".into(), amount: 1, reason: "r".into() };
    assert_eq!(client.grant_credit(grant).await.unwrap_err().code(), Code::PermissionDenied);
    let proof = v2::GetInclusionProofRequest { leaf_index: 0 };
    assert_eq!(client.get_inclusion_proof(proof).await.unwrap_err().code(), Code::PermissionDenied);

    let mut legacy = v1::evidence_os_client::EvidenceOsClient::connect(daemon.addr.clone()).await.unwrap();
    assert_eq!(legacy.health(v2::HealthRequest {}).await.unwrap().into_inner().status, "SERVING");
    let legacy_sth = legacy.get_signed_tree_head(v2::GetSignedTreeHeadRequest {}).await.unwrap().into_inner();
    assert_eq!(legacy_sth.signature, sth.signature.to_vec());

    let channel = tonic::transport::Endpoint::from_shared(daemon.addr.clone()).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let service = "evidenceos.v2.EvidenceOS".to_string();
    let serving = health.check(tonic_health::pb::HealthCheckRequest { service }).await.unwrap().into_inner();
    assert_eq!(serving.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

    daemon.stop();
    assert!(data.join("state.json").exists());
}

#[tokio::test]
async fn one_daemon_per_directory_and_a_killed_one_leaves_no_stale_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut first = start(&data, tmp.path());

    let log = tmp.path().join("second.log");
    let second = Command::new(env!("CARGO_BIN_EXE_evidenceosd"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .status()
        .unwrap();
    assert!(!second.success());
    let message = std::fs::read_to_string(&log).unwrap();
    assert!(message.contains("locked by another running evidenceosd"), "{message}");

    first.signal("KILL");
    first.wait();
    let restarted = start(&data, tmp.path());
    assert_eq!(restarted.key_id, first.key_id, "the existing key is reused");
    let sth = signed_tree_head(&restarted).await;
    assert!(verify_tree_head(&public_key(&restarted, &[]).await.unwrap(), &sth));
    restarted.stop();
}

#[tokio::test]
async fn rotated_out_keys_stay_available_after_activating_a_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let daemon = start(&data, tmp.path());
    let old_sth = signed_tree_head(&daemon).await;
    let old_public = public_key(&daemon, &[]).await.unwrap();
    daemon.stop();

    let new_id = support::activate_new_signing_key(&data, [0x5a; 32]);

    let daemon = start(&data, tmp.path());
    assert_eq!(daemon.key_id, new_id.to_hex());
    let new_sth = signed_tree_head(&daemon).await;
    assert_eq!(new_sth.key_id, new_id);
    assert!(verify_tree_head(&public_key(&daemon, &[]).await.unwrap(), &new_sth));
    let served_old = public_key(&daemon, &old_sth.key_id.0).await.unwrap();
    assert_eq!(served_old, old_public);
    assert!(verify_tree_head(&served_old, &old_sth), "old tree heads stay verifiable");
    daemon.stop();
}

#[tokio::test]
async fn a_world_readable_key_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let daemon = start(&data, tmp.path());
    let key_path = data.join("keys").join(format!("{}.key", daemon.key_id));
    daemon.stop();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_evidenceosd"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("chmod 600"));
}

#[tokio::test]
async fn a_request_one_byte_over_the_limit_is_refused_and_the_daemon_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let limit = 2048usize;
    let daemon = support::start_with(&tmp.path().join("data"), tmp.path(), &["--max-request-bytes", "2048"], &[]);
    let mut client = client(&daemon).await;
    let over = client.commit_artifacts(support::commit_of_size(limit + 1)).await.unwrap_err();
    assert_eq!(over.code(), Code::ResourceExhausted, "{over:?}");
    let at_limit = client.commit_artifacts(support::commit_of_size(limit)).await.unwrap_err();
    assert_ne!(at_limit.code(), Code::ResourceExhausted, "a request at the limit is decoded and judged");
    assert_eq!(client.health(v2::HealthRequest {}).await.unwrap().into_inner().status, "SERVING");
    daemon.stop();
}

#[tokio::test]
async fn hmac_signed_requests_are_verified_over_the_real_path() {
    use hmac::{KeyInit, Mac};
    let tmp = tempfile::tempdir().unwrap();
    let secret = "7365637265742d6b6579";
    let key_flag = format!("ops:{secret}:operator");
    let data = tmp.path().join("data");
    support::install_demo_holdout(&data);
    let daemon = support::start_with(&data, tmp.path(), &["--auth-hmac-key", &key_flag], &[]);
    let mut client = client(&daemon).await;
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let signed_as = |request_id: &str, signed_path: &str, key_id: &str, timestamp: u64| {
        let timestamp = timestamp.to_string();
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&hex::decode(secret).unwrap()).unwrap();
        mac.update(format!("{request_id}:{signed_path}:{timestamp}").as_bytes());
        let mut request = tonic::Request::new(v2::GrantCreditRequest {
            principal_id: "agent-1".into(),
            amount: 3,
            reason: "r".into(),
        });
        let metadata = request.metadata_mut();
        metadata.insert("x-request-id", request_id.parse().unwrap());
        metadata.insert("x-evidenceos-key-id", key_id.parse().unwrap());
        metadata.insert("x-evidenceos-timestamp", timestamp.parse().unwrap());
        metadata.insert(
            "x-evidenceos-signature",
            format!("sha256={}", hex::encode(mac.finalize().into_bytes())).parse().unwrap(),
        );
        request
    };
    let signed = |request_id: &str, signed_path: &str| signed_as(request_id, signed_path, "ops", now());
    let path = "/evidenceos.v2.EvidenceOS/GrantCredit";
    assert_eq!(client.grant_credit(signed("grant-1", path)).await.unwrap().into_inner().credit_balance, 3);
    let replay = client.grant_credit(signed("grant-1", path)).await.unwrap_err();
    assert_eq!(replay.code(), Code::Unauthenticated, "a request id is accepted once");
    // Signed for the v1 path but sent to v2: the MAC covers the path the server sees.
    let wrong_path = client.grant_credit(signed("grant-2", "/evidenceos.v1.EvidenceOS/GrantCredit")).await.unwrap_err();
    assert_eq!(wrong_path.code(), Code::Unauthenticated);
    let stale = client.grant_credit(signed_as("grant-3", path, "ops", now() - 301)).await.unwrap_err();
    assert_eq!(stale.code(), Code::Unauthenticated, "timestamps over 300 s old are refused");
    let unknown_key = client.grant_credit(signed_as("grant-4", path, "nobody", now())).await.unwrap_err();
    assert_eq!(unknown_key.code(), Code::Unauthenticated);
    let unsigned = client.health(v2::HealthRequest {}).await.unwrap_err();
    assert_eq!(unsigned.code(), Code::Unauthenticated);
    // On an idempotent method a repeated request id is a retry (SPEC §2.3): the idempotency
    // record answers it, so a failed call can be retried and a repeat has no second effect.
    let create_path = "/evidenceos.v2.EvidenceOS/CreateClaimV2";
    let create = |request_id: &str, message: v2::CreateClaimV2Request| {
        let timestamp = now().to_string();
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&hex::decode(secret).unwrap()).unwrap();
        mac.update(format!("{request_id}:{create_path}:{timestamp}").as_bytes());
        let mut request = tonic::Request::new(message);
        let metadata = request.metadata_mut();
        metadata.insert("x-request-id", request_id.parse().unwrap());
        metadata.insert("x-evidenceos-key-id", "ops".parse().unwrap());
        metadata.insert("x-evidenceos-timestamp", timestamp.parse().unwrap());
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        metadata.insert("x-evidenceos-signature", signature.parse().unwrap());
        request
    };
    let claim = support::claim_request("hmac-claim", "fast", "demo");
    let missing_holdout = support::claim_request("hmac-claim", "fast", "nowhere");
    let failed = client.create_claim_v2(create("create-1", missing_holdout)).await.unwrap_err();
    assert_eq!(failed.code(), Code::NotFound);
    let first = client.create_claim_v2(create("create-1", claim.clone())).await.unwrap().into_inner();
    let again = client.create_claim_v2(create("create-1", claim.clone())).await.unwrap().into_inner();
    assert_eq!(again, first, "a retry gets the recorded reply");
    let other = support::claim_request("other-claim", "fast", "demo");
    let conflicting = client.create_claim_v2(create("create-1", other)).await.unwrap_err();
    assert_eq!(conflicting.code(), Code::AlreadyExists, "other bytes under the same request id");
    daemon.stop();
}

#[tokio::test]
async fn sighup_applies_valid_operator_files_and_keeps_the_last_good_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let daemon = start(&data, tmp.path());
    let mut client = client(&daemon).await;
    let create = |holdout: &str, name: &str| {
        let mut request = tonic::Request::new(support::claim_request(name, "fast", holdout));
        request.metadata_mut().insert("x-request-id", name.parse().unwrap());
        request
    };
    let wait_for = |needle: &'static str, count: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while daemon.log().matches(needle).count() < count {
            assert!(std::time::Instant::now() < deadline, "no {needle} in:\n{}", daemon.log());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    assert_eq!(client.create_claim_v2(create("fresh", "before")).await.unwrap_err().code(), Code::NotFound);

    // A new holdout appears on disk; SIGHUP applies it.
    let labels: Vec<u8> = (0..16).map(|i| u8::from(i % 2 == 0)).collect();
    let files = evidenceos_core::holdout::holdout_files("fresh", [0xab; 32], &labels, 1_700_000_000);
    let dir = data.join("holdouts/fresh");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("manifest.json"), &files.manifest).unwrap();
    std::fs::write(dir.join("labels.bin"), &files.labels).unwrap();
    daemon.signal("HUP");
    wait_for("event=\"config_reload\"", 1);
    assert!(daemon.log().contains("holdouts_before=0 holdouts_after=1"), "{}", daemon.log());
    assert!(client.create_claim_v2(create("fresh", "after")).await.is_ok());

    // A tampered label file is refused as a whole; the last good configuration stays.
    std::fs::write(dir.join("labels.bin"), vec![1u8; 16]).unwrap();
    daemon.signal("HUP");
    wait_for("config_reload_rejected", 1);
    assert!(daemon.log().contains("holdouts/fresh"), "the rejection names the file");
    assert!(client.create_claim_v2(create("fresh", "still-there")).await.is_ok());

    // An active map edited by hand to point a contract signed for another holdout at "fresh"
    // is refused as a whole: a contract judges only the oracle and holdout it was signed for.
    let seed = [4u8; 32];
    let kid = evidenceos_core::keys::key_id_for_seed(&seed).to_hex();
    let public = hex::encode(evidenceos_core::keys::public_key_for_seed(&seed));
    std::fs::write(data.join("trusted_oracle_keys.json"), format!(r#"{{"keys":{{"{kid}":"{public}"}}}}"#)).unwrap();
    let (kind, eprocess) = evidenceos_core::nullspec::from_calibration_buckets(&[3, 1, 0, 0], 0.5);
    let unsigned = evidenceos_core::nullspec::NullSpecContract {
        schema: evidenceos_core::nullspec::SCHEMA.to_string(),
        nullspec_id: [0; 32],
        oracle_id: "accuracy".into(),
        oracle_resolution_hash: [7; 32],
        holdout_handle: "elsewhere".into(),
        epoch_created: 0,
        ttl_epochs: 2,
        kind,
        eprocess,
        calibration_manifest_hash: None,
        created_by: kid,
        signature_ed25519: Vec::new(),
    };
    let contract = evidenceos_core::nullspec::NullSpecContract::sign(unsigned, &seed);
    let id = hex::encode(contract.nullspec_id);
    std::fs::create_dir_all(data.join("nullspec")).unwrap();
    std::fs::write(data.join(format!("nullspec/{id}.json")), contract.to_json()).unwrap();
    std::fs::write(dir.join("labels.bin"), &files.labels).unwrap();
    let map =
        format!(r#"{{"mappings":[{{"oracle_id":"accuracy","holdout_handle":"fresh","nullspec_id_hex":"{id}"}}]}}"#);
    std::fs::write(data.join("nullspec/active_map.json"), map).unwrap();
    daemon.signal("HUP");
    wait_for("config_reload_rejected", 2);
    let expected = format!(
        "the entry for oracle \\\"accuracy\\\" and holdout \\\"fresh\\\" selects NullSpec {id}, which was signed for oracle \\\"accuracy\\\" and holdout \\\"elsewhere\\\""
    );
    assert!(daemon.log().contains(&expected), "the rejection names the entry and the contract:\n{}", daemon.log());
    assert!(!daemon.log().contains("active_nullspecs_after=1"), "{}", daemon.log());

    drop(client);
    daemon.stop();
    // SIGTERM left a clean checkpoint: the journal holds only its header.
    let journal = std::fs::read(data.join("journal.log")).unwrap();
    assert_eq!(evidenceos_core::frame::scan(&journal, 0).unwrap().records.len(), 1);
}

#[tokio::test]
async fn metrics_are_scraped_and_parsed() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let labels: Vec<u8> = (0..16).map(|i| u8::from(i % 2 == 0)).collect();
    let files = evidenceos_core::holdout::holdout_files("demo", [0xab; 32], &labels, 1_700_000_000);
    std::fs::create_dir_all(data.join("holdouts/demo")).unwrap();
    std::fs::write(data.join("holdouts/demo/manifest.json"), &files.manifest).unwrap();
    std::fs::write(data.join("holdouts/demo/labels.bin"), &files.labels).unwrap();
    let daemon = support::start_with(&data, tmp.path(), &["--metrics-listen", "127.0.0.1:0"], &[]);
    let mut client = client(&daemon).await;
    for _ in 0..3 {
        client.health(v2::HealthRequest {}).await.unwrap();
    }
    let mut create = tonic::Request::new(support::claim_request("metered", "fast", "demo"));
    create.metadata_mut().insert("x-request-id", "metered".parse().unwrap());
    client.create_claim_v2(create).await.unwrap();
    let denied = v2::GetInclusionProofRequest { leaf_index: 0 };
    assert_eq!(client.get_inclusion_proof(denied).await.unwrap_err().code(), Code::PermissionDenied);

    let log = daemon.log();
    let line = log.lines().find(|l| l.contains("metrics_listening")).expect("metrics address logged");
    let addr = line.split("addr=").nth(1).unwrap().split_whitespace().next().unwrap();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // Every sample line is `name{labels} value` with a numeric value.
    let mut samples = std::collections::BTreeMap::new();
    for line in body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("malformed sample {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("non-numeric value in {line:?}"));
        samples.insert(series.to_string(), value);
    }
    assert_eq!(samples[r#"evidenceos_rpc_requests_total{method="/evidenceos.v2.EvidenceOS/Health",code="0"}"#], 3.0);
    assert_eq!(
        samples[r#"evidenceos_rpc_requests_total{method="/evidenceos.v2.EvidenceOS/GetInclusionProof",code="7"}"#],
        1.0
    );
    assert_eq!(samples["evidenceos_etl_durable_tree_size"], 0.0);
    assert_eq!(samples["evidenceos_ledger_k_bits_charged"], 0.0);
    assert_eq!(samples[r#"evidenceos_pool_reservations{holdout="demo"}"#], 1.0, "the open claim's reservation");
    assert_eq!(samples[r#"evidenceos_pool_reservations_expired_total{holdout="demo"}"#], 0.0);
    assert!(samples.contains_key(r#"evidenceos_storage_batch_commands_bucket{le="+Inf"}"#));
    assert!(samples.keys().any(|k| k.starts_with("evidenceos_rpc_duration_seconds_bucket")));
    assert!(body.trim_end().ends_with("# EOF"));
    daemon.stop();
}

#[tokio::test]
async fn an_auditor_token_from_a_file_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("auditor.token");
    std::fs::write(&token_file, "file-token\n").unwrap();
    let flags = ["--auth-token-file", token_file.to_str().unwrap()];
    let daemon = support::start_with(&tmp.path().join("data"), tmp.path(), &flags, &[]);
    let mut client = client(&daemon).await;
    let mut request = tonic::Request::new(v2::GetInclusionProofRequest { leaf_index: 0 });
    request.metadata_mut().insert("authorization", "Bearer file-token".parse().unwrap());
    // An auditor may ask; the empty log has no leaf 0.
    assert_eq!(client.get_inclusion_proof(request).await.unwrap_err().code(), Code::NotFound);
    let anonymous = client.get_inclusion_proof(v2::GetInclusionProofRequest { leaf_index: 0 }).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    daemon.stop();
}

#[tokio::test]
async fn pool_share_and_canary_flags_are_journaled_for_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let flags = ["--max-principal-reservation-share-percent", "40", "--canary-alpha-drift-micros", "5000"];
    let daemon = support::start_with(&data, tmp.path(), &flags, &[]);
    daemon.stop();
    // The fresh journal's header carries the policy and the environment replay will use.
    let journal = std::fs::read(data.join("journal.log")).unwrap();
    let scan = evidenceos_core::frame::scan(&journal, 0).unwrap();
    let header: serde_json::Value = serde_json::from_slice(scan.records[0].payload).unwrap();
    assert_eq!(header["policy"]["max_principal_reservation_share_percent"], 40, "{header}");
    assert_eq!(header["environment"]["settings"]["canary_alpha_drift_micros"], 5000, "{header}");
    for flag in ["--canary-alpha-drift-micros", "--max-principal-reservation-share-percent"] {
        let refused = Command::new(env!("CARGO_BIN_EXE_evidenceosd")).args([flag, "0"]).stderr(Stdio::piped()).output();
        assert_eq!(refused.unwrap().status.code(), Some(2), "{flag} 0 is refused by the parser");
    }
}

/// Opens a `grpc.health.v1` Watch on `service` and returns the stream after its first status.
async fn watch_health(
    daemon: &Daemon,
    service: &str,
) -> (i32, tonic::Streaming<tonic_health::pb::HealthCheckResponse>) {
    let channel = tonic::transport::Endpoint::from_shared(daemon.addr.clone()).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest { service: service.to_string() };
    let mut stream = health.watch(request).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().expect("a first status");
    (first.status, stream)
}

/// The next status a Watch stream reports, waiting at most `secs`.
async fn next_status(stream: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>, secs: u64) -> i32 {
    let next = tokio::time::timeout(std::time::Duration::from_secs(secs), stream.message()).await;
    next.expect("a status change in time").expect("stream intact").expect("a status").status
}

#[tokio::test]
async fn health_is_not_serving_while_draining_and_after_a_storage_failure() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let (serving, not_serving) = (ServingStatus::Serving as i32, ServingStatus::NotServing as i32);

    // SIGTERM: health turns NOT_SERVING as the drain starts.
    let tmp = tempfile::tempdir().unwrap();
    let mut daemon = start(&tmp.path().join("data"), tmp.path());
    let (first, mut server_wide) = watch_health(&daemon, "").await;
    let (first_v2, mut evidenceos) = watch_health(&daemon, "evidenceos.v2.EvidenceOS").await;
    assert_eq!((first, first_v2), (serving, serving));
    daemon.signal("TERM");
    assert_eq!(next_status(&mut server_wide, 10).await, not_serving);
    assert_eq!(next_status(&mut evidenceos, 10).await, not_serving);
    assert!(daemon.wait().success());

    // A checkpoint that cannot be written (its temp path is a directory) fails the kernel's
    // storage: health turns NOT_SERVING and the daemon exits 2 for its supervisor.
    let data = tmp.path().join("failing");
    let env = [("EVIDENCEOS_OPERATOR_TOKENS", "operator-secret")];
    let mut daemon = support::start_with(&data, tmp.path(), &[], &env);
    std::fs::create_dir(data.join("state.json.tmp")).unwrap();
    let (first, mut stream) = watch_health(&daemon, "").await;
    assert_eq!(first, serving);
    let mut grant =
        tonic::Request::new(v2::GrantCreditRequest { principal_id: "a".into(), amount: 1, reason: "r".into() });
    grant.metadata_mut().insert("authorization", "Bearer operator-secret".parse().unwrap());
    client(&daemon).await.grant_credit(grant).await.unwrap();
    // The idle checkpoint comes 10 s after the last command.
    assert_eq!(next_status(&mut stream, 30).await, not_serving);
    assert_eq!(daemon.wait().code(), Some(2), "{}", daemon.log());
    assert!(daemon.log().contains("storage_failed"), "{}", daemon.log());
}
