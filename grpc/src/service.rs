//! The `EvidenceOS` service for both packages over gRPC, generated from [`rpc::rpc_table`] (the
//! Connect handler dispatches from the same table). Every handler authenticates, plans the call
//! with its row's [`Answer`], awaits the kernel task, and maps the answer back; v1 delegates to v2.

use std::sync::Arc;

use evidenceos_core::{KernelError, Notification, Principal};
use evidenceos_io_tokio::KernelHandle;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use crate::auth::{Authenticator, Headers, RequestPath};
use crate::rpc::{Answer, LocalFacts, Method, Prepared};
use crate::v2;
use crate::v2::evidence_os_server::EvidenceOs as V2;
use crate::{mapping, rpc};

pub fn status(error: KernelError) -> Status {
    Status::new(Code::from(mapping::grpc_code(error.code)), error.message)
}

/// Messages a WatchRevocations stream may hold before its subscriber reads them.
const WATCH_BUFFER: usize = 64;

#[derive(Debug, Clone)]
pub struct EvidenceService {
    kernel: KernelHandle,
    info: Arc<v2::GetServerInfoResponse>,
    auth: Arc<Authenticator>,
    availability: tokio::sync::watch::Receiver<rpc::Availability>,
}

impl EvidenceService {
    /// `info` answers GetServerInfo (see [`rpc::server_info`]); `availability` turns
    /// `NotServing` when the daemon drains or its kernel fails storage.
    pub fn new(
        kernel: KernelHandle,
        info: v2::GetServerInfoResponse,
        auth: Authenticator,
        availability: tokio::sync::watch::Receiver<rpc::Availability>,
    ) -> Self {
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
    /// caller learns nothing about the rules), asks the kernel unless the table's row answers
    /// locally, and maps its answer back.
    async fn serve<Q: prost::Message, R>(
        &self,
        method: Method,
        answer: &Answer<Q, R>,
        request: Request<Q>,
    ) -> Result<Response<R>, Status> {
        let principal = self.principal(&request)?;
        let (metadata, _, message) = request.into_parts();
        let facts = LocalFacts { server_info: &self.info, availability: *self.availability.borrow() };
        match answer.prepare(method, message, metadata.header("x-request-id"), &facts).map_err(status)? {
            Prepared::Local(response) => Ok(Response::new(response)),
            Prepared::Kernel { request, reply } => {
                let answer = self.kernel.call(principal, request).await.map_err(status)?;
                reply(answer).map(Response::new).map_err(status)
            }
        }
    }

    /// WatchRevocations, the one streaming method: not a row of the table.
    fn watch(&self, request: &Request<v2::WatchRevocationsRequest>) -> Result<WatchStream, Status> {
        self.principal(request)?;
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
        Ok(ReceiverStream::new(rx))
    }
}

type WatchStream = ReceiverStream<Result<v2::WatchRevocationsResponse, Status>>;

/// Both tonic services from [`rpc::rpc_table`]: every v2 method serves its row; each v1 method
/// (all rows but the `v2_only` ones) is the v2 method.
macro_rules! serve_tonic {
    (
        v1_and_v2 { $($both:ident $both_fn:ident($both_req:ident) -> $both_resp:ident = $both_how:expr;)* }
        v2_only { $($only:ident $only_fn:ident($only_req:ident) -> $only_resp:ident = $only_how:expr;)* }
    ) => {
        #[tonic::async_trait]
        impl V2 for EvidenceService {
            $(
                async fn $both_fn(&self, request: Request<v2::$both_req>) -> Result<Response<v2::$both_resp>, Status> {
                    self.serve(Method::$both, &rpc::answer::$both, request).await
                }
            )*
            $(
                async fn $only_fn(&self, request: Request<v2::$only_req>) -> Result<Response<v2::$only_resp>, Status> {
                    self.serve(Method::$only, &rpc::answer::$only, request).await
                }
            )*

            type WatchRevocationsStream = WatchStream;

            async fn watch_revocations(
                &self,
                request: Request<v2::WatchRevocationsRequest>,
            ) -> Result<Response<WatchStream>, Status> {
                self.watch(&request).map(Response::new)
            }
        }

        #[tonic::async_trait]
        impl crate::v1::evidence_os_server::EvidenceOs for EvidenceService {
            $(
                async fn $both_fn(&self, request: Request<v2::$both_req>) -> Result<Response<v2::$both_resp>, Status> {
                    <Self as V2>::$both_fn(self, request).await
                }
            )*

            type WatchRevocationsStream = WatchStream;

            async fn watch_revocations(
                &self,
                request: Request<v2::WatchRevocationsRequest>,
            ) -> Result<Response<WatchStream>, Status> {
                <Self as V2>::watch_revocations(self, request).await
            }
        }
    };
}

rpc::rpc_table!(serve_tonic);
