//! Shared budgets (SPEC §5.3): topic pools and holdout pools. A claim reserves its worst case
//! when created, settles its actual charge when executed and releases the rest. Reservations
//! expire by time, judged with the `now` of the command that looks, so replay agrees.
//! A reservation that does not fit is refused without touching the pool: one oversized request
//! must not deny service to everyone else.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, KernelError};
use crate::ids::ClaimId;

pub const DEFAULT_POOL_K_BITS: f64 = 1024.0;
pub const DEFAULT_POOL_ACCESS_CREDIT: f64 = 1024.0;
pub const DEFAULT_RESERVATION_TTL_MS: u64 = 600_000;
/// Most open reservations one pool tracks.
pub const MAX_RESERVATIONS_PER_POOL: usize = 65_536;

/// The key of a holdout pool: `global/<holdout ref>`, the pool every principal draws on, or
/// `principal/<holdout ref>/<principal id>`, one principal's own. Stored as that text, so
/// checkpoints and map order are those of the string; built only by the constructors below.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PoolKey(String);

const GLOBAL_PREFIX: &str = "global/";
const PRINCIPAL_PREFIX: &str = "principal/";

impl PoolKey {
    pub fn global(holdout_ref: &str) -> Self {
        Self(format!("{GLOBAL_PREFIX}{holdout_ref}"))
    }

    pub fn principal(holdout_ref: &str, principal: &str) -> Self {
        Self(format!("{PRINCIPAL_PREFIX}{holdout_ref}/{principal}"))
    }

    /// The shared (global) pool, whose principals are held to a share of it.
    pub fn is_shared(&self) -> bool {
        self.0.starts_with(GLOBAL_PREFIX)
    }

    /// The holdout ref the key names: the text up to the first `/` after the prefix.
    pub fn holdout_ref(&self) -> &str {
        let rest = self.0.strip_prefix(GLOBAL_PREFIX).or_else(|| self.0.strip_prefix(PRINCIPAL_PREFIX));
        let rest = rest.unwrap_or(&self.0);
        rest.split('/').next().unwrap_or(rest)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lookups by the stored text (`pools["global/demo"]`): sound because `Eq`, `Ord` and `Hash`
/// are those of the string.
impl std::borrow::Borrow<str> for PoolKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    pub amount: f64,
    pub expires_at_ms: u64,
    /// Who holds it, for the per-principal share. Empty in checkpoints from before the share
    /// existed: such reservations count against nobody's share.
    #[serde(default)]
    pub principal: String,
}

impl Reservation {
    pub fn is_active(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    pub k_bits_budget: f64,
    pub access_credit_budget: f64,
    pub k_bits_settled: f64,
    pub access_credit_settled: f64,
    /// Open reservations by claim id.
    pub reservations: BTreeMap<ClaimId, Reservation>,
    /// Reservations that ran out unused and were pruned (the rest of the expiries are the
    /// expired entries still in `reservations`): see [`Pool::expired_total`].
    #[serde(default)]
    pub expired_pruned: u64,
}

/// Who asks for a reservation and how much of the pool one principal may hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Holder<'a> {
    pub claim: ClaimId,
    pub principal: &'a str,
    /// Most k-bits this principal's open reservations may total in this pool; `None` when the
    /// pool is the principal's own (a per-principal pool) or no share is configured.
    pub share_cap: Option<f64>,
}

impl Pool {
    /// Asserts the pool's bounds: settled amounts within budget (up to rounding of the sums),
    /// reservations finite, non-negative and no more than the pool tracks.
    pub fn check_invariants(&self) {
        assert!(self.reservations.len() <= MAX_RESERVATIONS_PER_POOL, "pool tracks too many reservations");
        assert!(self.reservations.values().all(|r| r.amount.is_finite() && r.amount >= 0.0), "bad reservation amount");
        for (settled, budget) in
            [(self.k_bits_settled, self.k_bits_budget), (self.access_credit_settled, self.access_credit_budget)]
        {
            let slack = budget.abs() * 1e-9 + f64::EPSILON;
            assert!(settled >= 0.0 && settled <= budget + slack, "pool settled {settled} beyond its budget {budget}");
        }
    }

    pub fn new(k_bits_budget: f64, access_credit_budget: f64) -> Self {
        Self {
            k_bits_budget,
            access_credit_budget,
            k_bits_settled: 0.0,
            access_credit_settled: 0.0,
            reservations: BTreeMap::new(),
            expired_pruned: 0,
        }
    }

    /// The cap a share of `percent` puts on one principal's reservations in this pool.
    pub fn share_cap(&self, percent: u8) -> Option<f64> {
        (percent < 100).then(|| self.k_bits_budget.min(self.access_credit_budget) * f64::from(percent) / 100.0)
    }

    /// Open (unexpired) reservations at `now_ms`.
    pub fn active_reservations(&self, now_ms: u64) -> usize {
        self.reservations.values().filter(|r| r.is_active(now_ms)).count()
    }

    /// Reservations that expired unused, up to `now_ms`. Monotonic in `now_ms`: an expired entry
    /// moves from `reservations` to `expired_pruned` when it is pruned.
    pub fn expired_total(&self, now_ms: u64) -> u64 {
        let waiting = self.reservations.values().filter(|r| !r.is_active(now_ms)).count() as u64;
        self.expired_pruned + waiting
    }

    fn reserved_by(&self, principal: &str, now_ms: u64, except: ClaimId) -> f64 {
        self.reservations
            .iter()
            .filter(|(claim, r)| r.is_active(now_ms) && **claim != except && r.principal == principal)
            .map(|(_, r)| r.amount)
            .sum()
    }

    fn reserved(&self, now_ms: u64, except: Option<ClaimId>) -> f64 {
        self.reservations
            .iter()
            .filter(|(claim, r)| r.is_active(now_ms) && Some(**claim) != except)
            .map(|(_, r)| r.amount)
            .sum()
    }

    /// Budget left for new reservations at `now_ms`, in each dimension.
    pub fn available(&self, now_ms: u64) -> (f64, f64) {
        let reserved = self.reserved(now_ms, None);
        (
            self.k_bits_budget - self.k_bits_settled - reserved,
            self.access_credit_budget - self.access_credit_settled - reserved,
        )
    }

    /// Checks that `holder` could reserve `amount` (replacing any reservation its claim holds).
    /// A principal holding nothing may always reserve what fits the pool, so a pool smaller than
    /// one reservation divided by the share still serves one claim at a time.
    pub fn check_reserve(&self, holder: &Holder<'_>, amount: f64, now_ms: u64) -> Result<(), KernelError> {
        let claim = holder.claim;
        let reserved = self.reserved(now_ms, Some(claim));
        let fits = self.k_bits_settled + reserved + amount <= self.k_bits_budget + f64::EPSILON
            && self.access_credit_settled + reserved + amount <= self.access_credit_budget + f64::EPSILON;
        if !fits {
            return Err(KernelError::new(
                ErrorCode::FailedPrecondition,
                "reservation does not fit the remaining pool budget",
            ));
        }
        if let Some(cap) = holder.share_cap {
            let held = self.reserved_by(holder.principal, now_ms, claim);
            if held > 0.0 && held + amount > cap + f64::EPSILON {
                return Err(KernelError::resource_exhausted(
                    "reservation would exceed this principal's share of the pool",
                ));
            }
        }
        if !self.reservations.contains_key(&claim) && self.reservations.len() >= MAX_RESERVATIONS_PER_POOL {
            return Err(KernelError::resource_exhausted("too many open reservations in this pool"));
        }
        Ok(())
    }

    /// Records a reservation; call `check_reserve` first. Expired reservations are pruned.
    pub fn reserve(&mut self, holder: &Holder<'_>, amount: f64, now_ms: u64, ttl_ms: u64) {
        let before = self.reservations.len();
        self.reservations.retain(|_, r| r.is_active(now_ms));
        self.expired_pruned += (before - self.reservations.len()) as u64;
        let reservation = Reservation {
            amount,
            expires_at_ms: now_ms.saturating_add(ttl_ms),
            principal: holder.principal.to_string(),
        };
        self.reservations.insert(holder.claim, reservation);
    }

    /// Settles an actual charge and releases what remains of the claim's reservation. A
    /// reservation that had already expired counts as expired.
    pub fn settle(&mut self, claim: &ClaimId, k_bits: f64, access_credit: f64, now_ms: u64) {
        if self.reservations.remove(claim).is_some_and(|r| !r.is_active(now_ms)) {
            self.expired_pruned += 1;
        }
        self.k_bits_settled += k_bits;
        self.access_credit_settled += access_credit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A claim id named for readability.
    fn id(name: &str) -> ClaimId {
        ClaimId(crate::hash::sha256(name.as_bytes()))
    }

    fn holder(claim: &str) -> Holder<'static> {
        Holder { claim: id(claim), principal: "agent", share_cap: None }
    }

    #[test]
    fn an_oversized_reservation_is_refused_and_the_pool_stays_usable() {
        let mut pool = Pool::new(100.0, 100.0);
        let err = pool.check_reserve(&holder("big"), 101.0, 0).unwrap_err();
        assert_eq!(err.code, ErrorCode::FailedPrecondition);
        assert_eq!(pool.available(0), (100.0, 100.0));
        pool.check_reserve(&holder("small"), 60.0, 0).unwrap();
        pool.reserve(&holder("small"), 60.0, 0, 1000);
        assert!(pool.check_reserve(&holder("other"), 50.0, 10).is_err());
        assert!(pool.check_reserve(&holder("other"), 40.0, 10).is_ok());
    }

    #[test]
    fn expired_reservations_stop_counting() {
        let mut pool = Pool::new(100.0, 100.0);
        pool.reserve(&holder("a"), 80.0, 0, 1000);
        assert!(pool.check_reserve(&holder("b"), 30.0, 999).is_err());
        assert!(pool.check_reserve(&holder("b"), 30.0, 1000).is_ok());
        assert_eq!((pool.active_reservations(999), pool.expired_total(999)), (1, 0));
        assert_eq!((pool.active_reservations(1000), pool.expired_total(1000)), (0, 1));
        pool.reserve(&holder("b"), 30.0, 1000, 1000);
        assert_eq!(pool.expired_total(1000), 1, "pruning keeps the count");
        assert_eq!(pool.expired_pruned, 1);
    }

    #[test]
    fn one_principal_holds_at_most_its_share_and_others_still_get_in() {
        let mut pool = Pool::new(1024.0, 1024.0);
        let cap = pool.share_cap(25);
        assert_eq!(cap, Some(256.0));
        assert_eq!(pool.share_cap(100), None);
        let greedy = |claim| Holder { claim: id(claim), principal: "greedy", share_cap: cap };
        for claim in ["g1", "g2"] {
            pool.check_reserve(&greedy(claim), 128.0, 0).unwrap();
            pool.reserve(&greedy(claim), 128.0, 0, 1000);
        }
        let err = pool.check_reserve(&greedy("g3"), 128.0, 0).unwrap_err();
        assert_eq!(err.code, ErrorCode::ResourceExhausted);
        assert_eq!(err.message, "reservation would exceed this principal's share of the pool");
        let other = Holder { claim: id("o1"), principal: "other", share_cap: cap };
        pool.check_reserve(&other, 128.0, 0).unwrap();
        // Renewing a reservation the principal already holds does not count it twice.
        pool.check_reserve(&greedy("g2"), 128.0, 0).unwrap();
    }

    #[test]
    fn pools_from_older_checkpoints_load_and_their_reservations_count_against_no_share() {
        let old = r#"{"k_bits_budget":256.0,"access_credit_budget":256.0,"k_bits_settled":0.0,"access_credit_settled":0.0,"reservations":{"ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb":{"amount":128.0,"expires_at_ms":1000}}}"#;
        let pool: Pool = serde_json::from_str(old).unwrap();
        assert_eq!((pool.reservations[&id("a")].principal.as_str(), pool.expired_pruned), ("", 0));
        let holder = Holder { claim: id("b"), principal: "p", share_cap: pool.share_cap(25) };
        pool.check_reserve(&holder, 64.0, 0).unwrap();
    }

    #[test]
    fn a_first_reservation_larger_than_the_share_is_allowed_when_it_fits() {
        let pool = Pool::new(128.0, 128.0);
        let holder = Holder { claim: id("a"), principal: "p", share_cap: pool.share_cap(25) };
        pool.check_reserve(&holder, 128.0, 0).unwrap();
    }

    #[test]
    fn settling_releases_the_unused_part() {
        let mut pool = Pool::new(100.0, 100.0);
        pool.reserve(&holder("a"), 64.0, 0, 1000);
        pool.settle(&id("a"), 4.0, 4.0, 1);
        assert_eq!(pool.available(1), (96.0, 96.0));
        assert!(pool.reservations.is_empty());
    }

    #[test]
    #[should_panic(expected = "beyond its budget")]
    fn invariants_catch_a_pool_settled_beyond_its_budget() {
        let mut pool = Pool::new(10.0, 10.0);
        pool.settle(&id("c"), 10.0, 10.0, 0);
        pool.check_invariants();
        pool.settle(&id("c"), 1.0, 0.0, 0);
        pool.check_invariants();
    }

    #[test]
    fn pool_keys_keep_their_stored_text_and_name_their_holdout() {
        let global = PoolKey::global("demo");
        let personal = PoolKey::principal("demo", "bearer:ab");
        assert_eq!((global.as_str(), personal.as_str()), ("global/demo", "principal/demo/bearer:ab"));
        assert!(global.is_shared() && !personal.is_shared());
        assert_eq!((global.holdout_ref(), personal.holdout_ref()), ("demo", "demo"));
        assert_eq!(serde_json::to_string(&personal).unwrap(), r#""principal/demo/bearer:ab""#);
        assert_eq!(serde_json::from_str::<PoolKey>(r#""global/demo""#).unwrap(), global);
        let pools = BTreeMap::from([(personal.clone(), 1), (global.clone(), 2)]);
        let order: Vec<&str> = pools.keys().map(PoolKey::as_str).collect();
        assert_eq!(order, ["global/demo", "principal/demo/bearer:ab"], "map order is the text's");
        assert_eq!(pools["global/demo"], 2);
    }
}
