//! SPEC §1 field limits, one place per rule. A leaf module: every other module checks names,
//! ids, reasons and request ids through it, so none needs `request` or `claims` for that.

use crate::error::KernelError;
use crate::hash::Hash;

/// Longest name or ref (SPEC §1).
pub const MAX_NAME_CHARS: usize = 128;
/// Longest reason (SPEC §1).
pub const MAX_REASON_BYTES: usize = 256;
/// Longest x-request-id (SPEC §1).
pub const MAX_REQUEST_ID_CHARS: usize = 128;
/// Most artifacts one claim may carry (SPEC §1).
pub const MAX_ARTIFACTS: usize = 128;

/// Names and refs: 1..128 chars of `[A-Za-z0-9._:/-]` (SPEC §1 field limits).
pub fn validate_name(field: &str, value: &str) -> Result<(), KernelError> {
    let ok = (1..=MAX_NAME_CHARS).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(KernelError::invalid_argument(format!("{field} must be 1..{MAX_NAME_CHARS} chars of [A-Za-z0-9._:/-]")))
    }
}

/// Reasons: 1..256 bytes of printable text.
pub fn validate_reason(value: &str) -> Result<(), KernelError> {
    let ok = (1..=MAX_REASON_BYTES).contains(&value.len()) && !value.chars().any(char::is_control);
    if ok { Ok(()) } else { Err(KernelError::invalid_argument("reason must be 1..256 printable characters")) }
}

/// x-request-id: 1..128 printable ASCII without ':' (the HMAC message uses ':' as separator).
pub fn is_valid_request_id(value: &str) -> bool {
    (1..=MAX_REQUEST_ID_CHARS).contains(&value.len()) && value.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b':')
}

/// Ids are exactly 32 bytes (SPEC §1 field limits).
pub fn parse_id(field: &str, bytes: &[u8]) -> Result<Hash, KernelError> {
    bytes.try_into().map_err(|_| KernelError::invalid_argument(format!("{field} must be 32 bytes")))
}

/// Artifacts: 1..128 per claim.
pub fn validate_artifact_count(count: usize) -> Result<(), KernelError> {
    if (1..=MAX_ARTIFACTS).contains(&count) {
        Ok(())
    } else {
        Err(KernelError::invalid_argument(format!("artifacts must number 1..{MAX_ARTIFACTS}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec_charset() {
        assert!(validate_name("x", "bearer:ab12/._-").is_ok());
        assert!(validate_name("x", &"a".repeat(128)).is_ok());
        assert!(validate_name("x", "").is_err());
        assert!(validate_name("x", &"a".repeat(129)).is_err());
        assert!(validate_name("x", "has space").is_err());
    }

    #[test]
    fn reasons_are_printable_and_bounded() {
        assert!(validate_reason(&"r".repeat(256)).is_ok());
        assert!(validate_reason("").is_err());
        assert!(validate_reason(&"r".repeat(257)).is_err());
        assert!(validate_reason("line\nbreak").is_err());
    }

    #[test]
    fn request_ids_are_printable_ascii_without_colons() {
        assert!(is_valid_request_id("req-1 with spaces"));
        assert!(is_valid_request_id(&"a".repeat(128)));
        assert!(!is_valid_request_id(""));
        assert!(!is_valid_request_id(&"a".repeat(129)));
        assert!(!is_valid_request_id("a:b"));
        assert!(!is_valid_request_id("tab\there"));
    }

    #[test]
    fn ids_are_exactly_32_bytes() {
        assert_eq!(parse_id("claim_id", &[7; 32]).unwrap(), [7; 32]);
        assert!(parse_id("claim_id", &[7; 31]).is_err());
        assert!(parse_id("claim_id", &[7; 33]).is_err());
    }

    #[test]
    fn artifact_counts_are_bounded() {
        assert!(validate_artifact_count(1).is_ok());
        assert!(validate_artifact_count(MAX_ARTIFACTS).is_ok());
        assert!(validate_artifact_count(0).is_err());
        assert!(validate_artifact_count(MAX_ARTIFACTS + 1).is_err());
    }
}
