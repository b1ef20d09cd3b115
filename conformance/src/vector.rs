//! The vector format: one JSON file per vector in `conformance/vectors/`.
//!
//! A vector is a journal of inputs — `(now_ms, principal, request)` steps — plus the signing seed
//! and the kernel settings it runs under. Its expected outputs are not in the file: they are the
//! insta snapshots of the reference run (`tests/snapshots/`). Unknown fields are rejected at every
//! level so a typo never silently turns into a default.

use std::path::{Path, PathBuf};

use evidenceos_core::keys::{KeyFile, KeyId, key_file_name, key_id_for_seed};
use evidenceos_core::state::Policy;
use evidenceos_core::{Command, Input, KernelConfig, Principal, Query, Request, RequestId, Role, Timestamp};
use serde::{Deserialize, Serialize};

use crate::error::{HarnessError, io_error};

/// Where the vectors of this crate live.
pub const VECTORS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors");

/// Bytes given as a hex string in the vector (empty string = no bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HexBytes(pub Vec<u8>);

impl Serialize for HexBytes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for HexBytes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        hex::decode(&text).map(Self).map_err(|e| serde::de::Error::custom(format!("invalid hex {text:?}: {e}")))
    }
}

/// Overrides of [`KernelConfig`]; everything else keeps the kernel's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_every: Option<u64>,
    /// Becomes `Policy::default_credit_limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_credit_limit: Option<u64>,
}

/// The caller of a step, as a transport would have authenticated it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepPrincipal {
    pub id: String,
    pub role: Role,
}

/// Every request the kernel serves. Commands have exactly the JSON shape of
/// `evidenceos_core::Command` (the journal format); queries follow the wire field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StepRequest {
    GrantCredit { principal_id: String, amount: u64, reason: String },
    SetCreditLimit { principal_id: String, limit: u64 },
    TestLeaf { payload: String },
    GetPublicKey { key_id_hex: HexBytes },
    GetSignedTreeHead {},
    GetInclusionProof { leaf_index: u64 },
    GetConsistencyProof { first_tree_size: u64, second_tree_size: u64 },
}

impl StepRequest {
    pub fn is_command(&self) -> bool {
        matches!(self, Self::GrantCredit { .. } | Self::SetCreditLimit { .. } | Self::TestLeaf { .. })
    }

    pub fn to_request(&self) -> Request {
        match self.clone() {
            Self::GrantCredit { principal_id, amount, reason } => {
                Request::Command(Command::GrantCredit { principal_id, amount, reason })
            }
            Self::SetCreditLimit { principal_id, limit } => {
                Request::Command(Command::SetCreditLimit { principal_id, limit })
            }
            Self::TestLeaf { payload } => Request::Command(Command::TestLeaf { payload }),
            Self::GetPublicKey { key_id_hex } => Request::Query(Query::GetPublicKey { key_id: key_id_hex.0 }),
            Self::GetSignedTreeHead {} => Request::Query(Query::GetSignedTreeHead),
            Self::GetInclusionProof { leaf_index } => Request::Query(Query::GetInclusionProof { leaf_index }),
            Self::GetConsistencyProof { first_tree_size, second_tree_size } => {
                Request::Query(Query::GetConsistencyProof { first_tree_size, second_tree_size })
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub now_ms: u64,
    pub principal: StepPrincipal,
    pub request: StepRequest,
}

impl Step {
    pub fn now(&self) -> Timestamp {
        Timestamp(self.now_ms)
    }

    pub fn principal(&self) -> Principal {
        Principal::new(self.principal.id.clone(), self.principal.role)
    }

    /// The kernel input for this step when it is the `index`th of its vector.
    pub fn input(&self, index: usize) -> Input {
        Input::Request { id: request_id(index), principal: self.principal(), request: self.request.to_request() }
    }
}

/// Request ids are step indexes, as io-tokio numbers requests from 0 in arrival order.
pub fn request_id(step_index: usize) -> RequestId {
    RequestId(step_index as u64)
}

/// A vector as stored on disk, before its rules are checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct VectorFile {
    name: String,
    description: String,
    signing_seed_hex: HexBytes,
    #[serde(default)]
    config: ConfigOverrides,
    steps: Vec<Step>,
}

/// A loaded vector whose rules hold (see [`Vector::from_json`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vector {
    pub name: String,
    pub description: String,
    pub signing_seed: [u8; 32],
    pub config: ConfigOverrides,
    pub steps: Vec<Step>,
}

impl Vector {
    /// Parses and checks a vector (`origin` names the file in errors):
    /// - `name` is 1..64 chars of `[a-z0-9_]` (it names the snapshots);
    /// - the seed is 32 bytes; there is at least one step; `now_ms` never decreases;
    /// - all steps fall within one `checkpoint_idle_ms` window. io-tokio sleeps towards the idle
    ///   checkpoint deadline on the real clock, so a vector crossing it could checkpoint at a
    ///   moment that depends on scheduling, and the runtimes would no longer be comparable.
    pub fn from_json(origin: &Path, text: &str) -> Result<Self, HarnessError> {
        let file: VectorFile =
            serde_json::from_str(text).map_err(|source| HarnessError::Parse { path: origin.to_path_buf(), source })?;
        let invalid = |reason: String| HarnessError::InvalidVector { name: file.name.clone(), reason };
        let name_ok = (1..=64).contains(&file.name.len())
            && file.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !name_ok {
            return Err(invalid("name must be 1..64 chars of [a-z0-9_]".into()));
        }
        let signing_seed: [u8; 32] = file.signing_seed_hex.0.as_slice().try_into().map_err(|_| {
            invalid(format!("signing_seed_hex must be 32 bytes, found {}", file.signing_seed_hex.0.len()))
        })?;
        let (Some(first), Some(last)) = (file.steps.first(), file.steps.last()) else {
            return Err(invalid("a vector needs at least one step".into()));
        };
        if let Some(index) = file.steps.windows(2).position(|pair| pair[1].now_ms < pair[0].now_ms) {
            return Err(invalid(format!("step {} goes back in time", index + 1)));
        }
        let idle_ms = KernelConfig::default().checkpoint_idle_ms;
        let span = last.now_ms - first.now_ms;
        if span >= idle_ms {
            return Err(invalid(format!(
                "steps span {span} ms; keep them within checkpoint_idle_ms ({idle_ms} ms) so no idle checkpoint fires"
            )));
        }
        Ok(Self {
            name: file.name,
            description: file.description,
            signing_seed,
            config: file.config,
            steps: file.steps,
        })
    }

    /// Reads one vector file; its name must match the file stem.
    pub fn load(path: &Path) -> Result<Self, HarnessError> {
        let text = std::fs::read_to_string(path).map_err(io_error(path))?;
        let vector = Self::from_json(path, &text)?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        if stem != vector.name {
            return Err(HarnessError::InvalidVector {
                name: vector.name,
                reason: format!("stored as {}, but a vector's file must be named <name>.json", path.display()),
            });
        }
        Ok(vector)
    }

    pub fn kernel_config(&self) -> KernelConfig {
        let defaults = KernelConfig::default();
        KernelConfig {
            checkpoint_every: self.config.checkpoint_every.unwrap_or(defaults.checkpoint_every),
            policy: Policy { default_credit_limit: self.config.default_credit_limit },
            ..defaults
        }
    }

    pub fn key_id(&self) -> KeyId {
        key_id_for_seed(&self.signing_seed)
    }

    /// The `keys/` files of the vector's data directory, as `Kernel::recover` wants them.
    pub fn key_files(&self) -> Vec<KeyFile> {
        vec![KeyFile { name: key_file_name(&self.key_id()), bytes: self.signing_seed.to_vec() }]
    }

    /// Contents of `keys/active_key_id`.
    pub fn active_key_id_file(&self) -> Vec<u8> {
        format!("{}\n", self.key_id()).into_bytes()
    }

    /// When the kernel boots: the time of the first step.
    pub fn boot_time(&self) -> Timestamp {
        self.steps.first().map_or(Timestamp(0), Step::now)
    }

    /// When the clean shutdown checkpoint is requested: the time of the last step.
    pub fn end_time(&self) -> Timestamp {
        self.steps.last().map_or(Timestamp(0), Step::now)
    }
}

/// Every `*.json` vector in `dir`, in file-name order.
pub fn load_dir(dir: &Path) -> Result<Vec<Vector>, HarnessError> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        if path.extension().is_some_and(|ext| ext == "json") {
            paths.push(path);
        }
    }
    paths.sort();
    paths.iter().map(|path| Vector::load(path)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn step_json(now_ms: u64, request: &str) -> String {
        format!(r#"{{"now_ms":{now_ms},"principal":{{"id":"op","role":"operator"}},"request":{request}}}"#)
    }

    fn vector_with_steps(steps: &[String]) -> String {
        format!(r#"{{"name":"t","description":"d","signing_seed_hex":"{SEED}","steps":[{}]}}"#, steps.join(","))
    }

    fn vector_json(request: &str) -> String {
        vector_with_steps(&[step_json(1, request)])
    }

    fn parse(text: &str) -> Result<Vector, HarnessError> {
        Vector::from_json(Path::new("t.json"), text)
    }

    #[test]
    fn parses_every_request_type() {
        let requests = [
            r#"{"type":"grant_credit","principal_id":"a","amount":1,"reason":"r"}"#,
            r#"{"type":"set_credit_limit","principal_id":"a","limit":1}"#,
            r#"{"type":"test_leaf","payload":"x"}"#,
            r#"{"type":"get_public_key","key_id_hex":""}"#,
            r#"{"type":"get_signed_tree_head"}"#,
            r#"{"type":"get_inclusion_proof","leaf_index":0}"#,
            r#"{"type":"get_consistency_proof","first_tree_size":1,"second_tree_size":0}"#,
        ];
        for request in requests {
            let vector = parse(&vector_json(request)).unwrap();
            let reparsed: serde_json::Value = serde_json::from_str(request).unwrap();
            assert_eq!(serde_json::to_value(&vector.steps[0].request).unwrap(), reparsed, "round trip of {request}");
        }
    }

    #[test]
    fn command_requests_have_the_journal_shape_of_core_commands() {
        let requests = [
            StepRequest::GrantCredit { principal_id: "a".into(), amount: 3, reason: "r".into() },
            StepRequest::SetCreditLimit { principal_id: "a".into(), limit: 9 },
            StepRequest::TestLeaf { payload: "p".into() },
        ];
        for request in requests {
            let Request::Command(command) = request.to_request() else { panic!("{request:?} is a command") };
            assert!(request.is_command());
            assert_eq!(serde_json::to_value(&request).unwrap(), serde_json::to_value(&command).unwrap());
        }
    }

    #[test]
    fn unknown_fields_are_rejected_at_every_level() {
        let good = vector_json(r#"{"type":"get_signed_tree_head"}"#);
        assert!(parse(&good).is_ok());
        let bad = [
            good.replacen(r#""description""#, r#""extra":1,"description""#, 1),
            vector_json(r#"{"type":"get_signed_tree_head","extra":1}"#),
            vector_json(r#"{"type":"test_leaf","payload":"x","extra":1}"#),
            vector_json(r#"{"type":"no_such_request"}"#),
            good.replacen(r#""role":"operator""#, r#""role":"operator","extra":1"#, 1),
            good.replacen(r#""now_ms":1"#, r#""now_ms":1,"extra":1"#, 1),
            good.replacen(r#""steps""#, r#""config":{"checkpoint_evry":3},"steps""#, 1),
        ];
        for text in bad {
            assert!(matches!(parse(&text), Err(HarnessError::Parse { .. })), "accepted {text}");
        }
    }

    #[test]
    fn rule_violations_are_named() {
        let sth = r#"{"type":"get_signed_tree_head"}"#;
        let good = vector_json(sth);
        let two_steps = |second_ms: u64| vector_with_steps(&[step_json(1, sth), step_json(second_ms, sth)]);
        assert!(parse(&two_steps(2)).is_ok());
        let cases = [
            (good.replacen(SEED, "0001", 1), "32 bytes"),
            (good.replacen(r#""name":"t""#, r#""name":"Bad Name""#, 1), "name must be"),
            (two_steps(0), "back in time"),
            (two_steps(10_001), "checkpoint_idle_ms"),
            (vector_with_steps(&[]), "at least one step"),
        ];
        for (text, expected) in cases {
            let err = parse(&text).unwrap_err();
            assert!(matches!(err, HarnessError::InvalidVector { .. }), "{err}");
            assert!(err.to_string().contains(expected), "{err} should mention {expected}");
        }
        assert!(matches!(
            parse(&vector_json(r#"{"type":"get_public_key","key_id_hex":"zz"}"#)),
            Err(HarnessError::Parse { .. })
        ));
    }

    #[test]
    fn config_overrides_reach_the_kernel_config() {
        let text = vector_json(r#"{"type":"get_signed_tree_head"}"#).replacen(
            r#""steps""#,
            r#""config":{"checkpoint_every":3,"default_credit_limit":100},"steps""#,
            1,
        );
        let config = parse(&text).unwrap().kernel_config();
        assert_eq!(config.checkpoint_every, 3);
        assert_eq!(config.policy.default_credit_limit, Some(100));
        assert_eq!(config.checkpoint_idle_ms, KernelConfig::default().checkpoint_idle_ms);
    }
}
