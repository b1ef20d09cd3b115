//! What callers ask of the kernel. Queries read durable state and are answered at once;
//! commands change state, are journaled, and are answered only once durable.
//! Field-shape validation lives here, next to the types, so every runtime shares one rule.

use serde::{Deserialize, Serialize};

use crate::error::KernelError;
use crate::hash::Hash;
use crate::keys::KeyId;

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
}

/// A state change. Exactly these values are written to the journal, so their serde shape is a
/// storage format: add variants, never change existing ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    GrantCredit {
        principal_id: String,
        amount: u64,
        reason: String,
    },
    SetCreditLimit {
        principal_id: String,
        limit: u64,
    },
    /// Appends `payload` as an ETL leaf; see the `test-commands` feature.
    #[cfg(any(test, feature = "test-commands"))]
    TestLeaf {
        payload: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Query(Query),
    Command(Command),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTreeHead {
    pub tree_size: u64,
    pub root_hash: Hash,
    pub key_id: KeyId,
    pub signature: [u8; 64],
}

#[derive(Debug, Clone, PartialEq, Eq)]
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
    CreditLimit {
        credit_limit: u64,
    },
    #[cfg(any(test, feature = "test-commands"))]
    LeafAppended {
        etl_index: u64,
    },
}

/// Names and refs: 1..128 chars of `[A-Za-z0-9._:/-]` (SPEC §1 field limits).
pub fn validate_name(field: &str, value: &str) -> Result<(), KernelError> {
    let ok =
        (1..=128).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(KernelError::invalid_argument(format!("{field} must be 1..128 chars of [A-Za-z0-9._:/-]")))
    }
}

/// Reasons: 1..256 bytes of printable text.
pub fn validate_reason(value: &str) -> Result<(), KernelError> {
    let ok = (1..=256).contains(&value.len()) && !value.chars().any(char::is_control);
    if ok { Ok(()) } else { Err(KernelError::invalid_argument("reason must be 1..256 printable characters")) }
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
            #[cfg(any(test, feature = "test-commands"))]
            Self::TestLeaf { payload } => {
                if payload.is_empty() || payload.len() > 4096 {
                    return Err(KernelError::invalid_argument("test leaf payload must be 1..4096 bytes"));
                }
                Ok(())
            }
        }
    }

    /// Authorization per SPEC §2.4.
    pub fn authorize(&self, principal: &Principal) -> Result<(), KernelError> {
        match self {
            Self::GrantCredit { .. } | Self::SetCreditLimit { .. } => {
                if principal.is_operator() {
                    Ok(())
                } else {
                    Err(KernelError::permission_denied("operator role required"))
                }
            }
            #[cfg(any(test, feature = "test-commands"))]
            Self::TestLeaf { .. } => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec_charset() {
        assert!(validate_name("x", "bearer:ab12/._-").is_ok());
        assert!(validate_name("x", "").is_err());
        assert!(validate_name("x", &"a".repeat(129)).is_err());
        assert!(validate_name("x", "has space").is_err());
    }

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
