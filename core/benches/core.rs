//! Core benchmarks (divan): ETL append, roots and proofs at 10^3 and 10^6 leaves, STH signing,
//! capsule encoding, one ExecuteClaimV2 through the kernel, and journal replay per record.
//!
//! `cargo bench -p evidenceos-core --bench core`; `cargo test -p evidenceos-core --benches` runs
//! each benchmark once as a smoke test. Large trees are built once per process, not per iteration.

use std::cell::RefCell;
use std::sync::OnceLock;

use divan::Bencher;
use divan::counter::ItemsCount;
use evidenceos_core::capsule::{Capsule, CodeManifest, LedgerSnapshot};
use evidenceos_core::environment::Environment;
use evidenceos_core::etl::{Etl, sign_tree_head};
use evidenceos_core::hash::sha256;
use evidenceos_core::holdout::HoldoutFiles;
use evidenceos_core::keys::{KeyFile, Keyring, key_file_name, key_id_for_seed};
use evidenceos_core::memdisk::MemDisk;
use evidenceos_core::merkle::{MerkleTree, leaf_hash};
use evidenceos_core::request::{ArtifactInput, CreateClaimV2};
use evidenceos_core::{
    Command, Input, Kernel, KernelConfig, Output, Principal, RecoveryFiles, Request, RequestId, Response, Role,
    Timestamp,
};

fn main() {
    divan::main();
}

const SIZES: [u64; 2] = [1_000, 1_000_000];
const SEED: [u8; 32] = [7; 32];
const NOW: Timestamp = Timestamp(1_760_000_000_000);

/// A tree of `size` leaves, built once per size for the whole process.
fn tree(size: u64) -> &'static MerkleTree {
    static SMALL: OnceLock<MerkleTree> = OnceLock::new();
    static LARGE: OnceLock<MerkleTree> = OnceLock::new();
    let cell = if size == SIZES[0] { &SMALL } else { &LARGE };
    assert!(SIZES.contains(&size));
    cell.get_or_init(|| {
        let mut tree = MerkleTree::new();
        for n in 0..size {
            tree.push(leaf_hash(&n.to_be_bytes()));
        }
        tree
    })
}

/// Hashing and adding one ~600-byte capsule-sized leaf to a log that already holds `size`.
#[divan::bench(args = SIZES, sample_count = 50, sample_size = 1000)]
fn etl_append(bencher: Bencher, size: u64) {
    // The tree's leaves are 8-byte payloads: 16-byte frames.
    let frame = (8 + evidenceos_core::frame::FRAME_OVERHEAD) as u64;
    let mut etl = Etl::recovered(tree(size).clone(), (0..size).map(|n| n * frame).collect(), size * frame);
    let payload = vec![b'x'; 600];
    let mut frames = Vec::with_capacity(1 << 20);
    bencher.bench_local(|| {
        frames.clear();
        etl.append(divan::black_box(&payload), &mut frames)
    });
}

#[divan::bench(args = SIZES)]
fn etl_root(bencher: Bencher, size: u64) {
    let tree = tree(size);
    // An odd size exercises the right-edge recursion, the worst case.
    bencher.bench(|| tree.root_at(divan::black_box(size - 1)));
}

#[divan::bench(args = SIZES)]
fn inclusion_proof(bencher: Bencher, size: u64) {
    let tree = tree(size);
    bencher.bench(|| tree.inclusion_proof(divan::black_box(size / 3), divan::black_box(size - 1)));
}

#[divan::bench(args = SIZES)]
fn consistency_proof(bencher: Bencher, size: u64) {
    let tree = tree(size);
    bencher.bench(|| tree.consistency_proof(divan::black_box(size / 3 + 1), divan::black_box(size - 1)));
}

fn keyring() -> Keyring {
    let id = key_id_for_seed(&SEED);
    Keyring::from_files(&[KeyFile { name: key_file_name(&id), bytes: SEED.to_vec() }], id.to_hex().as_bytes()).unwrap()
}

#[divan::bench]
fn sth_sign(bencher: Bencher) {
    let keyring = keyring();
    let root = tree(SIZES[0]).root();
    bencher.bench(|| sign_tree_head(&keyring, divan::black_box(1000), root));
}

#[divan::bench]
fn capsule_encode(bencher: Bencher) {
    let hex = |b: u8| hex::encode([b; 32]);
    let capsule = Capsule {
        schema: evidenceos_core::capsule::CAPSULE_SCHEMA.into(),
        claim_id_hex: hex(1),
        topic_id_hex: hex(2),
        output_schema_id: "legacy/v1".into(),
        code_ir_manifests: vec![CodeManifest { kind: "wasm".into(), hash_hex: hex(3) }],
        dependency_capsule_hashes: Vec::new(),
        canonical_output_hash_hex: hex(4),
        wasm_hash_hex: hex(3),
        holdout_ref: "demo".into(),
        holdout_commitment_hex: hex(5),
        ledger: LedgerSnapshot {
            alpha: 0.05,
            alpha_prime: 0.003125,
            k_bits_total: 4.0,
            barrier: 320.0,
            wealth: 1.0e9,
            w_max: 1.0e9,
            access_credit_spent: 4.0,
        },
        e_value: 1.8446744073709552e19,
        certified: true,
        decision: "APPROVE".into(),
        reason_codes: vec![1],
        nullspec_id_hex: hex(6),
        oracle_resolution_hash_hex: hex(7),
        eprocess_kind: "likelihood_ratio".into(),
        epoch: 0,
        state: "CERTIFIED".into(),
    };
    bencher.bench(|| divan::black_box(&capsule).to_bytes());
}

/// A kernel on the in-memory disk with the demo holdout (its pool budget raised for long runs).
struct Harness {
    kernel: Kernel,
    disk: MemDisk,
    next: u64,
    module: Vec<u8>,
}

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

fn key_files() -> (Vec<KeyFile>, Vec<u8>) {
    let id = key_id_for_seed(&SEED);
    (vec![KeyFile { name: key_file_name(&id), bytes: SEED.to_vec() }], id.to_hex().into_bytes())
}

/// Journal records are kept (no checkpoint) so the replay benchmark sees them all.
fn config() -> KernelConfig {
    KernelConfig { environment: environment(), checkpoint_every: u64::MAX, ..KernelConfig::default() }
}

impl Harness {
    fn new() -> Self {
        let mut disk = MemDisk::new();
        let (keys, active) = key_files();
        let mut kernel = Kernel::recover(config(), disk.recovery_files(keys, active)).unwrap();
        disk.drive(&mut kernel, NOW);
        let module = wat::parse_file(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/claim_mod3.wat")).unwrap();
        Self { kernel, disk, next: 0, module }
    }

    fn command(&mut self, command: Command) -> Response {
        self.next += 1;
        let id = RequestId(self.next);
        let principal = Principal::new("bench-agent", Role::Agent);
        self.kernel.handle(NOW, Input::Request { id, principal, request: Request::Command(command) });
        self.disk
            .drive(&mut self.kernel, NOW)
            .into_iter()
            .find_map(|o| match o {
                Output::Reply(reply_id, reply) if reply_id == id => Some(reply),
                _ => None,
            })
            .expect("answered once durable")
            .expect("accepted")
    }

    /// Create, commit, freeze and seal a fresh claim; returns its id.
    fn sealed_claim(&mut self) -> Vec<u8> {
        let request = CreateClaimV2::fast_legacy(format!("bench-{}", self.next), "demo");
        let Response::ClaimCreated { claim_id, .. } = self.command(Command::CreateClaimV2(Box::new(request))) else {
            panic!("claim created expected")
        };
        let claim_id = claim_id.to_vec();
        let artifacts = vec![ArtifactInput { kind: "wasm".into(), hash: sha256(&self.module).to_vec() }];
        let wasm_module = self.module.clone();
        self.command(Command::CommitArtifacts { claim_id: claim_id.clone(), artifacts, wasm_module });
        self.command(Command::FreezeGates { claim_id: claim_id.clone() });
        self.command(Command::SealClaim { claim_id: claim_id.clone() });
        claim_id
    }

    fn execute(&mut self, claim_id: Vec<u8>) -> Response {
        self.command(Command::ExecuteClaimV2 { claim_id })
    }
}

/// One ExecuteClaimV2 through the kernel: wasm run, oracle, ledger, e-value, capsule, journal
/// record and ETL leaf, and the storage phase on the in-memory disk.
#[divan::bench(sample_count = 50, sample_size = 20)]
fn kernel_execute_claim_v2(bencher: Bencher) {
    let harness = RefCell::new(Harness::new());
    bencher
        .with_inputs(|| harness.borrow_mut().sealed_claim())
        .bench_local_values(|claim_id| harness.borrow_mut().execute(claim_id));
}

/// A full lifecycle (five durable commands) through the kernel, for the per-lifecycle CPU cost.
#[divan::bench(sample_count = 20, sample_size = 10)]
fn kernel_lifecycle(bencher: Bencher) {
    let harness = RefCell::new(Harness::new());
    bencher.bench_local(|| {
        let mut harness = harness.borrow_mut();
        let claim_id = harness.sealed_claim();
        harness.execute(claim_id)
    });
}

/// Journal replay: recovery of a data directory whose journal holds 2,000 lifecycle records
/// (400 lifecycles) after the checkpoint; the counter gives the cost per record.
#[divan::bench(sample_count = 10, sample_size = 1)]
fn journal_replay(bencher: Bencher) {
    const LIFECYCLES: u64 = 400;
    let mut harness = Harness::new();
    for _ in 0..LIFECYCLES {
        let claim_id = harness.sealed_claim();
        harness.execute(claim_id);
    }
    let (keys, active) = key_files();
    bencher
        .counter(ItemsCount::new(LIFECYCLES * 5))
        .with_inputs(|| -> RecoveryFiles { harness.disk.recovery_files(keys.clone(), active.clone()) })
        .bench_local_values(|files| Kernel::recover(config(), files).unwrap());
}
