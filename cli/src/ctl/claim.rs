//! `evidenceosctl claim run`: one claim through CreateClaimV2 → CommitArtifacts → FreezeGates →
//! SealClaim → ExecuteClaimV2.

use evidenceos_core::hash::sha256;
use evidenceos_core::merkle::{MerkleTree, leaf_hash};
use evidenceos_grpc::v2;
use serde_json::json;

use super::args::RunArgs;
use super::client::{COMMIT, CREATE, Client, EXECUTE, FREEZE, Failure, SEAL};
use super::output::{aligned, decision_name, progress, state_name};

/// Bound into the claim and topic ids; epochs carry no clock here (SPEC §5.2), so one fixed value.
const EPOCH_SIZE: u64 = 1;
const EPOCH_CONFIG_REF: &str = "epoch/v1";

/// What `claim run` reports: the claim id and the daemon's ExecuteClaimV2 answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outcome {
    pub(crate) claim_id: Vec<u8>,
    pub(crate) execution: v2::ExecuteClaimV2Response,
}

impl Outcome {
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let e = &self.execution;
        json!({
            "claim_id": hex::encode(&self.claim_id),
            "state": state_name(e.state),
            "decision": decision_name(e.decision),
            "reason_codes": e.reason_codes,
            // serde_json writes a non-finite number as null.
            "e_value": e.e_value,
            "certified": e.certified,
            "canonical_output_hex": hex::encode(&e.canonical_output),
            "capsule_hash": hex::encode(&e.capsule_hash),
            "etl_index": e.etl_index,
        })
    }

    pub(crate) fn to_text(&self) -> String {
        let e = &self.execution;
        let reason_codes = if e.reason_codes.is_empty() {
            "(none)".to_string()
        } else {
            e.reason_codes.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        };
        let or_none = |bytes: &[u8]| if bytes.is_empty() { "(none)".to_string() } else { hex::encode(bytes) };
        aligned(&[
            ("claim_id", hex::encode(&self.claim_id)),
            ("state", state_name(e.state)),
            ("decision", decision_name(e.decision)),
            ("reason_codes", reason_codes),
            ("e_value", e.e_value.to_string()),
            ("certified", e.certified.to_string()),
            ("canonical_output", or_none(&e.canonical_output)),
            ("capsule_hash", or_none(&e.capsule_hash)),
            ("etl_index", e.etl_index.to_string()),
        ])
    }
}

/// The claim's module: WebAssembly text is compiled, a binary module is taken as it is.
fn load_module(args: &RunArgs) -> Result<Vec<u8>, Failure> {
    wat::parse_file(&args.wasm).map_err(|e| Failure::Message(format!("cannot load {}: {e}", args.wasm.display())))
}

fn claim_name(args: &RunArgs) -> Result<String, Failure> {
    if let Some(name) = &args.name {
        return Ok(name.clone());
    }
    args.wasm.file_stem().and_then(|stem| stem.to_str()).filter(|stem| !stem.is_empty()).map(str::to_string).ok_or_else(
        || Failure::Message(format!("cannot derive a claim name from {}: pass --name", args.wasm.display())),
    )
}

/// RFC 6962 root over the sorted, deduplicated dependency capsule hashes (empty when there are none).
fn dependency_root(depends_on: &[[u8; 32]]) -> Vec<u8> {
    let mut sorted = depends_on.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.is_empty() {
        return Vec::new();
    }
    let mut tree = MerkleTree::new();
    for hash in &sorted {
        tree.push(leaf_hash(hash));
    }
    tree.root().to_vec()
}

/// SHA-256 over the run settings the daemon does not bind into the claim id by itself.
fn settings_hash(args: &RunArgs) -> [u8; 32] {
    let settings = json!({
        "lane": args.lane.wire(),
        "alpha_micros": args.alpha_micros,
        "access_credit": args.access_credit,
        "oracle_id": args.oracle_id,
    });
    sha256(format!("evidenceosctl:claim_settings:v1{settings}").as_bytes())
}

pub(crate) fn create_request(args: &RunArgs, name: String, module_hash: &[u8; 32]) -> v2::CreateClaimV2Request {
    v2::CreateClaimV2Request {
        claim_name: name,
        metadata: Some(v2::ClaimMetadataV2 {
            lane: args.lane.wire().into(),
            alpha_micros: args.alpha_micros,
            epoch_config_ref: EPOCH_CONFIG_REF.into(),
            output_schema_id: args.output_schema.wire().into(),
        }),
        // Client hints the daemon binds into the claim id: the code, the settings it runs under and
        // what it builds on. Changing any of them makes a new claim instead of finding the old one.
        signals: Some(v2::TopicSignalsV2 {
            semantic_hash: module_hash.to_vec(),
            phys_hir_signature_hash: settings_hash(args).to_vec(),
            dependency_merkle_root: dependency_root(&args.depends_on),
        }),
        holdout_ref: args.holdout.clone(),
        epoch_size: EPOCH_SIZE,
        oracle_num_symbols: args.num_symbols,
        access_credit: args.access_credit,
        oracle_id: args.oracle_id.clone(),
        nullspec_id: String::new(),
        dp_epsilon_budget: None,
        dp_delta_budget: None,
    }
}

pub(crate) fn artifacts(module_hash: &[u8; 32], depends_on: &[[u8; 32]]) -> Vec<v2::Artifact> {
    let mut artifacts = vec![v2::Artifact { artifact_hash: module_hash.to_vec(), kind: "wasm".into() }];
    artifacts
        .extend(depends_on.iter().map(|hash| v2::Artifact { artifact_hash: hash.to_vec(), kind: "capsule".into() }));
    artifacts
}

pub(crate) async fn run(client: &mut Client, args: &RunArgs) -> Result<Outcome, Failure> {
    let module = load_module(args)?;
    let module_hash = sha256(&module);
    let name = claim_name(args)?;
    progress("load", &format!("{}: {} bytes, sha256 {}", args.wasm.display(), module.len(), hex::encode(module_hash)));

    let request = create_request(args, name, &module_hash);
    let created = client
        .rpc
        .create_claim_v2(client.request_with_id(request, CREATE))
        .await
        .map_err(client.failure(CREATE))?
        .into_inner();
    let claim_id = created.claim_id;
    let state = state_name(created.state);
    progress(CREATE.name, &format!("{state} claim_id={}", hex::encode(&claim_id)));
    if created.state != v2::ClaimState::Uncommitted as i32 {
        return Err(Failure::Message(format!(
            "claim {} already exists in state {state}: the same name, holdout, code and dependencies name the \
             same claim, and a claim runs once (pass another --name for a new claim; `capsule verify --claim-id` \
             checks the existing one)",
            hex::encode(&claim_id)
        )));
    }

    let commit = v2::CommitArtifactsRequest {
        claim_id: claim_id.clone(),
        artifacts: artifacts(&module_hash, &args.depends_on),
        wasm_module: module,
    };
    let committed =
        client.rpc.commit_artifacts(client.request(commit)).await.map_err(client.failure(COMMIT))?.into_inner();
    progress(COMMIT.name, &format!("{} ({} dependencies)", state_name(committed.state), args.depends_on.len()));

    let freeze = v2::FreezeGatesRequest { claim_id: claim_id.clone() };
    let frozen = client.rpc.freeze_gates(client.request(freeze)).await.map_err(client.failure(FREEZE))?.into_inner();
    progress(FREEZE.name, &state_name(frozen.state));

    let seal = v2::SealClaimRequest { claim_id: claim_id.clone() };
    let sealed = client.rpc.seal_claim(client.request(seal)).await.map_err(client.failure(SEAL))?;
    progress(SEAL.name, &state_name(sealed.into_inner().state));

    let execute = v2::ExecuteClaimV2Request { claim_id: claim_id.clone() };
    let execution = client
        .rpc
        .execute_claim_v2(client.request_with_id(execute, EXECUTE))
        .await
        .map_err(client.failure(EXECUTE))?
        .into_inner();
    progress(
        EXECUTE.name,
        &format!(
            "{} decision={} etl_index={}",
            state_name(execution.state),
            decision_name(execution.decision),
            execution.etl_index
        ),
    );
    Ok(Outcome { claim_id, execution })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::args::{ClaimCommand, Cli, Command};
    use super::*;

    fn run_args(extra: &[&str]) -> RunArgs {
        let base = ["evidenceosctl", "claim", "run", "--wasm", "dir/claim_mod3.wat", "--holdout", "demo"];
        match Cli::parse_from([&base[..], extra].concat()).command {
            Command::Claim(ClaimCommand::Run(args)) => args,
            other => panic!("{other:?}"),
        }
    }

    fn outcome() -> Outcome {
        Outcome {
            claim_id: vec![0xab; 32],
            execution: v2::ExecuteClaimV2Response {
                state: v2::ClaimState::Certified as i32,
                decision: v2::Decision::Approve as i32,
                reason_codes: vec![1],
                canonical_output: vec![3],
                e_value: 1280.5,
                certified: true,
                capsule_hash: vec![0xcd; 32],
                etl_index: 4,
            },
        }
    }

    #[test]
    fn json_output_has_one_field_per_result() {
        let value = outcome().to_json();
        let object = value.as_object().unwrap();
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "canonical_output_hex",
                "capsule_hash",
                "certified",
                "claim_id",
                "decision",
                "e_value",
                "etl_index",
                "reason_codes",
                "state"
            ]
        );
        assert_eq!(value["claim_id"], "ab".repeat(32));
        assert_eq!(value["state"], "CERTIFIED");
        assert_eq!(value["decision"], "APPROVE");
        assert_eq!(value["reason_codes"], json!([1]));
        assert_eq!(value["e_value"], 1280.5);
        assert_eq!(value["certified"], true);
        assert_eq!(value["canonical_output_hex"], "03");
        assert_eq!(value["capsule_hash"], "cd".repeat(32));
        assert_eq!(value["etl_index"], 4);
        // One line, parseable back.
        let line = value.to_string();
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<serde_json::Value>(&line).unwrap(), value);
    }

    #[test]
    fn a_non_finite_e_value_is_null_in_json() {
        let mut outcome = outcome();
        outcome.execution.e_value = f64::NAN;
        assert!(outcome.to_json()["e_value"].is_null());
    }

    #[test]
    fn text_output_is_aligned_key_value_lines() {
        let text = outcome().to_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 9);
        assert_eq!(lines[1], "state:            CERTIFIED");
        assert_eq!(lines[3], "reason_codes:     1");
        let column = lines[0].find("abab").unwrap();
        assert!(lines.iter().all(|line| line.as_bytes()[column - 1] == b' ' && line.as_bytes()[column] != b' '));
    }

    #[test]
    fn requests_carry_the_flags_and_bind_the_code() {
        let dep = [0x11; 32];
        let args = run_args(&["--lane", "heavy", "--depends-on", &hex::encode(dep), "--oracle-id", "accuracy"]);
        assert_eq!(claim_name(&args).unwrap(), "claim_mod3");
        let request = create_request(&args, "n".into(), &[7; 32]);
        let metadata = request.metadata.as_ref().unwrap();
        assert_eq!((metadata.lane.as_str(), metadata.alpha_micros), ("heavy", 50_000));
        assert_eq!(metadata.output_schema_id, "EVIDENCEOS_SC_V0");
        assert_eq!((request.holdout_ref.as_str(), request.oracle_id.as_str()), ("demo", "accuracy"));
        assert_eq!((request.oracle_num_symbols, request.access_credit), (4, 64));
        let signals = request.signals.as_ref().unwrap();
        assert_eq!(signals.semantic_hash, vec![7; 32]);
        let settings = |extra: &[&str]| settings_hash(&run_args(extra)).to_vec();
        assert_eq!(signals.phys_hir_signature_hash, settings(&["--oracle-id", "accuracy", "--lane", "heavy"]));
        for other in
            [&["--lane", "heavy"][..], &["--alpha-micros", "1000"], &["--access-credit", "65"], &["--oracle-id", "x"]]
        {
            assert_ne!(settings(other), settings(&[]), "{other:?} must give another claim id");
        }
        assert_eq!(signals.dependency_merkle_root, leaf_hash(&dep).to_vec(), "a one-leaf tree's root is its leaf");
        assert!(
            create_request(&run_args(&[]), "n".into(), &[7; 32]).signals.unwrap().dependency_merkle_root.is_empty()
        );
        assert_eq!(dependency_root(&[[2; 32], [1; 32]]), dependency_root(&[[1; 32], [2; 32], [1; 32]]));

        let kinds: Vec<(String, Vec<u8>)> =
            artifacts(&[7; 32], &args.depends_on).into_iter().map(|a| (a.kind, a.artifact_hash)).collect();
        assert_eq!(kinds, [("wasm".to_string(), vec![7; 32]), ("capsule".to_string(), dep.to_vec())]);
        assert_eq!(claim_name(&run_args(&["--name", "other"])).unwrap(), "other");
    }

    #[test]
    fn wat_and_binary_modules_both_load() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let wat_path = dir.join("m.wat");
        std::fs::write(&wat_path, "(module (memory (export \"memory\") 1) (func (export \"run\")))").unwrap();
        let from_text = load_module(&run_args(&[]).with_wasm(&wat_path)).unwrap();
        assert!(from_text.starts_with(b"\0asm"));
        let wasm_path = dir.join("m.wasm");
        std::fs::write(&wasm_path, &from_text).unwrap();
        assert_eq!(load_module(&run_args(&[]).with_wasm(&wasm_path)).unwrap(), from_text);
        let missing = load_module(&run_args(&[]).with_wasm(&dir.join("absent.wat"))).unwrap_err();
        assert!(matches!(missing, Failure::Message(m) if m.starts_with("cannot load")));
    }

    impl RunArgs {
        fn with_wasm(mut self, path: &std::path::Path) -> Self {
            self.wasm = path.to_path_buf();
            self
        }
    }
}
