//! Operator-provided material the kernel judges with: holdouts, NullSpec contracts and their
//! activation, and kernel settings. The runtime reads the files; validation happens here.

use std::collections::BTreeMap;

use crate::evalue::{EProcess, NullKind};
use crate::holdout::{Holdout, HoldoutFiles};
use crate::nullspec::NullSpecContract;

/// Kernel settings that are not per-request.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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

/// Everything here is journaled (in journal headers and reloads), so a command always replays
/// under the environment it was accepted with.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Environment {
    pub settings: Settings,
    pub holdouts: BTreeMap<String, Holdout>,
    /// Verified contracts by id hex.
    pub nullspecs: BTreeMap<String, NullSpecContract>,
    /// (oracle_id, holdout_ref) → active NullSpec id hex.
    #[serde(with = "pair_keyed")]
    pub active_nullspecs: BTreeMap<(String, String), String>,
    /// The kernel epoch (advanced by signed epoch-control records).
    pub epoch: u64,
    /// Verified oracle operator records by oracle id.
    #[serde(default)]
    pub oracles: BTreeMap<String, crate::operator::OracleRecord>,
    /// Latest verified `canary_reset` governance event id per canary key; applied to canary
    /// state when this environment is loaded (a journaled reload).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub canary_resets: BTreeMap<String, String>,
}

/// JSON maps need string keys: the active map travels as a list of triples.
mod pair_keyed {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Entry {
        oracle_id: String,
        holdout_ref: String,
        nullspec_id_hex: String,
    }

    pub(super) fn serialize<S: Serializer>(map: &BTreeMap<(String, String), String>, s: S) -> Result<S::Ok, S::Error> {
        let entries: Vec<Entry> = map
            .iter()
            .map(|((oracle_id, holdout_ref), id)| Entry {
                oracle_id: oracle_id.clone(),
                holdout_ref: holdout_ref.clone(),
                nullspec_id_hex: id.clone(),
            })
            .collect();
        entries.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<(String, String), String>, D::Error> {
        let entries = Vec::<Entry>::deserialize(d)?;
        Ok(entries.into_iter().map(|e| ((e.oracle_id, e.holdout_ref), e.nullspec_id_hex)).collect())
    }
}

/// Counts an operator sees in `config_reload` logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvironmentCounts {
    pub holdouts: usize,
    pub nullspecs: usize,
    pub active_nullspecs: usize,
    pub oracles: usize,
    pub epoch: u64,
    /// Canaries with a signed reset in the governance log.
    pub canary_resets: usize,
}

impl Environment {
    pub fn counts(&self) -> EnvironmentCounts {
        EnvironmentCounts {
            holdouts: self.holdouts.len(),
            nullspecs: self.nullspecs.len(),
            active_nullspecs: self.active_nullspecs.len(),
            oracles: self.oracles.len(),
            epoch: self.epoch,
            canary_resets: self.canary_resets.len(),
        }
    }
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

/// Operator files, as bytes (SPEC §5.4, §6).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorFiles {
    /// `oracle_operator_config.json`: signed per-oracle TTL and calibration.
    pub oracle_config: Option<Vec<u8>>,
    /// `epoch_control.json`: the signed, operator-forced kernel epoch.
    pub epoch_control: Option<Vec<u8>>,
    /// `trusted_oracle_keys.json`: {"keys": {key id: hex public key}}.
    pub trusted_keys: Option<Vec<u8>>,
    /// `nullspec/<hex id>.json` files: (file name, bytes).
    pub contracts: Vec<(String, Vec<u8>)>,
    /// `nullspec/active_map.json`: {"mappings": [{oracle_id, holdout_handle, nullspec_id_hex}]}.
    pub active_map: Option<Vec<u8>>,
    /// `etl_governance_events.log`: signed governance events, one per line.
    pub governance_log: Option<Vec<u8>>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustedKeysFile {
    keys: BTreeMap<String, String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ActiveMapFile {
    mappings: Vec<ActiveMapping>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ActiveMapping {
    oracle_id: String,
    /// Names the holdout by its ref (the directory name under `holdouts/`).
    holdout_handle: String,
    nullspec_id_hex: String,
}

/// Parses `trusted_oracle_keys.json`.
pub fn parse_trusted_keys(bytes: &[u8]) -> Result<BTreeMap<String, [u8; 32]>, EnvironmentError> {
    let file: TrustedKeysFile =
        serde_json::from_slice(bytes).map_err(|e| EnvironmentError(format!("trusted_oracle_keys.json: {e}")))?;
    let mut keys = BTreeMap::new();
    for (kid, hex_key) in file.keys {
        let key = crate::hash::parse_hash_hex(&hex_key)
            .ok_or_else(|| EnvironmentError(format!("trusted_oracle_keys.json: key {kid} is not 64 hex characters")))?;
        keys.insert(kid, key);
    }
    Ok(keys)
}

impl Environment {
    /// Loads, verifies and activates NullSpec contracts. A contract that fails verification, a
    /// file named after another id, or a mapping to an unknown contract is an error naming it.
    pub fn with_operator_files(mut self, files: &OperatorFiles) -> Result<Self, EnvironmentError> {
        let trusted = match &files.trusted_keys {
            Some(bytes) => parse_trusted_keys(bytes)?,
            None => BTreeMap::new(),
        };
        if let Some(bytes) = &files.oracle_config {
            self.oracles = crate::operator::parse_oracle_config(bytes, &trusted).map_err(EnvironmentError)?;
        }
        if let Some(bytes) = &files.epoch_control {
            self.epoch = crate::operator::parse_epoch_control(bytes, &trusted).map_err(EnvironmentError)?.forced_epoch;
        }
        for (name, bytes) in &files.contracts {
            let fail = |reason: String| EnvironmentError(format!("nullspec/{name}: {reason}"));
            let contract = NullSpecContract::from_json(bytes).map_err(|e| fail(e.to_string()))?;
            contract.verify(&trusted).map_err(|e| fail(e.to_string()))?;
            let id_hex = hex::encode(contract.nullspec_id);
            if *name != format!("{id_hex}.json") {
                return Err(fail(format!("file name does not match the contract id {id_hex}")));
            }
            self.nullspecs.insert(id_hex, contract);
        }
        if let Some(bytes) = &files.governance_log {
            // Every event must verify, not only the resets applied here: a log an auditor would
            // reject is not a log the daemon acts on.
            let log = crate::governance::GovernanceLog::parse(bytes).map_err(|e| EnvironmentError(e.to_string()))?;
            log.verify(&trusted).map_err(|e| EnvironmentError(e.to_string()))?;
            self.canary_resets = log.canary_resets();
        }
        if let Some(bytes) = &files.active_map {
            let map: ActiveMapFile = serde_json::from_slice(bytes)
                .map_err(|e| EnvironmentError(format!("nullspec/active_map.json: {e}")))?;
            for mapping in map.mappings {
                let id = mapping.nullspec_id_hex.to_ascii_lowercase();
                let Some(contract) = self.nullspecs.get(&id) else {
                    return Err(EnvironmentError(format!(
                        "nullspec/active_map.json: {} is not an installed, verified contract",
                        mapping.nullspec_id_hex
                    )));
                };
                // The signed contract names what it may judge; an edited map cannot retarget it.
                if contract.oracle_id != mapping.oracle_id || contract.holdout_handle != mapping.holdout_handle {
                    return Err(EnvironmentError(format!(
                        "nullspec/active_map.json: the entry for oracle {:?} and holdout {:?} selects NullSpec {id}, which was signed for oracle {:?} and holdout {:?}",
                        mapping.oracle_id, mapping.holdout_handle, contract.oracle_id, contract.holdout_handle
                    )));
                }
                self.active_nullspecs.insert((mapping.oracle_id, mapping.holdout_handle), id);
            }
        }
        Ok(self)
    }

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

    /// The NullSpec a claim is judged under. An operator-activated contract must be unexpired
    /// and match the claim's pinned oracle resolution; with none active, development mode uses
    /// the development NullSpec and production refuses.
    pub fn nullspec_for(
        &self,
        oracle_id: &str,
        holdout: &Holdout,
        num_symbols: u32,
        resolution_hash: &crate::hash::Hash,
    ) -> Result<ResolvedNullSpec, String> {
        let key = (oracle_id.to_string(), holdout.holdout_ref.clone());
        if let Some(contract) = self.active_nullspecs.get(&key).and_then(|id| self.nullspecs.get(id)) {
            if contract.is_expired(self.epoch) {
                return Err("the active NullSpec has expired".into());
            }
            if &contract.oracle_resolution_hash != resolution_hash {
                return Err("the active NullSpec was made for another oracle resolution".into());
            }
            return Ok(ResolvedNullSpec {
                id_hex: hex::encode(contract.nullspec_id),
                kind: contract.kind.clone(),
                eprocess: contract.eprocess.clone(),
                development: false,
            });
        }
        if self.settings.production {
            return Err("no active NullSpec for this oracle and holdout (production mode)".into());
        }
        Ok(development_nullspec(holdout.labels.len(), num_symbols))
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
    use crate::keys::{key_id_for_seed, public_key_for_seed};

    const OPERATOR_SEED: [u8; 32] = [4; 32];

    fn holdout() -> Holdout {
        crate::holdout::holdout_files("demo", [1; 32], &[0, 1, 0, 1], 0).validate().unwrap()
    }

    fn signed_contract(resolution: crate::hash::Hash, epoch_created: u64) -> NullSpecContract {
        let (kind, eprocess) = crate::nullspec::from_calibration_buckets(&[3, 1, 0, 0], 0.5);
        let unsigned = NullSpecContract {
            schema: crate::nullspec::SCHEMA.to_string(),
            nullspec_id: [0; 32],
            oracle_id: "accuracy".into(),
            oracle_resolution_hash: resolution,
            holdout_handle: "demo".into(),
            epoch_created,
            ttl_epochs: 2,
            kind,
            eprocess,
            calibration_manifest_hash: None,
            created_by: key_id_for_seed(&OPERATOR_SEED).to_hex(),
            signature_ed25519: Vec::new(),
        };
        NullSpecContract::sign(unsigned, &OPERATOR_SEED)
    }

    fn files(contract: &NullSpecContract, trusted: bool) -> OperatorFiles {
        let kid = key_id_for_seed(&OPERATOR_SEED).to_hex();
        let keys = if trusted {
            format!(r#"{{"keys":{{"{kid}":"{}"}}}}"#, hex::encode(public_key_for_seed(&OPERATOR_SEED)))
        } else {
            r#"{"keys":{}}"#.to_string()
        };
        let id = hex::encode(contract.nullspec_id);
        OperatorFiles {
            oracle_config: None,
            epoch_control: None,
            trusted_keys: Some(keys.into_bytes()),
            contracts: vec![(format!("{id}.json"), contract.to_json())],
            governance_log: None,
            active_map: Some(
                format!(
                    r#"{{"mappings":[{{"oracle_id":"accuracy","holdout_handle":"demo","nullspec_id_hex":"{id}"}}]}}"#
                )
                .into_bytes(),
            ),
        }
    }

    #[test]
    fn an_active_signed_contract_is_used_only_while_it_matches_and_lives() {
        let resolution = [7; 32];
        let contract = signed_contract(resolution, 0);
        let mut env = Environment::default().with_operator_files(&files(&contract, true)).unwrap();
        let resolved = env.nullspec_for("accuracy", &holdout(), 4, &resolution).unwrap();
        assert_eq!(resolved.id_hex, hex::encode(contract.nullspec_id));
        assert!(!resolved.development);
        assert!(
            env.nullspec_for("accuracy", &holdout(), 4, &[8; 32]).unwrap_err().contains("another oracle resolution")
        );
        env.epoch = 3;
        assert!(env.nullspec_for("accuracy", &holdout(), 4, &resolution).unwrap_err().contains("expired"));
    }

    #[test]
    fn untrusted_or_misnamed_contracts_refuse_to_load() {
        let contract = signed_contract([7; 32], 0);
        let err = Environment::default().with_operator_files(&files(&contract, false)).unwrap_err();
        assert!(err.0.starts_with("nullspec/"), "{err}");
        let mut misnamed = files(&contract, true);
        misnamed.contracts[0].0 = "other.json".into();
        assert!(Environment::default().with_operator_files(&misnamed).unwrap_err().0.contains("does not match"));
    }

    #[test]
    fn an_active_map_entry_cannot_retarget_a_contract_to_another_oracle_or_holdout() {
        let contract = signed_contract([7; 32], 0);
        let id = hex::encode(contract.nullspec_id);
        for (oracle, holdout) in [("accuracy", "other-holdout"), ("other-oracle", "demo")] {
            let mut edited = files(&contract, true);
            edited.active_map = Some(
                format!(r#"{{"mappings":[{{"oracle_id":"{oracle}","holdout_handle":"{holdout}","nullspec_id_hex":"{id}"}}]}}"#)
                    .into_bytes(),
            );
            let err = Environment::default().with_operator_files(&edited).unwrap_err();
            assert_eq!(
                err.0,
                format!(
                    "nullspec/active_map.json: the entry for oracle {oracle:?} and holdout {holdout:?} selects NullSpec {id}, which was signed for oracle \"accuracy\" and holdout \"demo\""
                )
            );
        }
    }

    #[test]
    fn production_refuses_the_development_fallback() {
        let mut env = Environment::default();
        assert!(env.nullspec_for("accuracy", &holdout(), 4, &[0; 32]).unwrap().development);
        env.settings.production = true;
        assert!(env.nullspec_for("accuracy", &holdout(), 4, &[0; 32]).is_err());
    }

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
