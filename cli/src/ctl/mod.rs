//! `evidenceosctl`, the operator and client command line of EvidenceOS (binary:
//! `src/bin/evidenceosctl.rs`). `claim` and `capsule` talk gRPC to a running `evidenceosd`; the
//! operator commands work on its data directory (see [`operator`]).

mod args;
mod claim;
mod client;
mod log;
mod operator;
mod operator_args;
mod output;
mod verify;

use std::process::ExitCode;

use clap::Parser;

use args::{CapsuleCommand, ClaimCommand, Cli, Command};
use client::{Client, Failure};

pub(crate) fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => error.exit(), // --help, --version
        Err(error) => {
            // One line, like every other failure, so scripts and logs can grep it: the message
            // and what clap lists under it (a missing flag's name), up to the blank line.
            let text = error.render().to_string();
            let message: Vec<&str> = text.lines().take_while(|line| !line.trim().is_empty()).map(str::trim).collect();
            let message = message.join(" ");
            eprintln!("evidenceosctl: {} (see --help)", message.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    if cli.command.is_offline() {
        return match run_offline(&cli.command) {
            Ok((text, code)) => {
                output::stdout(&text);
                code
            }
            Err(message) => report(&Failure::Message(message)),
        };
    }
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
    failure.exit_code()
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
        offline => unreachable!("{offline:?} is an offline command; main runs it without a connection"),
    }
}

/// The operator commands: synchronous, on the data directory, one JSON result.
fn run_offline(command: &Command) -> operator::Outcome<(String, ExitCode)> {
    use operator::{audit, canary, epoch, events, keys, nullspec, oracle};
    use operator_args::{
        CanaryCommand as Canary, EpochCommand as Epoch, EventsCommand as Events, GovernanceCommand as Governance,
        KeysCommand as Keys, NullspecCommand as Nullspec, OracleCommand as Oracle,
    };
    let text = match command {
        Command::Keys(Keys::Generate(args)) => keys::generate(args)?,
        Command::Keys(Keys::List(args)) => keys::list(args)?,
        Command::Keys(Keys::Activate(args)) => keys::activate(args)?,
        Command::Nullspec(Nullspec::Create(args)) => nullspec::create(args)?,
        Command::Nullspec(Nullspec::Install(args)) => nullspec::install(args)?,
        Command::Nullspec(Nullspec::Activate(args)) => nullspec::activate(args)?,
        Command::Nullspec(Nullspec::List(args)) => nullspec::list(args)?,
        Command::Nullspec(Nullspec::Show(args)) => nullspec::show(args)?,
        Command::Oracle(Oracle::List(args)) => oracle::list(args)?,
        Command::Oracle(Oracle::Show(args)) => oracle::show(args)?,
        Command::Oracle(Oracle::SetTtl(args)) => oracle::set_ttl(args)?,
        Command::Oracle(Oracle::RotateCalibration(args)) => oracle::rotate_calibration(args)?,
        Command::Epoch(Epoch::Advance(args)) => epoch::advance(args)?,
        Command::Epoch(Epoch::Show(args)) => epoch::show(args)?,
        Command::Canary(Canary::Status(args)) => canary::status(args)?,
        Command::Canary(Canary::SignReset(args)) => canary::sign_reset(args)?,
        Command::Canary(Canary::Reset(args)) => canary::reset(args)?,
        Command::Governance(Governance::Events(Events::List(args))) => events::list(args)?,
        Command::Governance(Governance::Events(Events::Show(args))) => events::show(args)?,
        Command::Governance(Governance::Events(Events::Verify(args))) => events::verify(args)?,
        Command::Audit(args) => audit::audit(args)?,
        Command::Log(log::LogCommand::Verify(args)) => log::verify(args)?,
        Command::Log(log::LogCommand::Monitor(args)) => log::monitor(args)?,
        Command::Claim(_) | Command::Capsule(_) => unreachable!("online commands are not offline"),
    };
    Ok((text, ExitCode::SUCCESS))
}
