//! Assembles the gRPC server: EvidenceOS v2 and v1, `grpc.health.v1`, and server reflection,
//! on one listener.

use std::future::Future;

use tokio::net::TcpListener;

use crate::service::EvidenceService;

use crate::{v1, v2};

pub use crate::tls::TlsFiles;

/// tonic's TLS settings for the PEM material.
fn server_tls_config(files: &TlsFiles) -> tonic::transport::ServerTlsConfig {
    let identity = tonic::transport::Identity::from_pem(&files.cert_pem, &files.key_pem);
    let config = tonic::transport::ServerTlsConfig::new().identity(identity);
    match &files.client_ca_pem {
        Some(ca) => config.client_ca_root(tonic::transport::Certificate::from_pem(ca)).client_auth_optional(false),
        None => config,
    }
}

pub use crate::DEFAULT_MAX_REQUEST_BYTES;

#[derive(Debug)]
pub enum ServeError {
    Reflection(String),
    Transport(tonic::transport::Error),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Reflection(e) => write!(f, "server reflection: {e}"),
            Self::Transport(e) => write!(f, "gRPC transport: {e}"),
        }
    }
}

impl std::error::Error for ServeError {}

/// Keeps the HTTP/2 `:path` with the request (tonic passes extensions through) for HMAC.
fn record_path<B>(mut request: tonic::codegen::http::Request<B>) -> tonic::codegen::http::Request<B> {
    let path = request.uri().path().to_string();
    request.extensions_mut().insert(crate::auth::RequestPath(path));
    request
}

/// tonic refuses a message over the decoding limit with OUT_OF_RANGE in a trailers-only
/// response; SPEC §1 says a request that is too large is RESOURCE_EXHAUSTED.
fn oversized_as_resource_exhausted<B>(
    mut response: tonic::codegen::http::Response<B>,
) -> tonic::codegen::http::Response<B> {
    let headers = response.headers_mut();
    let out_of_range = headers.get("grpc-status").is_some_and(|status| status == "11");
    let oversized = headers.get("grpc-message").and_then(|m| m.to_str().ok()).is_some_and(|message| {
        message.contains("message length too large") || message.contains("message%20length%20too%20large")
    });
    if out_of_range && oversized {
        headers.insert("grpc-status", tonic::codegen::http::HeaderValue::from_static("8"));
    }
    response
}

/// Keeps `grpc.health.v1` in step with the daemon's availability, for the whole server ("")
/// and both EvidenceOS services, so probes and `Watch` streams see NOT_SERVING while it drains.
async fn report_availability(
    reporter: tonic_health::server::HealthReporter,
    mut availability: tokio::sync::watch::Receiver<crate::rpc::Availability>,
) {
    use tonic::server::NamedService;
    let names = [
        "",
        <v2::evidence_os_server::EvidenceOsServer<EvidenceService> as NamedService>::NAME,
        <v1::evidence_os_server::EvidenceOsServer<EvidenceService> as NamedService>::NAME,
    ];
    loop {
        let status = match *availability.borrow_and_update() {
            crate::rpc::Availability::Serving => tonic_health::ServingStatus::Serving,
            crate::rpc::Availability::NotServing => tonic_health::ServingStatus::NotServing,
        };
        for name in names {
            reporter.set_service_status(name, status).await;
        }
        if availability.changed().await.is_err() {
            return;
        }
    }
}

/// Serves until `shutdown` resolves. Requests over `max_request_bytes` are refused with
/// RESOURCE_EXHAUSTED before they are decoded; connections are bounded by `limits`.
pub async fn serve(
    listener: TcpListener,
    service: EvidenceService,
    max_request_bytes: usize,
    limits: crate::connection_limits::ConnectionLimits,
    tls: Option<TlsFiles>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(report_availability(health_reporter, service.availability()));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let v2_server =
        v2::evidence_os_server::EvidenceOsServer::new(service.clone()).max_decoding_message_size(max_request_bytes);
    let v1_server = v1::evidence_os_server::EvidenceOsServer::new(service).max_decoding_message_size(max_request_bytes);
    let (incoming, call_limits) = crate::connection_limits::limit(listener, limits);
    let mut builder = tonic::transport::Server::builder();
    if let Some(files) = tls {
        builder = builder.tls_config(server_tls_config(&files)).map_err(ServeError::Transport)?;
    }
    builder
        .layer(call_limits)
        .layer(crate::access_log::AccessLogLayer { metrics })
        .layer(tower::util::MapRequestLayer::new(record_path))
        .layer(tower::util::MapResponseLayer::new(oversized_as_resource_exhausted))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(v2_server)
        .add_service(v1_server)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(ServeError::Transport)
}
