//! One mapping per unary RPC, shared by every transport: proto request → kernel request, kernel
//! answer → proto response. The tonic handlers (gRPC) and the Connect handler (HTTP/1.1) both
//! call these functions, so a rule about a field or an idempotency key lives in one place.

use evidenceos_core::request::{ArtifactInput, CreateClaimV2, IdempotencyKey};
use evidenceos_core::{Command, KernelError, Query, Request as KernelRequest, Response as KernelResponse};
use prost::Message;

use crate::mapping;
use crate::v2;

/// The unary methods of `evidenceos.v2.EvidenceOS` (SPEC §1); WatchRevocations streams and is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Health,
    GetServerInfo,
    CreateClaim,
    CreateClaimV2,
    CommitArtifacts,
    Freeze,
    FreezeGates,
    Seal,
    SealClaim,
    ExecuteClaim,
    ExecuteClaimV2,
    GetCapsule,
    GetPublicKey,
    GetSignedTreeHead,
    GetInclusionProof,
    GetConsistencyProof,
    GetRevocationFeed,
    FetchCapsule,
    RevokeClaim,
    GrantCredit,
    SetCreditLimit,
    SetHoldoutPoolBudgets,
    GetHoldoutPoolBudgets,
}

impl Method {
    pub const ALL: [Method; 23] = [
        Self::Health,
        Self::GetServerInfo,
        Self::CreateClaim,
        Self::CreateClaimV2,
        Self::CommitArtifacts,
        Self::Freeze,
        Self::FreezeGates,
        Self::Seal,
        Self::SealClaim,
        Self::ExecuteClaim,
        Self::ExecuteClaimV2,
        Self::GetCapsule,
        Self::GetPublicKey,
        Self::GetSignedTreeHead,
        Self::GetInclusionProof,
        Self::GetConsistencyProof,
        Self::GetRevocationFeed,
        Self::FetchCapsule,
        Self::RevokeClaim,
        Self::GrantCredit,
        Self::SetCreditLimit,
        Self::SetHoldoutPoolBudgets,
        Self::GetHoldoutPoolBudgets,
    ];

    /// The method name as it appears in the proto service and the request path.
    pub fn name(self) -> &'static str {
        match self {
            Self::Health => "Health",
            Self::GetServerInfo => "GetServerInfo",
            Self::CreateClaim => "CreateClaim",
            Self::CreateClaimV2 => "CreateClaimV2",
            Self::CommitArtifacts => "CommitArtifacts",
            Self::Freeze => "Freeze",
            Self::FreezeGates => "FreezeGates",
            Self::Seal => "Seal",
            Self::SealClaim => "SealClaim",
            Self::ExecuteClaim => "ExecuteClaim",
            Self::ExecuteClaimV2 => "ExecuteClaimV2",
            Self::GetCapsule => "GetCapsule",
            Self::GetPublicKey => "GetPublicKey",
            Self::GetSignedTreeHead => "GetSignedTreeHead",
            Self::GetInclusionProof => "GetInclusionProof",
            Self::GetConsistencyProof => "GetConsistencyProof",
            Self::GetRevocationFeed => "GetRevocationFeed",
            Self::FetchCapsule => "FetchCapsule",
            Self::RevokeClaim => "RevokeClaim",
            Self::GrantCredit => "GrantCredit",
            Self::SetCreditLimit => "SetCreditLimit",
            Self::SetHoldoutPoolBudgets => "SetHoldoutPoolBudgets",
            Self::GetHoldoutPoolBudgets => "GetHoldoutPoolBudgets",
        }
    }

    /// SPEC §2.5: the methods whose repeats the idempotency record answers (same request id and
    /// bytes → the recorded reply), so a repeated request id there is a retry, not a replay.
    pub fn is_idempotent(self) -> bool {
        matches!(self, Self::CreateClaimV2 | Self::ExecuteClaimV2 | Self::RevokeClaim)
    }

    /// Resolves `/<package>.EvidenceOS/<Method>`; the legacy v1 package lacks the pool RPCs.
    pub fn from_path(path: &str) -> Option<(&'static str, Method)> {
        let (package, name) = path.strip_prefix('/')?.split_once(".EvidenceOS/")?;
        let package = match package {
            "evidenceos.v2" => "evidenceos.v2",
            "evidenceos.v1" => "evidenceos.v1",
            _ => return None,
        };
        let method = Self::ALL.into_iter().find(|m| m.name() == name)?;
        let pool_only_in_v2 = matches!(method, Self::SetHoldoutPoolBudgets | Self::GetHoldoutPoolBudgets);
        (package == "evidenceos.v2" || !pool_only_in_v2).then_some((package, method))
    }
}

/// SPEC §2.5: CreateClaimV2, ExecuteClaimV2 and RevokeClaim need `x-request-id`; the key is
/// (principal, method, id) and the hash of the re-encoded message binds it to this exact request
/// (re-encoded, so gRPC and JSON bodies of the same message share one key).
pub fn idempotent<M: Message>(
    method: Method,
    request_id: Option<&str>,
    message: &M,
    command: Command,
) -> Result<KernelRequest, KernelError> {
    debug_assert!(method.is_idempotent(), "{method:?} has no idempotency record");
    let name = method.name();
    let request_id =
        request_id.ok_or_else(|| KernelError::invalid_argument(format!("{name} requires an x-request-id header")))?;
    let body_hash = evidenceos_core::hash::sha256(&message.encode_to_vec()).to_vec();
    let key = IdempotencyKey { method: name.to_string(), request_id: request_id.to_string(), body_hash };
    Ok(KernelRequest::IdempotentCommand { key, command })
}

/// Whether the daemon takes new work. A draining daemon or one whose kernel failed storage is
/// `NotServing`, so load balancers and health probes stop sending it requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Serving,
    NotServing,
}

impl Availability {
    /// The status word of both health services (`grpc.health.v1` and EvidenceOS Health).
    pub fn status(self) -> &'static str {
        match self {
            Self::Serving => "SERVING",
            Self::NotServing => "NOT_SERVING",
        }
    }
}

pub fn health(availability: Availability) -> v2::HealthResponse {
    v2::HealthResponse { status: availability.status().to_string() }
}

/// GetServerInfo's answer, fixed at start-up.
pub fn server_info(
    daemon_version: String,
    build_git_commit: String,
    build_time_utc: String,
    feature_flags: v2::FeatureFlags,
) -> v2::GetServerInfoResponse {
    v2::GetServerInfoResponse {
        protocol_semver: crate::PROTOCOL_SEMVER.to_string(),
        proto_hash: hex::encode(evidenceos_core::hash::sha256(crate::FILE_DESCRIPTOR_SET)),
        build_git_commit,
        build_time_utc,
        daemon_version,
        feature_flags: Some(feature_flags),
    }
}

pub fn create_claim(r: v2::CreateClaimRequest) -> KernelRequest {
    KernelRequest::Command(Command::CreateClaim {
        topic_id: r.topic_id,
        holdout_handle_id: r.holdout_handle_id,
        phys_hir_hash: r.phys_hir_hash,
        epoch_size: r.epoch_size,
        oracle_num_symbols: r.oracle_num_symbols,
        alpha: r.alpha,
        access_credit: r.access_credit,
    })
}

pub fn create_claim_reply(answer: KernelResponse) -> Result<v2::CreateClaimResponse, KernelError> {
    mapping::claim_created(answer).map(|(claim_id, _, state)| v2::CreateClaimResponse { claim_id, state })
}

pub fn create_claim_v2(r: &v2::CreateClaimV2Request, request_id: Option<&str>) -> Result<KernelRequest, KernelError> {
    let metadata = r.metadata.clone().unwrap_or_default();
    let signals = r.signals.clone().unwrap_or_default();
    let command = Command::CreateClaimV2(Box::new(CreateClaimV2 {
        claim_name: r.claim_name.clone(),
        lane: metadata.lane,
        alpha_micros: metadata.alpha_micros,
        epoch_config_ref: metadata.epoch_config_ref,
        output_schema_id: metadata.output_schema_id,
        semantic_hash: signals.semantic_hash,
        phys_hir_signature_hash: signals.phys_hir_signature_hash,
        dependency_merkle_root: signals.dependency_merkle_root,
        holdout_ref: r.holdout_ref.clone(),
        epoch_size: r.epoch_size,
        oracle_num_symbols: r.oracle_num_symbols,
        access_credit: r.access_credit,
        oracle_id: r.oracle_id.clone(),
        nullspec_id: r.nullspec_id.clone(),
        dp_epsilon_budget: r.dp_epsilon_budget,
        dp_delta_budget: r.dp_delta_budget,
    }));
    idempotent(Method::CreateClaimV2, request_id, r, command)
}

pub fn create_claim_v2_reply(answer: KernelResponse) -> Result<v2::CreateClaimV2Response, KernelError> {
    mapping::claim_created(answer).map(|(claim_id, topic_id, state)| v2::CreateClaimV2Response {
        claim_id,
        topic_id,
        state,
    })
}

pub fn commit_artifacts(r: v2::CommitArtifactsRequest) -> KernelRequest {
    let artifacts = r.artifacts.into_iter().map(|a| ArtifactInput { kind: a.kind, hash: a.artifact_hash }).collect();
    KernelRequest::Command(Command::CommitArtifacts { claim_id: r.claim_id, artifacts, wasm_module: r.wasm_module })
}

pub fn commit_artifacts_reply(answer: KernelResponse) -> Result<v2::CommitArtifactsResponse, KernelError> {
    mapping::claim_state(answer).map(|state| v2::CommitArtifactsResponse { state })
}

/// Freeze is an alias of FreezeGates (SPEC §1).
pub fn freeze_gates(claim_id: Vec<u8>) -> KernelRequest {
    KernelRequest::Command(Command::FreezeGates { claim_id })
}

pub fn freeze_reply(answer: KernelResponse) -> Result<v2::FreezeResponse, KernelError> {
    mapping::claim_state(answer).map(|state| v2::FreezeResponse { state })
}

pub fn freeze_gates_reply(answer: KernelResponse) -> Result<v2::FreezeGatesResponse, KernelError> {
    mapping::claim_state(answer).map(|state| v2::FreezeGatesResponse { state })
}

/// Seal is an alias of SealClaim (SPEC §1).
pub fn seal_claim(claim_id: Vec<u8>) -> KernelRequest {
    KernelRequest::Command(Command::SealClaim { claim_id })
}

pub fn seal_reply(answer: KernelResponse) -> Result<v2::SealResponse, KernelError> {
    mapping::claim_state(answer).map(|state| v2::SealResponse { state })
}

pub fn seal_claim_reply(answer: KernelResponse) -> Result<v2::SealClaimResponse, KernelError> {
    mapping::claim_state(answer).map(|state| v2::SealClaimResponse { state })
}

pub fn execute_claim(r: v2::ExecuteClaimRequest) -> KernelRequest {
    KernelRequest::Command(Command::ExecuteClaim {
        claim_id: r.claim_id,
        decision: u32::try_from(r.decision).unwrap_or(0),
        reason_codes: r.reason_codes,
        canonical_output: r.canonical_output,
    })
}

pub fn execute_claim_reply(answer: KernelResponse) -> Result<v2::ExecuteClaimResponse, KernelError> {
    mapping::executed(answer).map(|e| v2::ExecuteClaimResponse {
        state: e.state,
        capsule_hash: e.capsule_hash,
        etl_index: e.etl_index,
    })
}

pub fn execute_claim_v2(r: &v2::ExecuteClaimV2Request, request_id: Option<&str>) -> Result<KernelRequest, KernelError> {
    let command = Command::ExecuteClaimV2 { claim_id: r.claim_id.clone() };
    idempotent(Method::ExecuteClaimV2, request_id, r, command)
}

pub fn get_capsule(r: v2::GetCapsuleRequest) -> KernelRequest {
    KernelRequest::Query(Query::GetCapsule { claim_id: r.claim_id })
}

pub fn get_public_key(r: v2::GetPublicKeyRequest) -> KernelRequest {
    KernelRequest::Query(Query::GetPublicKey { key_id: r.key_id })
}

pub fn get_signed_tree_head() -> KernelRequest {
    KernelRequest::Query(Query::GetSignedTreeHead)
}

pub fn get_inclusion_proof(r: v2::GetInclusionProofRequest) -> KernelRequest {
    KernelRequest::Query(Query::GetInclusionProof { leaf_index: r.leaf_index })
}

pub fn get_consistency_proof(r: v2::GetConsistencyProofRequest) -> KernelRequest {
    let v2::GetConsistencyProofRequest { first_tree_size, second_tree_size } = r;
    KernelRequest::Query(Query::GetConsistencyProof { first_tree_size, second_tree_size })
}

pub fn get_revocation_feed() -> KernelRequest {
    KernelRequest::Query(Query::GetRevocationFeed)
}

pub fn fetch_capsule(r: v2::FetchCapsuleRequest) -> KernelRequest {
    KernelRequest::Query(Query::FetchCapsule { claim_id: r.claim_id })
}

pub fn revoke_claim(r: &v2::RevokeClaimRequest, request_id: Option<&str>) -> Result<KernelRequest, KernelError> {
    let command = Command::RevokeClaim { claim_id: r.claim_id.clone(), reason: r.reason.clone() };
    idempotent(Method::RevokeClaim, request_id, r, command)
}

pub fn grant_credit(r: v2::GrantCreditRequest) -> KernelRequest {
    let v2::GrantCreditRequest { principal_id, amount, reason } = r;
    KernelRequest::Command(Command::GrantCredit { principal_id, amount, reason })
}

pub fn set_credit_limit(r: v2::SetCreditLimitRequest) -> KernelRequest {
    let v2::SetCreditLimitRequest { principal_id, limit } = r;
    KernelRequest::Command(Command::SetCreditLimit { principal_id, limit })
}

pub fn set_holdout_pool_budgets(r: v2::SetHoldoutPoolBudgetsRequest) -> KernelRequest {
    KernelRequest::Command(Command::SetHoldoutPoolBudgets {
        holdout_id: r.holdout_id,
        scope: r.scope,
        k_bits_budget: r.new_k_bits_budget,
        access_credit_budget: r.new_access_credit_budget,
    })
}

pub fn set_holdout_pool_budgets_reply(
    answer: KernelResponse,
) -> Result<v2::SetHoldoutPoolBudgetsResponse, KernelError> {
    mapping::pool_budgets(answer).map(|budgets| v2::SetHoldoutPoolBudgetsResponse { budgets: Some(budgets) })
}

pub fn get_holdout_pool_budgets(r: v2::GetHoldoutPoolBudgetsRequest) -> KernelRequest {
    let v2::GetHoldoutPoolBudgetsRequest { holdout_id, scope } = r;
    KernelRequest::Query(Query::GetHoldoutPoolBudgets { holdout_id, scope })
}

pub fn get_holdout_pool_budgets_reply(
    answer: KernelResponse,
) -> Result<v2::GetHoldoutPoolBudgetsResponse, KernelError> {
    mapping::pool_budgets(answer).map(|budgets| v2::GetHoldoutPoolBudgetsResponse { budgets: Some(budgets) })
}

/// Encodes a kernel answer as the method's response message.
pub type EncodeReply = Box<dyn FnOnce(KernelResponse) -> Result<Vec<u8>, KernelError> + Send>;

/// What a decoded unary call needs: an answer known without the kernel, or a kernel request and
/// the encoder for its answer.
pub enum Plan {
    Local(Vec<u8>),
    Kernel { request: KernelRequest, encode: EncodeReply },
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(bytes) => write!(f, "Local({} bytes)", bytes.len()),
            Self::Kernel { request, .. } => f.debug_struct("Kernel").field("request", request).finish_non_exhaustive(),
        }
    }
}

fn decode<M: Message + Default>(body: &[u8]) -> Result<M, KernelError> {
    M::decode(body).map_err(|_| KernelError::invalid_argument("the request body is not a valid protobuf message"))
}

fn kernel<M: Message + 'static>(request: KernelRequest, reply: fn(KernelResponse) -> Result<M, KernelError>) -> Plan {
    Plan::Kernel { request, encode: Box::new(move |answer| reply(answer).map(|message| message.encode_to_vec())) }
}

/// Decodes a protobuf request body of `method` and plans its call (for transports that carry
/// message bytes: Connect, and anything else that is not tonic).
pub fn plan(
    method: Method,
    body: &[u8],
    request_id: Option<&str>,
    server_info: &v2::GetServerInfoResponse,
    availability: Availability,
) -> Result<Plan, KernelError> {
    Ok(match method {
        Method::Health => {
            decode::<v2::HealthRequest>(body)?;
            Plan::Local(health(availability).encode_to_vec())
        }
        Method::GetServerInfo => {
            decode::<v2::GetServerInfoRequest>(body)?;
            Plan::Local(server_info.encode_to_vec())
        }
        Method::CreateClaim => kernel(create_claim(decode(body)?), create_claim_reply),
        Method::CreateClaimV2 => kernel(create_claim_v2(&decode(body)?, request_id)?, create_claim_v2_reply),
        Method::CommitArtifacts => kernel(commit_artifacts(decode(body)?), commit_artifacts_reply),
        Method::Freeze => kernel(freeze_gates(decode::<v2::FreezeRequest>(body)?.claim_id), freeze_reply),
        Method::FreezeGates => {
            kernel(freeze_gates(decode::<v2::FreezeGatesRequest>(body)?.claim_id), freeze_gates_reply)
        }
        Method::Seal => kernel(seal_claim(decode::<v2::SealRequest>(body)?.claim_id), seal_reply),
        Method::SealClaim => kernel(seal_claim(decode::<v2::SealClaimRequest>(body)?.claim_id), seal_claim_reply),
        Method::ExecuteClaim => kernel(execute_claim(decode(body)?), execute_claim_reply),
        Method::ExecuteClaimV2 => kernel(execute_claim_v2(&decode(body)?, request_id)?, mapping::executed),
        Method::GetCapsule => kernel(get_capsule(decode(body)?), mapping::capsule),
        Method::GetPublicKey => kernel(get_public_key(decode(body)?), mapping::public_key),
        Method::GetSignedTreeHead => {
            decode::<v2::GetSignedTreeHeadRequest>(body)?;
            kernel(get_signed_tree_head(), mapping::tree_head)
        }
        Method::GetInclusionProof => kernel(get_inclusion_proof(decode(body)?), mapping::inclusion_proof),
        Method::GetConsistencyProof => kernel(get_consistency_proof(decode(body)?), mapping::consistency_proof),
        Method::GetRevocationFeed => {
            decode::<v2::GetRevocationFeedRequest>(body)?;
            kernel(get_revocation_feed(), mapping::revocation_feed)
        }
        Method::FetchCapsule => kernel(fetch_capsule(decode(body)?), mapping::fetched_capsule),
        Method::RevokeClaim => kernel(revoke_claim(&decode(body)?, request_id)?, mapping::revoked),
        Method::GrantCredit => kernel(grant_credit(decode(body)?), mapping::credit_balance),
        Method::SetCreditLimit => kernel(set_credit_limit(decode(body)?), mapping::credit_limit),
        Method::SetHoldoutPoolBudgets => {
            kernel(set_holdout_pool_budgets(decode(body)?), set_holdout_pool_budgets_reply)
        }
        Method::GetHoldoutPoolBudgets => {
            kernel(get_holdout_pool_budgets(decode(body)?), get_holdout_pool_budgets_reply)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use evidenceos_core::ErrorCode;

    #[test]
    fn paths_resolve_per_package_and_v1_lacks_the_pool_rpcs() {
        assert_eq!(Method::from_path("/evidenceos.v2.EvidenceOS/Health"), Some(("evidenceos.v2", Method::Health)));
        assert_eq!(Method::from_path("/evidenceos.v1.EvidenceOS/Seal"), Some(("evidenceos.v1", Method::Seal)));
        assert!(Method::from_path("/evidenceos.v2.EvidenceOS/GetHoldoutPoolBudgets").is_some());
        assert_eq!(Method::from_path("/evidenceos.v1.EvidenceOS/GetHoldoutPoolBudgets"), None);
        assert_eq!(Method::from_path("/evidenceos.v2.EvidenceOS/WatchRevocations"), None, "streaming");
        assert_eq!(Method::from_path("/evidenceos.v3.EvidenceOS/Health"), None);
        assert_eq!(Method::from_path("evidenceos.v2.EvidenceOS/Health"), None);
        for method in Method::ALL {
            assert_eq!(Method::from_path(&format!("/evidenceos.v2.EvidenceOS/{}", method.name())).unwrap().1, method);
        }
    }

    #[test]
    fn idempotent_methods_need_a_request_id_and_bind_the_message() {
        let info = v2::GetServerInfoResponse::default();
        let body = v2::ExecuteClaimV2Request { claim_id: vec![1; 32] }.encode_to_vec();
        let missing = plan(Method::ExecuteClaimV2, &body, None, &info, Availability::Serving).unwrap_err();
        assert_eq!(missing.code, ErrorCode::InvalidArgument);
        let Plan::Kernel { request: KernelRequest::IdempotentCommand { key, .. }, .. } =
            plan(Method::ExecuteClaimV2, &body, Some("r1"), &info, Availability::Serving).unwrap()
        else {
            panic!("an idempotent kernel command expected")
        };
        assert_eq!((key.method.as_str(), key.request_id.as_str()), ("ExecuteClaimV2", "r1"));
        assert_eq!(key.body_hash, evidenceos_core::hash::sha256(&body).to_vec());
    }

    #[test]
    fn undecodable_bodies_are_invalid_arguments_and_local_answers_skip_the_kernel() {
        let info = v2::GetServerInfoResponse { protocol_semver: "2.1.0".into(), ..Default::default() };
        let err = plan(Method::GetCapsule, &[0xff, 0xff, 0xff], None, &info, Availability::Serving).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        let Plan::Local(bytes) = plan(Method::GetServerInfo, &[], None, &info, Availability::Serving).unwrap() else {
            panic!("local")
        };
        assert_eq!(v2::GetServerInfoResponse::decode(bytes.as_slice()).unwrap(), info);
    }

    #[test]
    fn health_reports_not_serving_when_the_daemon_takes_no_work() {
        let info = v2::GetServerInfoResponse::default();
        for (availability, expected) in [(Availability::Serving, "SERVING"), (Availability::NotServing, "NOT_SERVING")]
        {
            let Plan::Local(bytes) = plan(Method::Health, &[], None, &info, availability).unwrap() else {
                panic!("local")
            };
            assert_eq!(v2::HealthResponse::decode(bytes.as_slice()).unwrap().status, expected);
        }
    }
}
