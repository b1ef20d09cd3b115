//! `evidenceosctl`: run claims on an EvidenceOS daemon and verify their capsules.
//!
//! The implementation lives in `src/ctl/`; `evidenceosctl --help` describes the commands.

#[path = "../ctl/mod.rs"]
mod ctl;

fn main() -> std::process::ExitCode {
    ctl::main()
}
