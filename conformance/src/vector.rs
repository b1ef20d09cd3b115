//! The vector format: one JSON file per vector in `conformance/vectors/`.
//!
//! A vector is a journal of inputs — `(now_ms, principal, request)` steps — plus the signing seed,
//! the kernel settings and the holdouts it runs under. Its expected outputs are not in the file:
//! they are the insta snapshots of the reference run (`tests/snapshots/`). Unknown fields are
//! rejected at every level so a typo never silently turns into a default.
//!
//! Claim requests may name what an earlier step returned instead of spelling it out: a claim as
//! `"claim": {"from_step": N}` (the id step N's CreateClaim/CreateClaimV2 answered) and a capsule
//! artifact as `"capsule_of_step": N` (the hash step N's execution answered). Runs resolve these
//! against their own replies, so every runtime sends the ids it was given.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use evidenceos_core::environment::Environment;
use evidenceos_core::hash::sha256;
use evidenceos_core::holdout::holdout_files;
use evidenceos_core::keys::{KeyFile, KeyId, key_file_name, key_id_for_seed};
use evidenceos_core::request::{ArtifactInput, CreateClaimV2};
use evidenceos_core::state::Policy;
use evidenceos_core::{Command, Input, KernelConfig, Principal, Query, Request, RequestId, Response, Role, Timestamp};
use serde::{Deserialize, Serialize};

use crate::error::{HarnessError, io_error};
use crate::run::Reply;
use crate::transcript::{error_code_name, render_response};

/// Where the vectors of this crate live.
pub const VECTORS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors");

/// Where `wasm_wat` paths are resolved from: the workspace's example claim code.
pub const WAT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");

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
    /// Becomes `Policy::max_principal_reservation_share_percent` (the daemon's default otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_principal_reservation_share_percent: Option<u8>,
    /// Becomes `Settings::reservation_ttl_ms`, so an expiry fits in one vector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_ttl_ms: Option<u64>,
    /// Becomes `Settings::canary_alpha_drift_micros`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_alpha_drift_micros: Option<u32>,
}

/// One holdout of the vector's environment, as `holdout_files` builds its directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldoutSpec {
    #[serde(rename = "ref")]
    pub holdout_ref: String,
    /// 32 bytes.
    pub handle_hex: HexBytes,
    /// One `'0'` or `'1'` per label.
    pub labels: String,
    pub created_at_unix: u64,
}

impl HoldoutSpec {
    fn label_bytes(&self) -> Result<Vec<u8>, String> {
        self.labels
            .chars()
            .map(|c| match c {
                '0' => Ok(0),
                '1' => Ok(1),
                other => {
                    Err(format!("holdout {}: labels must be '0'/'1' characters, found {other:?}", self.holdout_ref))
                }
            })
            .collect()
    }

    fn handle(&self) -> Result<[u8; 32], String> {
        self.handle_hex.0.as_slice().try_into().map_err(|_| {
            format!("holdout {}: handle_hex must be 32 bytes, found {}", self.holdout_ref, self.handle_hex.0.len())
        })
    }
}

/// The caller of a step, as a transport would have authenticated it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepPrincipal {
    pub id: String,
    pub role: Role,
}

/// `{"from_step": N}`: what step N answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FromStep {
    pub from_step: usize,
}

/// One artifact of a CommitArtifacts step. Its hash is `hash_hex`, or the capsule hash step
/// `capsule_of_step` answered, or (neither given) SHA-256 of the step's wasm module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactSpec {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_hex: Option<HexBytes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capsule_of_step: Option<usize>,
}

/// Every request the kernel serves. Credit commands have exactly the JSON shape of
/// `evidenceos_core::Command` (the journal format); queries and claim commands follow the wire
/// field names with `_hex` on byte fields, and claim commands may refer to earlier replies.
/// A claim is named by exactly one of `claim_id_hex` and `claim`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StepRequest {
    GrantCredit {
        principal_id: String,
        amount: u64,
        reason: String,
    },
    SetCreditLimit {
        principal_id: String,
        limit: u64,
    },
    /// v1: the holdout is named by its handle.
    CreateClaim {
        topic_id_hex: HexBytes,
        holdout_handle_id_hex: HexBytes,
        phys_hir_hash_hex: HexBytes,
        epoch_size: u64,
        oracle_num_symbols: u32,
        alpha: f64,
        access_credit: u64,
    },
    CreateClaimV2 {
        claim_name: String,
        lane: String,
        alpha_micros: u32,
        epoch_config_ref: String,
        output_schema_id: String,
        semantic_hash_hex: HexBytes,
        phys_hir_signature_hash_hex: HexBytes,
        dependency_merkle_root_hex: HexBytes,
        holdout_ref: String,
        epoch_size: u64,
        oracle_num_symbols: u32,
        access_credit: u64,
        oracle_id: String,
        nullspec_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dp_epsilon_budget: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dp_delta_budget: Option<f64>,
    },
    /// `wasm_wat` is compiled when the vector loads; without `artifacts` the step commits one
    /// `wasm` artifact carrying SHA-256 of the module.
    CommitArtifacts {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        claim_id_hex: Option<HexBytes>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        claim: Option<FromStep>,
        wasm_wat: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        artifacts: Option<Vec<ArtifactSpec>>,
    },
    FreezeGates {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        claim_id_hex: Option<HexBytes>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        claim: Option<FromStep>,
    },
    SealClaim {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        claim_id_hex: Option<HexBytes>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        claim: Option<FromStep>,
    },
    ExecuteClaimV2 {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        claim_id_hex: Option<HexBytes>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        claim: Option<FromStep>,
    },
    /// Legacy client-decided execution.
    ExecuteClaim {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        claim_id_hex: Option<HexBytes>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        claim: Option<FromStep>,
        decision: u32,
        reason_codes: Vec<u32>,
        canonical_output_hex: HexBytes,
    },
    RevokeClaim {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        claim_id_hex: Option<HexBytes>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        claim: Option<FromStep>,
        reason: String,
    },
    SetHoldoutPoolBudgets {
        holdout_id: String,
        scope: String,
        k_bits_budget: Option<f64>,
        access_credit_budget: Option<f64>,
    },
    GetPublicKey {
        key_id_hex: HexBytes,
    },
    GetSignedTreeHead {},
    GetInclusionProof {
        leaf_index: u64,
    },
    GetConsistencyProof {
        first_tree_size: u64,
        second_tree_size: u64,
    },
    GetCapsule {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        claim_id_hex: Option<HexBytes>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        claim: Option<FromStep>,
    },
    FetchCapsule {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        claim_id_hex: Option<HexBytes>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        claim: Option<FromStep>,
    },
    GetRevocationFeed {},
    GetHoldoutPoolBudgets {
        holdout_id: String,
        scope: String,
    },
}

/// A reference from one step to the reply of an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reference {
    /// The claim id of a ClaimCreated reply.
    ClaimOf(usize),
    /// The capsule hash of an Executed reply.
    CapsuleOf(usize),
}

/// What references resolve against: the vector's compiled modules and the replies so far.
struct Resolver<'a> {
    vector: &'a Vector,
    step: usize,
    replies: &'a [Reply],
}

impl Resolver<'_> {
    fn fail(&self, reason: String) -> HarnessError {
        HarnessError::Reference { vector: self.vector.name.clone(), step: self.step, reason }
    }

    fn reply(&self, step: usize) -> Result<&Response, HarnessError> {
        match self.replies.get(step) {
            Some(Ok(response)) => Ok(response),
            Some(Err(error)) => Err(self.fail(format!(
                "refers to step {step}, which was refused: err {} {}",
                error_code_name(error),
                error.message
            ))),
            None => Err(self.fail(format!("refers to step {step}, which has no reply yet"))),
        }
    }

    fn claim_id(&self, claim_id_hex: &Option<HexBytes>, claim: &Option<FromStep>) -> Result<Vec<u8>, HarnessError> {
        match (claim_id_hex, claim) {
            (Some(bytes), None) => Ok(bytes.0.clone()),
            (None, Some(FromStep { from_step })) => match self.reply(*from_step)? {
                Response::ClaimCreated { claim_id, .. } => Ok(claim_id.to_vec()),
                other => {
                    Err(self.fail(format!("step {from_step} answered {}, not a claim id", render_response(other))))
                }
            },
            _ => Err(self.fail("name the claim by exactly one of claim_id_hex and claim".into())),
        }
    }

    fn capsule_hash(&self, step: usize) -> Result<Vec<u8>, HarnessError> {
        match self.reply(step)? {
            Response::Executed(execution) => Ok(execution.capsule_hash.to_vec()),
            other => Err(self.fail(format!("step {step} answered {}, not an execution", render_response(other)))),
        }
    }

    fn module(&self, wasm_wat: &str) -> Result<Vec<u8>, HarnessError> {
        self.vector.modules.get(wasm_wat).cloned().ok_or_else(|| self.fail(format!("module {wasm_wat} is not loaded")))
    }

    fn artifacts(&self, specs: &Option<Vec<ArtifactSpec>>, module: &[u8]) -> Result<Vec<ArtifactInput>, HarnessError> {
        let Some(specs) = specs else {
            return Ok(vec![ArtifactInput { kind: "wasm".into(), hash: sha256(module).to_vec() }]);
        };
        specs
            .iter()
            .map(|spec| {
                let hash = match (&spec.hash_hex, spec.capsule_of_step) {
                    (Some(bytes), None) => bytes.0.clone(),
                    (None, Some(step)) => self.capsule_hash(step)?,
                    (None, None) => sha256(module).to_vec(),
                    (Some(_), Some(_)) => {
                        return Err(self.fail("an artifact takes at most one of hash_hex and capsule_of_step".into()));
                    }
                };
                Ok(ArtifactInput { kind: spec.kind.clone(), hash })
            })
            .collect()
    }
}

impl StepRequest {
    pub fn is_command(&self) -> bool {
        !self.is_query()
    }

    pub fn is_query(&self) -> bool {
        matches!(
            self,
            Self::GetPublicKey { .. }
                | Self::GetSignedTreeHead {}
                | Self::GetInclusionProof { .. }
                | Self::GetConsistencyProof { .. }
                | Self::GetCapsule { .. }
                | Self::FetchCapsule { .. }
                | Self::GetRevocationFeed {}
                | Self::GetHoldoutPoolBudgets { .. }
        )
    }

    /// The claim this request names, if any: (`claim_id_hex`, `claim`).
    fn claim_fields(&self) -> Option<(&Option<HexBytes>, &Option<FromStep>)> {
        match self {
            Self::CommitArtifacts { claim_id_hex, claim, .. }
            | Self::FreezeGates { claim_id_hex, claim }
            | Self::SealClaim { claim_id_hex, claim }
            | Self::ExecuteClaimV2 { claim_id_hex, claim }
            | Self::ExecuteClaim { claim_id_hex, claim, .. }
            | Self::RevokeClaim { claim_id_hex, claim, .. }
            | Self::GetCapsule { claim_id_hex, claim }
            | Self::FetchCapsule { claim_id_hex, claim } => Some((claim_id_hex, claim)),
            _ => None,
        }
    }

    /// Earlier replies this request needs.
    fn references(&self) -> Vec<Reference> {
        let mut found = Vec::new();
        if let Some((_, Some(FromStep { from_step }))) = self.claim_fields() {
            found.push(Reference::ClaimOf(*from_step));
        }
        if let Self::CommitArtifacts { artifacts: Some(specs), .. } = self {
            found.extend(specs.iter().filter_map(|spec| spec.capsule_of_step.map(Reference::CapsuleOf)));
        }
        found
    }

    /// Whether a reply of this request can carry a claim id / a capsule hash.
    fn answers_claim_id(&self) -> bool {
        matches!(self, Self::CreateClaim { .. } | Self::CreateClaimV2 { .. })
    }

    fn answers_capsule_hash(&self) -> bool {
        matches!(self, Self::ExecuteClaimV2 { .. } | Self::ExecuteClaim { .. })
    }

    /// Shape rules that need no other step: claim named exactly once, artifact hashes named at
    /// most once.
    fn check_shape(&self) -> Result<(), String> {
        if let Some((hex, from)) = self.claim_fields()
            && hex.is_some() == from.is_some()
        {
            return Err("name the claim by exactly one of claim_id_hex and claim".into());
        }
        if let Self::CommitArtifacts { artifacts: Some(specs), .. } = self
            && specs.iter().any(|spec| spec.hash_hex.is_some() && spec.capsule_of_step.is_some())
        {
            return Err("an artifact takes at most one of hash_hex and capsule_of_step".into());
        }
        Ok(())
    }

    /// The kernel request, with references resolved.
    fn to_request(&self, cx: &Resolver<'_>) -> Result<Request, HarnessError> {
        let command = |command| Ok(Request::Command(command));
        let query = |query| Ok(Request::Query(query));
        match self.clone() {
            Self::GrantCredit { principal_id, amount, reason } => {
                command(Command::GrantCredit { principal_id, amount, reason })
            }
            Self::SetCreditLimit { principal_id, limit } => command(Command::SetCreditLimit { principal_id, limit }),
            Self::CreateClaim {
                topic_id_hex,
                holdout_handle_id_hex,
                phys_hir_hash_hex,
                epoch_size,
                oracle_num_symbols,
                alpha,
                access_credit,
            } => command(Command::CreateClaim {
                topic_id: topic_id_hex.0,
                holdout_handle_id: holdout_handle_id_hex.0,
                phys_hir_hash: phys_hir_hash_hex.0,
                epoch_size,
                oracle_num_symbols,
                alpha,
                access_credit,
            }),
            Self::CreateClaimV2 {
                claim_name,
                lane,
                alpha_micros,
                epoch_config_ref,
                output_schema_id,
                semantic_hash_hex,
                phys_hir_signature_hash_hex,
                dependency_merkle_root_hex,
                holdout_ref,
                epoch_size,
                oracle_num_symbols,
                access_credit,
                oracle_id,
                nullspec_id,
                dp_epsilon_budget,
                dp_delta_budget,
            } => command(Command::CreateClaimV2(Box::new(CreateClaimV2 {
                claim_name,
                lane,
                alpha_micros,
                epoch_config_ref,
                output_schema_id,
                semantic_hash: semantic_hash_hex.0,
                phys_hir_signature_hash: phys_hir_signature_hash_hex.0,
                dependency_merkle_root: dependency_merkle_root_hex.0,
                holdout_ref,
                epoch_size,
                oracle_num_symbols,
                access_credit,
                oracle_id,
                nullspec_id,
                dp_epsilon_budget,
                dp_delta_budget,
            }))),
            Self::CommitArtifacts { claim_id_hex, claim, wasm_wat, artifacts } => {
                let wasm_module = cx.module(&wasm_wat)?;
                command(Command::CommitArtifacts {
                    claim_id: cx.claim_id(&claim_id_hex, &claim)?,
                    artifacts: cx.artifacts(&artifacts, &wasm_module)?,
                    wasm_module,
                })
            }
            Self::FreezeGates { claim_id_hex, claim } => {
                command(Command::FreezeGates { claim_id: cx.claim_id(&claim_id_hex, &claim)? })
            }
            Self::SealClaim { claim_id_hex, claim } => {
                command(Command::SealClaim { claim_id: cx.claim_id(&claim_id_hex, &claim)? })
            }
            Self::ExecuteClaimV2 { claim_id_hex, claim } => {
                command(Command::ExecuteClaimV2 { claim_id: cx.claim_id(&claim_id_hex, &claim)? })
            }
            Self::ExecuteClaim { claim_id_hex, claim, decision, reason_codes, canonical_output_hex } => {
                command(Command::ExecuteClaim {
                    claim_id: cx.claim_id(&claim_id_hex, &claim)?,
                    decision,
                    reason_codes,
                    canonical_output: canonical_output_hex.0,
                })
            }
            Self::RevokeClaim { claim_id_hex, claim, reason } => {
                command(Command::RevokeClaim { claim_id: cx.claim_id(&claim_id_hex, &claim)?, reason })
            }
            Self::SetHoldoutPoolBudgets { holdout_id, scope, k_bits_budget, access_credit_budget } => {
                command(Command::SetHoldoutPoolBudgets { holdout_id, scope, k_bits_budget, access_credit_budget })
            }
            Self::GetPublicKey { key_id_hex } => query(Query::GetPublicKey { key_id: key_id_hex.0 }),
            Self::GetSignedTreeHead {} => query(Query::GetSignedTreeHead),
            Self::GetInclusionProof { leaf_index } => query(Query::GetInclusionProof { leaf_index }),
            Self::GetConsistencyProof { first_tree_size, second_tree_size } => {
                query(Query::GetConsistencyProof { first_tree_size, second_tree_size })
            }
            Self::GetCapsule { claim_id_hex, claim } => {
                query(Query::GetCapsule { claim_id: cx.claim_id(&claim_id_hex, &claim)? })
            }
            Self::FetchCapsule { claim_id_hex, claim } => {
                query(Query::FetchCapsule { claim_id: cx.claim_id(&claim_id_hex, &claim)? })
            }
            Self::GetRevocationFeed {} => query(Query::GetRevocationFeed),
            Self::GetHoldoutPoolBudgets { holdout_id, scope } => {
                query(Query::GetHoldoutPoolBudgets { holdout_id, scope })
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    #[serde(default)]
    holdouts: Vec<HoldoutSpec>,
    steps: Vec<Step>,
}

/// A loaded vector whose rules hold (see [`Vector::from_json`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Vector {
    pub name: String,
    pub description: String,
    pub signing_seed: [u8; 32],
    pub config: ConfigOverrides,
    pub holdouts: Vec<HoldoutSpec>,
    /// The holdouts as the kernel's environment (development settings otherwise).
    pub environment: Environment,
    /// Every `wasm_wat` of the steps, compiled, by the path the steps name it with.
    pub modules: BTreeMap<String, Vec<u8>>,
    pub steps: Vec<Step>,
}

impl Vector {
    /// Parses and checks a vector (`origin` names the file in errors):
    /// - `name` is 1..64 chars of `[a-z0-9_]` (it names the snapshots);
    /// - the seed is 32 bytes; there is at least one step; `now_ms` never decreases;
    /// - all steps fall within one `checkpoint_idle_ms` window. io-tokio sleeps towards the idle
    ///   checkpoint deadline on the real clock, so a vector crossing it could checkpoint at a
    ///   moment that depends on scheduling, and the runtimes would no longer be comparable;
    /// - holdouts are valid (`handle_hex` 32 bytes, labels `'0'`/`'1'`, refs unique);
    /// - every `wasm_wat` compiles; a claim is named exactly once per step; a reference names an
    ///   earlier step of the right kind (a create for `from_step`, an execution for
    ///   `capsule_of_step`).
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
        let mut environment = environment(&file.holdouts).map_err(invalid)?;
        let settings = &mut environment.settings;
        settings.reservation_ttl_ms = file.config.reservation_ttl_ms.unwrap_or(settings.reservation_ttl_ms);
        settings.canary_alpha_drift_micros =
            file.config.canary_alpha_drift_micros.unwrap_or(settings.canary_alpha_drift_micros);
        check_references(&file.steps).map_err(invalid)?;
        let mut modules = BTreeMap::new();
        for step in &file.steps {
            if let StepRequest::CommitArtifacts { wasm_wat, .. } = &step.request
                && !modules.contains_key(wasm_wat)
            {
                modules.insert(wasm_wat.clone(), compile_wat(wasm_wat).map_err(invalid)?);
            }
        }
        Ok(Self {
            name: file.name,
            description: file.description,
            signing_seed,
            config: file.config,
            holdouts: file.holdouts,
            environment,
            modules,
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
            policy: Policy {
                default_credit_limit: self.config.default_credit_limit,
                max_principal_reservation_share_percent: self
                    .config
                    .max_principal_reservation_share_percent
                    .unwrap_or(defaults.policy.max_principal_reservation_share_percent),
            },
            environment: self.environment.clone(),
            ..defaults
        }
    }

    /// The request of step `index`, its references resolved against `replies`: the replies to
    /// the steps before it, in step order.
    pub fn request(&self, index: usize, replies: &[Reply]) -> Result<Request, HarnessError> {
        let step = self.steps.get(index).ok_or_else(|| HarnessError::Reference {
            vector: self.name.clone(),
            step: index,
            reason: format!("the vector has {} steps", self.steps.len()),
        })?;
        step.request.to_request(&Resolver { vector: self, step: index, replies })
    }

    /// The kernel input for step `index` (see [`Self::request`]).
    pub fn input(&self, index: usize, replies: &[Reply]) -> Result<Input, HarnessError> {
        let request = self.request(index, replies)?;
        Ok(Input::Request { id: request_id(index), principal: self.steps[index].principal(), request })
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

/// The development environment with the vector's holdouts.
fn environment(holdouts: &[HoldoutSpec]) -> Result<Environment, String> {
    let mut files = Vec::with_capacity(holdouts.len());
    for (index, spec) in holdouts.iter().enumerate() {
        if holdouts[..index].iter().any(|earlier| earlier.holdout_ref == spec.holdout_ref) {
            return Err(format!("holdout {} is listed twice", spec.holdout_ref));
        }
        files.push(holdout_files(&spec.holdout_ref, spec.handle()?, &spec.label_bytes()?, spec.created_at_unix));
    }
    Environment::default().with_holdouts(&files).map_err(|e| e.to_string())
}

/// Every step names its claim once and refers only to earlier steps that answer what it needs.
fn check_references(steps: &[Step]) -> Result<(), String> {
    for (index, step) in steps.iter().enumerate() {
        step.request.check_shape().map_err(|reason| format!("step {index}: {reason}"))?;
        for reference in step.request.references() {
            let (target, wanted) = match reference {
                Reference::ClaimOf(target) => (target, "a claim id"),
                Reference::CapsuleOf(target) => (target, "a capsule hash"),
            };
            if target >= index {
                return Err(format!("step {index} refers to step {target}, which is not before it"));
            }
            let request = &steps[target].request;
            let fits = match reference {
                Reference::ClaimOf(_) => request.answers_claim_id(),
                Reference::CapsuleOf(_) => request.answers_capsule_hash(),
            };
            if !fits {
                return Err(format!("step {index} wants {wanted} from step {target}, which cannot answer one"));
            }
        }
    }
    Ok(())
}

/// Compiles `path` (relative to [`WAT_DIR`]).
fn compile_wat(path: &str) -> Result<Vec<u8>, String> {
    let relative = Path::new(path);
    if relative.is_absolute() || relative.extension().is_none_or(|ext| ext != "wat") {
        return Err(format!("wasm_wat {path:?} must be a relative path to a .wat file"));
    }
    wat::parse_file(Path::new(WAT_DIR).join(relative)).map_err(|e| format!("wasm_wat {path}: {e}"))
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
    use evidenceos_core::claim::ClaimState;
    use evidenceos_core::request::Execution;

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

    fn vector_of_requests(requests: &[&str]) -> String {
        let steps: Vec<String> = requests.iter().map(|request| step_json(1, request)).collect();
        vector_with_steps(&steps)
    }

    fn parse(text: &str) -> Result<Vector, HarnessError> {
        Vector::from_json(Path::new("t.json"), text)
    }

    const CREATE_V2: &str = r#"{"type":"create_claim_v2","claim_name":"n","lane":"fast","alpha_micros":50000,"epoch_config_ref":"","output_schema_id":"legacy/v1","semantic_hash_hex":"","phys_hir_signature_hash_hex":"","dependency_merkle_root_hex":"","holdout_ref":"demo","epoch_size":1,"oracle_num_symbols":4,"access_credit":64,"oracle_id":"","nullspec_id":""}"#;
    const EXECUTE_STEP_0: &str = r#"{"type":"execute_claim_v2","claim":{"from_step":0}}"#;

    #[test]
    fn parses_every_request_type() {
        let id = "11".repeat(32);
        let requests = [
            r#"{"type":"grant_credit","principal_id":"a","amount":1,"reason":"r"}"#.to_string(),
            r#"{"type":"set_credit_limit","principal_id":"a","limit":1}"#.to_string(),
            format!(
                r#"{{"type":"create_claim","topic_id_hex":"{id}","holdout_handle_id_hex":"{id}","phys_hir_hash_hex":"{id}","epoch_size":1,"oracle_num_symbols":4,"alpha":0.05,"access_credit":64}}"#
            ),
            CREATE_V2.to_string(),
            CREATE_V2.replace(r#""nullspec_id":"""#, r#""nullspec_id":"","dp_epsilon_budget":1.5,"dp_delta_budget":0.0"#),
            r#"{"type":"commit_artifacts","claim":{"from_step":0},"wasm_wat":"claim_mod3.wat"}"#.to_string(),
            format!(
                r#"{{"type":"commit_artifacts","claim_id_hex":"{id}","wasm_wat":"claim_all_zero.wat","artifacts":[{{"kind":"wasm"}},{{"kind":"wasm","hash_hex":"00"}}]}}"#
            ),
            r#"{"type":"freeze_gates","claim":{"from_step":0}}"#.to_string(),
            r#"{"type":"seal_claim","claim_id_hex":""}"#.to_string(),
            EXECUTE_STEP_0.to_string(),
            format!(
                r#"{{"type":"execute_claim","claim_id_hex":"{id}","decision":1,"reason_codes":[1],"canonical_output_hex":"03"}}"#
            ),
            r#"{"type":"revoke_claim","claim":{"from_step":0},"reason":"r"}"#.to_string(),
            r#"{"type":"set_holdout_pool_budgets","holdout_id":"demo","scope":"global","k_bits_budget":130.0,"access_credit_budget":null}"#.to_string(),
            r#"{"type":"get_public_key","key_id_hex":""}"#.to_string(),
            r#"{"type":"get_signed_tree_head"}"#.to_string(),
            r#"{"type":"get_inclusion_proof","leaf_index":0}"#.to_string(),
            r#"{"type":"get_consistency_proof","first_tree_size":1,"second_tree_size":0}"#.to_string(),
            format!(r#"{{"type":"get_capsule","claim_id_hex":"{id}"}}"#),
            r#"{"type":"fetch_capsule","claim":{"from_step":0}}"#.to_string(),
            r#"{"type":"get_revocation_feed"}"#.to_string(),
            r#"{"type":"get_holdout_pool_budgets","holdout_id":"demo","scope":""}"#.to_string(),
        ];
        let mut all = vec![CREATE_V2];
        all.extend(requests.iter().map(String::as_str));
        let vector = parse(&vector_of_requests(&all)).unwrap();
        for (step, request) in vector.steps[1..].iter().zip(&requests) {
            let reparsed: serde_json::Value = serde_json::from_str(request).unwrap();
            assert_eq!(serde_json::to_value(&step.request).unwrap(), reparsed, "round trip of {request}");
        }
    }

    #[test]
    fn command_requests_have_the_journal_shape_of_core_commands() {
        let requests = [
            StepRequest::GrantCredit { principal_id: "a".into(), amount: 3, reason: "r".into() },
            StepRequest::SetCreditLimit { principal_id: "a".into(), limit: 9 },
        ];
        for request in requests {
            let text = vector_json(&serde_json::to_string(&request).unwrap());
            let Request::Command(command) = parse(&text).unwrap().request(0, &[]).unwrap() else {
                panic!("{request:?} is a command")
            };
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
            vector_json(r#"{"type":"grant_credit","principal_id":"a","amount":1,"reason":"r","extra":1}"#),
            vector_json(r#"{"type":"no_such_request"}"#),
            good.replacen(r#""role":"operator""#, r#""role":"operator","extra":1"#, 1),
            good.replacen(r#""now_ms":1"#, r#""now_ms":1,"extra":1"#, 1),
            good.replacen(r#""steps""#, r#""config":{"checkpoint_evry":3},"steps""#, 1),
            good.replacen(
                r#""steps""#,
                r#""holdouts":[{"ref":"d","handle_hex":"","labels":"","created_at_unix":0,"extra":1}],"steps""#,
                1,
            ),
            vector_json(r#"{"type":"seal_claim","claim":{"from_step":0,"extra":1}}"#),
            vector_json(
                r#"{"type":"commit_artifacts","claim_id_hex":"","wasm_wat":"claim_mod3.wat","artifacts":[{"kind":"wasm","extra":1}]}"#,
            ),
            vector_json(&CREATE_V2.replace(r#""lane""#, r#""extra":1,"lane""#)),
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
        let holdout = |fields: &str| good.replacen(r#""steps""#, &format!(r#""holdouts":[{fields}],"steps""#), 1);
        let handle = "d0".repeat(32);
        let cases = [
            (good.replacen(SEED, "0001", 1), "32 bytes".to_string()),
            (good.replacen(r#""name":"t""#, r#""name":"Bad Name""#, 1), "name must be".into()),
            (two_steps(0), "back in time".into()),
            (two_steps(10_001), "checkpoint_idle_ms".into()),
            (vector_with_steps(&[]), "at least one step".into()),
            (
                holdout(r#"{"ref":"d","handle_hex":"d0","labels":"01","created_at_unix":0}"#),
                "handle_hex must be 32".into(),
            ),
            (
                holdout(&format!(r#"{{"ref":"d","handle_hex":"{handle}","labels":"012","created_at_unix":0}}"#)),
                "labels must be".into(),
            ),
            (
                holdout(&format!(r#"{{"ref":"bad ref","handle_hex":"{handle}","labels":"01","created_at_unix":0}}"#)),
                "holdouts/bad ref".into(),
            ),
            (
                holdout(&format!(
                    r#"{{"ref":"d","handle_hex":"{handle}","labels":"01","created_at_unix":0}},{{"ref":"d","handle_hex":"{handle}","labels":"1","created_at_unix":0}}"#
                )),
                "listed twice".into(),
            ),
            (vector_json(r#"{"type":"seal_claim"}"#), "exactly one of claim_id_hex and claim".into()),
            (
                vector_json(r#"{"type":"seal_claim","claim_id_hex":"","claim":{"from_step":0}}"#),
                "exactly one of claim_id_hex and claim".into(),
            ),
            (vector_json(EXECUTE_STEP_0), "step 0 refers to step 0, which is not before it".into()),
            (vector_of_requests(&[sth, EXECUTE_STEP_0]), "wants a claim id from step 0".into()),
            (
                vector_of_requests(&[
                    CREATE_V2,
                    r#"{"type":"commit_artifacts","claim":{"from_step":0},"wasm_wat":"claim_mod3.wat","artifacts":[{"kind":"capsule","capsule_of_step":0}]}"#,
                ]),
                "wants a capsule hash from step 0".into(),
            ),
            (
                vector_json(
                    r#"{"type":"commit_artifacts","claim_id_hex":"","wasm_wat":"claim_mod3.wat","artifacts":[{"kind":"capsule","hash_hex":"","capsule_of_step":0}]}"#,
                ),
                "at most one of hash_hex and capsule_of_step".into(),
            ),
            (
                vector_json(r#"{"type":"commit_artifacts","claim_id_hex":"","wasm_wat":"no_such_file.wat"}"#),
                "no_such_file.wat".into(),
            ),
            (
                vector_json(r#"{"type":"commit_artifacts","claim_id_hex":"","wasm_wat":"/etc/passwd"}"#),
                "relative path to a .wat file".into(),
            ),
        ];
        for (text, expected) in cases {
            let err = parse(&text).unwrap_err();
            assert!(matches!(err, HarnessError::InvalidVector { .. }), "{err}");
            assert!(err.to_string().contains(&expected), "{err} should mention {expected}");
        }
        assert!(matches!(
            parse(&vector_json(r#"{"type":"get_public_key","key_id_hex":"zz"}"#)),
            Err(HarnessError::Parse { .. })
        ));
    }

    #[test]
    fn config_overrides_and_holdouts_reach_the_kernel_config() {
        let handle = "d0".repeat(32);
        let text = vector_json(r#"{"type":"get_signed_tree_head"}"#).replacen(
            r#""steps""#,
            &format!(
                r#""config":{{"checkpoint_every":3,"default_credit_limit":100}},"holdouts":[{{"ref":"demo","handle_hex":"{handle}","labels":"1001","created_at_unix":1700000000}}],"steps""#
            ),
            1,
        );
        let config = parse(&text).unwrap().kernel_config();
        assert_eq!(config.checkpoint_every, 3);
        assert_eq!(config.policy.default_credit_limit, Some(100));
        assert_eq!(config.checkpoint_idle_ms, KernelConfig::default().checkpoint_idle_ms);
        let expected = Environment::default()
            .with_holdouts(&[holdout_files("demo", [0xd0; 32], &[1, 0, 0, 1], 1_700_000_000)])
            .unwrap();
        assert_eq!(config.environment, expected);
        let plain = parse(&vector_json(r#"{"type":"get_signed_tree_head"}"#)).unwrap().kernel_config();
        assert_eq!(plain.environment, Environment::default());
    }

    fn executed(capsule_hash: [u8; 32]) -> Reply {
        Ok(Response::Executed(Box::new(Execution {
            state: ClaimState::Certified,
            decision: evidenceos_core::claim::Decision::Approve,
            reason_codes: vec![1],
            canonical_output: vec![3],
            e_value: 1e9,
            certified: true,
            capsule_hash,
            etl_index: 1,
        })))
    }

    #[test]
    fn references_resolve_against_earlier_replies() {
        let commit = r#"{"type":"commit_artifacts","claim":{"from_step":0},"wasm_wat":"claim_mod3.wat","artifacts":[{"kind":"wasm"},{"kind":"capsule","capsule_of_step":1}]}"#;
        let vector = parse(&vector_of_requests(&[CREATE_V2, EXECUTE_STEP_0, commit])).unwrap();
        let module = wat::parse_file(Path::new(WAT_DIR).join("claim_mod3.wat")).unwrap();
        assert_eq!(vector.modules.get("claim_mod3.wat"), Some(&module));
        let created =
            Ok(Response::ClaimCreated { claim_id: [7; 32], topic_id: [8; 32], state: ClaimState::Uncommitted });
        let replies = vec![created, executed([9; 32])];
        let Request::Command(Command::ExecuteClaimV2 { claim_id }) = vector.request(1, &replies[..1]).unwrap() else {
            panic!("execute")
        };
        assert_eq!(claim_id, vec![7; 32]);
        let Request::Command(Command::CommitArtifacts { claim_id, artifacts, wasm_module }) =
            vector.request(2, &replies).unwrap()
        else {
            panic!("commit")
        };
        assert_eq!(claim_id, vec![7; 32]);
        assert_eq!(
            artifacts,
            vec![
                ArtifactInput { kind: "wasm".into(), hash: sha256(&module).to_vec() },
                ArtifactInput { kind: "capsule".into(), hash: vec![9; 32] },
            ]
        );
        assert_eq!(wasm_module, module);

        // A refused or missing reply cannot be referred to: the error names the step.
        let refused = vec![Err(evidenceos_core::KernelError::not_found("unknown holdout_ref"))];
        let err = vector.request(1, &refused).unwrap_err();
        assert!(err.to_string().contains("step 1: refers to step 0, which was refused: err NOT_FOUND"), "{err}");
        let err = vector.request(1, &[]).unwrap_err();
        assert!(err.to_string().contains("no reply yet"), "{err}");
    }

    #[test]
    fn commit_without_artifacts_names_the_module_hash() {
        let commit = r#"{"type":"commit_artifacts","claim_id_hex":"0102","wasm_wat":"claim_all_zero.wat"}"#;
        let vector = parse(&vector_json(commit)).unwrap();
        let module = wat::parse_file(Path::new(WAT_DIR).join("claim_all_zero.wat")).unwrap();
        let request = vector.request(0, &[]).unwrap();
        assert_eq!(
            request,
            Request::Command(Command::CommitArtifacts {
                claim_id: vec![1, 2],
                artifacts: vec![ArtifactInput { kind: "wasm".into(), hash: sha256(&module).to_vec() }],
                wasm_module: module,
            })
        );
    }
}
