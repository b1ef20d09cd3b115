//! Crash-test failpoints (feature `crash-test-failpoints`): the process aborts, as a power cut
//! would stop it, when it reaches the point named in `EVIDENCEOS_CRASH_FAILPOINT`.
//!
//! `NAME` aborts at the first hit of NAME, `NAME:N` at its Nth hit once serving, so a test can
//! let acknowledged work pile up before the cut. `EVIDENCEOS_CRASH_FAILPOINT_TRACE=1` also prints
//! every hit of every point (`failpoint_hit NAME`), so a test can count hits before choosing N.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use evidenceos_core::{Effect, FileId};

/// Failpoints fire only once the daemon serves, not during start-up recovery.
static SERVING: AtomicBool = AtomicBool::new(false);
/// Hits of the armed point since serving began.
static HITS: AtomicU64 = AtomicU64::new(0);

/// The armed point and the hit that aborts (1 = the first).
struct Armed {
    name: String,
    nth: u64,
}

/// Arms the failpoint named in `EVIDENCEOS_CRASH_FAILPOINT` from now on; a malformed value stops
/// the daemon here rather than leaving a crash test that never crashes.
pub fn arm() {
    let _ = armed();
    SERVING.store(true, Ordering::SeqCst);
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED.get_or_init(|| std::env::var("EVIDENCEOS_CRASH_FAILPOINT").ok().filter(|v| !v.is_empty()).map(parse)).as_ref()
}

fn parse(value: String) -> Armed {
    let Some((name, nth)) = value.split_once(':') else { return Armed { name: value, nth: 1 } };
    match nth.parse::<u64>() {
        Ok(nth) if nth >= 1 => Armed { name: name.to_string(), nth },
        _ => panic!("EVIDENCEOS_CRASH_FAILPOINT={value}: the hit count after ':' must be a number >= 1"),
    }
}

fn tracing() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var("EVIDENCEOS_CRASH_FAILPOINT_TRACE").is_ok_and(|v| v == "1"))
}

fn hit(name: &str) {
    if !SERVING.load(Ordering::SeqCst) {
        return;
    }
    if tracing() {
        // Unbuffered and written before the effect's reply can leave, so a client that got a
        // reply finds every hit that preceded it in the log.
        eprintln!("failpoint_hit {name}");
    }
    let Some(armed) = armed().filter(|armed| armed.name == name) else { return };
    let count = HITS.fetch_add(1, Ordering::SeqCst) + 1;
    if count >= armed.nth {
        eprintln!("evidenceos: failpoint {name} reached (hit {count}); aborting");
        std::process::abort();
    }
}

/// `journal_append`, `etl_sync`, `state_log_append`, `checkpoint_replace`, `journal_compaction`, ...
fn effect_name(effect: &Effect) -> &'static str {
    match (effect, effect.file()) {
        (Effect::Append { .. }, FileId::Journal) => "journal_append",
        (Effect::Append { .. }, FileId::StateLog(_)) => "state_log_append",
        (Effect::Append { .. }, _) => "etl_append",
        (Effect::Sync { .. }, FileId::Journal) => "journal_sync",
        (Effect::Sync { .. }, FileId::StateLog(_)) => "state_log_sync",
        (Effect::Sync { .. }, _) => "etl_sync",
        (Effect::Replace { .. }, FileId::Checkpoint) => "checkpoint_replace",
        (Effect::Replace { .. }, _) => "journal_compaction",
        (Effect::Truncate { .. }, _) => "truncate",
    }
}

pub(crate) fn before(effect: &Effect) {
    hit(&format!("before_{}", effect_name(effect)));
}

pub(crate) fn after(effect: &Effect) {
    hit(&format!("after_{}", effect_name(effect)));
    // The operator guide's points: after the ETL append carrying that RPC's leaf.
    if let Effect::Append { file: FileId::Etl, bytes } = effect
        && let Ok(scan) = evidenceos_core::frame::scan(bytes, 0)
    {
        for record in scan.records {
            let text = String::from_utf8_lossy(record.payload);
            if text.contains("\"revoked_at_index\"") {
                hit("after_etl_append_revoke_claim");
            } else if text.contains("\"client_decision_v1\"") {
                hit("after_etl_append_execute_claim");
            } else if text.contains("\"evidenceos.v2.claim_capsule\"") {
                hit("after_etl_append_execute_claim_v2");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn a_name_fires_at_its_first_hit_and_name_n_at_its_nth() {
        let first = parse("after_etl_sync".into());
        assert_eq!((first.name.as_str(), first.nth), ("after_etl_sync", 1));
        let nth = parse("before_journal_append:12".into());
        assert_eq!((nth.name.as_str(), nth.nth), ("before_journal_append", 12));
    }

    #[test]
    #[should_panic(expected = "must be a number >= 1")]
    fn hit_zero_is_refused() {
        parse("after_etl_sync:0".into());
    }

    #[test]
    #[should_panic(expected = "must be a number >= 1")]
    fn a_count_that_is_no_number_is_refused() {
        parse("after_etl_sync:x".into());
    }
}
