//! Crash-test failpoints (feature `crash-test-failpoints`): the process aborts, as a power cut
//! would stop it, when it reaches the point named in `EVIDENCEOS_CRASH_FAILPOINT`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// Failpoints fire only once the daemon serves, not during start-up recovery.
static SERVING: AtomicBool = AtomicBool::new(false);

/// Arms the failpoint named in `EVIDENCEOS_CRASH_FAILPOINT` from now on.
pub fn arm() {
    SERVING.store(true, Ordering::SeqCst);
}

use evidenceos_core::{Effect, FileId};

fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED.get_or_init(|| std::env::var("EVIDENCEOS_CRASH_FAILPOINT").ok().filter(|v| !v.is_empty())).as_deref()
}

fn hit(name: &str) {
    if SERVING.load(Ordering::SeqCst) && armed() == Some(name) {
        eprintln!("evidenceos: failpoint {name} reached; aborting");
        std::process::abort();
    }
}

/// `journal_append`, `etl_sync`, `checkpoint_replace`, `journal_compaction`, ...
fn effect_name(effect: &Effect) -> &'static str {
    match (effect, effect.file()) {
        (Effect::Append { .. }, FileId::Journal) => "journal_append",
        (Effect::Append { .. }, _) => "etl_append",
        (Effect::Sync { .. }, FileId::Journal) => "journal_sync",
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
