//! Runs the real `evidenceosd` for integration tests: loopback, a free port, a temporary data
//! directory, bounded waits, and a kill on drop so no test leaves a daemon behind.
#![allow(dead_code)] // each test binary uses its own subset

pub(crate) mod ctl;
pub(crate) mod http;
pub(crate) mod moto;
pub(crate) mod pki;
pub(crate) mod rpc;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct Daemon {
    pub(crate) child: Child,
    /// `http://127.0.0.1:PORT`
    pub(crate) addr: String,
    pub(crate) key_id: String,
    pub(crate) stderr: PathBuf,
}

/// Starts the daemon on `data_dir` with `extra` flags and `env` variables, and waits for its
/// "evidenceosd listening on ADDR (signing key id HEX, data dir PATH)" line.
pub(crate) fn start_with(data_dir: &Path, log_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
    start_command(Command::new(env!("CARGO_BIN_EXE_evidenceosd")), data_dir, log_dir, extra, env)
}

/// As [`start_with`], the daemon run by `sh -c SCRIPT`, which must end with `exec "$0" "$@"`:
/// e.g. to set a resource limit first. The shell's process becomes the daemon's.
pub(crate) fn start_under_shell(
    script: &str,
    data_dir: &Path,
    log_dir: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Daemon {
    let mut command = Command::new("sh");
    command.arg("-c").arg(script).arg(env!("CARGO_BIN_EXE_evidenceosd"));
    start_command(command, data_dir, log_dir, extra, env)
}

fn start_command(
    mut command: Command,
    data_dir: &Path,
    log_dir: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Daemon {
    let stderr = log_dir.join(format!("daemon-{}.log", unique()));
    command
        .args(["--listen", "127.0.0.1:0", "--shutdown-grace-secs", "1", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("spawn evidenceosd");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
    let Some(addr) = line.split_whitespace().nth(3) else {
        let _ = child.kill();
        panic!("no listening line; stderr:\n{}", std::fs::read_to_string(&stderr).unwrap_or_default())
    };
    let key_id = line.split("signing key id ").nth(1).and_then(|rest| rest.split(',').next()).unwrap_or_default();
    Daemon { addr: format!("http://{addr}"), key_id: key_id.to_string(), child, stderr }
}

pub(crate) fn start(data_dir: &Path, log_dir: &Path) -> Daemon {
    start_with(data_dir, log_dir, &[], &[])
}

fn unique() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

impl Daemon {
    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
    }

    /// After `signal("STOP")`: returns once the process is stopped (state `T` in /proc).
    pub(crate) fn wait_until_stopped(&self) {
        let deadline = Instant::now() + STOP_TIMEOUT;
        let stat = format!("/proc/{}/stat", self.child.id());
        // The state is the first field after the parenthesised command name.
        while !std::fs::read_to_string(&stat).unwrap().rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T'))
        {
            assert!(Instant::now() < deadline, "the daemon did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub(crate) fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "daemon did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and expect a clean exit.
    pub(crate) fn stop(mut self) {
        self.signal("TERM");
        let status = self.wait();
        assert!(status.success(), "exit {status:?}; stderr:\n{}", self.log());
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// RevokeClaim over the sync runtime's Connect protocol (JSON), on a connection of its own.
pub(crate) fn revoke_over_connect(daemon: &Daemon, token: &str, claim_id_hex: &str) {
    use base64::Engine as _;
    use std::io::{Read, Write};
    let host = daemon.addr.trim_start_matches("http://");
    let body = serde_json::json!({"claimId": base64::engine::general_purpose::STANDARD.encode(hex::decode(claim_id_hex).unwrap()), "reason": "withdrawn"}).to_string();
    let request = format!(
        "POST /evidenceos.v2.EvidenceOS/RevokeClaim HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAuthorization: Bearer {token}\r\nx-request-id: revoke-1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    stream.set_read_timeout(Some(STOP_TIMEOUT)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Every file below `root` (recursively), sorted.
pub(crate) fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Waits (at most 30 s) until the checkpoint published in `publish` covers `size` leaves;
/// returns its size.
pub(crate) fn wait_published(publish: &Path, size: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(publish.join("checkpoint")).unwrap_or_default();
        let published = text.lines().nth(1).and_then(|l| l.parse::<u64>().ok());
        if let Some(published) = published.filter(|p| *p >= size) {
            return published;
        }
        assert!(Instant::now() < deadline, "checkpoint never reached size {size}: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Copies the shipped example holdout into a data directory.
pub(crate) fn install_demo_holdout(data_dir: &Path) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/holdouts/demo");
    let target = data_dir.join("holdouts/demo");
    std::fs::create_dir_all(&target).unwrap();
    for file in ["manifest.json", "labels.bin"] {
        std::fs::copy(source.join(file), target.join(file)).unwrap();
    }
}

/// A CreateClaimV2 request with the tests' usual settings: 4 symbols, alpha 0.05, 64 credits,
/// the legacy single-symbol output schema.
pub(crate) fn claim_request(name: &str, lane: &str, holdout: &str) -> evidenceos_grpc::v2::CreateClaimV2Request {
    let claim = evidenceos_core::request::CreateClaimV2 {
        lane: lane.into(),
        ..evidenceos_core::request::CreateClaimV2::fast_legacy(name, holdout)
    };
    evidenceos_grpc::rpc::create_claim_v2_request(&claim)
}

/// A CommitArtifacts request (same fields in v1 and v2) whose encoding is exactly `size` bytes,
/// without artifacts: decoded, it is judged INVALID_ARGUMENT (a refusal by size never is).
pub(crate) fn commit_of_size(size: usize) -> evidenceos_grpc::v2::CommitArtifactsRequest {
    use evidenceos_grpc::v2;
    use prost::Message as _;
    let mut message = v2::CommitArtifactsRequest { claim_id: vec![1; 32], artifacts: vec![], wasm_module: vec![] };
    let mut module = size - message.encoded_len() - 3;
    loop {
        message.wasm_module = vec![0; module];
        match message.encoded_len().cmp(&size) {
            std::cmp::Ordering::Equal => return message,
            std::cmp::Ordering::Less => module += 1,
            std::cmp::Ordering::Greater => module -= 1,
        }
    }
}

/// Rotates the signing key as the operator guide's "Daemon ETL signing keys" says: a new seed in
/// a 0600 key file named by its key id, then `keys/active_key_id`. Returns the new key id.
pub(crate) fn activate_new_signing_key(data: &Path, seed: [u8; 32]) -> evidenceos_core::keys::KeyId {
    use std::os::unix::fs::PermissionsExt;
    let id = evidenceos_core::keys::key_id_for_seed(&seed);
    let key_path = data.join("keys").join(evidenceos_core::keys::key_file_name(&id));
    std::fs::write(&key_path, seed).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(data.join("keys/active_key_id"), format!("{id}\n")).unwrap();
    id
}
