//! `evidenceos-grow`: fills a data directory with settled claims through the kernel in-process
//! (no RPC), so benchmarks at 10^5..10^7 settled claims start from one reproducible command.
//!
//! Each lifecycle is the five commands `evidenceos-bench` sends (CreateClaimV2 and ExecuteClaimV2
//! with an `x-request-id`, like the bench), applied by the real kernel and written by the sync
//! runtime's `FileExecutor`, so the directory is exactly what a daemon would have written. The
//! claims go in chunks: one chunk of each command per storage batch, never all N in memory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use evidenceos_core::environment::Settings;
use evidenceos_core::request::{ArtifactInput, CreateClaimV2, IdempotencyKey};
use evidenceos_core::state::Policy;
use evidenceos_core::{Command, Input, Kernel, KernelConfig, Output, Principal, Request, RequestId, Response};
use evidenceos_io_sync::{DataDir, FileExecutor, drive, now};

/// The holdout installed when the data directory has none: `examples/holdouts/demo`, with the
/// pool budgets `bench/scripts/daemon-run.sh` gives it, so millions of lifecycles fit.
const DEMO_MANIFEST: &str = include_str!("../../examples/holdouts/demo/manifest.json");
const DEMO_LABELS: &[u8] = include_bytes!("../../examples/holdouts/demo/labels.bin");
const DEMO_POOL_BUDGET: f64 = 1e15;

/// The claim code `evidenceos-bench` runs by default (certifies against the demo holdout).
const CLAIM_WAT: &str = include_str!("../../examples/claim_mod3.wat");

/// Most claims per chunk: the kernel's largest batch (`KernelConfig::max_batch_commands`).
pub const MAX_CHUNK: usize = 1024;

/// What to grow.
#[derive(Debug, Clone)]
pub struct GrowPlan {
    pub data_dir: PathBuf,
    pub claims: u64,
    pub holdout_ref: String,
    /// Claims per chunk (1..=[`MAX_CHUNK`]).
    pub chunk: usize,
    /// Makes claim names unique to this run, so a second run on one directory adds claims.
    pub run_tag: String,
}

/// What a grow run did, for the summary line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GrowReport {
    pub claims: u64,
    /// Final state name → claims that ended in it.
    pub outcomes: std::collections::BTreeMap<String, u64>,
    pub tree_size: u64,
    pub etl_bytes: u64,
    pub state_bytes: u64,
    pub state_log_bytes: u64,
    pub journal_bytes: u64,
    pub elapsed: Duration,
}

impl GrowReport {
    pub fn to_text(&self) -> String {
        let secs = self.elapsed.as_secs_f64();
        let per_claim = |bytes: u64| bytes as f64 / self.claims.max(1) as f64;
        format!(
            "grew {} claims in {secs:.1} s ({:.0} claims/s), outcomes {:?}\nleaves {}\netl.log {} bytes ({:.0} per claim)\nstate.json {} bytes\nrow files (state.0.log, state.1.log) {} bytes ({:.0} per claim)\njournal.log {} bytes\n",
            self.claims,
            self.claims as f64 / secs.max(1e-9),
            self.outcomes,
            self.tree_size,
            self.etl_bytes,
            per_claim(self.etl_bytes),
            self.state_bytes,
            self.state_log_bytes,
            per_claim(self.state_log_bytes),
            self.journal_bytes,
        )
    }
}

/// The kernel on its directory, with the executor that writes its effects.
#[derive(Debug)]
struct Grower {
    kernel: Kernel,
    executor: FileExecutor,
    principal: Principal,
    module: Vec<u8>,
    module_hash: Vec<u8>,
    next_request: u64,
}

/// Grows `plan.data_dir` by `plan.claims` settled claims; `progress` gets one line per chunk
/// at most every `progress_every`.
pub fn grow(plan: &GrowPlan, progress_every: Duration, progress: &mut dyn FnMut(&str)) -> Result<GrowReport, String> {
    if plan.chunk == 0 || plan.chunk > MAX_CHUNK {
        return Err(format!("--chunk must be 1..={MAX_CHUNK}"));
    }
    let started = Instant::now();
    let dir = DataDir::open(&plan.data_dir).map_err(|e| e.to_string())?;
    dir.ensure_signing_key().map_err(|e| e.to_string())?;
    install_demo_holdout(&plan.data_dir, &plan.holdout_ref)?;
    let mut grower = Grower::start(&dir)?;
    let mut report = GrowReport::default();
    let mut last_line = Instant::now();
    while report.claims < plan.claims {
        let count = (plan.claims - report.claims).min(plan.chunk as u64);
        grower.chunk(plan, report.claims, count, &mut report)?;
        report.claims += count;
        if last_line.elapsed() >= progress_every || report.claims == plan.claims {
            last_line = Instant::now();
            let rate = report.claims as f64 / started.elapsed().as_secs_f64().max(1e-9);
            progress(&format!(
                "{}/{} claims, {} leaves, {rate:.0} claims/s",
                report.claims,
                plan.claims,
                grower.kernel.durable_tree_size()
            ));
        }
    }
    grower.checkpoint()?;
    report.tree_size = grower.kernel.durable_tree_size();
    drop(grower);
    let size = |file: evidenceos_core::FileId| std::fs::metadata(dir.path_of(file)).map_or(0, |m| m.len());
    report.etl_bytes = size(evidenceos_core::FileId::Etl);
    report.state_bytes = size(evidenceos_core::FileId::Checkpoint);
    report.state_log_bytes =
        evidenceos_core::RowFile::ALL.into_iter().map(|slot| size(evidenceos_core::FileId::StateLog(slot))).sum();
    report.journal_bytes = size(evidenceos_core::FileId::Journal);
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Writes `holdouts/<holdout_ref>/` from the demo holdout unless the directory has one already.
fn install_demo_holdout(data_dir: &Path, holdout_ref: &str) -> Result<(), String> {
    let dir = data_dir.join("holdouts").join(holdout_ref);
    if dir.exists() {
        return Ok(());
    }
    let mut manifest: serde_json::Value = serde_json::from_str(DEMO_MANIFEST).map_err(|e| e.to_string())?;
    manifest["holdout_k_bits_budget"] = DEMO_POOL_BUDGET.into();
    manifest["holdout_access_credit_budget"] = DEMO_POOL_BUDGET.into();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let write = |name: &str, bytes: &[u8]| {
        evidenceos_io_sync::write_atomically(&dir.join(name), bytes).map_err(|e| e.to_string())
    };
    write("labels.bin", DEMO_LABELS)?;
    write("manifest.json", manifest.to_string().as_bytes())
}

impl Grower {
    /// Recovers the kernel as `evidenceosd` does with its default flags.
    fn start(dir: &DataDir) -> Result<Self, String> {
        let environment = dir.read_environment(Settings::default()).map_err(|e| e.to_string())?;
        let config = KernelConfig { policy: Policy::default(), environment, ..KernelConfig::default() };
        let files = dir.read_recovery_files().map_err(|e| e.to_string())?;
        let mut kernel = Kernel::recover(config, files).map_err(|e| format!("recovery failed: {e}"))?;
        let mut executor = FileExecutor::new(dir).map_err(|e| e.to_string())?;
        drive(&mut kernel, &mut executor, now());
        if kernel.is_failed() || kernel.is_recovering() {
            return Err("could not make the recovered data directory durable".into());
        }
        let module = wat::parse_str(CLAIM_WAT).map_err(|e| e.to_string())?;
        let module_hash = evidenceos_core::hash::sha256(&module).to_vec();
        Ok(Self { kernel, executor, principal: Principal::anonymous(), module, module_hash, next_request: 0 })
    }

    /// Runs lifecycles `first..first + count`, each command of the chunk in one batch.
    fn chunk(&mut self, plan: &GrowPlan, first: u64, count: u64, report: &mut GrowReport) -> Result<(), String> {
        let names: Vec<String> = (first..first + count).map(|n| format!("grow-{}-{n}", plan.run_tag)).collect();
        let creates = names.iter().map(|name| {
            let create = CreateClaimV2::fast_legacy(name.clone(), plan.holdout_ref.clone());
            keyed("CreateClaimV2", format!("{name}-create"), Command::CreateClaimV2(Box::new(create)))
        });
        let mut claim_ids = Vec::with_capacity(names.len());
        for response in self.round(creates.collect())? {
            let Response::ClaimCreated { claim_id, .. } = response else {
                return Err(format!("CreateClaimV2 answered {response:?}"));
            };
            claim_ids.push(claim_id.to_vec());
        }
        let artifacts = vec![ArtifactInput { kind: "wasm".into(), hash: self.module_hash.clone() }];
        let commits = claim_ids.iter().map(|id| {
            let wasm_module = self.module.clone();
            Request::Command(Command::CommitArtifacts {
                claim_id: id.clone(),
                artifacts: artifacts.clone(),
                wasm_module,
            })
        });
        self.round(commits.collect())?;
        let freezes = claim_ids.iter().map(|id| Request::Command(Command::FreezeGates { claim_id: id.clone() }));
        self.round(freezes.collect())?;
        let seals = claim_ids.iter().map(|id| Request::Command(Command::SealClaim { claim_id: id.clone() }));
        self.round(seals.collect())?;
        let executes = claim_ids.iter().zip(&names).map(|(id, name)| {
            keyed("ExecuteClaimV2", format!("{name}-execute"), Command::ExecuteClaimV2 { claim_id: id.clone() })
        });
        for response in self.round(executes.collect())? {
            let Response::Executed(execution) = response else {
                return Err(format!("ExecuteClaimV2 answered {response:?}"));
            };
            *report.outcomes.entry(execution.state.name().to_string()).or_default() += 1;
        }
        Ok(())
    }

    /// Sends every request, carries out the kernel's effects until all are answered, and
    /// returns the replies in request order; any refusal ends the run.
    fn round(&mut self, requests: Vec<Request>) -> Result<Vec<Response>, String> {
        let first = self.next_request;
        let at = now();
        for request in requests {
            let id = RequestId(self.next_request);
            self.next_request += 1;
            self.kernel.handle(at, Input::Request { id, principal: self.principal.clone(), request });
        }
        let mut replies: Vec<Option<Response>> = vec![None; (self.next_request - first) as usize];
        for output in drive(&mut self.kernel, &mut self.executor, at) {
            match output {
                Output::Reply(id, Ok(response)) => replies[(id.0 - first) as usize] = Some(response),
                Output::Reply(_, Err(error)) => return Err(format!("refused: {error}")),
                Output::Event(evidenceos_core::LogEvent::StorageFailed { file, reason }) => {
                    return Err(format!("{}: {reason}", file.file_name()));
                }
                _ => {}
            }
        }
        replies.into_iter().map(|reply| reply.ok_or_else(|| "a request was never answered".to_string())).collect()
    }

    /// A final checkpoint, as a daemon writes at shutdown, so the next start replays nothing.
    fn checkpoint(&mut self) -> Result<(), String> {
        self.kernel.handle(now(), Input::Checkpoint);
        drive(&mut self.kernel, &mut self.executor, now());
        if self.kernel.is_failed() { Err("the final checkpoint failed".into()) } else { Ok(()) }
    }
}

/// A command with an `x-request-id`, as `evidenceos-bench` sends CreateClaimV2 and
/// ExecuteClaimV2. The body digest is the command's journal encoding (an RPC hashes its body).
fn keyed(method: &str, request_id: String, command: Command) -> Request {
    let body = serde_json::to_vec(&command).expect("commands serialize");
    let body_hash = evidenceos_core::hash::sha256(&body).to_vec();
    Request::IdempotentCommand { key: IdempotencyKey { method: method.into(), request_id, body_hash }, command }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_a_directory_that_recovers_with_every_claim_settled() {
        let dir = tempfile::tempdir().unwrap();
        let plan = GrowPlan {
            data_dir: dir.path().to_path_buf(),
            claims: 7,
            holdout_ref: "demo".into(),
            chunk: 3,
            run_tag: "t".into(),
        };
        let mut lines = Vec::new();
        let report = grow(&plan, Duration::ZERO, &mut |line| lines.push(line.to_string())).unwrap();
        assert_eq!(report.claims, 7);
        assert_eq!(report.outcomes.values().sum::<u64>(), 7);
        assert_eq!(report.tree_size, 7, "one capsule leaf per lifecycle");
        assert!(report.etl_bytes > 0 && report.state_bytes > 0);
        assert_eq!(lines.len(), 3, "one progress line per chunk: {lines:?}");
        // A second run adds to the directory under a new tag; recovery sees all of it.
        let again = GrowPlan { claims: 2, run_tag: "u".into(), ..plan };
        assert_eq!(grow(&again, Duration::from_secs(3600), &mut |_| {}).unwrap().tree_size, 9);
        let data = DataDir::open(dir.path()).unwrap();
        let grower = Grower::start(&data).unwrap();
        assert_eq!(grower.kernel.state().claims.claims.len(), 9);
    }
}
