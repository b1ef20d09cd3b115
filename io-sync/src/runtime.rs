//! The kernel on one thread: each request is handled and its effects carried out inline, in
//! order, before the next one is looked at. No queue, no batch beyond one request, no timers of
//! its own: the caller asks [`BlockingRuntime::next_wake`] and calls [`BlockingRuntime::tick`].

use std::sync::atomic::Ordering;

use evidenceos_core::{
    Effect, Input, Kernel, KernelError, LogEvent, Notification, Output, Principal, Request, RequestId, Response,
    Timestamp,
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
    next_request: u64,
    wake_at: Option<Timestamp>,
    observe: Observe,
    observed: Vec<Output>,
    notifications: TakenNotifications,
    stats: std::sync::Arc<RuntimeStats>,
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
            executor,
            next_request: 0,
            wake_at: None,
            observe,
            observed: Vec::new(),
            notifications: TakenNotifications::default(),
            stats,
        }
    }

    /// Handles one request and carries out its effects: a command's reply is durable when returned.
    pub fn call(&mut self, now: Timestamp, principal: Principal, request: Request) -> Result<Response, KernelError> {
        if self.kernel.is_failed() {
            return Err(KernelError::unavailable("storage failure; the kernel must restart"));
        }
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.kernel.handle(now, Input::Request { id, principal, request });
        let mut reply = None;
        self.drain(now, |output| {
            if let Output::Reply(answered, result) = output
                && *answered == id
            {
                reply = Some(result.clone());
            }
        });
        // One request at a time: the kernel answers it before it is idle, unless storage failed.
        reply.unwrap_or_else(|| Err(KernelError::unavailable("storage failure; the kernel must restart")))
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
            self.drain(now, |_| {});
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

    /// Monitoring counters, as io-tokio keeps them (every batch here is one command).
    pub fn stats(&self) -> &RuntimeStats {
        &self.stats
    }

    /// The same counters, for a thread that follows the durable size (the ETL publisher).
    pub fn shared_stats(&self) -> std::sync::Arc<RuntimeStats> {
        self.stats.clone()
    }

    /// Writes the final checkpoint and stops.
    pub fn shutdown(mut self, now: Timestamp) -> (Stopped, Vec<Output>) {
        if !self.kernel.is_failed() {
            self.kernel.handle(now, Input::Checkpoint);
            self.drain(now, |_| {});
        }
        let stopped =
            if self.kernel.is_failed() || !self.kernel.is_idle() { Stopped::StorageFailed } else { Stopped::Clean };
        (stopped, self.observed)
    }

    /// Carries out every effect inline until the kernel has nothing more to say; `see` is shown
    /// every other output.
    fn drain(&mut self, now: Timestamp, mut see: impl FnMut(&Output)) {
        while let Some(output) = self.kernel.poll() {
            match output {
                Output::Effect(effect, work) => {
                    let started = std::time::Instant::now();
                    let outcome = self.executor.execute(&work);
                    self.stats.effects.fetch_add(1, Ordering::Relaxed);
                    match &work {
                        Effect::Sync { .. } => self.stats.record_sync(started.elapsed()),
                        Effect::Append { bytes, .. } => {
                            self.stats.bytes_appended.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        }
                        Effect::Replace { .. } | Effect::Truncate { .. } => {}
                    }
                    self.kernel.handle(now, Input::Done { effect, outcome });
                }
                other => {
                    if let Output::Wake(at) = other {
                        self.wake_at = Some(self.wake_at.map_or(at, |current| current.min(at)));
                    }
                    if let Output::Event(event) = &other {
                        if let LogEvent::BatchDurable { commands, .. } = event {
                            self.stats.record_batch(*commands);
                        }
                        log_event(event);
                    }
                    see(&other);
                    match (self.observe, other) {
                        (Observe::Keep, other) => self.observed.push(other),
                        (Observe::Notifications { cap }, Output::Notify(notification)) => {
                            if self.notifications.kept.len() < cap {
                                self.notifications.kept.push(notification);
                            } else {
                                self.notifications.missed += 1;
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        self.stats.durable_tree_size.store(self.kernel.durable_tree_size(), Ordering::Relaxed);
        self.stats.durable_journal_seq.store(self.kernel.durable_journal_seq(), Ordering::Relaxed);
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
        assert_eq!(RuntimeStats::load(&stats.batches), 25, "one command per batch");
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
