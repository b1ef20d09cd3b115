//! Who is calling (SPEC §2.2), from verified material only: a client certificate the TLS layer
//! verified against the configured CA, a configured bearer token, or, when no authentication is
//! configured at all (development), the anonymous agent. Roles never come from anything a
//! client merely claims.

use std::collections::BTreeSet;

use evidenceos_core::hash::{Hash, sha256};
use evidenceos_core::{Principal, Role};
use tonic::Status;
use tonic::metadata::MetadataMap;

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

/// Roles of client certificates, by hex SHA-256 of the leaf certificate's DER.
#[derive(Debug, Clone, Default)]
pub struct CertificateRoles {
    pub operators: BTreeSet<String>,
    pub auditors: BTreeSet<String>,
}

impl CertificateRoles {
    fn principal(&self, leaf_der: &[u8]) -> Principal {
        let fingerprint = hex::encode(sha256(leaf_der));
        let role = if self.operators.contains(&fingerprint) {
            Role::Operator
        } else if self.auditors.contains(&fingerprint) {
            Role::Auditor
        } else {
            Role::Agent
        };
        Principal::new(format!("mtls:{fingerprint}"), role)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    tokens: BearerTokens,
    /// Set when client certificates are required (mTLS).
    certificates: Option<CertificateRoles>,
}

impl Authenticator {
    pub fn new(tokens: BearerTokens, certificates: Option<CertificateRoles>) -> Self {
        Self { tokens, certificates }
    }

    /// No authentication configured: every caller is `anonymous` with the agent role.
    pub fn is_development(&self) -> bool {
        self.tokens.is_empty() && self.certificates.is_none()
    }

    /// `peer_certificates` are the client's chain as verified by the TLS layer (leaf first).
    pub fn authenticate(
        &self,
        metadata: &MetadataMap,
        peer_certificates: Option<&[Vec<u8>]>,
    ) -> Result<Principal, Status> {
        if let Some(roles) = &self.certificates {
            let leaf = peer_certificates
                .and_then(<[Vec<u8>]>::first)
                .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
            return Ok(roles.principal(leaf));
        }
        if self.tokens.is_empty() {
            return Ok(Principal::anonymous());
        }
        let header = metadata
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer token"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("authorization must be 'Bearer <token>'"))?;
        let role = self.tokens.role_of(token).ok_or_else(|| Status::unauthenticated("unknown bearer token"))?;
        Ok(Principal::new(format!("bearer:{}", hex::encode(sha256(token.as_bytes()))), role))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(value: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert("authorization", value.parse().unwrap());
        map
    }

    fn tokens() -> Authenticator {
        let mut tokens = BearerTokens::default();
        tokens.add("agent-secret", Role::Agent);
        tokens.add("auditor-secret", Role::Auditor);
        Authenticator::new(tokens, None)
    }

    #[test]
    fn a_known_token_gets_its_role_and_a_digest_principal() {
        let principal = tokens().authenticate(&metadata("Bearer auditor-secret"), None).unwrap();
        assert_eq!(principal.role, Role::Auditor);
        assert_eq!(principal.id, format!("bearer:{}", hex::encode(sha256(b"auditor-secret"))));
        assert!(!principal.id.contains("auditor-secret"));
    }

    #[test]
    fn missing_malformed_or_unknown_tokens_are_unauthenticated() {
        let auth = tokens();
        for headers in [MetadataMap::new(), metadata("Basic abc"), metadata("Bearer nope")] {
            assert_eq!(auth.authenticate(&headers, None).unwrap_err().code(), tonic::Code::Unauthenticated);
        }
    }

    #[test]
    fn development_mode_is_the_anonymous_agent_whatever_the_headers_say() {
        let mut claimed = metadata("Bearer operator");
        claimed.insert("x-evidenceos-role", "operator".parse().unwrap());
        assert_eq!(Authenticator::default().authenticate(&claimed, None).unwrap(), Principal::anonymous());
    }

    #[test]
    fn certificates_decide_the_principal_and_headers_cannot_raise_it() {
        let operator_cert = b"operator leaf der".to_vec();
        let agent_cert = b"agent leaf der".to_vec();
        let roles =
            CertificateRoles { operators: [hex::encode(sha256(&operator_cert))].into(), auditors: BTreeSet::new() };
        let mut tokens = BearerTokens::default();
        tokens.add("operator-token", Role::Operator);
        let auth = Authenticator::new(tokens, Some(roles));
        let operator = auth.authenticate(&MetadataMap::new(), Some(&[operator_cert.clone()])).unwrap();
        assert_eq!(operator.role, Role::Operator);
        assert_eq!(operator.id, format!("mtls:{}", hex::encode(sha256(&operator_cert))));
        let mut spoofing = metadata("Bearer operator-token");
        spoofing.insert("x-evidenceos-role", "operator".parse().unwrap());
        assert_eq!(auth.authenticate(&spoofing, Some(&[agent_cert])).unwrap().role, Role::Agent);
        assert_eq!(auth.authenticate(&spoofing, None).unwrap_err().code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn debug_output_hides_tokens() {
        assert!(format!("{:?}", tokens()).contains("BearerTokens(2 configured)"));
    }
}
