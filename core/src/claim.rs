//! Claims: identity, lanes, lifecycle states, and the record the kernel keeps per claim.

use serde::{Deserialize, Serialize};

use crate::error::KernelError;
use crate::hash::{Hash, domain_hash, sha256};

/// Lifecycle states (SPEC §5.1), with their wire numbers. EXECUTING and SETTLED are transient
/// and never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClaimState {
    Uncommitted,
    Committed,
    Sealed,
    Certified,
    Revoked,
    Tainted,
    Stale,
    Frozen,
}

impl ClaimState {
    /// `evidenceos.v2.ClaimState` number.
    pub fn wire(self) -> i32 {
        match self {
            Self::Uncommitted => 1,
            Self::Committed => 2,
            Self::Sealed => 3,
            Self::Certified => 6,
            Self::Revoked => 7,
            Self::Tainted => 8,
            Self::Stale => 9,
            Self::Frozen => 10,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Uncommitted => "UNCOMMITTED",
            Self::Committed => "COMMITTED",
            Self::Sealed => "SEALED",
            Self::Certified => "CERTIFIED",
            Self::Revoked => "REVOKED",
            Self::Tainted => "TAINTED",
            Self::Stale => "STALE",
            Self::Frozen => "FROZEN",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    Fast,
    Heavy,
}

impl Lane {
    /// SPEC §5.2 names and aliases; empty means fast.
    pub fn parse(text: &str) -> Result<Self, KernelError> {
        match text {
            "" | "fast" | "highassurance" | "high_assurance" => Ok(Self::Fast),
            "heavy" | "lowassurance" | "low_assurance" => Ok(Self::Heavy),
            _ => Err(KernelError::invalid_argument("lane must be fast or heavy")),
        }
    }

    /// Most oracle calls one execution may make (C_max).
    pub fn max_oracle_calls(self) -> u32 {
        match self {
            Self::Fast => 32,
            Self::Heavy => 8,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Decision {
    Approve,
    Reject,
    Defer,
}

impl Decision {
    /// `evidenceos.v2.Decision` number; also the mirroring reason code (SPEC §5.5).
    pub fn wire(self) -> u32 {
        match self {
            Self::Approve => 1,
            Self::Reject => 2,
            Self::Defer => 3,
        }
    }
}

/// Reason codes beyond the decision mirror (SPEC §5.3, §5.5).
pub mod reason {
    pub const CANARY_FROZEN: u32 = 91;
    pub const NUMERIC_GUARD: u32 = 9206;
}

/// Output schemas whose output is one canonical oracle symbol (k_out = 0).
pub const SYMBOL_OUTPUT_SCHEMAS: [&str; 2] = ["legacy/v1", "EVIDENCEOS_SC_V0"];

pub fn validate_output_schema(schema: &str) -> Result<(), KernelError> {
    if SYMBOL_OUTPUT_SCHEMAS.contains(&schema) {
        Ok(())
    } else {
        Err(KernelError::invalid_argument("output_schema_id must be legacy/v1 or EVIDENCEOS_SC_V0"))
    }
}

/// claim_id = H("evidenceos:claim_id:v2", topic ‖ holdout handle ‖ phys_hir ‖ be64 epoch_size ‖ be32 N).
pub fn claim_id(
    topic_id: &Hash,
    holdout_handle: &Hash,
    phys_hir_hash: &Hash,
    epoch_size: u64,
    num_symbols: u32,
) -> Hash {
    domain_hash(
        "evidenceos:claim_id:v2",
        &[topic_id, holdout_handle, phys_hir_hash, &epoch_size.to_be_bytes(), &num_symbols.to_be_bytes()],
    )
}

/// The server-side topic of a V2 claim: SHA-256 of a canonical manifest of what the claim is
/// about, so identities that rotate names of principals still share one topic budget.
#[derive(Debug, Serialize)]
struct TopicManifest<'a> {
    claim_name: &'a str,
    epoch_config_ref: &'a str,
    output_schema_id: &'a str,
    holdout_ref: &'a str,
    holdout_handle_hex: String,
    oracle_num_symbols: u32,
    epoch_size: u64,
}

#[derive(Debug)]
pub struct TopicInputs<'a> {
    pub claim_name: &'a str,
    pub epoch_config_ref: &'a str,
    pub output_schema_id: &'a str,
    pub holdout_ref: &'a str,
    pub holdout_handle: &'a Hash,
    pub oracle_num_symbols: u32,
    pub epoch_size: u64,
}

pub fn topic_id(inputs: &TopicInputs<'_>) -> Hash {
    let manifest = TopicManifest {
        claim_name: inputs.claim_name,
        epoch_config_ref: inputs.epoch_config_ref,
        output_schema_id: inputs.output_schema_id,
        holdout_ref: inputs.holdout_ref,
        holdout_handle_hex: hex::encode(inputs.holdout_handle),
        oracle_num_symbols: inputs.oracle_num_symbols,
        epoch_size: inputs.epoch_size,
    };
    sha256(&crate::canonical::to_vec(&manifest).expect("plain JSON"))
}

/// Client topic hints are bound into the claim id, never trusted for budgeting.
pub fn signals_hash(semantic_hash: &[u8], phys_hir_signature_hash: &[u8], dependency_merkle_root: &[u8]) -> Hash {
    let len = |b: &[u8]| (b.len() as u64).to_be_bytes();
    domain_hash(
        "evidenceos:claim_signals:v2",
        &[
            &len(semantic_hash),
            semantic_hash,
            &len(phys_hir_signature_hash),
            phys_hir_signature_hash,
            &len(dependency_merkle_root),
            dependency_merkle_root,
        ],
    )
}

/// An artifact a claim commits to: `kind` and the SHA-256 it names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ArtifactRecord {
    pub kind: String,
    pub hash_hex: String,
}

/// Artifacts of this kind name a capsule the claim depends on (revoking it taints the claim).
pub const DEPENDENCY_ARTIFACT_KIND: &str = "capsule";
pub const WASM_ARTIFACT_KIND: &str = "wasm";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_aliases_follow_the_spec() {
        assert_eq!(Lane::parse("highassurance").unwrap(), Lane::Fast);
        assert_eq!(Lane::parse("low_assurance").unwrap(), Lane::Heavy);
        assert!(Lane::parse("medium").is_err());
    }

    #[test]
    fn claim_id_binds_every_input() {
        let base = claim_id(&[1; 32], &[2; 32], &[3; 32], 10, 4);
        assert_ne!(base, claim_id(&[1; 32], &[2; 32], &[3; 32], 11, 4));
        assert_ne!(base, claim_id(&[1; 32], &[2; 32], &[3; 32], 10, 5));
        assert_ne!(base, claim_id(&[1; 32], &[9; 32], &[3; 32], 10, 4));
    }

    #[test]
    fn topic_ignores_who_asks_but_not_what() {
        let handle = [7; 32];
        let inputs = |name| TopicInputs {
            claim_name: name,
            epoch_config_ref: "e",
            output_schema_id: "legacy/v1",
            holdout_ref: "h",
            holdout_handle: &handle,
            oracle_num_symbols: 4,
            epoch_size: 1,
        };
        assert_eq!(topic_id(&inputs("a")), topic_id(&inputs("a")));
        assert_ne!(topic_id(&inputs("a")), topic_id(&inputs("b")));
    }

    #[test]
    fn wire_numbers_match_the_proto() {
        assert_eq!(ClaimState::Frozen.wire(), 10);
        assert_eq!(ClaimState::Certified.wire(), 6);
        assert_eq!(Decision::Defer.wire(), 3);
    }
}
