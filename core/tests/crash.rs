//! The durability contract (SPEC §8) at every effect boundary of a claims workload.
//!
//! For each boundary k the workload runs until exactly k effects have completed, the disk
//! crashes (unsynced data lost; an unsynced append torn at several byte positions) and the
//! kernel recovers. Then:
//! - every request whose reply was released is present;
//! - the recovered state equals a clean replay of some prefix of the requests;
//! - every leaf covered by a head signed before the crash is unchanged, and the new head is
//!   consistent (proof verifies) with every head signed before the crash.

use evidenceos_core::environment::Environment;
use evidenceos_core::hash::sha256;
use evidenceos_core::holdout::holdout_files;
use evidenceos_core::keys::{KeyFile, key_file_name, key_id_for_seed};
use evidenceos_core::memdisk::MemDisk;
use evidenceos_core::merkle::verify_consistency;
use evidenceos_core::request::{ArtifactInput, CreateClaimV2};
use evidenceos_core::state::State;
use evidenceos_core::{
    Command, Input, Kernel, KernelConfig, Output, Principal, Query, Request, RequestId, Response, Role, SignedTreeHead,
    Timestamp,
};

const SEED: [u8; 32] = [3; 32];
const NOW: Timestamp = Timestamp(1_765_000_000_000);

fn config() -> KernelConfig {
    let labels: Vec<u8> = (0..64).map(|i| u8::from(i % 3 == 0)).collect();
    let environment =
        Environment::default().with_holdouts(&[holdout_files("demo", [0xd0; 32], &labels, 1_700_000_000)]).unwrap();
    // A small interval so the workload also crosses checkpoints and journal compactions, and
    // row-file compactions (a one-byte minimum copy: a pass copies little beyond twice each
    // checkpoint's changed rows, so it spans several checkpoints).
    KernelConfig {
        environment,
        checkpoint_every: 4,
        compaction_min_records: 1,
        compaction_copy_bytes: 1,
        ..KernelConfig::default()
    }
}

fn boot(disk: &MemDisk) -> Kernel {
    let id = key_id_for_seed(&SEED);
    let keys = vec![KeyFile { name: key_file_name(&id), bytes: SEED.to_vec() }];
    Kernel::recover(config(), disk.recovery_files(keys, id.to_hex().into_bytes())).expect("recovery succeeds")
}

fn module(path: &str) -> Vec<u8> {
    wat::parse_file(format!("{}/../examples/{path}.wat", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The workload: two claims through their whole lifecycle, credit commands, a revocation, then
/// enough grants to compact the row files.
fn workload(ids: &[Vec<u8>]) -> Vec<(Principal, Request)> {
    let agent = Principal::new("agent-a", Role::Agent);
    let operator = Principal::new("op", Role::Operator);
    let mut steps = Vec::new();
    for (index, (name, wasm)) in [("mod3", "claim_mod3"), ("zero", "claim_all_zero")].iter().enumerate() {
        let create = CreateClaimV2::fast_legacy(*name, "demo");
        steps.push((agent.clone(), Request::Command(Command::CreateClaimV2(Box::new(create)))));
        let Some(id) = ids.get(index) else { continue };
        let code = module(wasm);
        let artifacts = vec![ArtifactInput { kind: "wasm".into(), hash: sha256(&code).to_vec() }];
        steps.push((
            agent.clone(),
            Request::Command(Command::CommitArtifacts { claim_id: id.clone(), artifacts, wasm_module: code }),
        ));
        steps.push((agent.clone(), Request::Command(Command::FreezeGates { claim_id: id.clone() })));
        steps.push((agent.clone(), Request::Command(Command::ExecuteClaimV2 { claim_id: id.clone() })));
        steps.push((
            operator.clone(),
            Request::Command(Command::GrantCredit { principal_id: "agent-a".into(), amount: 10, reason: "r".into() }),
        ));
    }
    if let Some(first) = ids.first() {
        steps.push((
            agent,
            Request::Command(Command::RevokeClaim { claim_id: first.clone(), reason: "withdrawn".into() }),
        ));
    }
    // Grants rewrite one account's row at every checkpoint: superseded rows pile up until the
    // row files are compacted (the workload crosses a whole compaction, then its retirement).
    for _ in 0..48 {
        let grant = Command::GrantCredit { principal_id: "agent-a".into(), amount: 1, reason: "top-up".into() };
        steps.push((operator.clone(), Request::Command(grant)));
    }
    steps
}

/// Runs the workload on a fresh disk with no crash, sending every request at once (so batches
/// form), and returns the claim ids it created plus the states after each prefix.
fn clean_prefix_states(steps: &[(Principal, Request)]) -> Vec<(State, u64)> {
    (0..=steps.len())
        .map(|prefix| {
            let mut disk = MemDisk::new();
            let mut kernel = boot(&disk);
            disk.drive(&mut kernel, NOW);
            for (i, (principal, request)) in steps[..prefix].iter().enumerate() {
                kernel.handle(
                    NOW,
                    Input::Request { id: RequestId(i as u64), principal: principal.clone(), request: request.clone() },
                );
            }
            disk.drive(&mut kernel, NOW);
            (kernel.state().clone(), kernel.durable_tree_size())
        })
        .collect()
}

fn expected_claim_ids() -> Vec<Vec<u8>> {
    let steps = workload(&[]);
    let mut disk = MemDisk::new();
    let mut kernel = boot(&disk);
    disk.drive(&mut kernel, NOW);
    steps
        .into_iter()
        .enumerate()
        .filter_map(|(i, (principal, request))| {
            kernel.handle(NOW, Input::Request { id: RequestId(i as u64), principal, request });
            disk.drive(&mut kernel, NOW).into_iter().find_map(|o| match o {
                Output::Reply(_, Ok(Response::ClaimCreated { claim_id, .. })) => Some(claim_id.to_vec()),
                _ => None,
            })
        })
        .collect()
}

fn signed_head(kernel: &mut Kernel) -> SignedTreeHead {
    kernel.signed_tree_head().expect("not recovering")
}

/// Runs the workload until `boundary` effects completed; returns the disk at that moment, the
/// ids of requests answered so far, the heads signed along the way, and whether it finished.
/// `all_at_once` submits every request up front (group commit); otherwise the next request
/// goes in once the kernel has nothing left to do (one small batch each).
fn run_until(
    steps: &[(Principal, Request)],
    boundary: usize,
    all_at_once: bool,
    fresh_disk: fn() -> MemDisk,
) -> (MemDisk, Vec<u64>, Vec<SignedTreeHead>, bool) {
    let mut disk = fresh_disk();
    let mut kernel = boot(&disk);
    disk.drive(&mut kernel, NOW);
    let mut pending = steps.iter().enumerate();
    let mut submit = |kernel: &mut Kernel| match pending.next() {
        Some((i, (principal, request))) => {
            let input =
                Input::Request { id: RequestId(i as u64), principal: principal.clone(), request: request.clone() };
            kernel.handle(NOW, input);
            true
        }
        None => false,
    };
    if all_at_once {
        while submit(&mut kernel) {}
    }
    let (mut acked, mut heads, mut applied) = (Vec::new(), Vec::new(), 0usize);
    loop {
        let Some(output) = kernel.poll() else {
            if submit(&mut kernel) {
                continue;
            }
            return (disk, acked, heads, true);
        };
        match output {
            Output::Effect(id, effect) => {
                if applied == boundary {
                    return (disk, acked, heads, false);
                }
                let outcome = disk.apply(&effect);
                applied += 1;
                kernel.handle(NOW, Input::Done { effect: id, outcome });
            }
            Output::Reply(id, _) => {
                acked.push(id.0);
                heads.push(signed_head(&mut kernel));
            }
            _ => {}
        }
    }
}

/// Crashes at every boundary of both schedules with four tears and checks the contract;
/// returns how many boundaries were checked, or the first violation.
fn check_every_crash_point(fresh_disk: fn() -> MemDisk) -> Result<usize, String> {
    let ids = expected_claim_ids();
    assert_eq!(ids.len(), 2);
    let steps = workload(&ids);
    let prefixes = clean_prefix_states(&steps);
    let mut boundaries_checked = 0;
    for all_at_once in [true, false] {
        for boundary in 0..10_000 {
            let (disk, acked, heads, finished) = run_until(&steps, boundary, all_at_once, fresh_disk);
            // Tear the unsynced tail nowhere, after one byte, in the middle, and all but one byte.
            for tear in [0usize, 1, usize::MAX / 2, usize::MAX] {
                let mut crashed = disk.clone();
                crashed.crash_torn(|_, unsynced| match tear {
                    0 => 0,
                    1 => 1.min(unsynced),
                    t if t == usize::MAX / 2 => unsynced / 2,
                    _ => unsynced.saturating_sub(1),
                });
                let at = format!("schedule all_at_once={all_at_once}, boundary {boundary}, tear {tear}");
                let mut kernel = boot(&crashed);
                crashed.drive(&mut kernel, NOW);
                if kernel.is_recovering() {
                    return Err(format!("{at}: recovery did not finish"));
                }
                let recovered = (kernel.state().clone(), kernel.durable_tree_size());
                // Replies are released in request order, so the acknowledged requests are a prefix.
                assert!(acked.iter().enumerate().all(|(i, id)| *id == i as u64));
                if !prefixes.iter().skip(acked.len()).any(|p| *p == recovered) {
                    return Err(format!("{at}: state is no replay of a prefix holding every acknowledged request"));
                }
                let now_head = signed_head(&mut kernel);
                for old in heads.iter().filter(|h| h.tree_size > 0) {
                    let auditor = Principal::new("auditor", Role::Auditor);
                    let query = Query::GetConsistencyProof { first_tree_size: old.tree_size, second_tree_size: 0 };
                    let request = Input::Request {
                        id: RequestId(u64::MAX - 1),
                        principal: auditor,
                        request: Request::Query(query),
                    };
                    kernel.handle(NOW, request);
                    let Some(Output::Reply(_, Ok(Response::ConsistencyProof { path, first_root_hash, .. }))) =
                        kernel.poll()
                    else {
                        return Err(format!("{at}: head of size {} no longer provable", old.tree_size));
                    };
                    if first_root_hash != old.root_hash {
                        return Err(format!("{at}: a signed leaf changed"));
                    }
                    verify_consistency(old.tree_size, now_head.tree_size, &old.root_hash, &now_head.root_hash, &path)
                        .map_err(|e| format!("{at}: {e}"))?;
                }
            }
            boundaries_checked += 1;
            if finished {
                break;
            }
        }
    }
    Ok(boundaries_checked)
}

#[test]
fn every_crash_point_recovers_to_an_acknowledged_prefix() {
    let checked = check_every_crash_point(MemDisk::new).unwrap();
    assert!(checked > 20, "the workload crosses many effects ({checked})");
}

#[test]
fn the_checks_catch_a_disk_that_loses_synced_data() {
    // Same workload on a disk whose syncs persist nothing: acknowledged requests vanish in a
    // crash, and the checks must say so.
    let verdict = check_every_crash_point(MemDisk::with_lying_sync);
    let violation = verdict.expect_err("a lying disk must fail the durability checks");
    assert!(violation.contains("acknowledged"), "{violation}");
}
