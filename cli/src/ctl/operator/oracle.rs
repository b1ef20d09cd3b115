//! `oracle list|show|set-ttl|rotate-calibration`: the signed oracle operator records of
//! `oracle_operator_config.json` (SPEC §6), in the one shape `evidenceos-core` defines and the
//! daemon loads.

use std::collections::BTreeSet;
use std::path::Path;

use evidenceos_core::environment::Environment;
use evidenceos_core::governance::EventType;
use evidenceos_core::operator::{OracleConfigFile, OracleRecord};
use evidenceos_core::oracle::{DELTA_SIGMA_FAST, DELTA_SIGMA_HEAVY, OracleResolution};
use evidenceos_io_sync::DataDir;
use serde_json::{Value, json};

use super::{ORACLE_CONFIG_FILE, Operator, Outcome, Signer, Write, line, pretty};
use crate::ctl::args::Lane;
use crate::ctl::operator_args::{OracleListArgs, OracleRotateCalibrationArgs, OracleSetTtlArgs, OracleShowArgs};

/// What claims use when CreateClaimV2 names no oracle.
const DEFAULT_ORACLE: &str = "default";

/// The environment the daemon would load from the files now (read only, no lock).
pub(crate) fn environment_read_only(root: &Path) -> Outcome<Environment> {
    let reader = DataDir::open_read_only(root).map_err(|e| e.to_string())?;
    let holdouts = reader.read_holdouts().map_err(|e| e.to_string())?;
    let files = reader.read_operator_files().map_err(|e| e.to_string())?;
    super::load(&holdouts, &files)
}

/// `default`, every oracle with a record, every oracle an installed NullSpec names.
fn known_oracles(env: &Environment) -> BTreeSet<String> {
    let mut known: BTreeSet<String> = env.oracles.keys().cloned().collect();
    known.insert(DEFAULT_ORACLE.to_string());
    known.extend(env.nullspecs.values().map(|c| c.oracle_id.clone()));
    known
}

/// TTL and calibration claims sealed now would pin for this oracle.
fn effective(env: &Environment, oracle_id: &str) -> Value {
    let record = env.oracles.get(oracle_id);
    json!({
        "ttl_epochs": record.map_or(env.settings.default_oracle_ttl_epochs, |r| r.ttl_epochs),
        "calibration_manifest_hash_hex": record.and_then(|r| r.calibration_manifest_hash_hex.clone()),
        "calibration_epoch": record.and_then(|r| r.calibration_epoch),
        "source": if record.is_some() { "oracle_operator_config.json" } else { "daemon default" },
    })
}

pub(crate) fn list(args: &OracleListArgs) -> Outcome<String> {
    let env = environment_read_only(&args.dir.data_dir)?;
    let oracles: Vec<Value> = known_oracles(&env)
        .iter()
        .map(|id| json!({"oracle_id": id, "effective": effective(&env, id), "record": env.oracles.get(id)}))
        .collect();
    Ok(pretty(&json!({"epoch": env.epoch, "oracles": oracles})))
}

/// The resolution a claim with `num_symbols` on `lane` would pin if sealed now (the kernel's
/// rule at SealClaim: TTL and calibration from the record, else defaults).
pub(crate) fn resolution(
    env: &Environment,
    oracle_id: &str,
    num_symbols: u32,
    lane: Lane,
) -> Outcome<OracleResolution> {
    let record = env.oracles.get(oracle_id);
    let ttl = record.map_or(env.settings.default_oracle_ttl_epochs, |r| r.ttl_epochs);
    let calibration = record.and_then(OracleRecord::calibration_hash);
    let calibrated_at = record.and_then(|r| r.calibration_epoch).unwrap_or(env.epoch);
    let delta = match lane {
        Lane::Fast => DELTA_SIGMA_FAST,
        Lane::Heavy => DELTA_SIGMA_HEAVY,
    };
    OracleResolution::new(num_symbols, calibration, calibrated_at, ttl, delta).map_err(|e| e.to_string())
}

pub(crate) fn show(args: &OracleShowArgs) -> Outcome<String> {
    evidenceos_core::validate::validate_name("--oracle-id", &args.oracle_id).map_err(|e| e.message)?;
    let env = environment_read_only(&args.dir.data_dir)?;
    // Any oracle id a claim may name can be shown: what it would pin is the question.
    let resolution = resolution(&env, &args.oracle_id, args.num_symbols, args.lane)?;
    let resolution_json: Value = serde_json::from_slice(&resolution.canonical_json()).expect("canonical JSON");
    Ok(pretty(&json!({
        "oracle_id": args.oracle_id,
        "known": known_oracles(&env).contains(&args.oracle_id),
        "epoch": env.epoch,
        "effective": effective(&env, &args.oracle_id),
        "record": env.oracles.get(&args.oracle_id),
        "resolution": resolution_json,
        "resolution_hash_hex": hex::encode(resolution.hash()),
    })))
}

fn unknown(env: &Environment, oracle_id: &str) -> String {
    let known: Vec<String> = known_oracles(env).into_iter().collect();
    format!("unknown oracle {oracle_id:?} (known: {}); pass --new-oracle to create its first record", known.join(", "))
}

/// The record to change: the existing one, or (with --new-oracle) a fresh one with defaults.
fn base_record(operator: &Operator, oracle_id: &str, new_oracle: bool) -> Outcome<OracleRecord> {
    evidenceos_core::validate::validate_name("--oracle-id", oracle_id).map_err(|e| e.message)?;
    let env = &operator.environment;
    if let Some(record) = env.oracles.get(oracle_id) {
        return Ok(record.clone());
    }
    if !new_oracle && !known_oracles(env).contains(oracle_id) {
        return Err(unknown(env, oracle_id));
    }
    Ok(OracleRecord {
        schema_version: 1,
        ttl_epochs: env.settings.default_oracle_ttl_epochs,
        calibration_manifest_hash_hex: None,
        calibration_epoch: None,
        disjointness_attestation: None,
        nonoverlap_proof_uri: None,
        updated_at_epoch: env.epoch,
        key_id: String::new(),
        signature_ed25519: String::new(),
    })
}

/// Re-signs `record` for `oracle_id` and records the change with its event.
fn write_record(
    operator: &Operator,
    signer: &Signer,
    oracle_id: &str,
    mut record: OracleRecord,
    event_type: EventType,
    mut payload: Value,
) -> Outcome<(String, OracleRecord)> {
    record.updated_at_epoch = operator.epoch();
    record.key_id = signer.key_id.clone();
    let record = record.sign(oracle_id, &signer.seed);
    let mut config = OracleConfigFile { oracles: operator.environment.oracles.clone() };
    config.oracles.insert(oracle_id.to_string(), record.clone());
    let mut bytes = serde_json::to_vec_pretty(&config).expect("plain JSON");
    bytes.push(b'\n');
    payload["oracle_id"] = json!(oracle_id);
    payload["record"] = serde_json::to_value(&record).expect("plain JSON");
    let (event, _) = operator.record(signer, event_type, payload, |_| {
        Ok(vec![Write { path: ORACLE_CONFIG_FILE.into(), bytes: bytes.clone() }])
    })?;
    Ok((event.event_id, record))
}

pub(crate) fn set_ttl(args: &OracleSetTtlArgs) -> Outcome<String> {
    let operator = Operator::open(&args.dir.data_dir)?;
    let signer = operator.signer(&args.signer)?;
    let mut record = base_record(&operator, &args.oracle_id, args.new_oracle)?;
    let previous = operator.environment.oracles.get(&args.oracle_id).map(|r| r.ttl_epochs);
    if previous == Some(args.ttl_epochs) {
        return Err(format!("oracle {} already has ttl_epochs {}", args.oracle_id, args.ttl_epochs));
    }
    record.ttl_epochs = args.ttl_epochs;
    let payload = json!({"ttl_epochs": args.ttl_epochs, "previous_ttl_epochs": previous});
    let (event_id, record) =
        write_record(&operator, &signer, &args.oracle_id, record, EventType::OracleTtlSet, payload)?;
    Ok(line(&json!({
        "event_id": event_id,
        "event_type": "oracle_ttl_set",
        "oracle_id": args.oracle_id,
        "ttl_epochs": record.ttl_epochs,
        "previous_ttl_epochs": previous,
        "updated_at_epoch": record.updated_at_epoch,
    })))
}

pub(crate) fn rotate_calibration(args: &OracleRotateCalibrationArgs) -> Outcome<String> {
    let operator = Operator::open(&args.dir.data_dir)?;
    let signer = operator.signer(&args.signer)?;
    let mut record = base_record(&operator, &args.oracle_id, args.new_oracle)?;
    let hash = hex::encode(args.calib_hash);
    let previous = record.calibration_manifest_hash_hex.clone();
    if previous.as_deref() == Some(hash.as_str()) {
        return Err(format!("oracle {} is already calibrated with {hash}", args.oracle_id));
    }
    let calibration_epoch = args.calibration_epoch.unwrap_or(operator.epoch());
    if calibration_epoch > operator.epoch() {
        return Err(format!("--calibration-epoch {calibration_epoch} is after the current epoch {}", operator.epoch()));
    }
    record.calibration_manifest_hash_hex = Some(hash.clone());
    record.calibration_epoch = Some(calibration_epoch);
    let payload = json!({
        "calibration_manifest_hash_hex": hash,
        "calibration_epoch": calibration_epoch,
        "previous_calibration_manifest_hash_hex": previous,
    });
    let (event_id, _) =
        write_record(&operator, &signer, &args.oracle_id, record, EventType::OracleCalibrationRotated, payload)?;
    Ok(line(&json!({
        "event_id": event_id,
        "event_type": "oracle_calibration_rotated",
        "oracle_id": args.oracle_id,
        "calibration_manifest_hash_hex": hash,
        "calibration_epoch": calibration_epoch,
        "previous_calibration_manifest_hash_hex": previous,
    })))
}
