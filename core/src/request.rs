//! What callers ask of the kernel. Queries read durable state and are answered at once;
//! commands change state, are journaled, and are answered only once durable.
//! Field-shape validation lives here, next to the types, so every runtime shares one rule.

use serde::{Deserialize, Serialize};

use crate::error::KernelError;
use crate::hash::Hash;
use crate::keys::KeyId;
use crate::validate::{validate_name, validate_reason};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Agent,
    Auditor,
    Operator,
}

/// Who is asking, as established by the transport from verified material (SPEC §2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub id: String,
    pub role: Role,
}

impl Principal {
    pub fn new(id: impl Into<String>, role: Role) -> Self {
        Self { id: id.into(), role }
    }

    /// The caller of a daemon with no authentication configured (development only).
    pub fn anonymous() -> Self {
        Self::new("anonymous", Role::Agent)
    }

    pub fn is_operator(&self) -> bool {
        self.role == Role::Operator
    }

    pub fn is_auditor_or_operator(&self) -> bool {
        matches!(self.role, Role::Auditor | Role::Operator)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// Empty `key_id` means the active key.
    GetPublicKey {
        key_id: Vec<u8>,
    },
    GetSignedTreeHead,
    GetInclusionProof {
        leaf_index: u64,
    },
    /// `second_tree_size` 0 means the current durable size.
    GetConsistencyProof {
        first_tree_size: u64,
        second_tree_size: u64,
    },
    GetCapsule {
        claim_id: Vec<u8>,
    },
    FetchCapsule {
        claim_id: Vec<u8>,
    },
    GetRevocationFeed,
    /// Aggregates for monitoring (auditor or operator).
    LedgerTotals,
    GetHoldoutPoolBudgets {
        holdout_id: String,
        scope: String,
    },
}

/// One artifact named by CommitArtifacts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactInput {
    pub kind: String,
    #[serde(with = "crate::hexbytes")]
    pub hash: Vec<u8>,
}

/// A state change. Exactly these values are written to the journal, so their serde shape is a
/// storage format: add variants, never change existing ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// v1 claim: the client names topic, holdout handle and hints directly.
    CreateClaim {
        #[serde(with = "crate::hexbytes")]
        topic_id: Vec<u8>,
        #[serde(with = "crate::hexbytes")]
        holdout_handle_id: Vec<u8>,
        #[serde(with = "crate::hexbytes")]
        phys_hir_hash: Vec<u8>,
        epoch_size: u64,
        oracle_num_symbols: u32,
        alpha: f64,
        access_credit: u64,
    },
    CreateClaimV2(Box<CreateClaimV2>),
    CommitArtifacts {
        #[serde(with = "crate::hexbytes")]
        claim_id: Vec<u8>,
        artifacts: Vec<ArtifactInput>,
        #[serde(with = "crate::hexbytes")]
        wasm_module: Vec<u8>,
    },
    /// FreezeGates and its alias Freeze.
    FreezeGates {
        #[serde(with = "crate::hexbytes")]
        claim_id: Vec<u8>,
    },
    /// SealClaim and its alias Seal.
    SealClaim {
        #[serde(with = "crate::hexbytes")]
        claim_id: Vec<u8>,
    },
    ExecuteClaimV2 {
        #[serde(with = "crate::hexbytes")]
        claim_id: Vec<u8>,
    },
    /// Legacy execution with a client-supplied decision; refused unless insecure v1 is enabled.
    ExecuteClaim {
        #[serde(with = "crate::hexbytes")]
        claim_id: Vec<u8>,
        /// `evidenceos.v2.Decision` number chosen by the client.
        decision: u32,
        reason_codes: Vec<u32>,
        #[serde(with = "crate::hexbytes")]
        canonical_output: Vec<u8>,
    },
    RevokeClaim {
        #[serde(with = "crate::hexbytes")]
        claim_id: Vec<u8>,
        reason: String,
    },
    SetHoldoutPoolBudgets {
        holdout_id: String,
        scope: String,
        k_bits_budget: Option<f64>,
        access_credit_budget: Option<f64>,
    },
    /// SIGHUP: operator files re-read and validated by the runtime, applied atomically here.
    /// No wire request maps to it.
    ReloadEnvironment(Box<crate::environment::Environment>),
    GrantCredit {
        principal_id: String,
        amount: u64,
        reason: String,
    },
    SetCreditLimit {
        principal_id: String,
        limit: u64,
    },
}

/// CreateClaimV2's fields (boxed in `Command` to keep the enum small).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateClaimV2 {
    pub claim_name: String,
    pub lane: String,
    pub alpha_micros: u32,
    pub epoch_config_ref: String,
    pub output_schema_id: String,
    #[serde(with = "crate::hexbytes")]
    pub semantic_hash: Vec<u8>,
    #[serde(with = "crate::hexbytes")]
    pub phys_hir_signature_hash: Vec<u8>,
    #[serde(with = "crate::hexbytes")]
    pub dependency_merkle_root: Vec<u8>,
    pub holdout_ref: String,
    pub epoch_size: u64,
    pub oracle_num_symbols: u32,
    pub access_credit: u64,
    pub oracle_id: String,
    pub nullspec_id: String,
    pub dp_epsilon_budget: Option<f64>,
    pub dp_delta_budget: Option<f64>,
}

impl CreateClaimV2 {
    /// The plainest claim: fast lane, the legacy single-symbol output, 4 oracle symbols, alpha
    /// 0.05, epoch size 1, 64 access credits, no client signals and the default oracle and
    /// NullSpec. Tests, benchmarks and examples start here and change what they need.
    pub fn fast_legacy(claim_name: impl Into<String>, holdout_ref: impl Into<String>) -> Self {
        Self {
            claim_name: claim_name.into(),
            lane: "fast".into(),
            alpha_micros: 50_000,
            epoch_config_ref: String::new(),
            output_schema_id: "legacy/v1".into(),
            semantic_hash: Vec::new(),
            phys_hir_signature_hash: Vec::new(),
            dependency_merkle_root: Vec::new(),
            holdout_ref: holdout_ref.into(),
            epoch_size: 1,
            oracle_num_symbols: 4,
            access_credit: 64,
            oracle_id: String::new(),
            nullspec_id: String::new(),
            dp_epsilon_budget: None,
            dp_delta_budget: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Query(Query),
    Command(Command),
    /// A command retried safely: the same key and body get the recorded reply (SPEC §2.5).
    IdempotentCommand {
        key: IdempotencyKey,
        command: Command,
    },
}

/// (method, x-request-id) of a request plus SHA-256 of its encoded body; scoped per principal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyKey {
    pub method: String,
    pub request_id: String,
    #[serde(with = "crate::hexbytes")]
    pub body_hash: Vec<u8>,
}

impl IdempotencyKey {
    /// x-request-id: 1..128 printable ASCII without ':' (SPEC §1 field limits).
    pub fn validate(&self) -> Result<(), KernelError> {
        if !crate::validate::is_valid_request_id(&self.request_id) {
            return Err(KernelError::invalid_argument(
                "x-request-id must be 1..128 printable ASCII characters without ':'",
            ));
        }
        if self.body_hash.len() != 32 || !(1..=64).contains(&self.method.len()) {
            return Err(KernelError::invalid_argument("malformed idempotency key"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTreeHead {
    pub tree_size: u64,
    pub root_hash: Hash,
    pub key_id: KeyId,
    pub signature: [u8; 64],
}

#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    PublicKey {
        key_id: KeyId,
        public_key: [u8; 32],
    },
    SignedTreeHead(SignedTreeHead),
    InclusionProof {
        leaf_index: u64,
        tree_size: u64,
        leaf_hash: Hash,
        path: Vec<Hash>,
        root_hash: Hash,
    },
    ConsistencyProof {
        first_tree_size: u64,
        second_tree_size: u64,
        first_root_hash: Hash,
        second_root_hash: Hash,
        path: Vec<Hash>,
    },
    CreditBalance {
        credit_balance: u64,
    },
    ClaimCreated {
        claim_id: Hash,
        topic_id: Hash,
        state: crate::claim::ClaimState,
    },
    ClaimState {
        state: crate::claim::ClaimState,
    },
    Executed(Box<Execution>),
    Capsule {
        capsule: CapsuleBytes,
        capsule_hash: Hash,
        etl_index: u64,
    },
    FetchedCapsule(Box<FetchedCapsule>),
    Revoked {
        state: crate::claim::ClaimState,
        timestamp_unix: u64,
    },
    RevocationFeed(Box<RevocationFeed>),
    LedgerTotals(crate::totals::LedgerTotals),
    EnvironmentReloaded {
        before: crate::environment::EnvironmentCounts,
        after: crate::environment::EnvironmentCounts,
    },
    PoolBudgets {
        holdout_id: String,
        scope: String,
        k_bits_budget: Option<f64>,
        access_credit_budget: Option<f64>,
    },
    CreditLimit {
        credit_limit: u64,
    },
}

/// What ExecuteClaimV2 answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    pub state: crate::claim::ClaimState,
    pub decision: crate::claim::Decision,
    pub reason_codes: Vec<u32>,
    pub canonical_output: Vec<u8>,
    pub e_value: f64,
    pub certified: bool,
    pub capsule_hash: Hash,
    pub etl_index: u64,
}

/// A capsule in a reply. The kernel keeps no capsule bytes: it names the leaf in `etl.log`, and
/// the runtime reads it (`etl::read_capsule`) before the reply leaves the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapsuleBytes {
    InLog(crate::leaf::LeafLocation),
    Read(Vec<u8>),
}

impl CapsuleBytes {
    /// The bytes, once read.
    pub fn as_read(&self) -> Option<&[u8]> {
        match self {
            Self::Read(bytes) => Some(bytes),
            Self::InLog(_) => None,
        }
    }

    /// The bytes, once read.
    pub fn into_read(self) -> Option<Vec<u8>> {
        match self {
            Self::Read(bytes) => Some(bytes),
            Self::InLog(_) => None,
        }
    }
}

/// A capsule with everything needed to verify it against a signed head.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedCapsule {
    pub capsule: CapsuleBytes,
    pub capsule_hash: Hash,
    pub etl_index: u64,
    pub sth: SignedTreeHead,
    pub inclusion_path: Vec<Hash>,
    pub leaf_hash: Hash,
    /// Consistency from size `etl_index + 1` to `sth.tree_size`.
    pub consistency_path: Vec<Hash>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationEntry {
    /// The revoked capsule's hash (SPEC §3: the id the feed signature covers).
    pub capsule_hash: Hash,
    pub timestamp_unix: u64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationFeed {
    pub entries: Vec<RevocationEntry>,
    pub sth: SignedTreeHead,
    pub signature: [u8; 64],
}

impl Command {
    /// Stateless field checks, run before the command is admitted.
    pub fn validate(&self) -> Result<(), KernelError> {
        match self {
            Self::GrantCredit { principal_id, amount, reason } => {
                validate_name("principal_id", principal_id)?;
                validate_reason(reason)?;
                if *amount == 0 {
                    return Err(KernelError::invalid_argument("amount must be positive"));
                }
                Ok(())
            }
            Self::SetCreditLimit { principal_id, .. } => validate_name("principal_id", principal_id),
            // Claim commands are checked in `claims`, next to the state their rules depend on.
            Self::CreateClaim { .. }
            | Self::CreateClaimV2(_)
            | Self::CommitArtifacts { .. }
            | Self::FreezeGates { .. }
            | Self::SealClaim { .. }
            | Self::ExecuteClaimV2 { .. }
            | Self::ExecuteClaim { .. }
            | Self::RevokeClaim { .. }
            | Self::SetHoldoutPoolBudgets { .. }
            | Self::ReloadEnvironment(_) => Ok(()),
        }
    }

    /// Authorization per SPEC §2.4.
    pub fn authorize(&self, principal: &Principal) -> Result<(), KernelError> {
        match self {
            Self::GrantCredit { .. }
            | Self::SetCreditLimit { .. }
            | Self::SetHoldoutPoolBudgets { .. }
            | Self::ReloadEnvironment(_) => {
                if principal.is_operator() {
                    Ok(())
                } else {
                    Err(KernelError::permission_denied("operator role required"))
                }
            }
            // Owner-or-operator rules need the claim: checked in `claims`.
            Self::CreateClaim { .. }
            | Self::CreateClaimV2(_)
            | Self::CommitArtifacts { .. }
            | Self::FreezeGates { .. }
            | Self::SealClaim { .. }
            | Self::ExecuteClaimV2 { .. }
            | Self::ExecuteClaim { .. }
            | Self::RevokeClaim { .. } => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_commands_need_an_operator() {
        let grant = Command::GrantCredit { principal_id: "p".into(), amount: 1, reason: "r".into() };
        assert!(grant.authorize(&Principal::new("op", Role::Operator)).is_ok());
        let err = grant.authorize(&Principal::anonymous()).unwrap_err();
        assert_eq!(err.code, crate::error::ErrorCode::PermissionDenied);
    }

    #[test]
    fn command_journal_shape_is_stable() {
        let grant = Command::GrantCredit { principal_id: "p".into(), amount: 5, reason: "r".into() };
        assert_eq!(
            String::from_utf8(crate::canonical::to_vec(&grant).unwrap()).unwrap(),
            r#"{"amount":5,"principal_id":"p","reason":"r","type":"grant_credit"}"#
        );
    }
}
