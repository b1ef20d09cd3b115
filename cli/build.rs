//! Records the commit the daemon was built from, for GetServerInfo. The build time is the commit
//! time, so the same source always builds the same binary. Outside a git checkout: "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let time = git(&["log", "-1", "--format=%cd", "--date=format-local:%Y-%m-%dT%H:%M:%SZ"])
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=EVIDENCEOS_BUILD_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=EVIDENCEOS_BUILD_TIME_UTC={time}");
    println!("cargo:rerun-if-changed=../.git/HEAD");
    println!("cargo:rerun-if-changed=../.git/refs/heads");
}
