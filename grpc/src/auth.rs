//! Who is calling (SPEC §2.2), from verified material only: a configured bearer token, or, when
//! no authentication is configured at all (development), the anonymous agent. Roles never come
//! from anything a client merely claims.

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

#[derive(Debug, Clone)]
pub enum Authenticator {
    /// No authentication configured: every caller is `anonymous` with the agent role.
    Development,
    Bearer(BearerTokens),
}

impl Authenticator {
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Principal, Status> {
        match self {
            Self::Development => Ok(Principal::anonymous()),
            Self::Bearer(tokens) => {
                let header = metadata
                    .get("authorization")
                    .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer token"))?;
                let token = header
                    .to_str()
                    .ok()
                    .and_then(|value| value.strip_prefix("Bearer "))
                    .ok_or_else(|| Status::unauthenticated("authorization must be 'Bearer <token>'"))?;
                let role = tokens.role_of(token).ok_or_else(|| Status::unauthenticated("unknown bearer token"))?;
                Ok(Principal::new(format!("bearer:{}", hex::encode(sha256(token.as_bytes()))), role))
            }
        }
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
        Authenticator::Bearer(tokens)
    }

    #[test]
    fn a_known_token_gets_its_role_and_a_digest_principal() {
        let principal = tokens().authenticate(&metadata("Bearer auditor-secret")).unwrap();
        assert_eq!(principal.role, Role::Auditor);
        assert_eq!(principal.id, format!("bearer:{}", hex::encode(sha256(b"auditor-secret"))));
        assert!(!principal.id.contains("auditor-secret"));
    }

    #[test]
    fn missing_malformed_or_unknown_tokens_are_unauthenticated() {
        let auth = tokens();
        assert_eq!(auth.authenticate(&MetadataMap::new()).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(auth.authenticate(&metadata("Basic abc")).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(auth.authenticate(&metadata("Bearer nope")).unwrap_err().code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn development_mode_is_the_anonymous_agent_whatever_the_headers_say() {
        let mut claimed = metadata("Bearer operator");
        claimed.insert("x-evidenceos-role", "operator".parse().unwrap());
        assert_eq!(Authenticator::Development.authenticate(&claimed).unwrap(), Principal::anonymous());
    }

    #[test]
    fn debug_output_hides_tokens() {
        assert_eq!(format!("{:?}", tokens()), "Bearer(BearerTokens(2 configured))");
    }
}
