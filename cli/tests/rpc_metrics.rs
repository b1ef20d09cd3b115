//! Per-RPC metrics on both runtimes: the same calls (a claim's lifecycle, a read, and calls that
//! fail) leave exactly the same `evidenceos_rpc_*` families, labels and counts in `/metrics`
//! whether the daemon serves gRPC (tokio) or Connect (sync).

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use evidenceos_core::hash::sha256;
use evidenceos_grpc::v2;
use support::rpc::{Rpc, Runtime};

const AGENT: &str = "agent-secret";
const AUDITOR: &str = "auditor-secret";
const TOKENS: [(&str, &str); 2] = [("EVIDENCEOS_AGENT_TOKENS", AGENT), ("EVIDENCEOS_AUDITOR_TOKENS", AUDITOR)];
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// Create → commit → freeze → execute, then the capsule read back by an auditor; then an agent's
/// proof request (PERMISSION_DENIED, 7), a CreateClaimV2 without `x-request-id`
/// (INVALID_ARGUMENT, 3) and a method neither service has (UNIMPLEMENTED, 12, labelled `other`).
async fn calls(agent: &Rpc, auditor: &Rpc) {
    let module = wat::parse_file(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/claim_mod3.wat")).unwrap();
    let create = support::claim_request("metered", "fast", "demo");
    let created: v2::CreateClaimV2Response = agent.call("CreateClaimV2", create, Some("metered")).await.unwrap();
    let id = created.claim_id;
    let artifacts = vec![v2::Artifact { artifact_hash: sha256(&module).to_vec(), kind: "wasm".into() }];
    let commit = v2::CommitArtifactsRequest { claim_id: id.clone(), artifacts, wasm_module: module };
    agent.call::<_, v2::CommitArtifactsResponse>("CommitArtifacts", commit, None).await.unwrap();
    let freeze = v2::FreezeGatesRequest { claim_id: id.clone() };
    agent.call::<_, v2::FreezeGatesResponse>("FreezeGates", freeze, None).await.unwrap();
    let execute = v2::ExecuteClaimV2Request { claim_id: id.clone() };
    agent.call::<_, v2::ExecuteClaimV2Response>("ExecuteClaimV2", execute, Some("metered")).await.unwrap();
    let read = v2::GetCapsuleRequest { claim_id: id };
    auditor.call::<_, v2::GetCapsuleResponse>("GetCapsule", read, None).await.unwrap();

    let denied = v2::GetInclusionProofRequest { leaf_index: 0 };
    let error = agent.call::<_, v2::GetInclusionProofResponse>("GetInclusionProof", denied, None).await.unwrap_err();
    assert!(code_is(&error, "permission_denied"), "{error}");
    let unkeyed = support::claim_request("unkeyed", "fast", "demo");
    let error = agent.call::<_, v2::CreateClaimV2Response>("CreateClaimV2", unkeyed, None).await.unwrap_err();
    assert!(code_is(&error, "invalid_argument"), "{error}");
    let unknown = agent.call::<_, v2::HealthResponse>("NoSuchMethod", v2::HealthRequest {}, None).await.unwrap_err();
    assert!(code_is(&unknown, "unimplemented"), "{unknown}");
}

/// Whether a client error (`CODE: message`) has `code`, however the client spells it.
fn code_is(error: &str, code: &str) -> bool {
    let spelled = error.split(':').next().unwrap_or_default().to_ascii_lowercase().replace('_', "");
    spelled == code.replace('_', "")
}

fn scrape(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT)).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// The per-RPC part of an exposition: metadata lines as they are, and every sample with its
/// value, except durations (bucket counts and sums), which are timings, as `-`.
fn rpc_families(body: &str) -> BTreeMap<String, String> {
    let mut families = BTreeMap::new();
    for line in body.lines().filter(|line| line.contains("evidenceos_rpc_")) {
        if line.starts_with('#') {
            families.insert(line.to_string(), String::new());
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("malformed sample {line:?}"));
        let timing = series.contains("_duration_seconds_bucket") || series.contains("_duration_seconds_sum");
        families.insert(series.to_string(), if timing { "-".to_string() } else { value.to_string() });
    }
    families
}

async fn rpc_metrics_after_the_calls(runtime: Runtime) -> BTreeMap<String, String> {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    support::install_demo_holdout(&data);
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let flags = ["--runtime", runtime.flag(), "--metrics-listen", &metrics_addr];
    let daemon = support::start_with(&data, tmp.path(), &flags, &TOKENS);
    let agent = Rpc::connect(runtime, &daemon.addr, AGENT).await.unwrap();
    let auditor = Rpc::connect(runtime, &daemon.addr, AUDITOR).await.unwrap();
    calls(&agent, &auditor).await;
    let families = rpc_families(&scrape(&metrics_addr));
    drop((agent, auditor));
    daemon.stop();
    families
}

#[tokio::test]
async fn both_runtimes_count_the_same_rpcs_under_the_same_labels() {
    let tokio = rpc_metrics_after_the_calls(Runtime::Tokio).await;
    let sync = rpc_metrics_after_the_calls(Runtime::Sync).await;
    assert_eq!(tokio, sync, "the per-RPC families of the tokio (left) and sync (right) runtimes");

    let path = |method: &str| format!("/evidenceos.v2.EvidenceOS/{method}");
    let requests = |method: &str, code: &str| {
        let series = format!("evidenceos_rpc_requests_total{{method=\"{}\",code=\"{code}\"}}", path(method));
        sync.get(&series).cloned().unwrap_or_else(|| panic!("{series} in {sync:#?}"))
    };
    for method in ["CommitArtifacts", "FreezeGates", "ExecuteClaimV2", "GetCapsule"] {
        assert_eq!(requests(method, "0"), "1", "{method}");
    }
    assert_eq!(requests("CreateClaimV2", "0"), "1");
    assert_eq!(requests("CreateClaimV2", "3"), "1", "the call without a request id");
    assert_eq!(requests("GetInclusionProof", "7"), "1", "the agent's proof request");
    let other = "evidenceos_rpc_requests_total{method=\"other\",code=\"12\"}";
    assert_eq!(sync.get(other).map(String::as_str), Some("1"), "the unknown method: {sync:#?}");
    let counted: Vec<&String> = sync.keys().filter(|k| k.starts_with("evidenceos_rpc_requests_total")).collect();
    assert_eq!(counted.len(), 8, "nothing else was called: {counted:#?}");
    let count =
        |method: &str| sync[&format!("evidenceos_rpc_duration_seconds_count{{method=\"{}\"}}", path(method))].clone();
    assert_eq!(count("CreateClaimV2"), "2");
    assert_eq!(count("GetInclusionProof"), "1");
    let histograms = sync.keys().filter(|k| k.starts_with("evidenceos_rpc_duration_seconds_count")).count();
    assert_eq!(histograms, 7, "one histogram per method called, and one for `other`");
    assert!(sync.contains_key("# TYPE evidenceos_rpc_duration_seconds histogram"), "{sync:#?}");
    assert!(sync.contains_key("# TYPE evidenceos_rpc_requests counter"), "{sync:#?}");
    let le = format!("evidenceos_rpc_duration_seconds_bucket{{method=\"{}\",le=\"+Inf\"}}", path("GetCapsule"));
    assert!(sync.contains_key(&le), "{sync:#?}");
}
