//! The gRPC connection: endpoint, deadline, bearer token, request ids, and how failures read.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use evidenceos_grpc::v2::evidence_os_client::EvidenceOsClient;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

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

/// Why a command could not do its job (printed as `evidenceosctl: …`, exit status 1).
#[derive(Debug)]
pub(crate) enum Failure {
    /// An RPC answered with an error status.
    Rpc { step: Step, status: Status },
    /// Anything else (connecting, reading the module, an unexpected answer).
    Message(String),
}

impl Failure {
    /// The error line, plus a hint line when the status suggests what to do.
    pub(crate) fn lines(&self) -> Vec<String> {
        match self {
            Self::Message(message) => vec![format!("evidenceosctl: {message}")],
            Self::Rpc { step, status } => {
                let mut lines = vec![format!(
                    "evidenceosctl: {} ({}) failed: {} {}",
                    step.name,
                    step.rpc,
                    code_name(status.code()),
                    status.message()
                )];
                if let Some(hint) = hint(*step, status.code()) {
                    lines.push(format!("evidenceosctl: hint: {hint}"));
                }
                lines
            }
        }
    }
}

fn hint(step: Step, code: Code) -> Option<&'static str> {
    match code {
        Code::Unauthenticated => Some("the daemon requires a token: pass --token or set EVIDENCEOS_TOKEN"),
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

/// The canonical gRPC name of a status code (`PERMISSION_DENIED`).
pub(crate) fn code_name(code: Code) -> &'static str {
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

/// Formats an error with its chain of causes (`transport error: tcp connect error: …`).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
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

/// A connected client that attaches the bearer token (and, where needed, a request id).
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) rpc: EvidenceOsClient<Channel>,
    authorization: Option<AsciiMetadataValue>,
    /// Counts request ids handed out, so two ids of one process never collide.
    request_ids: std::cell::Cell<u32>,
}

impl Client {
    pub(crate) async fn connect(connection: &Connection) -> Result<Self, Failure> {
        let timeout = Duration::from_secs(connection.timeout_secs);
        let endpoint = Endpoint::from_shared(connection.endpoint.clone())
            .map_err(|e| Failure::Message(format!("bad --endpoint {:?}: {}", connection.endpoint, error_chain(&e))))?
            .connect_timeout(timeout)
            .timeout(timeout);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| Failure::Message(format!("cannot connect to {}: {}", connection.endpoint, error_chain(&e))))?;
        let authorization = match &connection.token {
            None => None,
            Some(token) => Some(
                MetadataValue::try_from(format!("Bearer {}", token.0))
                    .map_err(|_| Failure::Message("the token cannot be sent as an HTTP header".into()))?,
            ),
        };
        Ok(Self { rpc: EvidenceOsClient::new(channel), authorization, request_ids: std::cell::Cell::new(0) })
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
        self.request_ids.set(self.request_ids.get() + 1);
        let id = request_id(step, self.request_ids.get());
        let mut request = self.request(message);
        let value = MetadataValue::try_from(id).expect("request ids are printable ASCII");
        request.metadata_mut().insert("x-request-id", value);
        request
    }
}

/// `evidenceosctl-<step>-<pid>-<unix nanos>-<n>`: printable ASCII without `:`, at most 128 bytes.
fn request_id(step: Step, n: u32) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("evidenceosctl-{}-{}-{nanos}-{n}", step.name, std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_failures_name_the_step_and_the_code_and_give_hints() {
        let failure = Failure::Rpc { step: FETCH, status: Status::permission_denied("auditor or operator only") };
        assert_eq!(
            failure.lines(),
            [
                "evidenceosctl: fetch (FetchCapsule) failed: PERMISSION_DENIED auditor or operator only",
                "evidenceosctl: hint: FetchCapsule needs an auditor or operator token: pass --token with one",
            ]
        );
        let failure = Failure::Rpc { step: COMMIT, status: Status::failed_precondition("wrong state") };
        assert_eq!(
            failure.lines(),
            ["evidenceosctl: commit (CommitArtifacts) failed: FAILED_PRECONDITION wrong state"]
        );
        assert_eq!(code_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
    }

    #[test]
    fn request_ids_fit_the_spec() {
        let id = request_id(EXECUTE, 7);
        assert!(id.len() <= 128 && !id.contains(':') && id.bytes().all(|b| b.is_ascii_graphic()), "{id}");
        assert!(id.starts_with("evidenceosctl-execute-"));
    }
}
