//! `evidenceosctl`, the operator and client command line of EvidenceOS (binary:
//! `src/bin/evidenceosctl.rs`). Every subcommand talks gRPC to a running `evidenceosd`.

mod args;
mod claim;
mod client;
mod output;
mod verify;

use std::process::ExitCode;

use clap::Parser;

use args::{CapsuleCommand, ClaimCommand, Cli, Command};
use client::{Client, Failure};

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return report(&Failure::Message(format!("cannot start the async runtime: {e}"))),
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(failure) => report(&failure),
    }
}

fn report(failure: &Failure) -> ExitCode {
    for line in failure.lines() {
        eprintln!("{line}");
    }
    ExitCode::FAILURE
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let mut client = Client::connect(&cli.connection).await?;
    match cli.command {
        Command::Claim(ClaimCommand::Run(args)) => {
            let outcome = claim::run(&mut client, &args).await?;
            let text = if args.json { format!("{}\n", outcome.to_json()) } else { outcome.to_text() };
            output::stdout(&text);
            Ok(ExitCode::SUCCESS)
        }
        Command::Capsule(CapsuleCommand::Verify(args)) => {
            let fetched = verify::fetch(&mut client, &args.claim_id).await?;
            let report = verify::verify(&args.claim_id, &fetched);
            let text = if args.json { format!("{}\n", report.to_json()) } else { report.to_text() };
            output::stdout(&text);
            Ok(if report.verified() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}
