//! The ETL published to a directory (SPEC §10) by the real daemon on both runtimes, checked with
//! `evidenceosctl log verify` / `log monitor` from the files alone. Every wait is bounded.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

mod support;

use support::ctl::{Ran, ctl};
use support::{Daemon, install_demo_holdout, wait_published};

const AGENT: &str = "agent-secret";
const TOKENS: [(&str, &str); 1] = [("EVIDENCEOS_AGENT_TOKENS", AGENT)];

fn json_of(ran: &Ran) -> Value {
    assert_eq!(ran.code, Some(0), "{ran:?}");
    serde_json::from_str(&ran.stdout).unwrap_or_else(|e| panic!("{e}: {ran:?}"))
}

fn start(data: &Path, logs: &Path, publish: &Path, runtime: &str) -> Daemon {
    let publish = publish.to_str().unwrap();
    let flags = ["--runtime", runtime, "--publish-dir", publish, "--checkpoint-interval-ms", "50"];
    support::start_with(data, logs, &flags, &TOKENS)
}

/// Runs the example claim; returns (etl index, claim id, capsule hash).
fn run_claim(daemon: &Daemon, name: &str) -> (u64, String, String) {
    let ran = ctl(&["claim", "run", "--wasm", "../examples/claim_mod3.wat", "--holdout", "demo", "--name", name]
        .iter()
        .copied()
        .chain(["--token", AGENT, "--endpoint", &daemon.addr])
        .collect::<Vec<_>>());
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let value = |key: &str| {
        let prefix = format!("{key}:");
        let line = ran.stdout.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("{key}: {ran:?}"));
        line[prefix.len()..].trim().to_string()
    };
    (value("etl_index").parse().unwrap(), value("claim_id"), value("capsule_hash"))
}

fn verify(publish: &Path, vkey: &str, selector: &[&str]) -> Value {
    let url = publish.to_str().unwrap();
    json_of(&ctl(&[&["log", "verify", "--url", url, "--vkey", vkey][..], selector].concat()))
}

fn monitor(publish: &Path, vkey: &str, state: &Path) -> Ran {
    ctl(&["log", "monitor", "--url", publish.to_str().unwrap(), "--vkey", vkey, "--state", state.to_str().unwrap()])
}

/// Every published tile with its inode: a rewritten file gets a new one.
fn inodes(root: &Path) -> Vec<(PathBuf, u64)> {
    let with_inode = |path: PathBuf| {
        let inode = std::fs::metadata(&path).unwrap().ino();
        (path, inode)
    };
    support::files_under(&root.join("tile")).into_iter().map(with_inode).collect()
}

#[test]
fn both_runtimes_publish_a_log_that_verifies_from_the_files_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, publish, state) = (tmp.path().join("data"), tmp.path().join("pub"), tmp.path().join("monitor.json"));
    std::fs::create_dir_all(&data).unwrap();
    install_demo_holdout(&data);

    let daemon = start(&data, tmp.path(), &publish, "tokio");
    let claims = ["first", "second"].map(|name| run_claim(&daemon, name));
    wait_published(&publish, claims[1].0 + 1);
    let keys = json_of(&ctl(&["keys", "list", "--data-dir", data.to_str().unwrap()]));
    let vkey = keys["etl_signing_keys"][0]["vkey"].as_str().unwrap().to_string();
    assert!(daemon.log().contains(&format!("vkey={vkey}")), "the daemon logs the same vkey at start");
    for (index, claim_id, capsule_hash) in &claims {
        let by_index = verify(&publish, &vkey, &["--index", &index.to_string()]);
        assert_eq!(by_index["verified"], true, "{by_index}");
        assert_eq!(by_index["entry"]["kind"], "capsule");
        assert_eq!(by_index["entry"]["claim_id_hex"], claim_id.as_str());
        assert_eq!(by_index["entry"]["capsule_hash_hex"], capsule_hash.as_str());
        assert_eq!(verify(&publish, &vkey, &["--claim-id", claim_id])["index"], *index);
        assert_eq!(verify(&publish, &vkey, &["--capsule-hash", capsule_hash])["index"], *index);
    }
    cross_check(&publish, &vkey);
    let first = json_of(&monitor(&publish, &vkey, &state));
    assert_eq!(first["consistent"], true, "{first}");
    daemon.stop();

    // The sync runtime resumes from the directory without rewriting what it holds.
    let before = inodes(&publish);
    let daemon = start(&data, tmp.path(), &publish, "sync");
    support::revoke_over_connect(&daemon, AGENT, &claims[0].1);
    let size = wait_published(&publish, first["tree_size"].as_u64().unwrap() + 1);
    let after = inodes(&publish);
    for object in &before {
        assert!(after.contains(object), "{} was rewritten", object.0.display());
    }
    let revocation = verify(&publish, &vkey, &["--index", &(size - 1).to_string()]);
    assert_eq!(revocation["entry"]["kind"], "revocation", "{revocation}");
    assert_eq!(revocation["entry"]["capsule_hash_hex"], claims[0].2.as_str());
    cross_check(&publish, &vkey);
    let second = json_of(&monitor(&publish, &vkey, &state));
    assert_eq!(second["tree_size"], size, "{second}");
    assert!(!daemon.log().contains("publish_failed"), "{}", daemon.log());
    daemon.stop();

    // A split view: a copy whose checkpoint has another root, signed by the same key.
    let forged = tmp.path().join("forged");
    copy_dir(&publish, &forged);
    let files = evidenceos_io_sync::DataDir::open_read_only(&data).unwrap().read_recovery_files().unwrap();
    let keyring = evidenceos_core::keys::Keyring::from_files(&files.keys, &files.active_key_id).unwrap();
    let origin = evidenceos_tlog::note::KeyName::new(keys["log_origin"].as_str().unwrap()).unwrap();
    let public_key = keyring.public_key(&keyring.active_key_id()).unwrap();
    let note = evidenceos_tlog::checkpoint::Checkpoint::new(origin, size, [7; 32])
        .sign_with(&public_key, |message| keyring.sign(message));
    std::fs::write(forged.join("checkpoint"), note.to_bytes()).unwrap();
    let kept = std::fs::read(&state).unwrap();
    let split = monitor(&forged, &vkey, &state);
    assert_eq!(split.code, Some(1), "{split:?}");
    assert!(split.stderr.contains("SPLIT VIEW"), "{split:?}");
    assert_eq!(std::fs::read(&state).unwrap(), kept, "the state keeps the last good checkpoint");
    let index = (size - 1).to_string();
    let refused = ctl(&["log", "verify", "--url", forged.to_str().unwrap(), "--vkey", &vkey, "--index", &index]);
    assert_eq!(refused.code, Some(1), "{refused:?}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// Stored hashes computed by the independent implementation from the published entries.
struct StoredHashes(Vec<tlog_tiles::Hash>);

impl tlog_tiles::HashReader for StoredHashes {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog_tiles::Hash>, tlog_tiles::Error> {
        indexes.iter().map(|&i| self.0.get(i as usize).copied().ok_or(tlog_tiles::Error::IndexesNotInTree)).collect()
    }
}

/// The published tiles, served to the independent implementation's tile-verifying reader.
struct PublishedTiles(PathBuf);

impl tlog_tiles::TileReader for PublishedTiles {
    fn height(&self) -> u8 {
        8
    }

    fn read_tiles(&self, tiles: &[tlog_tiles::Tile]) -> Result<Vec<Vec<u8>>, tlog_tiles::Error> {
        let read = |t: &tlog_tiles::Tile| {
            std::fs::read(self.0.join(c2sp_path(t))).map_err(|e| tlog_tiles::Error::InvalidInput(e.to_string()))
        };
        tiles.iter().map(read).collect()
    }

    fn save_tiles(&self, _: &[tlog_tiles::Tile], _: &[Vec<u8>]) {}
}

/// Their tiles use the Go layout (`tile/8/<L>/…`); C2SP drops the height element.
fn c2sp_path(tile: &tlog_tiles::Tile) -> String {
    tile.path().strip_prefix("tile/8/").map(|rest| format!("tile/{rest}")).unwrap()
}

/// Checks the published checkpoint, every tile of its tree and every entry with `signed_note` /
/// `tlog_tiles`, which share no code with ours.
fn cross_check(publish: &Path, vkey: &str) {
    use signed_note::{Note, StandardVerifier, VerifierList};
    let note = Note::from_bytes(&std::fs::read(publish.join("checkpoint")).unwrap()).unwrap();
    let verifiers = VerifierList::new(vec![Box::new(StandardVerifier::new(vkey).unwrap())]);
    let (verified, _) = note.verify(&verifiers).expect("their note verification accepts our checkpoint");
    assert_eq!(verified.len(), 1);
    let checkpoint = tlog_tiles::Checkpoint::from_bytes(note.text()).unwrap();
    let (size, root) = (checkpoint.size(), *checkpoint.hash());
    let mut stored = StoredHashes(Vec::new());
    for bundle_index in 0..size.div_ceil(256) {
        let width = (size - bundle_index * 256).min(256);
        let id = evidenceos_tlog::BundleId::new(bundle_index, width as u16).unwrap();
        let data = std::fs::read(publish.join(id.path())).unwrap();
        let entries = evidenceos_tlog::builder::parse_bundle::<()>(&data, id.width()).unwrap();
        for (offset, entry) in entries.iter().enumerate() {
            let hashes = tlog_tiles::stored_hashes(bundle_index * 256 + offset as u64, entry, &stored).unwrap();
            stored.0.extend(hashes);
        }
    }
    assert_eq!(tlog_tiles::tree_hash(size, &stored).unwrap(), root, "the entries hash to the checkpoint's root");
    for tile in tlog_tiles::Tile::new_tiles(8, 0, size) {
        let ours = std::fs::read(publish.join(c2sp_path(&tile))).unwrap();
        assert_eq!(ours, tile.read_data(&stored).unwrap(), "{}", c2sp_path(&tile));
    }
    let tiles = PublishedTiles(publish.to_path_buf());
    let reader = tlog_tiles::TileHashReader::new(size, root, &tiles);
    for index in 0..size {
        let proof = tlog_tiles::prove_record(size, index, &reader).unwrap();
        let leaf = stored.0[tlog_tiles::stored_hash_index(0, index) as usize];
        tlog_tiles::check_record(&proof, size, root, index, leaf).unwrap();
    }
}
