//! The daemon's resource limits at the limit and one past it, against the real binary:
//! `--max-request-bytes` on both runtimes and on both services (evidenceos.v2 and the legacy
//! evidenceos.v1), `--max-connections` and `--idle-timeout-secs` on both runtimes, and
//! `--request-timeout-ms` on the tokio runtime (a request body that never ends).

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

/// One gRPC CommitArtifacts in `package`, by path, so v1 and v2 share the code.
async fn grpc_commit(channel: &tonic::transport::Channel, package: &str, size: usize) -> Code {
    let mut request = tonic::Request::new(support::commit_of_size(size));
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
        let at_limit = support::commit_of_size(limit).encode_to_vec();
        assert_eq!(http.post(package, "CommitArtifacts", &at_limit), Some(400), "{package}: at the limit, judged");
        let over = support::commit_of_size(limit + 1).encode_to_vec();
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

/// A new HTTP/2 connection (tonic's `Endpoint::connect` opens one per call of it).
async fn grpc_connect(daemon: &support::Daemon) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    tonic::transport::Endpoint::from_shared(daemon.addr.clone()).unwrap().connect().await
}

fn health_path() -> PathAndQuery {
    PathAndQuery::from_static("/evidenceos.v2.EvidenceOS/Health")
}

fn authorized<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {AGENT}").parse().unwrap());
    request
}

/// One v2 Health call on `channel`.
async fn grpc_health(channel: &tonic::transport::Channel) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    if grpc.ready().await.is_err() {
        return Code::Unavailable;
    }
    let codec = tonic_prost::ProstCodec::<v2::HealthRequest, v2::HealthResponse>::default();
    match grpc.unary(authorized(v2::HealthRequest {}), health_path(), codec).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// Whether the server ends a raw connection (EOF or reset) within `IO_TIMEOUT`, whatever it
/// sent before (an HTTP/2 server speaks first: SETTINGS). A read timeout is not an end.
fn ended_by_server(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe),
        }
    }
}

/// A raw TCP connection that has sent the HTTP/2 client preface and an empty SETTINGS frame,
/// and then nothing.
fn silent_http2(daemon: &support::Daemon) -> TcpStream {
    let mut stream = TcpStream::connect(daemon.addr.trim_start_matches("http://")).unwrap();
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_on_the_tokio_runtime_serves_the_limit_and_closes_one_more() {
    let tmp = tempfile::tempdir().unwrap();
    let flags = ["--runtime", "tokio", "--max-connections", "2"];
    let daemon = support::start_with(&tmp.path().join("data"), tmp.path(), &flags, &TOKENS);
    let (first, second) = (grpc_connect(&daemon).await.unwrap(), grpc_connect(&daemon).await.unwrap());
    assert_eq!((grpc_health(&first).await, grpc_health(&second).await), (Code::Ok, Code::Ok), "two at a limit of 2");
    let mut third = silent_http2(&daemon);
    assert!(
        tokio::task::block_in_place(|| ended_by_server(&mut third)),
        "the third is closed as soon as it is accepted"
    );
    assert_eq!((grpc_health(&first).await, grpc_health(&second).await), (Code::Ok, Code::Ok), "the two still served");
    drop(first);
    // The slot is freed once the server has seen the client close; retry briefly.
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        if let Ok(channel) = grpc_connect(&daemon).await
            && grpc_health(&channel).await == Code::Ok
        {
            break;
        }
        assert!(Instant::now() < deadline, "a closed connection never freed its slot");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(daemon.log().contains("connection_refused"), "{}", daemon.log());
    drop(second);
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_on_the_tokio_runtime_keeps_used_and_streaming_connections_and_closes_an_idle_one() {
    let tmp = tempfile::tempdir().unwrap();
    let flags = ["--runtime", "tokio", "--idle-timeout-secs", "2"];
    let env = [TOKENS[0], TOKENS[1], ("EVIDENCEOS_LOG", "debug")];
    let daemon = support::start_with(&tmp.path().join("data"), tmp.path(), &flags, &env);
    let busy = grpc_connect(&daemon).await.unwrap();
    assert_eq!(grpc_health(&busy).await, Code::Ok);
    // A WatchRevocations stream on its own connection: silent, but a call in flight.
    let watching = grpc_connect(&daemon).await.unwrap();
    let mut grpc = tonic::client::Grpc::new(watching.clone());
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<v2::WatchRevocationsRequest, v2::WatchRevocationsResponse>::default();
    let path = PathAndQuery::from_static("/evidenceos.v2.EvidenceOS/WatchRevocations");
    let mut watch =
        grpc.server_streaming(authorized(v2::WatchRevocationsRequest {}), path, codec).await.unwrap().into_inner();
    let mut idle = silent_http2(&daemon);
    let opened = Instant::now();
    let idle = std::thread::spawn(move || (ended_by_server(&mut idle), opened.elapsed()));
    // `busy` speaks every second, inside the timeout, for three seconds.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(grpc_health(&busy).await, Code::Ok, "a connection used within the idle timeout stays open");
    }
    let (ended, after) = idle.join().unwrap();
    assert!(ended, "a connection idle past the timeout is closed");
    assert!(after >= Duration::from_secs(2), "closed after {after:?}, before the idle timeout");
    let still_open = tokio::time::timeout(Duration::from_millis(300), watch.message()).await;
    assert!(still_open.is_err(), "a silent stream is a call in flight, not idleness: {still_open:?}");
    assert_eq!(daemon.log().matches("connection_idle_closed").count(), 1, "{}", daemon.log());
    assert_eq!(grpc_health(&busy).await, Code::Ok);
    drop((busy, watch, watching));
    daemon.stop();
}

#[tokio::test]
async fn request_timeout_on_the_tokio_runtime_fails_a_call_whose_body_never_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let flags = ["--runtime", "tokio", "--request-timeout-ms", "500"];
    let daemon = support::start_with(&tmp.path().join("data"), tmp.path(), &flags, &TOKENS);
    let channel = grpc_connect(&daemon).await.unwrap();
    // The whole message is sent, but the request stream stays open: the body never ends.
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    sender.send(v2::HealthRequest {}).await.unwrap();
    let body = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(receiver);
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<v2::HealthRequest, v2::HealthResponse>::default();
    let started = Instant::now();
    let call = grpc.client_streaming(authorized(body), health_path(), codec);
    let answer = tokio::time::timeout(IO_TIMEOUT, call).await.expect("the call was never cut off");
    assert_eq!(answer.map(|_| Code::Ok).unwrap_or_else(|status| status.code()), Code::DeadlineExceeded);
    assert!(started.elapsed() >= Duration::from_millis(500), "cut off before the timeout");
    drop(sender);
    assert_eq!(grpc_health(&channel).await, Code::Ok, "the connection still serves other calls");
    assert!(daemon.log().contains("request_timeout"), "{}", daemon.log());
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_tokio_runtime_backs_off_and_serves_again() {
    let tmp = tempfile::tempdir().unwrap();
    let flags = ["--runtime", "tokio", "--max-connections", "1000"];
    let daemon = support::start_under_shell(
        r#"ulimit -n 64 && exec "$0" "$@""#,
        &tmp.path().join("data"),
        tmp.path(),
        &flags,
        &TOKENS,
    );
    let addr = daemon.addr.trim_start_matches("http://").to_string();
    // More connections than the daemon has descriptors: accepting fails until they go.
    let crowd: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let failures = daemon.log().matches("accept_failed").count();
    assert!(failures > 0, "the daemon never ran out of descriptors: {}", daemon.log());
    assert!(failures <= 20, "{failures} accept failures logged in about a second: no back-off");
    drop(crowd);
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        if let Ok(channel) = grpc_connect(&daemon).await
            && grpc_health(&channel).await == Code::Ok
        {
            break;
        }
        assert!(Instant::now() < deadline, "the daemon did not serve again once descriptors were free");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon.stop();
}
