//! `evidenceos-bench` against the real daemon: a few lifecycles on loopback, every count checked.

mod support;

use std::sync::Arc;

use clap::Parser;
use evidenceos_bench::Args;

/// The demo holdout with pool budgets large enough for any benchmark run.
fn install_bench_holdout(data_dir: &std::path::Path) {
    support::install_demo_holdout(data_dir);
    let path = data_dir.join("holdouts/demo/manifest.json");
    let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    manifest["holdout_k_bits_budget"] = 1e12.into();
    manifest["holdout_access_credit_budget"] = 1e12.into();
    std::fs::write(&path, manifest.to_string()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_complete_lifecycles_and_its_json_line_adds_up() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    install_bench_holdout(&data_dir);
    let daemon = support::start_with(&data_dir, tmp.path(), &[], &[("EVIDENCEOS_AGENT_TOKENS", "bench-agent")]);
    let args = Args::parse_from([
        "evidenceos-bench",
        "--endpoint",
        &daemon.addr,
        "--bearer-token",
        "bench-agent",
        "--header",
        "x-bench-run:integration",
        "--lifecycles",
        "12",
        "--concurrency",
        "3",
        "--pregrow-leaves",
        "30",
        "--measure-fdatasync",
        data_dir.to_str().unwrap(),
        "--fdatasync-samples",
        "5",
    ]);
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    let run = evidenceos_bench::run(&args, Arc::new(move |line: &str| sink.lock().unwrap().push(line.to_string())));
    let report = tokio::time::timeout(std::time::Duration::from_secs(60), run).await.expect("bounded").unwrap();
    let json: serde_json::Value = serde_json::from_str(&report.to_json().to_string()).unwrap();

    assert_eq!(json["errors"], serde_json::json!({}), "{}", report.to_text());
    assert_eq!(json["lifecycles_completed"], 12);
    assert_eq!(json["lifecycles_failed"], 0);
    assert_eq!(json["outcomes"]["CERTIFIED"], 12, "claim_mod3 certifies against the demo holdout");
    for rpc in ["CreateClaimV2", "CommitArtifacts", "FreezeGates", "SealClaim", "ExecuteClaimV2"] {
        let summary = &json["rpc"][rpc];
        assert_eq!(summary["count"], 12, "{rpc}");
        let p50 = summary["p50_us"].as_u64().unwrap();
        assert!(p50 > 0 && p50 <= summary["p99_us"].as_u64().unwrap(), "{rpc}: {summary}");
    }
    assert_eq!(json["mutating_rpcs"], 60);
    // Each new claim name has its own canary, which a first certification only establishes
    // (SPEC §5.8): every lifecycle appends its capsule and nothing else.
    // Pre-growth runs a first chunk of 4 lifecycles per client (12 leaves), then sizes the rest
    // from the growth it saw (18 more); claim names never repeat across chunks.
    assert_eq!(json["pregrow"]["lifecycles"], 30);
    assert_eq!(json["pregrow"]["errors"], 0);
    assert_eq!(json["pregrow"]["tree_size_after"], 30);
    assert_eq!(json["tree_size_before"], 30);
    assert_eq!(json["tree_size_after"], 30 + 12);
    assert_eq!(json["fdatasync"]["count"], 5);
    assert!(json["lifecycles_per_s"].as_f64().unwrap() > 0.0);
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_counted_by_status() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    install_bench_holdout(&data_dir);
    let daemon = support::start_with(&data_dir, tmp.path(), &[], &[("EVIDENCEOS_AGENT_TOKENS", "bench-agent")]);
    let args = Args::parse_from(["evidenceos-bench", "--endpoint", &daemon.addr, "--lifecycles", "3"]);
    let run = evidenceos_bench::run(&args, Arc::new(|_: &str| {}));
    // Without the token GetSignedTreeHead is refused before any lifecycle starts.
    let error = tokio::time::timeout(std::time::Duration::from_secs(30), run).await.expect("bounded").unwrap_err();
    assert!(error.contains("UNAUTHENTICATED"), "{error}");
    let args = Args::parse_from([
        "evidenceos-bench",
        "--endpoint",
        &daemon.addr,
        "--bearer-token",
        "bench-agent",
        "--holdout-ref",
        "no-such-holdout",
        "--lifecycles",
        "3",
    ]);
    let report = evidenceos_bench::run(&args, Arc::new(|_: &str| {})).await.unwrap();
    let json = report.to_json();
    assert_eq!(json["lifecycles_completed"], 0);
    assert_eq!(json["errors"]["NOT_FOUND"], 3, "{}", report.to_text());
    assert_eq!(json["rpc"]["CreateClaimV2"]["count"], 0, "failed RPCs are not timed as successes");
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_drives_the_sync_runtime_over_connect() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    install_bench_holdout(&data_dir);
    let daemon = support::start_with(
        &data_dir,
        tmp.path(),
        &["--runtime", "sync"],
        &[("EVIDENCEOS_AGENT_TOKENS", "bench-agent")],
    );
    let args = Args::parse_from([
        "evidenceos-bench",
        "--protocol",
        "connect",
        "--endpoint",
        &daemon.addr,
        "--bearer-token",
        "bench-agent",
        "--lifecycles",
        "8",
        "--concurrency",
        "2",
    ]);
    let run = evidenceos_bench::run(&args, Arc::new(|_: &str| {}));
    let report = tokio::time::timeout(std::time::Duration::from_secs(60), run).await.expect("bounded").unwrap();
    let json = report.to_json();
    assert_eq!(json["errors"], serde_json::json!({}), "{}", report.to_text());
    assert_eq!(json["lifecycles_completed"], 8);
    assert_eq!(json["outcomes"]["CERTIFIED"], 8);
    assert_eq!(json["tree_size_after"], 8, "one capsule per lifecycle, no canary incident");
    let bad = Args::parse_from(["evidenceos-bench", "--protocol", "connect", "--endpoint", "https://127.0.0.1:1"]);
    let refused = evidenceos_bench::run(&bad, Arc::new(|_: &str| {})).await.unwrap_err();
    assert!(refused.contains("http:// endpoints only"), "{refused}");
    daemon.stop();
}

/// With --hmac-key-id every request is signed (SPEC §2.3), over gRPC (tokio runtime) and over
/// Connect (sync runtime); a wrong secret is refused before any lifecycle starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_signs_every_request_with_hmac_on_both_runtimes() {
    const KEY: &str = "bench:62656e63682d686d61632d736563726574";
    for (runtime, protocol) in [("tokio", "grpc"), ("sync", "connect")] {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        std::fs::create_dir_all(&data_dir).unwrap();
        install_bench_holdout(&data_dir);
        let daemon =
            support::start_with(&data_dir, tmp.path(), &["--runtime", runtime], &[("EVIDENCEOS_HMAC_KEYS", KEY)]);
        let keys = tmp.path().join("hmac.keys");
        std::fs::write(&keys, format!("# bench key\n{KEY}\n")).unwrap();
        let args = |keys: &std::path::Path| {
            Args::parse_from([
                "evidenceos-bench",
                "--protocol",
                protocol,
                "--endpoint",
                &daemon.addr,
                "--hmac-key-id",
                "bench",
                "--hmac-key-file",
                keys.to_str().unwrap(),
                "--lifecycles",
                "4",
                "--concurrency",
                "2",
            ])
        };
        let signed = args(&keys);
        let run = evidenceos_bench::run(&signed, Arc::new(|_: &str| {}));
        let report = tokio::time::timeout(std::time::Duration::from_secs(60), run).await.expect("bounded").unwrap();
        let json = report.to_json();
        assert_eq!(json["errors"], serde_json::json!({}), "{runtime}: {}", report.to_text());
        assert_eq!(json["outcomes"]["CERTIFIED"], 4, "{runtime}: {}", report.to_text());

        let wrong = tmp.path().join("wrong.keys");
        std::fs::write(&wrong, "bench:0123456789abcdef\n").unwrap();
        let forged = args(&wrong);
        let run = evidenceos_bench::run(&forged, Arc::new(|_: &str| {}));
        let error = tokio::time::timeout(std::time::Duration::from_secs(30), run).await.expect("bounded").unwrap_err();
        assert!(error.contains("UNAUTHENTICATED") && error.contains("bad HMAC signature"), "{runtime}: {error}");
        daemon.stop();
    }
}
