//! `evidenceosd --runtime sync` as a client sees it: plain HTTP/1.1 with JSON bodies, the way curl
//! would send them, against the real binary; the same claim on the tokio daemon for comparison;
//! one data directory served by both runtimes in turn.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use evidenceos_core::hash::sha256;
use evidenceos_grpc::v2;
use evidenceos_grpc::v2::evidence_os_client::EvidenceOsClient;
use serde_json::{Value, json};

mod support;

use support::http::Answer;
use support::{Daemon, install_demo_holdout};

const AGENT: &str = "agent-secret";
const AUDITOR: &str = "auditor-secret";
const TOKENS: [(&str, &str); 2] = [("EVIDENCEOS_AGENT_TOKENS", AGENT), ("EVIDENCEOS_AUDITOR_TOKENS", AUDITOR)];
const IO_TIMEOUT: Duration = Duration::from_secs(30);

fn start_sync(data_dir: &Path, log_dir: &Path, extra: &[&str]) -> Daemon {
    let mut flags = vec!["--runtime", "sync"];
    flags.extend_from_slice(extra);
    support::start_with(data_dir, log_dir, &flags, &TOKENS)
}

fn start_tokio(data_dir: &Path, log_dir: &Path) -> Daemon {
    support::start_with(data_dir, log_dir, &["--runtime", "tokio"], &TOKENS)
}

impl Answer {
    /// The JSON body of a 200 answer; panics on anything else.
    fn ok_json(&self, method: &str) -> Value {
        assert_eq!(self.status, 200, "{method}: {}", String::from_utf8_lossy(&self.body));
        assert_eq!(self.header("content-type"), Some("application/json"));
        self.json()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?} {}", self.status, String::from_utf8_lossy(&self.body)))
    }
}

/// A keep-alive HTTP/1.1 connection, written by hand so the test sends exactly what curl would.
struct Http {
    stream: TcpStream,
    host: String,
}

impl Http {
    fn connect(daemon: &Daemon) -> Self {
        let host = daemon.addr.trim_start_matches("http://").to_string();
        let stream = TcpStream::connect(&host).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Self { stream, host }
    }

    fn send_raw(&mut self, bytes: &[u8]) -> Answer {
        self.stream.write_all(bytes).unwrap();
        self.read_answer()
    }

    fn read_answer(&mut self) -> Answer {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(self.stream.read(&mut byte).unwrap(), 1, "connection closed mid-response: {head:?}");
            head.push(byte[0]);
        }
        let mut answer = Answer::from_head(&String::from_utf8(head).unwrap(), Vec::new());
        let length: usize = answer.header("content-length").expect("content-length").parse().unwrap();
        answer.body = vec![0u8; length];
        self.stream.read_exact(&mut answer.body).unwrap();
        answer
    }

    fn post(&mut self, method: &str, content_type: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let bytes = self.request(method, content_type, headers, body);
        self.send_raw(&bytes)
    }

    /// The bytes of one POST, to send now or pipelined with others.
    fn request(&self, method: &str, content_type: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
        let mut request = format!(
            "POST /evidenceos.v2.EvidenceOS/{method} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
            self.host,
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body);
        bytes
    }

    /// The bytes of a JSON call with a bearer token (and `x-request-id` when given).
    fn json_request(&self, method: &str, token: &str, request_id: Option<&str>, body: &Value) -> Vec<u8> {
        let authorization = format!("Bearer {token}");
        let mut headers = vec![("Authorization", authorization.as_str())];
        headers.extend(request_id.map(|id| ("x-request-id", id)));
        self.request(method, "application/json", &headers, body.to_string().as_bytes())
    }

    /// A JSON call with a bearer token (and `x-request-id` when given); panics unless it is 200.
    fn call(&mut self, method: &str, token: &str, request_id: Option<&str>, body: &Value) -> Value {
        let bytes = self.json_request(method, token, request_id, body);
        self.send_raw(&bytes).ok_json(method)
    }
}

fn wasm(name: &str) -> Vec<u8> {
    wat::parse_file(Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../examples/{name}.wat"))).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

fn unb64(value: &Value) -> Vec<u8> {
    BASE64.decode(value.as_str().unwrap_or_default()).unwrap()
}

/// The README walkthrough's claim as JSON: create → commit → freeze → seal → execute → fetch.
/// Returns (ExecuteClaimV2 answer, FetchCapsule answer).
fn walkthrough_over_json(http: &mut Http, name: &str, module: &str) -> (Value, Value) {
    let (_, executed, fetched) = walkthrough_with_id(http, name, module);
    (executed, fetched)
}

/// [`walkthrough_over_json`], with the claim id (base64) first.
fn walkthrough_with_id(http: &mut Http, name: &str, module: &str) -> (String, Value, Value) {
    let create = json!({
        "claimName": name,
        "metadata": {"lane": "fast", "alphaMicros": 50000, "epochConfigRef": "epoch/v1", "outputSchemaId": "EVIDENCEOS_SC_V0"},
        "signals": {},
        "holdoutRef": "demo",
        "epochSize": "1",
        "oracleNumSymbols": 4,
        "accessCredit": "64",
        "oracleId": "accuracy"
    });
    let created = http.call("CreateClaimV2", AGENT, Some(&format!("create-{name}")), &create);
    assert_eq!(created["state"], "CLAIM_STATE_UNCOMMITTED", "{created}");
    let claim_id = created["claimId"].as_str().unwrap().to_string();
    let module = wasm(module);
    let commit = json!({
        "claimId": claim_id,
        "artifacts": [{"artifactHash": b64(&sha256(&module)), "kind": "wasm"}],
        "wasmModule": b64(&module)
    });
    assert_eq!(http.call("CommitArtifacts", AGENT, None, &commit)["state"], "CLAIM_STATE_COMMITTED");
    let id = json!({ "claimId": claim_id });
    assert_eq!(http.call("FreezeGates", AGENT, None, &id)["state"], "CLAIM_STATE_SEALED");
    assert_eq!(http.call("SealClaim", AGENT, None, &id)["state"], "CLAIM_STATE_SEALED");
    let executed = http.call("ExecuteClaimV2", AGENT, Some(&format!("execute-{name}")), &id);
    let fetched = http.call("FetchCapsule", AUDITOR, None, &id);
    (claim_id, executed, fetched)
}

fn with<T>(message: T, token: &str, request_id: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    if let Some(id) = request_id {
        request.metadata_mut().insert("x-request-id", id.parse().unwrap());
    }
    request
}

/// The same claim over gRPC with the prost messages.
async fn walkthrough_over_grpc(
    addr: &str,
    name: &str,
    module: &str,
) -> (v2::ExecuteClaimV2Response, v2::FetchCapsuleResponse) {
    let mut client = EvidenceOsClient::connect(addr.to_string()).await.unwrap();
    let mut create = support::claim_request(name, "fast", "demo");
    create.metadata.as_mut().unwrap().epoch_config_ref = "epoch/v1".into();
    create.metadata.as_mut().unwrap().output_schema_id = "EVIDENCEOS_SC_V0".into();
    create.signals = Some(v2::TopicSignalsV2::default());
    create.oracle_id = "accuracy".into();
    let created =
        client.create_claim_v2(with(create, AGENT, Some(&format!("create-{name}")))).await.unwrap().into_inner();
    let module = wasm(module);
    let artifacts = vec![v2::Artifact { artifact_hash: sha256(&module).to_vec(), kind: "wasm".into() }];
    let claim_id = created.claim_id;
    let commit = v2::CommitArtifactsRequest { claim_id: claim_id.clone(), artifacts, wasm_module: module };
    client.commit_artifacts(with(commit, AGENT, None)).await.unwrap();
    client.freeze_gates(with(v2::FreezeGatesRequest { claim_id: claim_id.clone() }, AGENT, None)).await.unwrap();
    client.seal_claim(with(v2::SealClaimRequest { claim_id: claim_id.clone() }, AGENT, None)).await.unwrap();
    let execute = v2::ExecuteClaimV2Request { claim_id: claim_id.clone() };
    let executed =
        client.execute_claim_v2(with(execute, AGENT, Some(&format!("execute-{name}")))).await.unwrap().into_inner();
    let fetched =
        client.fetch_capsule(with(v2::FetchCapsuleRequest { claim_id }, AUDITOR, None)).await.unwrap().into_inner();
    (executed, fetched)
}

/// Gives `to` the signing key of `from` (a daemon started on `from` generated it), so both
/// daemons sign with the same key.
fn copy_keys(from: &Path, to: &Path) {
    let keys = to.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    for entry in std::fs::read_dir(from.join("keys")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), keys.join(entry.file_name())).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_over_plain_http_json_gives_the_tokio_daemons_capsule_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (sync_dir, tokio_dir) = (tmp.path().join("sync"), tmp.path().join("tokio"));
    install_demo_holdout(&sync_dir);
    install_demo_holdout(&tokio_dir);
    let sync = start_sync(&sync_dir, tmp.path(), &[]);
    copy_keys(&sync_dir, &tokio_dir);
    let tokio = start_tokio(&tokio_dir, tmp.path());
    assert_eq!(sync.key_id, tokio.key_id);

    let mut http = Http::connect(&sync);
    let mut capsules = Vec::new();
    for (name, module, certified) in [("mod3", "claim_mod3", true), ("all-zero", "claim_all_zero", false)] {
        let (executed, fetched) = walkthrough_over_json(&mut http, name, module);
        let (grpc_executed, grpc_fetched) = walkthrough_over_grpc(&tokio.addr, name, module).await;
        assert_eq!(executed["certified"].as_bool().unwrap_or(false), certified, "{executed}");
        assert_eq!(grpc_executed.certified, certified);
        let capsule = unb64(&fetched["capsuleBytes"]);
        assert!(!capsule.is_empty());
        assert_eq!(capsule, grpc_fetched.capsule_bytes, "{name}: the same capsule bytes on both runtimes");
        assert_eq!(unb64(&executed["capsuleHash"]), grpc_executed.capsule_hash);
        assert_eq!(unb64(&fetched["capsuleHash"]), sha256(&capsule).to_vec());
        assert_eq!(unb64(&fetched["rootHash"]), grpc_fetched.root_hash, "{name}: the same ETL root");
        assert_eq!(
            fetched["signedTreeHead"]["signature"].as_str().map(|s| BASE64.decode(s).unwrap()),
            grpc_fetched.signed_tree_head.as_ref().map(|sth| sth.signature.clone()),
            "{name}: the same signed tree head"
        );
        capsules.push(capsule);
    }
    assert_ne!(capsules[0], capsules[1]);
    drop(http);
    sync.stop();
    tokio.stop();
    let journal = |dir: &Path| std::fs::read(dir.join("journal.log")).unwrap();
    let etl = |dir: &Path| std::fs::read(dir.join("etl.log")).unwrap();
    assert_eq!(etl(&sync_dir), etl(&tokio_dir), "byte-identical transparency logs");
    assert_eq!(journal(&sync_dir).len(), journal(&tokio_dir).len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_is_served_by_one_runtime_then_the_other() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    install_demo_holdout(&dir);

    let sync = start_sync(&dir, tmp.path(), &[]);
    let mut http = Http::connect(&sync);
    let (_, first) = walkthrough_over_json(&mut http, "first", "claim_mod3");
    drop(http);
    sync.stop();

    let tokio = start_tokio(&dir, tmp.path());
    let mut client = EvidenceOsClient::connect(tokio.addr.clone()).await.unwrap();
    let sth =
        client.get_signed_tree_head(with(v2::GetSignedTreeHeadRequest {}, AUDITOR, None)).await.unwrap().into_inner();
    assert_eq!(sth.tree_size.to_string(), first["treeSize"].as_str().unwrap(), "the tokio daemon sees the sync writes");
    let (_, second) = walkthrough_over_grpc(&tokio.addr, "second", "claim_all_zero").await;
    tokio.stop();

    let sync = start_sync(&dir, tmp.path(), &[]);
    let mut http = Http::connect(&sync);
    let sth = http.call("GetSignedTreeHead", AUDITOR, None, &json!({}));
    assert_eq!(sth["treeSize"].as_str().unwrap(), second.tree_size.to_string(), "and the sync daemon the tokio ones");
    let claim_id = json!({ "claimId": b64(&sha256(&[0])) });
    let missing = http.post(
        "FetchCapsule",
        "application/json",
        &[("Authorization", "Bearer auditor-secret")],
        claim_id.to_string().as_bytes(),
    );
    assert_eq!(missing.status, 404, "{}", String::from_utf8_lossy(&missing.body));
    drop(http);
    sync.stop();
}

#[test]
fn protobuf_bodies_keep_alive_errors_reload_and_shutdown() {
    use prost::Message as _;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    install_demo_holdout(&dir);
    let sync = start_sync(&dir, tmp.path(), &["--max-request-bytes", "4096"]);
    let mut http = Http::connect(&sync);
    let bearer = [("Authorization", "Bearer auditor-secret")];

    // application/proto on the same keep-alive connection as the JSON calls.
    let answer = http.post("GetServerInfo", "application/proto", &bearer, &[]);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("application/proto"));
    let info = v2::GetServerInfoResponse::decode(answer.body.as_slice()).unwrap();
    assert_eq!(info.protocol_semver, evidenceos_grpc::PROTOCOL_SEMVER);
    let health = http.call("Health", AUDITOR, None, &json!({}));
    assert_eq!(health["status"], "SERVING");

    let error = |answer: &Answer| (answer.status, answer.json()["code"].as_str().unwrap_or_default().to_string());
    let json_body = b"{}";
    let unauthenticated = http.post("GetSignedTreeHead", "application/json", &[], json_body);
    assert_eq!(error(&unauthenticated), (401, "unauthenticated".into()));
    let wrong_token =
        http.post("GetSignedTreeHead", "application/json", &[("Authorization", "Bearer nope")], json_body);
    assert_eq!(error(&wrong_token), (401, "unauthenticated".into()));
    let unknown = http.post("Nope", "application/json", &bearer, json_body);
    assert_eq!(unknown.status, 404);
    let wrong_type = http.post("Health", "text/plain", &bearer, json_body);
    assert_eq!(wrong_type.status, 415);
    let malformed = http.post("GetInclusionProof", "application/json", &bearer, b"{\"leafIndex\": ");
    assert_eq!(error(&malformed), (400, "invalid_argument".into()));
    let unknown_field = http.post("GetInclusionProof", "application/json", &bearer, b"{\"leaf\": 1}");
    assert_eq!(error(&unknown_field), (400, "invalid_argument".into()));
    let agent = [("Authorization", "Bearer agent-secret")];
    let no_request_id = http.post("ExecuteClaimV2", "application/json", &agent, b"{\"claimId\": \"AAAA\"}");
    assert_eq!(error(&no_request_id), (400, "invalid_argument".into()));
    let not_found = http.post("GetInclusionProof", "application/json", &bearer, b"{\"leafIndex\": \"7\"}");
    assert_eq!(not_found.status / 100, 4, "{}", String::from_utf8_lossy(&not_found.body));
    let get = http
        .send_raw(format!("GET /evidenceos.v2.EvidenceOS/Health HTTP/1.1\r\nHost: {}\r\n\r\n", http.host).as_bytes());
    assert_eq!(get.status, 405);
    // Still the same connection, still serving.
    assert_eq!(http.call("Health", AUDITOR, None, &json!({}))["status"], "SERVING");

    // A body over --max-request-bytes is refused before it is read, and the connection closed.
    let mut big = Http::connect(&sync);
    let oversized = big.post("Health", "application/json", &bearer, &vec![b' '; 8192]);
    assert_eq!(error(&oversized), (429, "resource_exhausted".into()));

    // Pipelined: two requests in one write, two answers in order.
    let one = "POST /evidenceos.v2.EvidenceOS/Health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer auditor-secret\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    let mut pipelined = Http::connect(&sync);
    pipelined.stream.write_all(format!("{one}{one}").as_bytes()).unwrap();
    assert_eq!(pipelined.read_answer().status, 200);
    assert_eq!(pipelined.read_answer().status, 200);

    sync.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !sync.log().contains("event=\"config_reload\"") {
        assert!(std::time::Instant::now() < deadline, "no reload logged:\n{}", sync.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(http.call("Health", AUDITOR, None, &json!({}))["status"], "SERVING");
    let log = sync.log();
    assert!(log.contains("event=\"rpc\"") || log.contains("event=rpc"), "access log lines:\n{log}");
    drop((http, big, pipelined));
    sync.stop();
}

#[test]
fn metrics_are_served_on_their_own_plain_listener() {
    let tmp = tempfile::tempdir().unwrap();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let sync = start_sync(&tmp.path().join("data"), tmp.path(), &["--metrics-listen", &metrics_addr]);
    let mut http = Http::connect(&sync);
    assert_eq!(http.call("Health", AUDITOR, None, &json!({}))["status"], "SERVING");
    let scrape = |request: &str| {
        let mut stream = TcpStream::connect(&metrics_addr).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    let text = scrape("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("application/openmetrics-text"), "{text}");
    assert!(
        text.contains(r#"evidenceos_rpc_requests_total{method="/evidenceos.v2.EvidenceOS/Health",code="0"} 1"#),
        "{text}"
    );
    assert!(text.contains("evidenceos_etl_durable_tree_size 0"), "{text}");
    assert!(text.contains("# TYPE evidenceos_pool_reservations gauge"), "{text}");
    assert!(text.contains("# TYPE evidenceos_pool_reservations_expired counter"), "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    assert!(scrape("GET /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    drop(http);
    sync.stop();
}

/// A CreateClaimV2 body for claim `name` on the demo holdout, reserving `credit`.
fn create_body(name: &str, credit: u64) -> Value {
    json!({
        "claimName": name,
        "metadata": {"lane": "fast", "alphaMicros": 50000, "epochConfigRef": "epoch/v1", "outputSchemaId": "EVIDENCEOS_SC_V0"},
        "signals": {},
        "holdoutRef": "demo",
        "epochSize": "1",
        "oracleNumSymbols": 4,
        "accessCredit": credit.to_string(),
        "oracleId": "accuracy"
    })
}

/// The storage counters of a `/metrics` scrape: (fdatasyncs, batches, commands in them).
fn storage_counters(metrics_addr: &str) -> (u64, u64, u64) {
    let mut stream = TcpStream::connect(metrics_addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let value = |name: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '));
        line.and_then(|l| l[name.len()..].trim().parse().ok()).unwrap_or_else(|| panic!("{name} in {text}"))
    };
    (
        value("evidenceos_storage_sync_seconds_count"),
        value("evidenceos_storage_batch_commands_count"),
        value("evidenceos_storage_batch_commands_sum"),
    )
}

/// Group commit: the commands of every client whose request is there in one loop turn share one
/// batch and one fdatasync. The daemon is held (SIGSTOP) while the clients send, so all of them
/// are waiting when it goes on; each still gets its own, durable, answer.
#[test]
fn commands_of_concurrent_clients_ready_in_one_turn_share_one_fdatasync() {
    const CLIENTS: usize = 8;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    install_demo_holdout(&data);
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    // One agent each: a principal's share of the holdout pool would not hold eight open claims.
    let agents: Vec<String> = (0..CLIENTS).map(|n| format!("agent-{n}-secret")).collect();
    let env = [("EVIDENCEOS_AGENT_TOKENS", agents.join(",")), ("EVIDENCEOS_AUDITOR_TOKENS", AUDITOR.to_string())];
    let env: Vec<(&str, &str)> = env.iter().map(|(name, value)| (*name, value.as_str())).collect();
    let flags = ["--runtime", "sync", "--metrics-listen", &metrics_addr];
    let sync = support::start_with(&data, tmp.path(), &flags, &env);
    let mut clients: Vec<Http> = (0..CLIENTS).map(|_| Http::connect(&sync)).collect();
    for http in &mut clients {
        assert_eq!(http.call("Health", AUDITOR, None, &json!({}))["status"], "SERVING", "accepted and served once");
    }
    let before = storage_counters(&metrics_addr);
    sync.signal("STOP");
    sync.wait_until_stopped();
    for (n, http) in clients.iter_mut().enumerate() {
        let body = create_body(&format!("c{n}"), 1);
        let bytes = http.json_request("CreateClaimV2", &agents[n], Some(&format!("create-{n}")), &body);
        http.stream.write_all(&bytes).unwrap();
    }
    sync.signal("CONT");
    let mut claim_ids = std::collections::BTreeSet::new();
    for http in &mut clients {
        let created = http.read_answer().ok_json("CreateClaimV2");
        assert_eq!(created["state"], "CLAIM_STATE_UNCOMMITTED", "{created}");
        claim_ids.insert(created["claimId"].as_str().unwrap().to_string());
    }
    assert_eq!(claim_ids.len(), CLIENTS, "a claim of its own for each client");
    let after = storage_counters(&metrics_addr);
    let commands = usize::try_from(after.2 - before.2).unwrap();
    assert_eq!(commands, CLIENTS, "every call journaled: {before:?} → {after:?}");
    assert_eq!(after.1 - before.1, 1, "one batch for all of them: {before:?} → {after:?}");
    assert_eq!(after.0 - before.0, 1, "one journal fdatasync (CreateClaimV2 appends no leaf): {before:?} → {after:?}");
    drop(clients);
    sync.stop();
}

/// Requests pipelined on one keep-alive connection are answered in order, and a read behind a
/// command waits for it: it sees the command's leaf, which a read taken into the same batch
/// (answered before the sync) would not.
#[test]
fn pipelined_requests_on_one_connection_are_answered_in_order_and_read_their_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    install_demo_holdout(&data);
    let sync = start_sync(&data, tmp.path(), &[]);
    let mut http = Http::connect(&sync);
    let created = http.call("CreateClaimV2", AGENT, Some("create-p"), &create_body("p", 64));
    let claim_id = created["claimId"].as_str().unwrap().to_string();
    let module = wasm("claim_mod3");
    let commit = json!({
        "claimId": claim_id,
        "artifacts": [{"artifactHash": b64(&sha256(&module)), "kind": "wasm"}],
        "wasmModule": b64(&module)
    });
    http.call("CommitArtifacts", AGENT, None, &commit);
    let id = json!({ "claimId": claim_id });
    http.call("FreezeGates", AGENT, None, &id);
    let size = |head: &Value| head["treeSize"].as_str().map_or(0, |n| n.parse::<u64>().unwrap());
    let before = size(&http.call("GetSignedTreeHead", AUDITOR, None, &json!({})));
    let pipelined = [
        http.json_request("ExecuteClaimV2", AGENT, Some("execute-p"), &id),
        http.json_request("GetSignedTreeHead", AUDITOR, None, &json!({})),
        http.json_request("Health", AUDITOR, None, &json!({})),
        http.json_request("FetchCapsule", AUDITOR, None, &id),
        http.json_request("CreateClaimV2", AGENT, Some("create-q"), &create_body("q", 1)),
        http.json_request("GetSignedTreeHead", AUDITOR, None, &json!({})),
    ]
    .concat();
    http.stream.write_all(&pipelined).unwrap();
    let executed = http.read_answer().ok_json("ExecuteClaimV2");
    let head = http.read_answer().ok_json("GetSignedTreeHead");
    assert_eq!(size(&head), before + 1, "the read behind the execution sees its capsule leaf");
    assert_eq!(http.read_answer().ok_json("Health")["status"], "SERVING");
    let fetched = http.read_answer().ok_json("FetchCapsule");
    assert_eq!(fetched["capsuleHash"], executed["capsuleHash"], "{fetched}");
    let second = http.read_answer().ok_json("CreateClaimV2");
    assert_eq!(second["state"], "CLAIM_STATE_UNCOMMITTED", "{second}");
    assert_ne!(second["claimId"], created["claimId"]);
    assert_eq!(size(&http.read_answer().ok_json("GetSignedTreeHead")), before + 1, "a claim's creation adds no leaf");
    drop(http);
    sync.stop();
}

#[test]
fn hmac_signatures_cover_the_url_path_and_a_replay_is_refused() {
    use hmac::{KeyInit, Mac};
    let tmp = tempfile::tempdir().unwrap();
    let secret = [7u8; 32];
    let keys = format!("ops:{}:auditor", hex::encode(secret));
    let sync = support::start_with(
        &tmp.path().join("data"),
        tmp.path(),
        &["--runtime", "sync"],
        &[("EVIDENCEOS_HMAC_KEYS", keys.as_str())],
    );
    let sign = |request_id: &str, path: &str| {
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&secret).unwrap();
        mac.update(format!("{request_id}:{path}").as_bytes());
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    let mut http = Http::connect(&sync);
    let signed = |request_id: &'static str, signature: String| {
        vec![
            ("x-request-id", request_id.to_string()),
            ("x-evidenceos-key-id", "ops".to_string()),
            ("x-evidenceos-signature", signature),
        ]
    };
    let post = |http: &mut Http, headers: Vec<(&str, String)>| {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        http.post("GetSignedTreeHead", "application/json", &headers, b"{}")
    };
    let path = "/evidenceos.v2.EvidenceOS/GetSignedTreeHead";
    assert_eq!(post(&mut http, signed("r-1", sign("r-1", path))).status, 200);
    let replay = post(&mut http, signed("r-1", sign("r-1", path)));
    assert_eq!((replay.status, replay.json()["code"].clone()), (401, json!("unauthenticated")));
    let other_path = post(&mut http, signed("r-2", sign("r-2", "/evidenceos.v2.EvidenceOS/Health")));
    assert_eq!(other_path.status, 401, "a signature for another method does not transfer");
    // RevokeClaim is idempotent: a repeated request id is a retry the kernel answers (here: no
    // such claim, nothing recorded), never a replay refused before it.
    let revoke = |http: &mut Http| {
        let headers = signed("revoke-1", sign("revoke-1", "/evidenceos.v2.EvidenceOS/RevokeClaim"));
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let body = json!({"claimId": BASE64.encode([9u8; 32]), "reason": "retry"}).to_string();
        http.post("RevokeClaim", "application/json", &headers, body.as_bytes())
    };
    for attempt in 0..2 {
        let answer = revoke(&mut http);
        assert_eq!(answer.json()["code"], json!("not_found"), "attempt {attempt}");
    }
    drop(http);
    sync.stop();
}

#[test]
fn a_slow_sender_holds_nobody_up_and_is_cut_off_after_the_request_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let sync = start_sync(&tmp.path().join("data"), tmp.path(), &["--request-timeout-ms", "1500"]);
    // Half a request, then silence.
    let mut slow = Http::connect(&sync);
    slow.stream
        .write_all(b"POST /evidenceos.v2.EvidenceOS/Health HTTP/1.1\r\nContent-Type: application/json\r\nContent-Le")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let started = std::time::Instant::now();
    let mut other = Http::connect(&sync);
    assert_eq!(other.call("Health", AUDITOR, None, &json!({}))["status"], "SERVING");
    assert!(started.elapsed() < Duration::from_millis(1000), "served while the slow request is pending");

    // The slow connection is closed once its request has not arrived whole in time.
    let mut rest = Vec::new();
    let read = slow.stream.read_to_end(&mut rest);
    assert!(started.elapsed() >= Duration::from_millis(1000), "closed by the timeout, not at once");
    assert!(read.is_ok() || rest.is_empty(), "closed without an answer: {read:?} {rest:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !sync.log().contains("request_timeout") {
        assert!(std::time::Instant::now() < deadline, "no request_timeout logged:\n{}", sync.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    drop((slow, other));
    sync.stop();
}

#[tokio::test]
async fn sighup_applies_valid_operator_files_and_a_rejected_reload_keeps_the_old_ones() {
    use support::rpc::{Rpc, Runtime};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let sync = start_sync(&data, tmp.path(), &[]);
    let agent = Rpc::connect(Runtime::Sync, &sync.addr, AGENT).await.unwrap();
    let create = |name: &'static str| {
        let agent = agent.clone();
        async move {
            let request = support::claim_request(name, "fast", "fresh");
            agent.call::<_, v2::CreateClaimV2Response>("CreateClaimV2", request, Some(name)).await
        }
    };
    let wait_for = |needle: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !sync.log().contains(needle) {
            assert!(std::time::Instant::now() < deadline, "no {needle} in:\n{}", sync.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let refused = create("before").await.unwrap_err();
    assert!(refused.starts_with("NOT_FOUND"), "{refused}");

    // A new holdout appears on disk; SIGHUP applies it.
    let labels: Vec<u8> = (0..16).map(|i| u8::from(i % 2 == 0)).collect();
    let files = evidenceos_core::holdout::holdout_files("fresh", [0xab; 32], &labels, 1_700_000_000);
    let dir = data.join("holdouts/fresh");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("manifest.json"), &files.manifest).unwrap();
    std::fs::write(dir.join("labels.bin"), &files.labels).unwrap();
    sync.signal("HUP");
    wait_for("holdouts_before=0 holdouts_after=1");
    create("after").await.unwrap();

    // Tampered labels and a second new holdout: the reload is refused as a whole, naming the
    // file; the old configuration stays in force (fresh serves, the second is unknown).
    std::fs::write(dir.join("labels.bin"), vec![1u8; 16]).unwrap();
    install_demo_holdout(&data);
    sync.signal("HUP");
    wait_for("config_reload_rejected");
    let log = sync.log();
    assert!(log.contains("holdouts/fresh"), "the rejection names the file:\n{log}");
    assert_eq!(log.matches("event=\"config_reload\"").count(), 1, "one reload applied:\n{log}");
    create("still-there").await.unwrap();
    let demo = support::claim_request("demo-claim", "fast", "demo");
    let unknown = agent.call::<_, v2::CreateClaimV2Response>("CreateClaimV2", demo, Some("demo-claim")).await;
    assert!(unknown.unwrap_err().starts_with("NOT_FOUND"), "the rejected files were not applied in part");
    drop(agent);
    sync.stop();
}

/// GetRevocationFeed over Connect JSON carries `signedTreeHead` (SPEC §1 field 4), and the feed's
/// signature verifies against exactly that head, with no second call for the head.
#[test]
fn the_revocation_feed_carries_the_head_its_signature_covers() {
    use evidenceos_core::SignedTreeHead;
    use evidenceos_core::etl::{revocation_feed_digest, verify_tree_head};
    use evidenceos_core::keys::{KeyId, verify_signature};
    let tmp = tempfile::tempdir().unwrap();
    let sync = start_sync(&tmp.path().join("data"), tmp.path(), &[]);
    let mut http = Http::connect(&sync);
    let bytes = |value: &Value| BASE64.decode(value.as_str().unwrap_or_default()).unwrap();
    let feed = http.call("GetRevocationFeed", AUDITOR, None, &json!({}));
    let head = &feed["signedTreeHead"];
    let head = SignedTreeHead {
        tree_size: head["treeSize"].as_str().map_or(0, |n| n.parse().unwrap()),
        root_hash: bytes(&head["rootHash"]).try_into().unwrap(),
        key_id: KeyId(bytes(&head["keyId"]).try_into().unwrap()),
        signature: bytes(&head["signature"]).try_into().unwrap(),
    };
    let key = http.call("GetPublicKey", AUDITOR, None, &json!({"keyId": feed["keyId"]}));
    let public: [u8; 32] = bytes(&key["ed25519PublicKey"]).try_into().unwrap();
    assert!(verify_tree_head(&public, &head));
    let signature: [u8; 64] = bytes(&feed["signature"]).try_into().unwrap();
    assert!(verify_signature(&public, &revocation_feed_digest(&[], &head), &signature));
    drop(http);
    sync.stop();
}

/// A WatchRevocations stream read by hand: the response head, then one chunk at a time, each one
/// Connect envelope `(flags, message)`.
struct RawStream {
    stream: TcpStream,
}

impl RawStream {
    /// Opens `/evidenceos.v2.EvidenceOS/WatchRevocations` as `application/connect+proto`.
    fn open(daemon: &Daemon, token: Option<&str>) -> (u16, Vec<String>, Self) {
        Self::open_as(daemon, token, "application/connect+proto", &[0, 0, 0, 0, 0])
    }

    /// Opens the stream with the request envelope `body` in `content_type`.
    fn open_as(daemon: &Daemon, token: Option<&str>, content_type: &str, body: &[u8]) -> (u16, Vec<String>, Self) {
        let mut http = Http::connect(daemon);
        let authorization = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let request = format!(
            "POST /evidenceos.v2.EvidenceOS/WatchRevocations HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\n{authorization}Content-Length: {}\r\n\r\n",
            http.host,
            body.len()
        );
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body);
        http.stream.write_all(&bytes).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(http.stream.read(&mut byte).unwrap(), 1, "closed mid-head: {head:?}");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let lines: Vec<String> = head.split("\r\n").filter(|l| !l.is_empty()).map(str::to_lowercase).collect();
        let status = lines[0].split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, lines, Self { stream: http.stream })
    }

    fn line(&mut self) -> String {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            assert_eq!(self.stream.read(&mut byte).unwrap(), 1, "closed mid-line: {line:?}");
            line.push(byte[0]);
        }
        String::from_utf8(line).unwrap().trim_end().to_string()
    }

    /// The next chunk's envelope.
    fn envelope(&mut self) -> (u8, Vec<u8>) {
        let size = usize::from_str_radix(&self.line(), 16).unwrap();
        let mut chunk = vec![0u8; size + 2];
        self.stream.read_exact(&mut chunk).unwrap();
        assert!(chunk.ends_with(b"\r\n"));
        let length = u32::from_be_bytes(chunk[1..5].try_into().unwrap()) as usize;
        assert_eq!(length + 5, size, "one envelope per chunk");
        (chunk[0], chunk[5..5 + length].to_vec())
    }

    /// The end-of-stream envelope's error code, then the last chunk and the connection's end.
    fn end_code(&mut self) -> String {
        let (flags, message) = self.envelope();
        assert_eq!(flags, 0x02, "end of stream");
        let end: Value = serde_json::from_slice(&message).unwrap();
        assert_eq!(self.line(), "0");
        assert_eq!(self.line(), "");
        assert_eq!(self.stream.read(&mut [0u8; 1]).unwrap(), 0, "closed after the stream");
        end["error"]["code"].as_str().unwrap().to_string()
    }
}

/// WatchRevocations on the sync runtime: a revocation arrives as one Connect envelope holding the
/// message the gRPC runtime sends, signed under its own head; shutdown ends the stream with
/// `unavailable`; an unauthenticated caller's stream ends at once.
#[test]
fn watch_revocations_streams_each_revocation_signed_and_ends_at_shutdown() {
    use evidenceos_core::SignedTreeHead;
    use evidenceos_core::etl::{revocation_feed_digest, verify_tree_head};
    use evidenceos_core::keys::{KeyId, verify_signature};
    use evidenceos_core::request::RevocationEntry;
    use prost::Message as _;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    install_demo_holdout(&data);
    let sync = start_sync(&data, tmp.path(), &["--idle-timeout-secs", "1"]);

    let (status, _, mut stranger) = RawStream::open(&sync, None);
    assert_eq!(status, 200, "stream errors travel in the end-of-stream message");
    assert_eq!(stranger.end_code(), "unauthenticated");

    let (status, head, mut watch) = RawStream::open(&sync, Some(AUDITOR));
    assert_eq!(status, 200);
    assert!(head.contains(&"content-type: application/connect+proto".to_string()), "{head:?}");
    assert!(head.contains(&"transfer-encoding: chunked".to_string()), "{head:?}");
    let mut http = Http::connect(&sync);
    let (claim_id, executed, _) = walkthrough_with_id(&mut http, "watched", "claim_mod3");
    // Longer than the idle timeout: the call connection is closed, an open stream is not idle.
    std::thread::sleep(Duration::from_millis(1500));
    let mut http = Http::connect(&sync);
    let revoke = json!({"claimId": claim_id, "reason": "retracted by author"});
    let revoked = http.call("RevokeClaim", AGENT, Some("revoke-watched"), &revoke);

    let (flags, message) = watch.envelope();
    assert_eq!(flags, 0);
    let pushed = v2::WatchRevocationsResponse::decode(message.as_slice()).unwrap();
    assert_eq!(pushed.entries.len(), 1);
    let capsule_hash = unb64(&executed["capsuleHash"]);
    assert_eq!(pushed.entries[0].claim_id, capsule_hash);
    let sth = pushed.signed_tree_head.as_ref().unwrap();
    let sth = SignedTreeHead {
        tree_size: sth.tree_size,
        root_hash: sth.root_hash.clone().try_into().unwrap(),
        key_id: KeyId(sth.key_id.clone().try_into().unwrap()),
        signature: sth.signature.clone().try_into().unwrap(),
    };
    let key = http.call("GetPublicKey", AUDITOR, None, &json!({"keyId": b64(&pushed.key_id)}));
    let public: [u8; 32] = unb64(&key["ed25519PublicKey"]).try_into().unwrap();
    assert!(verify_tree_head(&public, &sth), "the pushed head is signed");
    let entries = vec![RevocationEntry {
        capsule_hash: capsule_hash.try_into().unwrap(),
        timestamp_unix: revoked["timestampUnix"].as_str().unwrap().parse().unwrap(),
        reason: "retracted by author".into(),
    }];
    assert!(verify_signature(&public, &revocation_feed_digest(&entries, &sth), &pushed.signature));

    drop(http);
    sync.stop();
    assert_eq!(watch.end_code(), "unavailable");
}

/// An open stream (here in JSON) holds one of `--max-connections`: with a limit of 2, one stream
/// and one call connection leave no room for a third.
#[test]
fn an_open_watch_stream_counts_toward_max_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let sync = start_sync(&tmp.path().join("data"), tmp.path(), &["--max-connections", "2"]);
    let (status, head, mut watch) =
        RawStream::open_as(&sync, Some(AUDITOR), "application/connect+json", &[0, 0, 0, 0, 2, b'{', b'}']);
    assert_eq!(status, 200);
    assert!(head.contains(&"content-type: application/connect+json".to_string()), "{head:?}");
    let mut http = Http::connect(&sync);
    http.call("Health", AUDITOR, None, &json!({}));
    let mut third = TcpStream::connect(sync.addr.trim_start_matches("http://")).unwrap();
    third.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert!(matches!(third.read(&mut [0u8; 1]), Ok(0) | Err(_)), "the third connection is closed at once");
    http.call("Health", AUDITOR, None, &json!({}));
    drop(http);
    sync.stop();
    assert_eq!(watch.end_code(), "unavailable");
}
