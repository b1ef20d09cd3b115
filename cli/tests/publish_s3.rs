//! The ETL published to a real S3 protocol server (moto on loopback) by the real daemon on both
//! runtimes: resumed after a restart without rewriting an object, byte for byte what
//! `--publish-dir` writes, verified by `evidenceosctl log verify` from the downloaded objects;
//! an outage fails no RPC and publishing catches up; an object already there with other bytes
//! is refused; a key rotation keeps the origin and old checkpoints verifiable. Every wait is
//! bounded.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use evidenceos_io_sync::publish_store::{CacheControl, Created, PublishStore, S3Store};
use evidenceos_tlog::checkpoint::CheckpointPolicy;
use evidenceos_tlog::note::{KeyName, NoteLimits, VerifierKey};
use serde_json::Value;

mod support;

use support::ctl::{Ran, ctl};
use support::moto::{Moto, env_for_port, free_port, s3_tests_enabled};
use support::{Daemon, install_demo_holdout};

const AGENT: &str = "agent-secret";
const WAIT: Duration = Duration::from_secs(60);
const BUCKET: &str = "evidenceos-etl";
const URL: &str = "s3://evidenceos-etl/logs/etl";

fn start(data: &Path, logs: &Path, destination: &[&str], runtime: &str, env: &[(String, String)]) -> Daemon {
    let mut flags = vec!["--runtime", runtime, "--checkpoint-interval-ms", "50"];
    flags.extend_from_slice(destination);
    let mut vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    vars.push(("EVIDENCEOS_AGENT_TOKENS", AGENT));
    support::start_with(data, logs, &flags, &vars)
}

/// Runs the example claim (gRPC: the tokio runtime); returns its etl index and claim id.
fn run_claim(daemon: &Daemon, name: &str) -> (u64, String) {
    let ran = ctl(&[
        "claim",
        "run",
        "--wasm",
        "../examples/claim_mod3.wat",
        "--holdout",
        "demo",
        "--name",
        name,
        "--token",
        AGENT,
        "--endpoint",
        &daemon.addr,
    ]);
    assert_eq!(ran.code, Some(0), "{ran:?}\ndaemon log:\n{}", daemon.log());
    let value = |key: &str| {
        let line = ran.stdout.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':'));
        line.unwrap_or_else(|| panic!("{key}: {ran:?}")).trim().to_string()
    };
    (value("etl_index").parse().unwrap(), value("claim_id"))
}

fn bucket(env: &[(String, String)]) -> S3Store {
    S3Store::from_vars(URL.parse().unwrap(), env.to_vec()).unwrap()
}

fn checkpoint_size(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.lines().nth(1)?.parse().ok()
}

/// Waits until the checkpoint `read` returns covers `size` leaves; returns its size.
fn wait_checkpoint(read: impl Fn() -> Option<Vec<u8>>, size: u64, daemon: &Daemon) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(published) = read().as_deref().and_then(checkpoint_size).filter(|&p| p >= size) {
            return published;
        }
        assert!(Instant::now() < deadline, "checkpoint never reached size {size}; daemon log:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_s3(store: &S3Store, size: u64, daemon: &Daemon) -> u64 {
    wait_checkpoint(|| store.read("checkpoint").ok().flatten(), size, daemon)
}

fn wait_log(daemon: &Daemon, needle: &str) {
    let deadline = Instant::now() + WAIT;
    while !daemon.log().contains(needle) {
        assert!(Instant::now() < deadline, "no {needle:?} in the daemon log:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every file under `root`, as its path relative to `root`.
fn files(root: &Path) -> Vec<String> {
    let relative = |path: PathBuf| path.strip_prefix(root).unwrap().to_str().unwrap().to_string();
    support::files_under(root).into_iter().map(relative).collect()
}

/// A temporary directory with `data/`, a data directory holding the demo holdout.
fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    install_demo_holdout(&data);
    (tmp, data)
}

/// moto on a free port with the test bucket: the server (stopped when dropped), the daemon's
/// environment for it, and a store on the bucket.
fn moto_with_bucket(logs: &Path) -> (Moto, Vec<(String, String)>, S3Store) {
    let moto = Moto::start(free_port(), logs);
    moto.create_bucket(BUCKET);
    let env = moto.env();
    let store = bucket(&env);
    (moto, env, store)
}

fn json_of(ran: &Ran) -> Value {
    assert_eq!(ran.code, Some(0), "{ran:?}");
    serde_json::from_str(&ran.stdout).unwrap_or_else(|e| panic!("{e}: {ran:?}"))
}

#[test]
fn s3_publishing_resumes_matches_the_directory_and_verifies() {
    if !s3_tests_enabled("s3_publishing_resumes_matches_the_directory_and_verifies") {
        return;
    }
    let (tmp, data) = data_dir();
    let (moto, env, store) = moto_with_bucket(tmp.path());

    let daemon = start(&data, tmp.path(), &["--publish-s3", URL], "tokio", &env);
    let claims = [run_claim(&daemon, "first"), run_claim(&daemon, "second")];
    let before = wait_s3(&store, claims[1].0 + 1, &daemon);
    daemon.stop();
    // The sync runtime resumes from the bucket's checkpoint.
    let daemon = start(&data, tmp.path(), &["--publish-s3", URL], "sync", &env);
    support::revoke_over_connect(&daemon, AGENT, &claims[0].1);
    let size = wait_s3(&store, before + 1, &daemon);
    assert!(!daemon.log().contains("publish_failed"), "{}", daemon.log());
    daemon.stop();
    let mut objects: Vec<String> = moto.puts().into_iter().filter(|key| !key.ends_with("/checkpoint")).collect();
    let written = objects.len();
    objects.sort();
    objects.dedup();
    assert_eq!(objects.len(), written, "an object was written twice (the restart did not resume): {objects:?}");

    // The same data directory published to a directory: the same objects, byte for byte.
    let dir = tmp.path().join("pub");
    let daemon = start(&data, tmp.path(), &["--publish-dir", dir.to_str().unwrap()], "sync", &[]);
    let dir_size = wait_checkpoint(|| std::fs::read(dir.join("checkpoint")).ok(), size, &daemon);
    daemon.stop();
    assert_eq!(dir_size, size, "no leaf was logged between the runs");
    let download = tmp.path().join("download");
    let keys = files(&dir);
    for key in &keys {
        let stored = store.read(key).unwrap().unwrap_or_else(|| panic!("{key} is not in the bucket"));
        assert_eq!(stored, std::fs::read(dir.join(key)).unwrap(), "{key} differs between the bucket and the directory");
        std::fs::create_dir_all(download.join(key).parent().unwrap()).unwrap();
        std::fs::write(download.join(key), stored).unwrap();
    }
    // The bucket holds the directory's objects, and the partial tiles of sizes published
    // before (the directory was published once, at the last size).
    let prefix = format!("/{BUCKET}/logs/etl/");
    let in_bucket: Vec<&str> = objects.iter().filter_map(|put| put.strip_prefix(&prefix)).collect();
    for key in keys.iter().filter(|k| *k != "checkpoint") {
        assert!(in_bucket.contains(&key.as_str()), "{key} was never PUT: {objects:?}");
    }
    for key in in_bucket.iter().filter(|k| !keys.iter().any(|d| d == *k)) {
        assert!(key.contains(".p/"), "{key} is in the bucket, not in the directory: {objects:?}");
    }

    let listed = json_of(&ctl(&["keys", "list", "--data-dir", data.to_str().unwrap()]));
    let vkey = listed["etl_signing_keys"][0]["vkey"].as_str().unwrap();
    let kinds = claims.iter().map(|(index, _)| (*index, "capsule")).chain([(size - 1, "revocation")]);
    for (index, kind) in kinds {
        let index = index.to_string();
        let ran = ctl(&["log", "verify", "--url", download.to_str().unwrap(), "--vkey", vkey, "--index", &index]);
        let verified = json_of(&ran);
        assert_eq!((&verified["verified"], verified["entry"]["kind"].as_str()), (&Value::Bool(true), Some(kind)));
    }
}

#[test]
fn an_s3_outage_fails_no_rpc_and_publishing_catches_up() {
    if !s3_tests_enabled("an_s3_outage_fails_no_rpc_and_publishing_catches_up") {
        return;
    }
    let (tmp, data) = data_dir();
    // Nothing listens on the endpoint yet: the daemon starts, serves, and logs the failures.
    let port = free_port();
    let env = env_for_port(port);
    let daemon = start(&data, tmp.path(), &["--publish-s3", URL], "tokio", &env);
    let (first, _) = run_claim(&daemon, "during-outage");
    wait_log(&daemon, "publish_failed");
    let (second, _) = run_claim(&daemon, "still-during-outage");
    assert_eq!(second, first + 1);

    let moto = Moto::start(port, tmp.path());
    moto.create_bucket(BUCKET);
    let store = bucket(&env);
    wait_s3(&store, second + 1, &daemon);
    let (third, _) = run_claim(&daemon, "after-outage");
    wait_s3(&store, third + 1, &daemon);
    daemon.stop();
}

#[test]
fn an_object_already_in_the_bucket_with_other_bytes_is_refused() {
    if !s3_tests_enabled("an_object_already_in_the_bucket_with_other_bytes_is_refused") {
        return;
    }
    let (tmp, data) = data_dir();
    let (_moto, env, store) = moto_with_bucket(tmp.path());
    // Another history's first tiles, already in the bucket.
    let planted: Vec<PathBuf> = (1..=8)
        .flat_map(|w| [format!("tile/0/000.p/{w}"), format!("tile/entries/000.p/{w}")])
        .map(PathBuf::from)
        .collect();
    for key in &planted {
        let key = key.to_str().unwrap();
        assert_eq!(store.create(key, b"another history", CacheControl::Revalidate).unwrap(), Created::Written);
    }
    let daemon = start(&data, tmp.path(), &["--publish-s3", URL], "tokio", &env);
    let (index, _) = run_claim(&daemon, "refused");
    wait_log(&daemon, "exists with other bytes");
    assert!(daemon.log().contains("split_view=true"), "{}", daemon.log());
    std::thread::sleep(Duration::from_millis(500));
    let published = store.read("checkpoint").unwrap().as_deref().and_then(checkpoint_size);
    assert!(published.is_none_or(|size| size <= index), "a checkpoint over the other history: {published:?}");
    for key in &planted {
        let key = key.to_str().unwrap();
        assert_eq!(store.read(key).unwrap().as_deref(), Some(&b"another history"[..]), "{key} was overwritten");
    }
    daemon.stop();
}

fn vkeys(data: &Path, origin: &str) -> Vec<(bool, VerifierKey)> {
    let listed = json_of(&ctl(&["keys", "list", "--data-dir", data.to_str().unwrap(), "--log-origin", origin]));
    let keys = listed["etl_signing_keys"].as_array().unwrap().iter();
    keys.map(|key| (key["active"] == true, VerifierKey::parse(key["vkey"].as_str().unwrap()).unwrap())).collect()
}

fn verifies(checkpoint: &[u8], origin: &str, vkey: &VerifierKey) -> bool {
    let origin = KeyName::new(origin).unwrap();
    let policy = CheckpointPolicy { origin, log_keys: vec![vkey.clone()], witness_keys: Vec::new(), quorum: 0 };
    policy.verify(checkpoint, NoteLimits::DEFAULT).is_ok()
}

#[test]
fn after_a_key_rotation_publishing_resumes_under_the_same_origin_and_old_checkpoints_verify() {
    if !s3_tests_enabled("after_a_key_rotation_publishing_resumes_under_the_same_origin_and_old_checkpoints_verify") {
        return;
    }
    const ORIGIN: &str = "example.org/evidenceos/etl";
    let (tmp, data) = data_dir();
    let (_moto, env, store) = moto_with_bucket(tmp.path());
    let flags = ["--publish-s3", URL, "--log-origin", ORIGIN];

    let daemon = start(&data, tmp.path(), &flags, "tokio", &env);
    let (index, _) = run_claim(&daemon, "before-rotation");
    let old_size = wait_s3(&store, index + 1, &daemon);
    daemon.stop();
    let old_checkpoint = store.read("checkpoint").unwrap().unwrap();
    let old_vkey = vkeys(&data, ORIGIN)[0].1.clone();

    let new_id = support::activate_new_signing_key(&data, [0x5a; 32]);

    let daemon = start(&data, tmp.path(), &flags, "tokio", &env);
    assert_eq!(daemon.key_id, new_id.to_hex());
    let (index, _) = run_claim(&daemon, "after-rotation");
    wait_s3(&store, index + 1, &daemon);
    assert!(
        !daemon.log().contains("publish_failed"),
        "the old key's checkpoint is accepted at resume:\n{}",
        daemon.log()
    );
    daemon.stop();
    let new_checkpoint = store.read("checkpoint").unwrap().unwrap();
    assert!(checkpoint_size(&new_checkpoint).unwrap() > old_size);

    let keys = vkeys(&data, ORIGIN);
    let new_vkey = keys.iter().find(|(active, _)| *active).map(|(_, vkey)| vkey.clone()).unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|(_, vkey)| vkey.name().as_str() == ORIGIN), "one origin for both keys");
    assert!(verifies(&old_checkpoint, ORIGIN, &old_vkey), "the old checkpoint verifies with the rotated-out vkey");
    assert!(verifies(&new_checkpoint, ORIGIN, &new_vkey));
    assert!(!verifies(&new_checkpoint, ORIGIN, &old_vkey), "the new checkpoint is signed by the new key only");
    assert!(std::str::from_utf8(&new_checkpoint).unwrap().starts_with(&format!("{ORIGIN}\n")));
}
