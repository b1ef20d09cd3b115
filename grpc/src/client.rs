//! How a client reaches the daemon over gRPC, for every client binary (`evidenceosctl`,
//! `evidenceos-bench`): the endpoint and its TLS (server CA, mTLS identity), HMAC request signing
//! (SPEC §2.3) as a layer over the channel, and how failures read.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::{self, HeaderMap, HeaderValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::auth::{HmacKeyEntry, request_mac};

/// Why a client's connection settings cannot work; found before anything is sent.
#[derive(Debug)]
pub enum ClientConfigError {
    /// The endpoint is neither `http://` nor `https://`.
    Scheme { endpoint: String },
    /// The endpoint does not parse as a URI.
    Endpoint { endpoint: String, reason: String },
    /// `https://` without the CA that signs the daemon's certificate (no system roots are used).
    HttpsWithoutCa,
    /// TLS material given for a plaintext `http://` endpoint.
    TlsOnPlaintext { flag: &'static str },
    /// `--client-cert` without `--client-key`, or the reverse.
    HalfIdentity { given: &'static str, missing: &'static str },
    /// A file named by a flag cannot be read.
    Read { flag: &'static str, path: PathBuf, source: std::io::Error },
    /// The PEM material does not make a TLS configuration.
    Tls(String),
    /// `--hmac-key-id` without a secret: no `--hmac-key-file` and no [`HMAC_KEYS_VARIABLE`].
    HmacWithoutSecret,
    /// HMAC signing settings (key id, key list) are unusable.
    Hmac(String),
}

impl std::fmt::Display for ClientConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Scheme { endpoint } => write!(f, "--endpoint must start with http:// or https://, got {endpoint:?}"),
            Self::Endpoint { endpoint, reason } => write!(f, "bad --endpoint {endpoint:?}: {reason}"),
            Self::HttpsWithoutCa => f.write_str(
                "an https:// endpoint needs --ca-cert, the CA certificate (PEM) that signs the daemon's certificate; system roots are not used",
            ),
            Self::TlsOnPlaintext { flag } => write!(f, "{flag} needs an https:// endpoint"),
            Self::HalfIdentity { given, missing } => write!(f, "{given} needs {missing} (mTLS uses both)"),
            Self::Read { flag, path, source } => write!(f, "{flag} {}: {source}", path.display()),
            Self::Tls(reason) => write!(f, "TLS settings: {reason}"),
            Self::HmacWithoutSecret => write!(
                f,
                "--hmac-key-id needs its secret: give --hmac-key-file or set {HMAC_KEYS_VARIABLE}"
            ),
            Self::Hmac(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for ClientConfigError {}

/// Where the daemon is and how to check it: what the client flags say.
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// `http://HOST:PORT` or `https://HOST:PORT`.
    pub endpoint: String,
    /// CA certificate (PEM) that signs the daemon's certificate; required for https.
    pub ca_cert: Option<PathBuf>,
    /// Name to verify in the daemon's certificate (default: the endpoint's host).
    pub tls_server_name: Option<String>,
    /// Client certificate and key (PEM) for mTLS; both or neither.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Deadline for connecting and for each RPC.
    pub timeout: Duration,
}

impl TransportOptions {
    /// The endpoint with its TLS settings; every inconsistent combination is an error, never a
    /// silent downgrade to plaintext.
    pub fn endpoint(&self) -> Result<Endpoint, ClientConfigError> {
        let https = self.endpoint.starts_with("https://");
        if !https && !self.endpoint.starts_with("http://") {
            return Err(ClientConfigError::Scheme { endpoint: self.endpoint.clone() });
        }
        let identity = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ClientConfigError::HalfIdentity { given: "--client-cert", missing: "--client-key" });
            }
            (None, Some(_)) => {
                return Err(ClientConfigError::HalfIdentity { given: "--client-key", missing: "--client-cert" });
            }
        };
        let endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| ClientConfigError::Endpoint { endpoint: self.endpoint.clone(), reason: error_chain(&e) })?
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .tcp_nodelay(true);
        if !https {
            let flag = [
                (self.ca_cert.is_some(), "--ca-cert"),
                (identity.is_some(), "--client-cert"),
                (self.tls_server_name.is_some(), "--tls-server-name"),
            ]
            .into_iter()
            .find_map(|(given, flag)| given.then_some(flag));
            return match flag {
                Some(flag) => Err(ClientConfigError::TlsOnPlaintext { flag }),
                None => Ok(endpoint),
            };
        }
        let ca = self.ca_cert.as_ref().ok_or(ClientConfigError::HttpsWithoutCa)?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("--ca-cert", ca)?));
        if let Some(name) = &self.tls_server_name {
            tls = tls.domain_name(name.clone());
        }
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(read("--client-cert", cert)?, read("--client-key", key)?));
        }
        endpoint.tls_config(tls).map_err(|e| ClientConfigError::Tls(error_chain(&e)))
    }

    /// Why connecting failed, with what to do when the cause is a known TLS refusal.
    pub fn connect_failure(&self, error: &dyn std::error::Error) -> String {
        let chain = error_chain(error);
        let mut text = format!("cannot connect to {}: {chain}", self.endpoint);
        if let Some(hint) = self.tls_use().hint(&chain) {
            text.push_str("; ");
            text.push_str(hint);
        }
        text
    }

    pub fn tls_use(&self) -> TlsUse {
        TlsUse { https: self.endpoint.starts_with("https://"), client_cert: self.client_cert.is_some() }
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, ClientConfigError> {
    std::fs::read(path).map_err(|source| ClientConfigError::Read { flag, path: path.to_path_buf(), source })
}

/// How a client uses TLS, to explain a failure the TLS layer caused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsUse {
    pub https: bool,
    pub client_cert: bool,
}

impl TlsUse {
    /// What to do about a failure, recognised from its error text (rustls names the alert). A
    /// daemon refusing a client certificate under TLS 1.3 does so after the handshake, so the
    /// client often sees only the connection closing under its first request.
    pub fn hint(self, error_text: &str) -> Option<&'static str> {
        if !self.https {
            return None;
        }
        let text = error_text.to_ascii_lowercase();
        let has = |needles: &[&str]| needles.iter().any(|needle| text.contains(needle));
        if has(&["certificaterequired", "certificate required"]) {
            return Some(if self.client_cert {
                "the daemon refused the client certificate: it must be signed by the daemon's --mtls-client-ca"
            } else {
                "the daemon requires a client certificate (mTLS): pass --client-cert and --client-key"
            });
        }
        if has(&["invalid peer certificate", "notvalidforname", "unknownissuer"]) {
            return Some("the daemon's certificate does not verify: check --ca-cert and --tls-server-name");
        }
        if has(&["unknownca", "unknown ca", "badcertificate", "bad certificate"]) {
            return Some(
                "the daemon refused the client certificate: it must be signed by the daemon's --mtls-client-ca",
            );
        }
        if has(&["broken pipe", "connection reset", "stream closed", "connection closed", "eof"]) {
            return Some(if self.client_cert {
                "the daemon closed the TLS connection: if it requires client certificates, --client-cert must be signed by its --mtls-client-ca"
            } else {
                "the daemon closed the TLS connection: if it requires a client certificate (mTLS), pass --client-cert and --client-key"
            });
        }
        None
    }
}

/// An HMAC request-signing key (SPEC §2.3). Its secret is never printed.
#[derive(Clone)]
pub struct HmacSigner {
    key_id: HeaderValue,
    secret: Vec<u8>,
}

impl std::fmt::Debug for HmacSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmacSigner").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

/// Most entries a key list may hold (a daemon's key file, not a database).
const MAX_KEY_LIST_ENTRIES: usize = 10_000;

/// Where a client finds HMAC keys without `--hmac-key-file`: the daemon's variable and format.
pub const HMAC_KEYS_VARIABLE: &str = "EVIDENCEOS_HMAC_KEYS";

impl HmacSigner {
    /// The key `key_id` from `file` (`--hmac-key-file`), or else from [`HMAC_KEYS_VARIABLE`]:
    /// secrets never come from a command-line value.
    pub fn load(key_id: &str, file: Option<&Path>) -> Result<Self, ClientConfigError> {
        let (list, source) = match file {
            Some(path) => {
                let list = std::fs::read_to_string(path).map_err(|source| ClientConfigError::Read {
                    flag: "--hmac-key-file",
                    path: path.to_path_buf(),
                    source,
                })?;
                (list, format!("--hmac-key-file {}", path.display()))
            }
            None => match std::env::var(HMAC_KEYS_VARIABLE) {
                Ok(list) => (list, HMAC_KEYS_VARIABLE.to_string()),
                Err(_) => return Err(ClientConfigError::HmacWithoutSecret),
            },
        };
        Self::from_key_list(key_id, &list).map_err(|e| ClientConfigError::Hmac(format!("{source}: {e}")))
    }

    /// The key `key_id` of a key list in the daemon's format: `KID:HEXSECRET[:ROLE]` entries, one
    /// per line (`#` comments) or comma-separated. The role is the daemon's to decide; it is ignored.
    pub fn from_key_list(key_id: &str, list: &str) -> Result<Self, ClientConfigError> {
        let entries = list
            .split(['\n', ','])
            .map(str::trim)
            .filter(|entry| !entry.is_empty() && !entry.starts_with('#'))
            .take(MAX_KEY_LIST_ENTRIES);
        for entry in entries {
            let entry = HmacKeyEntry::parse(entry).map_err(ClientConfigError::Hmac)?;
            if entry.key_id == key_id {
                let key_id = HeaderValue::from_str(key_id)
                    .map_err(|_| ClientConfigError::Hmac(format!("HMAC key id {key_id:?} is not a header value")))?;
                return Ok(Self { key_id, secret: entry.secret });
            }
        }
        Err(ClientConfigError::Hmac(format!("the HMAC key list has no key {key_id:?}")))
    }

    /// `sha256=<hex>` over the request id, the HTTP path and the unix-seconds timestamp.
    pub fn signature(&self, request_id: &str, path: &str, timestamp: &str) -> String {
        use hmac::Mac;
        let tag = request_mac(&self.secret, request_id, path, Some(timestamp)).finalize().into_bytes();
        format!("sha256={}", hex::encode(tag))
    }

    /// The signing headers of a request with this id, to this HTTP path, at this time. The
    /// timestamp is always sent: production daemons require it.
    pub fn headers(&self, request_id: &str, path: &str, now_unix: u64) -> [(&'static str, String); 3] {
        let timestamp = now_unix.to_string();
        let signature = self.signature(request_id, path, &timestamp);
        let key_id = self.key_id.to_str().expect("checked to be a header value").to_string();
        [("x-evidenceos-key-id", key_id), ("x-evidenceos-timestamp", timestamp), ("x-evidenceos-signature", signature)]
    }

    /// Signs a request in place, giving it a fresh `x-request-id` when it has none.
    fn sign(&self, headers: &mut HeaderMap, path: &str, now_unix: u64, id_prefix: &str) {
        let request_id = match headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
            Some(id) => id.to_string(),
            None => {
                let id = fresh_request_id(id_prefix);
                headers.insert("x-request-id", HeaderValue::from_str(&id).expect("ids are printable ASCII"));
                id
            }
        };
        for (name, value) in self.headers(&request_id, path, now_unix) {
            headers.insert(name, HeaderValue::from_str(&value).expect("key id, digits and hex"));
        }
    }
}

/// A fresh `x-request-id`, unique within the process and across processes:
/// `<prefix>-<pid>-<unix nanos when the first id was made>-<n>` (printable ASCII without `:`,
/// at most 128 bytes: SPEC §2.3).
pub fn fresh_request_id(prefix: &str) -> String {
    static STARTED_NANOS: OnceLock<u128> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    assert!(!prefix.contains(':') && prefix.len() <= 48, "request id prefixes are short and colon-free");
    let started = STARTED_NANOS
        .get_or_init(|| SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{started}-{n}", std::process::id())
}

/// Seconds since the Unix epoch, for HMAC timestamps.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// A channel that signs every request with HMAC when a key is configured (SPEC §2.3), over the
/// request's real HTTP path; without a key it passes requests through unchanged.
#[derive(Debug, Clone)]
pub struct SignedChannel {
    inner: Channel,
    signer: Option<Arc<HmacSigner>>,
    /// Prefix of the request ids this channel makes up (the client's name).
    id_prefix: &'static str,
}

impl SignedChannel {
    pub fn new(inner: Channel, signer: Option<Arc<HmacSigner>>, id_prefix: &'static str) -> Self {
        Self { inner, signer, id_prefix }
    }
}

impl Service<http::Request<Body>> for SignedChannel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = <Channel as Service<http::Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if let Some(signer) = &self.signer {
            // The clock is read here, at the edge; the signature itself is a pure function of it.
            let path = request.uri().path().to_string();
            signer.sign(request.headers_mut(), &path, unix_now(), self.id_prefix);
        }
        Service::call(&mut self.inner, request)
    }
}

/// The canonical gRPC name of a status code (`PERMISSION_DENIED`).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// An error with its chain of causes (`transport error: tcp connect error: …`).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Vector {
        name: String,
        secret_hex: String,
        request_id: String,
        path: String,
        timestamp: Option<String>,
        signature_header: String,
    }

    #[test]
    fn signatures_match_the_shared_vectors() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors/auth_hmac_sha256.json");
        let vectors: Vec<Vector> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let timed: Vec<&Vector> = vectors.iter().filter(|v| v.timestamp.is_some()).collect();
        assert_eq!(timed.len(), 2);
        for v in timed {
            let signer =
                HmacSigner::from_key_list("k1", &format!("# ops\nk0:00\nk1:{}:operator", v.secret_hex)).unwrap();
            let signature = signer.signature(&v.request_id, &v.path, v.timestamp.as_deref().unwrap());
            assert_eq!(signature, v.signature_header, "{}", v.name);
        }
    }

    #[test]
    fn signing_adds_the_headers_and_keeps_a_given_request_id() {
        let signer = HmacSigner::from_key_list("k1", "k0:00,k1:686d61632d736563726574").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("req-1"));
        signer.sign(&mut headers, "/evidenceos.v1.EvidenceOS/Health", 1_735_689_600, "test");
        let get = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_string();
        assert_eq!(get("x-request-id"), "req-1");
        assert_eq!(get("x-evidenceos-key-id"), "k1");
        assert_eq!(get("x-evidenceos-timestamp"), "1735689600");
        assert_eq!(
            get("x-evidenceos-signature"),
            "sha256=ed726476d189dc797b09ebe8f2a881cce52fc7dc714d1b3c32a1ead78a863267"
        );
        let mut fresh = HeaderMap::new();
        signer.sign(&mut fresh, "/p", 1, "test");
        let mut again = HeaderMap::new();
        signer.sign(&mut again, "/p", 1, "test");
        let id = fresh.get("x-request-id").unwrap().to_str().unwrap();
        assert!(id.starts_with("test-") && !id.contains(':') && id.len() <= 128, "{id}");
        assert_ne!(fresh.get("x-request-id"), again.get("x-request-id"), "every request gets its own id");
    }

    #[test]
    fn key_lists_are_checked() {
        assert!(HmacSigner::from_key_list("k9", "k1:00").unwrap_err().to_string().contains("no key \"k9\""));
        assert!(HmacSigner::from_key_list("k1", "k1:zz").unwrap_err().to_string().contains("not hex"));
        assert!(!format!("{:?}", HmacSigner::from_key_list("k1", "k1:abcd").unwrap()).contains("abcd"));
    }

    fn options(endpoint: &str) -> TransportOptions {
        TransportOptions {
            endpoint: endpoint.into(),
            ca_cert: None,
            tls_server_name: None,
            client_cert: None,
            client_key: None,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn inconsistent_transport_settings_are_refused() {
        let refused = |o: TransportOptions| o.endpoint().unwrap_err().to_string();
        assert!(refused(options("ftp://x")).contains("http:// or https://"));
        assert!(refused(options("https://localhost:1")).contains("needs --ca-cert"));
        let with_ca = TransportOptions { ca_cert: Some("ca.pem".into()), ..options("http://localhost:1") };
        assert_eq!(refused(with_ca), "--ca-cert needs an https:// endpoint");
        let half = TransportOptions { client_cert: Some("c.pem".into()), ..options("https://localhost:1") };
        assert_eq!(refused(half), "--client-cert needs --client-key (mTLS uses both)");
        let half = TransportOptions { client_key: Some("k.pem".into()), ..options("http://localhost:1") };
        assert_eq!(refused(half), "--client-key needs --client-cert (mTLS uses both)");
        let missing =
            TransportOptions { ca_cert: Some("/nonexistent/ca.pem".into()), ..options("https://localhost:1") };
        assert!(refused(missing).starts_with("--ca-cert /nonexistent/ca.pem: "));
        assert!(options("http://127.0.0.1:1").endpoint().is_ok());
    }

    #[test]
    fn tls_refusals_get_a_hint() {
        let (bare, identified) =
            (TlsUse { https: true, client_cert: false }, TlsUse { https: true, client_cert: true });
        let alert = "transport error: received fatal alert: CertificateRequired";
        assert!(bare.hint(alert).unwrap().contains("pass --client-cert and --client-key"));
        assert!(identified.hint(alert).unwrap().contains("--mtls-client-ca"));
        let closed = "transport error: connection error: stream closed because of a broken pipe";
        assert!(bare.hint(closed).unwrap().contains("pass --client-cert and --client-key"));
        assert!(identified.hint(closed).unwrap().contains("--mtls-client-ca"));
        assert!(TlsUse { https: false, client_cert: false }.hint(closed).is_none(), "plaintext: not a TLS matter");
        assert!(bare.hint("tcp connect error: Connection refused").is_none());
    }
}
