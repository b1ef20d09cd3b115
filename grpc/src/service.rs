//! The `EvidenceOS` service for both packages over gRPC. Every handler authenticates, maps its
//! message to a kernel request with the shared [`rpc`] functions (the Connect handler uses the
//! same ones), awaits the kernel task, and maps the answer back; v1 delegates to v2.

use std::sync::Arc;

use evidenceos_core::{KernelError, Notification, Principal, Request as KernelRequest, Response as KernelResponse};
use evidenceos_io_tokio::KernelHandle;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use crate::auth::{Authenticator, Headers, RequestPath};
use crate::v2;
use crate::v2::evidence_os_server::EvidenceOs as V2;
use crate::{mapping, rpc};

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
    availability: tokio::sync::watch::Receiver<rpc::Availability>,
}

impl EvidenceService {
    /// `availability` turns `NotServing` when the daemon drains or its kernel fails storage.
    pub fn new(
        kernel: KernelHandle,
        facts: ServerFacts,
        auth: Authenticator,
        availability: tokio::sync::watch::Receiver<rpc::Availability>,
    ) -> Self {
        let info =
            rpc::server_info(facts.daemon_version, facts.build_git_commit, facts.build_time_utc, facts.feature_flags);
        Self { kernel, info: Arc::new(info), auth: Arc::new(auth), availability }
    }

    /// The availability the health services report, shared with `grpc.health.v1`.
    pub fn availability(&self) -> tokio::sync::watch::Receiver<rpc::Availability> {
        self.availability.clone()
    }

    fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let chain: Option<Vec<Vec<u8>>> =
            request.peer_certs().map(|certs| certs.iter().map(|cert| cert.as_ref().to_vec()).collect());
        let path = request.extensions().get::<RequestPath>().map_or("", |p| p.0.as_str());
        let now_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let principal = self.auth.authenticate(request.metadata(), path, chain.as_deref(), now_unix).map_err(status)?;
        if let Some(slot) = request.extensions().get::<crate::access_log::PrincipalSlot>() {
            slot.set(&principal.id);
        }
        Ok(principal)
    }

    /// Authenticates, then maps the message (who is asking comes first: an unauthenticated
    /// caller learns nothing about the rules), asks the kernel and maps its answer back.
    async fn call<T, R>(
        &self,
        request: &Request<T>,
        to_kernel: impl FnOnce(&T, Option<&str>) -> Result<KernelRequest, KernelError>,
        reply: fn(KernelResponse) -> Result<R, KernelError>,
    ) -> Result<Response<R>, Status> {
        let principal = self.principal(request)?;
        let request_id = request.metadata().header("x-request-id");
        let kernel_request = to_kernel(request.get_ref(), request_id).map_err(status)?;
        let answer = self.kernel.call(principal, kernel_request).await.map_err(status)?;
        reply(answer).map(Response::new).map_err(status)
    }
}

/// For methods without an idempotency key.
fn plain<T: Clone>(map: fn(T) -> KernelRequest) -> impl FnOnce(&T, Option<&str>) -> Result<KernelRequest, KernelError> {
    move |message, _| Ok(map(message.clone()))
}

#[tonic::async_trait]
impl V2 for EvidenceService {
    async fn health(&self, request: Request<v2::HealthRequest>) -> Result<Response<v2::HealthResponse>, Status> {
        self.principal(&request)?;
        Ok(Response::new(rpc::health(*self.availability.borrow())))
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
        self.call(&request, plain(rpc::create_claim), rpc::create_claim_reply).await
    }

    async fn create_claim_v2(
        &self,
        request: Request<v2::CreateClaimV2Request>,
    ) -> Result<Response<v2::CreateClaimV2Response>, Status> {
        self.call(&request, rpc::create_claim_v2, rpc::create_claim_v2_reply).await
    }

    async fn commit_artifacts(
        &self,
        request: Request<v2::CommitArtifactsRequest>,
    ) -> Result<Response<v2::CommitArtifactsResponse>, Status> {
        self.call(&request, plain(rpc::commit_artifacts), rpc::commit_artifacts_reply).await
    }

    async fn freeze(&self, request: Request<v2::FreezeRequest>) -> Result<Response<v2::FreezeResponse>, Status> {
        self.call(&request, |r, _| Ok(rpc::freeze_gates(r.claim_id.clone())), rpc::freeze_reply).await
    }

    async fn freeze_gates(
        &self,
        request: Request<v2::FreezeGatesRequest>,
    ) -> Result<Response<v2::FreezeGatesResponse>, Status> {
        self.call(&request, |r, _| Ok(rpc::freeze_gates(r.claim_id.clone())), rpc::freeze_gates_reply).await
    }

    async fn seal(&self, request: Request<v2::SealRequest>) -> Result<Response<v2::SealResponse>, Status> {
        self.call(&request, |r, _| Ok(rpc::seal_claim(r.claim_id.clone())), rpc::seal_reply).await
    }

    async fn seal_claim(
        &self,
        request: Request<v2::SealClaimRequest>,
    ) -> Result<Response<v2::SealClaimResponse>, Status> {
        self.call(&request, |r, _| Ok(rpc::seal_claim(r.claim_id.clone())), rpc::seal_claim_reply).await
    }

    async fn execute_claim(
        &self,
        request: Request<v2::ExecuteClaimRequest>,
    ) -> Result<Response<v2::ExecuteClaimResponse>, Status> {
        self.call(&request, plain(rpc::execute_claim), rpc::execute_claim_reply).await
    }

    async fn execute_claim_v2(
        &self,
        request: Request<v2::ExecuteClaimV2Request>,
    ) -> Result<Response<v2::ExecuteClaimV2Response>, Status> {
        self.call(&request, rpc::execute_claim_v2, mapping::executed).await
    }

    async fn get_capsule(
        &self,
        request: Request<v2::GetCapsuleRequest>,
    ) -> Result<Response<v2::GetCapsuleResponse>, Status> {
        self.call(&request, plain(rpc::get_capsule), mapping::capsule).await
    }

    async fn get_public_key(
        &self,
        request: Request<v2::GetPublicKeyRequest>,
    ) -> Result<Response<v2::GetPublicKeyResponse>, Status> {
        self.call(&request, plain(rpc::get_public_key), mapping::public_key).await
    }

    async fn get_signed_tree_head(
        &self,
        request: Request<v2::GetSignedTreeHeadRequest>,
    ) -> Result<Response<v2::GetSignedTreeHeadResponse>, Status> {
        self.call(&request, |_, _| Ok(rpc::get_signed_tree_head()), mapping::tree_head).await
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<v2::GetInclusionProofRequest>,
    ) -> Result<Response<v2::GetInclusionProofResponse>, Status> {
        self.call(&request, plain(rpc::get_inclusion_proof), mapping::inclusion_proof).await
    }

    async fn get_consistency_proof(
        &self,
        request: Request<v2::GetConsistencyProofRequest>,
    ) -> Result<Response<v2::GetConsistencyProofResponse>, Status> {
        self.call(&request, plain(rpc::get_consistency_proof), mapping::consistency_proof).await
    }

    async fn get_revocation_feed(
        &self,
        request: Request<v2::GetRevocationFeedRequest>,
    ) -> Result<Response<v2::GetRevocationFeedResponse>, Status> {
        self.call(&request, |_, _| Ok(rpc::get_revocation_feed()), mapping::revocation_feed).await
    }

    async fn fetch_capsule(
        &self,
        request: Request<v2::FetchCapsuleRequest>,
    ) -> Result<Response<v2::FetchCapsuleResponse>, Status> {
        self.call(&request, plain(rpc::fetch_capsule), mapping::fetched_capsule).await
    }

    async fn revoke_claim(
        &self,
        request: Request<v2::RevokeClaimRequest>,
    ) -> Result<Response<v2::RevokeClaimResponse>, Status> {
        self.call(&request, rpc::revoke_claim, mapping::revoked).await
    }

    async fn grant_credit(
        &self,
        request: Request<v2::GrantCreditRequest>,
    ) -> Result<Response<v2::GrantCreditResponse>, Status> {
        self.call(&request, plain(rpc::grant_credit), mapping::credit_balance).await
    }

    async fn set_credit_limit(
        &self,
        request: Request<v2::SetCreditLimitRequest>,
    ) -> Result<Response<v2::SetCreditLimitResponse>, Status> {
        self.call(&request, plain(rpc::set_credit_limit), mapping::credit_limit).await
    }

    async fn set_holdout_pool_budgets(
        &self,
        request: Request<v2::SetHoldoutPoolBudgetsRequest>,
    ) -> Result<Response<v2::SetHoldoutPoolBudgetsResponse>, Status> {
        self.call(&request, plain(rpc::set_holdout_pool_budgets), rpc::set_holdout_pool_budgets_reply).await
    }

    async fn get_holdout_pool_budgets(
        &self,
        request: Request<v2::GetHoldoutPoolBudgetsRequest>,
    ) -> Result<Response<v2::GetHoldoutPoolBudgetsResponse>, Status> {
        self.call(&request, plain(rpc::get_holdout_pool_budgets), rpc::get_holdout_pool_budgets_reply).await
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
