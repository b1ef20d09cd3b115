//! Claim capsules (SPEC §5.9): the canonical JSON record of one execution, appended to the ETL.
//! Its bytes are a compatibility surface: every field change changes every later hash, so the
//! exact bytes are pinned by snapshot tests.

use serde::{Deserialize, Serialize};

use crate::hash::{Hash, sha256};

pub const CAPSULE_SCHEMA: &str = "evidenceos.v2.claim_capsule";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CodeManifest {
    pub kind: String,
    pub hash_hex: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerSnapshot {
    pub alpha: f64,
    pub alpha_prime: f64,
    pub k_bits_total: f64,
    pub barrier: f64,
    pub wealth: f64,
    pub w_max: f64,
    pub access_credit_spent: f64,
}

impl LedgerSnapshot {
    /// Capsules carry only finite numbers: a non-finite value (already a numeric-guard DEFER)
    /// is recorded as 0 rather than emitted as invalid JSON.
    fn finite(mut self) -> Self {
        for value in [
            &mut self.alpha,
            &mut self.alpha_prime,
            &mut self.k_bits_total,
            &mut self.barrier,
            &mut self.wealth,
            &mut self.w_max,
            &mut self.access_credit_spent,
        ] {
            if !value.is_finite() {
                *value = 0.0;
            }
        }
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capsule {
    pub schema: String,
    pub claim_id_hex: String,
    pub topic_id_hex: String,
    pub output_schema_id: String,
    pub code_ir_manifests: Vec<CodeManifest>,
    pub dependency_capsule_hashes: Vec<String>,
    pub canonical_output_hash_hex: String,
    pub wasm_hash_hex: String,
    pub holdout_ref: String,
    pub holdout_commitment_hex: String,
    pub ledger: LedgerSnapshot,
    pub e_value: f64,
    pub certified: bool,
    pub decision: String,
    pub reason_codes: Vec<u32>,
    pub nullspec_id_hex: String,
    pub oracle_resolution_hash_hex: String,
    pub eprocess_kind: String,
    pub epoch: u64,
    pub state: String,
}

impl Capsule {
    /// Canonical bytes (the ETL payload). Lists are sorted here so callers cannot forget.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut capsule = self.clone();
        capsule.code_ir_manifests.sort();
        capsule.dependency_capsule_hashes.sort();
        capsule.ledger = capsule.ledger.finite();
        if !capsule.e_value.is_finite() {
            capsule.e_value = 0.0;
        }
        crate::canonical::to_vec(&capsule).expect("capsules are plain JSON")
    }
}

pub fn capsule_hash(bytes: &[u8]) -> Hash {
    sha256(bytes)
}

/// ETL leaf recording a revocation (SPEC §3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationLeaf {
    pub capsule_hash_hex: String,
    pub reason: String,
    pub revoked_at_index: u64,
}

impl RevocationLeaf {
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::canonical::to_vec(self).expect("plain JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn example() -> Capsule {
        Capsule {
            schema: CAPSULE_SCHEMA.into(),
            claim_id_hex: "11".repeat(32),
            topic_id_hex: "22".repeat(32),
            output_schema_id: "legacy/v1".into(),
            code_ir_manifests: vec![
                CodeManifest { kind: "wasm".into(), hash_hex: "bb".repeat(32) },
                CodeManifest { kind: "source".into(), hash_hex: "aa".repeat(32) },
            ],
            dependency_capsule_hashes: vec!["ff".repeat(32), "00".repeat(32)],
            canonical_output_hash_hex: "33".repeat(32),
            wasm_hash_hex: "bb".repeat(32),
            holdout_ref: "demo".into(),
            holdout_commitment_hex: "44".repeat(32),
            ledger: LedgerSnapshot {
                alpha: 0.05,
                alpha_prime: 0.0125,
                k_bits_total: 2.0,
                barrier: 80.0,
                wealth: 100.5,
                w_max: 100.5,
                access_credit_spent: 2.0,
            },
            e_value: 100.5,
            certified: true,
            decision: "APPROVE".into(),
            reason_codes: vec![1],
            nullspec_id_hex: "55".repeat(32),
            oracle_resolution_hash_hex: "66".repeat(32),
            eprocess_kind: "LikelihoodRatioFixedAlt".into(),
            epoch: 0,
            state: "CERTIFIED".into(),
        }
    }

    #[test]
    fn capsule_bytes_are_canonical_and_sorted() {
        let bytes = example().to_bytes();
        insta::assert_snapshot!(String::from_utf8(bytes.clone()).unwrap());
        let mut shuffled = example();
        shuffled.code_ir_manifests.reverse();
        shuffled.dependency_capsule_hashes.reverse();
        assert_eq!(shuffled.to_bytes(), bytes);
    }

    #[test]
    fn non_finite_numbers_never_reach_the_log() {
        let mut capsule = example();
        capsule.e_value = f64::INFINITY;
        capsule.ledger.w_max = f64::NAN;
        let text = String::from_utf8(capsule.to_bytes()).unwrap();
        assert!(text.contains(r#""e_value":0.0"#) && text.contains(r#""w_max":0.0"#), "{text}");
    }

    /// Every field at the most its request limits allow (128 artifacts of 128-character kinds, each
    /// a dependency, 64 reason codes, 128-character names, longest numbers): still publishable.
    #[test]
    fn the_largest_capsule_the_limits_allow_fits_an_entry_bundle() {
        let name = "n".repeat(128);
        let mut capsule = example();
        capsule.code_ir_manifests = (0..crate::validate::MAX_ARTIFACTS)
            .map(|i| CodeManifest { kind: format!("{i:0>128}"), hash_hex: "ab".repeat(32) })
            .collect();
        capsule.dependency_capsule_hashes = vec!["cd".repeat(32); crate::validate::MAX_ARTIFACTS];
        capsule.reason_codes = vec![u32::MAX; 64];
        (capsule.holdout_ref, capsule.output_schema_id) = (name.clone(), "EVIDENCEOS_SC_V0".into());
        let longest = -1.2345678901234567e-300;
        capsule.e_value = longest;
        capsule.ledger = LedgerSnapshot {
            alpha: longest,
            alpha_prime: longest,
            k_bits_total: longest,
            barrier: longest,
            wealth: longest,
            w_max: longest,
            access_credit_spent: longest,
        };
        (capsule.epoch, capsule.eprocess_kind, capsule.state) = (u64::MAX, name.clone(), name);
        let len = capsule.to_bytes().len();
        assert!(len <= crate::etl::MAX_LEAF_BYTES, "{len} bytes");
        let reason = "\"".repeat(256);
        let revocation = RevocationLeaf { capsule_hash_hex: "ab".repeat(32), reason, revoked_at_index: u64::MAX };
        assert!(revocation.to_bytes().len() <= crate::etl::MAX_LEAF_BYTES);
    }

    #[test]
    fn revocation_leaf_shape() {
        let leaf = RevocationLeaf { capsule_hash_hex: "ab".into(), reason: "withdrawn".into(), revoked_at_index: 3 };
        assert_eq!(
            String::from_utf8(leaf.to_bytes()).unwrap(),
            r#"{"capsule_hash_hex":"ab","reason":"withdrawn","revoked_at_index":3}"#
        );
    }
}
