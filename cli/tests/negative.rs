//! Every RPC refuses malformed fields, wrong lifecycle order and wrong roles with the right
//! status code, and no refusal changes anything: the checkpoint the daemon writes at shutdown
//! (every claim, pool, reservation, canary, revocation, credit account and idempotency record,
//! the journal position and the log head) and the signed log's bytes are the same before and
//! after the whole table.

mod support;

use std::path::Path;

use evidenceos_core::hash::sha256;
use evidenceos_grpc::v2;
use evidenceos_grpc::v2::evidence_os_client::EvidenceOsClient;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const AGENT: &str = "agent-secret";
const OTHER: &str = "other-secret";
const AUDITOR: &str = "auditor-secret";
const OPERATOR: &str = "operator-secret";

fn req<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn with_id<T>(message: T, token: &str, id: &str) -> Request<T> {
    let mut request = req(message, token);
    request.metadata_mut().insert("x-request-id", id.parse().unwrap());
    request
}

fn wasm(name: &str) -> Vec<u8> {
    wat::parse_file(Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../examples/{name}.wat"))).unwrap()
}

fn v2_request(name: &str) -> v2::CreateClaimV2Request {
    support::claim_request(name, "fast", "demo")
}

fn code<T>(result: Result<tonic::Response<T>, Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

struct Table {
    failures: Vec<String>,
    cases: usize,
}

impl Table {
    fn check(&mut self, label: &str, got: Code, want: Code) {
        self.cases += 1;
        if got != want {
            self.failures.push(format!("{label}: got {got:?}, want {want:?}"));
        }
    }
}

/// Claim ids in each state of the lifecycle, owned by AGENT.
struct Fixtures {
    uncommitted: Vec<u8>,
    committed: Vec<u8>,
    sealed: Vec<u8>,
    certified: Vec<u8>,
}

async fn fixtures(client: &mut EvidenceOsClient<Channel>) -> Fixtures {
    let create = |name: &'static str| {
        let mut client = client.clone();
        async move { client.create_claim_v2(with_id(v2_request(name), AGENT, name)).await.unwrap().into_inner().claim_id }
    };
    let (uncommitted, committed, sealed, certified) =
        (create("uncommitted").await, create("committed").await, create("sealed").await, create("certified").await);
    let module = wasm("claim_mod3");
    for id in [&committed, &sealed, &certified] {
        let artifacts = vec![v2::Artifact { artifact_hash: sha256(&module).to_vec(), kind: "wasm".into() }];
        let commit = v2::CommitArtifactsRequest { claim_id: id.clone(), artifacts, wasm_module: module.clone() };
        client.commit_artifacts(req(commit, AGENT)).await.unwrap();
    }
    for id in [&sealed, &certified] {
        client.freeze_gates(req(v2::FreezeGatesRequest { claim_id: id.clone() }, AGENT)).await.unwrap();
    }
    let executed = client
        .execute_claim_v2(with_id(v2::ExecuteClaimV2Request { claim_id: certified.clone() }, AGENT, "x"))
        .await
        .unwrap();
    assert_eq!(executed.into_inner().state, v2::ClaimState::Certified as i32);
    // A second leaf (another agent's rejected claim), so the log has sizes to reverse: a first
    // certification logs only its capsule.
    let other = client.create_claim_v2(with_id(v2_request("grown-log"), OTHER, "g")).await.unwrap().into_inner();
    let zero = wasm("claim_all_zero");
    let artifacts = vec![v2::Artifact { artifact_hash: sha256(&zero).to_vec(), kind: "wasm".into() }];
    let commit = v2::CommitArtifactsRequest { claim_id: other.claim_id.clone(), artifacts, wasm_module: zero };
    client.commit_artifacts(req(commit, OTHER)).await.unwrap();
    client.freeze_gates(req(v2::FreezeGatesRequest { claim_id: other.claim_id.clone() }, OTHER)).await.unwrap();
    let execute = v2::ExecuteClaimV2Request { claim_id: other.claim_id };
    client.execute_claim_v2(with_id(execute, OTHER, "g")).await.unwrap();
    Fixtures { uncommitted, committed, sealed, certified }
}

/// What must not change, as the daemon leaves it on disk after a clean stop: the checkpoint
/// (`state.json`, with the journal position it covers and the log head, and under `tables` the
/// rows of the row files it names folded as recovery folds them, the latest record of a key
/// winning) and `etl.log`.
fn durable_state(data: &Path) -> (serde_json::Value, Vec<u8>) {
    let checkpoint = std::fs::read(data.join("state.json")).expect("a clean stop writes state.json");
    let mut state: serde_json::Value = serde_json::from_slice(&checkpoint).unwrap();
    let mut tables = serde_json::Map::new();
    let named = [&state["rows"], &state["compacting"]];
    for at in named.into_iter().filter(|at| !at.is_null()) {
        let generation = at["generation"].as_u64().unwrap();
        let len = at["len"].as_u64().unwrap() as usize;
        let rows = std::fs::read(data.join(format!("state.{}.log", generation % 2))).unwrap();
        for record in evidenceos_core::frame::scan(&rows[..len], 0).unwrap().records {
            let (name, key, row): (String, serde_json::Value, serde_json::Value) =
                serde_json::from_slice(record.payload).unwrap();
            let table = tables.entry(name).or_insert_with(|| serde_json::json!({}));
            let table = table.as_object_mut().unwrap();
            // Keys are strings, or admission numbers in idempotency_order.
            let key = key.as_str().map_or_else(|| key.to_string(), str::to_string);
            match row {
                serde_json::Value::Null => drop(table.remove(&key)),
                row => drop(table.insert(key, row)),
            }
        }
    }
    state["tables"] = serde_json::Value::Object(tables);
    (state, std::fs::read(data.join("etl.log")).unwrap())
}

/// JSON paths where `a` and `b` differ (the leaves, not every enclosing object).
fn differences(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value::Object;
    match (a, b) {
        (Object(a), Object(b)) => {
            for key in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
                let null = serde_json::Value::Null;
                differences(&format!("{path}/{key}"), a.get(key).unwrap_or(&null), b.get(key).unwrap_or(&null), out);
            }
        }
        _ if a != b => out.push(path.to_string()),
        _ => {}
    }
}

#[tokio::test]
async fn every_rpc_refuses_bad_input_without_changing_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    support::install_demo_holdout(&data);
    let env = [
        ("EVIDENCEOS_AGENT_TOKENS", "agent-secret,other-secret"),
        ("EVIDENCEOS_AUDITOR_TOKENS", AUDITOR),
        ("EVIDENCEOS_OPERATOR_TOKENS", OPERATOR),
    ];
    // Credit enforced, so every agent has an account a refusal could wrongly charge; the
    // fixtures hold four open reservations (512 of demo's 1024 bits) for one agent.
    let flags = ["--default-credit-limit", "1000000000000", "--max-principal-reservation-share-percent", "50"];
    let daemon = support::start_with(&data, tmp.path(), &flags, &env);
    let mut c = EvidenceOsClient::connect(daemon.addr.clone()).await.unwrap();
    let f = fixtures(&mut c).await;
    drop(c);
    daemon.stop();
    let before = durable_state(&data);
    let credits = &before.0["tables"]["credits"];
    assert!(credits.as_object().is_some_and(|accounts| !accounts.is_empty()), "credit accounts: {credits}");
    let daemon = support::start_with(&data, tmp.path(), &flags, &env);
    let mut c = EvidenceOsClient::connect(daemon.addr.clone()).await.unwrap();
    let mut t = Table { failures: Vec::new(), cases: 0 };
    let (bad31, unknown) = (vec![1u8; 31], vec![9u8; 32]);
    use Code::{AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unauthenticated};

    // CreateClaim (v1)
    let v1 = || v2::CreateClaimRequest {
        topic_id: vec![1; 32],
        holdout_handle_id: vec![0xd0; 32],
        phys_hir_hash: vec![2; 32],
        epoch_size: 1,
        oracle_num_symbols: 4,
        alpha: 0.05,
        access_credit: 10,
    };
    let v1_cases: Vec<(&str, v2::CreateClaimRequest, Code)> = vec![
        ("v1 topic 31 bytes", v2::CreateClaimRequest { topic_id: bad31.clone(), ..v1() }, InvalidArgument),
        ("v1 handle empty", v2::CreateClaimRequest { holdout_handle_id: vec![], ..v1() }, InvalidArgument),
        ("v1 phys 33 bytes", v2::CreateClaimRequest { phys_hir_hash: vec![0; 33], ..v1() }, InvalidArgument),
        ("v1 one symbol", v2::CreateClaimRequest { oracle_num_symbols: 1, ..v1() }, InvalidArgument),
        ("v1 alpha 0", v2::CreateClaimRequest { alpha: 0.0, ..v1() }, InvalidArgument),
        ("v1 alpha 1", v2::CreateClaimRequest { alpha: 1.0, ..v1() }, InvalidArgument),
        ("v1 alpha NaN", v2::CreateClaimRequest { alpha: f64::NAN, ..v1() }, InvalidArgument),
        ("v1 no credit", v2::CreateClaimRequest { access_credit: 0, ..v1() }, InvalidArgument),
        ("v1 unknown holdout", v2::CreateClaimRequest { holdout_handle_id: unknown.clone(), ..v1() }, NotFound),
    ];
    for (label, message, want) in v1_cases {
        t.check(label, code(c.create_claim(req(message, AGENT)).await), want);
    }

    // CreateClaimV2
    let meta = |f: &dyn Fn(&mut v2::ClaimMetadataV2)| {
        let mut r = v2_request("fresh");
        f(r.metadata.as_mut().unwrap());
        r
    };
    let v2_cases: Vec<(&str, v2::CreateClaimV2Request, Code)> = vec![
        ("v2 empty name", v2::CreateClaimV2Request { claim_name: String::new(), ..v2_request("") }, InvalidArgument),
        ("v2 name with space", v2_request("bad name"), InvalidArgument),
        ("v2 name 129 chars", v2_request(&"n".repeat(129)), InvalidArgument),
        ("v2 lane", meta(&|m| m.lane = "medium".into()), InvalidArgument),
        ("v2 alpha 0", meta(&|m| m.alpha_micros = 0), InvalidArgument),
        ("v2 alpha 1e6", meta(&|m| m.alpha_micros = 1_000_000), InvalidArgument),
        ("v2 schema", meta(&|m| m.output_schema_id = "cbrn/v1".into()), InvalidArgument),
        ("v2 epoch ref", meta(&|m| m.epoch_config_ref = "has space".into()), InvalidArgument),
        ("v2 one symbol", v2::CreateClaimV2Request { oracle_num_symbols: 1, ..v2_request("fresh") }, InvalidArgument),
        ("v2 no credit", v2::CreateClaimV2Request { access_credit: 0, ..v2_request("fresh") }, InvalidArgument),
        (
            "v2 holdout empty",
            v2::CreateClaimV2Request { holdout_ref: String::new(), ..v2_request("fresh") },
            InvalidArgument,
        ),
        (
            "v2 unknown holdout",
            v2::CreateClaimV2Request { holdout_ref: "nope".into(), ..v2_request("fresh") },
            NotFound,
        ),
        (
            "v2 nullspec id",
            v2::CreateClaimV2Request { nullspec_id: "zz".into(), ..v2_request("fresh") },
            InvalidArgument,
        ),
        ("v2 oracle id", v2::CreateClaimV2Request { oracle_id: "a b".into(), ..v2_request("fresh") }, InvalidArgument),
        (
            "v2 dp NaN",
            v2::CreateClaimV2Request { dp_epsilon_budget: Some(f64::NAN), ..v2_request("fresh") },
            InvalidArgument,
        ),
        (
            "v2 dp negative",
            v2::CreateClaimV2Request { dp_delta_budget: Some(-1.0), ..v2_request("fresh") },
            InvalidArgument,
        ),
    ];
    for (i, (label, message, want)) in v2_cases.into_iter().enumerate() {
        t.check(label, code(c.create_claim_v2(with_id(message, AGENT, &format!("neg-{i}"))).await), want);
    }
    t.check("v2 without x-request-id", code(c.create_claim_v2(req(v2_request("fresh"), AGENT)).await), InvalidArgument);
    t.check("v2 without token", code(c.create_claim_v2(Request::new(v2_request("fresh"))).await), Unauthenticated);
    let replay_other_body = with_id(v2_request("another"), AGENT, "uncommitted");
    t.check("v2 request id reused", code(c.create_claim_v2(replay_other_body).await), AlreadyExists);

    // CommitArtifacts
    let module = wasm("claim_mod3");
    let good = || vec![v2::Artifact { artifact_hash: sha256(&module).to_vec(), kind: "wasm".into() }];
    let commit = |id: &[u8], artifacts: Vec<v2::Artifact>, m: &[u8]| v2::CommitArtifactsRequest {
        claim_id: id.to_vec(),
        artifacts,
        wasm_module: m.to_vec(),
    };
    let bad_import =
        wat::parse_str(r#"(module (import "env" "clock" (func)) (memory (export "memory") 1) (func (export "run")))"#)
            .unwrap();
    let many: Vec<v2::Artifact> =
        (0..129).map(|i| v2::Artifact { artifact_hash: vec![i as u8; 32], kind: "src".into() }).collect();
    let dep = vec![good()[0].clone(), v2::Artifact { artifact_hash: unknown.clone(), kind: "capsule".into() }];
    let commit_cases: Vec<(&str, v2::CommitArtifactsRequest, &str, Code)> = vec![
        ("commit id 31", commit(&bad31, good(), &module), AGENT, InvalidArgument),
        ("commit unknown", commit(&unknown, good(), &module), AGENT, NotFound),
        ("commit no artifacts", commit(&f.uncommitted, vec![], &module), AGENT, InvalidArgument),
        ("commit 129 artifacts", commit(&f.uncommitted, many, &module), AGENT, InvalidArgument),
        (
            "commit hash 31",
            commit(&f.uncommitted, vec![v2::Artifact { artifact_hash: bad31.clone(), kind: "wasm".into() }], &module),
            AGENT,
            InvalidArgument,
        ),
        (
            "commit empty kind",
            commit(
                &f.uncommitted,
                vec![v2::Artifact { artifact_hash: sha256(&module).to_vec(), kind: String::new() }],
                &module,
            ),
            AGENT,
            InvalidArgument,
        ),
        ("commit wrong wasm hash", commit(&f.uncommitted, good(), b"\0asm\x01\0\0\0"), AGENT, InvalidArgument),
        (
            "commit disallowed import",
            commit(
                &f.uncommitted,
                vec![v2::Artifact { artifact_hash: sha256(&bad_import).to_vec(), kind: "wasm".into() }],
                &bad_import,
            ),
            AGENT,
            InvalidArgument,
        ),
        ("commit unknown dependency", commit(&f.uncommitted, dep, &module), AGENT, NotFound),
        ("commit by another agent", commit(&f.uncommitted, good(), &module), OTHER, PermissionDenied),
        ("commit twice", commit(&f.committed, good(), &module), AGENT, FailedPrecondition),
    ];
    for (label, message, token, want) in commit_cases {
        t.check(label, code(c.commit_artifacts(req(message, token)).await), want);
    }

    // FreezeGates / Freeze / SealClaim / Seal
    for (label, id, token, want) in [
        ("freeze id 31", bad31.clone(), AGENT, InvalidArgument),
        ("freeze unknown", unknown.clone(), AGENT, NotFound),
        ("freeze uncommitted", f.uncommitted.clone(), AGENT, FailedPrecondition),
        ("freeze by another agent", f.committed.clone(), OTHER, PermissionDenied),
        ("freeze certified", f.certified.clone(), AGENT, FailedPrecondition),
    ] {
        t.check(label, code(c.freeze_gates(req(v2::FreezeGatesRequest { claim_id: id.clone() }, token)).await), want);
        t.check(label, code(c.freeze(req(v2::FreezeRequest { claim_id: id.clone() }, token)).await), want);
        t.check(label, code(c.seal_claim(req(v2::SealClaimRequest { claim_id: id.clone() }, token)).await), want);
        t.check(label, code(c.seal(req(v2::SealRequest { claim_id: id }, token)).await), want);
    }

    // ExecuteClaimV2 and the legacy ExecuteClaim
    for (i, (label, id, token, want)) in [
        ("execute id 31", bad31.clone(), AGENT, InvalidArgument),
        ("execute unknown", unknown.clone(), AGENT, NotFound),
        ("execute committed", f.committed.clone(), AGENT, FailedPrecondition),
        ("execute by another agent", f.sealed.clone(), OTHER, PermissionDenied),
    ]
    .into_iter()
    .enumerate()
    {
        let execute = with_id(v2::ExecuteClaimV2Request { claim_id: id }, token, &format!("exec-neg-{i}"));
        t.check(label, code(c.execute_claim_v2(execute).await), want);
    }
    let legacy = v2::ExecuteClaimRequest {
        claim_id: f.sealed.clone(),
        decision: 1,
        reason_codes: vec![],
        canonical_output: vec![],
    };
    t.check("legacy execute disabled", code(c.execute_claim(req(legacy, AGENT)).await), FailedPrecondition);

    // RevokeClaim
    for (i, (label, id, reason, token, want)) in [
        ("revoke id 31", bad31.clone(), "r", AGENT, InvalidArgument),
        ("revoke empty reason", f.certified.clone(), "", AGENT, InvalidArgument),
        ("revoke long reason", f.certified.clone(), &"r".repeat(257) as &str, AGENT, InvalidArgument),
        ("revoke unknown", unknown.clone(), "r", AGENT, NotFound),
        ("revoke without capsule", f.sealed.clone(), "r", AGENT, FailedPrecondition),
        ("revoke by another agent", f.certified.clone(), "r", OTHER, PermissionDenied),
    ]
    .into_iter()
    .enumerate()
    {
        let revoke =
            with_id(v2::RevokeClaimRequest { claim_id: id, reason: reason.to_string() }, token, &format!("rev-{i}"));
        t.check(label, code(c.revoke_claim(revoke).await), want);
    }

    // Capsule reads
    for (label, id, token, want) in [
        ("capsule id 31", bad31.clone(), AUDITOR, InvalidArgument),
        ("capsule unknown", unknown.clone(), AUDITOR, NotFound),
        ("capsule by an agent", f.certified.clone(), AGENT, PermissionDenied),
        ("capsule not yet made", f.sealed.clone(), AUDITOR, NotFound),
    ] {
        t.check(label, code(c.get_capsule(req(v2::GetCapsuleRequest { claim_id: id.clone() }, token)).await), want);
        t.check(label, code(c.fetch_capsule(req(v2::FetchCapsuleRequest { claim_id: id }, token)).await), want);
    }

    // Log reads
    let inclusion = |i| v2::GetInclusionProofRequest { leaf_index: i };
    t.check("inclusion by an agent", code(c.get_inclusion_proof(req(inclusion(0), AGENT)).await), PermissionDenied);
    t.check("inclusion beyond", code(c.get_inclusion_proof(req(inclusion(1 << 40), AUDITOR)).await), NotFound);
    let consistency = |a, b| v2::GetConsistencyProofRequest { first_tree_size: a, second_tree_size: b };
    t.check(
        "consistency from 0",
        code(c.get_consistency_proof(req(consistency(0, 1), AUDITOR)).await),
        InvalidArgument,
    );
    t.check(
        "consistency reversed",
        code(c.get_consistency_proof(req(consistency(2, 1), AUDITOR)).await),
        InvalidArgument,
    );
    t.check("consistency beyond", code(c.get_consistency_proof(req(consistency(1, 1 << 40), AUDITOR)).await), NotFound);
    t.check(
        "consistency by an agent",
        code(c.get_consistency_proof(req(consistency(1, 1), AGENT)).await),
        PermissionDenied,
    );
    let key = |k: Vec<u8>| v2::GetPublicKeyRequest { key_id: k };
    t.check("public key 3 bytes", code(c.get_public_key(req(key(vec![1; 3]), AGENT)).await), InvalidArgument);
    t.check("public key unknown", code(c.get_public_key(req(key(unknown.clone()), AGENT)).await), NotFound);

    // Credit and pools (operator only)
    let grant = |p: &str, amount, reason: &str| v2::GrantCreditRequest {
        principal_id: p.into(),
        amount,
        reason: reason.into(),
    };
    t.check("grant by an agent", code(c.grant_credit(req(grant("p", 1, "r"), AGENT)).await), PermissionDenied);
    t.check("grant zero", code(c.grant_credit(req(grant("p", 0, "r"), OPERATOR)).await), InvalidArgument);
    t.check("grant bad principal", code(c.grant_credit(req(grant("a b", 1, "r"), OPERATOR)).await), InvalidArgument);
    t.check("grant empty reason", code(c.grant_credit(req(grant("p", 1, ""), OPERATOR)).await), InvalidArgument);
    let limit = |p: &str| v2::SetCreditLimitRequest { principal_id: p.into(), limit: 5 };
    t.check("limit by an auditor", code(c.set_credit_limit(req(limit("p"), AUDITOR)).await), PermissionDenied);
    t.check("limit empty principal", code(c.set_credit_limit(req(limit(""), OPERATOR)).await), InvalidArgument);
    let pools = |h: &str, s: &str, k: Option<f64>| v2::SetHoldoutPoolBudgetsRequest {
        holdout_id: h.into(),
        scope: s.into(),
        new_k_bits_budget: k,
        new_access_credit_budget: None,
    };
    t.check(
        "pools by an agent",
        code(c.set_holdout_pool_budgets(req(pools("demo", "global", Some(1.0)), AGENT)).await),
        PermissionDenied,
    );
    t.check(
        "pools unknown holdout",
        code(c.set_holdout_pool_budgets(req(pools("nope", "global", None), OPERATOR)).await),
        NotFound,
    );
    t.check(
        "pools bad scope",
        code(c.set_holdout_pool_budgets(req(pools("demo", "weird", None), OPERATOR)).await),
        InvalidArgument,
    );
    t.check(
        "pools negative",
        code(c.set_holdout_pool_budgets(req(pools("demo", "global", Some(-1.0)), OPERATOR)).await),
        InvalidArgument,
    );
    t.check(
        "pools NaN",
        code(c.set_holdout_pool_budgets(req(pools("demo", "global", Some(f64::NAN)), OPERATOR)).await),
        InvalidArgument,
    );
    let get_pools = |h: &str| v2::GetHoldoutPoolBudgetsRequest { holdout_id: h.into(), scope: "global".into() };
    t.check(
        "get pools by an agent",
        code(c.get_holdout_pool_budgets(req(get_pools("demo"), AGENT)).await),
        PermissionDenied,
    );
    t.check("get pools unknown", code(c.get_holdout_pool_budgets(req(get_pools("nope"), AUDITOR)).await), NotFound);

    assert!(t.failures.is_empty(), "{} of {} cases wrong:\n{}", t.failures.len(), t.cases, t.failures.join("\n"));
    assert!(t.cases > 90, "{} cases", t.cases);
    drop(c);
    daemon.stop();
    let after = durable_state(&data);
    assert_eq!(before.1, after.1, "refusals changed the signed log");
    let mut changed = Vec::new();
    differences("", &before.0, &after.0, &mut changed);
    assert!(changed.is_empty(), "refusals changed the kernel state at {changed:?}");
}
