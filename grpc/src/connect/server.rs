//! The blocking Connect server: one thread, group commit per loop turn.
//!
//! A readiness loop (epoll through mio) watches the listener, the open connections and a wake-up
//! pipe for signals. Sockets are non-blocking: a readable connection's bytes are taken as they
//! come and kept until a whole request is there, so a slow sender holds nobody up (it is cut off
//! after `request_timeout`). In one turn every connection with a whole request is served: each
//! request is authenticated and handed to the kernel; reads and local answers are written at
//! once; the commands of all connections then run as one batch of effects (one journal sync, one
//! ETL sync) and only then are their replies written, so every reply to a command is durable. A
//! connection waiting for a command's reply has its later (pipelined) requests served in the next
//! turn, in order, so it reads its own writes. While a batch syncs nobody else is served.
//!
//! `Connect-Timeout-Ms` is honoured up to the kernel: counted from the request's first byte, a
//! deadline that has passed when the call would be handed to the kernel is answered with
//! `deadline_exceeded` (504) and the call is not executed. Once handed over, a call runs to the end
//! (a command is journaled and cannot be taken back) and its real outcome is the answer, however
//! late: a client that gave up learns it by retrying, not by a deadline error hiding a commit.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use evidenceos_core::{ErrorCode, KernelError, Principal, Query, Request, RequestId, Response, Role};
use evidenceos_io_sync::{BlockingRuntime, now};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::codec::{self, Codec, Codecs};
use super::http::{self, HttpRequest, HttpResponse, Limits};
use super::watch::{self, Watch};
use crate::access_log::log_rpc;
use crate::auth::Authenticator;
use crate::metrics::Metrics;
use crate::rpc::{self, Availability, Method, Plan};
use crate::{mapping, v2};

const LISTENER: Token = Token(0);
const WAKEUP: Token = Token(1);
const METRICS_LISTENER: Token = Token(2);
const FIRST_CONNECTION: usize = 3;
/// The longest the loop sleeps without looking at the stop and reload flags.
const MAX_POLL_WAIT: Duration = Duration::from_millis(500);
/// Notifications the runtime keeps between two deliveries (one loop step); run the runtime with
/// `Observe::Notifications { cap: NOTIFICATIONS_PER_STEP }`. Past it every subscriber is ended.
pub const NOTIFICATIONS_PER_STEP: usize = 4096;
/// At shutdown, how long each subscriber may take to receive its end of stream.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(1);

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
    /// With `--metrics-listen`: every call is counted, and scrapes are answered from it.
    pub metrics: Option<Arc<Metrics>>,
    /// A request must arrive whole within this once its first byte did (a TLS connection's
    /// handshake and first request, once accepted); also bounds writing an answer.
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

/// What a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    Api,
    /// `--metrics-listen`: plain HTTP, `GET /metrics`, one answer per connection.
    Metrics,
}

struct Connection {
    listener: Listener,
    stream: Stream,
    /// Bytes of the next request(s) read so far.
    buffered: Vec<u8>,
    peer: SocketAddr,
    last_active: Instant,
    /// When the first byte of the request being received arrived (for TLS, the connection's
    /// first request: when it was accepted).
    request_started: Option<Instant>,
    /// An open WatchRevocations stream: the connection serves nothing else until it closes.
    watch: Option<Watch>,
    /// A call handed to the kernel whose reply waits for this turn's batch; later requests on the
    /// connection wait behind it.
    pending: Option<Pending>,
}

/// A call handed to the kernel, and what writing its reply needs.
struct Pending {
    call: KernelCall,
    /// For the `event=rpc` line and the metrics, once answered.
    path: String,
    principal: String,
    started: Instant,
    keep_alive: bool,
}

/// A submitted kernel request and how to turn its answer into the response body.
struct KernelCall {
    id: RequestId,
    encode: rpc::EncodeReply,
    package: &'static str,
    method: Method,
    codec: Codec,
}

impl Connection {
    /// Why the loop should close this connection now, if it should.
    fn expired(&self, config: &ServeConfig) -> Option<&'static str> {
        // An open stream is never idle; once ended, `request_started` bounds its last writes.
        if self.watch.is_some() && self.request_started.is_none() {
            return None;
        }
        match self.request_started {
            Some(started) if started.elapsed() >= config.request_timeout => Some("request_timeout"),
            None if self.last_active.elapsed() >= config.idle_timeout => Some("idle_timeout"),
            _ => None,
        }
    }

    /// How long until [`Self::expired`] could say yes.
    fn time_left(&self, config: &ServeConfig) -> Duration {
        if self.watch.is_some() && self.request_started.is_none() {
            return MAX_POLL_WAIT;
        }
        match self.request_started {
            Some(started) => config.request_timeout.saturating_sub(started.elapsed()),
            None => config.idle_timeout.saturating_sub(self.last_active.elapsed()),
        }
    }
}

/// What became of a connection after it was served.
enum After {
    KeepOpen,
    Close,
}

/// Serves until the stop flag is raised or storage fails. Reloads (SIGHUP) run `on_reload`
/// between requests. `metrics_listener` (plain HTTP) answers scrapes of `config.metrics`.
pub fn serve(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    config: &ServeConfig,
    runtime: &mut BlockingRuntime,
    control: Control,
    mut on_reload: impl FnMut(&mut BlockingRuntime),
) -> std::io::Result<ServeEnd> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(256);
    register(&poll, &listener, metrics_listener.as_ref(), control.wakeup.as_ref())?;
    let codecs = Codecs::shared();
    let mut connections: HashMap<usize, Connection> = HashMap::new();
    let mut next_token = FIRST_CONNECTION;
    // Connections to serve in the next turn: readable or writable ones, and those answered last
    // turn (more pipelined requests may wait in their buffers, with no readiness edge to come).
    let mut ready: Vec<usize> = Vec::new();
    loop {
        if control.stop.load(Ordering::SeqCst) {
            for (_, mut connection) in connections.drain() {
                farewell(&mut connection);
                close(&poll, connection);
            }
            return Ok(ServeEnd::StopRequested);
        }
        if control.reload.swap(false, Ordering::SeqCst) {
            on_reload(runtime);
        }
        runtime.tick(now());
        deliver(runtime, codecs, &poll, &mut connections);
        if runtime.is_failed() {
            return Ok(ServeEnd::StorageFailed);
        }
        let wait = if ready.is_empty() { poll_wait(runtime, &connections, config) } else { Duration::ZERO };
        match poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in &events {
            match event.token() {
                LISTENER => {
                    accept_all(&listener, Listener::Api, &poll, config, &mut connections, &mut next_token);
                }
                METRICS_LISTENER => {
                    if let Some(metrics) = &metrics_listener {
                        accept_all(metrics, Listener::Metrics, &poll, config, &mut connections, &mut next_token);
                    }
                }
                WAKEUP => drain_wakeup(control.wakeup.as_ref()),
                Token(token) => ready.push(token),
            }
        }
        serve_turn(&mut ready, &mut connections, &poll, config, codecs, runtime);
        close_expired(&poll, &mut connections, config);
    }
}

/// Watches the listeners and the wake-up pipe, all made non-blocking.
fn register(
    poll: &Poll,
    listener: &TcpListener,
    metrics_listener: Option<&TcpListener>,
    wakeup: Option<&UnixStream>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    poll.registry().register(&mut SourceFd(&listener.as_raw_fd()), LISTENER, Interest::READABLE)?;
    if let Some(metrics) = metrics_listener {
        metrics.set_nonblocking(true)?;
        poll.registry().register(&mut SourceFd(&metrics.as_raw_fd()), METRICS_LISTENER, Interest::READABLE)?;
    }
    if let Some(wakeup) = wakeup {
        wakeup.set_nonblocking(true)?;
        poll.registry().register(&mut SourceFd(&wakeup.as_raw_fd()), WAKEUP, Interest::READABLE)?;
    }
    Ok(())
}

/// Closes the connections whose request or idle time ran out.
fn close_expired(poll: &Poll, connections: &mut HashMap<usize, Connection>, config: &ServeConfig) {
    let expired: Vec<(usize, &'static str)> =
        connections.iter().filter_map(|(token, c)| c.expired(config).map(|why| (*token, why))).collect();
    for (token, why) in expired {
        if let Some(connection) = connections.remove(&token) {
            if why == "request_timeout" {
                tracing::info!(event = "request_timeout", peer = %connection.peer, received_bytes = connection.buffered.len(), "a request did not arrive whole in time; connection closed");
            } else {
                tracing::debug!(event = "connection_idle_closed", peer = %connection.peer);
            }
            close(poll, connection);
        }
    }
}

/// One turn: every ready connection is served until it would block or waits for the kernel; the
/// commands handed over meanwhile run as one batch; then every waiting call is answered.
fn serve_turn(
    ready: &mut Vec<usize>,
    connections: &mut HashMap<usize, Connection>,
    poll: &Poll,
    config: &ServeConfig,
    codecs: &Codecs,
    runtime: &mut BlockingRuntime,
) {
    let mut turn = std::mem::take(ready);
    turn.sort_unstable();
    turn.dedup();
    let mut waiting = Vec::new();
    for token in turn {
        let Some(mut connection) = connections.remove(&token) else { continue };
        let served = serve_connection(&mut connection, config, codecs, runtime);
        if connection.pending.is_some() {
            waiting.push(token);
        }
        match watch_interest(poll, Token(token), &connection, served) {
            After::KeepOpen => drop(connections.insert(token, connection)),
            After::Close => close(poll, connection),
        }
    }
    // Crash boundary: the replies below are written only once `run_effects` returned, so a
    // client hears of a command only after its journal record (and its leaves) are synced. A
    // crash before that loses nothing acknowledged; recovery keeps or drops the batch whole.
    runtime.run_effects(now());
    for token in waiting {
        let Some(mut connection) = connections.remove(&token) else { continue };
        match write_reply(&mut connection, config, codecs, runtime) {
            After::KeepOpen => {
                ready.push(token);
                connections.insert(token, connection);
            }
            After::Close => close(poll, connection),
        }
    }
    // A revocation this turn made reaches subscribers before the next turn's calls run.
    deliver(runtime, codecs, poll, connections);
}

/// Until the earliest of: the kernel's next deadline, the next connection to close, and
/// [`MAX_POLL_WAIT`].
fn poll_wait(runtime: &BlockingRuntime, connections: &HashMap<usize, Connection>, config: &ServeConfig) -> Duration {
    let mut wait = MAX_POLL_WAIT;
    if let Some(at) = runtime.next_wake() {
        wait = wait.min(Duration::from_millis(at.0.saturating_sub(now().0)));
    }
    for connection in connections.values() {
        wait = wait.min(connection.time_left(config));
    }
    wait
}

fn accept_all(
    listener: &TcpListener,
    kind: Listener,
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
        let tls = config.tls.as_ref().filter(|_| kind == Listener::Api);
        let stream = match tls {
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
        let tcp = stream.tcp();
        let prepared = tcp
            .set_nodelay(true)
            .and_then(|()| tcp.set_nonblocking(true))
            .and_then(|()| poll.registry().register(&mut SourceFd(&fd), Token(token), Interest::READABLE));
        if let Err(e) = prepared {
            tracing::warn!(event = "accept_failed", peer = %peer, error = %e);
            continue;
        }
        // A TLS handshake counts as part of the first request: it too must finish in time.
        let request_started = matches!(stream, Stream::Tls(_)).then(Instant::now);
        let connection = Connection {
            listener: kind,
            stream,
            buffered: Vec::new(),
            peer,
            last_active: Instant::now(),
            request_started,
            watch: None,
            pending: None,
        };
        connections.insert(token, connection);
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

/// Takes every byte the connection has ready (the poller is edge-triggered, so until the socket
/// would block) and serves each whole request among them until one waits for the kernel's
/// batch; a partial one waits in `buffered`.
fn serve_connection(
    connection: &mut Connection,
    config: &ServeConfig,
    codecs: &Codecs,
    runtime: &mut BlockingRuntime,
) -> After {
    if connection.watch.is_some() {
        return serve_watch(connection);
    }
    while connection.pending.is_none() {
        // The request's first byte reached us at the latest now (earlier if it came in pieces).
        let first_byte = connection.request_started.unwrap_or_else(Instant::now);
        let request = match http::read_request(&mut connection.stream, &mut connection.buffered, &config.limits) {
            Ok(Some(request)) => request,
            Ok(None) => return After::Close,
            Err(http::HttpError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if !connection.buffered.is_empty() {
                    connection.request_started.get_or_insert_with(Instant::now);
                }
                return After::KeepOpen;
            }
            Err(error) => {
                refuse_unreadable(connection, &error, config);
                return After::Close;
            }
        };
        connection.last_active = Instant::now();
        connection.request_started = (!connection.buffered.is_empty()).then(Instant::now);
        if connection.listener == Listener::Metrics {
            let response = scrape(&request, config.metrics.as_deref(), runtime);
            let _ = write_blocking(connection, &response, config);
            return After::Close;
        }
        if let Some(package) = watch::package_of(&request.path) {
            return start_watch(connection, &request, package, config);
        }
        let keep_alive = request.keep_alive;
        let peer_certificates = connection.stream.peer_certificates();
        match answer(&request, first_byte, peer_certificates.as_deref(), config, codecs, runtime) {
            Answered::Now(response) => {
                let response = HttpResponse { keep_alive, ..response };
                if write_blocking(connection, &response, config).is_err() || !keep_alive {
                    return After::Close;
                }
            }
            Answered::Later(pending) => connection.pending = Some(pending),
        }
    }
    After::KeepOpen
}

/// Writes the reply to the connection's call once the turn's batch ran.
fn write_reply(
    connection: &mut Connection,
    config: &ServeConfig,
    codecs: &Codecs,
    runtime: &mut BlockingRuntime,
) -> After {
    let Some(pending) = connection.pending.take() else { return After::KeepOpen };
    // The batch answered every submitted call, unless storage failed before it could.
    let reply = runtime.take_reply(pending.call.id).unwrap_or_else(|| Err(KernelError::storage_failed()));
    let outcome = finish(pending.call, reply, codecs);
    let response = respond(&pending.path, &pending.principal, pending.started, outcome, config);
    let response = HttpResponse { keep_alive: pending.keep_alive, ..response };
    if write_blocking(connection, &response, config).is_err() || !pending.keep_alive {
        return After::Close;
    }
    After::KeepOpen
}

/// After a connection was served: a stream connection is watched for writability too (its
/// pending bytes go out as the socket drains); a failed registration closes it.
fn watch_interest(poll: &Poll, token: Token, connection: &Connection, served: After) -> After {
    if !matches!(served, After::KeepOpen) || connection.watch.is_none() {
        return served;
    }
    let fd = connection.stream.tcp().as_raw_fd();
    match poll.registry().reregister(&mut SourceFd(&fd), token, Interest::READABLE | Interest::WRITABLE) {
        Ok(()) => After::KeepOpen,
        Err(_) => After::Close,
    }
}

/// `POST /<package>.EvidenceOS/WatchRevocations`: refused like a unary call when it is not a
/// Connect stream request; otherwise a 200 stream that ends at once if the caller is not
/// authenticated (any authenticated caller may watch, SPEC §2.4).
fn start_watch(connection: &mut Connection, request: &HttpRequest, package: &str, config: &ServeConfig) -> After {
    let started = Instant::now();
    let refused = |status: u16, error: &KernelError| {
        let (_, body) = codec::error_response(error);
        HttpResponse { keep_alive: false, ..HttpResponse::new(status, Codec::Json.content_type(), body) }
    };
    let codec = match (request.method.as_str(), watch::stream_codec_for(request.header("content-type"))) {
        ("POST", Ok(codec)) => codec,
        ("POST", Err(error)) => return refuse(connection, config, &refused(415, &error)),
        _ => {
            let error = KernelError::invalid_argument(format!("{} needs POST", request.path));
            let response = refused(405, &error);
            let response = HttpResponse { extra_headers: vec![("Allow", "POST".to_string())], ..response };
            return refuse(connection, config, &response);
        }
    };
    let peer_certificates = connection.stream.peer_certificates();
    let now_unix = now().0 / 1000;
    let principal = watch::check_request(&request.body).and_then(|()| {
        config.authenticator.authenticate(request, &request.path, peer_certificates.as_deref(), now_unix)
    });
    let mut stream = Watch::new(codec);
    let (principal, code) = match principal {
        Ok(principal) => (principal.id, "0".to_string()),
        Err(error) => {
            stream.end(&error);
            connection.request_started = Some(Instant::now());
            ("-".to_string(), mapping::grpc_code(error.code).to_string())
        }
    };
    log_rpc(&request.path, &principal, &code, started.elapsed());
    if let Some(metrics) = &config.metrics {
        metrics.record_rpc(&request.path, &code, started.elapsed());
    }
    tracing::debug!(event = "watch_opened", peer = %connection.peer, package);
    connection.watch = Some(stream);
    flush_watch(connection)
}

fn refuse(connection: &mut Connection, config: &ServeConfig, response: &HttpResponse) -> After {
    let _ = write_blocking(connection, response, config);
    After::Close
}

/// A stream's socket is readable or writable: what the subscriber sends is discarded (the
/// request is whole), its end closes the stream; pending bytes are written.
fn serve_watch(connection: &mut Connection) -> After {
    let mut sink = [0u8; 1024];
    loop {
        match connection.stream.read(&mut sink) {
            Ok(0) => return After::Close,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return After::Close,
        }
    }
    flush_watch(connection)
}

/// Writes as much of the stream's pending bytes as the socket takes without blocking.
fn flush_watch(connection: &mut Connection) -> After {
    let Some(stream) = connection.watch.as_mut() else { return After::Close };
    while !stream.pending().is_empty() {
        match connection.stream.write(stream.pending()) {
            Ok(0) => return After::Close,
            Ok(written) => stream.written(written),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return After::Close,
        }
    }
    // TLS: push out the records the writes above produced; a full socket retries on writable.
    match connection.stream.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => return After::Close,
        _ => {}
    }
    if stream.finished() { After::Close } else { After::KeepOpen }
}

/// Hands the runtime's new notifications to every open stream; a notification the runtime could
/// not keep ends every stream with `resource_exhausted` (nobody may miss one unknowingly).
fn deliver(runtime: &mut BlockingRuntime, codecs: &Codecs, poll: &Poll, connections: &mut HashMap<usize, Connection>) {
    let taken = runtime.take_notifications();
    if taken.kept.is_empty() && taken.missed == 0 {
        return;
    }
    let mut closed = Vec::new();
    for (token, connection) in connections.iter_mut() {
        let Some(stream) = connection.watch.as_mut() else { continue };
        for evidenceos_core::Notification::Revocation(feed) in &taken.kept {
            stream.push(codecs, feed);
        }
        if taken.missed > 0 {
            let message = format!("{} revocations came faster than they could be sent; reconnect", taken.missed);
            stream.end(&KernelError::new(ErrorCode::ResourceExhausted, message));
        }
        if stream.ended() && connection.request_started.is_none() {
            connection.request_started = Some(Instant::now());
        }
        if matches!(flush_watch(connection), After::Close) {
            closed.push(*token);
        }
    }
    for token in closed {
        if let Some(connection) = connections.remove(&token) {
            close(poll, connection);
        }
    }
}

/// At shutdown a stream's subscriber is told `unavailable`, waiting at most [`FAREWELL_TIMEOUT`].
fn farewell(connection: &mut Connection) {
    let Some(stream) = connection.watch.as_mut() else { return };
    stream.end(&KernelError::unavailable("the daemon is shutting down"));
    let tcp = connection.stream.tcp();
    if tcp.set_nonblocking(false).and_then(|()| tcp.set_write_timeout(Some(FAREWELL_TIMEOUT))).is_err() {
        return;
    }
    let _ = connection.stream.write_all(stream.pending()).and_then(|()| connection.stream.flush());
}

/// Writes a response with the socket blocking for at most `request_timeout`: a client that does
/// not read its answer is cut off rather than buffered for.
fn write_blocking(connection: &mut Connection, response: &HttpResponse, config: &ServeConfig) -> std::io::Result<()> {
    let tcp = connection.stream.tcp();
    tcp.set_nonblocking(false)?;
    tcp.set_write_timeout(Some(config.request_timeout))?;
    let written = http::write_response(&mut connection.stream, response).and_then(|()| connection.stream.flush());
    connection.stream.tcp().set_nonblocking(true)?;
    written
}

/// A request that could not be read: answer with its status where one applies, then close
/// (what follows in the buffer cannot be trusted).
fn refuse_unreadable(connection: &mut Connection, error: &http::HttpError, config: &ServeConfig) {
    let Some(response) = error.response() else {
        tracing::debug!(event = "connection_closed", peer = %connection.peer, reason = %error.message());
        return;
    };
    tracing::info!(event = "http_refused", peer = %connection.peer, status = response.status, reason = %error.message());
    let _ = write_blocking(connection, &response, config);
}

/// `GET /metrics`: the exposition of this runtime's counters and the kernel's ledger totals.
fn scrape(request: &HttpRequest, metrics: Option<&Metrics>, runtime: &mut BlockingRuntime) -> HttpResponse {
    let (Some(metrics), true) = (metrics, request.method == "GET" && request.path == "/metrics") else {
        let body = b"only GET /metrics is served here\n".to_vec();
        return HttpResponse { keep_alive: false, ..HttpResponse::new(404, "text/plain; charset=utf-8", body) };
    };
    let monitor = Principal::new("system:metrics", Role::Auditor);
    // A query is answered at submission: the scrape never runs (or splits) the turn's batch.
    let asked = runtime.submit(now(), monitor, Request::Query(Query::LedgerTotals));
    let ledger = match runtime.take_reply(asked) {
        Some(Ok(Response::LedgerTotals(totals))) => Some(totals),
        _ => None,
    };
    let body = metrics.render(runtime.stats(), ledger.as_ref()).into_bytes();
    HttpResponse { keep_alive: false, ..HttpResponse::new(200, crate::metrics::CONTENT_TYPE, body) }
}

/// A call's answer: ready now, or after the turn's batch.
enum Answered {
    Now(HttpResponse),
    Later(Pending),
}

/// One unary call, logged as one `event=rpc` line like the gRPC runtime's once answered.
fn answer(
    request: &HttpRequest,
    first_byte: Instant,
    peer_certificates: Option<&[Vec<u8>]>,
    config: &ServeConfig,
    codecs: &Codecs,
    runtime: &mut BlockingRuntime,
) -> Answered {
    let started = Instant::now();
    let mut principal = "-".to_string();
    let call = Call { request, first_byte, peer_certificates };
    let outcome = match execute(&call, config, codecs, runtime, &mut principal) {
        Ok(Executed::Submitted(call)) => {
            let path = request.path.clone();
            return Answered::Later(Pending { call, path, principal, started, keep_alive: request.keep_alive });
        }
        Ok(Executed::Replied(codec, body)) => Ok((codec, body)),
        Err(refusal) => Err(refusal),
    };
    Answered::Now(respond(&request.path, &principal, started, outcome, config))
}

/// Logs and counts an answered call and turns its outcome into the HTTP response.
fn respond(
    path: &str,
    principal: &str,
    started: Instant,
    outcome: Result<(Codec, Vec<u8>), Refusal>,
    config: &ServeConfig,
) -> HttpResponse {
    let code = match &outcome {
        Ok(_) => "0".to_string(),
        Err(Refusal::Kernel(error)) => mapping::grpc_code(error.code).to_string(),
        // gRPC's DEADLINE_EXCEEDED.
        Err(Refusal::DeadlineExceeded { .. }) => "4".to_string(),
        Err(Refusal::Http { grpc_code, .. }) => grpc_code.to_string(),
    };
    let elapsed = started.elapsed();
    log_rpc(path, principal, &code, elapsed);
    if let Some(metrics) = &config.metrics {
        metrics.record_rpc(path, &code, elapsed);
    }
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
        Err(Refusal::DeadlineExceeded { timeout_ms }) => {
            let (status, body) = codec::deadline_exceeded(timeout_ms);
            HttpResponse::new(status, Codec::Json.content_type(), body)
        }
        Err(Refusal::Http { status, body, extra_headers, .. }) => {
            HttpResponse { status, content_type: Codec::Json.content_type(), body, keep_alive: true, extra_headers }
        }
    }
}

/// One request to answer, with what the connection knows of it.
struct Call<'a> {
    request: &'a HttpRequest,
    /// When its first byte reached the server: where `Connect-Timeout-Ms` counts from.
    first_byte: Instant,
    peer_certificates: Option<&'a [Vec<u8>]>,
}

/// The call's `Connect-Timeout-Ms`, if it sent one: in the Connect protocol, an integer of at
/// most 10 digits (0 is taken as an already passed deadline); anything else is `invalid_argument`.
fn timeout_ms(request: &HttpRequest) -> Result<Option<u64>, KernelError> {
    let Some(value) = request.header("connect-timeout-ms") else { return Ok(None) };
    if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
        let message = format!("Connect-Timeout-Ms {value:?} is not an integer of at most 10 digits");
        return Err(KernelError::invalid_argument(message));
    }
    Ok(Some(value.parse().expect("at most 10 decimal digits fit a u64")))
}

enum Refusal {
    Kernel(KernelError),
    /// `Connect-Timeout-Ms` ran out before the call reached the kernel.
    DeadlineExceeded {
        timeout_ms: u64,
    },
    /// Refused before it was a Connect call (wrong HTTP method, unknown path, content type).
    Http {
        status: u16,
        /// The gRPC status the same mistake gets over gRPC, so both runtimes count it alike.
        grpc_code: i32,
        body: Vec<u8>,
        extra_headers: Vec<(&'static str, String)>,
    },
}

/// gRPC's UNIMPLEMENTED: what tonic answers for a path it does not serve.
const GRPC_UNIMPLEMENTED: i32 = 12;

/// What [`execute`] did with a call.
enum Executed {
    /// Answered without waiting for the batch: a local answer, a read, or a refusal by the kernel.
    Replied(Codec, Vec<u8>),
    /// Handed to the kernel; the reply comes with the turn's batch.
    Submitted(KernelCall),
}

impl From<KernelError> for Refusal {
    fn from(error: KernelError) -> Self {
        Self::Kernel(error)
    }
}

fn execute(
    call: &Call<'_>,
    config: &ServeConfig,
    codecs: &Codecs,
    runtime: &mut BlockingRuntime,
    principal_id: &mut String,
) -> Result<Executed, Refusal> {
    let request = call.request;
    let Some((package, method)) = Method::from_path(&request.path) else {
        let (status, body) = codec::unknown_procedure(&request.path);
        return Err(Refusal::Http { status, grpc_code: GRPC_UNIMPLEMENTED, body, extra_headers: Vec::new() });
    };
    if request.method != "POST" {
        let error = KernelError::invalid_argument(format!("{} needs POST (Connect unary)", request.path));
        let (_, body) = codec::error_response(&error);
        let grpc_code = mapping::grpc_code(error.code);
        return Err(Refusal::Http { status: 405, grpc_code, body, extra_headers: vec![("Allow", "POST".to_string())] });
    }
    let codec = codec::codec_for(request.header("content-type")).map_err(|error| {
        let (_, body) = codec::error_response(&error);
        Refusal::Http { status: 415, grpc_code: mapping::grpc_code(error.code), body, extra_headers: Vec::new() }
    })?;
    if request.header("content-encoding").is_some_and(|e| !e.eq_ignore_ascii_case("identity")) {
        return Err(KernelError::new(ErrorCode::InvalidArgument, "compressed request bodies are not supported").into());
    }
    let timeout_ms = timeout_ms(request)?;
    let now_unix = now().0 / 1000;
    let principal = config.authenticator.authenticate(request, &request.path, call.peer_certificates, now_unix)?;
    principal_id.clone_from(&principal.id);
    let proto = codecs.request_to_proto(package, method, codec, &request.body)?;
    // The last point at which the call can still be dropped: past it, it runs to the end.
    if let Some(timeout_ms) = timeout_ms
        && call.first_byte.elapsed() >= Duration::from_millis(timeout_ms)
    {
        return Err(Refusal::DeadlineExceeded { timeout_ms });
    }
    // A failed kernel answers nothing else; pipelined requests after the failure see it too.
    let availability = if runtime.is_failed() { Availability::NotServing } else { Availability::Serving };
    let (request, encode) =
        match rpc::plan(method, &proto, request.header("x-request-id"), &config.server_info, availability)? {
            Plan::Local(bytes) => {
                return Ok(Executed::Replied(codec, codecs.response_from_proto(package, method, codec, &bytes)?));
            }
            Plan::Kernel { request, encode } => (request, encode),
        };
    // Handed over: from here the call runs to the end, whatever its deadline.
    let id = runtime.submit(now(), principal, request);
    let call = KernelCall { id, encode, package, method, codec };
    match runtime.take_reply(id) {
        // A read is answered at submission and does not wait for the batch's sync.
        Some(reply) => finish(call, reply, codecs).map(|(codec, body)| Executed::Replied(codec, body)),
        None => Ok(Executed::Submitted(call)),
    }
}

/// The response body of a kernel call's reply.
fn finish(
    call: KernelCall,
    reply: Result<Response, KernelError>,
    codecs: &Codecs,
) -> Result<(Codec, Vec<u8>), Refusal> {
    let bytes = (call.encode)(reply?)?;
    Ok((call.codec, codecs.response_from_proto(call.package, call.method, call.codec, &bytes)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_timeout(value: Option<&str>) -> HttpRequest {
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        headers.extend(value.map(|v| ("connect-timeout-ms".to_string(), v.to_string())));
        HttpRequest {
            method: "POST".to_string(),
            path: "/evidenceos.v2.EvidenceOS/Health".to_string(),
            query: None,
            headers,
            body: Vec::new(),
            keep_alive: true,
        }
    }

    #[test]
    fn connect_timeout_ms_is_up_to_ten_digits() {
        assert_eq!(timeout_ms(&with_timeout(None)).unwrap(), None);
        assert_eq!(timeout_ms(&with_timeout(Some("0"))).unwrap(), Some(0));
        assert_eq!(timeout_ms(&with_timeout(Some("250"))).unwrap(), Some(250));
        assert_eq!(timeout_ms(&with_timeout(Some("9999999999"))).unwrap(), Some(9_999_999_999));
        for bad in ["", "12345678901", "-1", "+5", "1.5", "1s", "0x10"] {
            let error = timeout_ms(&with_timeout(Some(bad))).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidArgument, "{bad:?}");
        }
    }
}
