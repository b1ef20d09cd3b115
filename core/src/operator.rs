//! Signed operator records (SPEC §6): the oracle operator config (TTL, calibration) and the
//! epoch control record. Parsed and verified here against `trusted_oracle_keys.json`; the same
//! code signs them for operator tooling.

use std::collections::BTreeMap;

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::hash::{Hash, domain_hash};
use crate::keys::verify_signature;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisjointnessAttestation {
    pub statement_type: String,
    pub scope: String,
    pub proof_sha256_hex: String,
}

/// One oracle's entry in `oracle_operator_config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OracleRecord {
    pub schema_version: u32,
    pub ttl_epochs: u64,
    pub calibration_manifest_hash_hex: Option<String>,
    pub calibration_epoch: Option<u64>,
    pub disjointness_attestation: Option<DisjointnessAttestation>,
    pub nonoverlap_proof_uri: Option<String>,
    pub updated_at_epoch: u64,
    pub key_id: String,
    pub signature_ed25519: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OracleConfigFile {
    pub oracles: BTreeMap<String, OracleRecord>,
}

impl OracleRecord {
    /// H("evidenceos:oracle_operator_record:v1", canonical {...}) with nulls kept and a null
    /// calibration hash written as "".
    pub fn signing_digest(&self, oracle_id: &str) -> Hash {
        let body = json!({
            "oracle_id": oracle_id,
            "schema_version": self.schema_version,
            "ttl_epochs": self.ttl_epochs,
            "calibration_manifest_hash_hex": self.calibration_manifest_hash_hex.clone().unwrap_or_default(),
            "calibration_epoch": self.calibration_epoch,
            "disjointness_attestation": self.disjointness_attestation,
            "nonoverlap_proof_uri": self.nonoverlap_proof_uri,
            "updated_at_epoch": self.updated_at_epoch,
            "key_id": self.key_id,
        });
        domain_hash(
            "evidenceos:oracle_operator_record:v1",
            &[&crate::canonical::value_to_vec(&body).expect("plain JSON")],
        )
    }

    pub fn sign(mut self, oracle_id: &str, seed: &[u8; 32]) -> Self {
        let digest = self.signing_digest(oracle_id);
        self.signature_ed25519 = hex::encode(SigningKey::from_bytes(seed).sign(&digest).to_bytes());
        self
    }

    /// The calibration hash as bytes, if one is set.
    pub fn calibration_hash(&self) -> Option<Hash> {
        self.calibration_manifest_hash_hex.as_deref().and_then(crate::hash::parse_hash_hex)
    }

    fn verify(&self, oracle_id: &str, trusted: &BTreeMap<String, [u8; 32]>) -> Result<(), String> {
        if self.schema_version != 1 {
            return Err(format!("unsupported schema_version {}", self.schema_version));
        }
        if self.ttl_epochs == 0 {
            return Err("ttl_epochs must be positive".into());
        }
        if self.calibration_manifest_hash_hex.as_ref().is_some_and(|h| crate::hash::parse_hash_hex(h).is_none()) {
            return Err("calibration_manifest_hash_hex must be 64 hex characters".into());
        }
        let key = trusted.get(&self.key_id).ok_or_else(|| format!("key {} is not trusted", self.key_id))?;
        let signature = hex::decode(&self.signature_ed25519).map_err(|_| "signature is not hex".to_string())?;
        if !verify_signature(key, &self.signing_digest(oracle_id), &signature) {
            return Err("bad signature".into());
        }
        Ok(())
    }
}

/// Parses and verifies every record of `oracle_operator_config.json`.
pub fn parse_oracle_config(
    bytes: &[u8],
    trusted: &BTreeMap<String, [u8; 32]>,
) -> Result<BTreeMap<String, OracleRecord>, String> {
    let file: OracleConfigFile =
        serde_json::from_slice(bytes).map_err(|e| format!("oracle_operator_config.json: {e}"))?;
    for (oracle_id, record) in &file.oracles {
        crate::validate::validate_name("oracle_id", oracle_id)
            .map_err(|e| format!("oracle_operator_config.json: {}", e.message))?;
        record
            .verify(oracle_id, trusted)
            .map_err(|e| format!("oracle_operator_config.json: oracle {oracle_id}: {e}"))?;
    }
    Ok(file.oracles)
}

/// `epoch_control.json`: the operator-forced kernel epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochControl {
    pub forced_epoch: u64,
    pub updated_at_epoch: u64,
    pub key_id: String,
    pub signature_ed25519: String,
    pub event_id: String,
}

impl EpochControl {
    /// H("evidenceos:epoch_control:v1", canonical {forced_epoch, updated_at_epoch, key_id}).
    pub fn signing_digest(&self) -> Hash {
        let body: Value = json!({ "forced_epoch": self.forced_epoch, "updated_at_epoch": self.updated_at_epoch, "key_id": self.key_id });
        domain_hash("evidenceos:epoch_control:v1", &[&crate::canonical::value_to_vec(&body).expect("plain JSON")])
    }

    pub fn sign(mut self, seed: &[u8; 32]) -> Self {
        self.signature_ed25519 = hex::encode(SigningKey::from_bytes(seed).sign(&self.signing_digest()).to_bytes());
        self
    }
}

/// Parses and verifies `epoch_control.json`.
pub fn parse_epoch_control(bytes: &[u8], trusted: &BTreeMap<String, [u8; 32]>) -> Result<EpochControl, String> {
    let record: EpochControl = serde_json::from_slice(bytes).map_err(|e| format!("epoch_control.json: {e}"))?;
    let key = trusted
        .get(&record.key_id)
        .ok_or_else(|| format!("epoch_control.json: key {} is not trusted", record.key_id))?;
    let signature =
        hex::decode(&record.signature_ed25519).map_err(|_| "epoch_control.json: signature is not hex".to_string())?;
    if !verify_signature(key, &record.signing_digest(), &signature) {
        return Err("epoch_control.json: bad signature".into());
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{key_id_for_seed, public_key_for_seed};

    const SEED: [u8; 32] = [6; 32];

    fn trusted() -> BTreeMap<String, [u8; 32]> {
        [(key_id_for_seed(&SEED).to_hex(), public_key_for_seed(&SEED))].into()
    }

    fn record(ttl: u64) -> OracleRecord {
        OracleRecord {
            schema_version: 1,
            ttl_epochs: ttl,
            calibration_manifest_hash_hex: Some("ab".repeat(32)),
            calibration_epoch: Some(3),
            disjointness_attestation: None,
            nonoverlap_proof_uri: None,
            updated_at_epoch: 3,
            key_id: key_id_for_seed(&SEED).to_hex(),
            signature_ed25519: String::new(),
        }
        .sign("accuracy", &SEED)
    }

    #[test]
    fn signed_oracle_records_verify_and_tampering_is_caught() {
        let file = OracleConfigFile { oracles: [("accuracy".to_string(), record(4))].into() };
        let bytes = serde_json::to_vec(&file).unwrap();
        let parsed = parse_oracle_config(&bytes, &trusted()).unwrap();
        assert_eq!(parsed["accuracy"].ttl_epochs, 4);
        assert_eq!(parsed["accuracy"].calibration_hash(), Some([0xab; 32]));
        let mut tampered = file.clone();
        tampered.oracles.get_mut("accuracy").unwrap().ttl_epochs = 9;
        let err = parse_oracle_config(&serde_json::to_vec(&tampered).unwrap(), &trusted()).unwrap_err();
        assert!(err.contains("bad signature"), "{err}");
        assert!(parse_oracle_config(&bytes, &BTreeMap::new()).unwrap_err().contains("not trusted"));
        // A record signed for one oracle id does not verify under another.
        let moved = OracleConfigFile { oracles: [("other".to_string(), record(4))].into() };
        assert!(parse_oracle_config(&serde_json::to_vec(&moved).unwrap(), &trusted()).is_err());
    }

    #[test]
    fn epoch_control_records_verify() {
        let record = EpochControl {
            forced_epoch: 5,
            updated_at_epoch: 5,
            key_id: key_id_for_seed(&SEED).to_hex(),
            signature_ed25519: String::new(),
            event_id: "e1".into(),
        }
        .sign(&SEED);
        let bytes = serde_json::to_vec(&record).unwrap();
        assert_eq!(parse_epoch_control(&bytes, &trusted()).unwrap().forced_epoch, 5);
        let forged = EpochControl { forced_epoch: 6, ..record };
        assert!(parse_epoch_control(&serde_json::to_vec(&forged).unwrap(), &trusted()).is_err());
    }
}
