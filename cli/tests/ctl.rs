//! `evidenceosctl` against the real daemon: run the example claims, then verify their capsules as an
//! auditor. Every wait is bounded; the daemon is killed on drop.

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::{Daemon, install_demo_holdout};

const AGENT: &str = "agent-secret";
const AUDITOR: &str = "auditor-secret";
const CTL_TIMEOUT: Duration = Duration::from_secs(60);

struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n--- stdout ---\n{}--- stderr ---\n{}", self.status, self.stdout, self.stderr)
    }
}

impl Ran {
    /// The value of a `key: value` line of the text output.
    fn value(&self, key: &str) -> &str {
        let prefix = format!("{key}:");
        let line = self.stdout.lines().find(|line| line.starts_with(&prefix));
        line.map(|line| line[prefix.len()..].trim()).unwrap_or_else(|| panic!("no {key} in {self:?}"))
    }
}

/// Runs `evidenceosctl ARGS` from the crate directory (so `../examples/…` works), with `env` and
/// without any inherited EVIDENCEOS_TOKEN; waits at most [`CTL_TIMEOUT`], then kills it.
fn run_ctl(log_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Ran {
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (stdout_path, stderr_path) = (log_dir.join(format!("ctl-{n}.out")), log_dir.join(format!("ctl-{n}.err")));
    let mut command = Command::new(env!("CARGO_BIN_EXE_evidenceosctl"));
    command
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("EVIDENCEOS_TOKEN")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("spawn evidenceosctl");
    let deadline = Instant::now() + CTL_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("evidenceosctl {args:?} did not finish in {CTL_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |path: &Path| std::fs::read_to_string(path).unwrap();
    Ran { status, stdout: read(&stdout_path), stderr: read(&stderr_path) }
}

/// [`run_ctl`] against `daemon`.
fn ctl(daemon: &Daemon, log_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Ran {
    run_ctl(log_dir, &[args, &["--endpoint", &daemon.addr]].concat(), env)
}

fn start(data_dir: &Path, log_dir: &Path) -> Daemon {
    std::fs::create_dir_all(data_dir).unwrap();
    install_demo_holdout(data_dir);
    support::start_with(data_dir, log_dir, &["--agent-tokens", AGENT, "--auditor-tokens", AUDITOR], &[])
}

fn is_hash_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn claims_run_and_their_capsules_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = start(&tmp.path().join("data"), tmp.path());
    let logs = tmp.path();
    let mod3 = ["claim", "run", "--wasm", "../examples/claim_mod3.wat", "--holdout", "demo"];

    let anonymous = ctl(&daemon, logs, &mod3, &[]);
    assert_eq!(anonymous.status.code(), Some(1), "{anonymous:?}");
    assert!(anonymous.stdout.is_empty(), "{anonymous:?}");
    assert!(
        anonymous.stderr.contains("evidenceosctl: create (CreateClaimV2) failed: UNAUTHENTICATED"),
        "{anonymous:?}"
    );
    assert!(anonymous.stderr.contains("pass --token or set EVIDENCEOS_TOKEN"), "{anonymous:?}");

    // The good claim certifies; one progress line per step on stderr, the outcome on stdout.
    let good = ctl(&daemon, logs, &[&mod3[..], &["--token", AGENT]].concat(), &[]);
    assert!(good.status.success(), "{good:?}");
    assert_eq!(good.value("state"), "CERTIFIED", "{good:?}");
    assert_eq!(good.value("decision"), "APPROVE");
    assert_eq!(good.value("certified"), "true");
    assert_eq!(good.value("reason_codes"), "1");
    // The log may already hold kernel leaves (the daemon's own records), so indices are relative.
    let good_index: u64 = good.value("etl_index").parse().unwrap();
    assert!(good.value("e_value").parse::<f64>().unwrap() >= 320.0, "above the barrier 2^4 / 0.05");
    let good_id = good.value("claim_id").to_string();
    let good_capsule = good.value("capsule_hash").to_string();
    assert!(is_hash_hex(&good_id) && is_hash_hex(&good_capsule), "{good:?}");
    let steps: Vec<&str> = good.stderr.lines().filter_map(|line| line.split_whitespace().next()).collect();
    assert_eq!(steps, ["load", "create", "commit", "freeze", "seal", "execute"], "{good:?}");
    assert!(good.stderr.contains(&format!("UNCOMMITTED claim_id={good_id}")), "{good:?}");
    assert!(good.stderr.lines().any(|line| line.starts_with("commit") && line.contains("COMMITTED")), "{good:?}");
    assert!(!good.stderr.contains(AGENT) && !good.stdout.contains(AGENT), "the token is never printed");

    // Same code, same settings: the same claim, which has already run.
    let again = ctl(&daemon, logs, &[&mod3[..], &["--token", AGENT]].concat(), &[]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(again.stderr.contains(&format!("claim {good_id} already exists in state CERTIFIED")), "{again:?}");

    // A claim without a real hypothesis is rejected (a successful run: exit 0); JSON output.
    let zero = ["claim", "run", "--wasm", "../examples/claim_all_zero.wat", "--holdout", "demo", "--json"];
    let rejected = ctl(&daemon, logs, &zero, &[("EVIDENCEOS_TOKEN", AGENT)]);
    assert!(rejected.status.success(), "{rejected:?}");
    let outcome: serde_json::Value = serde_json::from_str(&rejected.stdout).unwrap();
    assert_eq!(outcome["state"], "REVOKED", "{rejected:?}");
    assert_eq!(outcome["decision"], "REJECT");
    assert_eq!(outcome["certified"], false);
    assert_eq!(outcome["etl_index"], good_index + 1);
    let zero_id = outcome["claim_id"].as_str().unwrap().to_string();

    // Another lane is another claim; the heavy lane defers.
    let heavy = ctl(&daemon, logs, &[&mod3[..], &["--token", AGENT, "--lane", "heavy"]].concat(), &[]);
    assert!(heavy.status.success(), "{heavy:?}");
    assert_eq!((heavy.value("state"), heavy.value("decision")), ("FROZEN", "DEFER"), "{heavy:?}");
    let heavy_id = heavy.value("claim_id").to_string();
    assert_ne!(heavy_id, good_id);

    // Agents may not fetch capsules.
    let denied = ctl(&daemon, logs, &["capsule", "verify", "--claim-id", &good_id, "--token", AGENT], &[]);
    assert_eq!(denied.status.code(), Some(1), "{denied:?}");
    assert!(denied.stderr.contains("fetch (FetchCapsule) failed: PERMISSION_DENIED"), "{denied:?}");
    assert!(denied.stderr.contains("FetchCapsule needs an auditor or operator token: pass --token"), "{denied:?}");

    // An auditor verifies the rejected capsule, then the first one (two leaves follow it: a real
    // consistency proof).
    let args = ["capsule", "verify", "--claim-id", &zero_id, "--json"];
    let verified = ctl(&daemon, logs, &args, &[("EVIDENCEOS_TOKEN", AUDITOR)]);
    assert!(verified.status.success(), "{verified:?}");
    let report: serde_json::Value = serde_json::from_str(&verified.stdout).unwrap();
    assert_eq!(report["verified"], true, "{verified:?}");
    assert_eq!(report["claim_id"], zero_id.as_str());
    assert_eq!(report["etl_index"].as_u64(), Some(good_index + 1));
    let tree_size = report["tree_size"].as_u64().unwrap();
    assert!(tree_size >= good_index + 3, "three capsules are in the log: {verified:?}");
    assert_eq!(report["key_id"], daemon.key_id.as_str());
    assert!(report["checks"].as_array().unwrap().iter().all(|check| check["ok"] == true), "{verified:?}");

    let verified = ctl(&daemon, logs, &["capsule", "verify", "--claim-id", &good_id, "--token", AUDITOR], &[]);
    assert!(verified.status.success(), "{verified:?}");
    let lines: Vec<&str> = verified.stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{verified:?}");
    let checks: Vec<&str> = lines[..6].iter().map(|line| line.split_whitespace().nth(1).unwrap()).collect();
    assert_eq!(
        checks,
        ["capsule-hash", "capsule-content", "signing-key", "tree-head-signature", "inclusion", "consistency"]
    );
    assert!(lines[..6].iter().all(|line| line.starts_with("ok ")), "{verified:?}");
    assert_eq!(lines[6], format!("capsule {good_capsule} verified at tree size {tree_size}"));

    // The last leaf: the consistency proof is empty and the roots are equal.
    let last = ctl(&daemon, logs, &["capsule", "verify", "--claim-id", &heavy_id, "--token", AUDITOR], &[]);
    assert!(last.status.success(), "{last:?}");
    assert!(last.stdout.contains(&format!("verified at tree size {tree_size}")), "{last:?}");

    let unknown = ctl(&daemon, logs, &["capsule", "verify", "--claim-id", &"ee".repeat(32), "--token", AUDITOR], &[]);
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");
    assert!(unknown.stderr.contains("fetch (FetchCapsule) failed: NOT_FOUND"), "{unknown:?}");

    daemon.stop();
}

#[test]
fn a_daemon_that_is_not_there_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    // Take a free port, then close it again: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let args = ["capsule", "verify", "--claim-id", &"ab".repeat(32), "--endpoint", &endpoint, "--timeout-secs", "5"];
    let ran = run_ctl(tmp.path(), &args, &[]);
    assert_eq!(ran.status.code(), Some(1), "{ran:?}");
    assert!(ran.stdout.is_empty(), "{ran:?}");
    assert!(ran.stderr.starts_with(&format!("evidenceosctl: cannot connect to {endpoint}")), "{ran:?}");
}

/// The secrets of the test's HMAC keys (hex), in the daemon's key-file format with their roles.
const HMAC_KEYS: &str = "# kid:hexsecret:role\nctl-agent:6167656e742d686d61632d736563726574:agent\n\
                         ctl-auditor:61756469746f722d686d61632d736563726574:auditor\n";

/// `https://localhost:PORT` of a daemon serving TLS (its certificate names localhost).
fn https(daemon: &Daemon) -> String {
    daemon.addr.replace("http://127.0.0.1", "https://localhost")
}

/// A daemon that requires TLS, with `extra` authentication flags, the demo holdout and HMAC keys.
/// A TLS daemon; `hmac` adds the HMAC keys file (a daemon with mTLS refuses them: certificates
/// alone decide who calls there).
fn start_tls(dir: &Path, pki: &support::pki::Pki, tls: Vec<String>, hmac: bool, extra: &[&str]) -> (Daemon, String) {
    let data = dir.join(format!("data-{}", tls.len()));
    std::fs::create_dir_all(&data).unwrap();
    install_demo_holdout(&data);
    let keys = pki.path("hmac.keys");
    std::fs::write(&keys, HMAC_KEYS).unwrap();
    let hmac_flags = if hmac { vec!["--auth-hmac-key-file", keys.as_str()] } else { vec![] };
    let flags: Vec<&str> = tls.iter().map(String::as_str).chain(hmac_flags).chain(extra.iter().copied()).collect();
    (support::start_with(&data, dir, &flags, &[]), keys)
}

/// `claim run` and `capsule verify` reach a daemon that requires client certificates (mTLS), and
/// one that requires TLS and HMAC-signed requests; each missing or inconsistent piece is a clear
/// error.
#[test]
fn claims_run_and_verify_over_mtls_and_over_tls_with_hmac() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path();
    let pki = support::pki::Pki::new(tmp.path());
    pki.client("agent");
    let auditor = pki.client("auditor");
    let (daemon, _) = start_tls(tmp.path(), &pki, pki.mtls_flags(), false, &["--auditor-cert-fingerprints", &auditor]);
    let endpoint = https(&daemon);
    let (ca, agent_cert, agent_key) = (pki.path("server-ca.pem"), pki.path("agent.pem"), pki.path("agent.key"));
    let tls = ["--endpoint", &endpoint, "--ca-cert", &ca];
    let agent = [&tls[..], &["--client-cert", &agent_cert, "--client-key", &agent_key]].concat();
    let mod3 = ["claim", "run", "--wasm", "../examples/claim_mod3.wat", "--holdout", "demo"];

    let good = run_ctl(logs, &[&mod3[..], &agent[..]].concat(), &[]);
    assert!(good.status.success(), "{good:?}");
    assert_eq!(good.value("state"), "CERTIFIED", "{good:?}");
    let claim_id = good.value("claim_id").to_string();
    let (auditor_cert, auditor_key) = (pki.path("auditor.pem"), pki.path("auditor.key"));
    let auditor = [&tls[..], &["--client-cert", &auditor_cert, "--client-key", &auditor_key]].concat();
    let verify = ["capsule", "verify", "--claim-id", &claim_id, "--json"];
    let verified = run_ctl(logs, &[&verify[..], &auditor[..]].concat(), &[]);
    assert!(verified.status.success(), "{verified:?}");
    let report: serde_json::Value = serde_json::from_str(&verified.stdout).unwrap();
    assert_eq!((report["verified"].as_bool(), report["claim_id"].as_str()), (Some(true), Some(&*claim_id)));

    // Without a client certificate the daemon refuses the connection; the message says why.
    let refused = run_ctl(logs, &[&verify[..], &tls[..], &["--timeout-secs", "10"]].concat(), &[]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(refused.stdout.is_empty(), "{refused:?}");
    // TLS 1.3 refuses after the handshake: the client sees the alert or only the connection closing.
    assert!(
        refused.stderr.contains("client certificate (mTLS)")
            && refused.stderr.contains("pass --client-cert and --client-key"),
        "{refused:?}"
    );
    daemon.stop();

    // TLS and HMAC alone: the signature decides who calls, so it is checked for real.
    let (daemon, keys) = start_tls(tmp.path(), &pki, pki.tls_flags(), true, &[]);
    let endpoint = https(&daemon);
    let tls = ["--endpoint", &endpoint, "--ca-cert", &ca];
    let mod3 = [&mod3[..], &["--name", "hmac-only"]].concat();
    let unsigned = run_ctl(logs, &[&mod3[..], &tls[..]].concat(), &[]);
    assert_eq!(unsigned.status.code(), Some(1), "{unsigned:?}");
    assert!(unsigned.stderr.contains("UNAUTHENTICATED missing x-evidenceos-signature"), "{unsigned:?}");
    let wrong = pki.path("wrong.keys");
    std::fs::write(&wrong, "ctl-agent:0123456789abcdef\n").unwrap();
    let forged =
        run_ctl(logs, &[&mod3[..], &tls[..], &["--hmac-key-id", "ctl-agent", "--hmac-key-file", &wrong]].concat(), &[]);
    assert!(forged.stderr.contains("UNAUTHENTICATED bad HMAC signature"), "{forged:?}");
    let from_env = [("EVIDENCEOS_HMAC_KEYS", "ctl-agent:6167656e742d686d61632d736563726574")];
    let good = run_ctl(logs, &[&mod3[..], &tls[..], &["--hmac-key-id", "ctl-agent"]].concat(), &from_env);
    assert!(good.status.success(), "{good:?}");
    assert_eq!(good.value("state"), "CERTIFIED", "{good:?}");
    let verify = ["capsule", "verify", "--claim-id", good.value("claim_id")];
    let as_agent =
        run_ctl(logs, &[&verify[..], &tls, &["--hmac-key-id", "ctl-agent", "--hmac-key-file", &keys]].concat(), &[]);
    assert!(
        as_agent.stderr.contains("fetch (FetchCapsule) failed: PERMISSION_DENIED"),
        "the key's role counts: {as_agent:?}"
    );
    let verified = run_ctl(logs, &[&verify[..], &tls, &signed_with(&keys, "ctl-auditor")].concat(), &[]);
    assert!(verified.status.success(), "{verified:?}");
    assert!(verified.stdout.contains("verified at tree size"), "{verified:?}");
    daemon.stop();
}

fn signed_with<'a>(keys: &'a str, kid: &'a str) -> [&'a str; 4] {
    ["--hmac-key-id", kid, "--hmac-key-file", keys]
}

/// Connection flags that cannot work together are command-line errors (exit status 2), found
/// before anything is sent.
#[test]
fn inconsistent_connection_flags_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let verify = ["capsule", "verify", "--claim-id", &"ab".repeat(32)];
    // (flags, environment, the error they give)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 6] = [
        (&["--endpoint", "https://localhost:1"], &[], "an https:// endpoint needs --ca-cert"),
        (&["--endpoint", "http://localhost:1", "--ca-cert", "ca.pem"], &[], "--ca-cert needs an https:// endpoint"),
        (
            &["--endpoint", "https://localhost:1", "--ca-cert", "ca.pem", "--client-cert", "c.pem"],
            &[],
            "--client-cert needs --client-key (mTLS uses both)",
        ),
        (
            &["--endpoint", "http://localhost:1", "--client-cert", "c.pem", "--client-key", "k.pem"],
            &[],
            "--client-cert needs an https:// endpoint",
        ),
        (
            &["--hmac-key-id", "k1"],
            &[],
            "--hmac-key-id needs its secret: give --hmac-key-file or set EVIDENCEOS_HMAC_KEYS",
        ),
        (
            &["--hmac-key-id", "k1"],
            &[("EVIDENCEOS_HMAC_KEYS", "k2:abcd")],
            "EVIDENCEOS_HMAC_KEYS: the HMAC key list has no key \"k1\"",
        ),
    ];
    for (flags, env, expected) in cases {
        let ran = run_ctl(tmp.path(), &[&verify[..], flags].concat(), env);
        assert!(!ran.status.success() && ran.stdout.is_empty(), "{flags:?}: {ran:?}");
        assert_eq!(ran.stderr.lines().count(), 1, "{flags:?}: one line: {ran:?}");
        assert!(ran.stderr.contains(expected), "{flags:?}: expected {expected:?} in {ran:?}");
    }
    let ran =
        run_ctl(tmp.path(), &[&verify[..], &["--endpoint", "http://localhost:1", "--ca-cert", "ca.pem"]].concat(), &[]);
    assert_eq!(ran.status.code(), Some(2), "a flag combination is a command-line error: {ran:?}");
    let ran = run_ctl(tmp.path(), &[&verify[..], &["--hmac-key-file", "keys"]].concat(), &[]);
    assert_eq!(ran.status.code(), Some(2), "{ran:?}");
    assert_eq!(ran.stderr.lines().count(), 1, "{ran:?}");
    assert!(ran.stderr.contains("required arguments were not provided: --hmac-key-id <KID>"), "{ran:?}");
    let help = run_ctl(tmp.path(), &["claim", "run", "--help"], &[]);
    for flag in ["--ca-cert", "--tls-server-name", "--client-cert", "--client-key", "--hmac-key-id", "--hmac-key-file"]
    {
        assert!(help.stdout.contains(flag), "{flag} is documented: {help:?}");
    }
}
