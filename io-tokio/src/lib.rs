//! Async runtime for the EvidenceOS kernel.
//!
//! One task owns the kernel. Callers send requests over a channel and await their reply. Effects
//! run in order on one dedicated blocking thread (never an fsync on a tokio worker) while the
//! kernel task keeps admitting requests: the next batch builds while the current one syncs.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::mpsc as std_mpsc;

use evidenceos_core::{
    Effect, EffectId, Input, IoFailure, Kernel, KernelError, Notification, Output, Principal, Request, RequestId,
    Response, Timestamp,
};
use evidenceos_io_sync::{FileExecutor, log_event};
use tokio::sync::{mpsc, oneshot};

/// Why the kernel task stopped: the same answer as the blocking runtime's.
pub use evidenceos_io_sync::Stopped;
pub use evidenceos_io_sync::{BATCH_BUCKETS, RuntimeStats, SYNC_BUCKETS_US};

/// Where the kernel's `now` comes from: the wall clock in the daemon, a scripted clock in
/// conformance runs (so both runtimes journal identical bytes).
pub type Clock = std::sync::Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The wall clock.
pub fn wall_clock() -> Clock {
    std::sync::Arc::new(evidenceos_io_sync::now)
}

/// Requests waiting for the kernel task; beyond this, callers wait (backpressure).
const REQUEST_QUEUE: usize = 4096;
/// Notifications a subscriber may fall behind by before it is disconnected.
pub const NOTIFICATION_BACKLOG: usize = 1024;

enum Message {
    /// Boxed: a request is far larger than the other message kinds.
    Request {
        principal: Principal,
        request: Box<Request>,
        reply: oneshot::Sender<Result<Response, KernelError>>,
    },
    Shutdown,
}

/// Cheap to clone; every gRPC handler holds one.
#[derive(Debug, Clone)]
pub struct KernelHandle {
    tx: mpsc::Sender<Message>,
    /// Capsules are read here, in the caller's task, not on the kernel task.
    capsules: evidenceos_io_sync::CapsuleReader,
    notifications: tokio::sync::broadcast::Sender<Notification>,
    stats: std::sync::Arc<RuntimeStats>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Request { .. } => "Request",
            Self::Shutdown => "Shutdown",
        })
    }
}

impl KernelHandle {
    /// Sends a request and waits for its reply (for commands: until durable).
    pub async fn call(&self, principal: Principal, request: Request) -> Result<Response, KernelError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Message::Request { principal, request: Box::new(request), reply })
            .await
            .map_err(|_| KernelError::unavailable("kernel is shutting down"))?;
        let mut reply = rx.await.map_err(|_| KernelError::unavailable("kernel stopped before replying"))?;
        self.capsules.read_into(&mut reply);
        reply
    }

    /// Durable notifications from now on. A receiver that falls more than
    /// [`NOTIFICATION_BACKLOG`] behind gets `RecvError::Lagged` and must be disconnected.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Notification> {
        self.notifications.subscribe()
    }

    /// Monitoring counters of this runtime.
    pub fn stats(&self) -> &RuntimeStats {
        &self.stats
    }

    /// The same counters, for a thread that follows the durable size (the ETL publisher).
    pub fn shared_stats(&self) -> std::sync::Arc<RuntimeStats> {
        self.stats.clone()
    }

    /// Asks the kernel task to finish in-flight work, checkpoint and stop.
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Message::Shutdown).await;
    }
}

/// Starts the kernel task and its effect thread. The kernel must have finished recovery.
pub fn spawn(kernel: Kernel, executor: FileExecutor, clock: Clock) -> (KernelHandle, tokio::task::JoinHandle<Stopped>) {
    assert!(!kernel.is_recovering(), "run recovery effects before spawning");
    let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
    let (effect_tx, effect_rx) = std_mpsc::channel::<(EffectId, Effect)>();
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let stats = std::sync::Arc::new(RuntimeStats::default());
    stats.durable_tree_size.store(kernel.durable_tree_size(), std::sync::atomic::Ordering::Relaxed);
    let effect_stats = stats.clone();
    let capsules = executor.capsule_reader();
    std::thread::Builder::new()
        .name("evidenceos-effects".into())
        .spawn(move || run_effects(executor, effect_rx, done_tx, &effect_stats))
        .expect("spawn the effect thread");
    let (notifications, _) = tokio::sync::broadcast::channel(NOTIFICATION_BACKLOG);
    let task = tokio::spawn(run_kernel(kernel, clock, rx, effect_tx, done_rx, notifications.clone(), stats.clone()));
    (KernelHandle { tx, capsules, notifications, stats }, task)
}

/// Executes effects strictly in order, so effects on one file complete in order.
fn run_effects(
    mut executor: FileExecutor,
    effects: std_mpsc::Receiver<(EffectId, Effect)>,
    done: mpsc::UnboundedSender<(EffectId, Result<(), IoFailure>)>,
    stats: &RuntimeStats,
) {
    while let Ok((id, effect)) = effects.recv() {
        let outcome = executor.execute_counted(&effect, stats);
        if done.send((id, outcome)).is_err() {
            return;
        }
    }
}

struct Driver {
    kernel: Kernel,
    stats: std::sync::Arc<RuntimeStats>,
    clock: Clock,
    notifications: tokio::sync::broadcast::Sender<Notification>,
    effects: std_mpsc::Sender<(EffectId, Effect)>,
    waiting: HashMap<RequestId, oneshot::Sender<Result<Response, KernelError>>>,
    next_request: u64,
    wake_at: Option<Timestamp>,
}

impl Driver {
    fn drain(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.stats.durable_tree_size.store(self.kernel.durable_tree_size(), Relaxed);
        self.stats.durable_journal_seq.store(self.kernel.durable_journal_seq(), Relaxed);
        while let Some(output) = self.kernel.poll() {
            match output {
                Output::Effect(id, effect) => {
                    if self.effects.send((id, effect)).is_err() {
                        // The effect thread is gone: report it as a storage failure.
                        let failure = IoFailure("effect thread stopped".into());
                        self.input(Input::Done { effect: id, outcome: Err(failure) });
                    }
                }
                Output::Reply(id, reply) => {
                    if let Some(waiter) = self.waiting.remove(&id) {
                        let _ = waiter.send(reply);
                    }
                }
                Output::Event(event) => {
                    if let evidenceos_core::LogEvent::BatchDurable { commands, .. } = event {
                        self.stats.record_batch(commands);
                    }
                    log_event(&event);
                }
                Output::Wake(at) => self.wake_at = Some(self.wake_at.map_or(at, |current| current.min(at))),
                // No subscriber is not an error.
                Output::Notify(notification) => drop(self.notifications.send(notification)),
            }
        }
    }

    fn request(
        &mut self,
        principal: Principal,
        request: Request,
        reply: oneshot::Sender<Result<Response, KernelError>>,
    ) {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.waiting.insert(id, reply);
        self.input(Input::Request { id, principal, request });
    }

    fn input(&mut self, input: Input) {
        self.kernel.handle((self.clock)(), input);
    }

    fn sleep_until_wake(&self) -> tokio::time::Sleep {
        let wait_ms = self.wake_at.map_or(u64::MAX / 4, |at| at.0.saturating_sub((self.clock)().0));
        tokio::time::sleep(std::time::Duration::from_millis(wait_ms))
    }
}

async fn run_kernel(
    kernel: Kernel,
    clock: Clock,
    mut requests: mpsc::Receiver<Message>,
    effects: std_mpsc::Sender<(EffectId, Effect)>,
    mut done: mpsc::UnboundedReceiver<(EffectId, Result<(), IoFailure>)>,
    notifications: tokio::sync::broadcast::Sender<Notification>,
    stats: std::sync::Arc<RuntimeStats>,
) -> Stopped {
    let mut driver = Driver {
        kernel,
        stats,
        clock,
        notifications,
        effects,
        waiting: HashMap::new(),
        next_request: 0,
        wake_at: None,
    };
    let mut shutting_down = false;
    loop {
        driver.drain();
        if driver.kernel.is_failed() {
            // Replies for everything pending were emitted by the kernel; anything still waiting
            // (a request admitted as the failure landed) is refused here.
            for (_, waiter) in driver.waiting.drain() {
                let _ = waiter.send(Err(KernelError::storage_failed()));
            }
            return Stopped::StorageFailed;
        }
        if shutting_down && driver.kernel.is_idle() {
            return Stopped::Clean;
        }
        let sleep = driver.sleep_until_wake();
        tokio::select! {
            biased;
            Some((effect, outcome)) = done.recv() => driver.input(Input::Done { effect, outcome }),
            message = requests.recv(), if !shutting_down => match message {
                Some(Message::Request { principal, request, reply }) => driver.request(principal, *request, reply),
                Some(Message::Shutdown) | None => {
                    shutting_down = true;
                    requests.close();
                    // Requests already queued are still answered before the checkpoint.
                    while let Ok(Message::Request { principal, request, reply }) = requests.try_recv() {
                        driver.request(principal, *request, reply);
                    }
                    driver.input(Input::Checkpoint);
                }
            },
            () = sleep, if driver.wake_at.is_some() => {
                driver.wake_at = None;
                driver.input(Input::Tick);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use evidenceos_core::{Query, Role};
    use evidenceos_io_sync::{DataDir, drive, now};

    fn boot(dir: &DataDir) -> (Kernel, FileExecutor) {
        dir.ensure_signing_key().unwrap();
        let mut kernel = Kernel::recover(evidenceos_testkit::config(), dir.read_recovery_files().unwrap()).unwrap();
        let mut executor = FileExecutor::new(dir).unwrap();
        drive(&mut kernel, &mut executor, now());
        (kernel, executor)
    }

    const CLAIMS: u32 = 50;

    #[tokio::test]
    async fn concurrent_commands_are_durable_when_answered_and_shutdown_checkpoints() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        let (kernel, executor) = boot(&dir);
        let (handle, task) = spawn(kernel, executor, wall_clock());
        let operator = Principal::new("op", Role::Operator);
        // Claims run to their capsules one after another (each holds a pool reservation until
        // executed); then every revocation is sent at once.
        let mut claims = Vec::new();
        for n in 0..CLAIMS {
            let agent = evidenceos_testkit::agent(n);
            let id =
                evidenceos_testkit::claim_id(&handle.call(agent.clone(), evidenceos_testkit::create(n)).await.unwrap());
            for request in evidenceos_testkit::to_capsule(&id) {
                handle.call(agent.clone(), request).await.unwrap();
            }
            claims.push(id);
        }
        let mut calls = Vec::new();
        for claim in claims {
            let handle = handle.clone();
            let operator = operator.clone();
            calls.push(tokio::spawn(async move { handle.call(operator, evidenceos_testkit::revoke(&claim)).await }));
        }
        for call in calls {
            assert!(matches!(call.await.unwrap(), Ok(Response::Revoked { .. })));
        }
        let sth = handle.call(operator.clone(), Request::Query(Query::GetSignedTreeHead)).await.unwrap();
        let Response::SignedTreeHead(sth) = sth else { panic!("STH expected") };
        assert_eq!(sth.tree_size, 2 * u64::from(CLAIMS), "a capsule and a revocation each");
        handle.shutdown().await;
        assert_eq!(task.await.unwrap(), Stopped::Clean);
        let journal = std::fs::read(tmp.path().join("journal.log")).unwrap();
        assert_eq!(evidenceos_core::frame::scan(&journal, 0).unwrap().records.len(), 1, "compacted at shutdown");
        let refused = handle.call(operator, Request::Query(Query::GetSignedTreeHead)).await;
        assert_eq!(refused.unwrap_err().code, evidenceos_core::ErrorCode::Unavailable);
    }
}
