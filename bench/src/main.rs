//! `evidenceos-bench`: see `evidenceos-bench --help`.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use evidenceos_bench::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("evidenceos-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let quiet = args.quiet;
    let progress: Arc<dyn Fn(&str) + Send + Sync> = Arc::new(move |line: &str| {
        if !quiet {
            let _ = writeln!(std::io::stderr().lock(), "evidenceos-bench: {line}");
        }
    });
    match runtime.block_on(evidenceos_bench::run(&args, progress)) {
        Ok(report) => {
            let mut out = std::io::stdout().lock();
            if !args.json_only {
                let _ = out.write_all(report.to_text().as_bytes());
            }
            let _ = writeln!(out, "{}", report.to_json());
            let _ = out.flush();
            // Errors are results to report, not a failure of the tool; a run with none completed is.
            if report.completed == 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
        }
        Err(message) => {
            eprintln!("evidenceos-bench: {message}");
            ExitCode::FAILURE
        }
    }
}
