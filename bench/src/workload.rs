//! Claim lifecycles driven by C concurrent clients, each timing its own RPCs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use evidenceos_core::request::CreateClaimV2;
use evidenceos_grpc::rpc::create_claim_v2_request;
use evidenceos_grpc::v2;

use crate::stats::Latencies;
use crate::transport::{Connection, ConnectionSettings, RpcError};

/// The five RPCs of one lifecycle, in order; also the order of the report.
pub const RPCS: [&str; 5] = ["CreateClaimV2", "CommitArtifacts", "FreezeGates", "SealClaim", "ExecuteClaimV2"];

/// What every lifecycle of a run shares.
#[derive(Debug)]
pub struct Plan {
    pub holdout_ref: String,
    pub module: Vec<u8>,
    pub module_hash: Vec<u8>,
    /// Makes claim names (and so claim ids) unique to this run, so reruns on one log never collide.
    pub run_tag: String,
}

impl Plan {
    pub fn new(holdout_ref: String, module: Vec<u8>) -> Self {
        use sha2::Digest;
        let module_hash = sha2::Sha256::digest(&module).to_vec();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        Self { holdout_ref, module, module_hash, run_tag: format!("{}-{nanos}", std::process::id()) }
    }

    /// `bench-<pid>-<nanos>-<phase>-<n>`: a valid claim name and `x-request-id` prefix (SPEC §1).
    fn claim_name(&self, phase: &str, n: u64) -> String {
        format!("bench-{}-{phase}-{n}", self.run_tag)
    }
}

/// What one or more clients observed.
#[derive(Debug, Default)]
pub struct Tally {
    /// Per RPC, in the order of [`RPCS`].
    pub latencies: [Latencies; 5],
    pub completed: u64,
    /// Final claim state of each completed lifecycle (`CERTIFIED`, `REVOKED`, …).
    pub outcomes: BTreeMap<String, u64>,
    /// Failed RPCs by status name; the lifecycle is abandoned at its first failure.
    pub errors: BTreeMap<&'static str, u64>,
    /// First message seen per status, to tell the operator what went wrong.
    pub error_examples: BTreeMap<&'static str, String>,
}

impl Tally {
    pub fn merge(&mut self, other: Tally) {
        for (mine, theirs) in self.latencies.iter_mut().zip(other.latencies) {
            mine.merge(theirs);
        }
        self.completed += other.completed;
        for (state, n) in other.outcomes {
            *self.outcomes.entry(state).or_default() += n;
        }
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
        for (code, message) in other.error_examples {
            self.error_examples.entry(code).or_insert(message);
        }
    }

    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    fn record_error(&mut self, error: RpcError) {
        *self.errors.entry(error.code).or_default() += 1;
        self.error_examples.entry(error.code).or_insert(error.message);
    }
}

/// Live counters the progress reporter reads.
#[derive(Debug, Default)]
pub struct Progress {
    pub completed: AtomicU64,
    pub failed: AtomicU64,
}

/// `CERTIFIED` for `CLAIM_STATE_CERTIFIED`; unknown numbers as `UNKNOWN(n)`.
pub fn state_name(state: i32) -> String {
    match v2::ClaimState::try_from(state) {
        Ok(state) => state.as_str_name().trim_start_matches("CLAIM_STATE_").to_string(),
        Err(_) => format!("UNKNOWN({state})"),
    }
}

/// Runs `count` lifecycles, numbered from `first` (claim names must not repeat within a phase),
/// with `concurrency` clients, each on its own connection.
pub async fn run_lifecycles(
    settings: &ConnectionSettings,
    plan: Arc<Plan>,
    phase: &'static str,
    first: u64,
    count: u64,
    concurrency: u32,
    progress: Arc<Progress>,
) -> Result<(Tally, Duration), String> {
    let clients = u64::from(concurrency).min(count).max(1);
    let mut connections = Vec::new();
    for _ in 0..clients {
        connections.push(Connection::connect(settings).await?);
    }
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for connection in connections {
        let (plan, next, progress) = (plan.clone(), next.clone(), progress.clone());
        workers.push(tokio::spawn(async move {
            client_loop(connection, &plan, phase, first, count, &next, &progress).await
        }));
    }
    let mut tally = Tally::default();
    for worker in workers {
        tally.merge(worker.await.map_err(|e| format!("a client task failed: {e}"))?);
    }
    Ok((tally, started.elapsed()))
}

async fn client_loop(
    mut connection: Connection,
    plan: &Plan,
    phase: &str,
    first: u64,
    count: u64,
    next: &AtomicU64,
    progress: &Progress,
) -> Tally {
    let mut tally = Tally::default();
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= count {
            return tally;
        }
        match lifecycle(&mut connection, plan, &plan.claim_name(phase, first + n), &mut tally).await {
            Ok(state) => {
                tally.completed += 1;
                *tally.outcomes.entry(state_name(state)).or_default() += 1;
                progress.completed.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                tally.record_error(error);
                progress.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One complete lifecycle; returns the final claim state.
async fn lifecycle(connection: &mut Connection, plan: &Plan, name: &str, tally: &mut Tally) -> Result<i32, RpcError> {
    let create = create_claim_v2_request(&CreateClaimV2::fast_legacy(name, plan.holdout_ref.as_str()));
    let t = Instant::now();
    let created = connection.create_claim_v2(create, &format!("{name}-create")).await?;
    tally.latencies[0].record(t.elapsed());
    if created.state != v2::ClaimState::Uncommitted as i32 {
        return Err(RpcError {
            code: "UNEXPECTED_STATE",
            message: format!("CreateClaimV2 answered {} for a new claim name", state_name(created.state)),
        });
    }
    let claim_id = created.claim_id;

    let commit = v2::CommitArtifactsRequest {
        claim_id: claim_id.clone(),
        artifacts: vec![v2::Artifact { artifact_hash: plan.module_hash.clone(), kind: "wasm".into() }],
        wasm_module: plan.module.clone(),
    };
    let t = Instant::now();
    connection.commit_artifacts(commit).await?;
    tally.latencies[1].record(t.elapsed());

    let t = Instant::now();
    connection.freeze_gates(v2::FreezeGatesRequest { claim_id: claim_id.clone() }).await?;
    tally.latencies[2].record(t.elapsed());

    let t = Instant::now();
    connection.seal_claim(v2::SealClaimRequest { claim_id: claim_id.clone() }).await?;
    tally.latencies[3].record(t.elapsed());

    let t = Instant::now();
    let executed =
        connection.execute_claim_v2(v2::ExecuteClaimV2Request { claim_id }, &format!("{name}-execute")).await?;
    tally.latencies[4].record(t.elapsed());
    Ok(executed.state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_names_are_valid_request_ids_and_unique_per_run() {
        let plan = Plan::new("demo".into(), b"\0asm".to_vec());
        let name = plan.claim_name("measure", 123_456_789);
        assert!(name.len() <= 120, "room for the -create/-execute suffix: {name}");
        assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b)), "{name}");
        assert_ne!(Plan::new("demo".into(), Vec::new()).run_tag, Plan::new("demo".into(), Vec::new()).run_tag);
        assert_eq!(plan.module_hash.len(), 32);
    }

    #[test]
    fn tallies_merge_counts_and_samples() {
        let mut a = Tally { completed: 2, ..Tally::default() };
        a.outcomes.insert("CERTIFIED".into(), 2);
        a.latencies[4].record(Duration::from_micros(10));
        let mut b = Tally { completed: 1, ..Tally::default() };
        b.outcomes.insert("CERTIFIED".into(), 1);
        b.record_error(RpcError { code: "UNAVAILABLE", message: "down".into() });
        b.record_error(RpcError { code: "UNAVAILABLE", message: "later".into() });
        b.latencies[4].record(Duration::from_micros(20));
        a.merge(b);
        assert_eq!((a.completed, a.outcomes["CERTIFIED"], a.error_total()), (3, 3, 2));
        assert_eq!(a.error_examples["UNAVAILABLE"], "down");
        assert_eq!(a.latencies[4].len(), 2);
        assert_eq!(state_name(6), "CERTIFIED");
        assert_eq!(state_name(99), "UNKNOWN(99)");
    }
}
