//! Shared budgets (SPEC §5.3): topic pools and holdout pools. A claim reserves its worst case
//! when created, settles its actual charge when executed and releases the rest. Reservations
//! expire by time, judged with the `now` of the command that looks, so replay agrees.
//! A reservation that does not fit is refused without touching the pool: one oversized request
//! must not deny service to everyone else.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, KernelError};

pub const DEFAULT_POOL_K_BITS: f64 = 1024.0;
pub const DEFAULT_POOL_ACCESS_CREDIT: f64 = 1024.0;
pub const DEFAULT_RESERVATION_TTL_MS: u64 = 600_000;
/// Most open reservations one pool tracks.
pub const MAX_RESERVATIONS_PER_POOL: usize = 65_536;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    pub amount: f64,
    pub expires_at_ms: u64,
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
    /// Open reservations by claim id hex.
    pub reservations: BTreeMap<String, Reservation>,
}

impl Pool {
    pub fn new(k_bits_budget: f64, access_credit_budget: f64) -> Self {
        Self {
            k_bits_budget,
            access_credit_budget,
            k_bits_settled: 0.0,
            access_credit_settled: 0.0,
            reservations: BTreeMap::new(),
        }
    }

    fn reserved(&self, now_ms: u64, except: Option<&str>) -> f64 {
        self.reservations
            .iter()
            .filter(|(claim, r)| r.is_active(now_ms) && Some(claim.as_str()) != except)
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

    /// Checks that `claim` could reserve `amount` (replacing any reservation it holds).
    pub fn check_reserve(&self, claim: &str, amount: f64, now_ms: u64) -> Result<(), KernelError> {
        let reserved = self.reserved(now_ms, Some(claim));
        let fits = self.k_bits_settled + reserved + amount <= self.k_bits_budget + f64::EPSILON
            && self.access_credit_settled + reserved + amount <= self.access_credit_budget + f64::EPSILON;
        if !fits {
            return Err(KernelError::new(
                ErrorCode::FailedPrecondition,
                "reservation does not fit the remaining pool budget",
            ));
        }
        if !self.reservations.contains_key(claim) && self.reservations.len() >= MAX_RESERVATIONS_PER_POOL {
            return Err(KernelError::resource_exhausted("too many open reservations in this pool"));
        }
        Ok(())
    }

    /// Records a reservation; call `check_reserve` first. Expired reservations are pruned.
    pub fn reserve(&mut self, claim: &str, amount: f64, now_ms: u64, ttl_ms: u64) {
        self.reservations.retain(|_, r| r.is_active(now_ms));
        self.reservations
            .insert(claim.to_string(), Reservation { amount, expires_at_ms: now_ms.saturating_add(ttl_ms) });
    }

    /// Settles an actual charge and releases what remains of the claim's reservation.
    pub fn settle(&mut self, claim: &str, k_bits: f64, access_credit: f64) {
        self.reservations.remove(claim);
        self.k_bits_settled += k_bits;
        self.access_credit_settled += access_credit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_reservation_is_refused_and_the_pool_stays_usable() {
        let mut pool = Pool::new(100.0, 100.0);
        let err = pool.check_reserve("big", 101.0, 0).unwrap_err();
        assert_eq!(err.code, ErrorCode::FailedPrecondition);
        assert_eq!(pool.available(0), (100.0, 100.0));
        pool.check_reserve("small", 60.0, 0).unwrap();
        pool.reserve("small", 60.0, 0, 1000);
        assert!(pool.check_reserve("other", 50.0, 10).is_err());
        assert!(pool.check_reserve("other", 40.0, 10).is_ok());
    }

    #[test]
    fn expired_reservations_stop_counting() {
        let mut pool = Pool::new(100.0, 100.0);
        pool.reserve("a", 80.0, 0, 1000);
        assert!(pool.check_reserve("b", 30.0, 999).is_err());
        assert!(pool.check_reserve("b", 30.0, 1000).is_ok());
    }

    #[test]
    fn settling_releases_the_unused_part() {
        let mut pool = Pool::new(100.0, 100.0);
        pool.reserve("a", 64.0, 0, 1000);
        pool.settle("a", 4.0, 4.0);
        assert_eq!(pool.available(1), (96.0, 96.0));
        assert!(pool.reservations.is_empty());
    }
}
