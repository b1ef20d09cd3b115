//! The daemon's resource limits at the limit and one past it, against the real binary:
//! `--max-request-bytes` on both runtimes and on both services (evidenceos.v2 and the legacy
//! evidenceos.v1), `--max-connections` and `--idle-timeout-secs` on the sync runtime (the only
//! runtime that has them; see the flags' help).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use evidenceos_grpc::v2;
use prost::Message as _;
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;

const AUDITOR: &str = "auditor-secret";
const AGENT: &str = "agent-secret";
const TOKENS: [(&str, &str); 2] = [("EVIDENCEOS_AGENT_TOKENS", AGENT), ("EVIDENCEOS_AUDITOR_TOKENS", AUDITOR)];
const IO_TIMEOUT: Duration = Duration::from_secs(20);
const PACKAGES: [&str; 2] = ["evidenceos.v2", "evidenceos.v1"];

/// A CommitArtifacts request (same fields in v1 and v2) whose encoding is exactly `size` bytes,
/// without artifacts: decoded, it is judged INVALID_ARGUMENT (a refusal by size never is).
fn commit_of_size(size: usize) -> v2::CommitArtifactsRequest {
    let mut message = v2::CommitArtifactsRequest { claim_id: vec![1; 32], artifacts: vec![], wasm_module: vec![] };
    let mut module = size - message.encoded_len() - 3;
    loop {
        message.wasm_module = vec![0; module];
        match message.encoded_len().cmp(&size) {
            std::cmp::Ordering::Equal => return message,
            std::cmp::Ordering::Less => module += 1,
            std::cmp::Ordering::Greater => module -= 1,
        }
    }
}

/// One gRPC CommitArtifacts in `package`, by path, so v1 and v2 share the code.
async fn grpc_commit(channel: &tonic::transport::Channel, package: &str, size: usize) -> Code {
    let mut request = tonic::Request::new(commit_of_size(size));
    request.metadata_mut().insert("authorization", format!("Bearer {AGENT}").parse().unwrap());
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path = PathAndQuery::try_from(format!("/{package}.EvidenceOS/CommitArtifacts")).unwrap();
    let codec = tonic_prost::ProstCodec::<v2::CommitArtifactsRequest, v2::CommitArtifactsResponse>::default();
    match grpc.unary(request, path, codec).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn max_request_bytes_at_and_over_the_limit_on_the_tokio_runtime_v2_and_v1() {
    let tmp = tempfile::tempdir().unwrap();
    let limit = 4096;
    let flags = ["--runtime", "tokio", "--max-request-bytes", "4096"];
    let daemon = support::start_with(&tmp.path().join("data"), tmp.path(), &flags, &TOKENS);
    let channel = tonic::transport::Endpoint::from_shared(daemon.addr.clone()).unwrap().connect().await.unwrap();
    for package in PACKAGES {
        assert_eq!(
            grpc_commit(&channel, package, limit).await,
            Code::InvalidArgument,
            "{package}: at the limit, judged"
        );
        assert_eq!(grpc_commit(&channel, package, limit + 1).await, Code::ResourceExhausted, "{package}: over it");
    }
    // The refusals cost nothing: the same channel is still served.
    assert_eq!(grpc_commit(&channel, "evidenceos.v2", limit).await, Code::InvalidArgument);
    drop(channel);
    daemon.stop();
}

/// A blocking HTTP/1.1 connection to the sync runtime.
struct Http(TcpStream);

impl Http {
    fn connect(daemon: &support::Daemon) -> Self {
        let stream = TcpStream::connect(daemon.addr.trim_start_matches("http://")).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        Self(stream)
    }

    /// POSTs `body` as application/proto to `/<package>.EvidenceOS/<method>`; the status, or
    /// `None` if the connection was closed without an answer.
    fn post(&mut self, package: &str, method: &str, body: &[u8]) -> Option<u16> {
        let head = format!(
            "POST /{package}.EvidenceOS/{method} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {AGENT}\r\nContent-Type: application/proto\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        // A write may fail once the server has closed the connection; the read below says so.
        let _ = self.0.write_all(head.as_bytes()).and_then(|()| self.0.write_all(body));
        self.read_status()
    }

    /// Reads one answer (head and Content-Length body) and returns its status.
    fn read_status(&mut self) -> Option<u16> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match self.0.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return None,
            }
        }
        let head = String::from_utf8(head).unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        self.0.read_exact(&mut body).ok()?;
        head.split_whitespace().nth(1).and_then(|s| s.parse().ok())
    }

    fn health(&mut self) -> Option<u16> {
        self.post("evidenceos.v2", "Health", &[])
    }

    /// Whether the server closed the connection (EOF or reset) within `IO_TIMEOUT`.
    fn closed_by_server(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.0.read(&mut byte), Ok(0) | Err(_))
    }
}

#[test]
fn max_request_bytes_at_and_over_the_limit_on_the_sync_runtime_v2_and_v1() {
    let tmp = tempfile::tempdir().unwrap();
    let limit = 4096;
    let flags = ["--runtime", "sync", "--max-request-bytes", "4096"];
    let daemon = support::start_with(&tmp.path().join("data"), tmp.path(), &flags, &TOKENS);
    for package in PACKAGES {
        let mut http = Http::connect(&daemon);
        let at_limit = commit_of_size(limit).encode_to_vec();
        assert_eq!(http.post(package, "CommitArtifacts", &at_limit), Some(400), "{package}: at the limit, judged");
        let over = commit_of_size(limit + 1).encode_to_vec();
        assert_eq!(http.post(package, "CommitArtifacts", &over), Some(429), "{package}: over it, refused unread");
    }
    assert_eq!(Http::connect(&daemon).health(), Some(200), "still serving");
    daemon.stop();
}

#[test]
fn max_connections_serves_the_limit_and_closes_one_more() {
    let tmp = tempfile::tempdir().unwrap();
    let flags = ["--runtime", "sync", "--max-connections", "2"];
    let daemon = support::start_with(&tmp.path().join("data"), tmp.path(), &flags, &TOKENS);
    let (mut first, mut second) = (Http::connect(&daemon), Http::connect(&daemon));
    assert_eq!((first.health(), second.health()), (Some(200), Some(200)), "two connections at a limit of 2");
    let mut third = Http::connect(&daemon);
    assert!(third.closed_by_server(), "the third is closed as soon as it is accepted");
    assert_eq!((first.health(), second.health()), (Some(200), Some(200)), "the two are still served");
    drop(first);
    // The freed slot is noticed when the server next reads the closed connection; retry briefly.
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        if Http::connect(&daemon).health() == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "a closed connection never freed its slot");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(daemon.log().contains("connection_refused"), "{}", daemon.log());
    drop(second);
    daemon.stop();
}

#[test]
fn idle_timeout_keeps_a_connection_used_within_it_and_closes_one_idle_past_it() {
    let tmp = tempfile::tempdir().unwrap();
    let flags = ["--runtime", "sync", "--idle-timeout-secs", "2"];
    let env = [TOKENS[0], TOKENS[1], ("EVIDENCEOS_LOG", "debug")];
    let daemon = support::start_with(&tmp.path().join("data"), tmp.path(), &flags, &env);
    let (mut busy, mut idle) = (Http::connect(&daemon), Http::connect(&daemon));
    assert_eq!((busy.health(), idle.health()), (Some(200), Some(200)));
    // `busy` speaks every second, inside the timeout, for three seconds; `idle` stays silent.
    let started = Instant::now();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(busy.health(), Some(200), "a connection used within the idle timeout stays open");
    }
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert!(idle.closed_by_server(), "a connection idle past the timeout is closed");
    assert_eq!(daemon.log().matches("connection_idle_closed").count(), 1, "{}", daemon.log());
    assert_eq!(busy.health(), Some(200));
    drop((busy, idle));
    daemon.stop();
}
