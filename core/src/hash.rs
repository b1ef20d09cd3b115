//! SHA-256 helpers: plain digests and the domain-separated `H(d, x)` of SPEC notation.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

pub fn sha256(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

/// `H(domain, parts...)` = SHA-256(domain ‖ part₀ ‖ part₁ ‖ …), no separators (SPEC notation).
pub fn domain_hash(domain: &str, parts: &[&[u8]]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(domain.as_bytes());
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// Parses exactly 32 bytes of lowercase or uppercase hex.
pub fn parse_hash_hex(text: &str) -> Option<Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_digest_is_the_rfc6962_empty_root() {
        assert_eq!(hex::encode(sha256(b"")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn domain_hash_concatenates_without_separator() {
        assert_eq!(domain_hash("ab", &[b"c", b"d"]), sha256(b"abcd"));
    }

    #[test]
    fn parse_hash_hex_requires_32_bytes() {
        assert!(parse_hash_hex(&"00".repeat(32)).is_some());
        assert!(parse_hash_hex(&"00".repeat(31)).is_none());
        assert!(parse_hash_hex(&"zz".repeat(32)).is_none());
    }
}
