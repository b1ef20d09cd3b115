//! `nullspec create|install|activate|list|show` (SPEC §5.4).

use std::collections::BTreeMap;

use evidenceos_core::evalue::{EProcess, NullKind};
use evidenceos_core::governance::EventType;
use evidenceos_core::hash::sha256;
use evidenceos_core::nullspec::{NullSpecContract, SCHEMA, from_calibration_buckets};
use serde_json::{Value, json};

use super::{ACTIVE_MAP_FILE, Operator, Outcome, Signer, Write, line, pretty, write_document};
use crate::ctl::operator_args::{
    NullspecActivateArgs, NullspecCreateArgs, NullspecInstallArgs, NullspecListArgs, NullspecShowArgs,
};

/// Most buckets a calibration file may list (oracle alphabets are far smaller).
const MAX_BUCKETS: usize = 4096;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CalibrationBuckets {
    counts: Vec<u64>,
}

pub(crate) fn create(args: &NullspecCreateArgs) -> Outcome<String> {
    evidenceos_core::validate::validate_name("--oracle-id", &args.oracle_id).map_err(|e| e.message)?;
    evidenceos_core::validate::validate_name("--holdout", &args.holdout).map_err(|e| e.message)?;
    let (kind, eprocess) = match &args.from_calibration_buckets {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let file: CalibrationBuckets = serde_json::from_slice(&bytes)
                .map_err(|e| format!("{}: expected {{\"counts\":[..]}}: {e}", path.display()))?;
            if file.counts.len() < 2 || file.counts.len() > MAX_BUCKETS {
                return Err(format!("{}: need 2..={MAX_BUCKETS} bucket counts", path.display()));
            }
            let alpha = args.alpha.expect("clap requires --alpha with --from-calibration-buckets");
            if !(alpha.is_finite() && alpha > 0.0) {
                return Err(format!("--alpha {alpha}: must be a finite number > 0"));
            }
            from_calibration_buckets(&file.counts, alpha)
        }
        None => {
            if args.p0.len() != args.alt.len() {
                return Err(format!(
                    "--p0 has {} values and --alt {}: one per bucket each",
                    args.p0.len(),
                    args.alt.len()
                ));
            }
            (
                NullKind::DiscreteBuckets { p0: args.p0.clone() },
                EProcess::LikelihoodRatioFixedAlt { alt: args.alt.clone() },
            )
        }
    };
    evidenceos_core::evalue::validate(&kind, &eprocess).map_err(|e| format!("invalid parameters: {e}"))?;
    let (signer, epoch) = match &args.data_dir {
        Some(dir) => {
            let operator = Operator::open(dir)?;
            (operator.signer(&args.signer)?, operator.epoch())
        }
        None => (Signer::load(&args.signer, None)?, 0),
    };
    let unsigned = NullSpecContract {
        schema: SCHEMA.to_string(),
        nullspec_id: [0; 32],
        oracle_id: args.oracle_id.clone(),
        oracle_resolution_hash: args.resolution_hash,
        holdout_handle: args.holdout.clone(),
        epoch_created: args.epoch_created.unwrap_or(epoch),
        ttl_epochs: args.ttl_epochs,
        kind,
        eprocess,
        calibration_manifest_hash: args.calibration_hash,
        created_by: signer.key_id.clone(),
        signature_ed25519: Vec::new(),
    };
    let contract = NullSpecContract::sign(unsigned, &signer.seed);
    let mut bytes = contract.to_json();
    bytes.push(b'\n');
    match &args.out {
        Some(path) => {
            write_document(path, &bytes)?;
            Ok(line(&json!({"nullspec_id_hex": hex::encode(contract.nullspec_id), "out": path.display().to_string()})))
        }
        None => Ok(String::from_utf8(bytes).expect("canonical JSON is UTF-8")),
    }
}

pub(crate) fn install(args: &NullspecInstallArgs) -> Outcome<String> {
    let operator = Operator::open(&args.dir.data_dir)?;
    let signer = operator.signer(&args.signer)?;
    let bytes = std::fs::read(&args.contract).map_err(|e| format!("{}: {e}", args.contract.display()))?;
    let contract = NullSpecContract::from_json(&bytes).map_err(|e| format!("{}: {e}", args.contract.display()))?;
    contract.verify(&operator.trusted).map_err(|e| format!("{}: {e}", args.contract.display()))?;
    let id = hex::encode(contract.nullspec_id);
    if operator.environment.nullspecs.contains_key(&id) {
        return Err(format!("NullSpec {id} is already installed"));
    }
    let stored = contract.to_json();
    let payload = json!({
        "nullspec_id_hex": id,
        "oracle_id": contract.oracle_id,
        "holdout_handle": contract.holdout_handle,
        "epoch_created": contract.epoch_created,
        "ttl_epochs": contract.ttl_epochs,
        "created_by": contract.created_by,
        "contract_sha256_hex": hex::encode(sha256(&stored)),
    });
    let path = format!("nullspec/{id}.json");
    let (event, _) = operator.record(&signer, EventType::NullspecInstall, payload, |_| {
        Ok(vec![Write { path: path.clone(), bytes: stored.clone() }])
    })?;
    Ok(line(
        &json!({"event_id": event.event_id, "event_type": "nullspec_install", "nullspec_id_hex": id, "path": path}),
    ))
}

pub(crate) fn activate(args: &NullspecActivateArgs) -> Outcome<String> {
    let operator = Operator::open(&args.dir.data_dir)?;
    let signer = operator.signer(&args.signer)?;
    let env = &operator.environment;
    let id = hex::encode(args.nullspec_id);
    let contract =
        env.nullspecs.get(&id).ok_or_else(|| format!("NullSpec {id} is not installed (nullspec install)"))?;
    if contract.oracle_id != args.oracle_id {
        return Err(format!("NullSpec {id} was made for oracle {:?}, not {:?}", contract.oracle_id, args.oracle_id));
    }
    if contract.holdout_handle != args.holdout {
        return Err(format!(
            "NullSpec {id} was made for holdout {:?}, not {:?}",
            contract.holdout_handle, args.holdout
        ));
    }
    if !env.holdouts.contains_key(&args.holdout) {
        return Err(format!("unknown holdout {:?}: no holdouts/{}/ in the data directory", args.holdout, args.holdout));
    }
    if contract.is_expired(env.epoch) {
        return Err(format!(
            "NullSpec {id} expired at epoch {} (created {}, ttl {}); the epoch is {}",
            contract.epoch_created.saturating_add(contract.ttl_epochs) + 1,
            contract.epoch_created,
            contract.ttl_epochs,
            env.epoch
        ));
    }
    let pair = (args.oracle_id.clone(), args.holdout.clone());
    let previous = env.active_nullspecs.get(&pair).cloned();
    if previous.as_deref() == Some(id.as_str()) {
        return Err(format!(
            "NullSpec {id} is already active for oracle {} on holdout {}",
            args.oracle_id, args.holdout
        ));
    }
    let mut mappings = env.active_nullspecs.clone();
    mappings.insert(pair, id.clone());
    let payload = json!({
        "oracle_id": args.oracle_id,
        "holdout_ref": args.holdout,
        "nullspec_id_hex": id,
        "previous_nullspec_id_hex": previous,
    });
    let (event, _) = operator.record(&signer, EventType::NullspecActivate, payload, |_| {
        Ok(vec![Write { path: ACTIVE_MAP_FILE.into(), bytes: active_map_json(&mappings) }])
    })?;
    Ok(line(&json!({
        "event_id": event.event_id,
        "event_type": "nullspec_activate",
        "oracle_id": args.oracle_id,
        "holdout_ref": args.holdout,
        "nullspec_id_hex": id,
        "previous_nullspec_id_hex": previous,
    })))
}

/// `nullspec/active_map.json` in the shape the daemon reads (SPEC §5.4).
pub(crate) fn active_map_json(mappings: &BTreeMap<(String, String), String>) -> Vec<u8> {
    let entries: Vec<Value> = mappings
        .iter()
        .map(|((oracle_id, holdout), id)| json!({"oracle_id": oracle_id, "holdout_handle": holdout, "nullspec_id_hex": id}))
        .collect();
    let mut bytes = serde_json::to_vec_pretty(&json!({ "mappings": entries })).expect("plain JSON");
    bytes.push(b'\n');
    bytes
}

fn summary(contract: &NullSpecContract, env: &evidenceos_core::environment::Environment) -> Value {
    let id = hex::encode(contract.nullspec_id);
    let active_for: Vec<Value> = env
        .active_nullspecs
        .iter()
        .filter(|(_, active)| **active == id)
        .map(|((oracle_id, holdout), _)| json!({"oracle_id": oracle_id, "holdout_ref": holdout}))
        .collect();
    json!({
        "nullspec_id_hex": id,
        "oracle_id": contract.oracle_id,
        "holdout_handle": contract.holdout_handle,
        "epoch_created": contract.epoch_created,
        "ttl_epochs": contract.ttl_epochs,
        "expired": contract.is_expired(env.epoch),
        "kind": contract.kind,
        "eprocess": contract.eprocess.kind_name(),
        "oracle_resolution_hash_hex": hex::encode(contract.oracle_resolution_hash),
        "created_by": contract.created_by,
        "active_for": active_for,
    })
}

pub(crate) fn list(args: &NullspecListArgs) -> Outcome<String> {
    let env = super::oracle::environment_read_only(&args.dir.data_dir)?;
    let contracts: Vec<Value> = env.nullspecs.values().map(|c| summary(c, &env)).collect();
    Ok(pretty(&json!({"epoch": env.epoch, "nullspecs": contracts})))
}

pub(crate) fn show(args: &NullspecShowArgs) -> Outcome<String> {
    let env = super::oracle::environment_read_only(&args.dir.data_dir)?;
    let id = hex::encode(args.nullspec_id);
    let contract = env.nullspecs.get(&id).ok_or_else(|| format!("NullSpec {id} is not installed"))?;
    let contract_json: Value = serde_json::from_slice(&contract.to_json()).expect("canonical JSON parses");
    Ok(pretty(&json!({"status": summary(contract, &env), "contract": contract_json})))
}
