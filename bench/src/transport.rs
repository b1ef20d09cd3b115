//! How RPCs reach the endpoint: gRPC over HTTP/2 (tonic), or Connect over HTTP/1.1; both carry
//! the SPEC §1 protobuf messages.

use std::time::Duration;

use evidenceos_grpc::v2;
use evidenceos_grpc::v2::evidence_os_client::EvidenceOsClient;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::args::{Args, Protocol};
use crate::connect::ConnectConnection;

/// An RPC that did not succeed: its canonical status name (`UNAVAILABLE`) and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: &'static str,
    pub message: String,
}

/// Settings shared by every connection of a run.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    protocol: Protocol,
    endpoint: Endpoint,
    timeout: Duration,
    /// Bearer token and `--header`s, attached to every request.
    metadata: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
}

impl ConnectionSettings {
    pub fn from_args(args: &Args) -> Result<Self, String> {
        if args.protocol == Protocol::Connect && !args.endpoint.starts_with("http://") {
            return Err("--protocol connect drives http:// endpoints only".into());
        }
        let timeout = Duration::from_secs(args.timeout_secs);
        let mut endpoint = Endpoint::from_shared(args.endpoint.clone())
            .map_err(|e| format!("bad --endpoint {:?}: {e}", args.endpoint))?
            .connect_timeout(timeout)
            .timeout(timeout)
            .tcp_nodelay(true);
        if args.endpoint.starts_with("https://") {
            let ca = args.ca_cert.as_ref().ok_or("an https endpoint needs --ca-cert")?;
            let read = |path: &std::path::PathBuf| {
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
            };
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
            if let Some(name) = &args.tls_server_name {
                tls = tls.domain_name(name.clone());
            }
            if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| format!("TLS settings: {e}"))?;
        } else if !args.endpoint.starts_with("http://") {
            return Err(format!("--endpoint must start with http:// or https://, got {:?}", args.endpoint));
        } else if args.ca_cert.is_some() || args.client_cert.is_some() {
            return Err("--ca-cert and --client-cert need an https:// endpoint".into());
        }
        let mut metadata = Vec::new();
        if let Some(token) = &args.bearer_token {
            let value = AsciiMetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| "the bearer token cannot be sent as an HTTP header")?;
            metadata.push((AsciiMetadataKey::from_static("authorization"), value));
        }
        for (name, value) in &args.headers {
            let key = AsciiMetadataKey::from_bytes(name.as_bytes()).map_err(|_| format!("bad header name {name}"))?;
            let value = AsciiMetadataValue::try_from(value.as_str()).map_err(|_| format!("bad value of {name}"))?;
            metadata.push((key, value));
        }
        Ok(Self { protocol: args.protocol, endpoint, timeout, metadata })
    }
}

/// One client connection.
#[derive(Debug, Clone)]
pub enum Connection {
    Grpc(GrpcConnection),
    Connect(ConnectConnection),
}

impl Connection {
    pub async fn connect(settings: &ConnectionSettings) -> Result<Self, String> {
        match settings.protocol {
            Protocol::Grpc => GrpcConnection::connect(settings).await.map(Self::Grpc),
            Protocol::Connect => {
                let uri = settings.endpoint.uri();
                let authority = uri.authority().map(|a| a.as_str().to_string()).unwrap_or_default();
                let headers: Vec<(String, String)> = settings
                    .metadata
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
                    .collect();
                ConnectConnection::connect(&authority, &headers, settings.timeout).await.map(Self::Connect)
            }
        }
    }

    /// `request_id` goes out as `x-request-id` (required by CreateClaimV2 and ExecuteClaimV2).
    pub async fn create_claim_v2(
        &mut self,
        request: v2::CreateClaimV2Request,
        request_id: &str,
    ) -> Result<v2::CreateClaimV2Response, RpcError> {
        match self {
            Self::Grpc(c) => {
                c.unary(request, Some(request_id), |mut rpc, r| async move { rpc.create_claim_v2(r).await }).await
            }
            Self::Connect(c) => c.unary("CreateClaimV2", &request, Some(request_id)).await,
        }
    }

    pub async fn commit_artifacts(
        &mut self,
        request: v2::CommitArtifactsRequest,
    ) -> Result<v2::CommitArtifactsResponse, RpcError> {
        match self {
            Self::Grpc(c) => c.unary(request, None, |mut rpc, r| async move { rpc.commit_artifacts(r).await }).await,
            Self::Connect(c) => c.unary("CommitArtifacts", &request, None).await,
        }
    }

    pub async fn freeze_gates(&mut self, request: v2::FreezeGatesRequest) -> Result<v2::FreezeGatesResponse, RpcError> {
        match self {
            Self::Grpc(c) => c.unary(request, None, |mut rpc, r| async move { rpc.freeze_gates(r).await }).await,
            Self::Connect(c) => c.unary("FreezeGates", &request, None).await,
        }
    }

    pub async fn seal_claim(&mut self, request: v2::SealClaimRequest) -> Result<v2::SealClaimResponse, RpcError> {
        match self {
            Self::Grpc(c) => c.unary(request, None, |mut rpc, r| async move { rpc.seal_claim(r).await }).await,
            Self::Connect(c) => c.unary("SealClaim", &request, None).await,
        }
    }

    pub async fn execute_claim_v2(
        &mut self,
        request: v2::ExecuteClaimV2Request,
        request_id: &str,
    ) -> Result<v2::ExecuteClaimV2Response, RpcError> {
        match self {
            Self::Grpc(c) => {
                c.unary(request, Some(request_id), |mut rpc, r| async move { rpc.execute_claim_v2(r).await }).await
            }
            Self::Connect(c) => c.unary("ExecuteClaimV2", &request, Some(request_id)).await,
        }
    }

    /// The current signed tree size (used to size pre-growth and report log growth).
    pub async fn tree_size(&mut self) -> Result<u64, RpcError> {
        let request = v2::GetSignedTreeHeadRequest {};
        match self {
            Self::Grpc(c) => c
                .unary(request, None, |mut rpc, r| async move { rpc.get_signed_tree_head(r).await })
                .await
                .map(|sth| sth.tree_size),
            Self::Connect(c) => c
                .unary::<_, v2::GetSignedTreeHeadResponse>("GetSignedTreeHead", &request, None)
                .await
                .map(|sth| sth.tree_size),
        }
    }
}

/// gRPC over HTTP/2 (tonic). Clones share one connection; workers each connect their own.
#[derive(Debug, Clone)]
pub struct GrpcConnection {
    rpc: EvidenceOsClient<Channel>,
    metadata: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
}

impl GrpcConnection {
    async fn connect(settings: &ConnectionSettings) -> Result<Self, String> {
        let channel = settings
            .endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {}: {}", settings.endpoint.uri(), error_chain(&e)))?;
        Ok(Self { rpc: EvidenceOsClient::new(channel), metadata: settings.metadata.clone() })
    }

    async fn unary<Req, Resp, F, Fut>(&self, message: Req, request_id: Option<&str>, call: F) -> Result<Resp, RpcError>
    where
        F: FnOnce(EvidenceOsClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let mut request = tonic::Request::new(message);
        let metadata = request.metadata_mut();
        for (key, value) in &self.metadata {
            metadata.insert(key.clone(), value.clone());
        }
        if let Some(id) = request_id {
            let value = AsciiMetadataValue::try_from(id).map_err(|_| RpcError {
                code: "INVALID_ARGUMENT",
                message: format!("request id {id:?} is not a header value"),
            })?;
            metadata.insert("x-request-id", value);
        }
        // The channel is a cheap handle; cloning it lets `call` take the client by value.
        call(self.rpc.clone(), request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| RpcError { code: code_name(status.code()), message: status.message().to_string() })
    }
}

/// The canonical gRPC name of a status code (`PERMISSION_DENIED`).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// An error with its chain of causes (`transport error: tcp connect error: …`).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn settings(extra: &[&str]) -> Result<ConnectionSettings, String> {
        ConnectionSettings::from_args(&Args::parse_from([&["evidenceos-bench"][..], extra].concat()))
    }

    #[test]
    fn tokens_and_headers_become_metadata_and_bad_endpoints_are_refused() {
        let s = settings(&["--bearer-token", "t0k", "--header", "x-tenant:blue"]).unwrap();
        let names: Vec<(&str, &str)> = s.metadata.iter().map(|(k, v)| (k.as_str(), v.to_str().unwrap())).collect();
        assert_eq!(names, [("authorization", "Bearer t0k"), ("x-tenant", "blue")]);
        assert!(settings(&["--endpoint", "ftp://x"]).unwrap_err().contains("http:// or https://"));
        assert!(settings(&["--endpoint", "https://localhost:1"]).unwrap_err().contains("--ca-cert"));
        assert!(settings(&["--ca-cert", "x.pem"]).unwrap_err().contains("https://"));
    }
}
