//! Settled claims keep neither their code nor a copy of their capsule in the checkpoint, and a
//! data directory whose `state.json` has an older format still starts.
//!
//! `fixtures/checkpoint_v1/` and `fixtures/checkpoint_v2/` are the data directories the kernel
//! wrote, before each format change, for conformance vector `claims_revocation_taint` (copied
//! from its files snapshot): a revoked parent claim and its tainted child, both settled, the
//! journal compacted into `state.json`. v1 copies each capsule and keeps settled claims' code;
//! v2 keeps neither; both hold the whole state in `state.json`. The current format, v3, keeps
//! the rows in row files (`state.0.log`) and only what changed is appended by each checkpoint.

use evidenceos_core::environment::Environment;
use evidenceos_core::holdout::holdout_files;
use evidenceos_core::keys::{KeyFile, key_file_name, key_id_for_seed};
use evidenceos_core::memdisk::MemDisk;
use evidenceos_core::merkle::{leaf_hash, verify_inclusion};
use evidenceos_core::request::FetchedCapsule;
use evidenceos_core::{
    Command, FileId, Input, Kernel, KernelConfig, LogEvent, Output, Principal, Query, Request, RequestId, Response,
    Role, RowFile, Timestamp,
};
use serde_json::Value;

const SEED: [u8; 32] = [0x66; 32];
const NOW: Timestamp = Timestamp(1_765_000_000_000);

fn fixture_of(version: &str, name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/checkpoint_{version}/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn fixture(name: &str) -> Vec<u8> {
    fixture_of("v1", name)
}

/// The row-file records, as `[table, key, row]` values.
fn state_log_rows(bytes: &[u8]) -> Vec<Value> {
    let scan = evidenceos_core::frame::scan(bytes, 0).unwrap();
    scan.records.iter().map(|r| serde_json::from_slice(r.payload).unwrap()).collect()
}

/// The payload of leaf `index` of an `etl.log`.
fn leaf(etl: &[u8], index: u64) -> Vec<u8> {
    evidenceos_core::frame::scan(etl, 0).unwrap().records[index as usize].payload.to_vec()
}

fn config() -> KernelConfig {
    let labels: Vec<u8> = (0..64).map(|i| u8::from(i % 3 == 0)).collect();
    let environment =
        Environment::default().with_holdouts(&[holdout_files("demo", [0xd0; 32], &labels, 1_700_000_000)]).unwrap();
    KernelConfig { environment, ..KernelConfig::default() }
}

fn boot(disk: &mut MemDisk) -> (Kernel, Vec<Output>) {
    let id = key_id_for_seed(&SEED);
    let keys = vec![KeyFile { name: key_file_name(&id), bytes: SEED.to_vec() }];
    let mut kernel = Kernel::recover(config(), disk.recovery_files(keys, id.to_hex().into_bytes())).unwrap();
    let outputs = disk.drive(&mut kernel, NOW);
    assert!(!kernel.is_recovering() && kernel.is_idle());
    (kernel, outputs)
}

fn ask(disk: &mut MemDisk, kernel: &mut Kernel, request: Request) -> Response {
    let principal = Principal::new("op", Role::Operator);
    kernel.handle(NOW, Input::Request { id: RequestId(7), principal, request });
    let outputs = disk.drive(kernel, NOW);
    let reply = outputs.into_iter().find_map(|o| if let Output::Reply(_, reply) = o { Some(reply) } else { None });
    reply.expect("answered").expect("accepted")
}

fn settled_claims(checkpoint: &Value) -> Vec<(String, &Value)> {
    let claims = checkpoint["state"]["claims"]["claims"].as_object().unwrap();
    claims.iter().filter(|(_, claim)| !claim["capsule"].is_null()).map(|(id, claim)| (id.clone(), claim)).collect()
}

/// GetCapsule and FetchCapsule answer `expected` for the claim, with a proof of the leaf.
fn assert_serves_capsule(disk: &mut MemDisk, kernel: &mut Kernel, claim_id: &[u8], expected: &[u8]) {
    let get = ask(disk, kernel, Request::Query(Query::GetCapsule { claim_id: claim_id.to_vec() }));
    let Response::Capsule { capsule, .. } = get else { panic!("a capsule expected, got {get:?}") };
    assert_eq!(capsule.as_read(), Some(expected));
    let fetch = ask(disk, kernel, Request::Query(Query::FetchCapsule { claim_id: claim_id.to_vec() }));
    let Response::FetchedCapsule(fetched) = fetch else { panic!("a fetched capsule expected, got {fetch:?}") };
    let FetchedCapsule { capsule, etl_index, sth, inclusion_path, leaf_hash: leaf, .. } = *fetched;
    assert_eq!(capsule.as_read(), Some(expected));
    assert_eq!(leaf, leaf_hash(expected));
    verify_inclusion(&leaf, etl_index, sth.tree_size, &inclusion_path, &sth.root_hash).unwrap();
}

/// Starts on the fixture of checkpoint format `version`, checks the migration event and the
/// v3 files written at start, that every capsule is served from the log, that a migrated
/// settled claim can be revoked, and that a restart loads the new files as they are.
fn migrates(version: &str, capsule_copies_dropped: u64, code_dropped: u64) {
    let old_bytes = fixture_of(version, "state.json");
    let old: Value = serde_json::from_slice(&old_bytes).unwrap();
    let from_format = format!("evidenceos.checkpoint.{version}");
    assert_eq!(old["format"], from_format.as_str());
    let etl = fixture_of(version, "etl.log");
    let mut disk = MemDisk::with_durable_files([
        (FileId::Etl, etl.clone()),
        (FileId::Journal, fixture_of(version, "journal.log")),
        (FileId::Checkpoint, old_bytes.clone()),
    ]);
    let (mut kernel, outputs) = boot(&mut disk);
    let migrated = LogEvent::CheckpointMigrated { from_format, capsule_copies_dropped, code_dropped };
    assert!(outputs.contains(&Output::Event(migrated)), "{outputs:?}");

    // Written at start in the current format: state.json without tables, every row in state.0.log,
    // settled claims without a capsule copy or code.
    let written: Value = serde_json::from_slice(disk.contents(FileId::Checkpoint)).unwrap();
    assert_eq!(written["format"], "evidenceos.checkpoint.v3");
    assert!(written.get("state").is_none() && disk.contents(FileId::Checkpoint).len() < 1024);
    let rows = state_log_rows(disk.contents(FileId::StateLog(RowFile::Zero)));
    let claims: Vec<&Value> = rows.iter().filter(|r| r[0] == "claims").map(|r| &r[2]).collect();
    assert_eq!(claims.len(), 2);
    for claim in claims {
        assert!(claim["capsule"].get("bytes").is_none(), "{claim} still copies its capsule");
        assert_eq!((claim["wasm"].as_str(), claim["artifacts"].as_array().map(Vec::len)), (Some(""), Some(0)));
    }
    assert_eq!(
        written["rows"],
        serde_json::json!({"generation": 0, "len": disk.contents(FileId::StateLog(RowFile::Zero)).len()})
    );

    // Every settled claim's capsule is served, byte for byte, from the log (and equals the
    // copy a v1 checkpoint carried).
    for (id, claim) in settled_claims(&old) {
        let expected = leaf(&etl, claim["capsule"]["etl_index"].as_u64().unwrap());
        if let Some(copy) = claim["capsule"].get("bytes") {
            assert_eq!(copy.as_str().unwrap().as_bytes(), expected.as_slice());
        }
        assert_serves_capsule(&mut disk, &mut kernel, &hex::decode(&id).unwrap(), &expected);
    }
    // Revocation still works on a migrated settled claim: the tainted child can be revoked.
    let child = settled_claims(&old).into_iter().find(|(_, c)| c["state"] == "TAINTED").unwrap().0;
    let revoke = Command::RevokeClaim { claim_id: hex::decode(&child).unwrap(), reason: "after migration".into() };
    assert!(matches!(ask(&mut disk, &mut kernel, Request::Command(revoke)), Response::Revoked { .. }));

    // A restart on the migrated files loads the new format as is and serves the same capsules.
    let state = kernel.state().clone();
    disk.crash();
    let (mut again, outputs) = boot(&mut disk);
    assert!(!outputs.iter().any(|o| matches!(o, Output::Event(LogEvent::CheckpointMigrated { .. }))));
    assert_eq!(again.state(), &state);
    for (id, claim) in settled_claims(&old) {
        let expected = leaf(&etl, claim["capsule"]["etl_index"].as_u64().unwrap());
        assert_serves_capsule(&mut disk, &mut again, &hex::decode(&id).unwrap(), &expected);
    }
}

#[test]
fn a_v1_checkpoint_is_migrated_on_first_start_and_serves_every_capsule_from_the_log() {
    migrates("v1", 2, 2);
}

#[test]
fn a_v2_checkpoint_is_migrated_on_first_start_into_a_row_file() {
    migrates("v2", 0, 0);
}

#[test]
fn a_checkpoint_whose_capsule_copy_differs_from_the_log_refuses_to_start() {
    let mut old: Value = serde_json::from_slice(&fixture("state.json")).unwrap();
    let claims = old["state"]["claims"]["claims"].as_object_mut().unwrap();
    let claim = claims.values_mut().next().unwrap();
    claim["capsule"]["bytes"] = Value::from("{\"tampered\":true}");
    let disk = MemDisk::with_durable_files([
        (FileId::Etl, fixture("etl.log")),
        (FileId::Journal, fixture("journal.log")),
        (FileId::Checkpoint, serde_json::to_vec(&old).unwrap()),
    ]);
    let id = key_id_for_seed(&SEED);
    let keys = vec![KeyFile { name: key_file_name(&id), bytes: SEED.to_vec() }];
    let refused = Kernel::recover(config(), disk.recovery_files(keys, id.to_hex().into_bytes())).unwrap_err();
    assert!(refused.to_string().contains("differs from capsule"), "{refused}");
}
