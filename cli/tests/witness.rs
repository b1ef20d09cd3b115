//! Witness cosignatures (c2sp.org/tlog-witness) with the real daemon: two conforming witnesses
//! run in this process (test code only: `evidenceos_tlog::witness::Witness` behind a loopback
//! HTTP server), the published checkpoint carries both cosignatures, `evidenceosctl log verify`
//! enforces the quorum, a witness that is down costs only its cosignature, a witness that lost
//! its state recovers through 409, and a restarted daemon remembers each witness's size. Every
//! wait is bounded.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use evidenceos_tlog::cosignature::Cosigner;
use evidenceos_tlog::note::{KeyName, VerifierKey};
use evidenceos_tlog::witness::Witness;
use serde_json::Value;

mod support;

use support::ctl::{Ran, ctl};
use support::{Daemon, install_demo_holdout};

const AGENT: &str = "agent-secret";
const TOKENS: [(&str, &str); 1] = [("EVIDENCEOS_AGENT_TOKENS", AGENT)];
const WAIT: Duration = Duration::from_secs(30);
/// Largest request the test witness reads.
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// A conforming witness on loopback; remembers the status of every answer it gave.
struct TestWitness {
    url: String,
    name: &'static str,
    seed: [u8; 32],
    state: Arc<Mutex<Witness>>,
    statuses: Arc<Mutex<Vec<u16>>>,
}

impl TestWitness {
    fn start(name: &'static str, seed: u8) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/witness", listener.local_addr().unwrap());
        let cosigner = Cosigner::new(KeyName::new(name).unwrap(), &[seed; 32]);
        let state = Arc::new(Mutex::new(Witness::new(cosigner)));
        let statuses = Arc::new(Mutex::new(Vec::new()));
        let (served, log) = (Arc::clone(&state), Arc::clone(&statuses));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let status = serve(stream.unwrap(), &served);
                log.lock().unwrap().push(status);
            }
        });
        Self { url, name, seed: [seed; 32], state, statuses }
    }

    fn vkey(&self) -> String {
        Cosigner::new(KeyName::new(self.name).unwrap(), &self.seed).verifier_key().to_string()
    }

    fn flag(&self) -> String {
        format!("{}={}", self.url, self.vkey())
    }

    /// Forgets every head, as a witness restored from an old backup would.
    fn reset(&self, origin: &KeyName, log_key: &VerifierKey) {
        let mut fresh = Witness::new(Cosigner::new(KeyName::new(self.name).unwrap(), &self.seed));
        fresh.add_log(origin.clone(), vec![log_key.clone()]);
        *self.state.lock().unwrap() = fresh;
    }

    fn statuses(&self) -> Vec<u16> {
        self.statuses.lock().unwrap().clone()
    }
}

/// Answers one `POST …/add-checkpoint`; returns the status sent.
fn serve(mut stream: TcpStream, witness: &Mutex<Witness>) -> u16 {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut request = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0 && request.len() < MAX_REQUEST_BYTES, "the request head never ended");
        request.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(request[..head_end].to_vec()).unwrap();
    assert!(head.starts_with("POST /witness/add-checkpoint HTTP/1.1\r\n"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .expect("a content-length");
    while request.len() < head_end + length {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "the request body never ended");
        request.extend_from_slice(&chunk[..n]);
    }
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let reply = witness.lock().unwrap().add_checkpoint(&request[head_end..head_end + length], now);
    let head = format!(
        "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    );
    let _ = stream.write_all(&[head.as_bytes(), &reply.body].concat());
    reply.status
}

/// A static file server for `root` on loopback (what a web server in front of --publish-dir
/// does): GET of a file is 200, anything else 404. Returns its base URL.
fn serve_files(root: &Path) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/log", listener.local_addr().unwrap());
    let root = root.to_path_buf();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            stream.set_read_timeout(Some(WAIT)).unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
                head.push(byte[0]);
            }
            let head = String::from_utf8(head).unwrap();
            let path = head.strip_prefix("GET /log/").and_then(|rest| rest.split(' ').next()).unwrap_or("..");
            let file = if path.contains("..") { None } else { std::fs::read(root.join(path)).ok() };
            let (status, body) = file.map_or((404, b"not found\n".to_vec()), |body| (200, body));
            let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = stream.write_all(&[answer.as_bytes(), &body].concat());
        }
    });
    url
}

/// Runs the example claim; returns its etl index.
fn run_claim(daemon: &Daemon, name: &str) -> u64 {
    let wasm = ["claim", "run", "--wasm", "../examples/claim_mod3.wat", "--holdout", "demo", "--name", name];
    let ran = ctl(&[&wasm[..], &["--token", AGENT, "--endpoint", &daemon.addr]].concat());
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let line = ran.stdout.lines().find(|l| l.starts_with("etl_index:")).unwrap_or_else(|| panic!("{ran:?}"));
    line["etl_index:".len()..].trim().parse().unwrap()
}

/// Waits until the published checkpoint covers `size` leaves with `cosignatures` lines beyond
/// the log's own; returns its size.
fn wait_cosigned(publish: &Path, size: u64, cosignatures: usize) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(publish.join("checkpoint")).unwrap_or_default();
        let published = text.lines().nth(1).and_then(|l| l.parse::<u64>().ok()).unwrap_or(0);
        let signatures = text.lines().filter(|l| l.starts_with('\u{2014}')).count();
        if published >= size && signatures == 1 + cosignatures {
            return published;
        }
        assert!(Instant::now() < deadline, "no checkpoint of size {size} with {cosignatures} cosignatures: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn verify(publish: &Path, vkey: &str, index: u64, witnesses: &[&str], quorum: usize) -> Ran {
    verify_at(publish.to_str().unwrap(), vkey, index, witnesses, quorum)
}

fn verify_at(url: &str, vkey: &str, index: u64, witnesses: &[&str], quorum: usize) -> Ran {
    let (index, quorum) = (index.to_string(), quorum.to_string());
    let mut args = vec!["log", "verify", "--url", url, "--vkey", vkey, "--index", &index, "--quorum", &quorum];
    for witness in witnesses {
        args.extend(["--witness-vkey", witness]);
    }
    ctl(&args)
}

fn start(data: &Path, logs: &Path, publish: &Path, witnesses: &[String], quorum: usize) -> Daemon {
    let (publish, quorum) = (publish.to_str().unwrap(), quorum.to_string());
    let mut flags = vec!["--runtime", "tokio", "--publish-dir", publish, "--checkpoint-interval-ms", "50"];
    for witness in witnesses {
        flags.extend(["--witness", witness]);
    }
    flags.extend(["--witness-quorum", &quorum]);
    support::start_with(data, logs, &flags, &TOKENS)
}

#[test]
fn checkpoints_carry_the_witnesses_cosignatures_and_survive_outages_and_lost_state() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, publish) = (tmp.path().join("data"), tmp.path().join("pub"));
    std::fs::create_dir_all(&data).unwrap();
    install_demo_holdout(&data);
    let (a, b) = (TestWitness::start("witness-a.test", 1), TestWitness::start("witness-b.test", 2));
    let daemon = start(&data, tmp.path(), &publish, &[a.flag(), b.flag()], 2);

    // The witnesses learn the log's key once the daemon made it; until then they answer 404.
    let keys: Value =
        serde_json::from_str(&ctl(&["keys", "list", "--data-dir", data.to_str().unwrap()]).stdout).unwrap();
    let vkey = keys["etl_signing_keys"][0]["vkey"].as_str().unwrap().to_string();
    let (origin, log_key) =
        (KeyName::new(keys["log_origin"].as_str().unwrap()).unwrap(), VerifierKey::parse(&vkey).unwrap());
    a.reset(&origin, &log_key);
    b.reset(&origin, &log_key);
    let index = run_claim(&daemon, "first");
    let size = wait_cosigned(&publish, index + 1, 2);
    let (va, vb) = (a.vkey(), b.vkey());
    let ran = verify(&publish, &vkey, index, &[&va, &vb], 2);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let stranger = Cosigner::new(KeyName::new("witness-c.test").unwrap(), &[3; 32]).verifier_key().to_string();
    let ran = verify(&publish, &vkey, index, &[&va, &vb, &stranger], 3);
    assert_eq!(ran.code, Some(1), "a quorum of 3 is not met: {ran:?}");
    assert!(ran.stdout.contains("quorum") || ran.stderr.contains("quorum"), "{ran:?}");
    let ran = verify(&publish, &vkey, index, &[&va, &stranger], 2);
    assert_eq!(ran.code, Some(1), "a wrong witness vkey does not count: {ran:?}");

    // B loses its state: the daemon's `old <size>` gets a 409 naming 0, and B cosigns from there.
    b.reset(&origin, &log_key);
    let before = b.statuses().len();
    let index = run_claim(&daemon, "second");
    let size_b = wait_cosigned(&publish, (index + 1).max(size + 1), 2);
    let answers = &b.statuses()[before..];
    assert!(answers.windows(2).any(|w| w == [409, 200]), "B answered {answers:?}");
    assert_eq!(verify(&publish, &vkey, index, &[&va, &vb], 2).code, Some(0));
    let log = daemon.log();
    let short: Vec<&str> = log.lines().filter(|l| l.contains("witness_quorum_not_met")).collect();
    assert!(short.iter().all(|l| l.contains(" size=0 ")), "only the checkpoint the witnesses did not know: {short:?}");

    // The same checks over HTTP, from a static file server in front of the directory.
    let url = serve_files(&publish);
    let ran = verify_at(&url, &vkey, index, &[&va, &vb], 2);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let verified: Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(verified["verified"], true, "{verified}");
    assert_eq!(verify_at(&url, &vkey, index, &[&va, &stranger], 2).code, Some(1));
    let state = tmp.path().join("monitor.json");
    let monitored = ctl(&["log", "monitor", "--url", &url, "--vkey", &vkey, "--state", state.to_str().unwrap()]);
    assert_eq!(monitored.code, Some(0), "{monitored:?}");
    assert!(monitored.stdout.contains("\"consistent\":true"), "{monitored:?}");
    let missing = verify_at(&format!("{url}/nowhere"), &vkey, index, &[], 0);
    assert!(missing.code == Some(1) && missing.stderr.contains("404"), "{missing:?}");
    daemon.stop();

    // A restarted daemon remembers what A cosigned (witness_sizes in the data directory), so A
    // cosigns at once, with no 409; a witness that is down costs only its cosignature: the
    // checkpoint is published with two of three and the shortfall logged.
    let down = TcpListener::bind("127.0.0.1:0").unwrap();
    let down_flag = format!("http://{}/w={stranger}", down.local_addr().unwrap());
    drop(down);
    let before = a.statuses().len();
    let daemon = start(&data, tmp.path(), &publish, &[a.flag(), b.flag(), down_flag], 3);
    let index = run_claim(&daemon, "third");
    wait_cosigned(&publish, (index + 1).max(size_b + 1), 2);
    let answers = &a.statuses()[before..];
    assert!(answers.first() == Some(&200) && !answers.contains(&409), "A answered {answers:?}");
    assert_eq!(verify(&publish, &vkey, index, &[&va, &vb], 2).code, Some(0));
    let deadline = Instant::now() + WAIT;
    while !daemon.log().contains("cosigned=2 quorum=3 witnesses=3") {
        assert!(Instant::now() < deadline, "no witness_quorum_not_met: {}", daemon.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = daemon.log();
    let short = log.lines().find(|l| l.contains("cosigned=2 quorum=3 witnesses=3")).unwrap();
    assert!(short.contains("event=\"witness_quorum_not_met\""), "{short}");
    assert!(log.lines().any(|l| l.contains("event=\"witness_failed\"") && l.contains("cannot connect")), "{log}");
    daemon.stop();
}
