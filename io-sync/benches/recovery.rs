//! Recovery benchmark: restart on a data directory holding a large log and a journal to replay.
//!
//! `cargo bench -p evidenceos-io-sync --bench recovery -- --leaves 1000000 --records 10000`
//! builds a data directory (a checkpoint covering `--leaves` capsule-sized ETL leaves, then real
//! claim lifecycles leaving `--records` journal records after it, stopped without a final
//! checkpoint as a crash would), then starts a fresh process that times what `evidenceosd`
//! does before serving: read the files, `Kernel::recover`, and the first drive (repair, checkpoint,
//! fresh journal). It prints one JSON line with the time and resident memory (VmRSS) growth per
//! leaf. Without `--bench` (as under `cargo test --benches`) it runs a small smoke size.

use std::path::{Path, PathBuf};
use std::time::Instant;

use evidenceos_core::checkpoint::{CHECKPOINT_FORMAT, Checkpoint, RowsAt, Untabled};
use evidenceos_core::environment::Environment;
use evidenceos_core::hash::sha256;
use evidenceos_core::holdout::HoldoutFiles;
use evidenceos_core::merkle::{MerkleTree, leaf_hash};
use evidenceos_core::request::{ArtifactInput, CreateClaimV2};
use evidenceos_core::{
    Command, Input, Kernel, KernelConfig, Output, Principal, Request, RequestId, Response, Role, Timestamp, frame,
};
use evidenceos_io_sync::{DataDir, FileExecutor, drive};

/// Size of each filler leaf: about one claim capsule.
const LEAF_BYTES: usize = 900;
/// Lifecycles admitted per storage round while building the journal (group commit).
const WAVE: usize = 500;
const NOW: Timestamp = Timestamp(1_760_000_000_000);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    if let Some(dir) = value("--measure-recovery") {
        measure(Path::new(&dir));
        return;
    }
    let full = args.iter().any(|a| a == "--bench");
    let leaves: u64 = value("--leaves").map_or(if full { 1_000_000 } else { 1_000 }, |v| v.parse().unwrap());
    let records: u64 = value("--records").map_or(if full { 10_000 } else { 100 }, |v| v.parse().unwrap());
    let tmp = tempfile::tempdir_in(value("--dir").unwrap_or_else(|| std::env::temp_dir().display().to_string()))
        .expect("temporary data directory");
    let started = Instant::now();
    build(tmp.path(), leaves, records);
    eprintln!("recovery bench: built {leaves} leaves + {records} journal records in {:.1?}", started.elapsed());
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--measure-recovery", &tmp.path().display().to_string()])
        .status()
        .expect("run the measuring process");
    assert!(status.success(), "the measuring process failed");
}

/// The demo holdout with a pool budget that never runs out.
fn environment() -> Environment {
    let labels: Vec<u8> = (0..64).map(|i| u8::from(i % 3 == 0)).collect();
    let manifest = serde_json::json!({
        "schema_version": 1,
        "created_at_unix": 1_700_000_000u64,
        "holdout_handle_hex": hex::encode([0xd0; 32]),
        "labels_sha256_hex": hex::encode(sha256(&labels)),
        "len": labels.len(),
        "holdout_k_bits_budget": 1e15,
        "holdout_access_credit_budget": 1e15,
    });
    let files = HoldoutFiles { holdout_ref: "demo".into(), manifest: manifest.to_string().into_bytes(), labels };
    Environment::default().with_holdouts(&[files]).unwrap()
}

fn config() -> KernelConfig {
    // No periodic checkpoint while building: the journal must keep every record.
    KernelConfig { environment: environment(), checkpoint_every: u64::MAX, ..KernelConfig::default() }
}

fn build(root: &Path, leaves: u64, records: u64) {
    let dir = DataDir::open(root).unwrap();
    dir.ensure_signing_key().unwrap();
    // The log and a checkpoint that covers it, written directly: replaying a million lifecycles
    // would only measure the builder.
    let mut etl = Vec::with_capacity(leaves as usize * (LEAF_BYTES + 8));
    let mut tree = MerkleTree::new();
    for n in 0..leaves {
        let payload =
            format!("{{\"kind\":\"bench_filler\",\"n\":{n:012},\"pad\":\"{}\"}}", "x".repeat(LEAF_BYTES - 40));
        tree.push(leaf_hash(payload.as_bytes()));
        frame::encode_into(payload.as_bytes(), &mut etl);
    }
    std::fs::write(root.join("etl.log"), &etl).unwrap();
    drop(etl);
    let checkpoint = Checkpoint {
        format: CHECKPOINT_FORMAT.into(),
        kernel_version: evidenceos_core::KERNEL_VERSION.into(),
        journal_seq: 0,
        tree_size: leaves,
        root_hash_hex: hex::encode(tree.root()),
        rows: RowsAt::default(),
        compacting: None,
        untabled: Untabled::default(),
    };
    std::fs::write(root.join("state.json"), evidenceos_core::canonical::to_vec(&checkpoint).unwrap()).unwrap();

    let mut kernel = Kernel::recover(config(), dir.read_recovery_files().unwrap()).unwrap();
    let mut executor = FileExecutor::new(&dir).unwrap();
    drive(&mut kernel, &mut executor, NOW);
    let module = wat::parse_file(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/claim_mod3.wat")).unwrap();
    let mut builder = Builder { kernel, executor, next: 0 };
    let lifecycles = records.div_ceil(5) as usize;
    let mut done = 0;
    while done < lifecycles {
        let wave = WAVE.min(lifecycles - done);
        builder.wave(done, wave, &module);
        done += wave;
    }
    // Dropped without a checkpoint, as after a crash: every record waits in the journal.
}

struct Builder {
    kernel: Kernel,
    executor: FileExecutor,
    next: u64,
}

impl Builder {
    /// Admits one command per claim, then runs storage until all are answered (one group commit).
    fn round(&mut self, commands: Vec<Command>) -> Vec<Response> {
        let principal = Principal::new("bench-agent", Role::Agent);
        let first = self.next;
        for command in commands {
            self.next += 1;
            let input = Input::Request {
                id: RequestId(self.next),
                principal: principal.clone(),
                request: Request::Command(command),
            };
            self.kernel.handle(NOW, input);
        }
        let mut replies: Vec<(u64, Response)> = drive(&mut self.kernel, &mut self.executor, NOW)
            .into_iter()
            .filter_map(|o| match o {
                Output::Reply(id, reply) => Some((id.0, reply.expect("accepted"))),
                _ => None,
            })
            .collect();
        replies.sort_by_key(|(id, _)| *id);
        assert_eq!(replies.len() as u64, self.next - first, "every command answered");
        replies.into_iter().map(|(_, r)| r).collect()
    }

    fn wave(&mut self, offset: usize, count: usize, module: &[u8]) {
        let creates = (offset..offset + count)
            .map(|n| {
                Command::CreateClaimV2(Box::new(CreateClaimV2::fast_legacy(format!("recovery-bench-{n}"), "demo")))
            })
            .collect();
        let ids: Vec<Vec<u8>> = self
            .round(creates)
            .into_iter()
            .map(|r| match r {
                Response::ClaimCreated { claim_id, .. } => claim_id.to_vec(),
                other => panic!("claim created expected, got {other:?}"),
            })
            .collect();
        let hash = sha256(module).to_vec();
        let artifacts = || vec![ArtifactInput { kind: "wasm".into(), hash: hash.clone() }];
        self.round(
            ids.iter()
                .map(|id| Command::CommitArtifacts {
                    claim_id: id.clone(),
                    artifacts: artifacts(),
                    wasm_module: module.to_vec(),
                })
                .collect(),
        );
        self.round(ids.iter().map(|id| Command::FreezeGates { claim_id: id.clone() }).collect());
        self.round(ids.iter().map(|id| Command::SealClaim { claim_id: id.clone() }).collect());
        self.round(ids.iter().map(|id| Command::ExecuteClaimV2 { claim_id: id.clone() }).collect());
    }
}

/// `VmRSS` or `VmHWM` of this process, in bytes.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// In a fresh process: what `evidenceosd` does before it serves, timed.
fn measure(root: &Path) {
    let baseline = status_kib("VmRSS:");
    let started = Instant::now();
    let dir = DataDir::open(PathBuf::from(root)).unwrap();
    let files = dir.read_recovery_files().unwrap();
    let read = started.elapsed();
    let (etl_bytes, journal_bytes) = (files.etl.len(), files.journal.len());
    let mut kernel = Kernel::recover(config(), files).unwrap();
    let recovered = started.elapsed();
    let mut executor = FileExecutor::new(&dir).unwrap();
    let mut replayed = 0;
    for output in drive(&mut kernel, &mut executor, NOW) {
        if let Output::Event(evidenceos_core::LogEvent::JournalReplayed { records, .. }) = output {
            replayed = records;
        }
    }
    let total = started.elapsed();
    assert!(!kernel.is_recovering(), "recovery finished");
    let leaves = kernel.durable_tree_size();
    let rss = status_kib("VmRSS:");
    let growth = rss.saturating_sub(baseline);
    let line = serde_json::json!({
        "bench": "recovery",
        "leaves": leaves,
        "journal_records_replayed": replayed,
        "etl_log_bytes": etl_bytes,
        "journal_log_bytes": journal_bytes,
        "read_files_s": read.as_secs_f64(),
        "recover_s": (recovered - read).as_secs_f64(),
        "first_drive_s": (total - recovered).as_secs_f64(),
        "total_s": total.as_secs_f64(),
        "rss_baseline_bytes": baseline,
        "rss_after_bytes": rss,
        "rss_peak_bytes": status_kib("VmHWM:"),
        "rss_growth_per_leaf_bytes": if leaves > 0 { growth as f64 / leaves as f64 } else { 0.0 },
    });
    // The result line is this benchmark's output.
    #[allow(clippy::print_stdout)]
    {
        println!("{line}");
    }
}
