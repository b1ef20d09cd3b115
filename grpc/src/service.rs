//! The `EvidenceOS` service for both packages. Every handler maps its message to a kernel
//! request, awaits the kernel task, and maps the answer back; v1 delegates to v2.

use std::sync::Arc;

use evidenceos_core::request::{ArtifactInput, CreateClaimV2, IdempotencyKey};
use evidenceos_core::{
    Command, KernelError, Notification, Principal, Query, Request as KernelRequest, Response as KernelResponse,
};
use evidenceos_io_tokio::KernelHandle;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use crate::auth::{Authenticator, RequestPath};
use crate::mapping;
use crate::v2;
use crate::v2::evidence_os_server::EvidenceOs as V2;

pub fn status(error: KernelError) -> Status {
    Status::new(Code::from(mapping::grpc_code(error.code)), error.message)
}

/// Messages a WatchRevocations stream may hold before its subscriber reads them.
const WATCH_BUFFER: usize = 64;

/// Static facts for GetServerInfo, fixed at start-up.
#[derive(Debug, Clone, Default)]
pub struct ServerFacts {
    pub daemon_version: String,
    pub build_git_commit: String,
    pub build_time_utc: String,
    pub feature_flags: v2::FeatureFlags,
}

#[derive(Debug, Clone)]
pub struct EvidenceService {
    kernel: KernelHandle,
    info: Arc<v2::GetServerInfoResponse>,
    auth: Arc<Authenticator>,
}

impl EvidenceService {
    pub fn new(kernel: KernelHandle, facts: ServerFacts, auth: Authenticator) -> Self {
        let proto_hash = hex::encode(evidenceos_core::hash::sha256(crate::FILE_DESCRIPTOR_SET));
        let info = v2::GetServerInfoResponse {
            protocol_semver: crate::PROTOCOL_SEMVER.to_string(),
            proto_hash,
            build_git_commit: facts.build_git_commit,
            build_time_utc: facts.build_time_utc,
            daemon_version: facts.daemon_version,
            feature_flags: Some(facts.feature_flags),
        };
        Self { kernel, info: Arc::new(info), auth: Arc::new(auth) }
    }

    fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let chain: Option<Vec<Vec<u8>>> =
            request.peer_certs().map(|certs| certs.iter().map(|cert| cert.as_ref().to_vec()).collect());
        let path = request.extensions().get::<RequestPath>().map_or("", |p| p.0.as_str());
        let now_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let principal = self.auth.authenticate(request.metadata(), path, chain.as_deref(), now_unix)?;
        if let Some(slot) = request.extensions().get::<crate::access_log::PrincipalSlot>() {
            slot.set(&principal.id);
        }
        Ok(principal)
    }

    /// SPEC §2.5: these methods require `x-request-id`; the key is (principal, method, id) and the
    /// body hash binds it to this exact request.
    fn idempotent<T: prost::Message>(
        &self,
        request: &Request<T>,
        method: &str,
        command: Command,
    ) -> Result<KernelRequest, Status> {
        // Who is asking comes first: an unauthenticated caller learns nothing about the rules.
        self.principal(request)?;
        let request_id = request
            .metadata()
            .get("x-request-id")
            .ok_or_else(|| Status::invalid_argument(format!("{method} requires an x-request-id header")))?
            .to_str()
            .map_err(|_| Status::invalid_argument("x-request-id must be printable ASCII"))?
            .to_string();
        let body_hash = evidenceos_core::hash::sha256(&request.get_ref().encode_to_vec()).to_vec();
        let key = IdempotencyKey { method: method.to_string(), request_id, body_hash };
        Ok(KernelRequest::IdempotentCommand { key, command })
    }

    async fn call<T>(&self, request: &Request<T>, kernel_request: KernelRequest) -> Result<KernelResponse, Status> {
        let principal = self.principal(request)?;
        self.kernel.call(principal, kernel_request).await.map_err(status)
    }
}

fn reply<T>(mapped: Result<T, KernelError>) -> Result<Response<T>, Status> {
    mapped.map(Response::new).map_err(status)
}

#[tonic::async_trait]
impl V2 for EvidenceService {
    async fn health(&self, request: Request<v2::HealthRequest>) -> Result<Response<v2::HealthResponse>, Status> {
        self.principal(&request)?;
        Ok(Response::new(v2::HealthResponse { status: "SERVING".to_string() }))
    }

    async fn get_server_info(
        &self,
        request: Request<v2::GetServerInfoRequest>,
    ) -> Result<Response<v2::GetServerInfoResponse>, Status> {
        self.principal(&request)?;
        Ok(Response::new((*self.info).clone()))
    }

    async fn create_claim(
        &self,
        request: Request<v2::CreateClaimRequest>,
    ) -> Result<Response<v2::CreateClaimResponse>, Status> {
        let r = request.get_ref().clone();
        let command = Command::CreateClaim {
            topic_id: r.topic_id,
            holdout_handle_id: r.holdout_handle_id,
            phys_hir_hash: r.phys_hir_hash,
            epoch_size: r.epoch_size,
            oracle_num_symbols: r.oracle_num_symbols,
            alpha: r.alpha,
            access_credit: r.access_credit,
        };
        let answer = self.call(&request, KernelRequest::Command(command)).await?;
        reply(mapping::claim_created(answer).map(|(claim_id, _, state)| v2::CreateClaimResponse { claim_id, state }))
    }

    async fn create_claim_v2(
        &self,
        request: Request<v2::CreateClaimV2Request>,
    ) -> Result<Response<v2::CreateClaimV2Response>, Status> {
        let r = request.get_ref().clone();
        let metadata = r.metadata.unwrap_or_default();
        let signals = r.signals.unwrap_or_default();
        let command = Command::CreateClaimV2(Box::new(CreateClaimV2 {
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
        }));
        let kernel_request = self.idempotent(&request, "CreateClaimV2", command)?;
        let answer = self.call(&request, kernel_request).await?;
        reply(mapping::claim_created(answer).map(|(claim_id, topic_id, state)| v2::CreateClaimV2Response {
            claim_id,
            topic_id,
            state,
        }))
    }

    async fn commit_artifacts(
        &self,
        request: Request<v2::CommitArtifactsRequest>,
    ) -> Result<Response<v2::CommitArtifactsResponse>, Status> {
        let r = request.get_ref().clone();
        let artifacts =
            r.artifacts.into_iter().map(|a| ArtifactInput { kind: a.kind, hash: a.artifact_hash }).collect();
        let command = Command::CommitArtifacts { claim_id: r.claim_id, artifacts, wasm_module: r.wasm_module };
        let answer = self.call(&request, KernelRequest::Command(command)).await?;
        reply(mapping::claim_state(answer).map(|state| v2::CommitArtifactsResponse { state }))
    }

    async fn freeze(&self, request: Request<v2::FreezeRequest>) -> Result<Response<v2::FreezeResponse>, Status> {
        let command = Command::FreezeGates { claim_id: request.get_ref().claim_id.clone() };
        let answer = self.call(&request, KernelRequest::Command(command)).await?;
        reply(mapping::claim_state(answer).map(|state| v2::FreezeResponse { state }))
    }

    async fn freeze_gates(
        &self,
        request: Request<v2::FreezeGatesRequest>,
    ) -> Result<Response<v2::FreezeGatesResponse>, Status> {
        let command = Command::FreezeGates { claim_id: request.get_ref().claim_id.clone() };
        let answer = self.call(&request, KernelRequest::Command(command)).await?;
        reply(mapping::claim_state(answer).map(|state| v2::FreezeGatesResponse { state }))
    }

    async fn seal(&self, request: Request<v2::SealRequest>) -> Result<Response<v2::SealResponse>, Status> {
        let command = Command::SealClaim { claim_id: request.get_ref().claim_id.clone() };
        let answer = self.call(&request, KernelRequest::Command(command)).await?;
        reply(mapping::claim_state(answer).map(|state| v2::SealResponse { state }))
    }

    async fn seal_claim(
        &self,
        request: Request<v2::SealClaimRequest>,
    ) -> Result<Response<v2::SealClaimResponse>, Status> {
        let command = Command::SealClaim { claim_id: request.get_ref().claim_id.clone() };
        let answer = self.call(&request, KernelRequest::Command(command)).await?;
        reply(mapping::claim_state(answer).map(|state| v2::SealClaimResponse { state }))
    }

    async fn execute_claim(
        &self,
        request: Request<v2::ExecuteClaimRequest>,
    ) -> Result<Response<v2::ExecuteClaimResponse>, Status> {
        let r = request.get_ref().clone();
        let command = Command::ExecuteClaim {
            claim_id: r.claim_id,
            decision: u32::try_from(r.decision).unwrap_or(0),
            reason_codes: r.reason_codes,
            canonical_output: r.canonical_output,
        };
        let answer = self.call(&request, KernelRequest::Command(command)).await?;
        reply(mapping::executed(answer).map(|e| v2::ExecuteClaimResponse {
            state: e.state,
            capsule_hash: e.capsule_hash,
            etl_index: e.etl_index,
        }))
    }

    async fn execute_claim_v2(
        &self,
        request: Request<v2::ExecuteClaimV2Request>,
    ) -> Result<Response<v2::ExecuteClaimV2Response>, Status> {
        let command = Command::ExecuteClaimV2 { claim_id: request.get_ref().claim_id.clone() };
        let kernel_request = self.idempotent(&request, "ExecuteClaimV2", command)?;
        let answer = self.call(&request, kernel_request).await?;
        reply(mapping::executed(answer))
    }

    async fn get_capsule(
        &self,
        request: Request<v2::GetCapsuleRequest>,
    ) -> Result<Response<v2::GetCapsuleResponse>, Status> {
        let query = Query::GetCapsule { claim_id: request.get_ref().claim_id.clone() };
        let answer = self.call(&request, KernelRequest::Query(query)).await?;
        reply(mapping::capsule(answer))
    }

    async fn get_public_key(
        &self,
        request: Request<v2::GetPublicKeyRequest>,
    ) -> Result<Response<v2::GetPublicKeyResponse>, Status> {
        let key_id = request.get_ref().key_id.clone();
        let answer = self.call(&request, KernelRequest::Query(Query::GetPublicKey { key_id })).await?;
        reply(mapping::public_key(answer))
    }

    async fn get_signed_tree_head(
        &self,
        request: Request<v2::GetSignedTreeHeadRequest>,
    ) -> Result<Response<v2::GetSignedTreeHeadResponse>, Status> {
        let answer = self.call(&request, KernelRequest::Query(Query::GetSignedTreeHead)).await?;
        reply(mapping::tree_head(answer))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<v2::GetInclusionProofRequest>,
    ) -> Result<Response<v2::GetInclusionProofResponse>, Status> {
        let leaf_index = request.get_ref().leaf_index;
        let answer = self.call(&request, KernelRequest::Query(Query::GetInclusionProof { leaf_index })).await?;
        reply(mapping::inclusion_proof(answer))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<v2::GetConsistencyProofRequest>,
    ) -> Result<Response<v2::GetConsistencyProofResponse>, Status> {
        let v2::GetConsistencyProofRequest { first_tree_size, second_tree_size } = *request.get_ref();
        let query = Query::GetConsistencyProof { first_tree_size, second_tree_size };
        let answer = self.call(&request, KernelRequest::Query(query)).await?;
        reply(mapping::consistency_proof(answer))
    }

    async fn get_revocation_feed(
        &self,
        request: Request<v2::GetRevocationFeedRequest>,
    ) -> Result<Response<v2::GetRevocationFeedResponse>, Status> {
        let answer = self.call(&request, KernelRequest::Query(Query::GetRevocationFeed)).await?;
        reply(mapping::revocation_feed(answer))
    }

    async fn fetch_capsule(
        &self,
        request: Request<v2::FetchCapsuleRequest>,
    ) -> Result<Response<v2::FetchCapsuleResponse>, Status> {
        let query = Query::FetchCapsule { claim_id: request.get_ref().claim_id.clone() };
        let answer = self.call(&request, KernelRequest::Query(query)).await?;
        reply(mapping::fetched_capsule(answer))
    }

    async fn revoke_claim(
        &self,
        request: Request<v2::RevokeClaimRequest>,
    ) -> Result<Response<v2::RevokeClaimResponse>, Status> {
        let v2::RevokeClaimRequest { claim_id, reason } = request.get_ref().clone();
        let kernel_request = self.idempotent(&request, "RevokeClaim", Command::RevokeClaim { claim_id, reason })?;
        let answer = self.call(&request, kernel_request).await?;
        reply(mapping::revoked(answer))
    }

    async fn grant_credit(
        &self,
        request: Request<v2::GrantCreditRequest>,
    ) -> Result<Response<v2::GrantCreditResponse>, Status> {
        let v2::GrantCreditRequest { principal_id, amount, reason } = request.get_ref().clone();
        let command = Command::GrantCredit { principal_id, amount, reason };
        let answer = self.call(&request, KernelRequest::Command(command)).await?;
        reply(mapping::credit_balance(answer))
    }

    async fn set_credit_limit(
        &self,
        request: Request<v2::SetCreditLimitRequest>,
    ) -> Result<Response<v2::SetCreditLimitResponse>, Status> {
        let v2::SetCreditLimitRequest { principal_id, limit } = request.get_ref().clone();
        let command = Command::SetCreditLimit { principal_id, limit };
        let answer = self.call(&request, KernelRequest::Command(command)).await?;
        reply(mapping::credit_limit(answer))
    }

    async fn set_holdout_pool_budgets(
        &self,
        request: Request<v2::SetHoldoutPoolBudgetsRequest>,
    ) -> Result<Response<v2::SetHoldoutPoolBudgetsResponse>, Status> {
        let r = request.get_ref().clone();
        let command = Command::SetHoldoutPoolBudgets {
            holdout_id: r.holdout_id,
            scope: r.scope,
            k_bits_budget: r.new_k_bits_budget,
            access_credit_budget: r.new_access_credit_budget,
        };
        let answer = self.call(&request, KernelRequest::Command(command)).await?;
        reply(mapping::pool_budgets(answer).map(|budgets| v2::SetHoldoutPoolBudgetsResponse { budgets: Some(budgets) }))
    }

    async fn get_holdout_pool_budgets(
        &self,
        request: Request<v2::GetHoldoutPoolBudgetsRequest>,
    ) -> Result<Response<v2::GetHoldoutPoolBudgetsResponse>, Status> {
        let v2::GetHoldoutPoolBudgetsRequest { holdout_id, scope } = request.get_ref().clone();
        let answer =
            self.call(&request, KernelRequest::Query(Query::GetHoldoutPoolBudgets { holdout_id, scope })).await?;
        reply(mapping::pool_budgets(answer).map(|budgets| v2::GetHoldoutPoolBudgetsResponse { budgets: Some(budgets) }))
    }

    type WatchRevocationsStream = ReceiverStream<Result<v2::WatchRevocationsResponse, Status>>;

    async fn watch_revocations(
        &self,
        request: Request<v2::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        self.principal(&request)?;
        let mut notifications = self.kernel.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        tokio::spawn(async move {
            loop {
                let message = match notifications.recv().await {
                    Ok(Notification::Revocation(feed)) => Ok(mapping::watch_message(&feed)),
                    // Never skip silently: a subscriber that fell behind is told and dropped.
                    Err(RecvError::Lagged(missed)) => Err(Status::resource_exhausted(format!(
                        "subscriber fell {missed} revocations behind; reconnect and read GetRevocationFeed"
                    ))),
                    Err(RecvError::Closed) => Err(Status::unavailable("daemon is shutting down")),
                };
                let last = message.is_err();
                if tx.send(message).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The v1 package has the same messages and all RPCs but the two holdout-pool ones: each v1
/// method is the v2 method.
macro_rules! serve_v1_through_v2 {
    ($($method:ident($request:ident) -> $response:ident;)*) => {
        #[tonic::async_trait]
        impl crate::v1::evidence_os_server::EvidenceOs for EvidenceService {
            $(
                async fn $method(&self, request: Request<v2::$request>) -> Result<Response<v2::$response>, Status> {
                    <Self as V2>::$method(self, request).await
                }
            )*

            type WatchRevocationsStream = <Self as V2>::WatchRevocationsStream;

            async fn watch_revocations(
                &self,
                request: Request<v2::WatchRevocationsRequest>,
            ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
                <Self as V2>::watch_revocations(self, request).await
            }
        }
    };
}

serve_v1_through_v2! {
    health(HealthRequest) -> HealthResponse;
    get_server_info(GetServerInfoRequest) -> GetServerInfoResponse;
    create_claim(CreateClaimRequest) -> CreateClaimResponse;
    create_claim_v2(CreateClaimV2Request) -> CreateClaimV2Response;
    commit_artifacts(CommitArtifactsRequest) -> CommitArtifactsResponse;
    freeze(FreezeRequest) -> FreezeResponse;
    freeze_gates(FreezeGatesRequest) -> FreezeGatesResponse;
    seal(SealRequest) -> SealResponse;
    seal_claim(SealClaimRequest) -> SealClaimResponse;
    execute_claim(ExecuteClaimRequest) -> ExecuteClaimResponse;
    execute_claim_v2(ExecuteClaimV2Request) -> ExecuteClaimV2Response;
    get_capsule(GetCapsuleRequest) -> GetCapsuleResponse;
    get_public_key(GetPublicKeyRequest) -> GetPublicKeyResponse;
    get_signed_tree_head(GetSignedTreeHeadRequest) -> GetSignedTreeHeadResponse;
    get_inclusion_proof(GetInclusionProofRequest) -> GetInclusionProofResponse;
    get_consistency_proof(GetConsistencyProofRequest) -> GetConsistencyProofResponse;
    get_revocation_feed(GetRevocationFeedRequest) -> GetRevocationFeedResponse;
    fetch_capsule(FetchCapsuleRequest) -> FetchCapsuleResponse;
    revoke_claim(RevokeClaimRequest) -> RevokeClaimResponse;
    grant_credit(GrantCreditRequest) -> GrantCreditResponse;
    set_credit_limit(SetCreditLimitRequest) -> SetCreditLimitResponse;
}
