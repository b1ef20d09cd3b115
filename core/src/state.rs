//! The kernel's durable state machine: what a checkpoint holds and what replaying the journal
//! rebuilds. `apply` is the single place a command changes state; it is all-or-nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::KernelError;
use crate::io::Timestamp;
use crate::request::{Command, Principal, Response};

/// Settings that change what a command does. They are written into every journal header, so
/// replay uses the values in force when a command was accepted, whatever the new flags say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// When set, principal credit is enforced and new principals start with balance = limit = N.
    pub default_credit_limit: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditAccount {
    pub balance: u64,
    pub limit: Option<u64>,
}

impl CreditAccount {
    fn opened_under(policy: &Policy) -> Self {
        match policy.default_credit_limit {
            Some(limit) => Self { balance: limit, limit: Some(limit) },
            None => Self::default(),
        }
    }
}

/// Limits on state size (TigerBeetle style: every collection has a bound).
pub const MAX_CREDIT_ACCOUNTS: usize = 1_000_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub credits: BTreeMap<String, CreditAccount>,
}

/// What an accepted command produced: its reply and the ETL leaves it appends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub response: Response,
    pub leaves: Vec<Vec<u8>>,
}

impl State {
    /// Applies `command` or leaves the state untouched and says why not.
    /// `next_leaf_index` is the ETL index the first leaf of this command will get.
    pub fn apply(
        &mut self,
        policy: &Policy,
        _principal: &Principal,
        _now: Timestamp,
        command: &Command,
        next_leaf_index: u64,
    ) -> Result<Applied, KernelError> {
        let _ = next_leaf_index;
        match command {
            Command::GrantCredit { principal_id, amount, .. } => {
                let account = self.account(policy, principal_id)?;
                let balance = account
                    .balance
                    .checked_add(*amount)
                    .ok_or_else(|| KernelError::resource_exhausted("credit balance would overflow"))?;
                if account.limit.is_some_and(|limit| balance > limit) {
                    return Err(KernelError::resource_exhausted("grant exceeds the principal's credit limit"));
                }
                self.credits.insert(principal_id.clone(), CreditAccount { balance, ..account });
                Ok(Applied { response: Response::CreditBalance { credit_balance: balance }, leaves: vec![] })
            }
            Command::SetCreditLimit { principal_id, limit } => {
                let account = self.account(policy, principal_id)?;
                let balance = account.balance.min(*limit);
                self.credits.insert(principal_id.clone(), CreditAccount { balance, limit: Some(*limit) });
                Ok(Applied { response: Response::CreditLimit { credit_limit: *limit }, leaves: vec![] })
            }
            #[cfg(any(test, feature = "test-commands"))]
            Command::TestLeaf { payload } => Ok(Applied {
                response: Response::LeafAppended { etl_index: next_leaf_index },
                leaves: vec![payload.as_bytes().to_vec()],
            }),
        }
    }

    /// The account of `principal_id`, opened under `policy` if new (not yet inserted).
    fn account(&self, policy: &Policy, principal_id: &str) -> Result<CreditAccount, KernelError> {
        match self.credits.get(principal_id) {
            Some(account) => Ok(account.clone()),
            None if self.credits.len() >= MAX_CREDIT_ACCOUNTS => {
                Err(KernelError::resource_exhausted("too many credit accounts"))
            }
            None => Ok(CreditAccount::opened_under(policy)),
        }
    }
}

pub const CHECKPOINT_FORMAT: &str = "evidenceos.checkpoint.v1";

/// `state.json`: the state after journal record `journal_seq`, and the ETL prefix it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub format: String,
    pub kernel_version: String,
    pub journal_seq: u64,
    pub tree_size: u64,
    /// Root of the first `tree_size` leaves, so recovery detects a log that changed under it.
    pub root_hash_hex: String,
    pub state: State,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::request::Role;

    fn operator() -> Principal {
        Principal::new("op", Role::Operator)
    }

    fn grant(amount: u64) -> Command {
        Command::GrantCredit { principal_id: "agent".into(), amount, reason: "test".into() }
    }

    #[test]
    fn grants_accumulate_and_respect_the_limit() {
        let mut state = State::default();
        let policy = Policy::default();
        let applied = state.apply(&policy, &operator(), Timestamp(0), &grant(5), 0).unwrap();
        assert_eq!(applied.response, Response::CreditBalance { credit_balance: 5 });
        let limit = Command::SetCreditLimit { principal_id: "agent".into(), limit: 7 };
        state.apply(&policy, &operator(), Timestamp(0), &limit, 0).unwrap();
        let before = state.clone();
        let err = state.apply(&policy, &operator(), Timestamp(0), &grant(3), 0).unwrap_err();
        assert_eq!(err.code, ErrorCode::ResourceExhausted);
        assert_eq!(state, before, "a refused command changes nothing");
        let applied = state.apply(&policy, &operator(), Timestamp(0), &grant(2), 0).unwrap();
        assert_eq!(applied.response, Response::CreditBalance { credit_balance: 7 });
    }

    #[test]
    fn lowering_the_limit_clamps_the_balance() {
        let mut state = State::default();
        let policy = Policy::default();
        state.apply(&policy, &operator(), Timestamp(0), &grant(10), 0).unwrap();
        let limit = Command::SetCreditLimit { principal_id: "agent".into(), limit: 4 };
        state.apply(&policy, &operator(), Timestamp(0), &limit, 0).unwrap();
        assert_eq!(state.credits["agent"], CreditAccount { balance: 4, limit: Some(4) });
    }

    #[test]
    fn new_accounts_open_under_the_default_limit() {
        let mut state = State::default();
        let policy = Policy { default_credit_limit: Some(100) };
        let err = state.apply(&policy, &operator(), Timestamp(0), &grant(1), 0).unwrap_err();
        assert_eq!(err.code, ErrorCode::ResourceExhausted, "starts full: balance = limit = 100");
        assert!(state.credits.is_empty());
    }

    #[test]
    fn overflow_is_refused() {
        let mut state = State::default();
        let policy = Policy::default();
        state.apply(&policy, &operator(), Timestamp(0), &grant(u64::MAX), 0).unwrap();
        assert!(state.apply(&policy, &operator(), Timestamp(0), &grant(1), 0).is_err());
    }
}
