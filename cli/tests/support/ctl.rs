//! `evidenceosctl` run as a user runs it: from the crate directory (so `../examples/…` works),
//! with no token from the environment and no standard input.

use std::process::{Command, Stdio};

#[derive(Debug)]
pub(crate) struct Ran {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

pub(crate) fn ctl(args: &[&str]) -> Ran {
    let output = Command::new(env!("CARGO_BIN_EXE_evidenceosctl"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("EVIDENCEOS_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("run evidenceosctl");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    Ran { code: output.status.code(), stdout: text(output.stdout), stderr: text(output.stderr) }
}
