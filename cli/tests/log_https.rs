//! `evidenceosctl log verify` against a log published to a directory and served over https by a
//! static file server the test starts (its certificate from a test CA): verified with
//! `--ca-cert`, refused with a TLS error without it (the CA is not a public root).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

mod support;

use support::ctl::ctl;
use support::pki::Pki;
use support::{install_demo_holdout, start_with, wait_published};

const AGENT: &str = "agent-secret";

/// Serves GET requests for files under `root` over TLS, one connection at a time, until the
/// test process ends; returns the port.
fn serve_dir_over_tls(root: PathBuf, pki: &Pki) -> u16 {
    let chain = CertificateDer::pem_file_iter(pki.path("server.pem")).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(pki.path("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { continue };
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut tls = rustls::StreamOwned::new(rustls::ServerConnection::new(config.clone()).unwrap(), tcp);
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && matches!(tls.read(&mut byte), Ok(1)) {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head);
            let path = head.split(' ').nth(1).unwrap_or("/").trim_start_matches('/').to_string();
            let answer = match std::fs::read(root.join(&path)) {
                Ok(body) if !path.contains("..") => {
                    let mut answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
                    answer.extend_from_slice(&body);
                    answer
                }
                _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
            };
            let _ = tls.write_all(&answer);
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    port
}

#[test]
fn log_verify_reads_a_log_served_over_https_with_a_named_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, publish) = (tmp.path().join("data"), tmp.path().join("pub"));
    std::fs::create_dir_all(&data).unwrap();
    install_demo_holdout(&data);
    let flags = ["--publish-dir", publish.to_str().unwrap(), "--checkpoint-interval-ms", "50"];
    let daemon = start_with(&data, tmp.path(), &flags, &[("EVIDENCEOS_AGENT_TOKENS", AGENT)]);
    let ran = ctl(&["claim", "run", "--wasm", "../examples/claim_mod3.wat", "--holdout", "demo", "--name", "tls"]
        .iter()
        .copied()
        .chain(["--token", AGENT, "--endpoint", &daemon.addr])
        .collect::<Vec<_>>());
    assert_eq!(ran.code, Some(0), "{ran:?}");
    wait_published(&publish, 1);
    let keys: Value =
        serde_json::from_str(&ctl(&["keys", "list", "--data-dir", data.to_str().unwrap()]).stdout).unwrap();
    let vkey = keys["etl_signing_keys"][0]["vkey"].as_str().unwrap().to_string();

    let pki = Pki::new(tmp.path());
    let url = format!("https://localhost:{}", serve_dir_over_tls(publish.clone(), &pki));
    let ca = pki.path("server-ca.pem");
    let verified = ctl(&["log", "verify", "--url", &url, "--ca-cert", &ca, "--vkey", &vkey, "--index", "0"]);
    assert_eq!(verified.code, Some(0), "{verified:?}");
    let verified: Value = serde_json::from_str(&verified.stdout).unwrap();
    assert_eq!(verified["verified"], true, "{verified}");
    assert_eq!(verified["entry"]["kind"], "capsule", "{verified}");

    let untrusted = ctl(&["log", "verify", "--url", &url, "--vkey", &vkey, "--index", "0"]);
    assert_eq!(untrusted.code, Some(1), "{untrusted:?}");
    assert!(untrusted.stderr.contains("TLS") && untrusted.stderr.contains("certificate"), "{untrusted:?}");
    let dir = publish.to_str().unwrap();
    let misplaced = ctl(&["log", "verify", "--url", dir, "--ca-cert", &ca, "--vkey", &vkey, "--index", "0"]);
    assert_eq!(misplaced.code, Some(1), "{misplaced:?}");
    assert!(misplaced.stderr.contains("--ca-cert applies to an https:// --url only"), "{misplaced:?}");
    daemon.stop();
}
