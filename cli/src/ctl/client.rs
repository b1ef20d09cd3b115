//! The gRPC connection: endpoint and TLS, bearer token or HMAC signing, deadline, request ids,
//! and how failures read. The transport itself is the one every client binary shares
//! ([`evidenceos_grpc::client`]).

use std::sync::Arc;
use std::time::Duration;

use evidenceos_grpc::client::{
    ClientConfigError, HmacSigner, SignedChannel, TlsUse, TransportOptions, fresh_request_id,
};
use evidenceos_grpc::v2::evidence_os_client::EvidenceOsClient;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::{Code, Status};

pub(crate) use evidenceos_grpc::client::code_name;

use super::args::Connection;

/// One step of a command, as named in progress lines and error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    /// Short name shown in progress lines (`create`, `commit`, …).
    pub(crate) name: &'static str,
    /// The RPC the step calls.
    pub(crate) rpc: &'static str,
}

pub(crate) const CREATE: Step = Step { name: "create", rpc: "CreateClaimV2" };
pub(crate) const COMMIT: Step = Step { name: "commit", rpc: "CommitArtifacts" };
pub(crate) const FREEZE: Step = Step { name: "freeze", rpc: "FreezeGates" };
pub(crate) const SEAL: Step = Step { name: "seal", rpc: "SealClaim" };
pub(crate) const EXECUTE: Step = Step { name: "execute", rpc: "ExecuteClaimV2" };
pub(crate) const FETCH: Step = Step { name: "fetch", rpc: "FetchCapsule" };
pub(crate) const PUBLIC_KEY: Step = Step { name: "public-key", rpc: "GetPublicKey" };
pub(crate) const CONSISTENCY: Step = Step { name: "consistency", rpc: "GetConsistencyProof" };

/// Why a command could not do its job (printed as `evidenceosctl: …`).
#[derive(Debug)]
pub(crate) enum Failure {
    /// An RPC answered with an error status (exit status 1).
    Rpc { step: Step, status: Status, tls: TlsUse },
    /// Connection flags that cannot work together (exit status 2, like any command-line error).
    Usage(String),
    /// Anything else: connecting, reading the module, an unexpected answer (exit status 1).
    Message(String),
}

impl Failure {
    /// The error line, plus a hint line when the status suggests what to do.
    pub(crate) fn lines(&self) -> Vec<String> {
        match self {
            Self::Message(message) => vec![format!("evidenceosctl: {message}")],
            Self::Usage(message) => vec![format!("evidenceosctl: {message} (see --help)")],
            Self::Rpc { step, status, tls } => {
                let mut lines = vec![format!(
                    "evidenceosctl: {} ({}) failed: {} {}",
                    step.name,
                    step.rpc,
                    code_name(status.code()),
                    status_text(status)
                )];
                let tls_hint = tls.hint(&status_text(status));
                if let Some(hint) = tls_hint.or_else(|| hint(*step, status.code())) {
                    lines.push(format!("evidenceosctl: hint: {hint}"));
                }
                lines
            }
        }
    }

    pub(crate) fn exit_code(&self) -> std::process::ExitCode {
        match self {
            Self::Usage(_) => std::process::ExitCode::from(2),
            Self::Rpc { .. } | Self::Message(_) => std::process::ExitCode::FAILURE,
        }
    }
}

/// A status's message, with the transport's causes when the status stands for one (a TLS alert
/// reaches the client as UNAVAILABLE whose message alone says only "transport error").
fn status_text(status: &Status) -> String {
    match std::error::Error::source(status) {
        Some(source) => {
            let causes = evidenceos_grpc::client::error_chain(source);
            if causes.starts_with(status.message()) {
                causes
            } else if status.message().ends_with(&causes) {
                status.message().to_string()
            } else {
                format!("{}: {causes}", status.message())
            }
        }
        None => status.message().to_string(),
    }
}

fn hint(step: Step, code: Code) -> Option<&'static str> {
    match code {
        Code::Unauthenticated => Some(
            "the daemon requires credentials: pass --token or set EVIDENCEOS_TOKEN, or sign requests with --hmac-key-id",
        ),
        Code::PermissionDenied if step == FETCH => {
            Some("FetchCapsule needs an auditor or operator token: pass --token with one")
        }
        Code::PermissionDenied if step == CONSISTENCY => {
            Some("GetConsistencyProof needs an auditor or operator token: pass --token with one")
        }
        Code::PermissionDenied => Some("only the claim's creator or an operator may drive a claim"),
        Code::Unavailable => Some("is evidenceosd running and reachable at --endpoint?"),
        Code::DeadlineExceeded => Some("the daemon did not answer in time; raise --timeout-secs"),
        _ => None,
    }
}

/// A connected client that attaches the bearer token (and, where needed, a request id); with an
/// HMAC key its channel signs every request.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) rpc: EvidenceOsClient<SignedChannel>,
    authorization: Option<AsciiMetadataValue>,
    /// How TLS is used (to explain a TLS refusal).
    tls: TlsUse,
}

impl Client {
    pub(crate) async fn connect(connection: &Connection) -> Result<Self, Failure> {
        let options = TransportOptions {
            endpoint: connection.endpoint.clone(),
            ca_cert: connection.ca_cert.clone(),
            tls_server_name: connection.tls_server_name.clone(),
            client_cert: connection.client_cert.clone(),
            client_key: connection.client_key.clone(),
            timeout: Duration::from_secs(connection.timeout_secs),
        };
        let endpoint = options.endpoint().map_err(config_failure)?;
        let signer = match &connection.hmac_key_id {
            Some(key_id) => {
                Some(HmacSigner::load(key_id, connection.hmac_key_file.as_deref()).map_err(config_failure)?)
            }
            None => None,
        };
        let channel = endpoint.connect().await.map_err(|e| Failure::Message(options.connect_failure(&e)))?;
        let authorization = match &connection.token {
            None => None,
            Some(token) => Some(
                MetadataValue::try_from(format!("Bearer {}", token.0))
                    .map_err(|_| Failure::Message("the token cannot be sent as an HTTP header".into()))?,
            ),
        };
        Ok(Self {
            rpc: EvidenceOsClient::new(SignedChannel::new(channel, signer.map(Arc::new), "evidenceosctl")),
            authorization,
            tls: options.tls_use(),
        })
    }

    /// The failure of an RPC of `step`.
    pub(crate) fn failure(&self, step: Step) -> impl FnOnce(Status) -> Failure {
        let tls = self.tls;
        move |status| Failure::Rpc { step, status, tls }
    }

    /// A request carrying the bearer token, if any.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(value) = &self.authorization {
            request.metadata_mut().insert("authorization", value.clone());
        }
        request
    }

    /// A request with the token and a fresh `x-request-id`, which CreateClaimV2, ExecuteClaimV2 and
    /// RevokeClaim require (SPEC §2.5). Ids are unique per call, so nothing is replayed by accident.
    pub(crate) fn request_with_id<T>(&self, message: T, step: Step) -> tonic::Request<T> {
        let id = request_id(step);
        let mut request = self.request(message);
        let value = MetadataValue::try_from(id).expect("request ids are printable ASCII");
        request.metadata_mut().insert("x-request-id", value);
        request
    }
}

/// Flag combinations that cannot work are command-line errors; unreadable or unusable files are not.
fn config_failure(error: ClientConfigError) -> Failure {
    match error {
        ClientConfigError::Read { .. } | ClientConfigError::Tls(_) | ClientConfigError::Hmac(_) => {
            Failure::Message(error.to_string())
        }
        _ => Failure::Usage(error.to_string()),
    }
}

/// `evidenceosctl-<step>-<pid>-<unix nanos>-<n>`: printable ASCII without `:`, at most 128 bytes.
fn request_id(step: Step) -> String {
    fresh_request_id(&format!("evidenceosctl-{}", step.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_failures_name_the_step_and_the_code_and_give_hints() {
        let failure = Failure::Rpc {
            step: FETCH,
            status: Status::permission_denied("auditor or operator only"),
            tls: TlsUse { https: false, client_cert: false },
        };
        assert_eq!(
            failure.lines(),
            [
                "evidenceosctl: fetch (FetchCapsule) failed: PERMISSION_DENIED auditor or operator only",
                "evidenceosctl: hint: FetchCapsule needs an auditor or operator token: pass --token with one",
            ]
        );
        let failure = Failure::Rpc {
            step: COMMIT,
            status: Status::failed_precondition("wrong state"),
            tls: TlsUse { https: false, client_cert: false },
        };
        assert_eq!(
            failure.lines(),
            ["evidenceosctl: commit (CommitArtifacts) failed: FAILED_PRECONDITION wrong state"]
        );
        assert_eq!(code_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
    }

    #[test]
    fn request_ids_fit_the_spec() {
        let id = request_id(EXECUTE);
        assert!(id.len() <= 128 && !id.contains(':') && id.bytes().all(|b| b.is_ascii_graphic()), "{id}");
        assert!(id.starts_with("evidenceosctl-execute-"));
    }
}
