//! `evidenceosctl log verify --index` of one inclusion from local tiles (SPEC §10; issue 16's
//! target: ≤ 50 ms at 10^6 leaves, O(log_256 n) objects read). Each iteration runs the real
//! binary, so the time includes process start. The published directory (checkpoint, tiles,
//! entry bundles) is built once per size with tlog's `LogTiler`, as the publisher would write it.
//!
//! `cargo bench -p evidenceos-cli --bench log_verify`; `cargo test -p evidenceos-cli --benches`
//! runs each size once as a smoke test. The objects read are printed to stderr once per size.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use divan::Bencher;
use evidenceos_tlog::builder::{Completed, LogTiler};
use evidenceos_tlog::checkpoint::Checkpoint;
use evidenceos_tlog::note::{KeyName, NoteSigner};

fn main() {
    divan::main();
}

const SIZES: [u64; 2] = [1_000, 1_000_000];
const SEED: [u8; 32] = [9; 32];
const ORIGIN: &str = "bench.evidenceos.local/etl";

/// A published log of `size` incident leaves, and the vkey that verifies its checkpoint.
struct Published {
    dir: tempfile::TempDir,
    vkey: String,
}

fn write(root: &Path, relative: &str, data: &[u8]) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

fn build(size: u64) -> Published {
    let dir = tempfile::tempdir().unwrap();
    let mut tiler = LogTiler::new();
    let mut completed = Completed::default();
    for n in 0..size {
        // A SPEC §3 incident leaf in canonical JSON, so `log verify` accepts the entry's kind.
        let entry = format!(r#"{{"kind":"bench_incident","n":{n}}}"#);
        tiler.append::<std::io::Error>(entry.as_bytes(), &mut completed).unwrap();
        for tile in completed.tiles.drain(..) {
            write(dir.path(), &tile.id.path(), &tile.data);
        }
        for bundle in completed.bundles.drain(..) {
            write(dir.path(), &bundle.id.path(), &bundle.data);
        }
    }
    let (tiles, bundle) = tiler.partial();
    for tile in tiles {
        write(dir.path(), &tile.id.path(), &tile.data);
    }
    if let Some(bundle) = bundle {
        write(dir.path(), &bundle.id.path(), &bundle.data);
    }
    let signer = NoteSigner::new(KeyName::new(ORIGIN).unwrap(), &SEED);
    let checkpoint = Checkpoint::new(KeyName::new(ORIGIN).unwrap(), size, tiler.root()).sign(&signer).unwrap();
    write(dir.path(), "checkpoint", &checkpoint.to_bytes());
    Published { dir, vkey: signer.verifier_key().to_string() }
}

fn published(size: u64) -> &'static Published {
    static SMALL: OnceLock<Published> = OnceLock::new();
    static LARGE: OnceLock<Published> = OnceLock::new();
    assert!(SIZES.contains(&size));
    let cell = if size == SIZES[0] { &SMALL } else { &LARGE };
    cell.get_or_init(|| build(size))
}

/// One `log verify` run; its JSON answer.
fn verify(log: &Published, index: u64) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_evidenceosctl"))
        .args(["log", "verify", "--url", log.dir.path().to_str().unwrap(), "--vkey", &log.vkey])
        .args(["--index", &index.to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

#[divan::bench(args = SIZES, sample_count = 30, sample_size = 1)]
fn log_verify_one_inclusion(bencher: Bencher, size: u64) {
    let log = published(size);
    // Away from both edges: a full path through the tree.
    let index = size / 3 * 2 + 1;
    let answer = verify(log, index);
    assert_eq!(answer["verified"], true, "{answer}");
    eprintln!("log verify of index {index} in {size} leaves: objects_read={}", answer["objects_read"]);
    bencher.bench(|| verify(log, index));
}
