//! `evidenceosd --tiles-listen`: the published log served over HTTP by the real daemon on both
//! runtimes, byte for byte what `--publish-dir` holds, with the cache headers SPEC §10's readers
//! (CDNs, `log verify`) rely on. Every wait is bounded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::http::Answer;
use support::{Daemon, install_demo_holdout, wait_published};

const AGENT: &str = "agent-secret";
const WAIT: Duration = Duration::from_secs(30);
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// One request on a connection of its own (`Connection: close`); the raw answer, split.
fn request(addr: &str, method: &str, path: &str) -> Answer {
    try_request(addr, method, path).unwrap()
}

fn try_request(addr: &str, method: &str, path: &str) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(WAIT))?;
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: tiles\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete head");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    Ok(Answer::from_head(&head, raw[split + 4..].to_vec()))
}

fn start(data: &Path, logs: &Path, publish: &Path, runtime: &str) -> Daemon {
    let flags = [
        "--runtime",
        runtime,
        "--publish-dir",
        publish.to_str().unwrap(),
        "--checkpoint-interval-ms",
        "50",
        "--tiles-listen",
        "127.0.0.1:0",
    ];
    let env = [("EVIDENCEOS_AGENT_TOKENS", AGENT), ("EVIDENCEOS_LOG", "info,evidenceosd::tiles=debug")];
    support::start_with(data, logs, &flags, &env)
}

fn tiles_addr(daemon: &Daemon) -> String {
    let log = daemon.log();
    let line = log.lines().find(|l| l.contains("event=\"tiles_listening\"") || l.contains("tiles_listening"));
    let line = line.unwrap_or_else(|| panic!("tiles address logged: {log}"));
    line.split("addr=").nth(1).unwrap().split_whitespace().next().unwrap().to_string()
}

fn run_claim(daemon: &Daemon, name: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_evidenceosctl"))
        .args(["claim", "run", "--wasm", "../examples/claim_mod3.wat", "--holdout", "demo", "--name", name])
        .args(["--token", AGENT, "--endpoint", &daemon.addr])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("EVIDENCEOS_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
}

/// Every file under `root/tile`, relative to `root`.
fn tile_files(root: &Path) -> Vec<PathBuf> {
    let is_temporary = |path: &PathBuf| path.file_name().unwrap().to_str().unwrap().starts_with('.');
    let files = support::files_under(&root.join("tile")).into_iter().filter(|path| !is_temporary(path));
    files.map(|path| path.strip_prefix(root).unwrap().to_path_buf()).collect()
}

/// The checkpoint and every published tile and bundle, fetched over HTTP, equal the files.
fn objects_match_the_directory(addr: &str, publish: &Path) {
    let checkpoint = request(addr, "GET", "/checkpoint");
    assert_eq!(checkpoint.status, 200, "{checkpoint:?}");
    assert_eq!(checkpoint.body, std::fs::read(publish.join("checkpoint")).unwrap());
    assert_eq!(checkpoint.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(checkpoint.header("cache-control"), Some("no-cache"));
    let files = tile_files(publish);
    assert!(files.iter().any(|f| f.starts_with("tile/entries")) && files.iter().any(|f| f.starts_with("tile/0")));
    for file in files {
        let path = format!("/{}", file.to_str().unwrap());
        let answer = request(addr, "GET", &path);
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(answer.body, std::fs::read(publish.join(&file)).unwrap(), "{path}");
        assert_eq!(answer.header("content-type"), Some("application/octet-stream"), "{path}");
        let expected = if path.contains(".p/") { "no-cache" } else { IMMUTABLE };
        assert_eq!(answer.header("cache-control"), Some(expected), "{path}");
    }
}

fn refusals(addr: &str) {
    let head = request(addr, "HEAD", "/checkpoint");
    let get = request(addr, "GET", "/checkpoint");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty(), "HEAD has no body");
    assert_eq!(head.header("content-length"), Some(get.body.len().to_string().as_str()));
    assert_eq!(head.header("cache-control"), Some("no-cache"));
    for method in ["POST", "PUT", "DELETE"] {
        let answer = request(addr, method, "/checkpoint");
        assert_eq!((answer.status, answer.header("allow")), (405, Some("GET, HEAD")), "{method}");
    }
    // Absent, non-canonical (leading zeros, an explicit full width) and outside the log's paths.
    for path in ["/tile/0/x001/000", "/tile/0/0.p/2", "/tile/0/000.p/256", "/tile/entries/00.p/2", "/../data/etl.log"] {
        assert_eq!(request(addr, "GET", path).status, 404, "{path}");
    }
}

/// The 65th open connection is answered 503; once the others close, requests are served again.
fn connection_limit(addr: &str) {
    let held: Vec<TcpStream> = (0..64).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // Answered at accept, before any request is read: read it without sending one.
    let mut over = TcpStream::connect(addr).unwrap();
    over.set_read_timeout(Some(WAIT)).unwrap();
    let mut answer = String::new();
    over.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    drop(held);
    let deadline = Instant::now() + WAIT;
    // Until the slots are freed a request may meet the 503 (sent before the request is read, so
    // the close can reset the connection).
    while try_request(addr, "GET", "/checkpoint").map_or(true, |a| a.status != 200) {
        assert!(Instant::now() < deadline, "connections were never released");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn serves_the_published_log(runtime: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (data, publish) = (tmp.path().join("data"), tmp.path().join("pub"));
    std::fs::create_dir_all(&data).unwrap();
    install_demo_holdout(&data);
    // Claims go through gRPC (tokio); the sync runtime then serves the same directory.
    let mut daemon = start(&data, tmp.path(), &publish, "tokio");
    run_claim(&daemon, "first");
    run_claim(&daemon, "second");
    wait_published(&publish, 2);
    if runtime != "tokio" {
        daemon.stop();
        daemon = start(&data, tmp.path(), &publish, runtime);
    }
    let addr = tiles_addr(&daemon);
    // Two claims fill no tile: a full one is put in place, as the publisher would at size 256,
    // to see the server answer it as immutable.
    std::fs::create_dir_all(publish.join("tile/1")).unwrap();
    std::fs::write(publish.join("tile/1/000"), [7u8; 8192]).unwrap();
    objects_match_the_directory(&addr, &publish);
    refusals(&addr);
    connection_limit(&addr);
    let log = daemon.log();
    assert!(log.lines().any(|l| l.contains("tiles_http") && l.contains("/checkpoint")), "{log}");
    daemon.stop();
}

#[test]
fn tokio_runtime_serves_the_published_log() {
    serves_the_published_log("tokio");
}

#[test]
fn sync_runtime_serves_the_published_log() {
    serves_the_published_log("sync");
}

/// A peer trickling a request head a byte at a time loses its connection after the 10 s request
/// deadline, though no single read waits that long.
#[test]
fn a_trickled_request_is_cut_at_the_request_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, publish) = (tmp.path().join("data"), tmp.path().join("pub"));
    std::fs::create_dir_all(&data).unwrap();
    let daemon = start(&data, tmp.path(), &publish, "sync");
    let mut stream = TcpStream::connect(tiles_addr(&daemon)).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    let started = Instant::now();
    stream.write_all(b"GET /checkpoint HTTP/1.1\r\n").unwrap();
    let cut = loop {
        std::thread::sleep(Duration::from_millis(500));
        let mut probe = [0u8; 1];
        let open = match stream.read(&mut probe) {
            Err(e) => matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            Ok(_) => false,
        };
        if !open || stream.write_all(b"X-Trickle: a\r\n").is_err() {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "still open after 20 s");
    };
    // Before 13 s: 26 header lines at most, under the 32-field limit, so the deadline is what cut it.
    assert!(cut >= Duration::from_secs(9) && cut < Duration::from_secs(13), "cut after {cut:?}");
}

#[test]
fn tiles_listen_without_publish_dir_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_evidenceosd"))
        .args(["--listen", "127.0.0.1:0", "--tiles-listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--publish-dir"), "{output:?}");
}
