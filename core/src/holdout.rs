//! Holdouts (SPEC §6): `holdouts/<ref>/manifest.json` plus `labels.bin`, read by the runtime
//! and validated here. Labels never leave the kernel; only oracle buckets do.

use serde::{Deserialize, Serialize};

use crate::hash::{Hash, parse_hash_hex, sha256};

pub const MAX_HOLDOUT_LABELS: usize = 4096;
pub const MAX_HOLDOUTS: usize = 1024;

/// Pool scope of a holdout's shared budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolScope {
    Global,
    PerPrincipal,
    Both,
}

impl PoolScope {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "global" => Some(Self::Global),
            "per_principal" => Some(Self::PerPrincipal),
            "both" => Some(Self::Both),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldoutManifest {
    pub schema_version: u32,
    pub created_at_unix: u64,
    pub holdout_handle_hex: String,
    pub labels_sha256_hex: String,
    pub len: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdout_k_bits_budget: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdout_access_credit_budget: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdout_pool_scope: Option<PoolScope>,
}

/// A validated holdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holdout {
    pub holdout_ref: String,
    pub handle: Hash,
    #[serde(with = "crate::hexbytes")]
    pub labels: Vec<u8>,
    pub k_bits_budget: Option<f64>,
    pub access_credit_budget: Option<f64>,
    pub pool_scope: PoolScope,
}

impl Holdout {
    /// SPEC §5.9: the capsule commits to the holdout by SHA-256 of its handle.
    pub fn commitment(&self) -> Hash {
        sha256(&self.handle)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldoutError {
    pub holdout_ref: String,
    pub reason: String,
}

impl std::fmt::Display for HoldoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "holdouts/{}: {}", self.holdout_ref, self.reason)
    }
}

impl std::error::Error for HoldoutError {}

/// The files of one holdout directory, as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldoutFiles {
    pub holdout_ref: String,
    pub manifest: Vec<u8>,
    pub labels: Vec<u8>,
}

fn finite_budget(value: Option<f64>, field: &str) -> Result<Option<f64>, String> {
    match value {
        Some(v) if !v.is_finite() || v < 0.0 => Err(format!("{field} must be finite and >= 0")),
        other => Ok(other),
    }
}

impl HoldoutFiles {
    pub fn validate(&self) -> Result<Holdout, HoldoutError> {
        let fail = |reason: String| HoldoutError { holdout_ref: self.holdout_ref.clone(), reason };
        crate::validate::validate_name("holdout_ref", &self.holdout_ref).map_err(|e| fail(e.message))?;
        let manifest: HoldoutManifest =
            serde_json::from_slice(&self.manifest).map_err(|e| fail(format!("manifest.json: {e}")))?;
        if manifest.schema_version != 1 {
            return Err(fail(format!("manifest.json: unsupported schema_version {}", manifest.schema_version)));
        }
        let handle = parse_hash_hex(&manifest.holdout_handle_hex)
            .ok_or_else(|| fail("manifest.json: holdout_handle_hex must be 64 hex characters".into()))?;
        let expected = parse_hash_hex(&manifest.labels_sha256_hex)
            .ok_or_else(|| fail("manifest.json: labels_sha256_hex must be 64 hex characters".into()))?;
        if !(1..=MAX_HOLDOUT_LABELS).contains(&manifest.len) {
            return Err(fail(format!("manifest.json: len must be 1..{MAX_HOLDOUT_LABELS}")));
        }
        if self.labels.len() != manifest.len {
            return Err(fail(format!("labels.bin has {} bytes, manifest says {}", self.labels.len(), manifest.len)));
        }
        if sha256(&self.labels) != expected {
            return Err(fail("labels.bin does not match labels_sha256_hex".into()));
        }
        if let Some(position) = self.labels.iter().position(|&b| b > 1) {
            return Err(fail(format!("labels.bin byte {position} is not 0 or 1")));
        }
        Ok(Holdout {
            holdout_ref: self.holdout_ref.clone(),
            handle,
            labels: self.labels.clone(),
            k_bits_budget: finite_budget(manifest.holdout_k_bits_budget, "holdout_k_bits_budget").map_err(fail)?,
            access_credit_budget: finite_budget(manifest.holdout_access_credit_budget, "holdout_access_credit_budget")
                .map_err(fail)?,
            pool_scope: manifest.holdout_pool_scope.unwrap_or(PoolScope::Global),
        })
    }
}

/// Builds the files of a holdout (for tests, examples and operator tooling).
pub fn holdout_files(holdout_ref: &str, handle: Hash, labels: &[u8], created_at_unix: u64) -> HoldoutFiles {
    let manifest = HoldoutManifest {
        schema_version: 1,
        created_at_unix,
        holdout_handle_hex: hex::encode(handle),
        labels_sha256_hex: hex::encode(sha256(labels)),
        len: labels.len(),
        holdout_k_bits_budget: None,
        holdout_access_credit_budget: None,
        holdout_pool_scope: None,
    };
    HoldoutFiles {
        holdout_ref: holdout_ref.to_string(),
        manifest: crate::canonical::to_vec(&manifest).expect("plain JSON"),
        labels: labels.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> HoldoutFiles {
        holdout_files("demo-holdout", [3; 32], &[0, 1, 1, 0], 1_700_000_000)
    }

    #[test]
    fn a_consistent_holdout_validates() {
        let holdout = good().validate().unwrap();
        assert_eq!(holdout.labels, vec![0, 1, 1, 0]);
        assert_eq!(holdout.pool_scope, PoolScope::Global);
        assert_eq!(holdout.commitment(), sha256(&[3; 32]));
    }

    #[test]
    fn every_inconsistency_is_named() {
        let mut files = good();
        files.labels[0] = 1;
        assert!(files.validate().unwrap_err().to_string().contains("does not match labels_sha256_hex"));
        let mut files = good();
        files.labels.pop();
        assert!(files.validate().unwrap_err().reason.contains("labels.bin has 3 bytes"));
        let mut files = good();
        files.manifest = br#"{"schema_version":1}"#.to_vec();
        assert!(files.validate().unwrap_err().reason.starts_with("manifest.json"));
        let mut files = good();
        let mut manifest: serde_json::Value = serde_json::from_slice(&files.manifest).unwrap();
        manifest["surprise"] = serde_json::json!(1);
        files.manifest = serde_json::to_vec(&manifest).unwrap();
        assert!(files.validate().unwrap_err().reason.contains("unknown field"));
        let files = holdout_files("demo", [3; 32], &[0, 2], 0);
        assert!(files.validate().unwrap_err().reason.contains("byte 1 is not 0 or 1"));
        let files = holdout_files("bad ref", [3; 32], &[0], 0);
        assert!(files.validate().is_err());
    }

    #[test]
    fn budgets_must_be_finite_and_non_negative() {
        let mut files = good();
        let mut manifest: serde_json::Value = serde_json::from_slice(&files.manifest).unwrap();
        manifest["holdout_k_bits_budget"] = serde_json::json!(-1.0);
        files.manifest = serde_json::to_vec(&manifest).unwrap();
        assert!(files.validate().unwrap_err().reason.contains("holdout_k_bits_budget"));
    }
}
