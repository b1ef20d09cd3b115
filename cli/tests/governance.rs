//! The seed operations guide, section by section, against a running daemon: every change made
//! with `evidenceosctl`, signed, recorded in the governance log, applied with SIGHUP (or a
//! restart for a new ETL key) and observed over gRPC. Then every refusal the tool promises,
//! each checked to leave every file of the data directory untouched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use evidenceos_core::etl::verify_tree_head;
use evidenceos_core::hash::sha256;
use evidenceos_core::keys::KeyId;
use evidenceos_grpc::v2;
use evidenceos_grpc::v2::evidence_os_client::EvidenceOsClient;
use serde_json::Value;
use tonic::Code;
use tonic::transport::Channel;

mod support;

use support::{Daemon, install_demo_holdout};

const AGENT: &str = "agent-secret";
const AUDITOR: &str = "auditor-secret";
const CTL_TIMEOUT: Duration = Duration::from_secs(60);
const RELOAD_TIMEOUT: Duration = Duration::from_secs(15);

struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// Runs `evidenceosctl ARGS`, bounded in time; inherits no EVIDENCEOS_* variables.
fn ctl(args: &[&str]) -> Ran {
    ctl_in(Path::new(env!("CARGO_MANIFEST_DIR")), args)
}

/// [`ctl`] with `cwd` as the current directory (for relative paths, as an operator types them).
fn ctl_in(cwd: &Path, args: &[&str]) -> Ran {
    let mut child = Command::new(env!("CARGO_BIN_EXE_evidenceosctl"))
        .args(args)
        .current_dir(cwd)
        .env_remove("EVIDENCEOS_DATA_DIR")
        .env_remove("EVIDENCEOS_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn evidenceosctl");
    let deadline = Instant::now() + CTL_TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "evidenceosctl {args:?} did not finish in {CTL_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output().unwrap();
    Ran {
        ok: output.status.success(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// `ctl` that must succeed; returns its JSON result.
fn ok(args: &[&str]) -> Value {
    let ran = ctl(args);
    assert!(ran.ok, "evidenceosctl {args:?} failed:\n{}", ran.stderr);
    ran.json()
}

/// `ctl` that must fail with one line on stderr containing `expected`.
fn refused(args: &[&str], expected: &str) {
    let ran = ctl(args);
    assert!(!ran.ok, "evidenceosctl {args:?} should have failed; stdout:\n{}", ran.stdout);
    assert!(ran.stdout.is_empty(), "a refusal prints no result: {}", ran.stdout);
    assert_eq!(ran.stderr.lines().count(), 1, "one-line error expected:\n{}", ran.stderr);
    assert!(ran.stderr.contains(expected), "expected {expected:?} in:\n{}", ran.stderr);
}

fn start(data: &Path, log_dir: &Path) -> Daemon {
    let env = [("EVIDENCEOS_AGENT_TOKENS", AGENT), ("EVIDENCEOS_AUDITOR_TOKENS", AUDITOR)];
    support::start_with(data, log_dir, &[], &env)
}

fn with_token<T>(message: T, token: &str, request_id: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    if let Some(id) = request_id {
        request.metadata_mut().insert("x-request-id", id.parse().unwrap());
    }
    request
}

/// A CreateClaimV2 for `name` on the demo holdout with `oracle_id`; `variant` varies the claim
/// id (same topic).
fn create_request(name: &str, oracle_id: &str, variant: u8) -> v2::CreateClaimV2Request {
    let mut request = support::claim_request(name, "fast", "demo");
    request.oracle_id = oracle_id.into();
    request.signals = Some(v2::TopicSignalsV2 { semantic_hash: vec![variant; 32], ..Default::default() });
    request
}

struct Client {
    grpc: EvidenceOsClient<Channel>,
}

impl Client {
    async fn connect(daemon: &Daemon) -> Self {
        Self { grpc: EvidenceOsClient::connect(daemon.addr.clone()).await.unwrap() }
    }

    /// Unique across clients: request ids are remembered across daemon restarts.
    fn request_id(&mut self) -> String {
        static REQUESTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        format!("governance-{}", REQUESTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }

    /// create → commit (claim_mod3) → freeze → seal; returns the claim id.
    async fn sealed(&mut self, name: &str, oracle_id: &str, variant: u8) -> Vec<u8> {
        let id = self.request_id();
        let created = self
            .grpc
            .create_claim_v2(with_token(create_request(name, oracle_id, variant), AGENT, Some(&id)))
            .await
            .unwrap()
            .into_inner();
        let module = wat::parse_file(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/claim_mod3.wat")).unwrap();
        let artifacts = vec![v2::Artifact { artifact_hash: sha256(&module).to_vec(), kind: "wasm".into() }];
        let claim_id = created.claim_id;
        let commit = v2::CommitArtifactsRequest { claim_id: claim_id.clone(), artifacts, wasm_module: module };
        self.grpc.commit_artifacts(with_token(commit, AGENT, None)).await.unwrap();
        let freeze = v2::FreezeGatesRequest { claim_id: claim_id.clone() };
        self.grpc.freeze_gates(with_token(freeze, AGENT, None)).await.unwrap();
        let seal = v2::SealClaimRequest { claim_id: claim_id.clone() };
        self.grpc.seal_claim(with_token(seal, AGENT, None)).await.unwrap();
        claim_id
    }

    async fn execute(&mut self, claim_id: &[u8]) -> Result<v2::ExecuteClaimV2Response, tonic::Status> {
        let id = self.request_id();
        let request = v2::ExecuteClaimV2Request { claim_id: claim_id.to_vec() };
        self.grpc.execute_claim_v2(with_token(request, AGENT, Some(&id))).await.map(tonic::Response::into_inner)
    }

    /// Seals and executes; returns the execution and the capsule as JSON.
    async fn run(&mut self, name: &str, oracle_id: &str, variant: u8) -> (v2::ExecuteClaimV2Response, Value) {
        let claim_id = self.sealed(name, oracle_id, variant).await;
        let executed = self.execute(&claim_id).await.unwrap();
        let capsule = self
            .grpc
            .get_capsule(with_token(v2::GetCapsuleRequest { claim_id }, AUDITOR, None))
            .await
            .unwrap()
            .into_inner();
        (executed, serde_json::from_slice(&capsule.capsule_bytes).unwrap())
    }

    async fn tree_head(&mut self) -> v2::GetSignedTreeHeadResponse {
        self.grpc
            .get_signed_tree_head(with_token(v2::GetSignedTreeHeadRequest {}, AUDITOR, None))
            .await
            .unwrap()
            .into_inner()
    }

    async fn public_key(&mut self, key_id: &[u8]) -> [u8; 32] {
        let request = v2::GetPublicKeyRequest { key_id: key_id.to_vec() };
        let reply = self.grpc.get_public_key(with_token(request, AUDITOR, None)).await.unwrap().into_inner();
        reply.ed25519_public_key.try_into().unwrap()
    }
}

fn sth_of(reply: &v2::GetSignedTreeHeadResponse) -> evidenceos_core::SignedTreeHead {
    evidenceos_core::SignedTreeHead {
        tree_size: reply.tree_size,
        root_hash: reply.root_hash.clone().try_into().unwrap(),
        key_id: KeyId(reply.key_id.clone().try_into().unwrap()),
        signature: reply.signature.clone().try_into().unwrap(),
    }
}

/// SIGHUP, then wait for the next `config_reload` line and check it shows `marker`.
async fn reload(daemon: &Daemon, marker: &str) {
    let reloads = |log: &str| log.lines().filter(|l| l.contains("operator files reloaded")).count();
    let before = reloads(&daemon.log());
    daemon.signal("HUP");
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    loop {
        let log = daemon.log();
        assert!(!log.contains("config_reload_rejected"), "reload rejected:\n{log}");
        if reloads(&log) > before {
            let last = log.lines().rev().find(|l| l.contains("operator files reloaded")).unwrap();
            assert!(last.contains(marker), "expected {marker} in {last}");
            return;
        }
        assert!(Instant::now() < deadline, "no config_reload:\n{log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn the_operations_guide_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    install_demo_holdout(&data);
    let d = path(&data);
    let mut daemon = start(&data, tmp.path());
    let mut client = Client::connect(&daemon).await;
    let (warm, _) = client.run("warm-up", "default", 1).await;
    assert_eq!(warm.state, 6, "certified under the development NullSpec");

    // Operator governance signing keys: generate offline, publish the public key, reload.
    let operator_key = tmp.path().join("operator.key");
    let generated = ok(&["keys", "generate", "--out", path(&operator_key)]);
    let public = generated["public_key_hex"].as_str().unwrap();
    std::fs::write(data.join("trusted_oracle_keys.json"), format!(r#"{{"keys":{{"ops":"{public}"}}}}"#)).unwrap();
    reload(&daemon, "oracles_after=0").await;
    let signer = ["--signing-key", path(&operator_key), "--key-id", "ops"];

    // Daemon ETL signing keys: a fresh seed, activated; it signs after the restart and the old
    // tree head still verifies under the old key.
    let old_head = client.tree_head().await;
    assert!(old_head.tree_size >= 1);
    let etl_key = tmp.path().join("etl-next.key");
    let next_id = ok(&["keys", "generate", "--out", path(&etl_key)])["key_id"].as_str().unwrap().to_string();
    let activated = ok(&[&["keys", "activate", "--data-dir", d, "--key-file", path(&etl_key)][..], &signer].concat());
    assert_eq!(activated["active_key_id"], next_id.as_str());
    assert_eq!(activated["previous_key_id"], daemon.key_id.as_str());
    let listed = ok(&["keys", "list", "--data-dir", d]);
    assert_eq!(listed["etl_signing_keys"].as_array().unwrap().len(), 2);
    assert_eq!(listed["active_key_id"], next_id.as_str());
    assert_eq!(client.tree_head().await.key_id, old_head.key_id, "the running daemon keeps its key until restart");
    drop(client);
    daemon.stop();
    daemon = start(&data, tmp.path());
    assert_eq!(daemon.key_id, next_id);
    let mut client = Client::connect(&daemon).await;
    let new_head = client.tree_head().await;
    assert_eq!(hex::encode(&new_head.key_id), next_id);
    let new_public = client.public_key(&new_head.key_id).await;
    assert!(verify_tree_head(&new_public, &sth_of(&new_head)));
    let old_public = client.public_key(&old_head.key_id).await;
    assert!(verify_tree_head(&old_public, &sth_of(&old_head)), "old tree heads stay verifiable");

    // NullSpec lifecycle: the resolution claims pin, a contract from calibration counts,
    // install, activate, reload; the next claim is judged under it.
    let shown = ok(&["oracle", "show", "--data-dir", d, "--oracle-id", "accuracy", "--num-symbols", "4"]);
    let resolution = shown["resolution_hash_hex"].as_str().unwrap().to_string();
    let buckets = tmp.path().join("buckets.json");
    std::fs::write(&buckets, r#"{"counts":[40,30,20,0]}"#).unwrap();
    let contract = tmp.path().join("contract.json");
    let created = ok(&[
        &[
            "nullspec",
            "create",
            "--oracle-id",
            "accuracy",
            "--holdout",
            "demo",
            "--resolution-hash",
            &resolution,
            "--from-calibration-buckets",
            path(&buckets),
            "--alpha",
            "0.5",
            "--ttl-epochs",
            "10",
            "--out",
            path(&contract),
        ][..],
        &signer,
    ]
    .concat());
    let nullspec_id = created["nullspec_id_hex"].as_str().unwrap().to_string();
    let installed =
        ok(&[&["nullspec", "install", "--data-dir", d, "--contract", path(&contract)][..], &signer].concat());
    assert_eq!(installed["nullspec_id_hex"], nullspec_id.as_str());
    let activate = ["nullspec", "activate", "--data-dir", d, "--oracle-id", "accuracy", "--holdout", "demo"];
    ok(&[&activate[..], &["--nullspec-id", &nullspec_id], &signer].concat());
    let listed = ok(&["nullspec", "list", "--data-dir", d]);
    assert_eq!(listed["nullspecs"][0]["active_for"][0]["oracle_id"], "accuracy");
    assert_eq!(ok(&["nullspec", "show", "--data-dir", d, "--nullspec-id", &nullspec_id])["contract"]["ttl_epochs"], 10);
    reload(&daemon, "active_nullspecs_after=1").await;
    let (_, capsule) = client.run("under-contract", "accuracy", 1).await;
    assert_eq!(capsule["nullspec_id_hex"], nullspec_id.as_str(), "judged under the activated contract");
    assert_eq!(capsule["eprocess_kind"], "DirichletMultinomialMixture");

    // Calibration and TTL: a signed record for a second oracle; claims sealed after the reload
    // pin its TTL and calibration (the resolution hash binds both).
    let calibrated = ["--data-dir", d, "--oracle-id", "calibrated"];
    ok(&[&["oracle", "set-ttl"][..], &calibrated, &["--new-oracle", "--ttl-epochs", "3"], &signer].concat());
    let calib = "cd".repeat(32);
    ok(&[&["oracle", "rotate-calibration"][..], &calibrated, &["--calib-hash", &calib], &signer].concat());
    let oracles = ok(&["oracle", "list", "--data-dir", d]);
    let names: Vec<&str> =
        oracles["oracles"].as_array().unwrap().iter().map(|o| o["oracle_id"].as_str().unwrap()).collect();
    assert_eq!(names, ["accuracy", "calibrated", "default"]);
    let pinned = ok(&[&["oracle", "show"][..], &calibrated].concat());
    assert_eq!(pinned["effective"]["ttl_epochs"], 3);
    assert_eq!(pinned["resolution"]["calibration_manifest_hash_hex"], calib.as_str());
    reload(&daemon, "oracles_after=1").await;
    let (_, capsule) = client.run("calibrated-claim", "calibrated", 1).await;
    assert_eq!(capsule["oracle_resolution_hash_hex"], pinned["resolution_hash_hex"]);
    assert_ne!(pinned["resolution_hash_hex"].as_str().unwrap(), resolution);

    // Epoch settlement: a claim sealed at epoch 0 with TTL 3 goes STALE at epoch 4.
    let waiting = client.sealed("sealed-before-advance", "calibrated", 1).await;
    let advanced = ok(&[&["epoch", "advance", "--data-dir", d, "--to", "4"][..], &signer].concat());
    assert_eq!((advanced["from_epoch"].as_u64(), advanced["epoch"].as_u64()), (Some(0), Some(4)));
    assert_eq!(ok(&["epoch", "show", "--data-dir", d])["epoch"], 4);
    reload(&daemon, "epoch_after=4").await;
    let stale = client.execute(&waiting).await.unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    assert!(stale.message().contains("STALE"), "{}", stale.message());

    // Canary operations: the first certification of a name sets its baseline; strong evidence
    // after it trips the canary; status reads it while the daemon runs; a signed reset is
    // recorded, applied by the daemon at reload, and certification resumes.
    let (first, _) = client.run("canary-probe", "calibrated", 1).await;
    assert_eq!(first.state, 6);
    let canary = ["--data-dir", d, "--claim-name", "canary-probe", "--holdout", "demo"];
    let status = ok(&[&["canary", "status"][..], &canary].concat());
    let seen = (status["frozen"].as_bool(), status["baseline_set"].as_bool(), status["e_drift"].as_f64());
    assert_eq!(seen, (Some(false), Some(true), Some(1.0)), "one certification never trips: {status}");
    let (tripping, _) = client.run("canary-probe", "calibrated", 4).await;
    assert_eq!(tripping.state, 6, "decided on the canary as it was");
    let status = ok(&[&["canary", "status"][..], &canary].concat());
    assert_eq!((status["frozen"].as_bool(), status["seen"].as_bool()), (Some(true), Some(true)), "{status}");
    let head = client.tree_head().await;
    assert!(head.tree_size > 5, "several executions are in the log: {}", head.tree_size);
    assert_eq!(status["as_of"]["tree_size"].as_u64(), Some(head.tree_size), "status reads the daemon's log: {status}");
    let (blocked, _) = client.run("canary-probe", "calibrated", 2).await;
    assert_eq!((blocked.decision, blocked.reason_codes.clone()), (2, vec![2, 91]), "rejected while frozen");
    let reset_doc = tmp.path().join("reset.json");
    let signed = ok(&[
        &["canary", "sign-reset"][..],
        &canary,
        &["--reason", "INC-42 drift investigated", "--out", path(&reset_doc)],
        &signer,
    ]
    .concat());
    let reset = ok(&[&["canary", "reset"][..], &canary, &["--governance-event", path(&reset_doc)]].concat());
    assert_eq!(reset["event_id"], signed["event_id"]);
    let status = ok(&[&["canary", "status"][..], &canary].concat());
    assert_eq!(status["frozen"], true, "not applied before the reload");
    assert_eq!(status["staged_reset_event_id"], signed["event_id"]);
    reload(&daemon, "canary_resets_after=1").await;
    let status = ok(&[&["canary", "status"][..], &canary].concat());
    let seen = (status["frozen"].as_bool(), status["e_drift"].as_f64(), status["baseline_set"].as_bool());
    assert_eq!(seen, (Some(false), Some(1.0), Some(true)), "a reset keeps the baseline: {status}");
    assert_eq!(status["as_of"]["tree_size"].as_u64(), Some(client.tree_head().await.tree_size), "{status}");
    assert_eq!(status["last_reset_event_id"], signed["event_id"]);
    assert!(status["staged_reset_event_id"].is_null());
    let (resumed, _) = client.run("canary-probe", "calibrated", 3).await;
    assert_eq!((resumed.state, resumed.decision), (6, 1), "certification resumes");

    // Governance events: one signed event per change, in order, all verified.
    let events = ok(&["governance", "events", "list", "--data-dir", d]);
    let types: Vec<&str> =
        events["events"].as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "key_rotated",
            "nullspec_install",
            "nullspec_activate",
            "oracle_ttl_set",
            "oracle_calibration_rotated",
            "epoch_advanced",
            "canary_reset"
        ]
    );
    let verified = ok(&["governance", "events", "verify", "--data-dir", d]);
    assert_eq!((verified["verified"].as_bool(), verified["events"].as_u64()), (Some(true), Some(7)));
    let reset_id = signed["event_id"].as_str().unwrap();
    let shown = ok(&["governance", "events", "show", "--data-dir", d, "--event-id", &reset_id[..12]]);
    assert_eq!(shown["event"]["payload"]["reason"], "INC-42 drift investigated");
    let audit = ok(&["audit", "--data-dir", d]);
    assert_eq!(audit["ok"], true, "{audit}");
    assert_eq!(audit["governance"]["events"], 7);

    drop(client);
    daemon.stop();
    let audit = ok(&["audit", "--data-dir", d]);
    assert_eq!((audit["ok"].as_bool(), audit["journal"]["records_replayed"].as_u64()), (Some(true), Some(0)));
    // Tampering with a recorded change is caught, with its location.
    let log_path = data.join("etl_governance_events.log");
    let original = std::fs::read_to_string(&log_path).unwrap();
    std::fs::write(&log_path, original.replacen("INC-42", "INC-43", 1)).unwrap();
    let ran = ctl(&["governance", "events", "verify", "--data-dir", d]);
    assert!(!ran.ok && ran.stderr.contains("line 7"), "{}", ran.stderr);
    assert!(!ctl(&["audit", "--data-dir", d]).ok);
    std::fs::write(&log_path, original).unwrap();
    std::fs::remove_file(data.join("nullspec/active_map.json")).unwrap();
    let ran = ctl(&["audit", "--data-dir", d]);
    assert!(
        !ran.ok && ran.stderr.contains("activation for (accuracy, demo) recorded but not in effect"),
        "{}",
        ran.stderr
    );
}

/// Every file under `root`, with its bytes.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

#[test]
fn bad_input_is_refused_with_one_line_and_no_file_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = path(&data);
    {
        let dir = evidenceos_io_sync::DataDir::open(&data).unwrap();
        dir.ensure_signing_key().unwrap();
    }
    install_demo_holdout(&data);
    let operator_key = tmp.path().join("operator.key");
    let public =
        ok(&["keys", "generate", "--out", path(&operator_key)])["public_key_hex"].as_str().unwrap().to_string();
    let stranger_key = tmp.path().join("stranger.key");
    ok(&["keys", "generate", "--out", path(&stranger_key)]);
    refused(&["keys", "generate", "--out", path(&stranger_key)], "File exists");
    std::fs::write(data.join("trusted_oracle_keys.json"), format!(r#"{{"keys":{{"ops":"{public}"}}}}"#)).unwrap();
    let signer = ["--signing-key", path(&operator_key), "--key-id", "ops"];
    // One good change of each kind that later refusals depend on.
    ok(&[&["oracle", "set-ttl", "--data-dir", d, "--oracle-id", "default", "--ttl-epochs", "2"][..], &signer].concat());
    ok(&[&["epoch", "advance", "--data-dir", d, "--to", "5"][..], &signer].concat());
    let resolution = "ab".repeat(32);
    let nullspec_create = ["nullspec", "create", "--oracle-id", "default", "--holdout", "demo"];
    let nullspec_create = [&nullspec_create[..], &["--resolution-hash", &resolution]].concat();
    let uniform = ["--p0", "0.25,0.25,0.25,0.25", "--alt", "0.1,0.1,0.1,0.7"];
    let create = |out: &Path, epoch: &str, ttl: &str| {
        let args = [&nullspec_create[..], &uniform, &["--ttl-epochs", ttl, "--epoch-created", epoch]].concat();
        ok(&[&args[..], &["--out", path(out)], &signer].concat())["nullspec_id_hex"].as_str().unwrap().to_string()
    };
    let expired_contract = tmp.path().join("expired.json");
    let expired_id = create(&expired_contract, "0", "1");
    ok(&[&["nullspec", "install", "--data-dir", d, "--contract", path(&expired_contract)][..], &signer].concat());
    let before = snapshot(&data);
    let wrong_key = ["--signing-key", path(&stranger_key), "--key-id", "ops"];
    let unknown_kid = ["--signing-key", path(&operator_key), "--key-id", "nobody"];
    let ttl = ["oracle", "set-ttl", "--data-dir", d, "--ttl-epochs", "4"];

    refused(&[&ttl[..], &["--oracle-id", "default"], &wrong_key].concat(), "wrong key file or --key-id");
    refused(&[&ttl[..], &["--oracle-id", "default"], &unknown_kid].concat(), "is not in trusted_oracle_keys.json");
    refused(&[&ttl[..], &["--oracle-id", "nosuch"], &signer].concat(), "unknown oracle \"nosuch\"");
    refused(
        &[
            &ttl[..],
            &["--oracle-id", "default"],
            &["--signing-key", path(&data.join("trusted_oracle_keys.json"))],
            &["--key-id", "ops"],
        ]
        .concat(),
        "expected a raw 32-byte Ed25519 seed",
    );
    refused(
        &[&["oracle", "set-ttl", "--data-dir", d, "--oracle-id", "default", "--ttl-epochs", "2"][..], &signer].concat(),
        "already has ttl_epochs 2",
    );
    refused(
        &[
            &["oracle", "rotate-calibration", "--data-dir", d, "--oracle-id", "default", "--calib-hash", "xyz"][..],
            &signer,
        ]
        .concat(),
        "64 hex",
    );
    refused(
        &[&["epoch", "advance", "--data-dir", d, "--to", "5"][..], &signer].concat(),
        "must be greater than the current epoch 5",
    );
    refused(&[&["epoch", "advance", "--data-dir", d, "--to", "3"][..], &signer].concat(), "must be greater");
    refused(
        &[&["epoch", "advance", "--data-dir", path(&tmp.path().join("nowhere")), "--to", "9"][..], &signer].concat(),
        "not an EvidenceOS data directory",
    );
    let activate = ["nullspec", "activate", "--data-dir", d, "--oracle-id", "default", "--holdout", "demo"];
    refused(&[&activate[..], &["--nullspec-id", &expired_id], &signer].concat(), "expired at epoch 2");
    refused(&[&activate[..], &["--nullspec-id", &"00".repeat(32)], &signer].concat(), "is not installed");
    refused(
        &[&["nullspec", "install", "--data-dir", d, "--contract", path(&expired_contract)][..], &signer].concat(),
        "already installed",
    );
    let forged = tmp.path().join("forged.json");
    let text = std::fs::read_to_string(&expired_contract).unwrap();
    std::fs::write(&forged, text.replace("\"ttl_epochs\":1", "\"ttl_epochs\":100")).unwrap();
    refused(
        &[&["nullspec", "install", "--data-dir", d, "--contract", path(&forged)][..], &signer].concat(),
        "nullspec id mismatch",
    );
    let buckets = tmp.path().join("bad-buckets.json");
    std::fs::write(&buckets, r#"{"counts":[1]}"#).unwrap();
    let bad_create = [&nullspec_create[..], &["--ttl-epochs", "1"]].concat();
    refused(
        &[&bad_create[..], &["--from-calibration-buckets", path(&buckets), "--alpha", "0.5"], &signer].concat(),
        "need 2..=4096 bucket counts",
    );
    refused(&[&bad_create[..], &["--p0", "0.5,0.5", "--alt", "0.5,0.6"], &signer].concat(), "invalid parameters");

    // Canary resets: unsigned, forged, for another canary, replayed, stale, or of a canary that
    // never tripped.
    let canary = ["--data-dir", d, "--claim-name", "probe", "--holdout", "demo"];
    let reset_doc = tmp.path().join("reset.json");
    ok(&[&["canary", "sign-reset"][..], &canary, &["--reason", "test", "--out", path(&reset_doc)], &signer].concat());
    let reset = |doc: &Path, claim: &str| {
        ctl(&[
            "canary",
            "reset",
            "--data-dir",
            d,
            "--claim-name",
            claim,
            "--holdout",
            "demo",
            "--governance-event",
            path(doc),
        ])
    };
    let document: Value = serde_json::from_slice(&std::fs::read(&reset_doc).unwrap()).unwrap();
    let mut unsigned = document.clone();
    unsigned["signature_ed25519"] = Value::String(String::new());
    let unsigned_doc = tmp.path().join("unsigned.json");
    std::fs::write(&unsigned_doc, unsigned.to_string()).unwrap();
    assert!(reset(&unsigned_doc, "probe").stderr.contains("bad signature"));
    let mut forged = document.clone();
    forged["payload"]["claim_name"] = Value::String("other".into());
    let forged_doc = tmp.path().join("forged-reset.json");
    std::fs::write(&forged_doc, forged.to_string()).unwrap();
    assert!(reset(&forged_doc, "other").stderr.contains("event_id does not match"));
    assert!(reset(&reset_doc, "other").stderr.contains("the event resets probe/demo, not other/demo"));
    assert!(reset(&reset_doc, "probe").stderr.contains("is not frozen; there is nothing to reset"));
    assert_eq!(snapshot(&data), before, "no refused command changed any file");

    // A reset signed before the log moved on must be signed again.
    ok(&[&ttl[..], &["--oracle-id", "default"], &signer].concat());
    assert!(reset(&reset_doc, "probe").stderr.contains("sign it again"));
    let verified = ok(&["governance", "events", "verify", "--data-dir", d]);
    assert_eq!(verified["events"], 4, "{verified}");
    for sub in [
        &["keys", "generate"][..],
        &["keys", "activate"],
        &["nullspec", "create"],
        &["nullspec", "activate"],
        &["oracle", "set-ttl"],
        &["oracle", "rotate-calibration"],
        &["epoch", "advance"],
        &["canary", "status"],
        &["canary", "reset"],
        &["governance", "events", "verify"],
        &["audit"],
    ] {
        let help = ok_text(&[sub, &["--help"]].concat());
        assert!(help.contains("--data-dir") || help.contains("--out"), "{sub:?} --help:\n{help}");
    }
}

fn ok_text(args: &[&str]) -> String {
    let ran = ctl(args);
    assert!(ran.ok, "{args:?}: {}", ran.stderr);
    ran.stdout
}

/// The guide's `--out FILE` commands, typed as written: a bare file name, in the current
/// directory. Each exits 0 and leaves a valid document; a second key generation refuses to
/// overwrite the key.
#[test]
fn every_out_of_the_guide_takes_a_bare_file_name() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path().join("operator");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&cwd).unwrap();
    evidenceos_io_sync::DataDir::open(&data).unwrap().ensure_signing_key().unwrap();
    install_demo_holdout(&data);
    let run = |args: &[&str]| {
        let ran = ctl_in(&cwd, args);
        assert!(ran.ok && ran.stderr.is_empty(), "evidenceosctl {args:?} failed:\n{}", ran.stderr);
        ran.json()
    };

    let generated = run(&["keys", "generate", "--out", "ops.key"]);
    let seed: [u8; 32] = std::fs::read(cwd.join("ops.key")).unwrap().try_into().expect("a 32-byte seed");
    let public = evidenceos_core::keys::public_key_for_seed(&seed);
    assert_eq!(generated["public_key_hex"], hex::encode(public));
    let again = ctl_in(&cwd, &["keys", "generate", "--out", "ops.key"]);
    assert!(!again.ok && again.stderr.contains("File exists"), "a key is never overwritten: {}", again.stderr);
    assert_eq!(std::fs::read(cwd.join("ops.key")).unwrap(), seed);
    std::fs::write(data.join("trusted_oracle_keys.json"), format!(r#"{{"keys":{{"ops":"{}"}}}}"#, hex::encode(public)))
        .unwrap();
    let trusted = BTreeMap::from([("ops".to_string(), public)]);
    let signer = ["--signing-key", "ops.key", "--key-id", "ops"];

    let resolution = "ab".repeat(32);
    let create = ["nullspec", "create", "--oracle-id", "default", "--holdout", "demo", "--resolution-hash"];
    let fixed = ["--p0", "0.25,0.25,0.25,0.25", "--alt", "0.1,0.1,0.1,0.7", "--ttl-epochs", "10"];
    let created = run(&[&create[..], &[&resolution], &fixed, &signer, &["--out", "contract.json"]].concat());
    let contract =
        evidenceos_core::nullspec::NullSpecContract::from_json(&std::fs::read(cwd.join("contract.json")).unwrap())
            .expect("a NullSpec contract");
    contract.verify(&trusted).expect("signed by ops");
    assert_eq!(created["nullspec_id_hex"], hex::encode(contract.nullspec_id));

    let canary = ["--data-dir", path(&data), "--claim-name", "probe", "--holdout", "demo"];
    let signed =
        run(&[&["canary", "sign-reset"][..], &canary, &["--reason", "INC-1"], &signer, &["--out", "reset.json"]]
            .concat());
    let bytes = std::fs::read(cwd.join("reset.json")).unwrap();
    let event = evidenceos_core::governance::GovernanceEvent::from_json(bytes.strip_suffix(b"\n").unwrap())
        .expect("a governance event");
    event.verify(&trusted).expect("signed by ops");
    assert_eq!(signed["event_id"], event.event_id.as_str());
    assert_eq!(event.canary_reset().unwrap().claim_name, "probe");
}
