//! `governance events list|show|verify` over `etl_governance_events.log`.

use std::collections::BTreeMap;
use std::path::Path;

use evidenceos_core::environment::parse_trusted_keys;
use evidenceos_core::governance::GovernanceLog;
use evidenceos_io_sync::DataDir;
use serde_json::{Value, json};

use super::{Outcome, line, pretty};
use crate::ctl::operator_args::{EventsListArgs, EventsShowArgs, EventsVerifyArgs};

/// The log (ids and chain checked) and the trusted keys, read without the operator lock.
pub(crate) fn read(root: &Path) -> Outcome<(GovernanceLog, BTreeMap<String, [u8; 32]>)> {
    let reader = DataDir::open_read_only(root).map_err(|e| e.to_string())?;
    let files = reader.read_operator_files().map_err(|e| e.to_string())?;
    let trusted = match &files.trusted_keys {
        Some(bytes) => parse_trusted_keys(bytes).map_err(|e| e.to_string())?,
        None => BTreeMap::new(),
    };
    let log = evidenceos_io_sync::read_governance_log(root).map_err(|e| e.to_string())?;
    Ok((log, trusted))
}

pub(crate) fn list(args: &EventsListArgs) -> Outcome<String> {
    let (log, _) = read(&args.dir.data_dir)?;
    let events: Vec<Value> = log
        .events
        .iter()
        .enumerate()
        .filter(|(_, e)| args.event_type.as_deref().is_none_or(|t| t == e.event_type.as_str()))
        .map(|(index, e)| {
            json!({"line": index + 1, "event_id": e.event_id, "event_type": e.event_type, "epoch": e.epoch, "key_id": e.key_id})
        })
        .collect();
    Ok(pretty(
        &json!({"events": events, "count": log.events.len(), "head": log.head(), "torn_tail_bytes": log.torn_bytes}),
    ))
}

pub(crate) fn show(args: &EventsShowArgs) -> Outcome<String> {
    let wanted = args.event_id.to_ascii_lowercase();
    if wanted.len() < 8 || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("--event-id {:?}: give the id or a prefix of at least 8 hex digits", args.event_id));
    }
    let (log, _) = read(&args.dir.data_dir)?;
    let matches: Vec<(usize, _)> =
        log.events.iter().enumerate().filter(|(_, e)| e.event_id.starts_with(&wanted)).collect();
    match matches.as_slice() {
        [(index, event)] => {
            let event_json = serde_json::to_value(event).expect("plain JSON");
            Ok(pretty(&json!({"line": index + 1, "event": event_json})))
        }
        [] => Err(format!("no event {wanted} in the governance log")),
        _ => Err(format!("{} events start with {wanted}; give more digits", matches.len())),
    }
}

pub(crate) fn verify(args: &EventsVerifyArgs) -> Outcome<String> {
    let (log, trusted) = read(&args.dir.data_dir)?;
    log.verify(&trusted).map_err(|e| e.to_string())?;
    let mut by_type: BTreeMap<&str, usize> = BTreeMap::new();
    for event in &log.events {
        *by_type.entry(event.event_type.as_str()).or_default() += 1;
    }
    Ok(line(&json!({
        "verified": true,
        "events": log.events.len(),
        "by_type": by_type,
        "head": log.head(),
        "torn_tail_bytes": log.torn_bytes,
    })))
}
