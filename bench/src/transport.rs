//! How RPCs reach the endpoint: gRPC over HTTP/2 (tonic), or Connect over HTTP/1.1; both carry
//! the SPEC §1 protobuf messages.

use std::sync::Arc;
use std::time::Duration;

use evidenceos_grpc::client::{HmacSigner, SignedChannel, TransportOptions, code_name};
use evidenceos_grpc::v2;
use evidenceos_grpc::v2::evidence_os_client::EvidenceOsClient;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::transport::Endpoint;

use crate::args::{Args, Protocol};
use crate::connect::ConnectConnection;

/// Prefix of the request ids the bench makes up for signed requests.
pub(crate) const ID_PREFIX: &str = "evidenceos-bench";

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
    /// Endpoint and TLS as given (for messages), and checked into the endpoint every worker
    /// connects to: the transport every client binary shares.
    transport: TransportOptions,
    endpoint: Endpoint,
    timeout: Duration,
    /// Bearer token and `--header`s, attached to every request.
    metadata: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
    /// Signs every request when --hmac-key-id is given.
    signer: Option<Arc<HmacSigner>>,
}

impl ConnectionSettings {
    pub fn from_args(args: &Args) -> Result<Self, String> {
        if args.protocol == Protocol::Connect && !args.endpoint.starts_with("http://") {
            return Err("--protocol connect drives http:// endpoints only".into());
        }
        let timeout = Duration::from_secs(args.timeout_secs);
        let transport = TransportOptions {
            endpoint: args.endpoint.clone(),
            ca_cert: args.ca_cert.clone(),
            tls_server_name: args.tls_server_name.clone(),
            client_cert: args.client_cert.clone(),
            client_key: args.client_key.clone(),
            timeout,
        };
        let endpoint = transport.endpoint().map_err(|e| e.to_string())?;
        let signer = match &args.hmac_key_id {
            Some(key_id) => {
                Some(Arc::new(HmacSigner::load(key_id, args.hmac_key_file.as_deref()).map_err(|e| e.to_string())?))
            }
            None => None,
        };
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
        Ok(Self { protocol: args.protocol, transport, endpoint, timeout, metadata, signer })
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
                let authority = settings.endpoint.uri().authority().map(|a| a.as_str().to_string()).unwrap_or_default();
                let headers: Vec<(String, String)> = settings
                    .metadata
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
                    .collect();
                let signer = settings.signer.clone();
                ConnectConnection::connect(&authority, &headers, signer, settings.timeout).await.map(Self::Connect)
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
    rpc: EvidenceOsClient<SignedChannel>,
    metadata: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
}

impl GrpcConnection {
    async fn connect(settings: &ConnectionSettings) -> Result<Self, String> {
        let channel = settings.endpoint.connect().await.map_err(|e| settings.transport.connect_failure(&e))?;
        let channel = SignedChannel::new(channel, settings.signer.clone(), ID_PREFIX);
        Ok(Self { rpc: EvidenceOsClient::new(channel), metadata: settings.metadata.clone() })
    }

    async fn unary<Req, Resp, F, Fut>(&self, message: Req, request_id: Option<&str>, call: F) -> Result<Resp, RpcError>
    where
        F: FnOnce(EvidenceOsClient<SignedChannel>, tonic::Request<Req>) -> Fut,
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
