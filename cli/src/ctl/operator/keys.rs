//! `keys generate|list|activate`: ETL signing keys (SPEC §4) and the operator keys that sign
//! governance changes.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;

use evidenceos_core::governance::EventType;
use evidenceos_core::keys::{KeyId, key_file_name, key_id_for_seed, public_key_for_seed};
use serde_json::{Value, json};

use super::{Operator, Outcome, Write, line, pretty, read_seed};
use crate::ctl::operator_args::{KeysActivateArgs, KeysGenerateArgs, KeysListArgs};

const ACTIVE_KEY_FILE: &str = "keys/active_key_id";

pub(crate) fn generate(args: &KeysGenerateArgs) -> Outcome<String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("no OS randomness: {e}"))?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&args.out)
        .map_err(|e| format!("--out {}: {e}", args.out.display()))?;
    file.write_all(&seed).and_then(|()| file.sync_all()).map_err(|e| format!("--out {}: {e}", args.out.display()))?;
    evidenceos_io_sync::sync_parent(&args.out).map_err(|e| e.to_string())?;
    Ok(line(&json!({
        "seed_file": args.out.display().to_string(),
        "key_id": key_id_for_seed(&seed).to_hex(),
        "public_key_hex": hex::encode(public_key_for_seed(&seed)),
    })))
}

pub(crate) fn list(args: &KeysListArgs) -> Outcome<String> {
    let root = &args.dir.data_dir;
    let reader = evidenceos_io_sync::DataDir::open_read_only(root).map_err(|e| e.to_string())?;
    let files = reader.read_signing_keys().map_err(|e| e.to_string())?;
    let active = String::from_utf8_lossy(&files.active_key_id).trim_end().to_string();
    let keyring = evidenceos_core::keys::Keyring::from_files(&files.keys, &files.active_key_id)
        .map_err(|e| format!("the daemon would not load these keys: {e}"))?;
    let origin = evidenceos_io_sync::publish::log_origin(args.log_origin.as_ref(), &keyring.active_key_id());
    let mut etl_keys = Vec::new();
    for file in &files.keys {
        let seed: [u8; 32] =
            file.bytes.as_slice().try_into().map_err(|_| {
                format!("keys/{}: expected a 32-byte seed, found {} bytes", file.name, file.bytes.len())
            })?;
        let key_id = key_id_for_seed(&seed).to_hex();
        etl_keys.push(json!({
            "key_id": key_id,
            "public_key_hex": hex::encode(public_key_for_seed(&seed)),
            "active": key_id == active,
            "vkey": evidenceos_io_sync::publish::log_vkey(&origin, &public_key_for_seed(&seed)).to_string(),
        }));
    }
    let operator = reader.read_operator_files().map_err(|e| e.to_string())?;
    let trusted = match &operator.trusted_keys {
        Some(bytes) => evidenceos_core::environment::parse_trusted_keys(bytes).map_err(|e| e.to_string())?,
        None => Default::default(),
    };
    let trusted: Vec<Value> =
        trusted.iter().map(|(kid, key)| json!({"key_id": kid, "public_key_hex": hex::encode(key)})).collect();
    Ok(pretty(&json!({
        "active_key_id": active,
        "log_origin": origin.as_str(),
        "etl_signing_keys": etl_keys,
        "trusted_operator_keys": trusted,
    })))
}

pub(crate) fn activate(args: &KeysActivateArgs) -> Outcome<String> {
    let root = &args.dir.data_dir;
    let operator = Operator::open(root)?;
    let signer = operator.signer(&args.signer)?;
    let reader = evidenceos_io_sync::DataDir::open_read_only(root).map_err(|e| e.to_string())?;
    let files = reader.read_signing_keys().map_err(|e| e.to_string())?;
    let previous = String::from_utf8_lossy(&files.active_key_id).trim_end().to_string();

    let (key_id, seed, install) = match (&args.key_file, &args.etl_key_id) {
        (Some(path), _) => {
            let seed = read_seed(path)?;
            let id = key_id_for_seed(&seed);
            let existing = files.keys.iter().find(|f| f.name == key_file_name(&id));
            if existing.is_some_and(|f| f.bytes != seed) {
                return Err(format!(
                    "keys/{} exists with other bytes; refusing to overwrite a key",
                    key_file_name(&id)
                ));
            }
            (id, seed, existing.is_none())
        }
        (None, Some(id)) => {
            let id = KeyId(*id);
            let file =
                files.keys.iter().find(|f| f.name == key_file_name(&id)).ok_or_else(|| {
                    format!("--etl-key-id {id}: no keys/{} in {}", key_file_name(&id), root.display())
                })?;
            let seed: [u8; 32] =
                file.bytes.as_slice().try_into().map_err(|_| format!("keys/{}: not a 32-byte seed", file.name))?;
            (id, seed, false)
        }
        (None, None) => unreachable!("clap requires --key-file or --etl-key-id"),
    };
    if key_id.to_hex() == previous {
        return Err(format!("{key_id} is already the active signing key"));
    }
    // The keyring the daemon will load at restart must accept the result.
    let mut keys = files.keys.clone();
    if install {
        keys.push(evidenceos_core::keys::KeyFile { name: key_file_name(&key_id), bytes: seed.to_vec() });
    }
    evidenceos_core::keys::Keyring::from_files(&keys, format!("{key_id}\n").as_bytes())
        .map_err(|e| format!("refused: the daemon would not load the keys: {e}"))?;

    let payload = json!({
        "previous_key_id": previous,
        "new_key_id": key_id.to_hex(),
        "public_key_hex": hex::encode(public_key_for_seed(&seed)),
    });
    let (event, _) = operator.record(&signer, EventType::KeyRotated, payload, |_| {
        let mut writes = Vec::new();
        if install {
            writes.push(Write { path: format!("keys/{}", key_file_name(&key_id)), bytes: seed.to_vec() });
        }
        writes.push(Write { path: ACTIVE_KEY_FILE.into(), bytes: format!("{key_id}\n").into_bytes() });
        Ok(writes)
    })?;
    Ok(line(&json!({
        "event_id": event.event_id,
        "event_type": "key_rotated",
        "previous_key_id": previous,
        "active_key_id": key_id.to_hex(),
        "installed": install,
        "takes_effect": "at the daemon's next restart",
    })))
}
