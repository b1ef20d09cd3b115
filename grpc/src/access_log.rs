//! One structured log line per RPC (`event=rpc`): method (the request path), principal, gRPC
//! code number, latency; the same line from both runtimes. Over gRPC a tower layer times the
//! request and the service fills in the principal once it has authenticated it.

#[cfg(feature = "server")]
use std::future::Future;
#[cfg(feature = "server")]
use std::pin::Pin;
#[cfg(feature = "server")]
use std::sync::{Arc, Mutex};
#[cfg(feature = "server")]
use std::task::{Context, Poll};
#[cfg(feature = "server")]
use std::time::Instant;

#[cfg(feature = "server")]
use tonic::codegen::http;

/// The access line. `principal` is "-" when the caller was not authenticated; `code` is the
/// gRPC status number ("0" for OK).
pub fn log_rpc(method: &str, principal: &str, code: &str, elapsed: std::time::Duration) {
    tracing::info!(
        event = "rpc",
        method,
        principal,
        code,
        latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        "rpc"
    );
}

#[cfg(feature = "server")]
/// Filled by the service with the authenticated principal's id (never a secret).
#[derive(Debug, Clone, Default)]
pub struct PrincipalSlot(Arc<Mutex<Option<String>>>);

#[cfg(feature = "server")]
impl PrincipalSlot {
    pub fn set(&self, principal: &str) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(principal.to_string());
    }

    fn get(&self) -> String {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone().unwrap_or_else(|| "-".into())
    }
}

#[cfg(feature = "server")]
/// Logs each RPC and counts it in the metrics.
#[derive(Debug, Clone)]
pub struct AccessLogLayer {
    pub metrics: Arc<crate::metrics::Metrics>,
}

#[cfg(feature = "server")]
impl<S> tower::Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLog { inner, metrics: self.metrics.clone() }
    }
}

#[cfg(feature = "server")]
#[derive(Debug, Clone)]
pub struct AccessLog<S> {
    inner: S,
    metrics: Arc<crate::metrics::Metrics>,
}

#[cfg(feature = "server")]
type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

#[cfg(feature = "server")]
impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for AccessLog<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        let route = crate::metrics::Route::of(request.uri().path());
        // A served path is logged as its route's label (the same text); only others are copied.
        let unserved_path = route.is_other().then(|| request.uri().path().to_string());
        let slot = PrincipalSlot::default();
        request.extensions_mut().insert(slot.clone());
        let response = self.inner.call(request);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let response = response.await;
            // Errors come trailers-only (status in the headers); a missing status means OK, or a
            // stream whose final status is in its trailers.
            let code = match &response {
                Ok(r) => r.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("0"),
                Err(_) => "transport_error",
            };
            let elapsed = started.elapsed();
            metrics.record(route, code, elapsed);
            log_rpc(unserved_path.as_deref().unwrap_or(route.label()), &slot.get(), code, elapsed);
            response
        })
    }
}
