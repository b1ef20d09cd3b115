//! `evidenceos-grow`: builds a data directory with N settled claims, in-process and fast, for
//! benchmarks at 10^5..10^7 settled claims. `evidenceosd --data-dir D` then starts on it.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use evidenceos_bench::grow::{GrowPlan, MAX_CHUNK, grow};

/// Grows a data directory by N settled claims through the kernel (no RPC): the five commands of
/// an `evidenceos-bench` lifecycle each, written by the sync runtime's file executor in batches
/// of --chunk commands. Installs the demo holdout (pool budgets raised, as
/// bench/scripts/daemon-run.sh does) unless `holdouts/<REF>/` exists, and generates a signing key
/// if none exists. Progress goes to stderr every 2 s; a summary (claims, leaves, file sizes,
/// elapsed) to stdout. Run it with no daemon on the directory (the directory lock refuses one).
#[derive(Debug, Parser)]
#[command(name = "evidenceos-grow", version, about, long_about)]
struct Args {
    /// Data directory; created if absent. Claims are added to whatever it holds.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,

    /// Settled claims to add.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    claims: u64,

    /// Holdout the claims are judged against.
    #[arg(long, default_value = "demo", value_name = "REF")]
    holdout_ref: String,

    /// Claims per storage batch (each of the five commands of a chunk is one batch).
    #[arg(long, default_value_t = MAX_CHUNK, value_name = "N")]
    chunk: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let plan = GrowPlan {
        data_dir: args.data_dir,
        claims: args.claims,
        holdout_ref: args.holdout_ref,
        chunk: args.chunk,
        run_tag: format!("{}-{nanos}", std::process::id()),
    };
    let mut progress = |line: &str| {
        let _ = writeln!(std::io::stderr().lock(), "evidenceos-grow: {line}");
    };
    match grow(&plan, Duration::from_secs(2), &mut progress) {
        Ok(report) => {
            let _ = std::io::stdout().lock().write_all(report.to_text().as_bytes());
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("evidenceos-grow: {message}");
            ExitCode::FAILURE
        }
    }
}
