//! The sync runtime's Connect server as other clients drive it: raw HTTP/1.1 with chunked bodies
//! and `Connect-Timeout-Ms`, then Connect's own Node.js clients (`@connectrpc/connect-node`,
//! installed from the npm registry at pinned versions) against both runtimes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use evidenceos_core::hash::sha256;
use serde_json::Value;

mod support;

use support::{Daemon, install_demo_holdout};

const AGENT: &str = "agent-secret";
const AUDITOR: &str = "auditor-secret";
const TOKENS: [(&str, &str); 2] = [("EVIDENCEOS_AGENT_TOKENS", AGENT), ("EVIDENCEOS_AUDITOR_TOKENS", AUDITOR)];
const IO_TIMEOUT: Duration = Duration::from_secs(30);

fn start_sync(data_dir: &std::path::Path, log_dir: &std::path::Path, extra: &[&str]) -> Daemon {
    let mut flags = vec!["--runtime", "sync"];
    flags.extend_from_slice(extra);
    support::start_with(data_dir, log_dir, &flags, &TOKENS)
}

fn connect(daemon: &Daemon) -> TcpStream {
    let stream = TcpStream::connect(daemon.addr.trim_start_matches("http://")).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Reads one response with a `Content-Length` body: (status, body).
fn read_answer(stream: &mut TcpStream) -> (u16, Vec<u8>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "connection closed mid-response: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let length = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("content-length")))
        .map(|(_, v)| v.trim().parse().unwrap())
        .expect("content-length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    (status, body)
}

/// The head of a JSON POST to `method` with the auditor's token and `extra` header lines.
fn head(method: &str, extra: &str) -> String {
    format!(
        "POST /evidenceos.v2.EvidenceOS/{method} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
Authorization: Bearer {AUDITOR}\r\n{extra}\r\n"
    )
}

fn code(body: &[u8]) -> String {
    let json: Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)));
    json["code"].as_str().unwrap_or_default().to_string()
}

#[test]
fn chunked_bodies_are_decoded_and_held_to_the_request_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let sync = start_sync(&tmp.path().join("data"), tmp.path(), &["--max-request-bytes", "64"]);
    let mut stream = connect(&sync);

    // Two chunks (one with an extension) and a trailer, in pieces, then a second call on the same
    // keep-alive connection.
    let chunked = head("GetSignedTreeHead", "Transfer-Encoding: chunked\r\n");
    stream.write_all(chunked.as_bytes()).unwrap();
    stream.write_all(b"1;ext=1\r\n{\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    stream.write_all(b"1\r\n}\r\n0\r\nX-Trailer: t\r\n\r\n").unwrap();
    let (status, body) = read_answer(&mut stream);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let sth: Value = serde_json::from_slice(&body).unwrap();
    assert!(sth.get("treeSize").is_some() || sth.get("signature").is_some(), "{sth}");
    stream
        .write_all(format!("{}2\r\n{{}}\r\n0\r\n\r\n", head("Health", "Transfer-Encoding: chunked\r\n")).as_bytes())
        .unwrap();
    assert_eq!(read_answer(&mut stream).0, 200);

    // Over --max-request-bytes as decoded: refused like an oversized Content-Length.
    let mut stream = connect(&sync);
    stream.write_all(format!("{}40\r\n", head("Health", "Transfer-Encoding: chunked\r\n")).as_bytes()).unwrap();
    stream.write_all(&[b' '; 64]).unwrap();
    stream.write_all(b"\r\n1\r\n").unwrap();
    let (status, body) = read_answer(&mut stream);
    assert_eq!((status, code(&body)), (429, "resource_exhausted".to_string()));

    // Content-Length and Transfer-Encoding together: 400 and closed (request smuggling).
    let mut stream = connect(&sync);
    let both = head("Health", "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n");
    stream.write_all(format!("{both}0\r\n\r\n").as_bytes()).unwrap();
    assert_eq!(read_answer(&mut stream).0, 400);
    let mut rest = Vec::new();
    assert_eq!(stream.read_to_end(&mut rest).unwrap_or(0), 0, "closed after the 400");
    sync.stop();
}

#[test]
fn connect_timeout_ms_passed_before_execution_is_deadline_exceeded() {
    let tmp = tempfile::tempdir().unwrap();
    let sync = start_sync(&tmp.path().join("data"), tmp.path(), &[]);
    let mut stream = connect(&sync);

    // The deadline counts from the request's first byte: a body that arrives after it is too late.
    stream.write_all(head("GetSignedTreeHead", "Connect-Timeout-Ms: 100\r\nContent-Length: 2\r\n").as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    stream.write_all(b"{}").unwrap();
    let (status, body) = read_answer(&mut stream);
    assert_eq!((status, code(&body)), (504, "deadline_exceeded".to_string()), "{}", String::from_utf8_lossy(&body));

    // In time: answered; the connection stays usable after the 504.
    stream
        .write_all(
            format!("{}{{}}", head("GetSignedTreeHead", "Connect-Timeout-Ms: 10000\r\nContent-Length: 2\r\n"))
                .as_bytes(),
        )
        .unwrap();
    assert_eq!(read_answer(&mut stream).0, 200);

    // Malformed: invalid_argument.
    for bad in ["1.5", "12345678901", "-1"] {
        let extra = format!("Connect-Timeout-Ms: {bad}\r\nContent-Length: 2\r\n");
        stream.write_all(format!("{}{{}}", head("GetSignedTreeHead", &extra)).as_bytes()).unwrap();
        let (status, body) = read_answer(&mut stream);
        assert_eq!((status, code(&body)), (400, "invalid_argument".to_string()), "{bad}");
    }
    sync.stop();
}

/// Connect's Node.js packages, pinned: connect-node 2.2.0 (the version new users get), the
/// connect core it requires exactly, and a protobuf-es within its peer range.
const NPM_PACKAGES: [(&str, &str); 3] =
    [("@connectrpc/connect-node", "2.2.0"), ("@connectrpc/connect", "2.2.0"), ("@bufbuild/protobuf", "2.17.0")];
/// The first install fetches three small packages; later runs find them cached.
const NPM_TIMEOUT: Duration = Duration::from_secs(180);
/// One lifecycle through the Node client.
const NODE_TIMEOUT: Duration = Duration::from_secs(60);
const LIFECYCLE_SCRIPT: &str = include_str!("connect_interop/lifecycle.mjs");

/// Runs `command` with its output in files under `dir`, killed after `timeout`:
/// (success, stdout, stderr).
fn run_bounded(mut command: Command, dir: &Path, label: &str, timeout: Duration) -> (bool, String, String) {
    let (out, err) = (dir.join(format!("{label}.stdout")), dir.join(format!("{label}.stderr")));
    command.stdin(Stdio::null());
    command.stdout(std::fs::File::create(&out).unwrap()).stderr(std::fs::File::create(&err).unwrap());
    let mut child = command.spawn().unwrap_or_else(|e| panic!("{label}: could not start: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{label}: still running after {timeout:?}:\n{}", std::fs::read_to_string(&err).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    (status.success(), read(&out), read(&err))
}

/// The pinned packages installed under the target directory (found from this test's executable,
/// target/<profile>/deps/<test>), fetched from the npm registry only when absent or of other
/// versions; the lifecycle script is written next to them so `import` finds them.
fn npm_install() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).expect("target/<profile>/deps/<test>");
    let dir = target.join("connect-interop-npm");
    std::fs::create_dir_all(&dir).unwrap();
    let dependencies: serde_json::Map<String, Value> =
        NPM_PACKAGES.iter().map(|(name, version)| (name.to_string(), Value::from(*version))).collect();
    let manifest = serde_json::json!({ "private": true, "type": "module", "dependencies": dependencies }).to_string();
    let marker = dir.join("installed.json");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(manifest.as_str()) {
        std::fs::write(dir.join("package.json"), &manifest).unwrap();
        let mut npm = Command::new("npm");
        npm.current_dir(&dir).args(["install", "--no-audit", "--no-fund", "--ignore-scripts", "--no-package-lock"]);
        let (ok, out, err) = run_bounded(npm, &dir, "npm-install", NPM_TIMEOUT);
        assert!(ok, "npm install of {manifest} in {} failed:\n{out}\n{err}", dir.display());
        // Written last: an interrupted install is redone on the next run.
        std::fs::write(&marker, &manifest).unwrap();
    }
    std::fs::write(dir.join("lifecycle.mjs"), LIFECYCLE_SCRIPT).unwrap();
    dir
}

fn node_available() -> bool {
    Command::new("node").arg("--version").output().is_ok_and(|output| output.status.success())
}

/// Connect's own Node.js clients, as a new user would set them up: `createConnectTransport`
/// over HTTP/1.1 (JSON and binary) against the sync runtime, and `createGrpcTransport` against
/// the tokio runtime; a whole lifecycle each, and an error with its code.
#[test]
fn connect_node_clients_run_a_lifecycle_on_both_runtimes() {
    if !node_available() {
        eprintln!(
            "\n!!!!! SKIPPED connect_node_clients_run_a_lifecycle_on_both_runtimes: `node` is not on PATH, so \
             interop with @connectrpc/connect-node was NOT checked. Install Node.js >= 20 and npm. !!!!!\n"
        );
        return;
    }
    let npm_dir = npm_install();
    let tmp = tempfile::tempdir().unwrap();
    let descriptors = tmp.path().join("evidenceos_descriptor.bin");
    std::fs::write(&descriptors, evidenceos_grpc::FILE_DESCRIPTOR_SET).unwrap();
    let module = tmp.path().join("claim_mod3.wasm");
    let wat = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/claim_mod3.wat");
    std::fs::write(&module, wat::parse_file(wat).unwrap()).unwrap();
    let (sync_dir, tokio_dir) = (tmp.path().join("sync"), tmp.path().join("tokio"));
    install_demo_holdout(&sync_dir);
    install_demo_holdout(&tokio_dir);
    let sync = start_sync(&sync_dir, tmp.path(), &[]);
    let tokio = support::start_with(&tokio_dir, tmp.path(), &["--runtime", "tokio"], &TOKENS);

    for (daemon, transport) in [(&sync, "connect-json"), (&sync, "connect-binary"), (&tokio, "grpc")] {
        let mut node = Command::new("node");
        node.arg(npm_dir.join("lifecycle.mjs")).arg(&descriptors).arg(transport).arg(&daemon.addr);
        node.arg(&module).args([AGENT, AUDITOR]);
        let (ok, out, err) = run_bounded(node, tmp.path(), transport, NODE_TIMEOUT);
        assert!(ok, "{transport}: the Node client failed:\n{out}\n{err}\ndaemon log:\n{}", daemon.log());
        let result: Value = serde_json::from_str(out.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{transport}: {e}: {out}"));
        let states: Vec<&str> = result["states"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        let expected = ["CLAIM_STATE_UNCOMMITTED", "CLAIM_STATE_COMMITTED", "CLAIM_STATE_SEALED", "CLAIM_STATE_SEALED"];
        assert_eq!(states, expected, "{transport}: {result}");
        assert_eq!(result["executed"]["certified"], true, "{transport}: {result}");
        let capsule = BASE64.decode(result["fetched"]["capsuleBytes"].as_str().unwrap_or_default()).unwrap();
        assert!(!capsule.is_empty(), "{transport}: {result}");
        let capsule_hash = BASE64.decode(result["fetched"]["capsuleHash"].as_str().unwrap_or_default()).unwrap();
        assert_eq!(capsule_hash, sha256(&capsule).to_vec(), "{transport}");
        assert_eq!(result["executed"]["capsuleHash"], result["fetched"]["capsuleHash"], "{transport}");
        assert_eq!(result["error"]["code"], "Unauthenticated", "{transport}: {result}");
    }
    sync.stop();
    tokio.stop();
}
