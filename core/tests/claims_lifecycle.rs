//! The claim lifecycle through the kernel's public interface, on the in-memory disk.

use evidenceos_core::claim::{ClaimState, Decision};
use evidenceos_core::environment::Environment;
use evidenceos_core::etl::{revocation_feed_digest, verify_tree_head};
use evidenceos_core::hash::sha256;
use evidenceos_core::holdout::holdout_files;
use evidenceos_core::ids::{ClaimId, TopicId};
use evidenceos_core::keys::{KeyFile, key_file_name, key_id_for_seed, public_key_for_seed, verify_signature};
use evidenceos_core::memdisk::MemDisk;
use evidenceos_core::merkle::{leaf_hash, verify_consistency, verify_inclusion};
use evidenceos_core::request::{ArtifactInput, CreateClaimV2, Execution, IdempotencyKey};
use evidenceos_core::{
    Command, ErrorCode, Input, Kernel, KernelConfig, KernelError, Output, Principal, Query, Request, RequestId,
    Response, Role, Timestamp,
};

const SEED: [u8; 32] = [9; 32];
const NOW: Timestamp = Timestamp(1_760_000_000_000);

fn demo_labels() -> Vec<u8> {
    (0..64).map(|i| u8::from(i % 3 == 0)).collect()
}

fn environment() -> Environment {
    Environment::default().with_holdouts(&[holdout_files("demo", [0xd0; 32], &demo_labels(), 1_700_000_000)]).unwrap()
}

struct Harness {
    kernel: Kernel,
    disk: MemDisk,
    next: u64,
}

impl Harness {
    fn new() -> Self {
        Self::boot(MemDisk::new())
    }

    fn boot(disk: MemDisk) -> Self {
        Self::boot_with(disk, environment())
    }

    fn boot_with(disk: MemDisk, environment: Environment) -> Self {
        Self::boot_config(disk, KernelConfig { environment, ..KernelConfig::default() })
    }

    fn boot_config(mut disk: MemDisk, config: KernelConfig) -> Self {
        let id = key_id_for_seed(&SEED);
        let keys = vec![KeyFile { name: key_file_name(&id), bytes: SEED.to_vec() }];
        let mut kernel = Kernel::recover(config, disk.recovery_files(keys, id.to_hex().into_bytes())).unwrap();
        disk.drive(&mut kernel, NOW);
        Self { kernel, disk, next: 0 }
    }

    /// Crash (lose everything not durable) and recover.
    fn restart(self) -> Self {
        let mut disk = self.disk;
        disk.crash();
        Self::boot(disk)
    }

    fn call(&mut self, principal: &Principal, request: Request) -> Result<Response, KernelError> {
        self.next += 1;
        let id = RequestId(self.next);
        self.kernel.handle(NOW, Input::Request { id, principal: principal.clone(), request });
        let outputs = self.disk.drive(&mut self.kernel, NOW);
        outputs
            .into_iter()
            .find_map(|o| match o {
                Output::Reply(reply_id, reply) if reply_id == id => Some(reply),
                _ => None,
            })
            .expect("every request is answered once durable")
    }

    /// The capsule of a settled claim, as `etl.log` holds it (the kernel keeps only its index).
    fn capsule_text(&self, claim: &[u8]) -> String {
        let id = ClaimId(claim.try_into().unwrap());
        let index = self.kernel.state().claims.claims[&id].capsule.as_ref().expect("settled").etl_index;
        let log = evidenceos_core::frame::scan(self.disk.contents(evidenceos_core::FileId::Etl), 0).unwrap();
        String::from_utf8(log.records[index as usize].payload.to_vec()).unwrap()
    }

    fn command(&mut self, principal: &Principal, command: Command) -> Result<Response, KernelError> {
        self.call(principal, Request::Command(command))
    }
}

fn agent() -> Principal {
    Principal::new("agent-a", Role::Agent)
}

fn auditor() -> Principal {
    Principal::new("auditor-1", Role::Auditor)
}

fn wasm(name: &str) -> Vec<u8> {
    let path = format!("{}/../examples/{name}.wat", env!("CARGO_MANIFEST_DIR"));
    wat::parse_file(path).unwrap()
}

fn create(h: &mut Harness, principal: &Principal, name: &str, lane: &str) -> Vec<u8> {
    create_with_signal(h, principal, name, lane, 1)
}

/// `signal` varies the client's semantic hash: same topic, different claim id.
fn create_with_signal(h: &mut Harness, principal: &Principal, name: &str, lane: &str, signal: u8) -> Vec<u8> {
    match h.command(principal, create_command(name, lane, signal)).unwrap() {
        Response::ClaimCreated { claim_id, state, .. } => {
            assert_eq!(state, ClaimState::Uncommitted);
            claim_id.to_vec()
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn create_command(name: &str, lane: &str, signal: u8) -> Command {
    Command::CreateClaimV2(Box::new(CreateClaimV2 {
        claim_name: name.into(),
        lane: lane.into(),
        alpha_micros: 50_000,
        epoch_config_ref: "epoch/v1".into(),
        output_schema_id: "EVIDENCEOS_SC_V0".into(),
        semantic_hash: vec![signal; 32],
        phys_hir_signature_hash: vec![2; 32],
        dependency_merkle_root: vec![3; 32],
        holdout_ref: "demo".into(),
        epoch_size: 1,
        oracle_num_symbols: 4,
        access_credit: 64,
        oracle_id: "accuracy".into(),
        nullspec_id: String::new(),
        dp_epsilon_budget: None,
        dp_delta_budget: None,
    }))
}

fn commit(h: &mut Harness, principal: &Principal, claim_id: &[u8], module: &[u8], deps: &[[u8; 32]]) {
    let mut artifacts = vec![ArtifactInput { kind: "wasm".into(), hash: sha256(module).to_vec() }];
    artifacts.extend(deps.iter().map(|d| ArtifactInput { kind: "capsule".into(), hash: d.to_vec() }));
    let reply = h.command(
        principal,
        Command::CommitArtifacts { claim_id: claim_id.to_vec(), artifacts, wasm_module: module.to_vec() },
    );
    assert_eq!(reply.unwrap(), Response::ClaimState { state: ClaimState::Committed });
}

fn run_to_capsule(h: &mut Harness, principal: &Principal, claim_id: &[u8]) -> Execution {
    let freeze = h.command(principal, Command::FreezeGates { claim_id: claim_id.to_vec() }).unwrap();
    assert_eq!(freeze, Response::ClaimState { state: ClaimState::Sealed });
    let seal = h.command(principal, Command::SealClaim { claim_id: claim_id.to_vec() }).unwrap();
    assert_eq!(seal, Response::ClaimState { state: ClaimState::Sealed });
    match h.command(principal, Command::ExecuteClaimV2 { claim_id: claim_id.to_vec() }).unwrap() {
        Response::Executed(execution) => *execution,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn certify_reject_defer_then_revoke_and_taint() {
    let mut h = Harness::new();
    let owner = agent();

    let good = create(&mut h, &owner, "mod3-hypothesis", "fast");
    commit(&mut h, &owner, &good, &wasm("claim_mod3"), &[]);
    let certified = run_to_capsule(&mut h, &owner, &good);
    assert_eq!(
        (certified.state, certified.decision, certified.certified),
        (ClaimState::Certified, Decision::Approve, true)
    );
    assert_eq!(certified.reason_codes, vec![1]);
    assert_eq!(certified.canonical_output, vec![3], "top bucket of 4");
    // k = τ·log2(4)·1 = 4 bits; barrier 2^4 / 0.05 = 320.
    assert!(certified.e_value >= 320.0, "e = {}", certified.e_value);

    let weak = create(&mut h, &owner, "all-zero", "fast");
    commit(&mut h, &owner, &weak, &wasm("claim_all_zero"), &[]);
    let rejected = run_to_capsule(&mut h, &owner, &weak);
    assert_eq!((rejected.state, rejected.decision), (ClaimState::Revoked, Decision::Reject));
    assert!(rejected.e_value <= 1.0);

    let heavy = create(&mut h, &owner, "mod3-heavy", "heavy");
    commit(&mut h, &owner, &heavy, &wasm("claim_mod3"), &[]);
    let deferred = run_to_capsule(&mut h, &owner, &heavy);
    assert_eq!((deferred.state, deferred.decision), (ClaimState::Frozen, Decision::Defer));

    // The first certification of a name only sets its canary's baseline, whatever its e-value
    // (SPEC §5.8): no canary froze, and only the certified name is established.
    let canaries = &h.kernel.state().claims.canaries;
    assert_eq!(canaries.values().filter(|c| c.frozen).count(), 0, "one honest certification never trips");
    assert!(canaries["mod3-hypothesis/demo"].baseline_set && canaries["mod3-hypothesis/demo"].e_drift == 1.0);
    assert!(!canaries["mod3-heavy/demo"].baseline_set, "a DEFER establishes nothing");
    // A second claim under that name adds its e ≈ 1e8 to the drift: it is still decided on the
    // canary as it was (certified), and trips it; a third is rejected with reason 91.
    let second = create_with_signal(&mut h, &owner, "mod3-hypothesis", "fast", 7);
    commit(&mut h, &owner, &second, &wasm("claim_mod3"), &[]);
    assert_eq!(run_to_capsule(&mut h, &owner, &second).state, ClaimState::Certified);
    assert!(h.kernel.state().claims.canaries["mod3-hypothesis/demo"].frozen);
    let retry = create_with_signal(&mut h, &owner, "mod3-hypothesis", "fast", 8);
    commit(&mut h, &owner, &retry, &wasm("claim_mod3"), &[]);
    let blocked = run_to_capsule(&mut h, &owner, &retry);
    assert_eq!((blocked.state, blocked.decision), (ClaimState::Revoked, Decision::Reject));
    assert_eq!(blocked.reason_codes, vec![2, 91]);

    // A claim built on the certified capsule, then the parent is revoked.
    let child = create(&mut h, &owner, "builds-on-mod3", "fast");
    commit(&mut h, &owner, &child, &wasm("claim_mod3"), &[certified.capsule_hash]);
    assert_eq!(run_to_capsule(&mut h, &owner, &child).state, ClaimState::Certified);
    let revoked = h.command(&owner, Command::RevokeClaim { claim_id: good.clone(), reason: "retracted".into() });
    assert!(
        matches!(revoked.unwrap(), Response::Revoked { state: ClaimState::Revoked, timestamp_unix } if timestamp_unix == NOW.0 / 1000)
    );
    let child_state = h.kernel.state().claims.claims[&ClaimId(child.as_slice().try_into().unwrap())].state;
    assert_eq!(child_state, ClaimState::Tainted);

    let Response::RevocationFeed(feed) = h.call(&owner, Request::Query(Query::GetRevocationFeed)).unwrap() else {
        panic!("feed expected")
    };
    assert_eq!(feed.entries.len(), 1);
    assert_eq!(feed.entries[0].capsule_hash, certified.capsule_hash);
    let public = public_key_for_seed(&SEED);
    assert!(verify_tree_head(&public, &feed.sth));
    assert!(verify_signature(&public, &revocation_feed_digest(&feed.entries, &feed.sth), &feed.signature));
}

#[test]
fn fetched_capsules_verify_against_the_signed_head() {
    let mut h = Harness::new();
    let owner = agent();
    let claim = create(&mut h, &owner, "mod3-hypothesis", "fast");
    commit(&mut h, &owner, &claim, &wasm("claim_mod3"), &[]);
    let execution = run_to_capsule(&mut h, &owner, &claim);
    // Grow the log afterwards so the consistency proof is not trivial.
    for name in ["later-1", "later-2", "later-3"] {
        let other = create(&mut h, &owner, name, "fast");
        commit(&mut h, &owner, &other, &wasm("claim_all_zero"), &[]);
        run_to_capsule(&mut h, &owner, &other);
    }
    let denied = h.call(&owner, Request::Query(Query::FetchCapsule { claim_id: claim.clone() })).unwrap_err();
    assert_eq!(denied.code, ErrorCode::PermissionDenied, "agents cannot read capsules");
    let Response::FetchedCapsule(fetched) =
        h.call(&auditor(), Request::Query(Query::FetchCapsule { claim_id: claim.clone() })).unwrap()
    else {
        panic!("capsule expected")
    };
    let capsule = fetched.capsule.as_read().expect("read from etl.log");
    assert_eq!(fetched.capsule_hash, sha256(capsule));
    assert_eq!(fetched.capsule_hash, execution.capsule_hash);
    assert_eq!(fetched.leaf_hash, leaf_hash(capsule));
    let sth = &fetched.sth;
    // The first certification of a name only sets its canary's baseline: no incident leaf.
    assert_eq!((fetched.etl_index, sth.tree_size), (0, 4));
    assert!(verify_tree_head(&public_key_for_seed(&SEED), sth));
    verify_inclusion(&fetched.leaf_hash, fetched.etl_index, sth.tree_size, &fetched.inclusion_path, &sth.root_hash)
        .unwrap();
    let old_size = fetched.etl_index + 1;
    let Response::ConsistencyProof { first_root_hash, .. } = h
        .call(&auditor(), Request::Query(Query::GetConsistencyProof { first_tree_size: old_size, second_tree_size: 0 }))
        .unwrap()
    else {
        panic!("consistency expected")
    };
    verify_consistency(old_size, sth.tree_size, &first_root_hash, &sth.root_hash, &fetched.consistency_path).unwrap();
    let capsule: serde_json::Value = serde_json::from_slice(capsule).unwrap();
    assert_eq!(capsule["state"], "CERTIFIED");
    assert_eq!(capsule["holdout_commitment_hex"], hex::encode(sha256(&[0xd0; 32])));
}

#[test]
fn lifecycle_order_ownership_and_field_shapes_are_enforced() {
    let mut h = Harness::new();
    let owner = agent();
    let stranger = Principal::new("agent-b", Role::Agent);
    let claim = create(&mut h, &owner, "mod3-hypothesis", "fast");
    let before = h.kernel.state().clone();

    let code = |r: Result<Response, KernelError>| r.unwrap_err().code;
    assert_eq!(
        code(h.command(&owner, Command::ExecuteClaimV2 { claim_id: claim.clone() })),
        ErrorCode::FailedPrecondition
    );
    assert_eq!(
        code(h.command(&owner, Command::FreezeGates { claim_id: claim.clone() })),
        ErrorCode::FailedPrecondition
    );
    assert_eq!(
        code(h.command(&owner, Command::RevokeClaim { claim_id: claim.clone(), reason: "x".into() })),
        ErrorCode::FailedPrecondition
    );
    assert_eq!(code(h.command(&owner, Command::FreezeGates { claim_id: vec![1; 31] })), ErrorCode::InvalidArgument);
    assert_eq!(code(h.command(&owner, Command::FreezeGates { claim_id: vec![1; 32] })), ErrorCode::NotFound);
    let module = wasm("claim_mod3");
    let wrong_hash = vec![ArtifactInput { kind: "wasm".into(), hash: vec![0; 32] }];
    assert_eq!(
        code(h.command(
            &owner,
            Command::CommitArtifacts { claim_id: claim.clone(), artifacts: wrong_hash, wasm_module: module.clone() }
        )),
        ErrorCode::InvalidArgument
    );
    let good_artifacts = vec![ArtifactInput { kind: "wasm".into(), hash: sha256(&module).to_vec() }];
    assert_eq!(
        code(h.command(
            &stranger,
            Command::CommitArtifacts {
                claim_id: claim.clone(),
                artifacts: good_artifacts.clone(),
                wasm_module: module.clone()
            }
        )),
        ErrorCode::PermissionDenied
    );
    let bad_import = wat::parse_str(r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))) (memory (export "memory") 1) (func (export "run")))"#).unwrap();
    let bad_artifacts = vec![ArtifactInput { kind: "wasm".into(), hash: sha256(&bad_import).to_vec() }];
    assert_eq!(
        code(h.command(
            &owner,
            Command::CommitArtifacts { claim_id: claim.clone(), artifacts: bad_artifacts, wasm_module: bad_import }
        )),
        ErrorCode::InvalidArgument
    );
    // The same inputs again: the owner's retry gets the claim back; anyone else only hears that
    // it exists.
    assert_eq!(create(&mut h, &owner, "mod3-hypothesis", "fast"), claim);
    assert_eq!(code(h.command(&stranger, create_command("mod3-hypothesis", "fast", 1))), ErrorCode::AlreadyExists);
    assert_eq!(h.kernel.state(), &before, "refused requests change nothing");
}

#[test]
fn an_oversized_reservation_does_not_freeze_the_shared_pool() {
    let mut h = Harness::new();
    let operator = Principal::new("op", Role::Operator);
    // Room for one fast claim over 4 symbols: R = ceil(log2 4 · 32 · 2) = 128 bits.
    let set = Command::SetHoldoutPoolBudgets {
        holdout_id: "demo".into(),
        scope: "global".into(),
        k_bits_budget: Some(130.0),
        access_credit_budget: Some(130.0),
    };
    h.command(&operator, set).unwrap();
    let owner = agent();
    let request = |name: &str, symbols: u32| CreateClaimV2 {
        oracle_num_symbols: symbols,
        ..CreateClaimV2::fast_legacy(name, "demo")
    };
    // 65536 symbols: R = 16 · 32 · 2 = 1024 bits, far over the pool.
    let before = h.kernel.state().clone();
    let refused = h.command(&owner, Command::CreateClaimV2(Box::new(request("greedy", 1 << 16)))).unwrap_err();
    assert_eq!(refused.code, ErrorCode::FailedPrecondition);
    assert_eq!(h.kernel.state(), &before, "the refusal touched no pool");
    // The pool still serves a request that fits, and then is full.
    let accepted = h.command(&owner, Command::CreateClaimV2(Box::new(request("modest", 4))));
    assert!(matches!(accepted, Ok(Response::ClaimCreated { .. })));
    let full = h.command(&owner, Command::CreateClaimV2(Box::new(request("third", 4)))).unwrap_err();
    assert_eq!(full.code, ErrorCode::FailedPrecondition);
}

#[test]
fn idempotent_retries_return_the_recorded_reply_and_survive_restart() {
    let mut h = Harness::new();
    let owner = agent();
    let claim = create(&mut h, &owner, "mod3-hypothesis", "fast");
    commit(&mut h, &owner, &claim, &wasm("claim_mod3"), &[]);
    h.command(&owner, Command::FreezeGates { claim_id: claim.clone() }).unwrap();
    let key = |request_id: &str, body: u8| IdempotencyKey {
        method: "ExecuteClaimV2".into(),
        request_id: request_id.into(),
        body_hash: vec![body; 32],
    };
    let execute =
        |key| Request::IdempotentCommand { key, command: Command::ExecuteClaimV2 { claim_id: claim.clone() } };

    let first = h.call(&owner, execute(key("run-1", 1))).unwrap();
    let size = h.kernel.durable_tree_size();
    let retry = h.call(&owner, execute(key("run-1", 1))).unwrap();
    assert_eq!(retry, first, "same key, same body: the recorded reply");
    assert_eq!(h.kernel.durable_tree_size(), size, "and nothing executed twice");
    let conflict = h.call(&owner, execute(key("run-1", 2))).unwrap_err();
    assert_eq!(conflict.code, ErrorCode::AlreadyExists);
    // Keys are per principal: another principal's "run-1" is its own (and here not allowed).
    let stranger = h.call(&Principal::new("agent-b", Role::Agent), execute(key("run-1", 1))).unwrap_err();
    assert_eq!(stranger.code, ErrorCode::PermissionDenied);
    // A failure is not recorded: the claim is no longer SEALED, so this fails, and a retry with
    // the same key fails the same way instead of replaying a success.
    let failed = h.call(&owner, execute(key("run-2", 1))).unwrap_err();
    assert_eq!(failed.code, ErrorCode::FailedPrecondition);
    assert_eq!(h.call(&owner, execute(key("run-2", 1))).unwrap_err().code, ErrorCode::FailedPrecondition);
    let malformed = h.call(&owner, execute(key("has:colon", 1))).unwrap_err();
    assert_eq!(malformed.code, ErrorCode::InvalidArgument);

    let mut h = h.restart();
    assert_eq!(h.call(&owner, execute(key("run-1", 1))).unwrap(), first, "records survive restart");
}

#[test]
fn legacy_client_decided_execution_only_when_enabled() {
    let legacy = |claim_id: &[u8], decision| Command::ExecuteClaim {
        claim_id: claim_id.to_vec(),
        decision,
        reason_codes: vec![1],
        canonical_output: vec![3],
    };
    let mut h = Harness::new();
    let owner = agent();
    let claim = create(&mut h, &owner, "legacy", "fast");
    commit(&mut h, &owner, &claim, &wasm("claim_all_zero"), &[]);
    h.command(&owner, Command::FreezeGates { claim_id: claim.clone() }).unwrap();
    assert_eq!(h.command(&owner, legacy(&claim, 1)).unwrap_err().code, ErrorCode::FailedPrecondition);

    let mut env = environment();
    env.settings.insecure_v1 = true;
    let mut h = Harness::boot_with(MemDisk::new(), env);
    let claim = create(&mut h, &owner, "legacy", "fast");
    commit(&mut h, &owner, &claim, &wasm("claim_all_zero"), &[]);
    h.command(&owner, Command::FreezeGates { claim_id: claim.clone() }).unwrap();
    assert_eq!(h.command(&owner, legacy(&claim, 0)).unwrap_err().code, ErrorCode::InvalidArgument);
    let Response::Executed(execution) = h.command(&owner, legacy(&claim, 1)).unwrap() else { panic!("executed") };
    assert_eq!((execution.state, execution.certified), (ClaimState::Certified, true));
    let capsule: serde_json::Value = serde_json::from_str(&h.capsule_text(&claim)).unwrap();
    assert_eq!(capsule["eprocess_kind"], "client_decision_v1");
    assert_eq!(capsule["ledger"]["k_bits_total"], 0.0, "nothing reached the oracle");
}

#[test]
fn a_reload_is_journaled_and_replayed_under_the_environment_it_brought() {
    let mut h = Harness::new();
    let mut bigger = environment();
    bigger = bigger.with_holdouts(&[holdout_files("second", [0xee; 32], &demo_labels(), 1_700_000_000)]).unwrap();
    let system = Principal::new("system:reload", Role::Operator);
    let reply = h.command(&system, Command::ReloadEnvironment(Box::new(bigger))).unwrap();
    let Response::EnvironmentReloaded { before, after } = reply else { panic!("reloaded") };
    assert_eq!((before.holdouts, after.holdouts), (1, 2));
    // Only operators (the runtime's reload principal) may reload.
    let refused = h.command(&agent(), Command::ReloadEnvironment(Box::new(environment()))).unwrap_err();
    assert_eq!(refused.code, ErrorCode::PermissionDenied);

    let owner = agent();
    let mut request = CreateClaimV2::fast_legacy("on-second", "second");
    assert!(h.command(&owner, Command::CreateClaimV2(Box::new(request.clone()))).is_ok());
    let state = h.kernel.state().clone();

    // The daemon restarts with the old files: the journaled claim still replays, under the
    // environment that was in force when it was accepted.
    let h = h.restart();
    assert_eq!(h.kernel.state(), &state);
    let mut h = h;
    request.claim_name = "after-restart".into();
    let gone = h.command(&owner, Command::CreateClaimV2(Box::new(request))).unwrap_err();
    assert_eq!(gone.code, ErrorCode::NotFound, "the restart's own files are in force now");
}

#[test]
fn capsules_for_fixed_inputs_are_pinned() {
    // Fixed inputs (seed, holdout, modules, names, time) give fixed capsule bytes: any change to
    // the capsule format, the ledger arithmetic or the e-value rules shows up here.
    let mut h = Harness::new();
    let owner = agent();
    let mut pinned = String::new();
    for (name, lane, module) in [
        ("pin-certified", "fast", "claim_mod3"),
        ("pin-rejected", "fast", "claim_all_zero"),
        ("pin-deferred", "heavy", "claim_mod3"),
    ] {
        let claim = create(&mut h, &owner, name, lane);
        commit(&mut h, &owner, &claim, &wasm(module), &[]);
        let execution = run_to_capsule(&mut h, &owner, &claim);
        let capsule = h.capsule_text(&claim);
        pinned.push_str(&format!(
            "{name}: state={:?} decision={:?} e_value={:?} etl_index={} capsule_hash={}\n{}\n\n",
            execution.state,
            execution.decision,
            execution.e_value,
            execution.etl_index,
            hex::encode(execution.capsule_hash),
            capsule
        ));
    }
    insta::assert_snapshot!(pinned);
}

#[test]
fn oracle_records_pin_ttl_and_epoch_advances_make_sealed_claims_stale() {
    use evidenceos_core::keys::key_id_for_seed;
    use evidenceos_core::operator::OracleRecord;
    let operator_seed = [5u8; 32];
    let record = OracleRecord {
        schema_version: 1,
        ttl_epochs: 2,
        calibration_manifest_hash_hex: Some("cd".repeat(32)),
        calibration_epoch: Some(0),
        disjointness_attestation: None,
        nonoverlap_proof_uri: None,
        updated_at_epoch: 0,
        key_id: key_id_for_seed(&operator_seed).to_hex(),
        signature_ed25519: String::new(),
    }
    .sign("accuracy", &operator_seed);
    let mut env = environment();
    env.oracles.insert("accuracy".into(), record);
    let mut h = Harness::boot_with(MemDisk::new(), env.clone());
    let owner = agent();
    let claim = create(&mut h, &owner, "ttl-pinned", "fast");
    commit(&mut h, &owner, &claim, &wasm("claim_mod3"), &[]);
    h.command(&owner, Command::FreezeGates { claim_id: claim.clone() }).unwrap();
    let pin = h.kernel.state().claims.claims[&ClaimId(claim.as_slice().try_into().unwrap())].pin.clone().unwrap();
    assert_eq!(pin.ttl_epochs, 2, "TTL pinned from the operator record");

    let system = Principal::new("system:reload", Role::Operator);
    let mut later = env.clone();
    later.epoch = 3; // 3 - 0 > 2: the pinned TTL has passed.
    h.command(&system, Command::ReloadEnvironment(Box::new(later.clone()))).unwrap();
    let stale = h.command(&owner, Command::ExecuteClaimV2 { claim_id: claim.clone() }).unwrap_err();
    assert_eq!(stale.code, ErrorCode::FailedPrecondition);
    assert!(stale.message.contains("STALE"), "{}", stale.message);
    assert_eq!(
        h.command(&owner, Command::FreezeGates { claim_id: claim.clone() }).unwrap(),
        Response::ClaimState { state: ClaimState::Sealed },
        "re-freezing returns it to SEALED"
    );
    assert!(matches!(
        h.command(&owner, Command::ExecuteClaimV2 { claim_id: claim.clone() }),
        Ok(Response::Executed(_))
    ));

    let mut earlier = env;
    earlier.epoch = 1;
    let back = h.command(&system, Command::ReloadEnvironment(Box::new(earlier))).unwrap_err();
    assert_eq!(back.code, ErrorCode::FailedPrecondition, "epochs never go back");
}

#[test]
fn code_that_saw_the_oracle_and_then_trapped_is_still_charged() {
    let mut h = Harness::new();
    let owner = agent();
    let probe = wat::parse_str(
        r#"(module
          (import "env" "oracle_query" (func $q (param i32 i32) (result i32)))
          (memory (export "memory") 1)
          (func (export "run") (drop (call $q (i32.const 0) (i32.const 64))) unreachable))"#,
    )
    .unwrap();
    let silent = wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "run") unreachable))"#).unwrap();
    for (name, module, charged) in [("probe-then-trap", probe, 4.0), ("trap-first", silent, 0.0)] {
        let claim = create(&mut h, &owner, name, "fast");
        commit(&mut h, &owner, &claim, &module, &[]);
        h.command(&owner, Command::FreezeGates { claim_id: claim.clone() }).unwrap();
        let settled_before = h.kernel.state().claims.holdout_pools["global/demo"].k_bits_settled;
        let refused = h.command(&owner, Command::ExecuteClaimV2 { claim_id: claim.clone() }).unwrap_err();
        assert_eq!(refused.code, ErrorCode::FailedPrecondition, "{name}");
        let state = h.kernel.state();
        let stored = &state.claims.claims[&ClaimId(claim.as_slice().try_into().unwrap())];
        // One oracle call over 4 symbols costs τ·log2(4) = 4 bits; none costs nothing.
        assert_eq!(stored.ledger.k_bits_total, charged, "{name}");
        let pool = &state.claims.holdout_pools["global/demo"];
        assert_eq!(pool.k_bits_settled - settled_before, charged, "{name}: what it saw is settled");
        assert_eq!(pool.active_reservations(NOW.0), 0, "{name}: the rest is released at once");
        assert_eq!(state.claims.topic_pools[&stored.topic_id].active_reservations(NOW.0), 0);
    }
}

#[test]
fn a_failed_execution_leaves_its_claim_stale_until_a_refreeze_reserves_again() {
    let mut h = Harness::new();
    let owner = agent();
    let silent = wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "run") unreachable))"#).unwrap();
    let claim = create(&mut h, &owner, "trap-first", "fast");
    commit(&mut h, &owner, &claim, &silent, &[]);
    h.command(&owner, Command::FreezeGates { claim_id: claim.clone() }).unwrap();
    h.command(&owner, Command::ExecuteClaimV2 { claim_id: claim.clone() }).unwrap_err();
    // Its reservation is gone, so it must not run against an unreserved pool.
    let again = h.command(&owner, Command::ExecuteClaimV2 { claim_id: claim.clone() }).unwrap_err();
    assert_eq!(
        (again.code, again.message.as_str()),
        (ErrorCode::FailedPrecondition, "claim is STALE; ExecuteClaimV2 needs SEALED")
    );
    // Re-freezing reserves R again (if the pool has room); then it may execute once more.
    let refrozen = h.command(&owner, Command::FreezeGates { claim_id: claim.clone() }).unwrap();
    assert_eq!(refrozen, Response::ClaimState { state: ClaimState::Sealed });
    assert_eq!(h.kernel.state().claims.holdout_pools["global/demo"].active_reservations(NOW.0), 1);
    let state = h.kernel.state().clone();
    let h = h.restart();
    assert_eq!(h.kernel.state(), &state, "replay gives the same pools");
}

#[test]
fn a_signed_canary_reset_is_applied_by_a_journaled_reload_and_survives_replay() {
    let mut h = Harness::new();
    let owner = agent();
    let key = "mod3-hypothesis/demo".to_string();
    for signal in [1, 2] {
        let claim = create_with_signal(&mut h, &owner, "mod3-hypothesis", "fast", signal);
        commit(&mut h, &owner, &claim, &wasm("claim_mod3"), &[]);
        assert_eq!(run_to_capsule(&mut h, &owner, &claim).state, ClaimState::Certified);
    }
    assert!(h.kernel.state().claims.canaries[&key].frozen, "the second e ≈ 1e8 trips the barrier of 1000");

    // The environment carries the latest verified reset per canary (read from the governance
    // log by the runtime); loading it resets the canary, once.
    let mut reset = environment();
    reset.canary_resets.insert(key.clone(), "ab".repeat(32));
    let system = Principal::new("system:reload", Role::Operator);
    h.command(&system, Command::ReloadEnvironment(Box::new(reset.clone()))).unwrap();
    let canary = h.kernel.state().claims.canaries[&key].clone();
    assert!(!canary.frozen && canary.e_drift == 1.0);
    assert!(canary.baseline_set, "a reset keeps the baseline: the name stays established");
    assert_eq!(canary.last_reset_event_id.as_deref(), Some("ab".repeat(32).as_str()));
    assert!(h.kernel.state().claims.pending_canary_resets(&reset.canary_resets).is_empty());

    // Certification resumes under that claim name.
    let again = create_with_signal(&mut h, &owner, "mod3-hypothesis", "fast", 9);
    commit(&mut h, &owner, &again, &wasm("claim_mod3"), &[]);
    let resumed = run_to_capsule(&mut h, &owner, &again);
    assert_eq!((resumed.state, resumed.decision), (ClaimState::Certified, Decision::Approve));
    assert!(h.kernel.state().claims.canaries[&key].frozen, "and, established, the strong evidence trips it again");

    // Reloading the same reset does not reset again; replay after a crash gives the same state.
    h.command(&system, Command::ReloadEnvironment(Box::new(reset))).unwrap();
    assert!(h.kernel.state().claims.canaries[&key].frozen);
    let state = h.kernel.state().clone();
    let h = h.restart();
    assert_eq!(h.kernel.state(), &state);
}

fn create_v1(topic: u8) -> Command {
    Command::CreateClaim {
        topic_id: vec![topic; 32],
        holdout_handle_id: vec![0xd0; 32],
        phys_hir_hash: vec![0xb2; 32],
        epoch_size: 1,
        oracle_num_symbols: 4,
        alpha: 0.05,
        access_credit: 64,
    }
}

#[test]
fn v1_claims_reserve_and_settle_like_v2() {
    let mut h = Harness::new();
    let operator = Principal::new("op", Role::Operator);
    let budgets = Command::SetHoldoutPoolBudgets {
        holdout_id: "demo".into(),
        scope: "global".into(),
        k_bits_budget: Some(200.0),
        access_credit_budget: None,
    };
    h.command(&operator, budgets).unwrap();
    let Response::ClaimCreated { claim_id, .. } = h.command(&agent(), create_v1(0xa1)).unwrap() else {
        panic!("claim expected")
    };
    // v1 runs on the fast lane: R = ceil(log2(4) · 32 · 2) = 128 bits.
    let pool = &h.kernel.state().claims.holdout_pools["global/demo"];
    assert_eq!(pool.available(NOW.0), (72.0, 896.0));
    let refused = h.command(&Principal::new("agent-b", Role::Agent), create_v1(0xa2)).unwrap_err();
    assert_eq!(refused.code, ErrorCode::FailedPrecondition);
    assert_eq!(refused.message, "reservation does not fit the remaining pool budget");
    commit(&mut h, &agent(), &claim_id, &wasm("claim_mod3"), &[]);
    run_to_capsule(&mut h, &agent(), &claim_id);
    // Executed: 4 bits settled in the holdout and topic pools, the rest released.
    let claims = &h.kernel.state().claims;
    assert_eq!(claims.holdout_pools["global/demo"].available(NOW.0), (196.0, 1020.0));
    assert_eq!(claims.topic_pools[&TopicId([0xa1; 32])].available(NOW.0), (1020.0, 1020.0));
    h.command(&Principal::new("agent-b", Role::Agent), create_v1(0xa2)).unwrap();
}

#[test]
fn the_share_in_force_when_a_create_was_accepted_is_the_one_replayed() {
    use evidenceos_core::state::Policy;
    let uncapped = Policy { max_principal_reservation_share_percent: 100, ..Policy::default() };
    let config = KernelConfig { policy: uncapped, environment: environment(), ..KernelConfig::default() };
    let mut h = Harness::boot_config(MemDisk::new(), config);
    for signal in 1..=3 {
        create_with_signal(&mut h, &agent(), "uncapped", "fast", signal);
    }
    let state = h.kernel.state().clone();
    let mut disk = h.disk;
    disk.crash();
    // Restarted with the default share (25 %): the third create would now be refused, but replay
    // judges it under the policy its journal header recorded.
    let h = Harness::boot(disk);
    assert_eq!(h.kernel.state(), &state);
    let mut h = h;
    let refused = h.command(&agent(), create_command("uncapped", "fast", 4)).unwrap_err();
    assert_eq!(refused.code, ErrorCode::ResourceExhausted, "new creates follow the new policy");
}
