//! Operator-provided material the kernel judges with: holdouts, NullSpec contracts and their
//! activation, and kernel settings. The runtime reads the files; validation happens here.

use std::collections::BTreeMap;

use crate::evalue::{EProcess, NullKind};
use crate::holdout::{Holdout, HoldoutFiles};
use crate::nullspec::NullSpecContract;

/// Kernel settings that are not per-request.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Production refuses development fallbacks (e.g. the development NullSpec).
    pub production: bool,
    /// Allows the legacy ExecuteClaim with a client-supplied decision (never in production).
    pub insecure_v1: bool,
    /// Dependence tax τ (SPEC §5.3, ≥ 2).
    pub dependence_tax: f64,
    /// Canary barrier = 1 / (micros / 1e6).
    pub canary_alpha_drift_micros: u32,
    /// Oracle TTL in epochs when no operator record sets one.
    pub default_oracle_ttl_epochs: u64,
    pub reservation_ttl_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            production: false,
            insecure_v1: false,
            dependence_tax: crate::ledger::DEFAULT_DEPENDENCE_TAX,
            canary_alpha_drift_micros: 1000,
            default_oracle_ttl_epochs: 1,
            reservation_ttl_ms: crate::pool::DEFAULT_RESERVATION_TTL_MS,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Environment {
    pub settings: Settings,
    pub holdouts: BTreeMap<String, Holdout>,
    /// Verified contracts by id hex.
    pub nullspecs: BTreeMap<String, NullSpecContract>,
    /// (oracle_id, holdout_ref) → active NullSpec id hex.
    pub active_nullspecs: BTreeMap<(String, String), String>,
    /// The kernel epoch (advanced by signed epoch-control records).
    pub epoch: u64,
}

/// The null hypothesis a claim is judged under.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedNullSpec {
    pub id_hex: String,
    pub kind: NullKind,
    pub eprocess: EProcess,
    /// True for the documented development fallback.
    pub development: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentError(pub String);

impl std::fmt::Display for EnvironmentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EnvironmentError {}

impl Environment {
    /// Validates holdout files; a bad one is an error naming it, never a panic.
    pub fn with_holdouts(mut self, files: &[HoldoutFiles]) -> Result<Self, EnvironmentError> {
        if files.len() > crate::holdout::MAX_HOLDOUTS {
            return Err(EnvironmentError(format!("more than {} holdouts", crate::holdout::MAX_HOLDOUTS)));
        }
        for file in files {
            let holdout = file.validate().map_err(|e| EnvironmentError(e.to_string()))?;
            self.holdouts.insert(holdout.holdout_ref.clone(), holdout);
        }
        Ok(self)
    }

    pub fn holdout_by_handle(&self, handle: &[u8; 32]) -> Option<&Holdout> {
        self.holdouts.values().find(|h| &h.handle == handle)
    }

    /// The active, valid NullSpec for (oracle, holdout), or the development fallback outside
    /// production. `None` means the claim cannot be judged (FAILED_PRECONDITION).
    pub fn nullspec_for(&self, oracle_id: &str, holdout: &Holdout, num_symbols: u32) -> Option<ResolvedNullSpec> {
        let key = (oracle_id.to_string(), holdout.holdout_ref.clone());
        if let Some(contract) = self.active_nullspecs.get(&key).and_then(|id| self.nullspecs.get(id))
            && !contract.is_expired(self.epoch)
        {
            return Some(ResolvedNullSpec {
                id_hex: hex::encode(contract.nullspec_id),
                kind: contract.kind.clone(),
                eprocess: contract.eprocess.clone(),
                development: false,
            });
        }
        (!self.settings.production).then(|| development_nullspec(holdout.labels.len(), num_symbols))
    }
}

/// The development NullSpec (documented in README): the claim's code is assumed to guess each
/// label by a fair coin. p0 is the distribution of the quantized accuracy of such guessing over
/// `len` labels; the alternative puts all mass on the top bucket, so only code that really
/// finds the labels gathers evidence.
pub fn development_nullspec(len: usize, num_symbols: u32) -> ResolvedNullSpec {
    let buckets = num_symbols as usize;
    let mut p0 = vec![0.0f64; buckets];
    // log C(len, i) built incrementally; P(i correct) = C(len, i) / 2^len.
    let mut log_choose = 0.0f64;
    let log_half_power = len as f64 * std::f64::consts::LN_2;
    for correct in 0..=len {
        let accuracy = correct as f64 / len as f64;
        let bucket = crate::oracle::quantize(accuracy, num_symbols) as usize;
        p0[bucket] += (log_choose - log_half_power).exp();
        if correct < len {
            log_choose += ((len - correct) as f64).ln() - ((correct + 1) as f64).ln();
        }
    }
    // Buckets no accuracy maps to, or whose mass underflows, get a floor so p0 stays a valid
    // distribution with no zero entries.
    for p in &mut p0 {
        *p = p.max(1e-300);
    }
    let total: f64 = p0.iter().sum();
    for p in &mut p0 {
        *p /= total;
    }
    let mut alt = vec![0.0; buckets];
    alt[buckets - 1] = 1.0;
    let kind = NullKind::DiscreteBuckets { p0 };
    let eprocess = EProcess::LikelihoodRatioFixedAlt { alt };
    let descriptor = serde_json::json!({
        "schema": "evidenceos.nullspec.development.v1",
        "kind": serde_json::to_value(&kind).expect("plain JSON"),
        "eprocess": serde_json::to_value(&eprocess).expect("plain JSON"),
    });
    let id = crate::hash::sha256(&crate::canonical::value_to_vec(&descriptor).expect("plain JSON"));
    ResolvedNullSpec { id_hex: hex::encode(id), kind, eprocess, development: true }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn development_nullspec_is_a_distribution_with_a_tiny_top_bucket() {
        let spec = development_nullspec(64, 16);
        let NullKind::DiscreteBuckets { p0 } = &spec.kind else { panic!("discrete") };
        assert_eq!(p0.len(), 16);
        assert!((p0.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(p0.iter().all(|p| *p > 0.0));
        assert!(p0[15] < 1e-12, "perfect guessing of 64 coin flips is rare: {}", p0[15]);
        assert_eq!(spec.id_hex, development_nullspec(64, 16).id_hex);
        assert_ne!(spec.id_hex, development_nullspec(64, 8).id_hex);
    }
}
