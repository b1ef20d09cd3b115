//! Crash at every effect boundary of every standard vector (SPEC §8): the simulated disk loses
//! what no completed sync covered, an unsynced append may survive torn at any byte, and after
//! `Kernel::recover` the state must equal a replay of a prefix of the steps that holds every
//! acknowledged one, with every head signed before the crash still provably in the log.
//! A seeded random schedule of crash points and tears runs longer on demand:
//! `EVIDENCEOS_CRASH_SEEDS=N cargo test -p evidenceos-conformance --test crash`.

use std::path::Path;

use evidenceos_conformance::vector::{Vector, load_dir};
use evidenceos_conformance::{Reply, run_reference};
use evidenceos_core::memdisk::MemDisk;
use evidenceos_core::merkle::verify_consistency;
use evidenceos_core::state::State;
use evidenceos_core::{Input, Kernel, Output, Principal, Query, Request, RequestId, Response, Role, SignedTreeHead};

const VECTOR_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors");

fn boot(vector: &Vector, disk: &mut MemDisk) -> Kernel {
    let files = disk.recovery_files(vector.key_files(), vector.active_key_id_file());
    let mut kernel = Kernel::recover(vector.kernel_config(), files).expect("recovery succeeds");
    disk.drive(&mut kernel, vector.boot_time());
    assert!(!kernel.is_recovering());
    kernel
}

/// Inputs of every step, resolved against the reference replies (a crash run only sends a step
/// after every step before it was answered, so the resolutions agree).
fn inputs(vector: &Vector, replies: &[Reply]) -> Vec<Input> {
    (0..vector.steps.len()).map(|i| vector.input(i, replies).expect("reference inputs resolve")).collect()
}

/// State and durable size after each prefix of the steps, on a disk that never crashes.
fn prefix_states(vector: &Vector, inputs: &[Input]) -> Vec<(State, u64)> {
    (0..=inputs.len())
        .map(|prefix| {
            let mut disk = MemDisk::new();
            let mut kernel = boot(vector, &mut disk);
            for (step, input) in inputs[..prefix].iter().enumerate() {
                let now = vector.steps[step].now();
                kernel.handle(now, input.clone());
                disk.drive(&mut kernel, now);
            }
            (kernel.state().clone(), kernel.durable_tree_size())
        })
        .collect()
}

struct Crashed {
    disk: MemDisk,
    /// Steps answered before the crash (replies come in step order).
    acknowledged: usize,
    heads: Vec<SignedTreeHead>,
    finished: bool,
}

/// Runs the steps one at a time until `boundary` effects have completed.
fn run_until(vector: &Vector, inputs: &[Input], boundary: usize) -> Crashed {
    let mut disk = MemDisk::new();
    let mut kernel = boot(vector, &mut disk);
    let (mut applied, mut acknowledged, mut heads) = (0usize, 0usize, Vec::new());
    for (step, input) in inputs.iter().enumerate() {
        let now = vector.steps[step].now();
        kernel.handle(now, input.clone());
        while let Some(output) = kernel.poll() {
            match output {
                Output::Effect(id, effect) => {
                    if applied == boundary {
                        return Crashed { disk, acknowledged, heads, finished: false };
                    }
                    applied += 1;
                    let outcome = disk.apply(&effect);
                    kernel.handle(now, Input::Done { effect: id, outcome });
                }
                Output::Reply(..) => {
                    acknowledged += 1;
                    heads.push(kernel.signed_tree_head().expect("serving"));
                }
                _ => {}
            }
        }
    }
    Crashed { disk, acknowledged, heads, finished: true }
}

/// Recovers from `crashed` torn as `tear` says and checks the contract.
fn check(
    vector: &Vector,
    prefixes: &[(State, u64)],
    crashed: &Crashed,
    tear: impl FnMut(usize) -> usize,
) -> Result<(), String> {
    let mut tear = tear;
    let mut disk = crashed.disk.clone();
    disk.crash_torn(|_, unsynced| tear(unsynced));
    let mut kernel = boot(vector, &mut disk);
    let recovered = (kernel.state().clone(), kernel.durable_tree_size());
    if !prefixes.iter().skip(crashed.acknowledged).any(|p| *p == recovered) {
        return Err("state is no replay of a prefix holding every acknowledged step".into());
    }
    let now_head = kernel.signed_tree_head().expect("serving");
    for old in crashed.heads.iter().filter(|h| h.tree_size > 0) {
        let auditor = Principal::new("crash-check", Role::Auditor);
        let query = Query::GetConsistencyProof { first_tree_size: old.tree_size, second_tree_size: 0 };
        kernel.handle(
            vector.end_time(),
            Input::Request { id: RequestId(u64::MAX), principal: auditor, request: Request::Query(query) },
        );
        let Some(Output::Reply(_, Ok(Response::ConsistencyProof { path, first_root_hash, .. }))) = kernel.poll() else {
            return Err(format!("head of size {} is no longer provable", old.tree_size));
        };
        if first_root_hash != old.root_hash {
            return Err(format!("a leaf under the signed head of size {} changed", old.tree_size));
        }
        verify_consistency(old.tree_size, now_head.tree_size, &old.root_hash, &now_head.root_hash, &path)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[test]
fn every_effect_boundary_of_every_vector_recovers() {
    let vectors = load_dir(Path::new(VECTOR_DIR)).unwrap();
    assert!(vectors.len() >= 10, "all standard vectors are loaded");
    let mut checked = 0usize;
    for vector in &vectors {
        let reference = run_reference(vector).unwrap();
        let inputs = inputs(vector, &reference.replies);
        let prefixes = prefix_states(vector, &inputs);
        for boundary in 0.. {
            let crashed = run_until(vector, &inputs, boundary);
            // Torn nowhere, after one byte, halfway, and all but the last byte.
            for (label, tear) in [
                ("clean", (|_| 0) as fn(usize) -> usize),
                ("one byte", |u| u.min(1)),
                ("half", |u| u / 2),
                ("all but one", |u| u.saturating_sub(1)),
            ] {
                if let Err(violation) = check(vector, &prefixes, &crashed, tear) {
                    panic!("{} boundary {boundary}, {label} tear: {violation}", vector.name);
                }
                checked += 1;
            }
            if crashed.finished {
                break;
            }
        }
    }
    assert!(checked > 400, "{checked} crash points");
}

#[test]
fn seeded_random_schedules() {
    let seeds: u64 = std::env::var("EVIDENCEOS_CRASH_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let vectors = load_dir(Path::new(VECTOR_DIR)).unwrap();
    let prepared: Vec<_> = vectors
        .iter()
        .map(|vector| {
            let reference = run_reference(vector).unwrap();
            let inputs = inputs(vector, &reference.replies);
            let prefixes = prefix_states(vector, &inputs);
            (vector, inputs, prefixes)
        })
        .collect();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for seed in 0..seeds {
        for (vector, inputs, prefixes) in &prepared {
            let boundary = (next() % 200) as usize;
            let crashed = run_until(vector, inputs, boundary);
            let keep = next();
            let tear = move |unsynced: usize| if unsynced == 0 { 0 } else { (keep % (unsynced as u64 + 1)) as usize };
            if let Err(violation) = check(vector, prefixes, &crashed, tear) {
                panic!("seed {seed}: {} boundary {boundary}: {violation}", vector.name);
            }
        }
    }
}
