//! `evidenceos-bench`: a load generator for the EvidenceOS protocol (SPEC §1).
//!
//! [`run`] does the whole job and returns a [`Report`]; the binary prints it. Integration tests
//! call [`run`] directly against a real daemon.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub mod args;
pub mod connect;
pub mod fsync_probe;
pub mod grow;
pub mod stats;
pub mod transport;
pub mod workload;

pub use args::Args;

use stats::LatencySummary;
use transport::{Connection, ConnectionSettings};
use workload::{Plan, Progress, RPCS, Tally};

/// The claim code used when `--wasm` is not given: certifies against the demo holdout.
const DEFAULT_CLAIM_WAT: &str = include_str!("../../examples/claim_mod3.wat");

/// How often a progress line is written on long runs.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Growing the log before measuring.
#[derive(Debug, Clone, PartialEq)]
pub struct Pregrow {
    pub leaves_requested: u64,
    pub tree_size_before: u64,
    pub lifecycles: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub tree_size_after: u64,
}

/// Everything one run measured.
#[derive(Debug)]
pub struct Report {
    pub endpoint: String,
    pub concurrency: u32,
    pub lifecycles_requested: u64,
    pub pregrow: Option<Pregrow>,
    pub tree_size_before: u64,
    pub tree_size_after: u64,
    pub elapsed: Duration,
    pub completed: u64,
    pub rpcs: Vec<(&'static str, LatencySummary)>,
    pub outcomes: std::collections::BTreeMap<String, u64>,
    pub errors: std::collections::BTreeMap<&'static str, u64>,
    pub error_examples: std::collections::BTreeMap<&'static str, String>,
    pub fdatasync: Option<LatencySummary>,
}

impl Report {
    fn from_tally(args: &Args, mut tally: Tally, elapsed: Duration) -> Self {
        let rpcs = RPCS.iter().zip(tally.latencies.iter_mut()).map(|(name, l)| (*name, l.summary())).collect();
        Self {
            endpoint: args.endpoint.clone(),
            concurrency: args.concurrency,
            lifecycles_requested: args.lifecycles,
            pregrow: None,
            tree_size_before: 0,
            tree_size_after: 0,
            elapsed,
            completed: tally.completed,
            rpcs,
            outcomes: tally.outcomes,
            errors: tally.errors,
            error_examples: tally.error_examples,
            fdatasync: None,
        }
    }

    pub fn lifecycles_per_sec(&self) -> f64 {
        per_sec(self.completed, self.elapsed)
    }

    /// Every successful RPC of the run is a durable mutation (all five lifecycle RPCs mutate).
    pub fn mutating_rpcs(&self) -> u64 {
        self.rpcs.iter().map(|(_, s)| s.count).sum()
    }

    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The final JSON line. Field names are stable: scripts parse them.
    pub fn to_json(&self) -> Value {
        let rpc: serde_json::Map<String, Value> =
            self.rpcs.iter().map(|(name, s)| ((*name).to_string(), s.to_json())).collect();
        let pregrow = self.pregrow.as_ref().map(|p| {
            json!({
                "leaves_requested": p.leaves_requested,
                "tree_size_before": p.tree_size_before,
                "lifecycles": p.lifecycles,
                "errors": p.errors,
                "elapsed_s": round3(p.elapsed.as_secs_f64()),
                "tree_size_after": p.tree_size_after,
            })
        });
        let single_client_ratio = match (&self.fdatasync, self.concurrency) {
            (Some(sync), 1) if sync.p50_us > 0 => {
                let worst_p50 = self.rpcs.iter().map(|(_, s)| s.p50_us).max().unwrap_or(0);
                Some(round3(f64::from(worst_p50) / f64::from(sync.p50_us)))
            }
            _ => None,
        };
        json!({
            "tool": "evidenceos-bench",
            "version": env!("CARGO_PKG_VERSION"),
            "endpoint": self.endpoint,
            "concurrency": self.concurrency,
            "lifecycles_requested": self.lifecycles_requested,
            "lifecycles_completed": self.completed,
            "lifecycles_failed": self.error_total(),
            "elapsed_s": round3(self.elapsed.as_secs_f64()),
            "lifecycles_per_s": round3(self.lifecycles_per_sec()),
            "mutating_rpcs": self.mutating_rpcs(),
            "mutating_rpcs_per_s": round3(per_sec(self.mutating_rpcs(), self.elapsed)),
            "rpc": rpc,
            "outcomes": self.outcomes,
            "errors": self.errors,
            "tree_size_before": self.tree_size_before,
            "tree_size_after": self.tree_size_after,
            "pregrow": pregrow,
            "fdatasync": self.fdatasync.map(LatencySummary::to_json),
            "slowest_rpc_p50_over_fdatasync_p50": single_client_ratio,
        })
    }

    /// The human summary printed before the JSON line.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "endpoint {}  concurrency {}\nlifecycles {}/{} in {:.2} s: {:.1} lifecycles/s, {:.1} durable mutating RPCs/s\n",
            self.endpoint,
            self.concurrency,
            self.completed,
            self.lifecycles_requested,
            self.elapsed.as_secs_f64(),
            self.lifecycles_per_sec(),
            per_sec(self.mutating_rpcs(), self.elapsed),
        );
        text.push_str(&format!("log: tree size {} -> {}\n", self.tree_size_before, self.tree_size_after));
        if let Some(p) = &self.pregrow {
            text.push_str(&format!(
                "pregrow: {} -> {} leaves with {} lifecycles ({} errors) in {:.2} s\n",
                p.tree_size_before,
                p.tree_size_after,
                p.lifecycles,
                p.errors,
                p.elapsed.as_secs_f64()
            ));
        }
        text.push_str(&format!(
            "{:<16} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            "rpc", "count", "p50 µs", "p95 µs", "p99 µs", "max µs"
        ));
        let rows = self.rpcs.iter().map(|(n, s)| (*n, *s)).chain(self.fdatasync.map(|s| ("raw fdatasync", s)));
        for (name, s) in rows {
            text.push_str(&format!(
                "{name:<16} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
                s.count, s.p50_us, s.p95_us, s.p99_us, s.max_us
            ));
        }
        let outcomes: Vec<String> = self.outcomes.iter().map(|(k, v)| format!("{k}={v}")).collect();
        text.push_str(&format!(
            "outcomes: {}\n",
            if outcomes.is_empty() { "(none)".into() } else { outcomes.join(" ") }
        ));
        if self.errors.is_empty() {
            text.push_str("errors: none\n");
        } else {
            for (code, n) in &self.errors {
                let example = self.error_examples.get(code).map(String::as_str).unwrap_or_default();
                text.push_str(&format!("errors: {code} x{n} (first: {example})\n"));
            }
        }
        text
    }
}

fn per_sec(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The claim code: `--wasm` (binary or text) or the shipped example.
fn load_module(args: &Args) -> Result<Vec<u8>, String> {
    match &args.wasm {
        Some(path) => wat::parse_file(path).map_err(|e| format!("cannot load {}: {e}", path.display())),
        None => wat::parse_str(DEFAULT_CLAIM_WAT).map_err(|e| format!("the built-in claim does not compile: {e}")),
    }
}

/// Stops its progress task when dropped, on every return path.
struct Ticker(tokio::task::JoinHandle<()>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Writes `label: completed/total, failed, rate` to `out` every [`PROGRESS_EVERY`] while the
/// returned [`Ticker`] lives.
fn spawn_progress(
    label: &'static str,
    total: Option<u64>,
    progress: Arc<Progress>,
    out: Arc<dyn Fn(&str) + Send + Sync>,
) -> Ticker {
    Ticker(tokio::spawn(async move {
        let started = Instant::now();
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
        loop {
            ticker.tick().await;
            let done = progress.completed.load(Ordering::Relaxed);
            let failed = progress.failed.load(Ordering::Relaxed);
            let of_total = total.map(|total| format!("/{total}")).unwrap_or_default();
            out(&format!(
                "{label}: {done}{of_total} lifecycles, {failed} failed, {:.0}/s, {:.0} s",
                per_sec(done, started.elapsed()),
                started.elapsed().as_secs_f64()
            ));
        }
    }))
}

/// Connects, optionally grows the log and probes fdatasync, runs the measured lifecycles, and
/// reports. `progress` receives the periodic status lines.
pub async fn run(args: &Args, progress: Arc<dyn Fn(&str) + Send + Sync>) -> Result<Report, String> {
    let settings = ConnectionSettings::from_args(args)?;
    let plan = Arc::new(Plan::new(args.holdout_ref.clone(), load_module(args)?));
    let mut probe = Connection::connect(&settings).await?;
    let tree_size = |e: transport::RpcError| format!("GetSignedTreeHead failed: {} {}", e.code, e.message);

    let mut pregrow = None;
    if let Some(target) = args.pregrow_leaves {
        let before = probe.tree_size().await.map_err(tree_size)?;
        let counters = Arc::new(Progress::default());
        // The number of lifecycles is not known up front: progress shows lifecycles done.
        let ticker = spawn_progress("pregrow", None, counters.clone(), progress.clone());
        let (mut size, mut lifecycles, mut errors, mut elapsed) = (before, 0, 0, Duration::ZERO);
        // Leaves per lifecycle depend on the server (a capsule, sometimes an incident): measure
        // them on a first chunk, then size the rest.
        let mut chunk = target.saturating_sub(size).min(u64::from(args.concurrency) * 4);
        while size < target {
            let (tally, took) = workload::run_lifecycles(
                &settings,
                plan.clone(),
                "grow",
                lifecycles,
                chunk,
                args.concurrency,
                counters.clone(),
            )
            .await?;
            let grown = probe.tree_size().await.map_err(tree_size)?;
            lifecycles += chunk;
            errors += tally.error_total();
            elapsed += took;
            if grown <= size {
                return Err(format!(
                    "pregrow: the log did not grow ({} errors; first: {:?})",
                    errors, tally.error_examples
                ));
            }
            let per_lifecycle = (grown - size).div_ceil(tally.completed.max(1)).max(1);
            size = grown;
            chunk = target.saturating_sub(size).div_ceil(per_lifecycle);
        }
        drop(ticker);
        pregrow = Some(Pregrow {
            leaves_requested: target,
            tree_size_before: before,
            lifecycles,
            errors,
            elapsed,
            tree_size_after: size,
        });
    }

    let fdatasync = match &args.measure_fdatasync {
        Some(dir) => Some(
            fsync_probe::measure(dir, args.fdatasync_samples)
                .map_err(|e| format!("fdatasync probe in {}: {e}", dir.display()))?,
        ),
        None => None,
    };

    let before = probe.tree_size().await.map_err(tree_size)?;
    let counters = Arc::new(Progress::default());
    let ticker = spawn_progress("measure", Some(args.lifecycles), counters.clone(), progress);
    let result =
        workload::run_lifecycles(&settings, plan, "measure", 0, args.lifecycles, args.concurrency, counters).await;
    drop(ticker);
    let (tally, elapsed) = result?;
    let after = probe.tree_size().await.map_err(tree_size)?;

    let mut report = Report::from_tally(args, tally, elapsed);
    report.pregrow = pregrow;
    report.tree_size_before = before;
    report.tree_size_after = after;
    report.fdatasync = fdatasync;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn report() -> Report {
        let args = Args::parse_from(["evidenceos-bench", "--lifecycles", "4"]);
        let mut tally = Tally::default();
        for latencies in &mut tally.latencies {
            for us in [100, 200, 300] {
                latencies.record(Duration::from_micros(us));
            }
        }
        tally.completed = 3;
        tally.outcomes.insert("CERTIFIED".into(), 3);
        tally.errors.insert("UNAVAILABLE", 1);
        tally.error_examples.insert("UNAVAILABLE", "down".into());
        Report::from_tally(&args, tally, Duration::from_secs(2))
    }

    #[test]
    fn the_json_line_has_stable_fields_that_add_up() {
        let mut report = report();
        let json = report.to_json();
        let line = json.to_string();
        assert!(!line.contains('\n'));
        assert_eq!(json["lifecycles_completed"], 3);
        assert_eq!(json["lifecycles_failed"], 1);
        assert_eq!(json["lifecycles_per_s"], 1.5);
        assert_eq!(json["mutating_rpcs"], 15);
        assert_eq!(json["mutating_rpcs_per_s"], 7.5);
        assert_eq!(json["rpc"]["ExecuteClaimV2"]["p50_us"], 200);
        assert_eq!(json["rpc"].as_object().unwrap().len(), 5);
        assert_eq!(json["outcomes"]["CERTIFIED"], 3);
        assert_eq!(json["errors"]["UNAVAILABLE"], 1);
        assert!(json["pregrow"].is_null() && json["fdatasync"].is_null());
        assert!(json["slowest_rpc_p50_over_fdatasync_p50"].is_null());

        report.concurrency = 1;
        report.fdatasync = Some(LatencySummary { count: 10, p50_us: 100, p95_us: 150, p99_us: 190, max_us: 200 });
        assert_eq!(report.to_json()["slowest_rpc_p50_over_fdatasync_p50"], 2.0);
        let text = report.to_text();
        assert!(text.contains("1.5 lifecycles/s"), "{text}");
        assert!(text.contains("raw fdatasync"), "{text}");
        assert!(text.contains("errors: UNAVAILABLE x1 (first: down)"), "{text}");
    }

    #[test]
    fn the_default_claim_compiles() {
        let args = Args::parse_from(["evidenceos-bench"]);
        assert!(load_module(&args).unwrap().starts_with(b"\0asm"));
    }
}
