//! With the real binary built with `crash-test-failpoints`, on both runtimes (the failpoints sit in
//! io-sync's file executor, which both use): every named failpoint is armed at a hit that comes
//! after a whole round of acknowledged work (creates, commits, freezes, both executes, a
//! revocation): at each of its hits in a second round, so the cut falls after each step in turn;
//! a client drives rounds until the daemon aborts there; after a restart every acknowledged
//! state (or a later one), capsule (with a verifiable proof) and revocation (in the feed) is there.
//! Run with `cargo test -p evidenceos-cli --features crash-test-failpoints --test failpoints`.
#![cfg(feature = "crash-test-failpoints")]

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use evidenceos_core::SignedTreeHead;
use evidenceos_core::etl::verify_tree_head;
use evidenceos_core::hash::sha256;
use evidenceos_core::keys::KeyId;
use evidenceos_core::merkle::{leaf_hash, verify_inclusion};
use evidenceos_grpc::v2;
use support::rpc::{Rpc, Runtime};
use tokio::task::block_in_place;

const FAILPOINTS: [&str; 19] = [
    "before_journal_append",
    "after_journal_append",
    "before_journal_sync",
    "after_journal_sync",
    "before_etl_append",
    "after_etl_append",
    "before_etl_sync",
    "after_etl_sync",
    "before_state_log_append",
    "after_state_log_append",
    "before_state_log_sync",
    "after_state_log_sync",
    "before_checkpoint_replace",
    "after_checkpoint_replace",
    "before_journal_compaction",
    "after_journal_compaction",
    "after_etl_append_execute_claim",
    "after_etl_append_execute_claim_v2",
    "after_etl_append_revoke_claim",
];

/// Rounds a run may take before the armed point must have fired (each round hits every point).
const MAX_ROUNDS: usize = 3;
/// How long the calibration daemon must stay without new hits to count as settled.
const QUIET: std::time::Duration = std::time::Duration::from_millis(300);
/// Crash runs in flight at once (each is one daemon, mostly waiting on fsync).
const PARALLEL: usize = 3;

const AGENT: &str = "agent-secret";
const AUDITOR: &str = "auditor-secret";

fn start(runtime: Runtime, data: &Path, log_dir: &Path, env: &[(&str, &str)]) -> support::Daemon {
    let mut all = vec![("EVIDENCEOS_AGENT_TOKENS", AGENT), ("EVIDENCEOS_AUDITOR_TOKENS", AUDITOR)];
    all.extend_from_slice(env);
    let flags = ["--runtime", runtime.flag(), "--enable-insecure-v1", "--checkpoint-every", "2"];
    block_in_place(|| support::start_with(data, log_dir, &flags, &all))
}

/// One claim as the client last saw it acknowledged.
struct Claim {
    name: String,
    id: Vec<u8>,
    state: i32,
    capsule: Option<Vec<u8>>,
    revoked: bool,
}

#[derive(Default)]
struct Acked {
    claims: Vec<Claim>,
    /// Rounds whose every step was acknowledged.
    full_rounds: usize,
}

/// Creates, commits and freezes `name`; each acknowledged step is recorded.
async fn prepare(agent: &Rpc, name: &str, acked: &mut Acked) -> Result<usize, String> {
    let module = wat::parse_file(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/claim_mod3.wat")).unwrap();
    let create = support::claim_request(name, "fast", "demo");
    let created: v2::CreateClaimV2Response = agent.call("CreateClaimV2", create, Some(&format!("c-{name}"))).await?;
    acked.claims.push(Claim {
        name: name.into(),
        id: created.claim_id,
        state: created.state,
        capsule: None,
        revoked: false,
    });
    let at = acked.claims.len() - 1;
    let id = acked.claims[at].id.clone();
    let artifacts = vec![v2::Artifact { artifact_hash: sha256(&module).to_vec(), kind: "wasm".into() }];
    let commit = v2::CommitArtifactsRequest { claim_id: id.clone(), artifacts, wasm_module: module };
    acked.claims[at].state = agent.call::<_, v2::CommitArtifactsResponse>("CommitArtifacts", commit, None).await?.state;
    let freeze = v2::FreezeGatesRequest { claim_id: id };
    acked.claims[at].state = agent.call::<_, v2::FreezeGatesResponse>("FreezeGates", freeze, None).await?.state;
    Ok(at)
}

/// One round: claim A through ExecuteClaimV2, claim B through the legacy ExecuteClaim, A revoked.
async fn round(agent: &Rpc, n: usize, acked: &mut Acked) -> Result<(), String> {
    let a = prepare(agent, &format!("a-{n}"), acked).await?;
    let execute = v2::ExecuteClaimV2Request { claim_id: acked.claims[a].id.clone() };
    let done: v2::ExecuteClaimV2Response = agent.call("ExecuteClaimV2", execute, Some(&format!("e-{n}"))).await?;
    (acked.claims[a].state, acked.claims[a].capsule) = (done.state, Some(done.capsule_hash));
    let b = prepare(agent, &format!("b-{n}"), acked).await?;
    let legacy = v2::ExecuteClaimRequest {
        claim_id: acked.claims[b].id.clone(),
        decision: 1,
        reason_codes: vec![1],
        canonical_output: vec![3],
    };
    let done: v2::ExecuteClaimResponse = agent.call("ExecuteClaim", legacy, None).await?;
    (acked.claims[b].state, acked.claims[b].capsule) = (done.state, Some(done.capsule_hash));
    let revoke = v2::RevokeClaimRequest { claim_id: acked.claims[a].id.clone(), reason: "withdrawn".into() };
    let done: v2::RevokeClaimResponse = agent.call("RevokeClaim", revoke, Some(&format!("r-{n}"))).await?;
    (acked.claims[a].state, acked.claims[a].revoked) = (done.state, true);
    acked.full_rounds += 1;
    Ok(())
}

/// Rounds until an RPC fails (the daemon aborted) or `rounds` are done.
async fn drive(agent: &Rpc, rounds: usize) -> Acked {
    let mut acked = Acked::default();
    for n in 0..rounds {
        if round(agent, n, &mut acked).await.is_err() {
            break;
        }
    }
    acked
}

/// Hits of every point during one acknowledged round and the work it set off after its last
/// reply (a checkpoint may follow the revocation's reply), from a traced run: a point armed at
/// one more hit fires only after that whole round was acknowledged.
async fn calibrate(runtime: Runtime) -> BTreeMap<&'static str, u64> {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    support::install_demo_holdout(&data);
    let daemon = start(runtime, &data, tmp.path(), &[("EVIDENCEOS_CRASH_FAILPOINT_TRACE", "1")]);
    let agent = Rpc::connect(runtime, &daemon.addr, AGENT).await.unwrap();
    let acked = drive(&agent, 1).await;
    assert_eq!(acked.full_rounds, 1, "{runtime:?}: the calibration round failed:\n{}", daemon.log());
    let count = |log: &str| {
        FAILPOINTS.map(|point| {
            let count = log.lines().filter(|line| line.strip_prefix("failpoint_hit ") == Some(point)).count();
            (point, u64::try_from(count).unwrap())
        })
    };
    // Settled: the same counts twice, QUIET apart, with nothing else asked of the daemon.
    let deadline = std::time::Instant::now() + support::START_TIMEOUT;
    let mut hits = count(&daemon.log());
    loop {
        tokio::time::sleep(QUIET).await;
        let again = count(&daemon.log());
        if again == hits {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{runtime:?}: the daemon never went quiet");
        hits = again;
    }
    drop(agent);
    block_in_place(|| daemon.stop());
    hits.into_iter().collect()
}

/// The head, with its signature checked against the daemon's public key.
async fn verified_head(auditor: &Rpc, label: &str) -> SignedTreeHead {
    let sth: v2::GetSignedTreeHeadResponse =
        auditor.call("GetSignedTreeHead", v2::GetSignedTreeHeadRequest {}, None).await.unwrap();
    let sth = SignedTreeHead {
        tree_size: sth.tree_size,
        root_hash: sth.root_hash.try_into().unwrap(),
        key_id: KeyId(sth.key_id.try_into().unwrap()),
        signature: sth.signature.try_into().unwrap(),
    };
    let key: v2::GetPublicKeyResponse =
        auditor.call("GetPublicKey", v2::GetPublicKeyRequest { key_id: vec![] }, None).await.unwrap();
    assert!(verify_tree_head(&key.ed25519_public_key.try_into().unwrap(), &sth), "{label}: head signature");
    sth
}

/// After the restart: every acknowledged state (or a later one), capsule and revocation.
async fn check_survivors(runtime: Runtime, addr: &str, acked: &Acked, label: &str) {
    let (agent, auditor) =
        (Rpc::connect(runtime, addr, AGENT).await.unwrap(), Rpc::connect(runtime, addr, AUDITOR).await.unwrap());
    verified_head(&auditor, label).await;
    let feed: v2::GetRevocationFeedResponse =
        auditor.call("GetRevocationFeed", v2::GetRevocationFeedRequest {}, None).await.unwrap();
    for claim in &acked.claims {
        // Creating an existing claim answers with its current state; the lifecycle's states grow.
        let probe = support::claim_request(&claim.name, "fast", "demo");
        let now: v2::CreateClaimV2Response =
            agent.call("CreateClaimV2", probe, Some(&format!("probe-{}", claim.name))).await.unwrap();
        assert_eq!(now.claim_id, claim.id, "{label}: {}", claim.name);
        assert!(now.state >= claim.state, "{label}: {} went back from {} to {}", claim.name, claim.state, now.state);
        let Some(capsule_hash) = &claim.capsule else { continue };
        let fetched: v2::FetchCapsuleResponse = auditor
            .call("FetchCapsule", v2::FetchCapsuleRequest { claim_id: claim.id.clone() }, None)
            .await
            .unwrap_or_else(|e| panic!("{label}: acknowledged capsule of {} lost: {e}", claim.name));
        assert_eq!(&fetched.capsule_hash, capsule_hash, "{label}: {}", claim.name);
        let proof = fetched.inclusion_proof.unwrap();
        let path: Vec<[u8; 32]> = proof.audit_path.iter().map(|h| h.clone().try_into().unwrap()).collect();
        let root: [u8; 32] = fetched.root_hash.try_into().unwrap();
        verify_inclusion(&leaf_hash(&fetched.capsule_bytes), proof.leaf_index, proof.tree_size, &path, &root)
            .unwrap_or_else(|e| panic!("{label}: {}: {e}", claim.name));
        if claim.revoked {
            assert_eq!(now.state, v2::ClaimState::Revoked as i32, "{label}: {}", claim.name);
            assert!(
                feed.entries.iter().any(|e| &e.claim_id == capsule_hash),
                "{label}: revocation of {} lost",
                claim.name
            );
        }
    }
}

/// One crash: arm `point` at hit `nth`, drive until the abort, restart, check. Returns the label.
async fn crash_run(runtime: Runtime, point: &'static str, nth: u64) -> String {
    let label = format!("{runtime:?} {point}:{nth}");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    support::install_demo_holdout(&data);
    let armed = format!("{point}:{nth}");
    let mut daemon = start(runtime, &data, tmp.path(), &[("EVIDENCEOS_CRASH_FAILPOINT", armed.as_str())]);
    let agent = Rpc::connect(runtime, &daemon.addr, AGENT).await.unwrap();
    let acked = drive(&agent, MAX_ROUNDS).await;
    drop(agent);
    let status = block_in_place(|| daemon.wait());
    assert!(!status.success(), "{label}: the daemon must have aborted (it ran {MAX_ROUNDS} rounds)");
    assert!(daemon.log().contains(&format!("failpoint {point} reached (hit {nth})")), "{label}: aborted elsewhere");
    assert!(acked.full_rounds >= 1, "{label}: fired before a whole round was acknowledged");

    let daemon = start(runtime, &data, tmp.path(), &[]);
    check_survivors(runtime, &daemon.addr, &acked, &label).await;
    block_in_place(|| daemon.stop());
    label
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_failpoint_fires_after_acknowledged_work_and_recovery_keeps_all_of_it() {
    let mut runs = tokio::task::JoinSet::new();
    let (mut spawned, mut done) = (0, Vec::new());
    for runtime in Runtime::BOTH {
        let hits = calibrate(runtime).await;
        for point in FAILPOINTS {
            let per_round = hits[point];
            assert!(per_round > 0, "{runtime:?}: one round never reached {point}");
            // The second round's hits: the cut falls after each of its steps in turn.
            for nth in per_round + 1..=2 * per_round {
                if runs.len() == PARALLEL {
                    done.push(runs.join_next().await.unwrap().unwrap());
                }
                runs.spawn(crash_run(runtime, point, nth));
                spawned += 1;
            }
        }
    }
    while let Some(run) = runs.join_next().await {
        done.push(run.unwrap());
    }
    assert_eq!(done.len(), spawned);
    assert!(spawned >= 2 * FAILPOINTS.len());
}
