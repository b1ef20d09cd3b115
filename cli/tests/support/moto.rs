//! A real S3 protocol server for the publishing tests: moto in server mode (`moto_server`, pinned
//! in .ci/run), started on a free loopback port, bounded in time, killed on drop. Its request log
//! is kept to count what the daemon wrote.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The version .ci/run installs; tests were run against it.
pub(crate) const PIP_INSTALL: &str = "pip install \"moto[server]==5.2.1\"";
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Credentials moto accepts (any); the daemon signs its requests with them.
pub(crate) const KEY_ID: &str = "evidenceos-test";
pub(crate) const SECRET: &str = "evidenceos-test-secret";

pub(crate) struct Moto {
    child: Child,
    pub(crate) port: u16,
    log: PathBuf,
}

/// Whether the S3 tests run: always under CI (where `.ci/run` installs moto, and a missing
/// `moto_server` fails them); elsewhere unless EVIDENCEOS_SKIP_S3_TESTS=1 or `moto_server` is not on
/// PATH, so `cargo test --workspace` passes on a machine with only a Rust toolchain. A skip says
/// so loudly.
pub(crate) fn s3_tests_enabled(test: &str) -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if ci {
        return true;
    }
    if std::env::var("EVIDENCEOS_SKIP_S3_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("\n!!!!! SKIPPED {test}: EVIDENCEOS_SKIP_S3_TESTS=1, publishing to S3 was NOT checked. !!!!!\n");
        return false;
    }
    let installed = Command::new("moto_server").arg("--help").output().is_ok_and(|output| output.status.success());
    if !installed {
        eprintln!(
            "\n!!!!! SKIPPED {test}: `moto_server` is not on PATH, so publishing to S3 was NOT checked. \
             Install it with {PIP_INSTALL} (CI always runs these tests). !!!!!\n"
        );
    }
    installed
}

/// A loopback port nothing listens on (bound, then released).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Moto {
    /// Starts moto on `port` and waits until it answers; its log goes to `log_dir`.
    pub(crate) fn start(port: u16, log_dir: &Path) -> Self {
        let log = log_dir.join(format!("moto-{port}-{}.log", super::unique()));
        let spawned = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) => panic!(
                "cannot run moto_server ({e}): the S3 publishing tests need a real S3 server. Install it with\n    \
                 {PIP_INSTALL}\nor set EVIDENCEOS_SKIP_S3_TESTS=1 to skip them (never under CI)."
            ),
        };
        let mut moto = Self { child, port, log };
        moto.wait_ready();
        moto
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while self.request("GET", "/", b"").is_none() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("moto_server exited with {status}:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "moto_server not answering after {START_TIMEOUT:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A bare HTTP/1.1 request (moto accepts unsigned bucket creation); the status, if any.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> Option<u16> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        stream.write_all(&[head.as_bytes(), body].concat()).ok()?;
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.split_whitespace().nth(1)?.parse().ok()
    }

    pub(crate) fn create_bucket(&self, bucket: &str) {
        let status = self.request("PUT", &format!("/{bucket}"), b"");
        assert_eq!(status, Some(200), "creating bucket {bucket}:\n{}", self.log());
    }

    /// The environment the daemon (and the test's own reader) get: path-style plain HTTP to moto.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        env_for_port(self.port)
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Keys of every PUT moto answered, in order (`/bucket/key`, as its log shows them).
    pub(crate) fn puts(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|line| line.split("\"PUT ").nth(1))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(str::to_string)
            .collect()
    }

    pub(crate) fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The AWS variables pointing at a moto on `port` (which may not be running yet).
pub(crate) fn env_for_port(port: u16) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
        ("AWS_ALLOW_HTTP", "true".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ACCESS_KEY_ID", KEY_ID.to_string()),
        ("AWS_SECRET_ACCESS_KEY", SECRET.to_string()),
    ]
    .map(|(key, value)| (key.to_string(), value))
    .to_vec()
}
