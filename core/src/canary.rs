//! The per-(claim name, holdout) drift monitor of SPEC §5.8: its state, its key and its rule.

use serde::{Deserialize, Serialize};

/// The key of a canary: one per (claim_name, holdout_ref).
pub fn canary_key(claim_name: &str, holdout_ref: &str) -> String {
    format!("{claim_name}/{holdout_ref}")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    pub e_drift: f64,
    pub last_check_epoch: Option<u64>,
    pub frozen: bool,
    /// Set by the first CERTIFIED execution of the name on the holdout; only later executions
    /// count towards e_drift. Absent in checkpoints from before it existed: a canary with
    /// history then counts as established (it has already been judged under the old rule).
    #[serde(default = "established")]
    pub baseline_set: bool,
    /// The signed `canary_reset` governance event last applied to this canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reset_event_id: Option<String>,
}

impl Default for Canary {
    fn default() -> Self {
        Self { e_drift: 1.0, last_check_epoch: None, frozen: false, baseline_set: false, last_reset_event_id: None }
    }
}

fn established() -> bool {
    true
}

pub const CANARY_CHECK_EVERY_EPOCHS: u64 = 1;
pub const CANARY_MAX_STALENESS_EPOCHS: u64 = 100;

impl Canary {
    /// Updates the canary with one execution of its name on its holdout (SPEC §5.8) and says
    /// why it froze, if this execution froze it (the caller logs one `canary_incident`). The
    /// first certification only establishes the baseline, whatever its e-value; later
    /// executions multiply e_drift by their e-value, at most once per check interval.
    pub fn observe(&mut self, e_value: f64, certified: bool, epoch: u64, barrier: f64) -> Option<&'static str> {
        if self.frozen {
            return None;
        }
        if !self.baseline_set {
            self.baseline_set = certified;
            return None;
        }
        let due = self.last_check_epoch.is_none_or(|last| epoch >= last.saturating_add(CANARY_CHECK_EVERY_EPOCHS));
        let stale = self.last_check_epoch.is_some_and(|last| epoch > last.saturating_add(CANARY_MAX_STALENESS_EPOCHS));
        if due && e_value.is_finite() {
            self.e_drift *= e_value;
            self.last_check_epoch = Some(epoch);
        }
        let drifted = !self.e_drift.is_finite() || self.e_drift >= barrier;
        self.frozen = stale || drifted;
        match (stale, drifted) {
            (true, _) => Some("staleness"),
            (false, true) => Some("drift"),
            (false, false) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BARRIER: f64 = 1000.0;

    #[test]
    fn the_first_certification_sets_the_baseline_whatever_its_e_value() {
        let mut canary = Canary::default();
        assert_eq!(canary.observe(0.5, false, 0, BARRIER), None, "a rejection before the baseline");
        assert!(!canary.baseline_set);
        assert_eq!(canary.observe(1e8, true, 0, BARRIER), None, "one honest certification never trips");
        assert!(canary.baseline_set && canary.e_drift == 1.0 && !canary.frozen);
    }

    #[test]
    fn later_executions_multiply_once_per_check_interval_and_trip_at_the_barrier() {
        let mut canary = Canary { baseline_set: true, ..Canary::default() };
        assert_eq!(canary.observe(10.0, true, 0, BARRIER), None);
        assert_eq!(canary.observe(10.0, true, 0, BARRIER), None, "same epoch: not counted again");
        assert_eq!(canary.e_drift, 10.0);
        assert_eq!(canary.observe(10.0, true, 1, BARRIER), None);
        assert_eq!(canary.observe(10.0, true, 2, BARRIER), Some("drift"), "10^3 reaches the barrier");
        assert!(canary.frozen);
        assert_eq!(canary.observe(0.001, true, 3, BARRIER), None, "frozen is sticky; one incident");
        assert!(canary.frozen);
    }

    #[test]
    fn a_canary_not_checked_for_too_long_freezes_as_stale() {
        let mut canary = Canary { baseline_set: true, ..Canary::default() };
        canary.observe(1.0, true, 0, BARRIER);
        assert_eq!(canary.observe(1.0, true, CANARY_MAX_STALENESS_EPOCHS + 1, BARRIER), Some("staleness"));
    }

    #[test]
    fn canaries_from_older_checkpoints_load_as_established() {
        let old = r#"{"e_drift":3.5,"last_check_epoch":2,"frozen":false}"#;
        let canary: Canary = serde_json::from_str(old).unwrap();
        assert!(canary.baseline_set, "a canary with history was judged under the old rule");
        assert_eq!((canary.e_drift, canary.last_check_epoch), (3.5, Some(2)));
    }
}
