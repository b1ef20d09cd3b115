//! The gRPC runtime's connection limits, with the sync runtime's meaning as far as HTTP/2 allows:
//! at most `max_connections` open (one more is accepted and closed at once), a connection with no
//! call in flight and no bytes either way for `idle_timeout` is closed, and a request body must
//! arrive whole within `request_timeout` of its headers (the call, not the connection, fails:
//! other calls share the connection).
//!
//! Two halves: [`LimitedIncoming`] wraps the listener (counts connections, times idleness in the
//! connection's own read path, so no task per connection), and [`CallLimitsLayer`] sees each
//! call (counts it in flight on its connection, bounds its request body). They meet in a
//! [`Registry`] keyed by peer address, because tonic hands services only `TcpConnectInfo`.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

/// The three limits (the daemon's `--max-connections`, `--idle-timeout-secs`,
/// `--request-timeout-ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
}

/// Calls in flight per open connection, by peer address (unique among open connections of one
/// listener).
#[derive(Debug, Clone, Default)]
struct Registry(Arc<Mutex<HashMap<SocketAddr, Arc<AtomicUsize>>>>);

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<AtomicUsize>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open(&self, peer: SocketAddr) -> Arc<AtomicUsize> {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let previous = self.lock().insert(peer, in_flight.clone());
        debug_assert!(previous.is_none(), "two open connections from one peer address");
        in_flight
    }

    /// Forgets `peer` only if the entry is still this connection's.
    fn close(&self, peer: SocketAddr, in_flight: &Arc<AtomicUsize>) {
        let mut open = self.lock();
        if open.get(&peer).is_some_and(|entry| Arc::ptr_eq(entry, in_flight)) {
            open.remove(&peer);
        }
    }

    fn call_started(&self, peer: SocketAddr) -> Option<InFlight> {
        let counter = self.lock().get(&peer).cloned()?;
        counter.fetch_add(1, Ordering::AcqRel);
        Some(InFlight(counter))
    }
}

/// One call in flight on its connection, until its response body is done or dropped.
#[derive(Debug)]
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let before = self.0.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "in-flight count underflow");
    }
}

/// How long accepting pauses after it failed (out of file descriptors and the like), so the
/// failure is not retried, and logged, in a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Both halves, sharing one registry.
pub fn limit(listener: TcpListener, limits: ConnectionLimits) -> (LimitedIncoming, CallLimitsLayer) {
    assert!(limits.max_connections > 0, "max_connections must be at least 1");
    let registry = Registry::default();
    let calls = CallLimitsLayer { registry: registry.clone(), request_timeout: limits.request_timeout };
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    (LimitedIncoming { listener, permits, limits, registry, backoff: None }, calls)
}

/// The listener as tonic's incoming stream: connections over the limit are closed as soon as
/// they are accepted, as on the sync runtime.
#[derive(Debug)]
pub struct LimitedIncoming {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    limits: ConnectionLimits,
    registry: Registry,
    /// Set while accepting pauses after a failure.
    backoff: Option<Pin<Box<Sleep>>>,
}

impl tokio_stream::Stream for LimitedIncoming {
    /// Never an error: failures to accept are logged and retried after [`ACCEPT_BACKOFF`].
    type Item = Result<LimitedConnection, std::convert::Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(backoff) = this.backoff.as_mut() {
                ready!(backoff.as_mut().poll(cx));
                this.backoff = None;
            }
            let (tcp, peer) = match ready!(this.listener.poll_accept(cx)) {
                Ok(accepted) => accepted,
                Err(e) => {
                    // The pending connection waits in the backlog until accepting resumes.
                    tracing::warn!(event = "accept_failed", error = %e, "could not accept a connection");
                    this.backoff = Some(Box::pin(tokio::time::sleep(ACCEPT_BACKOFF)));
                    continue;
                }
            };
            let Ok(permit) = this.permits.clone().try_acquire_owned() else {
                tracing::warn!(event = "connection_refused", peer = %peer, max_connections = this.limits.max_connections, "too many open connections");
                drop(tcp);
                continue;
            };
            let in_flight = this.registry.open(peer);
            let idle_timeout = this.limits.idle_timeout;
            return Poll::Ready(Some(Ok(LimitedConnection {
                tcp,
                peer,
                in_flight,
                registry: this.registry.clone(),
                idle_timeout,
                last_active: Instant::now(),
                timer: Box::pin(tokio::time::sleep(idle_timeout)),
                idle_closed: false,
                _permit: permit,
            })));
        }
    }
}

/// An accepted connection holding its slot until dropped. Idleness is checked where hyper (or
/// TLS under it) always waits: in `poll_read`, which then reports end of stream.
#[derive(Debug)]
pub struct LimitedConnection {
    tcp: TcpStream,
    peer: SocketAddr,
    in_flight: Arc<AtomicUsize>,
    registry: Registry,
    idle_timeout: Duration,
    last_active: Instant,
    /// Fires no later than the moment the connection could have been idle for `idle_timeout`.
    timer: Pin<Box<Sleep>>,
    idle_closed: bool,
    _permit: OwnedSemaphorePermit,
}

impl LimitedConnection {
    /// Whether the connection has been idle (no call in flight, no bytes) for the timeout; else
    /// the timer is re-armed for the earliest moment it could be.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            let now = Instant::now();
            let next = if self.in_flight.load(Ordering::Acquire) > 0 {
                now + self.idle_timeout
            } else {
                self.last_active + self.idle_timeout
            };
            if next <= now {
                return true;
            }
            self.timer.as_mut().reset(next);
        }
    }
}

impl Drop for LimitedConnection {
    fn drop(&mut self) {
        self.registry.close(self.peer, &self.in_flight);
    }
}

impl Connected for LimitedConnection {
    type ConnectInfo = TcpConnectInfo;

    /// The plain TCP info, so `remote_addr` and (under TLS) `peer_certs` work as before.
    fn connect_info(&self) -> TcpConnectInfo {
        self.tcp.connect_info()
    }
}

impl AsyncRead for LimitedConnection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.idle_closed || this.idle_expired(cx) {
            if !this.idle_closed {
                this.idle_closed = true;
                tracing::debug!(event = "connection_idle_closed", peer = %this.peer);
            }
            return Poll::Ready(Ok(())); // end of stream: hyper ends the connection and drops it
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.last_active = Instant::now();
        }
        read
    }
}

impl LimitedConnection {
    fn wrote(&mut self, written: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.last_active = Instant::now();
        }
        written
    }
}

impl AsyncWrite for LimitedConnection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.tcp).poll_write(cx, buf);
        this.wrote(written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        this.wrote(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// Counts each call in flight on its connection and bounds the time its request body takes.
#[derive(Debug, Clone)]
pub struct CallLimitsLayer {
    registry: Registry,
    request_timeout: Duration,
}

impl<S> tower::Layer<S> for CallLimitsLayer {
    type Service = CallLimits<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallLimits { inner, registry: self.registry.clone(), request_timeout: self.request_timeout }
    }
}

#[derive(Debug, Clone)]
pub struct CallLimits<S> {
    inner: S,
    registry: Registry,
    request_timeout: Duration,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// The peer of a call, plain or over TLS.
fn peer_of<B>(request: &http::Request<B>) -> Option<SocketAddr> {
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| extensions.get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|tls| tls.get_ref().remote_addr()))
}

impl<S> tower::Service<http::Request<Body>> for CallLimits<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let peer = peer_of(&request);
        let in_flight = peer.and_then(|peer| self.registry.call_started(peer));
        let deadline = Instant::now() + self.request_timeout;
        let request =
            request.map(|body| Body::new(DeadlineBody { inner: body, deadline, timer: None, peer, finished: false }));
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| Body::new(CountedBody { inner: body, _in_flight: in_flight })))
        })
    }
}

/// A request body that fails with DEADLINE_EXCEEDED if it has not ended by `deadline`.
struct DeadlineBody {
    inner: Body,
    deadline: Instant,
    /// Made the first time the body has to be waited for.
    timer: Option<Pin<Box<Sleep>>>,
    peer: Option<SocketAddr>,
    finished: bool,
}

impl http_body::Body for DeadlineBody {
    type Data = tonic::codegen::Bytes;
    type Error = tonic::Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.finished = frame.is_none();
            return Poll::Ready(frame);
        }
        let deadline = this.deadline;
        let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        ready!(timer.as_mut().poll(cx));
        this.finished = true;
        let peer = this.peer.map(|peer| peer.to_string()).unwrap_or_default();
        tracing::info!(event = "request_timeout", peer = %peer, "a request did not arrive whole in time; call failed");
        Poll::Ready(Some(Err(tonic::Status::deadline_exceeded(
            "request not received whole within --request-timeout-ms",
        ))))
    }

    fn is_end_stream(&self) -> bool {
        self.finished || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its call counted in flight (a stream such as WatchRevocations may
/// be silent for long; its connection is not idle).
struct CountedBody {
    inner: Body,
    _in_flight: Option<InFlight>,
}

impl http_body::Body for CountedBody {
    type Data = tonic::codegen::Bytes;
    type Error = tonic::Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_on_their_connection_until_done() {
        let registry = Registry::default();
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert!(registry.call_started(peer).is_none(), "no connection from that peer");
        let in_flight = registry.open(peer);
        let (first, second) = (registry.call_started(peer), registry.call_started(peer));
        assert_eq!(in_flight.load(Ordering::Acquire), 2);
        drop(first);
        assert_eq!(in_flight.load(Ordering::Acquire), 1);
        drop(second);
        assert_eq!(in_flight.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_late_close_does_not_forget_a_newer_connection_from_the_same_address() {
        let registry = Registry::default();
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let old = registry.open(peer);
        registry.close(peer, &old);
        let new = registry.open(peer);
        registry.close(peer, &old);
        assert!(registry.call_started(peer).is_some(), "the newer connection is still registered");
        assert_eq!(new.load(Ordering::Acquire), 0, "and the call's guard is gone again");
        registry.close(peer, &new);
        assert!(registry.call_started(peer).is_none());
    }
}
