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

/// The connection limits hold under TLS on the tokio runtime (TLS runs over the limited
/// connection): one more connection is closed before its handshake ends, and an idle one is
/// closed, freeing its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_are_limited_and_idle_ones_closed_on_the_tokio_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let mut flags = pki.tls_flags();
    flags.extend(["--runtime", "tokio", "--max-connections", "1", "--idle-timeout-secs", "2"].map(String::from));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let daemon = support::start_with(&tmp.path().join("data"), tmp.path(), &flags, &[("EVIDENCEOS_LOG", "debug")]);
    let mut first = tls_client(&daemon, &pki, None).await.unwrap();
    assert_eq!(first.health(v2::HealthRequest {}).await.unwrap().into_inner().status, "SERVING");
    let refused = match tls_client(&daemon, &pki, None).await {
        Err(_) => true,
        Ok(mut second) => second.health(v2::HealthRequest {}).await.is_err(),
    };
    assert!(refused, "a second connection over a limit of 1 is not served");
    assert!(daemon.log().contains("connection_refused"), "{}", daemon.log());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !daemon.log().contains("connection_idle_closed") {
        assert!(std::time::Instant::now() < deadline, "the idle TLS connection was never closed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut third = tls_client(&daemon, &pki, None).await.unwrap();
    assert_eq!(third.health(v2::HealthRequest {}).await.unwrap().into_inner().status, "SERVING", "slot freed");
    drop((first, third));
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
    sync_https_post_with(daemon, pki, identity, method, &[], body)
}

/// [`sync_https_post`] with extra request headers.
fn sync_https_post_with(
    daemon: &support::Daemon,
    pki: &Pki,
    identity: Option<(String, String)>,
    method: &str,
    headers: &[(&str, &str)],
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
    let extra: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    let request = format!(
        "POST /evidenceos.v2.EvidenceOS/{method} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
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

/// Runs `evidenceosctl ARGS` (offline commands), bounded in time; returns its JSON result.
fn ctl(args: &[&str]) -> serde_json::Value {
    let mut child = Command::new(env!("CARGO_BIN_EXE_evidenceosctl"))
        .args(args)
        .env_remove("EVIDENCEOS_DATA_DIR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "evidenceosctl {args:?} did not finish in time");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "evidenceosctl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// What production demands of the data directory, done as the operations guide does it: a
/// first start (keys), the demo holdout, a trusted operator key, and a NullSpec for (accuracy,
/// demo) created, installed and activated. Returns the data directory and the NullSpec id.
fn production_data_dir(dir: &Path) -> (PathBuf, String) {
    let data = dir.join("data");
    support::install_demo_holdout(&data);
    support::start_with(&data, dir, &[], &[]).stop();
    let d = data.to_str().unwrap();
    let operator_key = dir.join("operator.key");
    let key = operator_key.to_str().unwrap();
    let public = ctl(&["keys", "generate", "--out", key])["public_key_hex"].as_str().unwrap().to_string();
    std::fs::write(data.join("trusted_oracle_keys.json"), format!(r#"{{"keys":{{"ops":"{public}"}}}}"#)).unwrap();
    let signer = ["--signing-key", key, "--key-id", "ops"];
    let shown = ctl(&["oracle", "show", "--data-dir", d, "--oracle-id", "accuracy", "--num-symbols", "4"]);
    let resolution = shown["resolution_hash_hex"].as_str().unwrap().to_string();
    let buckets = dir.join("buckets.json");
    std::fs::write(&buckets, r#"{"counts":[40,30,20,0]}"#).unwrap();
    let contract = dir.join("contract.json");
    let create = [
        "nullspec",
        "create",
        "--oracle-id",
        "accuracy",
        "--holdout",
        "demo",
        "--resolution-hash",
        &resolution,
        "--from-calibration-buckets",
        buckets.to_str().unwrap(),
        "--alpha",
        "0.5",
        "--ttl-epochs",
        "10",
        "--out",
        contract.to_str().unwrap(),
    ];
    let nullspec_id = ctl(&[&create[..], &signer].concat())["nullspec_id_hex"].as_str().unwrap().to_string();
    ctl(&[&["nullspec", "install", "--data-dir", d, "--contract", contract.to_str().unwrap()][..], &signer].concat());
    let activate = ["nullspec", "activate", "--data-dir", d, "--oracle-id", "accuracy", "--holdout", "demo"];
    ctl(&[&activate[..], &["--nullspec-id", &nullspec_id], &signer].concat());
    (data, nullspec_id)
}

fn bearer<T>(message: T, token: &str, request_id: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    if let Some(id) = request_id {
        request.metadata_mut().insert("x-request-id", id.parse().unwrap());
    }
    request
}

/// create → commit (claim_mod3) → freeze, as the agent; returns the claim id.
async fn sealed(client: &mut EvidenceOsClient<Channel>, name: &str, oracle_id: &str) -> Vec<u8> {
    let mut request = support::claim_request(name, "fast", "demo");
    request.oracle_id = oracle_id.into();
    let created = client.create_claim_v2(bearer(request, "agent-secret", Some(name))).await.unwrap().into_inner();
    let module = wat::parse_file(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/claim_mod3.wat")).unwrap();
    let artifacts = vec![v2::Artifact { artifact_hash: sha256(&module).to_vec(), kind: "wasm".into() }];
    let claim_id = created.claim_id;
    let commit = v2::CommitArtifactsRequest { claim_id: claim_id.clone(), artifacts, wasm_module: module };
    client.commit_artifacts(bearer(commit, "agent-secret", None)).await.unwrap();
    let freeze = v2::FreezeGatesRequest { claim_id: claim_id.clone() };
    client.freeze_gates(bearer(freeze, "agent-secret", None)).await.unwrap();
    claim_id
}

#[tokio::test]
async fn a_production_daemon_serves_tls_and_tokens_and_judges_claims_under_the_active_nullspec() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let (data, nullspec_id) = production_data_dir(tmp.path());
    let mut flags: Vec<&str> = vec!["--production", "--runtime", "tokio"];
    let tls_flags = pki.tls_flags();
    flags.extend(tls_flags.iter().map(String::as_str));
    let env = [("EVIDENCEOS_AGENT_TOKENS", "agent-secret"), ("EVIDENCEOS_AUDITOR_TOKENS", "auditor-secret")];
    let daemon = support::start_with(&data, tmp.path(), &flags, &env);
    assert!(!daemon.log().contains("development_nullspec"), "no development fallback:\n{}", daemon.log());
    let mut client = tls_client(&daemon, &pki, None).await.unwrap();
    let info = client.get_server_info(bearer(v2::GetServerInfoRequest {}, "auditor-secret", None)).await;
    let features = info.unwrap().into_inner().feature_flags.unwrap();
    assert!(features.tls_enabled && !features.insecure_v1_enabled);
    let unauthenticated = client.get_signed_tree_head(v2::GetSignedTreeHeadRequest {}).await.unwrap_err();
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);

    // Without an active NullSpec for its oracle a claim is refused at execution (production has
    // no development fallback); under the activated one it runs to a capsule naming the contract.
    let no_contract = sealed(&mut client, "no-contract", "default").await;
    let execute = v2::ExecuteClaimV2Request { claim_id: no_contract };
    let refused = client.execute_claim_v2(bearer(execute, "agent-secret", Some("e0"))).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("production mode"), "{refused:?}");
    let claim_id = sealed(&mut client, "under-contract", "accuracy").await;
    let execute = v2::ExecuteClaimV2Request { claim_id: claim_id.clone() };
    let executed = client.execute_claim_v2(bearer(execute, "agent-secret", Some("e1"))).await.unwrap().into_inner();
    assert_eq!(executed.capsule_hash.len(), 32, "{executed:?}");
    let capsule = client
        .get_capsule(bearer(v2::GetCapsuleRequest { claim_id }, "auditor-secret", None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(capsule.capsule_hash, executed.capsule_hash);
    let capsule: serde_json::Value = serde_json::from_slice(&capsule.capsule_bytes).unwrap();
    assert_eq!(capsule["nullspec_id_hex"], nullspec_id.as_str(), "judged under the activated contract");
    drop(client);
    daemon.stop();
}

#[test]
fn a_production_sync_daemon_serves_mtls_callers_and_judges_claims_under_the_active_nullspec() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let (data, nullspec_id) = production_data_dir(tmp.path());
    let (agent_cert, agent_key, _) = pki.client_ca.issue(&["agent.example"]);
    let (auditor_cert, auditor_key, auditor_der) = pki.client_ca.issue(&["auditor.example"]);
    let mut flags = vec!["--production".to_string(), "--runtime".into(), "sync".into()];
    flags.extend(pki.mtls_flags());
    flags.extend(["--auditor-cert-fingerprints".into(), hex::encode(sha256(&auditor_der))]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let daemon = support::start_with(&data, tmp.path(), &flags, &[]);
    let agent = || Some((agent_cert.clone(), agent_key.clone()));
    let call = |identity, method: &str, request_id: Option<&str>, body: serde_json::Value| {
        let headers: Vec<(&str, &str)> = request_id.map(|id| ("x-request-id", id)).into_iter().collect();
        let (status, body) =
            sync_https_post_with(&daemon, &pki, identity, method, &headers, &body.to_string()).unwrap();
        (status, serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default())
    };
    let (status, info) = call(agent(), "GetServerInfo", None, serde_json::json!({}));
    assert_eq!(status, 200, "{info}");
    assert_eq!(
        (&info["featureFlags"]["tlsEnabled"], &info["featureFlags"]["mtlsEnabled"]),
        (&true.into(), &true.into())
    );

    let module = wat::parse_file(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/claim_mod3.wat")).unwrap();
    let create = serde_json::json!({
        "claimName": "under-contract",
        "metadata": {"lane": "fast", "alphaMicros": 50000, "outputSchemaId": "legacy/v1"},
        "holdoutRef": "demo",
        "epochSize": "1",
        "oracleNumSymbols": 4,
        "accessCredit": "64",
        "oracleId": "accuracy"
    });
    let (status, created) = call(agent(), "CreateClaimV2", Some("c1"), create);
    assert_eq!(status, 200, "{created}");
    let claim_id = created["claimId"].clone();
    let commit = serde_json::json!({
        "claimId": claim_id,
        "artifacts": [{"artifactHash": BASE64.encode(sha256(&module)), "kind": "wasm"}],
        "wasmModule": BASE64.encode(&module)
    });
    assert_eq!(call(agent(), "CommitArtifacts", None, commit).0, 200);
    assert_eq!(call(agent(), "FreezeGates", None, serde_json::json!({ "claimId": claim_id })).0, 200);
    let (status, executed) = call(agent(), "ExecuteClaimV2", Some("e1"), serde_json::json!({ "claimId": claim_id }));
    assert_eq!(status, 200, "{executed}");
    let auditor = Some((auditor_cert, auditor_key));
    let (status, capsule) = call(auditor, "GetCapsule", None, serde_json::json!({ "claimId": claim_id }));
    assert_eq!(status, 200, "{capsule}");
    assert_eq!(capsule["capsuleHash"], executed["capsuleHash"]);
    let bytes = BASE64.decode(capsule["capsuleBytes"].as_str().unwrap()).unwrap();
    let capsule: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(capsule["nullspec_id_hex"], nullspec_id.as_str(), "judged under the activated contract");
    let (status, refused) = call(agent(), "GetCapsule", None, serde_json::json!({ "claimId": claim_id }));
    assert_eq!(status, 403, "an agent certificate is no auditor: {refused}");
    daemon.stop();
}
