//! Who is calling (SPEC §2.2), from verified material only: a client certificate the TLS layer
//! verified against the configured CA, a configured bearer token, or, when no authentication is
//! configured at all (development), the anonymous agent. Roles never come from anything a
//! client merely claims.

use std::collections::BTreeSet;

use evidenceos_core::hash::{Hash, sha256};
use evidenceos_core::{ErrorCode, KernelError, Principal, Role};

/// Request headers by lower-case name, as the transport received them (gRPC metadata or HTTP/1.1
/// headers): one authentication rule for both runtimes. A value that is not visible ASCII is absent.
pub trait Headers {
    fn header(&self, name: &str) -> Option<&str>;
}

#[cfg(feature = "server")]
impl Headers for tonic::metadata::MetadataMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|value| value.to_str().ok())
    }
}

fn unauthenticated(message: &str) -> KernelError {
    KernelError::new(ErrorCode::Unauthenticated, message)
}

/// Configured bearer tokens, kept only as SHA-256 digests.
#[derive(Clone, Default)]
pub struct BearerTokens {
    entries: Vec<(Hash, Role)>,
}

impl std::fmt::Debug for BearerTokens {
    // Token digests are still secrets' fingerprints: print only the count.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BearerTokens({} configured)", self.entries.len())
    }
}

impl BearerTokens {
    pub fn add(&mut self, token: &str, role: Role) {
        self.entries.push((sha256(token.as_bytes()), role));
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Constant-time over every configured token: no early exit, no data-dependent branch.
    fn role_of(&self, token: &str) -> Option<Role> {
        let digest = sha256(token.as_bytes());
        let mut found: Option<Role> = None;
        for (candidate, role) in &self.entries {
            let difference = candidate.iter().zip(digest.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            let matches = difference == 0;
            found = if matches { Some(*role) } else { found };
        }
        found
    }
}

/// Roles of client certificates: by hex SHA-256 of the leaf certificate's DER (the lists win),
/// else by the SAN URI `evidenceos:role:<role>` the configured client CA signed into it.
#[derive(Debug, Clone, Default)]
pub struct CertificateRoles {
    pub operators: BTreeSet<String>,
    pub auditors: BTreeSet<String>,
}

/// SAN URI prefix that names a certificate's role (SPEC §2.2).
pub const SAN_ROLE_PREFIX: &str = "evidenceos:role:";

impl CertificateRoles {
    fn principal(&self, leaf_der: &[u8]) -> Result<Principal, KernelError> {
        let fingerprint = hex::encode(sha256(leaf_der));
        let role = if self.operators.contains(&fingerprint) {
            Role::Operator
        } else if self.auditors.contains(&fingerprint) {
            Role::Auditor
        } else {
            san_role(leaf_der)?.unwrap_or(Role::Agent)
        };
        Ok(Principal::new(format!("mtls:{fingerprint}"), role))
    }
}

/// The role a certificate's SAN URIs name, if any. Two different roles, or an unknown
/// `evidenceos:role:` value, are refused rather than guessed.
fn san_role(leaf_der: &[u8]) -> Result<Option<Role>, KernelError> {
    let refuse = |message: &str| Err(unauthenticated(message));
    let Ok((_, certificate)) = x509_parser::parse_x509_certificate(leaf_der) else {
        return refuse("client certificate does not parse");
    };
    let Ok(names) = certificate.subject_alternative_name() else {
        return refuse("client certificate has a malformed subject alternative name");
    };
    let uris = names.iter().flat_map(|san| san.value.general_names.iter()).filter_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) => uri.strip_prefix(SAN_ROLE_PREFIX),
        _ => None,
    });
    let mut found: Option<Role> = None;
    for name in uris {
        let role = match name {
            "operator" => Role::Operator,
            "auditor" => Role::Auditor,
            "agent" => Role::Agent,
            _ => return refuse("client certificate names an unknown evidenceos:role"),
        };
        if found.is_some_and(|earlier| earlier != role) {
            return refuse("client certificate names more than one evidenceos:role");
        }
        found = Some(role);
    }
    Ok(found)
}

/// The HTTP `:path` of a request, put into its extensions by the server so HMAC signatures
/// are checked over what the client really called (SPEC §2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPath(pub String);

/// Largest clock difference accepted for HMAC timestamps; request ids are remembered against
/// replay for twice as long.
pub const HMAC_MAX_SKEW_SECS: u64 = 300;
/// Request ids remembered at most; beyond it new HMAC requests are refused until old ones age out.
pub const HMAC_MAX_REMEMBERED: usize = 1_000_000;

#[derive(Clone)]
struct HmacKey {
    secret: Vec<u8>,
    role: Role,
}

type SeenRequests = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<(String, String), u64>>>;

/// HMAC request-signing keys by key id, and the request ids seen recently.
#[derive(Clone, Default)]
pub struct HmacKeys {
    keys: std::collections::BTreeMap<String, HmacKey>,
    /// Timestamps mandatory (production).
    require_timestamp: bool,
    seen: SeenRequests,
}

impl std::fmt::Debug for HmacKeys {
    // Key ids only: never secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HmacKeys({:?})", self.keys.keys().collect::<Vec<_>>())
    }
}

/// One HMAC key as operators write it, `kid:hexsecret[:role]` (role agent, auditor or operator;
/// default agent): an entry of `--auth-hmac-key-file`, `EVIDENCEOS_HMAC_KEYS` or a client's key file.
pub struct HmacKeyEntry {
    pub key_id: String,
    pub secret: Vec<u8>,
    pub role: Role,
}

impl std::fmt::Debug for HmacKeyEntry {
    // Never print the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmacKeyEntry").field("key_id", &self.key_id).field("role", &self.role).finish_non_exhaustive()
    }
}

impl HmacKeyEntry {
    pub fn parse(entry: &str) -> Result<Self, String> {
        let mut parts = entry.trim().split(':');
        let (Some(kid), Some(secret)) = (parts.next(), parts.next()) else {
            return Err("HMAC keys are kid:hexsecret[:role]".into());
        };
        let role = match parts.next() {
            None | Some("agent") => Role::Agent,
            Some("auditor") => Role::Auditor,
            Some("operator") => Role::Operator,
            Some(other) => return Err(format!("HMAC key {kid}: unknown role {other}")),
        };
        if kid.is_empty() || parts.next().is_some() {
            return Err("HMAC keys are kid:hexsecret[:role]".into());
        }
        let secret = hex::decode(secret).map_err(|_| format!("HMAC key {kid}: secret is not hex"))?;
        if secret.is_empty() {
            return Err(format!("HMAC key {kid}: empty secret"));
        }
        Ok(Self { key_id: kid.to_string(), secret, role })
    }
}

/// The MAC of a signed request (SPEC §2.3), over `"{request_id}:{path}"` or
/// `"{request_id}:{path}:{timestamp}"`: clients finalize it, the daemon verifies it.
pub fn request_mac(secret: &[u8], request_id: &str, path: &str, timestamp: Option<&str>) -> hmac::Hmac<sha2::Sha256> {
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret).expect("any key length");
    mac.update(request_id.as_bytes());
    mac.update(b":");
    mac.update(path.as_bytes());
    if let Some(timestamp) = timestamp {
        mac.update(b":");
        mac.update(timestamp.as_bytes());
    }
    mac
}

impl HmacKeys {
    /// Adds one `kid:hexsecret[:role]` entry (see [`HmacKeyEntry`]).
    pub fn add_entry(&mut self, entry: &str) -> Result<(), String> {
        let HmacKeyEntry { key_id, secret, role } = HmacKeyEntry::parse(entry)?;
        self.keys.insert(key_id, HmacKey { secret, role });
        Ok(())
    }

    pub fn require_timestamps(&mut self) {
        self.require_timestamp = true;
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn verify(&self, headers: &dyn Headers, path: &str, now_unix: u64) -> Result<Principal, KernelError> {
        use hmac::Mac;
        let header = |name: &str| headers.header(name);
        let request_id = header("x-request-id").ok_or_else(|| unauthenticated("HMAC needs x-request-id"))?;
        if !evidenceos_core::validate::is_valid_request_id(request_id) {
            return Err(unauthenticated("x-request-id must be 1..128 printable characters without ':'"));
        }
        let kid = header("x-evidenceos-key-id").unwrap_or("default");
        let key = self.keys.get(kid).ok_or_else(|| unauthenticated("unknown HMAC key id"))?;
        let timestamp = match header("x-evidenceos-timestamp") {
            Some(text) => {
                let ts: u64 =
                    text.parse().map_err(|_| unauthenticated("x-evidenceos-timestamp must be unix seconds"))?;
                if ts.abs_diff(now_unix) > HMAC_MAX_SKEW_SECS {
                    return Err(unauthenticated("x-evidenceos-timestamp is outside the accepted clock skew"));
                }
                Some(text)
            }
            None if self.require_timestamp => {
                return Err(unauthenticated("x-evidenceos-timestamp is required"));
            }
            None => None,
        };
        let signature = header("x-evidenceos-signature")
            .and_then(|v| v.strip_prefix("sha256="))
            .and_then(|v| hex::decode(v).ok())
            .ok_or_else(|| unauthenticated("x-evidenceos-signature must be sha256=<hex>"))?;
        let mac = request_mac(&key.secret, request_id, path, timestamp);
        mac.verify_slice(&signature).map_err(|_| unauthenticated("bad HMAC signature"))?;
        // SPEC §2.3: on an idempotent method a repeat is a retry the idempotency record answers
        // (no second effect), so a client whose call failed can retry with the same request id.
        let idempotent = crate::rpc::Method::from_path(path).is_some_and(|(_, method)| method.is_idempotent());
        if !idempotent {
            self.remember(kid, request_id, now_unix)?;
        }
        Ok(Principal::new(format!("hmac:{kid}"), key.role))
    }

    /// Refuses a (key id, request id) seen recently: a captured request cannot be sent again.
    /// Not consulted on idempotent methods, where the kernel's idempotency record answers repeats.
    fn remember(&self, kid: &str, request_id: &str, now_unix: u64) -> Result<(), KernelError> {
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (kid.to_string(), request_id.to_string());
        if seen.get(&key).is_some_and(|expires| *expires > now_unix) {
            return Err(unauthenticated("replayed x-request-id"));
        }
        if seen.len() >= HMAC_MAX_REMEMBERED {
            seen.retain(|_, expires| *expires > now_unix);
            if seen.len() >= HMAC_MAX_REMEMBERED {
                return Err(KernelError::resource_exhausted("too many recent HMAC requests; retry later"));
            }
        }
        seen.insert(key, now_unix + HMAC_MAX_SKEW_SECS * 2);
        Ok(())
    }
}

#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    tokens: BearerTokens,
    hmac: HmacKeys,
    /// Set when client certificates are required (mTLS).
    certificates: Option<CertificateRoles>,
}

/// A combination of authentication methods the daemon refuses at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthConfigError {
    /// With mTLS the certificate alone identifies a caller; secrets would never be checked.
    SecretsWithCertificates,
}

impl std::fmt::Display for AuthConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SecretsWithCertificates => f.write_str(
                "with mTLS (--require-client-cert) callers are identified by their client certificates, so bearer tokens and HMAC keys would never be checked: remove the tokens and HMAC keys (flags and EVIDENCEOS_* variables), or drop mTLS",
            ),
        }
    }
}

impl std::error::Error for AuthConfigError {}

impl Authenticator {
    /// Refuses certificates combined with tokens or HMAC keys: one method decides who calls.
    pub fn new(
        tokens: BearerTokens,
        hmac: HmacKeys,
        certificates: Option<CertificateRoles>,
    ) -> Result<Self, AuthConfigError> {
        if certificates.is_some() && !(tokens.is_empty() && hmac.is_empty()) {
            return Err(AuthConfigError::SecretsWithCertificates);
        }
        Ok(Self { tokens, hmac, certificates })
    }

    /// No authentication configured: every caller is `anonymous` with the agent role.
    pub fn is_development(&self) -> bool {
        self.tokens.is_empty() && self.hmac.is_empty() && self.certificates.is_none()
    }

    /// `path` is the request's HTTP path (`/evidenceos.v2.EvidenceOS/Health`); `peer_certificates`
    /// the client's chain as verified by the TLS layer (leaf first).
    pub fn authenticate(
        &self,
        headers: &dyn Headers,
        path: &str,
        peer_certificates: Option<&[Vec<u8>]>,
        now_unix: u64,
    ) -> Result<Principal, KernelError> {
        if let Some(roles) = &self.certificates {
            let leaf = peer_certificates
                .and_then(<[Vec<u8>]>::first)
                .ok_or_else(|| unauthenticated("a client certificate is required"))?;
            return roles.principal(leaf);
        }
        if !self.hmac.is_empty() && headers.header("x-evidenceos-signature").is_some() {
            return self.hmac.verify(headers, path, now_unix);
        }
        if self.is_development() {
            return Ok(Principal::anonymous());
        }
        if self.tokens.is_empty() {
            return Err(unauthenticated("missing x-evidenceos-signature (HMAC request signing)"));
        }
        let header =
            headers.header("authorization").ok_or_else(|| unauthenticated("missing authorization: Bearer token"))?;
        let token =
            header.strip_prefix("Bearer ").ok_or_else(|| unauthenticated("authorization must be 'Bearer <token>'"))?;
        let role = self.tokens.role_of(token).ok_or_else(|| unauthenticated("unknown bearer token"))?;
        Ok(Principal::new(format!("bearer:{}", hex::encode(sha256(token.as_bytes()))), role))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/evidenceos.v2.EvidenceOS/Health";
    const NOW: u64 = 1_735_689_600;

    /// Headers as a transport would hand them over, for tests.
    #[derive(Default, Clone)]
    pub(super) struct MetadataMap(std::collections::BTreeMap<String, String>);

    impl MetadataMap {
        pub(super) fn new() -> Self {
            Self::default()
        }

        pub(super) fn insert(&mut self, name: &str, value: &str) {
            self.0.insert(name.to_string(), value.to_string());
        }
    }

    impl Headers for MetadataMap {
        fn header(&self, name: &str) -> Option<&str> {
            self.0.get(name).map(String::as_str)
        }
    }

    fn metadata(value: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert("authorization", value);
        map
    }

    fn tokens() -> Authenticator {
        let mut tokens = BearerTokens::default();
        tokens.add("agent-secret", Role::Agent);
        tokens.add("auditor-secret", Role::Auditor);
        Authenticator::new(tokens, HmacKeys::default(), None).unwrap()
    }

    #[test]
    fn a_known_token_gets_its_role_and_a_digest_principal() {
        let principal = tokens().authenticate(&metadata("Bearer auditor-secret"), PATH, None, NOW).unwrap();
        assert_eq!(principal.role, Role::Auditor);
        assert_eq!(principal.id, format!("bearer:{}", hex::encode(sha256(b"auditor-secret"))));
        assert!(!principal.id.contains("auditor-secret"));
    }

    #[test]
    fn missing_malformed_or_unknown_tokens_are_unauthenticated() {
        let auth = tokens();
        for headers in [MetadataMap::new(), metadata("Basic abc"), metadata("Bearer nope")] {
            assert_eq!(auth.authenticate(&headers, PATH, None, NOW).unwrap_err().code, ErrorCode::Unauthenticated);
        }
    }

    #[test]
    fn development_mode_is_the_anonymous_agent_whatever_the_headers_say() {
        let mut claimed = metadata("Bearer operator");
        claimed.insert("x-evidenceos-role", "operator");
        assert_eq!(Authenticator::default().authenticate(&claimed, PATH, None, NOW).unwrap(), Principal::anonymous());
    }

    /// A self-signed certificate's DER with these SAN URIs.
    fn certificate(uris: &[&str]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["client.example".to_string()]).unwrap();
        for uri in uris {
            params.subject_alt_names.push(rcgen::SanType::URI(rcgen::string::Ia5String::try_from(*uri).unwrap()));
        }
        params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().der().to_vec()
    }

    #[test]
    fn certificates_decide_the_principal_and_headers_cannot_raise_it() {
        let operator_cert = certificate(&[]);
        let agent_cert = certificate(&["https://example.org/not-a-role"]);
        let roles =
            CertificateRoles { operators: [hex::encode(sha256(&operator_cert))].into(), auditors: BTreeSet::new() };
        let auth = Authenticator::new(BearerTokens::default(), HmacKeys::default(), Some(roles)).unwrap();
        let operator =
            auth.authenticate(&MetadataMap::new(), PATH, Some(std::slice::from_ref(&operator_cert)), NOW).unwrap();
        assert_eq!(operator.role, Role::Operator);
        assert_eq!(operator.id, format!("mtls:{}", hex::encode(sha256(&operator_cert))));
        let mut spoofing = metadata("Bearer operator-token");
        spoofing.insert("x-evidenceos-role", "operator");
        assert_eq!(auth.authenticate(&spoofing, PATH, Some(&[agent_cert]), NOW).unwrap().role, Role::Agent);
        assert_eq!(auth.authenticate(&spoofing, PATH, None, NOW).unwrap_err().code, ErrorCode::Unauthenticated);
    }

    #[test]
    fn san_uri_roles_apply_unless_a_fingerprint_list_names_the_certificate() {
        let listed_auditor = certificate(&["evidenceos:role:operator"]);
        let roles =
            CertificateRoles { operators: BTreeSet::new(), auditors: [hex::encode(sha256(&listed_auditor))].into() };
        let auth = Authenticator::new(BearerTokens::default(), HmacKeys::default(), Some(roles)).unwrap();
        let role_of = |der: Vec<u8>| auth.authenticate(&MetadataMap::new(), PATH, Some(&[der]), NOW);
        let cases = [
            (certificate(&["evidenceos:role:operator"]), Role::Operator),
            (certificate(&["evidenceos:role:auditor"]), Role::Auditor),
            (certificate(&["evidenceos:role:agent"]), Role::Agent),
            (certificate(&["evidenceos:role:auditor", "evidenceos:role:auditor"]), Role::Auditor),
            (listed_auditor, Role::Auditor),
        ];
        for (der, expected) in cases {
            assert_eq!(role_of(der).unwrap().role, expected);
        }
        for refused in [
            certificate(&["evidenceos:role:operator", "evidenceos:role:agent"]),
            certificate(&["evidenceos:role:root"]),
            b"not a certificate".to_vec(),
        ] {
            assert_eq!(role_of(refused).unwrap_err().code, ErrorCode::Unauthenticated);
        }
    }

    #[test]
    fn certificates_are_never_combined_with_tokens_or_hmac_keys() {
        let mut tokens = BearerTokens::default();
        tokens.add("operator-token", Role::Operator);
        let mut hmac = HmacKeys::default();
        hmac.add_entry("k1:00112233").unwrap();
        let certificates = Some(CertificateRoles::default());
        let refused = [
            Authenticator::new(tokens.clone(), HmacKeys::default(), certificates.clone()),
            Authenticator::new(BearerTokens::default(), hmac.clone(), certificates.clone()),
        ];
        for attempt in refused {
            assert_eq!(attempt.unwrap_err(), AuthConfigError::SecretsWithCertificates);
        }
        assert!(Authenticator::new(tokens, hmac, None).is_ok(), "tokens and HMAC keys combine without mTLS");
    }

    #[test]
    fn debug_output_hides_tokens() {
        assert!(format!("{:?}", tokens()).contains("BearerTokens(2 configured)"));
    }
}

#[cfg(test)]
mod hmac_tests {
    use super::tests::MetadataMap;
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

    fn vectors() -> Vec<Vector> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors/auth_hmac_sha256.json");
        serde_json::from_str(&std::fs::read_to_string(path).expect("shared/vectors")).unwrap()
    }

    fn signed(v: &Vector) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert("x-request-id", &v.request_id);
        map.insert("x-evidenceos-key-id", "k1");
        map.insert("x-evidenceos-signature", &v.signature_header);
        if let Some(ts) = &v.timestamp {
            map.insert("x-evidenceos-timestamp", ts);
        }
        map
    }

    fn keys(v: &Vector) -> Authenticator {
        let mut keys = HmacKeys::default();
        keys.add_entry(&format!("k1:{}:operator", v.secret_hex)).unwrap();
        Authenticator::new(BearerTokens::default(), keys, None).unwrap()
    }

    fn now_for(v: &Vector) -> u64 {
        v.timestamp.as_deref().map_or(1_735_689_600, |t| t.parse().unwrap())
    }

    #[test]
    fn every_vector_verifies_over_its_path() {
        let vectors = vectors();
        assert_eq!(vectors.len(), 3);
        for v in &vectors {
            let principal = keys(v)
                .authenticate(&signed(v), &v.path, None, now_for(v))
                .unwrap_or_else(|e| panic!("{}: {e}", v.name));
            assert_eq!((principal.id.as_str(), principal.role), ("hmac:k1", Role::Operator));
        }
    }

    #[test]
    fn wrong_path_stale_timestamp_unknown_key_and_replay_are_refused() {
        for v in &vectors() {
            let auth = keys(v);
            let now = now_for(v);
            let other_path = v.path.replace("EvidenceOS/", "EvidenceOS/X");
            assert!(auth.authenticate(&signed(v), &other_path, None, now).is_err(), "{}: wrong path", v.name);
            if v.timestamp.is_some() {
                assert!(auth.authenticate(&signed(v), &v.path, None, now + 301).is_err(), "{}: stale", v.name);
            }
            let mut unknown = signed(v);
            unknown.insert("x-evidenceos-key-id", "nobody");
            assert!(auth.authenticate(&unknown, &v.path, None, now).is_err(), "{}: unknown key", v.name);
            auth.authenticate(&signed(v), &v.path, None, now).unwrap();
            let again = auth.authenticate(&signed(v), &v.path, None, now);
            if v.path.ends_with("/CreateClaimV2") {
                assert!(again.is_ok(), "{}: a retry, answered by the idempotency record", v.name);
            } else {
                assert!(again.unwrap_err().message.contains("replayed"), "{}: replay", v.name);
            }
        }
    }

    #[test]
    fn a_repeated_request_id_is_a_retry_only_on_the_idempotent_methods() {
        let mut keys = HmacKeys::default();
        keys.add_entry("k1:00112233").unwrap();
        let auth = Authenticator::new(BearerTokens::default(), keys, None).unwrap();
        // One request id per path: replay protection is per (key id, request id).
        let sign = |path: &str| {
            use hmac::{KeyInit, Mac};
            let request_id = path.replace(':', "").replace('/', "-");
            let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&[0, 0x11, 0x22, 0x33]).unwrap();
            mac.update(format!("{request_id}:{path}").as_bytes());
            let mut map = MetadataMap::new();
            map.insert("x-request-id", &request_id);
            map.insert("x-evidenceos-key-id", "k1");
            map.insert("x-evidenceos-signature", &format!("sha256={}", hex::encode(mac.finalize().into_bytes())));
            map
        };
        for package in ["evidenceos.v2", "evidenceos.v1"] {
            for method in ["CreateClaimV2", "ExecuteClaimV2", "RevokeClaim"] {
                let path = format!("/{package}.EvidenceOS/{method}");
                for attempt in 0..3 {
                    let principal = auth.authenticate(&sign(&path), &path, None, 1_735_689_600);
                    assert_eq!(principal.unwrap().id, "hmac:k1", "{path} attempt {attempt}");
                }
            }
            for method in ["Health", "CommitArtifacts", "GrantCredit"] {
                let path = format!("/{package}.EvidenceOS/{method}");
                auth.authenticate(&sign(&path), &path, None, 1_735_689_600).unwrap();
                let replay = auth.authenticate(&sign(&path), &path, None, 1_735_689_600).unwrap_err();
                assert!(replay.message.contains("replayed"), "{path}");
            }
        }
    }

    #[test]
    fn production_requires_timestamps_and_entries_are_validated() {
        let v = vectors().into_iter().find(|v| v.timestamp.is_none()).unwrap();
        let mut keys = HmacKeys::default();
        keys.add_entry(&format!("k1:{}", v.secret_hex)).unwrap();
        keys.require_timestamps();
        let auth = Authenticator::new(BearerTokens::default(), keys, None).unwrap();
        let err = auth.authenticate(&signed(&v), &v.path, None, 1_735_689_600).unwrap_err();
        assert!(err.message.contains("timestamp is required"));
        let mut keys = HmacKeys::default();
        assert!(keys.add_entry("k1:zz").is_err());
        assert!(keys.add_entry("k1:abcd:root").is_err());
        assert!(keys.add_entry("nocolon").is_err());
    }
}
