//! Counters a runtime keeps for monitoring (io-tokio's and the blocking one): plain atomics,
//! read at scrape time by whoever exports them. Sync latency goes into fixed buckets so the histogram stays bounded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the commands-per-batch buckets; the last bucket is +Inf.
pub const BATCH_BUCKETS: [u64; 8] = [1, 2, 4, 8, 16, 64, 256, 1024];

/// Upper bounds (microseconds) of the sync-latency buckets; the last bucket is +Inf.
pub const SYNC_BUCKETS_US: [u64; 10] = [100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000];

#[derive(Debug, Default)]
pub struct RuntimeStats {
    pub durable_tree_size: AtomicU64,
    pub durable_journal_seq: AtomicU64,
    pub effects: AtomicU64,
    pub syncs: AtomicU64,
    pub sync_micros_total: AtomicU64,
    /// Count of syncs at or under each bound of `SYNC_BUCKETS_US`, plus one +Inf bucket.
    pub sync_buckets: [AtomicU64; SYNC_BUCKETS_US.len() + 1],
    /// Bytes appended to the journal and the ETL.
    pub bytes_appended: AtomicU64,
    /// Commands made durable per batch (group commit), bucketed like `BATCH_BUCKETS`.
    pub batch_buckets: [AtomicU64; BATCH_BUCKETS.len() + 1],
    pub batches: AtomicU64,
    pub batched_commands: AtomicU64,
    /// Size of the last checkpoint the ETL publisher wrote (0 until then, or without publishing).
    pub published_tree_size: AtomicU64,
    /// Set once a publisher follows this runtime, so the lag is exported only then.
    pub publishing: std::sync::atomic::AtomicBool,
    /// Witnesses configured (`--witness`) and the quorum expected of them; 0 without witnesses.
    pub witnesses: AtomicU64,
    pub witness_quorum: AtomicU64,
    /// Valid witness cosignatures on the last published checkpoint.
    pub witness_cosignatures: AtomicU64,
}

impl RuntimeStats {
    pub fn record_sync(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.sync_micros_total.fetch_add(micros, Ordering::Relaxed);
        let bucket = SYNC_BUCKETS_US.iter().position(|bound| micros <= *bound).unwrap_or(SYNC_BUCKETS_US.len());
        self.sync_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_batch(&self, commands: u64) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batched_commands.fetch_add(commands, Ordering::Relaxed);
        let bucket = BATCH_BUCKETS.iter().position(|bound| commands <= *bound).unwrap_or(BATCH_BUCKETS.len());
        self.batch_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub fn load(value: &AtomicU64) -> u64 {
        value.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_land_in_the_first_bucket_that_holds_them() {
        let stats = RuntimeStats::default();
        stats.record_sync(Duration::from_micros(100));
        stats.record_sync(Duration::from_micros(101));
        stats.record_sync(Duration::from_secs(5));
        assert_eq!(RuntimeStats::load(&stats.sync_buckets[0]), 1);
        assert_eq!(RuntimeStats::load(&stats.sync_buckets[1]), 1);
        assert_eq!(RuntimeStats::load(&stats.sync_buckets[SYNC_BUCKETS_US.len()]), 1);
        assert_eq!(RuntimeStats::load(&stats.syncs), 3);
    }
}
