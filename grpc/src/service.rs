//! The `EvidenceOS` service for both packages. Every handler maps its message to a kernel
//! request, awaits the kernel task, and maps the answer back; v1 delegates to v2.

use std::sync::Arc;

use evidenceos_core::{Command, KernelError, Principal, Query, Request as KernelRequest, Response as KernelResponse};
use evidenceos_io_tokio::KernelHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use crate::mapping;
use crate::v2;
use crate::v2::evidence_os_server::EvidenceOs as V2;

pub fn status(error: KernelError) -> Status {
    Status::new(Code::from(mapping::grpc_code(error.code)), error.message)
}

/// Answer for RPCs whose kernel support has not landed yet: explicit, never a fake success.
fn not_yet(method: &str) -> Status {
    Status::unimplemented(format!("{method} is not implemented by this daemon version"))
}

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
}

impl EvidenceService {
    pub fn new(kernel: KernelHandle, facts: ServerFacts) -> Self {
        let proto_hash = hex::encode(evidenceos_core::hash::sha256(crate::FILE_DESCRIPTOR_SET));
        let info = v2::GetServerInfoResponse {
            protocol_semver: crate::PROTOCOL_SEMVER.to_string(),
            proto_hash,
            build_git_commit: facts.build_git_commit,
            build_time_utc: facts.build_time_utc,
            daemon_version: facts.daemon_version,
            feature_flags: Some(facts.feature_flags),
        };
        Self { kernel, info: Arc::new(info) }
    }

    /// The caller's identity. No authentication exists yet, so every caller is the development
    /// principal `anonymous` with the agent role (SPEC §2.2), never a role a client claims.
    fn principal<T>(&self, _request: &Request<T>) -> Principal {
        Principal::anonymous()
    }

    async fn call<T>(&self, request: &Request<T>, kernel_request: KernelRequest) -> Result<KernelResponse, Status> {
        self.kernel.call(self.principal(request), kernel_request).await.map_err(status)
    }
}

fn reply<T>(mapped: Result<T, KernelError>) -> Result<Response<T>, Status> {
    mapped.map(Response::new).map_err(status)
}

#[tonic::async_trait]
impl V2 for EvidenceService {
    async fn health(&self, _request: Request<v2::HealthRequest>) -> Result<Response<v2::HealthResponse>, Status> {
        Ok(Response::new(v2::HealthResponse { status: "SERVING".to_string() }))
    }

    async fn get_server_info(
        &self,
        _request: Request<v2::GetServerInfoRequest>,
    ) -> Result<Response<v2::GetServerInfoResponse>, Status> {
        Ok(Response::new((*self.info).clone()))
    }

    async fn create_claim(
        &self,
        _: Request<v2::CreateClaimRequest>,
    ) -> Result<Response<v2::CreateClaimResponse>, Status> {
        Err(not_yet("CreateClaim"))
    }

    async fn create_claim_v2(
        &self,
        _: Request<v2::CreateClaimV2Request>,
    ) -> Result<Response<v2::CreateClaimV2Response>, Status> {
        Err(not_yet("CreateClaimV2"))
    }

    async fn commit_artifacts(
        &self,
        _: Request<v2::CommitArtifactsRequest>,
    ) -> Result<Response<v2::CommitArtifactsResponse>, Status> {
        Err(not_yet("CommitArtifacts"))
    }

    async fn freeze(&self, _: Request<v2::FreezeRequest>) -> Result<Response<v2::FreezeResponse>, Status> {
        Err(not_yet("Freeze"))
    }

    async fn freeze_gates(
        &self,
        _: Request<v2::FreezeGatesRequest>,
    ) -> Result<Response<v2::FreezeGatesResponse>, Status> {
        Err(not_yet("FreezeGates"))
    }

    async fn seal(&self, _: Request<v2::SealRequest>) -> Result<Response<v2::SealResponse>, Status> {
        Err(not_yet("Seal"))
    }

    async fn seal_claim(&self, _: Request<v2::SealClaimRequest>) -> Result<Response<v2::SealClaimResponse>, Status> {
        Err(not_yet("SealClaim"))
    }

    async fn execute_claim(
        &self,
        _: Request<v2::ExecuteClaimRequest>,
    ) -> Result<Response<v2::ExecuteClaimResponse>, Status> {
        Err(not_yet("ExecuteClaim"))
    }

    async fn execute_claim_v2(
        &self,
        _: Request<v2::ExecuteClaimV2Request>,
    ) -> Result<Response<v2::ExecuteClaimV2Response>, Status> {
        Err(not_yet("ExecuteClaimV2"))
    }

    async fn get_capsule(&self, _: Request<v2::GetCapsuleRequest>) -> Result<Response<v2::GetCapsuleResponse>, Status> {
        Err(not_yet("GetCapsule"))
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
        _: Request<v2::GetRevocationFeedRequest>,
    ) -> Result<Response<v2::GetRevocationFeedResponse>, Status> {
        Err(not_yet("GetRevocationFeed"))
    }

    async fn fetch_capsule(
        &self,
        _: Request<v2::FetchCapsuleRequest>,
    ) -> Result<Response<v2::FetchCapsuleResponse>, Status> {
        Err(not_yet("FetchCapsule"))
    }

    async fn revoke_claim(
        &self,
        _: Request<v2::RevokeClaimRequest>,
    ) -> Result<Response<v2::RevokeClaimResponse>, Status> {
        Err(not_yet("RevokeClaim"))
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
        _: Request<v2::SetHoldoutPoolBudgetsRequest>,
    ) -> Result<Response<v2::SetHoldoutPoolBudgetsResponse>, Status> {
        Err(not_yet("SetHoldoutPoolBudgets"))
    }

    async fn get_holdout_pool_budgets(
        &self,
        _: Request<v2::GetHoldoutPoolBudgetsRequest>,
    ) -> Result<Response<v2::GetHoldoutPoolBudgetsResponse>, Status> {
        Err(not_yet("GetHoldoutPoolBudgets"))
    }

    type WatchRevocationsStream = ReceiverStream<Result<v2::WatchRevocationsResponse, Status>>;

    async fn watch_revocations(
        &self,
        _: Request<v2::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        Err(not_yet("WatchRevocations"))
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
