//! The RPC table ([`rpc_table`]) and one mapping per unary RPC, shared by every transport: proto
//! request → kernel request, kernel answer → proto response. The tonic handlers (gRPC) and the
//! Connect handler (HTTP/1.1) are generated from the table, so a method, a rule about a field or
//! an idempotency key lives in one place and the transports cannot diverge.

use evidenceos_core::request::{ArtifactInput, CreateClaimV2, IdempotencyKey};
use evidenceos_core::{Command, KernelError, Query, Request as KernelRequest, Response as KernelResponse};
use prost::Message;

use crate::mapping;
use crate::v2;

/// THE table of unary RPCs (SPEC §1), one row each, the single source of the [`Method`] enum, path
/// resolution, idempotency, the Connect dispatch ([`plan`]), both tonic services and the per-RPC
/// metric labels. A row is `Variant tonic_method(Request) -> Response = how;` where the variant is
/// the proto method name, the types are in [`v2`], and `how` is an [`Answer`]: `local` (answered
/// without the kernel), `kernel` (a kernel request) or `keyed` (a command under an idempotency key,
/// SPEC §2.5). Rows under `v2_only` do not exist in `evidenceos.v1`. WatchRevocations streams and
/// is served by hand on each transport. A test checks the rows against the proto descriptors.
macro_rules! rpc_table {
    ($then:ident) => {
        $then! {
            v1_and_v2 {
                Health health(HealthRequest) -> HealthResponse = local(|facts| health(facts.availability));
                GetServerInfo get_server_info(GetServerInfoRequest) -> GetServerInfoResponse =
                    local(|facts| facts.server_info.clone());
                CreateClaim create_claim(CreateClaimRequest) -> CreateClaimResponse =
                    kernel(create_claim, create_claim_reply);
                CreateClaimV2 create_claim_v2(CreateClaimV2Request) -> CreateClaimV2Response =
                    keyed(create_claim_v2, create_claim_v2_reply);
                CommitArtifacts commit_artifacts(CommitArtifactsRequest) -> CommitArtifactsResponse =
                    kernel(commit_artifacts, commit_artifacts_reply);
                Freeze freeze(FreezeRequest) -> FreezeResponse = kernel(|r| freeze_gates(r.claim_id), freeze_reply);
                FreezeGates freeze_gates(FreezeGatesRequest) -> FreezeGatesResponse =
                    kernel(|r| freeze_gates(r.claim_id), freeze_gates_reply);
                Seal seal(SealRequest) -> SealResponse = kernel(|r| seal_claim(r.claim_id), seal_reply);
                SealClaim seal_claim(SealClaimRequest) -> SealClaimResponse =
                    kernel(|r| seal_claim(r.claim_id), seal_claim_reply);
                ExecuteClaim execute_claim(ExecuteClaimRequest) -> ExecuteClaimResponse =
                    kernel(execute_claim, execute_claim_reply);
                ExecuteClaimV2 execute_claim_v2(ExecuteClaimV2Request) -> ExecuteClaimV2Response =
                    keyed(execute_claim_v2, mapping::executed);
                GetCapsule get_capsule(GetCapsuleRequest) -> GetCapsuleResponse =
                    kernel(get_capsule, mapping::capsule);
                GetPublicKey get_public_key(GetPublicKeyRequest) -> GetPublicKeyResponse =
                    kernel(get_public_key, mapping::public_key);
                GetSignedTreeHead get_signed_tree_head(GetSignedTreeHeadRequest) -> GetSignedTreeHeadResponse =
                    kernel(|_| get_signed_tree_head(), mapping::tree_head);
                GetInclusionProof get_inclusion_proof(GetInclusionProofRequest) -> GetInclusionProofResponse =
                    kernel(get_inclusion_proof, mapping::inclusion_proof);
                GetConsistencyProof get_consistency_proof(GetConsistencyProofRequest) -> GetConsistencyProofResponse =
                    kernel(get_consistency_proof, mapping::consistency_proof);
                GetRevocationFeed get_revocation_feed(GetRevocationFeedRequest) -> GetRevocationFeedResponse =
                    kernel(|_| get_revocation_feed(), mapping::revocation_feed);
                FetchCapsule fetch_capsule(FetchCapsuleRequest) -> FetchCapsuleResponse =
                    kernel(fetch_capsule, mapping::fetched_capsule);
                RevokeClaim revoke_claim(RevokeClaimRequest) -> RevokeClaimResponse =
                    keyed(revoke_claim, mapping::revoked);
                GrantCredit grant_credit(GrantCreditRequest) -> GrantCreditResponse =
                    kernel(grant_credit, mapping::credit_balance);
                SetCreditLimit set_credit_limit(SetCreditLimitRequest) -> SetCreditLimitResponse =
                    kernel(set_credit_limit, mapping::credit_limit);
            }
            v2_only {
                SetHoldoutPoolBudgets set_holdout_pool_budgets(SetHoldoutPoolBudgetsRequest)
                    -> SetHoldoutPoolBudgetsResponse =
                    kernel(set_holdout_pool_budgets, set_holdout_pool_budgets_reply);
                GetHoldoutPoolBudgets get_holdout_pool_budgets(GetHoldoutPoolBudgetsRequest)
                    -> GetHoldoutPoolBudgetsResponse =
                    kernel(get_holdout_pool_budgets, get_holdout_pool_budgets_reply);
            }
        }
    };
}
/// For the tonic services in [`crate::service`].
#[cfg(feature = "server")]
pub(crate) use rpc_table;

/// How one method is answered; `Q` and `R` are its request and response messages.
#[derive(Debug)]
pub enum Answer<Q, R> {
    /// Known without the kernel (after the caller is authenticated).
    Local(fn(&LocalFacts<'_>) -> R),
    /// A kernel request, and the mapping of the kernel's answer.
    Kernel { build: fn(Q) -> KernelRequest, reply: fn(KernelResponse) -> Result<R, KernelError> },
    /// A command under an idempotency key (SPEC §2.5), and the mapping of the kernel's answer.
    Keyed { build: fn(Q) -> Command, reply: fn(KernelResponse) -> Result<R, KernelError> },
}

const fn local<Q, R>(answer: fn(&LocalFacts<'_>) -> R) -> Answer<Q, R> {
    Answer::Local(answer)
}

const fn kernel<Q, R>(
    build: fn(Q) -> KernelRequest,
    reply: fn(KernelResponse) -> Result<R, KernelError>,
) -> Answer<Q, R> {
    Answer::Kernel { build, reply }
}

const fn keyed<Q, R>(build: fn(Q) -> Command, reply: fn(KernelResponse) -> Result<R, KernelError>) -> Answer<Q, R> {
    Answer::Keyed { build, reply }
}

/// What a local answer may use: facts of this daemon, never of the kernel's state.
#[derive(Debug, Clone, Copy)]
pub struct LocalFacts<'a> {
    pub server_info: &'a v2::GetServerInfoResponse,
    pub availability: Availability,
}

/// A decoded call, planned: its answer, or the kernel request and how to map the kernel's answer.
#[derive(Debug)]
pub enum Prepared<R> {
    Local(R),
    Kernel { request: KernelRequest, reply: fn(KernelResponse) -> Result<R, KernelError> },
}

impl<Q: Message, R> Answer<Q, R> {
    /// Plans a call of `method` (whose row this is) with its decoded `message`.
    pub fn prepare(
        &self,
        method: Method,
        message: Q,
        request_id: Option<&str>,
        facts: &LocalFacts<'_>,
    ) -> Result<Prepared<R>, KernelError> {
        Ok(match *self {
            Self::Local(answer) => Prepared::Local(answer(facts)),
            Self::Kernel { build, reply } => Prepared::Kernel { request: build(message), reply },
            Self::Keyed { build, reply } => {
                Prepared::Kernel { request: idempotent(method, request_id, message, build)?, reply }
            }
        })
    }

    const fn is_keyed(&self) -> bool {
        matches!(self, Self::Keyed { .. })
    }
}

/// Generates, from [`rpc_table`], the [`Method`] enum and its facts, each row's [`Answer`] (in
/// [`answer`], named by variant) and the Connect dispatch [`plan`].
macro_rules! define_methods {
    (
        v1_and_v2 { $($both:ident $both_fn:ident($both_req:ident) -> $both_resp:ident = $both_how:expr;)* }
        v2_only { $($only:ident $only_fn:ident($only_req:ident) -> $only_resp:ident = $only_how:expr;)* }
    ) => {
        /// The unary methods of `evidenceos.v2.EvidenceOS` (SPEC §1), in table order.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Method {
            $($both,)*
            $($only,)*
        }

        impl Method {
            pub const ALL: [Method; [$(stringify!($both),)* $(stringify!($only),)*].len()] =
                [$(Self::$both,)* $(Self::$only,)*];

            /// The method name as it appears in the proto service and the request path.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$both => stringify!($both),)*
                    $(Self::$only => stringify!($only),)*
                }
            }

            /// The method of a name in the proto service, if it is a unary method of the table.
            pub fn from_name(name: &str) -> Option<Method> {
                match name {
                    $(stringify!($both) => Some(Self::$both),)*
                    $(stringify!($only) => Some(Self::$only),)*
                    _ => None,
                }
            }

            /// Whether `evidenceos.v1` has it (it lacks the holdout-pool RPCs).
            pub const fn in_v1(self) -> bool {
                match self {
                    $(Self::$both => true,)*
                    $(Self::$only => false,)*
                }
            }

            /// `/evidenceos.v2.EvidenceOS/<name>`, and in v1 `/evidenceos.v1.EvidenceOS/<name>`.
            pub const fn paths(self) -> (&'static str, Option<&'static str>) {
                match self {
                    $(Self::$both => (
                        concat!("/evidenceos.v2.EvidenceOS/", stringify!($both)),
                        Some(concat!("/evidenceos.v1.EvidenceOS/", stringify!($both))),
                    ),)*
                    $(Self::$only => (concat!("/evidenceos.v2.EvidenceOS/", stringify!($only)), None),)*
                }
            }

            /// The simple names of the row's request and response messages.
            #[cfg(test)]
            fn message_names(self) -> (&'static str, &'static str) {
                match self {
                    $(Self::$both => (stringify!($both_req), stringify!($both_resp)),)*
                    $(Self::$only => (stringify!($only_req), stringify!($only_resp)),)*
                }
            }

            /// SPEC §2.5: the methods whose repeats the idempotency record answers (same request id and
            /// bytes → the recorded reply), so a repeated request id there is a retry, not a replay.
            pub const fn is_idempotent(self) -> bool {
                match self {
                    $(Self::$both => answer::$both.is_keyed(),)*
                    $(Self::$only => answer::$only.is_keyed(),)*
                }
            }
        }

        /// Each row's [`Answer`], named by its variant.
        #[allow(non_upper_case_globals)]
        pub mod answer {
            use super::*;
            $(pub const $both: Answer<v2::$both_req, v2::$both_resp> = $both_how;)*
            $(pub const $only: Answer<v2::$only_req, v2::$only_resp> = $only_how;)*
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
            let facts = LocalFacts { server_info, availability };
            match method {
                $(Method::$both => plan_with(method, &answer::$both, body, request_id, &facts),)*
                $(Method::$only => plan_with(method, &answer::$only, body, request_id, &facts),)*
            }
        }
    };
}

rpc_table!(define_methods);

impl Method {
    /// Resolves `/<package>.EvidenceOS/<Method>`; the legacy v1 package lacks the pool RPCs.
    pub fn from_path(path: &str) -> Option<(&'static str, Method)> {
        let (package, name) = path.strip_prefix('/')?.split_once(".EvidenceOS/")?;
        let method = Self::from_name(name)?;
        match package {
            "evidenceos.v2" => Some(("evidenceos.v2", method)),
            "evidenceos.v1" if method.in_v1() => Some(("evidenceos.v1", method)),
            _ => None,
        }
    }

    /// The position of the method in [`Method::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// SPEC §2.5: the `keyed` methods need `x-request-id`; the key is (principal, method, id) and the
/// hash of the re-encoded message binds it to this exact request (re-encoded, so gRPC and JSON
/// bodies of the same message share one key).
fn idempotent<M: Message>(
    method: Method,
    request_id: Option<&str>,
    message: M,
    build: fn(M) -> Command,
) -> Result<KernelRequest, KernelError> {
    debug_assert!(method.is_idempotent(), "{method:?} has no idempotency record");
    let name = method.name();
    let request_id =
        request_id.ok_or_else(|| KernelError::invalid_argument(format!("{name} requires an x-request-id header")))?;
    let body_hash = evidenceos_core::hash::sha256(&message.encode_to_vec()).to_vec();
    let key = IdempotencyKey { method: name.to_string(), request_id: request_id.to_string(), body_hash };
    Ok(KernelRequest::IdempotentCommand { key, command: build(message) })
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

fn create_claim(r: v2::CreateClaimRequest) -> KernelRequest {
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

fn create_claim_reply(answer: KernelResponse) -> Result<v2::CreateClaimResponse, KernelError> {
    mapping::claim_created(answer).map(|(claim_id, _, state)| v2::CreateClaimResponse { claim_id, state })
}

fn create_claim_v2(r: v2::CreateClaimV2Request) -> Command {
    let metadata = r.metadata.unwrap_or_default();
    let signals = r.signals.unwrap_or_default();
    Command::CreateClaimV2(Box::new(CreateClaimV2 {
        claim_name: r.claim_name,
        lane: metadata.lane,
        alpha_micros: metadata.alpha_micros,
        epoch_config_ref: metadata.epoch_config_ref,
        output_schema_id: metadata.output_schema_id,
        semantic_hash: signals.semantic_hash,
        phys_hir_signature_hash: signals.phys_hir_signature_hash,
        dependency_merkle_root: signals.dependency_merkle_root,
        holdout_ref: r.holdout_ref,
        epoch_size: r.epoch_size,
        oracle_num_symbols: r.oracle_num_symbols,
        access_credit: r.access_credit,
        oracle_id: r.oracle_id,
        nullspec_id: r.nullspec_id,
        dp_epsilon_budget: r.dp_epsilon_budget,
        dp_delta_budget: r.dp_delta_budget,
    }))
}

/// The wire request for a kernel `CreateClaimV2`: what clients (evidenceos-bench, tests) send.
/// The inverse of the mapping above, so a client builds its request from
/// [`CreateClaimV2::fast_legacy`] and the field list lives here once.
pub fn create_claim_v2_request(claim: &CreateClaimV2) -> v2::CreateClaimV2Request {
    let has_signals = !(claim.semantic_hash.is_empty()
        && claim.phys_hir_signature_hash.is_empty()
        && claim.dependency_merkle_root.is_empty());
    v2::CreateClaimV2Request {
        claim_name: claim.claim_name.clone(),
        metadata: Some(v2::ClaimMetadataV2 {
            lane: claim.lane.clone(),
            alpha_micros: claim.alpha_micros,
            epoch_config_ref: claim.epoch_config_ref.clone(),
            output_schema_id: claim.output_schema_id.clone(),
        }),
        signals: has_signals.then(|| v2::TopicSignalsV2 {
            semantic_hash: claim.semantic_hash.clone(),
            phys_hir_signature_hash: claim.phys_hir_signature_hash.clone(),
            dependency_merkle_root: claim.dependency_merkle_root.clone(),
        }),
        holdout_ref: claim.holdout_ref.clone(),
        epoch_size: claim.epoch_size,
        oracle_num_symbols: claim.oracle_num_symbols,
        access_credit: claim.access_credit,
        oracle_id: claim.oracle_id.clone(),
        nullspec_id: claim.nullspec_id.clone(),
        dp_epsilon_budget: claim.dp_epsilon_budget,
        dp_delta_budget: claim.dp_delta_budget,
    }
}

fn create_claim_v2_reply(answer: KernelResponse) -> Result<v2::CreateClaimV2Response, KernelError> {
    mapping::claim_created(answer).map(|(claim_id, topic_id, state)| v2::CreateClaimV2Response {
        claim_id,
        topic_id,
        state,
    })
}

fn commit_artifacts(r: v2::CommitArtifactsRequest) -> KernelRequest {
    let artifacts = r.artifacts.into_iter().map(|a| ArtifactInput { kind: a.kind, hash: a.artifact_hash }).collect();
    KernelRequest::Command(Command::CommitArtifacts { claim_id: r.claim_id, artifacts, wasm_module: r.wasm_module })
}

fn commit_artifacts_reply(answer: KernelResponse) -> Result<v2::CommitArtifactsResponse, KernelError> {
    mapping::claim_state(answer).map(|state| v2::CommitArtifactsResponse { state })
}

/// Freeze is an alias of FreezeGates (SPEC §1).
fn freeze_gates(claim_id: Vec<u8>) -> KernelRequest {
    KernelRequest::Command(Command::FreezeGates { claim_id })
}

fn freeze_reply(answer: KernelResponse) -> Result<v2::FreezeResponse, KernelError> {
    mapping::claim_state(answer).map(|state| v2::FreezeResponse { state })
}

fn freeze_gates_reply(answer: KernelResponse) -> Result<v2::FreezeGatesResponse, KernelError> {
    mapping::claim_state(answer).map(|state| v2::FreezeGatesResponse { state })
}

/// Seal is an alias of SealClaim (SPEC §1).
fn seal_claim(claim_id: Vec<u8>) -> KernelRequest {
    KernelRequest::Command(Command::SealClaim { claim_id })
}

fn seal_reply(answer: KernelResponse) -> Result<v2::SealResponse, KernelError> {
    mapping::claim_state(answer).map(|state| v2::SealResponse { state })
}

fn seal_claim_reply(answer: KernelResponse) -> Result<v2::SealClaimResponse, KernelError> {
    mapping::claim_state(answer).map(|state| v2::SealClaimResponse { state })
}

fn execute_claim(r: v2::ExecuteClaimRequest) -> KernelRequest {
    KernelRequest::Command(Command::ExecuteClaim {
        claim_id: r.claim_id,
        decision: u32::try_from(r.decision).unwrap_or(0),
        reason_codes: r.reason_codes,
        canonical_output: r.canonical_output,
    })
}

fn execute_claim_reply(answer: KernelResponse) -> Result<v2::ExecuteClaimResponse, KernelError> {
    mapping::executed(answer).map(|e| v2::ExecuteClaimResponse {
        state: e.state,
        capsule_hash: e.capsule_hash,
        etl_index: e.etl_index,
    })
}

fn execute_claim_v2(r: v2::ExecuteClaimV2Request) -> Command {
    Command::ExecuteClaimV2 { claim_id: r.claim_id }
}

fn get_capsule(r: v2::GetCapsuleRequest) -> KernelRequest {
    KernelRequest::Query(Query::GetCapsule { claim_id: r.claim_id })
}

fn get_public_key(r: v2::GetPublicKeyRequest) -> KernelRequest {
    KernelRequest::Query(Query::GetPublicKey { key_id: r.key_id })
}

fn get_signed_tree_head() -> KernelRequest {
    KernelRequest::Query(Query::GetSignedTreeHead)
}

fn get_inclusion_proof(r: v2::GetInclusionProofRequest) -> KernelRequest {
    KernelRequest::Query(Query::GetInclusionProof { leaf_index: r.leaf_index })
}

fn get_consistency_proof(r: v2::GetConsistencyProofRequest) -> KernelRequest {
    let v2::GetConsistencyProofRequest { first_tree_size, second_tree_size } = r;
    KernelRequest::Query(Query::GetConsistencyProof { first_tree_size, second_tree_size })
}

fn get_revocation_feed() -> KernelRequest {
    KernelRequest::Query(Query::GetRevocationFeed)
}

fn fetch_capsule(r: v2::FetchCapsuleRequest) -> KernelRequest {
    KernelRequest::Query(Query::FetchCapsule { claim_id: r.claim_id })
}

fn revoke_claim(r: v2::RevokeClaimRequest) -> Command {
    Command::RevokeClaim { claim_id: r.claim_id, reason: r.reason }
}

fn grant_credit(r: v2::GrantCreditRequest) -> KernelRequest {
    let v2::GrantCreditRequest { principal_id, amount, reason } = r;
    KernelRequest::Command(Command::GrantCredit { principal_id, amount, reason })
}

fn set_credit_limit(r: v2::SetCreditLimitRequest) -> KernelRequest {
    let v2::SetCreditLimitRequest { principal_id, limit } = r;
    KernelRequest::Command(Command::SetCreditLimit { principal_id, limit })
}

fn set_holdout_pool_budgets(r: v2::SetHoldoutPoolBudgetsRequest) -> KernelRequest {
    KernelRequest::Command(Command::SetHoldoutPoolBudgets {
        holdout_id: r.holdout_id,
        scope: r.scope,
        k_bits_budget: r.new_k_bits_budget,
        access_credit_budget: r.new_access_credit_budget,
    })
}

fn set_holdout_pool_budgets_reply(answer: KernelResponse) -> Result<v2::SetHoldoutPoolBudgetsResponse, KernelError> {
    mapping::pool_budgets(answer).map(|budgets| v2::SetHoldoutPoolBudgetsResponse { budgets: Some(budgets) })
}

fn get_holdout_pool_budgets(r: v2::GetHoldoutPoolBudgetsRequest) -> KernelRequest {
    let v2::GetHoldoutPoolBudgetsRequest { holdout_id, scope } = r;
    KernelRequest::Query(Query::GetHoldoutPoolBudgets { holdout_id, scope })
}

fn get_holdout_pool_budgets_reply(answer: KernelResponse) -> Result<v2::GetHoldoutPoolBudgetsResponse, KernelError> {
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

/// Decodes `body` as the request of `method`, whose row `answer` is, and plans the call.
fn plan_with<Q: Message + Default, R: Message + 'static>(
    method: Method,
    answer: &Answer<Q, R>,
    body: &[u8],
    request_id: Option<&str>,
    facts: &LocalFacts<'_>,
) -> Result<Plan, KernelError> {
    Ok(match answer.prepare(method, decode::<Q>(body)?, request_id, facts)? {
        Prepared::Local(message) => Plan::Local(message.encode_to_vec()),
        Prepared::Kernel { request, reply } => Plan::Kernel {
            request,
            encode: Box::new(move |answer| reply(answer).map(|message| message.encode_to_vec())),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use evidenceos_core::ErrorCode;

    #[test]
    fn a_client_request_maps_back_to_the_same_kernel_claim() {
        let plain = CreateClaimV2::fast_legacy("c", "demo");
        let signed = CreateClaimV2 {
            semantic_hash: vec![1; 32],
            phys_hir_signature_hash: vec![3; 32],
            dependency_merkle_root: vec![2; 32],
            epoch_config_ref: "epoch/v1".into(),
            oracle_id: "oracle-a".into(),
            nullspec_id: "ns-1".into(),
            dp_epsilon_budget: Some(0.5),
            dp_delta_budget: Some(1e-6),
            ..CreateClaimV2::fast_legacy("d", "demo")
        };
        for claim in [plain, signed] {
            let Command::CreateClaimV2(back) = create_claim_v2(create_claim_v2_request(&claim)) else {
                panic!("CreateClaimV2 maps to its command");
            };
            assert_eq!(*back, claim);
        }
        assert_eq!(create_claim_v2_request(&CreateClaimV2::fast_legacy("c", "demo")).signals, None);
    }

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

    /// A unary RPC added to the proto without a row (or a row without an RPC, or with other
    /// message types) fails here; v1 lacks exactly the pool RPCs.
    #[test]
    fn the_table_has_each_unary_method_of_both_services_exactly_once() {
        let set = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).unwrap();
        let simple = |type_name: &str| type_name.rsplit('.').next().unwrap().to_string();
        for package in ["evidenceos.v2", "evidenceos.v1"] {
            let file = set.file.iter().find(|f| f.package() == package).expect(package);
            let service = file.service.iter().find(|s| s.name() == "EvidenceOS").expect("service EvidenceOS");
            let (streaming, unary): (Vec<_>, Vec<_>) =
                service.method.iter().partition(|m| m.server_streaming() || m.client_streaming());
            let streaming: Vec<&str> = streaming.iter().map(|m| m.name()).collect();
            assert_eq!(streaming, ["WatchRevocations"], "{package}: the one hand-written streaming method");
            let mut in_proto: Vec<(String, String, String)> =
                unary.iter().map(|m| (m.name().to_string(), simple(m.input_type()), simple(m.output_type()))).collect();
            let mut in_table: Vec<(String, String, String)> = Method::ALL
                .into_iter()
                .filter(|m| package == "evidenceos.v2" || m.in_v1())
                .map(|m| (m.name().to_string(), m.message_names().0.to_string(), m.message_names().1.to_string()))
                .collect();
            in_proto.sort();
            in_table.sort();
            assert_eq!(in_table, in_proto, "{package}: the table's rows against the proto service");
            for (name, _, _) in &in_proto {
                let path = format!("/{package}.EvidenceOS/{name}");
                assert_eq!(Method::from_path(&path).map(|(p, m)| (p, m.name())), Some((package, name.as_str())));
            }
        }
        let v2_only: Vec<Method> = Method::ALL.into_iter().filter(|m| !m.in_v1()).collect();
        assert_eq!(v2_only, [Method::SetHoldoutPoolBudgets, Method::GetHoldoutPoolBudgets]);
        for (index, method) in Method::ALL.into_iter().enumerate() {
            assert_eq!(method.index(), index);
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
