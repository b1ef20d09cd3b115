//! The sync runtime's Connect server as other clients drive it: raw HTTP/1.1 with chunked bodies
//! and `Connect-Timeout-Ms`, then Connect's own Node.js clients (`@connectrpc/connect-node`,
//! installed from the npm registry at pinned versions) against both runtimes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

mod support;

use support::Daemon;

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
