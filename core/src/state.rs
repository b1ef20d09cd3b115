//! The kernel's durable state machine: what a checkpoint holds and what replaying the journal
//! rebuilds. `apply` is the single place a command changes state; it is all-or-nothing.

use serde::{Deserialize, Serialize};

use crate::claims::Applied;
use crate::error::KernelError;
use crate::ids::{ClaimId, TopicId};
use crate::io::Timestamp;
use crate::request::{Command, IdempotencyKey, Principal, Response};
use crate::table::Table;

fn idempotency_slot(principal: &Principal, key: &IdempotencyKey) -> String {
    format!("{}\n{}\n{}", principal.id, key.method, key.request_id)
}

/// Settings that change what a command does. They are written into every journal header, so
/// replay uses the values in force when a command was accepted, whatever the new flags say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// When set, principal credit is enforced and new principals start with balance = limit = N.
    pub default_credit_limit: Option<u64>,
    /// Most of a shared holdout pool's budget (percent, 1..=100) one principal's open
    /// reservations may total (SPEC §5.3). Journal headers written before this setting existed
    /// lack it and replay without a cap (100), as those commands were accepted.
    #[serde(default = "no_share_cap")]
    pub max_principal_reservation_share_percent: u8,
}

/// The daemon's default share: four principals are needed to fill a shared pool.
pub const DEFAULT_MAX_PRINCIPAL_RESERVATION_SHARE_PERCENT: u8 = 25;

fn no_share_cap() -> u8 {
    100
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            default_credit_limit: None,
            max_principal_reservation_share_percent: DEFAULT_MAX_PRINCIPAL_RESERVATION_SHARE_PERCENT,
        }
    }
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

/// Idempotency records kept; the oldest is forgotten first (deterministically, by admission).
pub const MAX_IDEMPOTENCY_RECORDS: usize = 100_000;

/// A successful reply kept for safe retries (SPEC §2.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RecordedReply {
    ClaimCreated {
        #[serde(rename = "claim_id_hex")]
        claim_id: ClaimId,
        #[serde(rename = "topic_id_hex")]
        topic_id: TopicId,
        state: crate::claim::ClaimState,
    },
    Executed(crate::request::Execution),
    Revoked {
        state: crate::claim::ClaimState,
        timestamp_unix: u64,
    },
}

impl RecordedReply {
    fn of(response: &Response) -> Option<Self> {
        match response {
            Response::ClaimCreated { claim_id, topic_id, state } => {
                Some(Self::ClaimCreated { claim_id: ClaimId(*claim_id), topic_id: TopicId(*topic_id), state: *state })
            }
            Response::Executed(execution) => Some(Self::Executed((**execution).clone())),
            Response::Revoked { state, timestamp_unix } => {
                Some(Self::Revoked { state: *state, timestamp_unix: *timestamp_unix })
            }
            _ => None,
        }
    }

    fn response(&self) -> Response {
        match self {
            Self::ClaimCreated { claim_id, topic_id, state } => {
                Response::ClaimCreated { claim_id: claim_id.0, topic_id: topic_id.0, state: *state }
            }
            Self::Executed(execution) => Response::Executed(Box::new(execution.clone())),
            Self::Revoked { state, timestamp_unix } => {
                Response::Revoked { state: *state, timestamp_unix: *timestamp_unix }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub body_hash_hex: String,
    pub reply: RecordedReply,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub credits: Table<String, CreditAccount>,
    // Defaults let checkpoints from before claims existed load unchanged.
    #[serde(default)]
    pub claims: crate::claims::Claims,
    /// "principal\nmethod\nrequest id" → recorded success.
    #[serde(default)]
    pub idempotency: Table<String, IdempotencyRecord>,
    /// Keys of `idempotency` by admission number, for bounded eviction (oldest first). Whole-state
    /// checkpoints (v1, v2) kept it as a list in admission order.
    #[serde(default, with = "admission_list")]
    pub idempotency_order: Table<u64, String>,
}

impl State {
    /// Asserts the state's bounds and indexes. Walks everything: callers run it in debug builds.
    pub fn check_invariants(&self) {
        assert!(self.credits.len() <= MAX_CREDIT_ACCOUNTS, "more than {MAX_CREDIT_ACCOUNTS} credit accounts");
        assert!(self.idempotency.len() <= MAX_IDEMPOTENCY_RECORDS, "idempotency records over their limit");
        assert_eq!(self.idempotency.len(), self.idempotency_order.len(), "idempotency order out of step");
        assert!(
            self.idempotency_order.values().all(|slot| self.idempotency.contains_key(slot)),
            "unknown slot in order"
        );
        self.claims.check_invariants();
    }

    /// A retry's answer if `key` was seen: the recorded reply for the same body, ALREADY_EXISTS
    /// for a different one. `None`: first time (or forgotten), apply it.
    pub fn recorded_reply(&self, principal: &Principal, key: &IdempotencyKey) -> Option<Result<Response, KernelError>> {
        let record = self.idempotency.get(&idempotency_slot(principal, key))?;
        if record.body_hash_hex == hex::encode(&key.body_hash) {
            Some(Ok(record.reply.response()))
        } else {
            Some(Err(KernelError::new(
                crate::error::ErrorCode::AlreadyExists,
                "x-request-id was already used with a different request body",
            )))
        }
    }

    /// Applies a command and, when it carries an idempotency key and succeeds, records the
    /// reply. The one path for admission and replay, so records survive restart.
    #[allow(clippy::too_many_arguments)]
    pub fn apply_command(
        &mut self,
        env: &crate::environment::Environment,
        policy: &Policy,
        principal: &Principal,
        now: Timestamp,
        command: &Command,
        key: Option<&IdempotencyKey>,
        next_leaf_index: u64,
    ) -> Result<Applied, KernelError> {
        let applied = self.apply(env, policy, principal, now, command, next_leaf_index)?;
        if let (Some(key), Ok(response)) = (key, &applied.response)
            && let Some(reply) = RecordedReply::of(response)
        {
            let slot = idempotency_slot(principal, key);
            let record = IdempotencyRecord { body_hash_hex: hex::encode(&key.body_hash), reply };
            self.remember(slot, record, MAX_IDEMPOTENCY_RECORDS);
        }
        Ok(applied)
    }

    /// Records a reply under `slot`, forgetting the oldest records beyond `limit`.
    fn remember(&mut self, slot: String, record: IdempotencyRecord, limit: usize) {
        if self.idempotency.insert(slot.clone(), record).is_none() {
            let admission = self.idempotency_order.last_key().map_or(0, |last| last + 1);
            self.idempotency_order.insert(admission, slot);
        }
        while self.idempotency_order.len() > limit {
            let oldest = *self.idempotency_order.first_key().expect("non-empty");
            let slot = self.idempotency_order.remove(&oldest).expect("present");
            self.idempotency.remove(&slot);
        }
    }

    /// Applies `command` or leaves the state untouched and says why not.
    /// `next_leaf_index` is the ETL index the first leaf of this command will get.
    pub fn apply(
        &mut self,
        env: &crate::environment::Environment,
        policy: &Policy,
        principal: &Principal,
        now: Timestamp,
        command: &Command,
        next_leaf_index: u64,
    ) -> Result<Applied, KernelError> {
        let share = policy.max_principal_reservation_share_percent;
        let cx = crate::claims::Context {
            env,
            max_principal_share_percent: share,
            principal,
            now,
            next_leaf_index,
            credit_balance: None,
        };
        let claims = &mut self.claims;
        match command {
            Command::CreateClaim {
                topic_id,
                holdout_handle_id,
                phys_hir_hash,
                epoch_size,
                oracle_num_symbols,
                alpha,
                access_credit,
            } => claims.create_v1(
                &cx,
                topic_id,
                holdout_handle_id,
                phys_hir_hash,
                *epoch_size,
                *oracle_num_symbols,
                *alpha,
                *access_credit,
            ),
            Command::CreateClaimV2(request) => claims.create_v2(&cx, request),
            Command::CommitArtifacts { claim_id, artifacts, wasm_module } => {
                claims.commit(&cx, claim_id, artifacts, wasm_module)
            }
            // SealClaim freezes a COMMITTED claim in one step; a SEALED one stays SEALED.
            Command::FreezeGates { claim_id } | Command::SealClaim { claim_id } => claims.freeze(&cx, claim_id),
            Command::ExecuteClaimV2 { claim_id } => {
                // Credit is enforced only with a default limit (SPEC §5.3).
                let account = match policy.default_credit_limit {
                    Some(_) => Some(self.account(policy, &principal.id)?),
                    None => None,
                };
                let cx = crate::claims::Context { credit_balance: account.as_ref().map(|a| a.balance), ..cx };
                let (applied, credit_used) = self.claims.execute(&cx, claim_id)?;
                if let Some(mut account) = account {
                    account.balance = account.balance.saturating_sub(credit_used);
                    self.credits.insert(principal.id.clone(), account);
                }
                Ok(applied)
            }
            Command::ExecuteClaim { claim_id, decision, reason_codes, canonical_output } => {
                claims.execute_client_decided(&cx, claim_id, *decision, reason_codes, canonical_output)
            }
            Command::RevokeClaim { claim_id, reason } => claims.revoke(&cx, claim_id, reason),
            // The kernel swaps its environment once this is accepted; the only state it changes
            // is canaries reset by signed governance events the new environment carries.
            Command::ReloadEnvironment(new) => {
                if new.epoch < env.epoch {
                    return Err(KernelError::new(
                        crate::error::ErrorCode::FailedPrecondition,
                        format!("epoch_control.json would move the epoch back from {} to {}", env.epoch, new.epoch),
                    ));
                }
                claims.apply_canary_resets(&new.canary_resets);
                Ok(Applied::reply(Response::EnvironmentReloaded { before: env.counts(), after: new.counts() }))
            }
            Command::SetHoldoutPoolBudgets { holdout_id, scope, k_bits_budget, access_credit_budget } => {
                claims.set_pool_budgets(env, holdout_id, scope, *k_bits_budget, *access_credit_budget)
            }
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
                Ok(Applied::reply(Response::CreditBalance { credit_balance: balance }))
            }
            Command::SetCreditLimit { principal_id, limit } => {
                let account = self.account(policy, principal_id)?;
                let balance = account.balance.min(*limit);
                self.credits.insert(principal_id.clone(), CreditAccount { balance, limit: Some(*limit) });
                Ok(Applied::reply(Response::CreditLimit { credit_limit: *limit }))
            }
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

/// `idempotency_order` as whole-state checkpoints (v1, v2) wrote it: the slots in admission
/// order, numbered from 0 when read back.
mod admission_list {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::table::Table;

    pub(super) fn serialize<S: Serializer>(order: &Table<u64, String>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(order.values())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Table<u64, String>, D::Error> {
        let slots = Vec::<String>::deserialize(deserializer)?;
        let mut order = Table::default();
        for (admission, slot) in slots.into_iter().enumerate() {
            // Inserted, so marked changed: the first v3 checkpoint writes every entry.
            order.insert(admission as u64, slot);
        }
        Ok(order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_creates_keep_their_hex_fields() {
        let stored = format!(
            r#"{{"kind":"claim_created","claim_id_hex":"{}","topic_id_hex":"{}","state":"UNCOMMITTED"}}"#,
            "ab".repeat(32),
            "0c".repeat(32)
        );
        let reply: RecordedReply = serde_json::from_str(&stored).unwrap();
        assert_eq!(serde_json::to_string(&reply).unwrap(), stored);
        let Response::ClaimCreated { claim_id, topic_id, .. } = reply.response() else { panic!("a create") };
        assert_eq!((claim_id, topic_id), ([0xab; 32], [0x0c; 32]));
    }

    use crate::environment::Environment;
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
        let applied = state.apply(&Environment::default(), &policy, &operator(), Timestamp(0), &grant(5), 0).unwrap();
        assert_eq!(applied.response, Ok(Response::CreditBalance { credit_balance: 5 }));
        let limit = Command::SetCreditLimit { principal_id: "agent".into(), limit: 7 };
        state.apply(&Environment::default(), &policy, &operator(), Timestamp(0), &limit, 0).unwrap();
        let before = state.clone();
        let err = state.apply(&Environment::default(), &policy, &operator(), Timestamp(0), &grant(3), 0).unwrap_err();
        assert_eq!(err.code, ErrorCode::ResourceExhausted);
        assert_eq!(state, before, "a refused command changes nothing");
        let applied = state.apply(&Environment::default(), &policy, &operator(), Timestamp(0), &grant(2), 0).unwrap();
        assert_eq!(applied.response, Ok(Response::CreditBalance { credit_balance: 7 }));
    }

    #[test]
    fn lowering_the_limit_clamps_the_balance() {
        let mut state = State::default();
        let policy = Policy::default();
        state.apply(&Environment::default(), &policy, &operator(), Timestamp(0), &grant(10), 0).unwrap();
        let limit = Command::SetCreditLimit { principal_id: "agent".into(), limit: 4 };
        state.apply(&Environment::default(), &policy, &operator(), Timestamp(0), &limit, 0).unwrap();
        assert_eq!(state.credits["agent"], CreditAccount { balance: 4, limit: Some(4) });
    }

    #[test]
    fn new_accounts_open_under_the_default_limit() {
        let mut state = State::default();
        let policy = Policy { default_credit_limit: Some(100), ..Policy::default() };
        let err = state.apply(&Environment::default(), &policy, &operator(), Timestamp(0), &grant(1), 0).unwrap_err();
        assert_eq!(err.code, ErrorCode::ResourceExhausted, "starts full: balance = limit = 100");
        assert!(state.credits.is_empty());
    }

    #[test]
    fn checkpoints_from_before_claims_still_load() {
        let old = r#"{"credits":{"agent":{"balance":3,"limit":null}}}"#;
        let state: State = serde_json::from_str(old).unwrap();
        assert_eq!(state.credits["agent"].balance, 3);
        assert!(state.claims.claims.is_empty());
    }

    #[test]
    fn journal_headers_from_before_the_share_replay_without_a_cap() {
        let old: Policy = serde_json::from_str(r#"{"default_credit_limit":null}"#).unwrap();
        assert_eq!(old.max_principal_reservation_share_percent, 100);
        assert_eq!(Policy::default().max_principal_reservation_share_percent, 25);
    }

    #[test]
    fn the_oldest_idempotency_records_are_forgotten_first_and_a_repeat_keeps_its_place() {
        let mut state = State::default();
        let record = |n| IdempotencyRecord {
            body_hash_hex: format!("{n:064x}"),
            reply: RecordedReply::Revoked { state: crate::claim::ClaimState::Revoked, timestamp_unix: n },
        };
        state.remember("a".into(), record(1), 2);
        state.remember("b".into(), record(2), 2);
        state.remember("a".into(), record(3), 2);
        state.remember("c".into(), record(4), 2);
        assert!(state.idempotency.get("a").is_none(), "the oldest admission goes first");
        assert_eq!(state.idempotency_order.values().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(state.idempotency_order.keys().copied().collect::<Vec<_>>(), [1, 2]);
        state.check_invariants();
    }

    #[test]
    fn whole_state_checkpoints_list_the_idempotency_order() {
        let mut state = State::default();
        state.idempotency_order.insert(7, "x".into());
        state.idempotency_order.insert(9, "y".into());
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(json["idempotency_order"], serde_json::json!(["x", "y"]));
        let back: State = serde_json::from_value(json).unwrap();
        assert_eq!(back.idempotency_order.iter().collect::<Vec<_>>(), [(&0, &"x".to_string()), (&1, &"y".to_string())]);
    }

    #[test]
    fn overflow_is_refused() {
        let mut state = State::default();
        let policy = Policy::default();
        state.apply(&Environment::default(), &policy, &operator(), Timestamp(0), &grant(u64::MAX), 0).unwrap();
        assert!(state.apply(&Environment::default(), &policy, &operator(), Timestamp(0), &grant(1), 0).is_err());
    }
}
