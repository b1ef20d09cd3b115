//! The blocking Connect server: one thread, one request at a time.
//!
//! A readiness loop (epoll through mio) watches the listener, the open connections and a wake-up
//! pipe for signals. When a connection is readable its next request is read whole (blocking,
//! bounded by `request_timeout`), authenticated, handed to the kernel, and its effects carried
//! out inline before the answer is written: every reply to a command is durable. While one
//! request is read or executed nobody else is served; that is the trade-off of this runtime.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use evidenceos_core::{ErrorCode, KernelError};
use evidenceos_io_sync::{BlockingRuntime, now};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::codec::{self, Codec, Codecs};
use super::http::{self, HttpRequest, HttpResponse, Limits};
use crate::access_log::log_rpc;
use crate::auth::Authenticator;
use crate::rpc::{self, Method, Plan};
use crate::{mapping, v2};

const LISTENER: Token = Token(0);
const WAKEUP: Token = Token(1);
const FIRST_CONNECTION: usize = 2;
/// The longest the loop sleeps without looking at the stop and reload flags.
const MAX_POLL_WAIT: Duration = Duration::from_millis(500);

/// Settings of the blocking server.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub authenticator: Authenticator,
    pub server_info: v2::GetServerInfoResponse,
    pub limits: Limits,
    /// Open connections beyond this are closed as soon as they are accepted.
    pub max_connections: usize,
    /// A keep-alive connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// A request (and a TLS handshake) must arrive whole within this once its first byte did.
    pub request_timeout: Duration,
}

impl ServeConfig {
    pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
}

/// How the process steers the loop: flags set by signal handlers, and the read end of a pipe
/// they also write to so the loop wakes at once.
#[derive(Debug)]
pub struct Control {
    pub stop: Arc<AtomicBool>,
    pub reload: Arc<AtomicBool>,
    pub wakeup: Option<UnixStream>,
}

/// Why [`serve`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeEnd {
    /// The stop flag was raised; open connections were closed.
    StopRequested,
    /// A storage effect failed: the kernel refuses everything until the process restarts.
    StorageFailed,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => &tls.sock,
        }
    }

    /// Plaintext already decrypted by rustls but not yet read (a pipelined request).
    fn take_buffered_plaintext(&mut self, into: &mut Vec<u8>) {
        if let Self::Tls(tls) = self {
            let mut chunk = [0u8; 4096];
            // Reads only what rustls holds; WouldBlock means nothing is left.
            while let Ok(n @ 1..) = tls.conn.reader().read(&mut chunk) {
                into.extend_from_slice(&chunk[..n]);
            }
        }
    }

    fn peer_certificates(&self) -> Option<Vec<Vec<u8>>> {
        match self {
            Self::Plain(_) => None,
            Self::Tls(tls) => tls.conn.peer_certificates().map(|chain| chain.iter().map(|c| c.to_vec()).collect()),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(tcp) => tcp.read(buf),
            Self::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(tcp) => tcp.write(buf),
            Self::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(tcp) => tcp.flush(),
            Self::Tls(tls) => tls.flush(),
        }
    }
}

struct Connection {
    stream: Stream,
    /// Bytes read past the last request (pipelining).
    buffered: Vec<u8>,
    peer: SocketAddr,
    last_active: Instant,
}

/// What became of a connection after it was served.
enum After {
    KeepOpen,
    Close,
}

/// Serves until the stop flag is raised or storage fails. Reloads (SIGHUP) run `on_reload`
/// between requests.
pub fn serve(
    listener: TcpListener,
    config: &ServeConfig,
    runtime: &mut BlockingRuntime,
    control: Control,
    mut on_reload: impl FnMut(&mut BlockingRuntime),
) -> std::io::Result<ServeEnd> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(256);
    listener.set_nonblocking(true)?;
    poll.registry().register(&mut SourceFd(&listener.as_raw_fd()), LISTENER, Interest::READABLE)?;
    if let Some(wakeup) = &control.wakeup {
        wakeup.set_nonblocking(true)?;
        poll.registry().register(&mut SourceFd(&wakeup.as_raw_fd()), WAKEUP, Interest::READABLE)?;
    }
    let codecs = Codecs::shared();
    let mut connections: HashMap<usize, Connection> = HashMap::new();
    let mut next_token = FIRST_CONNECTION;
    loop {
        if control.stop.load(Ordering::SeqCst) {
            for (_, connection) in connections.drain() {
                close(&poll, connection);
            }
            return Ok(ServeEnd::StopRequested);
        }
        if control.reload.swap(false, Ordering::SeqCst) {
            on_reload(runtime);
        }
        runtime.tick(now());
        if runtime.is_failed() {
            return Ok(ServeEnd::StorageFailed);
        }
        let wait = poll_wait(runtime, &connections, config.idle_timeout);
        match poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in &events {
            match event.token() {
                LISTENER => accept_all(&listener, &poll, config, &mut connections, &mut next_token),
                WAKEUP => drain_wakeup(control.wakeup.as_ref()),
                Token(token) => {
                    let Some(mut connection) = connections.remove(&token) else { continue };
                    match serve_connection(&mut connection, config, codecs, runtime) {
                        After::KeepOpen => drop(connections.insert(token, connection)),
                        After::Close => close(&poll, connection),
                    }
                }
            }
        }
        let idle: Vec<usize> = connections
            .iter()
            .filter(|(_, c)| c.last_active.elapsed() >= config.idle_timeout)
            .map(|(token, _)| *token)
            .collect();
        for token in idle {
            if let Some(connection) = connections.remove(&token) {
                tracing::debug!(event = "connection_idle_closed", peer = %connection.peer);
                close(&poll, connection);
            }
        }
    }
}

/// Until the earliest of: the kernel's next deadline, the next idle connection to close, and
/// [`MAX_POLL_WAIT`].
fn poll_wait(runtime: &BlockingRuntime, connections: &HashMap<usize, Connection>, idle: Duration) -> Duration {
    let mut wait = MAX_POLL_WAIT;
    if let Some(at) = runtime.next_wake() {
        wait = wait.min(Duration::from_millis(at.0.saturating_sub(now().0)));
    }
    for connection in connections.values() {
        wait = wait.min(idle.saturating_sub(connection.last_active.elapsed()));
    }
    wait
}

fn accept_all(
    listener: &TcpListener,
    poll: &Poll,
    config: &ServeConfig,
    connections: &mut HashMap<usize, Connection>,
    next_token: &mut usize,
) {
    loop {
        let (tcp, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Out of file descriptors and the like: the pending connection waits for the next turn.
                tracing::warn!(event = "accept_failed", error = %e, "could not accept a connection");
                return;
            }
        };
        if connections.len() >= config.max_connections {
            tracing::warn!(event = "connection_refused", peer = %peer, max_connections = config.max_connections, "too many open connections");
            continue;
        }
        let stream = match &config.tls {
            Some(tls) => match rustls::ServerConnection::new(tls.clone()) {
                Ok(conn) => Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))),
                Err(e) => {
                    tracing::warn!(event = "tls_failed", peer = %peer, error = %e);
                    continue;
                }
            },
            None => Stream::Plain(tcp),
        };
        let token = *next_token;
        *next_token = next_token.checked_add(1).unwrap_or(FIRST_CONNECTION);
        let fd = stream.tcp().as_raw_fd();
        let prepared = stream
            .tcp()
            .set_nodelay(true)
            .and_then(|()| poll.registry().register(&mut SourceFd(&fd), Token(token), Interest::READABLE));
        if let Err(e) = prepared {
            tracing::warn!(event = "accept_failed", peer = %peer, error = %e);
            continue;
        }
        connections.insert(token, Connection { stream, buffered: Vec::new(), peer, last_active: Instant::now() });
    }
}

fn drain_wakeup(wakeup: Option<&UnixStream>) {
    let Some(mut pipe) = wakeup else { return };
    let mut sink = [0u8; 64];
    while let Ok(1..) = pipe.read(&mut sink) {}
}

fn close(poll: &Poll, mut connection: Connection) {
    let _ = poll.registry().deregister(&mut SourceFd(&connection.stream.tcp().as_raw_fd()));
    if let Stream::Tls(tls) = &mut connection.stream {
        tls.conn.send_close_notify();
        let _ = tls.flush();
    }
}

/// Serves every request the connection has ready, then hands it back to the loop.
fn serve_connection(
    connection: &mut Connection,
    config: &ServeConfig,
    codecs: &Codecs,
    runtime: &mut BlockingRuntime,
) -> After {
    let tcp = connection.stream.tcp();
    let blocking = tcp
        .set_nonblocking(false)
        .and_then(|()| tcp.set_read_timeout(Some(config.request_timeout)))
        .and_then(|()| tcp.set_write_timeout(Some(config.request_timeout)));
    if blocking.is_err() {
        return After::Close;
    }
    loop {
        let request = match http::read_request(&mut connection.stream, &mut connection.buffered, &config.limits) {
            Ok(Some(request)) => request,
            Ok(None) => return After::Close,
            Err(error) => {
                refuse_unreadable(connection, &error);
                return After::Close;
            }
        };
        connection.last_active = Instant::now();
        let keep_alive = request.keep_alive;
        let peer_certificates = connection.stream.peer_certificates();
        let response = answer(&request, peer_certificates.as_deref(), config, codecs, runtime);
        let response = HttpResponse { keep_alive, ..response };
        if http::write_response(&mut connection.stream, &response).and_then(|()| connection.stream.flush()).is_err()
            || !keep_alive
        {
            return After::Close;
        }
        connection.stream.take_buffered_plaintext(&mut connection.buffered);
        if connection.buffered.is_empty() && !bytes_waiting(connection.stream.tcp()) {
            return After::KeepOpen;
        }
    }
}

/// Whether the socket holds unread bytes, without blocking (the poller is edge-triggered, so
/// bytes that arrived while this request was served must be picked up now).
fn bytes_waiting(tcp: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    let waiting = tcp.set_nonblocking(true).is_ok() && matches!(tcp.peek(&mut probe), Ok(1..));
    let _ = tcp.set_nonblocking(false);
    waiting
}

/// A request that could not be read: answer with its status where one applies, then close
/// (what follows in the buffer cannot be trusted).
fn refuse_unreadable(connection: &mut Connection, error: &http::HttpError) {
    let Some(response) = error.response() else {
        tracing::debug!(event = "connection_closed", peer = %connection.peer, reason = %error.message());
        return;
    };
    tracing::info!(event = "http_refused", peer = %connection.peer, status = response.status, reason = %error.message());
    let _ = http::write_response(&mut connection.stream, &response).and_then(|()| connection.stream.flush());
}

/// One unary call, logged as one `event=rpc` line like the gRPC runtime's.
fn answer(
    request: &HttpRequest,
    peer_certificates: Option<&[Vec<u8>]>,
    config: &ServeConfig,
    codecs: &Codecs,
    runtime: &mut BlockingRuntime,
) -> HttpResponse {
    let started = Instant::now();
    let mut principal = "-".to_string();
    let outcome = call(request, peer_certificates, config, codecs, runtime, &mut principal);
    let code = match &outcome {
        Ok(_) => "0".to_string(),
        Err(Refusal::Kernel(error)) => mapping::grpc_code(error.code).to_string(),
        Err(Refusal::Http { .. }) => "-".to_string(),
    };
    log_rpc(&request.path, &principal, &code, started.elapsed());
    match outcome {
        Ok((codec, body)) => HttpResponse {
            status: 200,
            content_type: codec.content_type(),
            body,
            keep_alive: true,
            extra_headers: vec![],
        },
        Err(Refusal::Kernel(error)) => {
            let (status, body) = codec::error_response(&error);
            HttpResponse {
                status,
                content_type: Codec::Json.content_type(),
                body,
                keep_alive: true,
                extra_headers: vec![],
            }
        }
        Err(Refusal::Http { status, body, extra_headers }) => {
            HttpResponse { status, content_type: Codec::Json.content_type(), body, keep_alive: true, extra_headers }
        }
    }
}

enum Refusal {
    Kernel(KernelError),
    /// Refused before it was a Connect call (wrong HTTP method, unknown path, content type).
    Http {
        status: u16,
        body: Vec<u8>,
        extra_headers: Vec<(&'static str, String)>,
    },
}

impl From<KernelError> for Refusal {
    fn from(error: KernelError) -> Self {
        Self::Kernel(error)
    }
}

fn call(
    request: &HttpRequest,
    peer_certificates: Option<&[Vec<u8>]>,
    config: &ServeConfig,
    codecs: &Codecs,
    runtime: &mut BlockingRuntime,
    principal_id: &mut String,
) -> Result<(Codec, Vec<u8>), Refusal> {
    let Some((package, method)) = Method::from_path(&request.path) else {
        let (status, body) = codec::unknown_procedure(&request.path);
        return Err(Refusal::Http { status, body, extra_headers: Vec::new() });
    };
    if request.method != "POST" {
        let error = KernelError::invalid_argument(format!("{} needs POST (Connect unary)", request.path));
        let (_, body) = codec::error_response(&error);
        return Err(Refusal::Http { status: 405, body, extra_headers: vec![("Allow", "POST".to_string())] });
    }
    let codec = codec::codec_for(request.header("content-type")).map_err(|error| {
        let (_, body) = codec::error_response(&error);
        Refusal::Http { status: 415, body, extra_headers: Vec::new() }
    })?;
    if request.header("content-encoding").is_some_and(|e| !e.eq_ignore_ascii_case("identity")) {
        return Err(KernelError::new(ErrorCode::InvalidArgument, "compressed request bodies are not supported").into());
    }
    let now_unix = now().0 / 1000;
    let principal = config.authenticator.authenticate(request, &request.path, peer_certificates, now_unix)?;
    principal_id.clone_from(&principal.id);
    let proto = codecs.request_to_proto(package, method, codec, &request.body)?;
    let reply = match rpc::plan(method, &proto, request.header("x-request-id"), &config.server_info)? {
        Plan::Local(bytes) => bytes,
        Plan::Kernel { request, encode } => encode(runtime.call(now(), principal, request)?)?,
    };
    Ok((codec, codecs.response_from_proto(package, method, codec, &reply)?))
}
