//! `audit --data-dir`: an offline, read-only check of a whole data directory. The first
//! inconsistency ends it with its location; a clean directory gets a JSON summary.

use std::collections::BTreeMap;
use std::path::Path;

use evidenceos_core::checkpoint::CheckpointHead;
use evidenceos_core::environment::Environment;
use evidenceos_core::governance::{EventType, GovernanceEvent, GovernanceLog};
use evidenceos_core::hash::sha256;
use evidenceos_core::merkle::{MerkleTree, leaf_hash};
use evidenceos_core::{FileId, KernelConfig, LogEvent, frame};
use serde_json::{Value, json};

use super::{EPOCH_CONTROL_FILE, ORACLE_CONFIG_FILE, Outcome, line};
use crate::ctl::operator_args::AuditArgs;

pub(crate) fn audit(args: &AuditArgs) -> Outcome<String> {
    let root = &args.dir.data_dir;
    let fail = |location: &str, problem: String| format!("audit failed: {location}: {problem}");

    // 1. The recovered state (checkpoint + journal replayed, every replayed leaf checked against
    //    the log) and the raw files it came from.
    let recovered = super::recovered::recover(root).map_err(|e| fail("recovery", e))?;
    let files = &recovered.files;

    // 2. Every ETL record framed and hashed; the tree rebuilt.
    let scan = frame::scan(&recovered.etl, KernelConfig::default().max_torn_tail())
        .map_err(|e| fail(FileId::Etl.file_name(), e.to_string()))?;
    let mut tree = MerkleTree::new();
    for record in &scan.records {
        tree.push(leaf_hash(record.payload));
    }

    // 3. The checkpoint covers a prefix of that tree, with the root it recorded.
    let checkpoint = match &files.checkpoint {
        Some(bytes) => {
            let checkpoint: CheckpointHead =
                serde_json::from_slice(bytes).map_err(|e| fail(FileId::Checkpoint.file_name(), e.to_string()))?;
            let root_at = tree.root_at(checkpoint.tree_size).ok_or_else(|| {
                fail(
                    FileId::Checkpoint.file_name(),
                    format!("covers {} leaves but etl.log holds {}", checkpoint.tree_size, tree.len()),
                )
            })?;
            if hex::encode(root_at) != checkpoint.root_hash_hex {
                return Err(fail(
                    FileId::Checkpoint.file_name(),
                    format!("root of the first {} leaves differs from the recorded root", checkpoint.tree_size),
                ));
            }
            Some(json!({"journal_seq": checkpoint.journal_seq, "tree_size": checkpoint.tree_size}))
        }
        None => None,
    };
    let mut replayed = 0;
    let mut repairs = Vec::new();
    for event in &recovered.events {
        match event {
            LogEvent::JournalReplayed { records, .. } => replayed = *records,
            LogEvent::TornTailTruncated { file, dropped_bytes, .. } => {
                repairs.push(format!("{}: unfinished final record of {dropped_bytes} bytes", file.file_name()))
            }
            LogEvent::MissingLeavesReappended { count } => {
                repairs.push(format!("etl.log: {count} journaled leaves not yet written"))
            }
            _ => {}
        }
    }

    // 4. Operator material through the daemon's loader, and the governance log.
    let env = super::oracle::environment_read_only(root).map_err(|e| fail("operator files", e))?;
    let (log, trusted) = super::events::read(root).map_err(|e| fail("governance log", e))?;
    log.verify(&trusted).map_err(|e| fail("governance log", e.to_string()))?;

    // 5. Each operator record is the one its latest governance event recorded.
    let active_key_id = String::from_utf8_lossy(&files.active_key_id).trim_end().to_string();
    check_records_against_events(root, &env, &log, &active_key_id)?;

    Ok(line(&json!({
        "ok": true,
        "data_dir": root.display().to_string(),
        "etl": {
            "records": scan.records.len(),
            "root_hex": hex::encode(tree.root()),
            "torn_tail_bytes": scan.torn_bytes,
        },
        "checkpoint": checkpoint,
        "journal": {"records_replayed": replayed},
        "recovery_would_repair": repairs,
        "governance": {"events": log.events.len(), "head": log.head(), "torn_tail_bytes": log.torn_bytes},
        "operator": {
            "active_key_id": active_key_id,
            "signing_keys": files.keys.len(),
            "trusted_operator_keys": trusted.len(),
            "holdouts": env.holdouts.len(),
            "nullspecs": env.nullspecs.len(),
            "active_nullspecs": env.active_nullspecs.len(),
            "oracles": env.oracles.len(),
            "epoch": env.epoch,
        },
    })))
}

/// The latest event of `types` whose payload field `field` is `value`, by line.
fn latest<'a>(
    log: &'a GovernanceLog,
    types: &[EventType],
    key: &[(&str, &str)],
) -> Option<(usize, &'a GovernanceEvent)> {
    log.events.iter().enumerate().rev().find(|(_, e)| {
        types.contains(&e.event_type)
            && key.iter().all(|(field, value)| e.payload.get(*field).and_then(Value::as_str) == Some(*value))
    })
}

fn check_records_against_events(
    root: &Path,
    env: &Environment,
    log: &GovernanceLog,
    active_key_id: &str,
) -> Outcome<()> {
    let unbacked =
        |what: String| format!("audit failed: {what} is not backed by a governance event (changed by hand?)");
    let differs = |what: String, line: usize| {
        format!("audit failed: {what} differs from what governance event on line {line} recorded")
    };
    let oracle_events = [EventType::OracleTtlSet, EventType::OracleCalibrationRotated];
    for (oracle_id, record) in &env.oracles {
        let what = format!("{ORACLE_CONFIG_FILE} oracle {oracle_id}");
        let (index, event) =
            latest(log, &oracle_events, &[("oracle_id", oracle_id)]).ok_or_else(|| unbacked(what.clone()))?;
        if event.payload.get("record") != Some(&serde_json::to_value(record).expect("plain JSON")) {
            return Err(differs(what, index + 1));
        }
    }
    for (index, event) in log.events.iter().enumerate() {
        let field = |name: &str| event.payload.get(name).and_then(Value::as_str).unwrap_or_default().to_string();
        let missing = |what: String| format!("audit failed: line {}: {what} recorded but not in effect", index + 1);
        match event.event_type {
            EventType::OracleTtlSet | EventType::OracleCalibrationRotated
                if !env.oracles.contains_key(&field("oracle_id")) =>
            {
                return Err(missing(format!("oracle {} record", field("oracle_id"))));
            }
            EventType::NullspecInstall if !env.nullspecs.contains_key(&field("nullspec_id_hex")) => {
                return Err(missing(format!("NullSpec {}", field("nullspec_id_hex"))));
            }
            _ => {}
        }
    }
    let epoch_events = latest(log, &[EventType::EpochAdvanced], &[]);
    let epoch_file = std::fs::read(root.join(EPOCH_CONTROL_FILE)).ok();
    match (epoch_file, epoch_events) {
        (Some(bytes), Some((index, event))) => {
            let record: evidenceos_core::operator::EpochControl =
                serde_json::from_slice(&bytes).map_err(|e| format!("audit failed: {EPOCH_CONTROL_FILE}: {e}"))?;
            let recorded = event.payload.get("forced_epoch").and_then(Value::as_u64);
            if record.event_id != event.event_id || recorded != Some(record.forced_epoch) {
                return Err(differs(EPOCH_CONTROL_FILE.to_string(), index + 1));
            }
        }
        (Some(_), None) => return Err(unbacked(EPOCH_CONTROL_FILE.to_string())),
        (None, Some((index, _))) => {
            return Err(format!(
                "audit failed: line {}: epoch advance recorded but {EPOCH_CONTROL_FILE} is missing",
                index + 1
            ));
        }
        (None, None) => {}
    }
    for (id, contract) in &env.nullspecs {
        let what = format!("nullspec/{id}.json");
        let (index, event) = latest(log, &[EventType::NullspecInstall], &[("nullspec_id_hex", id)])
            .ok_or_else(|| unbacked(what.clone()))?;
        let digest = hex::encode(sha256(&contract.to_json()));
        if event.payload.get("contract_sha256_hex").and_then(Value::as_str) != Some(digest.as_str()) {
            return Err(differs(what, index + 1));
        }
    }
    let mut recorded: BTreeMap<(String, String), (usize, String)> = BTreeMap::new();
    for (index, event) in log.events.iter().enumerate().filter(|(_, e)| e.event_type == EventType::NullspecActivate) {
        let field = |name: &str| event.payload.get(name).and_then(Value::as_str).unwrap_or_default().to_string();
        recorded.insert((field("oracle_id"), field("holdout_ref")), (index, field("nullspec_id_hex")));
    }
    for ((oracle_id, holdout), id) in &env.active_nullspecs {
        let what = format!("nullspec/active_map.json entry ({oracle_id}, {holdout})");
        let (index, recorded_id) =
            recorded.remove(&(oracle_id.clone(), holdout.clone())).ok_or_else(|| unbacked(what.clone()))?;
        if recorded_id != *id {
            return Err(differs(what, index + 1));
        }
    }
    if let Some(((oracle_id, holdout), (index, _))) = recorded.into_iter().next() {
        return Err(format!(
            "audit failed: line {}: activation for ({oracle_id}, {holdout}) recorded but not in effect",
            index + 1
        ));
    }
    if let Some((index, event)) = latest(log, &[EventType::KeyRotated], &[])
        && event.payload.get("new_key_id").and_then(Value::as_str) != Some(active_key_id)
    {
        return Err(differs("keys/active_key_id".to_string(), index + 1));
    }
    Ok(())
}
