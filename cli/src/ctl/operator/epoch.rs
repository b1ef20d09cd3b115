//! `epoch advance|show`: the signed epoch-control record (SPEC §5.7, §6).

use evidenceos_core::governance::EventType;
use evidenceos_core::operator::EpochControl;
use serde_json::json;

use super::{EPOCH_CONTROL_FILE, Operator, Outcome, Write, current_epoch, line};
use crate::ctl::operator_args::{EpochAdvanceArgs, EpochShowArgs};

pub(crate) fn advance(args: &EpochAdvanceArgs) -> Outcome<String> {
    let operator = Operator::open(&args.dir.data_dir)?;
    let signer = operator.signer(&args.signer)?;
    let from = operator.epoch();
    if args.to <= from {
        return Err(format!(
            "--to {} must be greater than the current epoch {from} (epochs only move forward)",
            args.to
        ));
    }
    let unsigned = EpochControl {
        forced_epoch: args.to,
        updated_at_epoch: from,
        key_id: signer.key_id.clone(),
        signature_ed25519: String::new(),
        event_id: String::new(),
    };
    let record = unsigned.sign(&signer.seed);
    let payload = json!({
        "from_epoch": from,
        "forced_epoch": args.to,
        "updated_at_epoch": from,
        "record_signature_ed25519": record.signature_ed25519,
    });
    let (event, _) = operator.record(&signer, EventType::EpochAdvanced, payload, |event| {
        // The record names the event that recorded it; the id is not part of what it signs.
        let record = EpochControl { event_id: event.event_id.clone(), ..record.clone() };
        let mut bytes = serde_json::to_vec_pretty(&record).expect("plain JSON");
        bytes.push(b'\n');
        Ok(vec![Write { path: EPOCH_CONTROL_FILE.into(), bytes }])
    })?;
    Ok(line(&json!({
        "event_id": event.event_id,
        "event_type": "epoch_advanced",
        "from_epoch": from,
        "epoch": args.to,
    })))
}

pub(crate) fn show(args: &EpochShowArgs) -> Outcome<String> {
    Ok(line(&json!({"epoch": current_epoch(&args.dir.data_dir)?})))
}
