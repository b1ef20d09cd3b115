//! The kernel on one thread, effects carried out inline. Requests are submitted
//! ([`BlockingRuntime::submit`]), the commands among them handed to the kernel together and their
//! effects carried out as one batch ([`BlockingRuntime::run_effects`]: one journal sync and one
//! ETL sync for all of them), then their replies taken ([`BlockingRuntime::take_reply`]). Queries
//! are answered at submission and never wait for a sync. No timers of its own: the caller asks
//! [`BlockingRuntime::next_wake`] and calls [`BlockingRuntime::tick`].

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use evidenceos_core::{
    Input, Kernel, KernelError, LogEvent, Notification, Output, Principal, Request, RequestId, Response, Timestamp,
};

use crate::events::log_event;
use crate::executor::FileExecutor;
use crate::stats::RuntimeStats;

/// Why the runtime stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Shut down on request after a final checkpoint.
    Clean,
    /// A storage effect failed; the process should exit non-zero so it restarts into recovery.
    StorageFailed,
}

/// What the runtime hands out besides replies: kept for inspection (conformance), or only logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observe {
    /// Events are logged; nothing is kept (the daemon).
    LogOnly,
    /// Every non-effect output, replies included, is also kept in order (the conformance harness).
    Keep,
    /// Only notifications are kept, at most `cap` until [`BlockingRuntime::take_notifications`];
    /// beyond it they are counted as missed, never dropped unseen (the daemon's subscribers).
    Notifications { cap: usize },
}

/// Notifications kept since the last [`BlockingRuntime::take_notifications`], in order.
#[derive(Debug, Default, PartialEq)]
pub struct TakenNotifications {
    pub kept: Vec<Notification>,
    /// Released after `kept` reached its cap: a subscriber told of `kept` alone would miss these.
    pub missed: u64,
}

#[derive(Debug)]
pub struct BlockingRuntime {
    kernel: Kernel,
    executor: FileExecutor,
    capsules: crate::CapsuleReader,
    next_request: u64,
    wake_at: Option<Timestamp>,
    observe: Observe,
    observed: Vec<Output>,
    notifications: TakenNotifications,
    stats: std::sync::Arc<RuntimeStats>,
    /// Commands submitted since the last [`Self::run_effects`], in order: handed to the kernel
    /// together so that they share one batch.
    queued: Vec<Input>,
    /// Replies the kernel gave that their submitter has not taken yet.
    replies: HashMap<RequestId, Result<Response, KernelError>>,
}

impl BlockingRuntime {
    /// The kernel must have finished recovery (see [`crate::drive`]).
    pub fn new(kernel: Kernel, executor: FileExecutor, observe: Observe) -> Self {
        assert!(!kernel.is_recovering(), "run recovery effects before serving");
        let stats = std::sync::Arc::new(RuntimeStats::default());
        stats.durable_tree_size.store(kernel.durable_tree_size(), Ordering::Relaxed);
        stats.durable_journal_seq.store(kernel.durable_journal_seq(), Ordering::Relaxed);
        Self {
            kernel,
            capsules: executor.capsule_reader(),
            executor,
            next_request: 0,
            wake_at: None,
            observe,
            observed: Vec::new(),
            notifications: TakenNotifications::default(),
            stats,
            queued: Vec::new(),
            replies: HashMap::new(),
        }
    }

    /// Handles one request and carries out its effects (and those of anything submitted before
    /// it): a command's reply is durable when returned.
    pub fn call(&mut self, now: Timestamp, principal: Principal, request: Request) -> Result<Response, KernelError> {
        let id = self.submit(now, principal, request);
        self.run_effects(now);
        // Every submitted request is answered once its batch ran, or refused when storage failed.
        self.take_reply(id).unwrap_or_else(|| Err(KernelError::storage_failed()))
    }

    /// Takes a request without carrying out any effect. A query is answered at once, on what is
    /// durable (its reply can be taken right away); a command waits for [`Self::run_effects`].
    /// A query submitted after a command whose reply was not yet taken does not see it.
    pub fn submit(&mut self, now: Timestamp, principal: Principal, request: Request) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        if self.kernel.is_failed() {
            self.replies.insert(id, Err(KernelError::storage_failed()));
            return id;
        }
        if matches!(request, Request::Query(_)) {
            // Between batches the kernel is idle: it answers a query without emitting an effect.
            self.kernel.handle(now, Input::Request { id, principal, request });
            self.drain(now);
        } else {
            self.queued.push(Input::Request { id, principal, request });
        }
        id
    }

    /// Whether commands wait for [`Self::run_effects`].
    pub fn has_queued(&self) -> bool {
        !self.queued.is_empty()
    }

    /// Hands every queued command to the kernel at once and carries out the effects: one batch
    /// (up to the kernel's batch limits), so one journal sync and one ETL sync cover them all.
    /// Afterwards every submitted request has a reply to take.
    pub fn run_effects(&mut self, now: Timestamp) {
        if self.queued.is_empty() {
            return;
        }
        let queued = std::mem::take(&mut self.queued);
        self.kernel.handle_all(now, queued);
        self.drain(now);
        debug_assert!(self.kernel.is_failed() || self.kernel.is_idle(), "effects carried out to the end");
    }

    /// The reply to a submitted request, once the kernel gave it (taken once).
    pub fn take_reply(&mut self, id: RequestId) -> Option<Result<Response, KernelError>> {
        self.replies.remove(&id)
    }

    /// When the kernel next wants [`Self::tick`] (an idle checkpoint), if ever.
    pub fn next_wake(&self) -> Option<Timestamp> {
        self.wake_at
    }

    /// Lets the kernel act on passed deadlines.
    pub fn tick(&mut self, now: Timestamp) {
        if self.wake_at.is_some_and(|at| at <= now) {
            self.wake_at = None;
            self.kernel.handle(now, Input::Tick);
            self.drain(now);
        }
    }

    /// Hands over the notifications kept (with [`Observe::Notifications`]) and starts afresh.
    pub fn take_notifications(&mut self) -> TakenNotifications {
        std::mem::take(&mut self.notifications)
    }

    pub fn is_failed(&self) -> bool {
        self.kernel.is_failed()
    }

    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    /// Monitoring counters, as io-tokio keeps them.
    pub fn stats(&self) -> &RuntimeStats {
        &self.stats
    }

    /// The same counters, for a thread that follows the durable size (the ETL publisher).
    pub fn shared_stats(&self) -> std::sync::Arc<RuntimeStats> {
        self.stats.clone()
    }

    /// Writes the final checkpoint and stops.
    pub fn shutdown(mut self, now: Timestamp) -> (Stopped, Vec<Output>) {
        // Commands still queued are journaled first: the checkpoint covers them.
        self.run_effects(now);
        if !self.kernel.is_failed() {
            self.kernel.handle(now, Input::Checkpoint);
            self.drain(now);
        }
        let stopped =
            if self.kernel.is_failed() || !self.kernel.is_idle() { Stopped::StorageFailed } else { Stopped::Clean };
        (stopped, self.observed)
    }

    /// Carries out every effect inline until the kernel has nothing more to say; replies are kept
    /// for [`Self::take_reply`].
    fn drain(&mut self, now: Timestamp) {
        while let Some(output) = self.kernel.poll() {
            match output {
                Output::Effect(effect, work) => {
                    let outcome = self.executor.execute_counted(&work, &self.stats);
                    self.kernel.handle(now, Input::Done { effect, outcome });
                }
                other => self.take_output(other),
            }
        }
        self.stats.durable_tree_size.store(self.kernel.durable_tree_size(), Ordering::Relaxed);
        self.stats.durable_journal_seq.store(self.kernel.durable_journal_seq(), Ordering::Relaxed);
    }

    /// Keeps a reply for its submitter, notes a deadline, logs an event, keeps what `observe` asks.
    fn take_output(&mut self, mut output: Output) {
        if let Output::Reply(_, reply) = &mut output {
            self.capsules.read_into(reply);
        }
        if self.observe == Observe::Keep {
            self.observed.push(output.clone());
        }
        match output {
            Output::Reply(id, reply) => drop(self.replies.insert(id, reply)),
            Output::Wake(at) => self.wake_at = Some(self.wake_at.map_or(at, |current| current.min(at))),
            Output::Event(event) => {
                if let LogEvent::BatchDurable { commands, .. } = event {
                    self.stats.record_batch(commands);
                }
                log_event(&event);
            }
            Output::Notify(notification) => {
                let Observe::Notifications { cap } = self.observe else { return };
                if self.notifications.kept.len() < cap {
                    self.notifications.kept.push(notification);
                } else {
                    self.notifications.missed += 1;
                }
            }
            Output::Effect(..) => unreachable!("drain carries out effects"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DataDir, drive, now};
    use evidenceos_core::{Query, Role};

    fn boot(dir: &DataDir) -> BlockingRuntime {
        boot_observing(dir, Observe::LogOnly)
    }

    fn boot_observing(dir: &DataDir, observe: Observe) -> BlockingRuntime {
        dir.ensure_signing_key().unwrap();
        let mut kernel = Kernel::recover(evidenceos_testkit::config(), dir.read_recovery_files().unwrap()).unwrap();
        let mut executor = FileExecutor::new(dir).unwrap();
        drive(&mut kernel, &mut executor, now());
        BlockingRuntime::new(kernel, executor, observe)
    }

    #[test]
    fn notifications_are_kept_up_to_the_cap_and_the_rest_counted_as_missed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        let mut runtime = boot_observing(&dir, Observe::Notifications { cap: 2 });
        let operator = Principal::new("op", Role::Operator);
        for n in 0..3 {
            let id =
                evidenceos_testkit::run_to_capsule(n, |principal, request| runtime.call(now(), principal, request));
            runtime.call(now(), operator.clone(), evidenceos_testkit::revoke(&id)).unwrap();
        }
        let taken = runtime.take_notifications();
        assert_eq!(taken.missed, 1, "the third revocation is past the cap");
        let sizes: Vec<u64> = taken
            .kept
            .iter()
            .map(|Notification::Revocation(feed)| {
                assert_eq!(feed.entries.len(), 1, "one revocation per notification");
                feed.sth.tree_size
            })
            .collect();
        assert_eq!(sizes, [2, 4], "the first two revocations, in order, each under the head covering it");
        assert_eq!(runtime.take_notifications(), TakenNotifications::default(), "taken once");
    }

    #[test]
    fn every_reply_is_durable_when_returned_and_shutdown_checkpoints() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        let mut runtime = boot(&dir);
        let operator = Principal::new("op", Role::Operator);
        let etl_leaves = || {
            let etl = std::fs::read(tmp.path().join("etl.log")).unwrap();
            evidenceos_core::frame::scan(&etl, 0).unwrap().records.len()
        };
        for n in 0..5 {
            // Create, commit and freeze journal only; the execution appends the capsule leaf.
            let id =
                evidenceos_testkit::run_to_capsule(n, |principal, request| runtime.call(now(), principal, request));
            assert_eq!(etl_leaves(), 2 * n as usize + 1, "capsule on disk when answered");
            let revoked = runtime.call(now(), operator.clone(), evidenceos_testkit::revoke(&id));
            assert!(matches!(revoked, Ok(Response::Revoked { .. })), "{revoked:?}");
            assert_eq!(etl_leaves(), 2 * n as usize + 2, "revocation on disk when answered");
        }
        let Ok(Response::SignedTreeHead(sth)) = runtime.call(now(), operator, Request::Query(Query::GetSignedTreeHead))
        else {
            panic!("STH expected")
        };
        assert_eq!(sth.tree_size, 10);
        let stats = runtime.stats();
        assert_eq!(RuntimeStats::load(&stats.durable_tree_size), 10);
        assert_eq!(RuntimeStats::load(&stats.batches), 25, "`call` runs each command in a batch of its own");
        assert_eq!(RuntimeStats::load(&stats.syncs), 35, "the journal synced for each, the ETL for each leaf");
        assert!(runtime.next_wake().is_some(), "an idle checkpoint is scheduled after commands");
        let (stopped, _) = runtime.shutdown(now());
        assert_eq!(stopped, Stopped::Clean);
        let journal = std::fs::read(tmp.path().join("journal.log")).unwrap();
        assert_eq!(evidenceos_core::frame::scan(&journal, 0).unwrap().records.len(), 1, "compacted at shutdown");
        drop(dir);
        let dir = DataDir::open(tmp.path()).unwrap();
        assert_eq!(boot(&dir).kernel().durable_tree_size(), 10);
    }

    #[test]
    fn submitted_commands_share_one_journal_sync_and_one_etl_sync_and_are_answered_after_them() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        let mut runtime = boot(&dir);
        let operator = Principal::new("op", Role::Operator);
        let claims: Vec<Vec<u8>> = (0..4)
            .map(|n| {
                evidenceos_testkit::run_to_capsule(n, |principal, request| runtime.call(now(), principal, request))
            })
            .collect();
        let etl_leaves = || {
            let etl = std::fs::read(tmp.path().join("etl.log")).unwrap();
            evidenceos_core::frame::scan(&etl, 0).unwrap().records.len()
        };
        let (syncs, batches) =
            (RuntimeStats::load(&runtime.stats().syncs), RuntimeStats::load(&runtime.stats().batches));
        let mut revocations = Vec::new();
        for claim in &claims {
            revocations.push(runtime.submit(now(), operator.clone(), evidenceos_testkit::revoke(claim)));
            assert_eq!(runtime.take_reply(revocations[0]), None, "no reply before the batch ran");
        }
        let head = runtime.submit(now(), operator.clone(), Request::Query(Query::GetSignedTreeHead));
        let Some(Ok(Response::SignedTreeHead(sth))) = runtime.take_reply(head) else {
            panic!("a query is answered at once")
        };
        assert_eq!(sth.tree_size, 4, "the durable log: four capsules, no revocation");
        assert_eq!((etl_leaves(), RuntimeStats::load(&runtime.stats().syncs)), (4, syncs), "nothing written yet");
        assert!(runtime.has_queued());
        runtime.run_effects(now());
        assert!(!runtime.has_queued());
        for id in revocations {
            assert!(matches!(runtime.take_reply(id), Some(Ok(Response::Revoked { .. }))), "{id:?}");
            assert_eq!(runtime.take_reply(id), None, "taken once");
        }
        assert_eq!(etl_leaves(), 8, "every revocation on disk when answered");
        let stats = runtime.stats();
        assert_eq!(RuntimeStats::load(&stats.syncs) - syncs, 2, "one journal sync and one ETL sync for all four");
        assert_eq!(RuntimeStats::load(&stats.batches) - batches, 1);
        assert_eq!(RuntimeStats::load(&stats.batched_commands), 4 * 4 + 4, "four per lifecycle, then four at once");
    }

    #[test]
    fn shutdown_journals_queued_commands_before_its_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        let mut runtime = boot(&dir);
        let claim = evidenceos_testkit::run_to_capsule(0, |principal, request| runtime.call(now(), principal, request));
        runtime.submit(now(), Principal::new("op", Role::Operator), evidenceos_testkit::revoke(&claim));
        let (stopped, _) = runtime.shutdown(now());
        assert_eq!(stopped, Stopped::Clean);
        drop(dir);
        let dir = DataDir::open(tmp.path()).unwrap();
        assert_eq!(boot(&dir).kernel().durable_tree_size(), 2, "the capsule and the queued revocation");
    }

    #[test]
    fn a_passed_wake_writes_the_idle_checkpoint_and_an_early_tick_does_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        let mut runtime = boot(&dir);
        let start = now();
        evidenceos_testkit::run_to_capsule(0, |principal, request| runtime.call(start, principal, request));
        let wake = runtime.next_wake().expect("idle checkpoint deadline");
        let checkpoint = || std::fs::read(tmp.path().join("state.json")).unwrap();
        let before = checkpoint();
        runtime.tick(Timestamp(wake.0 - 1));
        assert_eq!(checkpoint(), before, "not yet due");
        runtime.tick(wake);
        assert_ne!(checkpoint(), before, "checkpoint written at the deadline");
        assert_eq!(runtime.next_wake(), None);
    }
}
