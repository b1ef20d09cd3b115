//! Transport security against the real daemon, with certificates made in the test (rcgen):
//! TLS refuses plaintext, mTLS refuses missing or foreign client certificates, roles come only
//! from verified certificates, and production mode refuses every insecure configuration.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use evidenceos_core::hash::sha256;
use evidenceos_grpc::v2;
use evidenceos_grpc::v2::evidence_os_client::EvidenceOsClient;
use rcgen::string::Ia5String;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

struct Authority {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl Authority {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self { params, key, pem }
    }

    /// A leaf certificate for `names`: (certificate PEM, key PEM, certificate DER).
    fn issue(&self, names: &[&str]) -> (String, String, Vec<u8>) {
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    /// A leaf certificate whose SAN holds these URIs (`evidenceos:role:*`, SPEC §2.2).
    fn issue_with_uris(&self, uris: &[&str]) -> (String, String) {
        let mut params = CertificateParams::new(vec!["client.example".to_string()]).unwrap();
        for uri in uris {
            params.subject_alt_names.push(SanType::URI(Ia5String::try_from(*uri).unwrap()));
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &Issuer::from_params(&self.params, &self.key)).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

struct Pki {
    dir: PathBuf,
    server_ca: Authority,
    client_ca: Authority,
}

impl Pki {
    fn new(dir: &Path) -> Self {
        let pki = Self {
            dir: dir.to_path_buf(),
            server_ca: Authority::new("server ca"),
            client_ca: Authority::new("client ca"),
        };
        let (cert, key, _) = pki.server_ca.issue(&["localhost"]);
        std::fs::write(pki.path("server.pem"), cert).unwrap();
        std::fs::write(pki.path("server.key"), key).unwrap();
        std::fs::write(pki.path("client-ca.pem"), &pki.client_ca.pem).unwrap();
        pki
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    fn tls_flags(&self) -> Vec<String> {
        vec!["--tls-cert".into(), self.path("server.pem"), "--tls-key".into(), self.path("server.key")]
    }

    fn mtls_flags(&self) -> Vec<String> {
        let mut flags = self.tls_flags();
        flags.extend(["--mtls-client-ca".into(), self.path("client-ca.pem"), "--require-client-cert".into()]);
        flags
    }
}

fn https(daemon: &support::Daemon) -> String {
    daemon.addr.replace("http://127.0.0.1", "https://localhost")
}

async fn tls_client(
    daemon: &support::Daemon,
    pki: &Pki,
    identity: Option<(String, String)>,
) -> Result<EvidenceOsClient<Channel>, tonic::transport::Error> {
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.server_ca.pem)).domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Endpoint::from_shared(https(daemon)).unwrap().tls_config(tls)?.connect().await?;
    Ok(EvidenceOsClient::new(channel))
}

fn start(dir: &Path, flags: &[String]) -> support::Daemon {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    support::start_with(&dir.join("data"), dir, &flags, &[])
}

#[tokio::test]
async fn tls_refuses_plaintext_and_serves_tls_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let daemon = start(tmp.path(), &pki.tls_flags());
    let plaintext = async {
        let mut client = EvidenceOsClient::connect(daemon.addr.clone()).await?;
        client.health(v2::HealthRequest {}).await.map_err(|e| e.into())
    };
    let refused: Result<_, Box<dyn std::error::Error>> = plaintext.await;
    assert!(refused.is_err(), "a plaintext client must not be served");
    let mut client = tls_client(&daemon, &pki, None).await.unwrap();
    assert_eq!(client.health(v2::HealthRequest {}).await.unwrap().into_inner().status, "SERVING");
    let info = client.get_server_info(v2::GetServerInfoRequest {}).await.unwrap().into_inner();
    assert!(info.feature_flags.unwrap().tls_enabled);
    daemon.stop();
}

#[tokio::test]
async fn mtls_identifies_callers_by_certificate_only() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let (operator_cert, operator_key, operator_der) = pki.client_ca.issue(&["operator.example"]);
    let (agent_cert, agent_key, _) = pki.client_ca.issue(&["agent.example"]);
    let stranger_ca = Authority::new("someone else's ca");
    let (foreign_cert, foreign_key, _) = stranger_ca.issue(&["intruder.example"]);
    let mut flags = pki.mtls_flags();
    flags.extend(["--operator-cert-fingerprints".into(), hex::encode(sha256(&operator_der))]);
    let daemon = start(tmp.path(), &flags);

    for identity in [None, Some((foreign_cert, foreign_key))] {
        let attempt = async {
            let mut client = tls_client(&daemon, &pki, identity).await?;
            client.health(v2::HealthRequest {}).await.map_err(Box::<dyn std::error::Error>::from)
        };
        assert!(attempt.await.is_err(), "clients without a certificate from the client CA are refused");
    }

    let grant = || v2::GrantCreditRequest { principal_id: "agent-7".into(), amount: 5, reason: "pilot".into() };
    let mut operator = tls_client(&daemon, &pki, Some((operator_cert, operator_key))).await.unwrap();
    assert_eq!(operator.grant_credit(grant()).await.unwrap().into_inner().credit_balance, 5);

    // An agent certificate stays an agent whatever headers it sends.
    let mut agent = tls_client(&daemon, &pki, Some((agent_cert, agent_key))).await.unwrap();
    let mut spoofed = tonic::Request::new(grant());
    spoofed.metadata_mut().insert("x-evidenceos-role", "operator".parse().unwrap());
    spoofed.metadata_mut().insert("x-evidenceos-principal", "operator".parse().unwrap());
    spoofed.metadata_mut().insert("authorization", "Bearer operator".parse().unwrap());
    assert_eq!(agent.grant_credit(spoofed).await.unwrap_err().code(), Code::PermissionDenied);

    // A SAN URI role from the client CA counts like a fingerprint list entry; two roles do not.
    let san_operator = pki.client_ca.issue_with_uris(&["evidenceos:role:operator"]);
    let mut operator = tls_client(&daemon, &pki, Some(san_operator)).await.unwrap();
    assert_eq!(operator.grant_credit(grant()).await.unwrap().into_inner().credit_balance, 10);
    let san_auditor = pki.client_ca.issue_with_uris(&["evidenceos:role:auditor"]);
    let mut auditor = tls_client(&daemon, &pki, Some(san_auditor)).await.unwrap();
    assert_eq!(auditor.grant_credit(grant()).await.unwrap_err().code(), Code::PermissionDenied);
    let proof = v2::GetInclusionProofRequest { leaf_index: 0 };
    assert_eq!(auditor.get_inclusion_proof(proof).await.unwrap_err().code(), Code::NotFound, "auditors may ask");
    let two_roles = pki.client_ca.issue_with_uris(&["evidenceos:role:agent", "evidenceos:role:operator"]);
    let mut ambiguous = tls_client(&daemon, &pki, Some(two_roles)).await.unwrap();
    assert_eq!(ambiguous.grant_credit(grant()).await.unwrap_err().code(), Code::Unauthenticated);
    daemon.stop();
}

fn refused_start(dir: &Path, flags: &[String]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_evidenceosd"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("never-created"))
        .args(flags)
        .env_remove("EVIDENCEOS_PRODUCTION_MODE")
        .output()
        .unwrap();
    assert!(!output.status.success(), "daemon started with {flags:?}");
    assert!(!dir.join("never-created").exists(), "a refused configuration touches no data directory");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn insecure_or_inconsistent_configurations_refuse_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let with = |base: Vec<String>, extra: &[&str]| [base, s(extra)].concat();
    let cases = [
        (s(&["--production", "--agent-tokens", "t"]), "refuses plaintext"),
        (with(pki.tls_flags(), &["--production"]), "needs authentication"),
        (
            with(pki.tls_flags(), &["--production", "--agent-tokens", "t", "--enable-insecure-v1"]),
            "--enable-insecure-v1",
        ),
        (s(&["--tls-cert", &pki.path("server.pem")]), "--tls-cert needs --tls-key"),
        (s(&["--tls-key", &pki.path("server.key")]), "--tls-key needs --tls-cert"),
        (with(pki.tls_flags(), &["--mtls-client-ca", &pki.path("client-ca.pem")]), "needs --require-client-cert"),
        (with(pki.tls_flags(), &["--require-client-cert"]), "needs --mtls-client-ca"),
        (s(&["--mtls-client-ca", &pki.path("client-ca.pem"), "--require-client-cert"]), "mTLS needs TLS"),
        (with(pki.tls_flags(), &["--operator-cert-fingerprints", &"ab".repeat(32)]), "need mTLS"),
        (with(pki.mtls_flags(), &["--agent-tokens", "t"]), "would never be checked"),
        (with(pki.mtls_flags(), &["--auth-hmac-key", "k1:00112233"]), "would never be checked"),
        (with(pki.mtls_flags(), &["--runtime", "sync", "--operator-tokens", "t"]), "would never be checked"),
        (s(&["--auth-token-file", &pki.path("absent-token")]), "--auth-token-file"),
    ];
    for (flags, expected) in cases {
        let stderr = refused_start(tmp.path(), &flags);
        assert!(stderr.contains(expected), "{flags:?}: expected {expected:?} in:\n{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_drives_lifecycles_over_mtls() {
    use clap::Parser;
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    support::install_demo_holdout(&tmp.path().join("data"));
    let daemon = start(tmp.path(), &pki.mtls_flags());
    std::fs::write(pki.path("server-ca.pem"), &pki.server_ca.pem).unwrap();
    let (cert, key, _) = pki.client_ca.issue(&["bench-client"]);
    std::fs::write(pki.path("client.pem"), cert).unwrap();
    std::fs::write(pki.path("client.key"), key).unwrap();
    let endpoint = https(&daemon);
    let mut argv = vec!["evidenceos-bench", "--endpoint", &endpoint, "--lifecycles", "3", "--concurrency", "2"];
    let (ca, client_cert, client_key) = (pki.path("server-ca.pem"), pki.path("client.pem"), pki.path("client.key"));
    argv.extend(["--ca-cert", &ca, "--client-cert", &client_cert, "--client-key", &client_key]);
    let args = evidenceos_bench::Args::parse_from(&argv);
    let run = evidenceos_bench::run(&args, std::sync::Arc::new(|_: &str| {}));
    let report = tokio::time::timeout(std::time::Duration::from_secs(30), run).await.expect("bounded").unwrap();
    let json = report.to_json();
    assert_eq!((json["lifecycles_completed"].as_u64(), json["lifecycles_failed"].as_u64()), (Some(3), Some(0)));
    assert_eq!(json["outcomes"]["CERTIFIED"], 3, "{}", report.to_text());

    // Without a client certificate the handshake is refused: no lifecycle runs.
    let argv = ["evidenceos-bench", "--endpoint", &endpoint, "--lifecycles", "1", "--ca-cert", &ca];
    let args = evidenceos_bench::Args::parse_from(argv);
    let refused = evidenceos_bench::run(&args, std::sync::Arc::new(|_: &str| {}));
    assert!(tokio::time::timeout(std::time::Duration::from_secs(30), refused).await.expect("bounded").is_err());
    drop(daemon);
}

/// One HTTPS POST to the sync daemon with a blocking rustls client: (status, body).
fn sync_https_post(
    daemon: &support::Daemon,
    pki: &Pki,
    identity: Option<(String, String)>,
    method: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::io::{Read, Write};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(pki.server_ca.pem.as_bytes()).unwrap()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let connection =
        rustls::ClientConnection::new(std::sync::Arc::new(config), ServerName::try_from("localhost").unwrap())
            .map_err(std::io::Error::other)?;
    let tcp = std::net::TcpStream::connect(daemon.addr.trim_start_matches("http://"))?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(20)))?;
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    let request = format!(
        "POST /evidenceos.v2.EvidenceOS/{method} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    match tls.read_to_end(&mut answer) {
        Ok(_) => {}
        // A peer that closes without close_notify still sent its whole answer (Content-Length).
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
        Err(e) => return Err(e),
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

#[test]
fn the_sync_runtime_serves_tls_and_identifies_mtls_callers_by_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let (operator_cert, operator_key, operator_der) = pki.client_ca.issue(&["operator.example"]);
    let (agent_cert, agent_key, _) = pki.client_ca.issue(&["agent.example"]);
    let stranger_ca = Authority::new("someone else's ca");
    let (foreign_cert, foreign_key, _) = stranger_ca.issue(&["intruder.example"]);
    // A plaintext client's bytes are not a TLS record rustls can reject early; it waits for the
    // rest until the request timeout, which is kept short here.
    let mut flags = vec!["--runtime".to_string(), "sync".into(), "--request-timeout-ms".into(), "1500".into()];
    flags.extend(pki.mtls_flags());
    flags.extend(["--operator-cert-fingerprints".into(), hex::encode(sha256(&operator_der))]);
    let daemon = start(tmp.path(), &flags);

    // Plaintext gets no HTTP answer from a TLS listener.
    let mut plain = std::net::TcpStream::connect(daemon.addr.trim_start_matches("http://")).unwrap();
    plain.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    std::io::Write::write_all(
        &mut plain,
        b"POST /evidenceos.v2.EvidenceOS/Health HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    )
    .unwrap();
    let mut reply = Vec::new();
    let _ = std::io::Read::read_to_end(&mut plain, &mut reply);
    assert!(!String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200"), "plaintext must not be served");

    for identity in [None, Some((foreign_cert, foreign_key))] {
        let attempt = sync_https_post(&daemon, &pki, identity, "Health", "{}");
        assert!(!matches!(attempt, Ok((200, _))), "clients without a certificate from the client CA are refused");
    }
    let grant = r#"{"principalId":"agent-7","amount":"5","reason":"pilot"}"#;
    let (status, body) =
        sync_https_post(&daemon, &pki, Some((operator_cert, operator_key)), "GrantCredit", grant).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"creditBalance\":\"5\""), "{body}");
    let (status, body) = sync_https_post(&daemon, &pki, Some((agent_cert, agent_key)), "GrantCredit", grant).unwrap();
    assert_eq!(status, 403, "an agent certificate stays an agent: {body}");
    assert!(body.contains("permission_denied"), "{body}");
    let san_operator = pki.client_ca.issue_with_uris(&["evidenceos:role:operator"]);
    let (status, body) = sync_https_post(&daemon, &pki, Some(san_operator), "GrantCredit", grant).unwrap();
    assert_eq!(status, 200, "a SAN URI operator role: {body}");
    daemon.stop();
}
