//! `canary status|sign-reset|reset` (SPEC §5.8): read the drift canary the daemon holds, and
//! reset it only through a signed governance event the daemon verifies and applies itself.

use evidenceos_core::canary::canary_key;
use evidenceos_core::governance::{EventType, GovernanceEvent, MAX_REASON_BYTES};
use serde_json::json;

use super::{Operator, Outcome, line, pretty, write_document};
use crate::ctl::operator_args::{CanaryResetArgs, CanarySignResetArgs, CanaryStatusArgs};

fn check_names(claim_name: &str, holdout: &str) -> Outcome<()> {
    evidenceos_core::validate::validate_name("--claim-name", claim_name)
        .and_then(|()| evidenceos_core::validate::validate_name("--holdout", holdout))
        .map_err(|e| e.message)
}

pub(crate) fn status(args: &CanaryStatusArgs) -> Outcome<String> {
    check_names(&args.claim_name, &args.holdout)?;
    let recovered = super::recovered::recover(&args.dir.data_dir)?;
    let kernel = &recovered.kernel;
    let key = canary_key(&args.claim_name, &args.holdout);
    let canary = kernel.state().claims.canaries.get(&key);
    let settings = &kernel.environment().settings;
    let barrier = 1e6 / f64::from(settings.canary_alpha_drift_micros.max(1));
    // A reset in the log the daemon has not loaded yet (it applies it at the next reload).
    let staged = kernel
        .environment()
        .canary_resets
        .get(&key)
        .filter(|id| canary.and_then(|c| c.last_reset_event_id.as_ref()) != Some(*id));
    let default = evidenceos_core::canary::Canary::default();
    let shown = canary.unwrap_or(&default);
    Ok(pretty(&json!({
        "claim_name": args.claim_name,
        "holdout_ref": args.holdout,
        "seen": canary.is_some(),
        "frozen": shown.frozen,
        "baseline_set": shown.baseline_set,
        "e_drift": shown.e_drift,
        "barrier": barrier,
        "last_check_epoch": shown.last_check_epoch,
        "last_reset_event_id": shown.last_reset_event_id,
        "staged_reset_event_id": staged,
        "epoch": kernel.environment().epoch,
        "as_of": {"journal_seq": kernel.durable_journal_seq(), "tree_size": kernel.tree_size()},
    })))
}

pub(crate) fn sign_reset(args: &CanarySignResetArgs) -> Outcome<String> {
    check_names(&args.claim_name, &args.holdout)?;
    if args.reason.len() > MAX_REASON_BYTES {
        return Err(format!("--reason is longer than {MAX_REASON_BYTES} bytes"));
    }
    let operator = Operator::open(&args.dir.data_dir)?;
    let signer = operator.signer(&args.signer)?;
    let payload = json!({"claim_name": args.claim_name, "holdout_ref": args.holdout, "reason": args.reason});
    let event = GovernanceEvent::sign(
        EventType::CanaryReset,
        operator.epoch(),
        &signer.key_id,
        payload,
        operator.log.head(),
        &signer.seed,
    );
    let mut bytes = event.to_json();
    bytes.push(b'\n');
    match &args.out {
        Some(path) => {
            write_document(path, &bytes)?;
            Ok(line(&json!({"event_id": event.event_id, "out": path.display().to_string()})))
        }
        None => Ok(String::from_utf8(bytes).expect("canonical JSON is UTF-8")),
    }
}

pub(crate) fn reset(args: &CanaryResetArgs) -> Outcome<String> {
    check_names(&args.claim_name, &args.holdout)?;
    let path = &args.governance_event;
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let event = GovernanceEvent::from_json(text).map_err(|e| format!("{}: {e}", path.display()))?;
    let operator = Operator::open(&args.dir.data_dir)?;
    event.verify(&operator.trusted).map_err(|e| format!("{}: {e}", path.display()))?;
    let reset = event.canary_reset().map_err(|e| format!("{}: {e}", path.display()))?;
    if (reset.claim_name.as_str(), reset.holdout_ref.as_str()) != (args.claim_name.as_str(), args.holdout.as_str()) {
        return Err(format!(
            "{}: the event resets {}/{}, not {}/{}",
            path.display(),
            reset.claim_name,
            reset.holdout_ref,
            args.claim_name,
            args.holdout
        ));
    }
    if let Some((index, _)) = operator.log.find(&event.event_id) {
        return Err(format!("{}: event {} is already recorded (line {})", path.display(), event.event_id, index + 1));
    }
    if reset.prev_event_id != operator.log.head() {
        return Err(format!(
            "{}: the event was signed against governance log head {:?} but the log is now at {:?}; sign it again (canary sign-reset)",
            path.display(),
            reset.prev_event_id,
            operator.log.head()
        ));
    }
    let recovered = super::recovered::recover(&args.dir.data_dir)?;
    let key = canary_key(&args.claim_name, &args.holdout);
    let frozen = recovered.kernel.state().claims.canaries.get(&key).is_some_and(|c| c.frozen);
    if !frozen {
        return Err(format!("the canary of {key} is not frozen; there is nothing to reset"));
    }
    // The signed document is the event: recorded as it is, the daemon applies it on reload.
    let (event, _) = operator.commit(event, Vec::new())?;
    Ok(line(&json!({
        "event_id": event.event_id,
        "event_type": "canary_reset",
        "claim_name": args.claim_name,
        "holdout_ref": args.holdout,
        "takes_effect": "at the daemon's next reload (kill -HUP) or start",
    })))
}
