//! The governance event log (SPEC §6): `etl_governance_events.log`, one signed JSON event per
//! line, written by operator tooling for every change it makes and verified by the daemon before
//! it applies any of them.
//!
//! Each event is `{event_id, event_type, epoch, key_id, payload, signature_ed25519}`; the
//! signature is Ed25519 over `H("evidenceos:governance_event:v1", canonical {event_type, epoch,
//! key_id, payload})` and `event_id` = hex SHA-256(canonical body ‖ signature). Ours go further:
//! every payload names the id of the event before it (`prev_event_id`, `""` for the first), so
//! the log is a hash chain: no event can be removed, reordered or replayed without breaking it.

use std::collections::BTreeMap;

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::hash::{Hash, domain_hash, sha256};
use crate::keys::verify_signature;

/// The log's file name in the data directory.
pub const LOG_FILE: &str = "etl_governance_events.log";
const DOMAIN: &str = "evidenceos:governance_event:v1";
/// One event line, newline excluded. Payloads are small records; anything bigger is not ours.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;
/// Events in one log. Operator changes are rare; a log this long is damage, not history.
pub const MAX_EVENTS: usize = 1_000_000;
/// Free text an operator attaches to a reset.
pub const MAX_REASON_BYTES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    OracleTtlSet,
    OracleCalibrationRotated,
    EpochAdvanced,
    NullspecInstall,
    NullspecActivate,
    CanaryReset,
    KeyRotated,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OracleTtlSet => "oracle_ttl_set",
            Self::OracleCalibrationRotated => "oracle_calibration_rotated",
            Self::EpochAdvanced => "epoch_advanced",
            Self::NullspecInstall => "nullspec_install",
            Self::NullspecActivate => "nullspec_activate",
            Self::CanaryReset => "canary_reset",
            Self::KeyRotated => "key_rotated",
        }
    }
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GovernanceEvent {
    pub event_id: String,
    pub event_type: EventType,
    pub epoch: u64,
    pub key_id: String,
    pub payload: Value,
    pub signature_ed25519: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GovernanceError {
    /// Not an event of the documented shape.
    Malformed(String),
    /// The payload has no `prev_event_id` string.
    MissingPrevious,
    /// `event_id` is not the hash of the body and signature.
    IdMismatch,
    /// `key_id` is not in `trusted_oracle_keys.json`.
    UntrustedKey(String),
    /// The signature is not 64 hex bytes or does not verify.
    BadSignature,
    /// `prev_event_id` does not name the event before this one.
    BrokenChain { expected: String, found: String },
    /// A `canary_reset` payload that is not {claim_name, holdout_ref, reason, prev_event_id}.
    BadPayload(String),
}

impl std::fmt::Display for GovernanceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(reason) => write!(f, "malformed event: {reason}"),
            Self::MissingPrevious => f.write_str("payload has no prev_event_id"),
            Self::IdMismatch => f.write_str("event_id does not match the event's body and signature"),
            Self::UntrustedKey(kid) => write!(f, "key {kid} is not in trusted_oracle_keys.json"),
            Self::BadSignature => f.write_str("bad signature"),
            Self::BrokenChain { expected, found } => {
                let expected = if expected.is_empty() { "\"\" (first event)" } else { expected };
                write!(f, "prev_event_id is {found:?}, expected {expected}")
            }
            Self::BadPayload(reason) => write!(f, "bad payload: {reason}"),
        }
    }
}

impl std::error::Error for GovernanceError {}

impl GovernanceEvent {
    /// Signs a new event. `payload` must be a JSON object; its `prev_event_id` is set to
    /// `previous` (the id of the log's last event, `""` for the first).
    pub fn sign(
        event_type: EventType,
        epoch: u64,
        key_id: &str,
        mut payload: Value,
        previous: &str,
        seed: &[u8; 32],
    ) -> Self {
        let object = payload.as_object_mut().expect("governance payloads are JSON objects");
        object.insert("prev_event_id".into(), Value::String(previous.to_string()));
        let mut event = Self {
            event_id: String::new(),
            event_type,
            epoch,
            key_id: key_id.to_string(),
            payload,
            signature_ed25519: String::new(),
        };
        let signature = SigningKey::from_bytes(seed).sign(&event.signing_digest()).to_bytes();
        event.signature_ed25519 = hex::encode(signature);
        event.event_id = hex::encode(event.id_for(&signature));
        event
    }

    fn body(&self) -> Vec<u8> {
        let body = json!({
            "event_type": self.event_type,
            "epoch": self.epoch,
            "key_id": self.key_id,
            "payload": self.payload,
        });
        crate::canonical::value_to_vec(&body).expect("an event body is plain JSON")
    }

    /// `H("evidenceos:governance_event:v1", canonical body)`: what the key signs.
    pub fn signing_digest(&self) -> Hash {
        domain_hash(DOMAIN, &[&self.body()])
    }

    fn id_for(&self, signature: &[u8]) -> Hash {
        let mut bytes = self.body();
        bytes.extend_from_slice(signature);
        sha256(&bytes)
    }

    /// The id of the event this one follows (`""` for the first).
    pub fn prev_event_id(&self) -> Result<&str, GovernanceError> {
        self.payload.get("prev_event_id").and_then(Value::as_str).ok_or(GovernanceError::MissingPrevious)
    }

    /// Checks the id, then the signature under the trusted key `key_id` names.
    pub fn verify(&self, trusted: &BTreeMap<String, [u8; 32]>) -> Result<(), GovernanceError> {
        let signature = hex::decode(&self.signature_ed25519).map_err(|_| GovernanceError::BadSignature)?;
        if signature.len() != 64 {
            return Err(GovernanceError::BadSignature);
        }
        if hex::encode(self.id_for(&signature)) != self.event_id {
            return Err(GovernanceError::IdMismatch);
        }
        let key = trusted.get(&self.key_id).ok_or_else(|| GovernanceError::UntrustedKey(self.key_id.clone()))?;
        if !verify_signature(key, &self.signing_digest(), &signature) {
            return Err(GovernanceError::BadSignature);
        }
        Ok(())
    }

    /// Parses one event document (a log line or a file an operator hands over).
    pub fn from_json(bytes: &[u8]) -> Result<Self, GovernanceError> {
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(GovernanceError::Malformed(format!("longer than {MAX_EVENT_BYTES} bytes")));
        }
        let event: Self = serde_json::from_slice(bytes).map_err(|e| GovernanceError::Malformed(e.to_string()))?;
        if !event.payload.is_object() {
            return Err(GovernanceError::Malformed("payload is not a JSON object".into()));
        }
        event.prev_event_id()?;
        Ok(event)
    }

    /// Canonical JSON: the log line without its newline.
    pub fn to_json(&self) -> Vec<u8> {
        crate::canonical::to_vec(self).expect("an event is plain JSON")
    }

    /// The (claim_name, holdout_ref) a `canary_reset` event resets.
    pub fn canary_reset(&self) -> Result<CanaryResetPayload, GovernanceError> {
        if self.event_type != EventType::CanaryReset {
            return Err(GovernanceError::BadPayload(format!("{} is not a canary_reset", self.event_type.as_str())));
        }
        let payload: CanaryResetPayload =
            serde_json::from_value(self.payload.clone()).map_err(|e| GovernanceError::BadPayload(e.to_string()))?;
        crate::validate::validate_name("claim_name", &payload.claim_name)
            .and_then(|()| crate::validate::validate_name("holdout_ref", &payload.holdout_ref))
            .map_err(|e| GovernanceError::BadPayload(e.message))?;
        if payload.reason.len() > MAX_REASON_BYTES {
            return Err(GovernanceError::BadPayload(format!("reason is longer than {MAX_REASON_BYTES} bytes")));
        }
        Ok(payload)
    }
}

/// What a `canary_reset` event carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryResetPayload {
    pub claim_name: String,
    pub holdout_ref: String,
    pub reason: String,
    pub prev_event_id: String,
}

/// Where a log stops being valid: 1-based line number and byte offset of the line's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogError {
    pub line: usize,
    pub offset: usize,
    pub error: GovernanceError,
}

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} line {} (byte {}): {}", LOG_FILE, self.line, self.offset, self.error)
    }
}

impl std::error::Error for LogError {}

/// A parsed, chain-checked log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GovernanceLog {
    pub events: Vec<GovernanceEvent>,
    /// Bytes of complete lines; anything after is an unterminated final line.
    pub valid_len: usize,
    /// Length of an unterminated final line: a writer died mid-append (never acknowledged).
    pub torn_bytes: usize,
}

impl GovernanceLog {
    /// Parses every complete line and checks ids and the chain (not signatures: see
    /// [`GovernanceLog::verify`]). An unterminated last line is reported, not an error.
    pub fn parse(bytes: &[u8]) -> Result<Self, LogError> {
        let mut log = Self::default();
        let mut offset = 0;
        while offset < bytes.len() {
            let line_number = log.events.len() + 1;
            let fail = |error| LogError { line: line_number, offset, error };
            let Some(end) = bytes[offset..].iter().position(|&b| b == b'\n') else {
                log.torn_bytes = bytes.len() - offset;
                break;
            };
            if log.events.len() == MAX_EVENTS {
                return Err(fail(GovernanceError::Malformed(format!("more than {MAX_EVENTS} events"))));
            }
            let event = GovernanceEvent::from_json(&bytes[offset..offset + end]).map_err(fail)?;
            let signature = hex::decode(&event.signature_ed25519).map_err(|_| fail(GovernanceError::BadSignature))?;
            if hex::encode(event.id_for(&signature)) != event.event_id {
                return Err(fail(GovernanceError::IdMismatch));
            }
            let expected = log.head().to_string();
            let found = event.prev_event_id().map_err(fail)?;
            if found != expected {
                return Err(fail(GovernanceError::BrokenChain { expected, found: found.to_string() }));
            }
            log.events.push(event);
            offset += end + 1;
            log.valid_len = offset;
        }
        Ok(log)
    }

    /// Verifies every event's signature against the trusted keys (ids and chain were checked by
    /// [`GovernanceLog::parse`]), and every `canary_reset` payload.
    pub fn verify(&self, trusted: &BTreeMap<String, [u8; 32]>) -> Result<(), LogError> {
        let mut offset = 0;
        for (index, event) in self.events.iter().enumerate() {
            let fail = |error| LogError { line: index + 1, offset, error };
            event.verify(trusted).map_err(fail)?;
            if event.event_type == EventType::CanaryReset {
                event.canary_reset().map_err(fail)?;
            }
            offset += event.to_json().len() + 1;
        }
        Ok(())
    }

    /// The id of the last event, `""` when the log is empty: the next event's `prev_event_id`.
    pub fn head(&self) -> &str {
        self.events.last().map_or("", |e| e.event_id.as_str())
    }

    pub fn find(&self, event_id: &str) -> Option<(usize, &GovernanceEvent)> {
        self.events.iter().enumerate().find(|(_, e)| e.event_id == event_id)
    }

    /// The latest `canary_reset` event id per canary key (`claim_name/holdout_ref`). Call on a
    /// verified log.
    pub fn canary_resets(&self) -> BTreeMap<String, String> {
        let mut resets = BTreeMap::new();
        for event in &self.events {
            if let Ok(reset) = event.canary_reset() {
                resets.insert(crate::canary::canary_key(&reset.claim_name, &reset.holdout_ref), event.event_id.clone());
            }
        }
        resets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{key_id_for_seed, public_key_for_seed};

    const SEED: [u8; 32] = [9; 32];

    fn trusted() -> BTreeMap<String, [u8; 32]> {
        [("ops".to_string(), public_key_for_seed(&SEED))].into()
    }

    fn reset(previous: &str, claim: &str) -> GovernanceEvent {
        let payload = json!({"claim_name": claim, "holdout_ref": "demo", "reason": "incident 7"});
        GovernanceEvent::sign(EventType::CanaryReset, 3, "ops", payload, previous, &SEED)
    }

    fn log_bytes(events: &[GovernanceEvent]) -> Vec<u8> {
        events.iter().flat_map(|e| [e.to_json(), b"\n".to_vec()].concat()).collect()
    }

    #[test]
    fn signed_events_verify_and_every_field_is_covered() {
        let event = reset("", "c1");
        event.verify(&trusted()).unwrap();
        assert_eq!(event.prev_event_id().unwrap(), "");
        // SPEC §6 by hand: the canonical body, its domain-separated digest, the id over body ‖ sig.
        let body = r#"{"epoch":3,"event_type":"canary_reset","key_id":"ops","payload":{"claim_name":"c1","holdout_ref":"demo","prev_event_id":"","reason":"incident 7"}}"#;
        assert_eq!(
            event.signing_digest(),
            sha256(&[b"evidenceos:governance_event:v1".as_slice(), body.as_bytes()].concat())
        );
        let signature = hex::decode(&event.signature_ed25519).unwrap();
        assert_eq!(event.event_id, hex::encode(sha256(&[body.as_bytes(), &signature].concat())));
        for tamper in [
            |e: &mut GovernanceEvent| e.epoch += 1,
            |e: &mut GovernanceEvent| e.event_type = EventType::KeyRotated,
            |e: &mut GovernanceEvent| e.payload["reason"] = json!("other"),
        ] {
            let mut forged = event.clone();
            tamper(&mut forged);
            assert_eq!(forged.verify(&trusted()), Err(GovernanceError::IdMismatch));
            // Recomputing the id does not help: the signature no longer verifies.
            let signature = hex::decode(&forged.signature_ed25519).unwrap();
            forged.event_id = hex::encode(forged.id_for(&signature));
            assert_eq!(forged.verify(&trusted()), Err(GovernanceError::BadSignature));
        }
        let other_key = key_id_for_seed(&[1; 32]).to_hex();
        let unknown = GovernanceEvent::sign(EventType::CanaryReset, 3, &other_key, json!({}), "", &[1; 32]);
        assert_eq!(unknown.verify(&trusted()), Err(GovernanceError::UntrustedKey(other_key)));
    }

    #[test]
    fn the_log_is_a_chain_and_breaks_are_located() {
        let first = reset("", "c1");
        let second = reset(&first.event_id, "c2");
        let log = GovernanceLog::parse(&log_bytes(&[first.clone(), second.clone()])).unwrap();
        assert_eq!(log.events.len(), 2);
        assert_eq!(log.head(), second.event_id);
        log.verify(&trusted()).unwrap();
        assert_eq!(log.canary_resets().len(), 2);

        // Dropping the first event, duplicating one, or reordering breaks the chain.
        for events in [vec![second.clone()], vec![first.clone(), first.clone()], vec![second.clone(), first.clone()]] {
            let error = GovernanceLog::parse(&log_bytes(&events)).unwrap_err();
            assert!(matches!(error.error, GovernanceError::BrokenChain { .. }), "{error}");
        }
        let error = GovernanceLog::parse(&log_bytes(&[first.clone(), first.clone()])).unwrap_err();
        assert_eq!((error.line, error.offset), (2, first.to_json().len() + 1));
    }

    #[test]
    fn an_unterminated_last_line_is_torn_not_corrupt() {
        let first = reset("", "c1");
        let mut bytes = log_bytes(std::slice::from_ref(&first));
        let whole = bytes.len();
        bytes.extend_from_slice(&reset(&first.event_id, "c2").to_json()[..40]);
        let log = GovernanceLog::parse(&bytes).unwrap();
        assert_eq!((log.events.len(), log.valid_len, log.torn_bytes), (1, whole, 40));
        // A damaged complete line is an error, never skipped.
        let mut damaged = log_bytes(&[first]);
        damaged[5] = b'#';
        assert_eq!(GovernanceLog::parse(&damaged).unwrap_err().line, 1);
    }

    #[test]
    fn canary_reset_payloads_are_checked() {
        let good = reset("", "c1");
        assert_eq!(good.canary_reset().unwrap().claim_name, "c1");
        let extra = GovernanceEvent::sign(
            EventType::CanaryReset,
            0,
            "ops",
            json!({"claim_name": "c", "holdout_ref": "demo", "reason": "", "extra": 1}),
            "",
            &SEED,
        );
        assert!(matches!(extra.canary_reset(), Err(GovernanceError::BadPayload(_))));
        let log = GovernanceLog::parse(&log_bytes(&[extra])).unwrap();
        assert_eq!(log.verify(&trusted()).unwrap_err().line, 1);
    }

    #[test]
    fn event_bytes_are_pinned() {
        // Fixed key, payload and predecessor: the line a verifier elsewhere must reproduce.
        let first = reset("", "c1");
        let second = GovernanceEvent::sign(
            EventType::EpochAdvanced,
            4,
            "ops",
            json!({"from_epoch": 3, "forced_epoch": 4}),
            &first.event_id,
            &SEED,
        );
        let lines = String::from_utf8(log_bytes(&[first, second])).unwrap();
        insta::assert_snapshot!(lines);
    }

    #[test]
    fn event_lines_are_canonical_json_with_the_documented_fields() {
        let event = reset("", "c1");
        let line = String::from_utf8(event.to_json()).unwrap();
        let keys: Vec<String> =
            serde_json::from_str::<serde_json::Map<String, Value>>(&line).unwrap().keys().cloned().collect();
        assert_eq!(keys, ["epoch", "event_id", "event_type", "key_id", "payload", "signature_ed25519"]);
        assert!(line.contains(r#""event_type":"canary_reset""#));
        assert_eq!(GovernanceEvent::from_json(line.as_bytes()).unwrap(), event);
    }
}
