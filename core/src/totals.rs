//! Aggregates over all claims for monitoring (`Query::LedgerTotals`, the metrics endpoint).

use std::collections::BTreeMap;

/// Aggregates over all claims, for monitoring.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LedgerTotals {
    /// Claims by state name.
    pub claims_by_state: BTreeMap<&'static str, u64>,
    /// Bits charged to claim ledgers, summed.
    pub k_bits_charged: f64,
    pub frozen_ledgers: u64,
    pub revocations: u64,
    /// Per holdout ref, over its pools: reservations open now, and reservations that ran out
    /// unused so far.
    pub pool_reservations: BTreeMap<String, PoolReservations>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolReservations {
    pub open: u64,
    pub expired: u64,
}
