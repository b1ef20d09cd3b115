//! One unary client for both runtimes: gRPC over HTTP/2 (tonic) for `--runtime tokio`, Connect
//! over HTTP/1.1 with protobuf bodies for `--runtime sync`; the same SPEC §1 messages either way.

use std::time::Duration;

use evidenceos_bench::connect::ConnectConnection;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// Which runtime a test daemon runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Runtime {
    Tokio,
    Sync,
}

impl Runtime {
    pub(crate) const BOTH: [Runtime; 2] = [Runtime::Tokio, Runtime::Sync];

    /// The value of `--runtime`.
    pub(crate) fn flag(self) -> &'static str {
        match self {
            Runtime::Tokio => "tokio",
            Runtime::Sync => "sync",
        }
    }
}

/// How long one RPC may take before the test gives up on it.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// A client connection carrying one bearer token.
#[derive(Clone)]
pub(crate) enum Rpc {
    Grpc { channel: Channel, bearer: String },
    Connect(ConnectConnection),
}

impl Rpc {
    /// Connects to `addr` (`http://127.0.0.1:PORT`, as `support::Daemon::addr`) as `token`.
    pub(crate) async fn connect(runtime: Runtime, addr: &str, token: &str) -> Result<Self, String> {
        let bearer = format!("Bearer {token}");
        match runtime {
            Runtime::Tokio => {
                let endpoint = tonic::transport::Endpoint::from_shared(addr.to_string()).map_err(|e| e.to_string())?;
                let channel = endpoint.timeout(RPC_TIMEOUT).connect().await.map_err(|e| e.to_string())?;
                Ok(Self::Grpc { channel, bearer })
            }
            Runtime::Sync => {
                let authority = addr.trim_start_matches("http://");
                let headers = [("authorization".to_string(), bearer)];
                ConnectConnection::connect(authority, &headers, None, RPC_TIMEOUT).await.map(Self::Connect)
            }
        }
    }

    /// `evidenceos.v2.EvidenceOS/<method>`; an error is `CODE: message` with the canonical name.
    pub(crate) async fn call<Req, Resp>(
        &self,
        method: &str,
        message: Req,
        request_id: Option<&str>,
    ) -> Result<Resp, String>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        match self {
            Self::Grpc { channel, bearer } => {
                let mut request = tonic::Request::new(message);
                request.metadata_mut().insert("authorization", bearer.parse().map_err(|_| "bad token")?);
                if let Some(id) = request_id {
                    request.metadata_mut().insert("x-request-id", id.parse().map_err(|_| "bad request id")?);
                }
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                grpc.ready().await.map_err(|e| format!("UNAVAILABLE: {e}"))?;
                let path =
                    PathAndQuery::try_from(format!("/evidenceos.v2.EvidenceOS/{method}")).map_err(|e| e.to_string())?;
                let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
                match grpc.unary(request, path, codec).await {
                    Ok(response) => Ok(response.into_inner()),
                    Err(status) => Err(format!("{:?}: {}", status.code(), status.message())),
                }
            }
            Self::Connect(connection) => {
                connection.unary(method, &message, request_id).await.map_err(|e| format!("{}: {}", e.code, e.message))
            }
        }
    }
}
