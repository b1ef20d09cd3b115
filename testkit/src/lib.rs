//! Real requests for tests that need ETL leaves.
//!
//! The kernel writes a leaf only for a claim's capsule (ExecuteClaimV2) and for a revocation
//! (RevokeClaim), so tests obtain leaves the way an agent does. This crate builds requests and
//! adds no kernel behaviour; it is a dev-dependency only, so nothing of it reaches evidenceosd
//! (`.ci/run` checks that `cargo test --workspace` builds the daemon's crates with the daemon's
//! own features).
#![forbid(unsafe_code)]

use evidenceos_core::environment::Environment;
use evidenceos_core::hash::sha256;
use evidenceos_core::holdout::holdout_files;
use evidenceos_core::request::{ArtifactInput, CreateClaimV2};
use evidenceos_core::{Command, KernelConfig, KernelError, Principal, Request, Response, Role};

/// The one holdout claims run against.
pub const HOLDOUT_REF: &str = "testkit";

/// Development settings with the [`HOLDOUT_REF`] holdout: 64 labels, every third one set.
pub fn environment() -> Environment {
    let labels: Vec<u8> = (0..64).map(|i| u8::from(i % 3 == 0)).collect();
    let holdout = holdout_files(HOLDOUT_REF, [0x7e; 32], &labels, 1_700_000_000);
    Environment::default().with_holdouts(&[holdout]).expect("a valid holdout")
}

/// The default kernel configuration with [`environment`].
pub fn config() -> KernelConfig {
    KernelConfig { environment: environment(), ..KernelConfig::default() }
}

/// Claim `n`'s owner: one principal per claim, so no per-principal share of a pool binds.
pub fn agent(n: u32) -> Principal {
    Principal::new(format!("testkit-agent-{n}"), Role::Agent)
}

/// CreateClaimV2 for claim `n` (name `leaf-<n>`: distinct names, so no canary accumulates).
pub fn create(n: u32) -> Request {
    Request::Command(Command::CreateClaimV2(Box::new(CreateClaimV2::fast_legacy(format!("leaf-{n}"), HOLDOUT_REF))))
}

/// The claim id a [`create`] was answered with.
pub fn claim_id(reply: &Response) -> Vec<u8> {
    match reply {
        Response::ClaimCreated { claim_id, .. } => claim_id.to_vec(),
        other => panic!("ClaimCreated expected, got {other:?}"),
    }
}

/// Commit, freeze and execute a created claim; the execution appends its capsule leaf.
pub fn to_capsule(claim_id: &[u8]) -> [Request; 3] {
    let module = wat::parse_file(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/claim_all_zero.wat"))
        .expect("examples/claim_all_zero.wat compiles");
    let artifacts = vec![ArtifactInput { kind: "wasm".into(), hash: sha256(&module).to_vec() }];
    let claim_id = claim_id.to_vec();
    [
        Command::CommitArtifacts { claim_id: claim_id.clone(), artifacts, wasm_module: module },
        Command::FreezeGates { claim_id: claim_id.clone() },
        Command::ExecuteClaimV2 { claim_id },
    ]
    .map(Request::Command)
}

/// RevokeClaim of an executed claim: one command, one revocation leaf.
pub fn revoke(claim_id: &[u8]) -> Request {
    Request::Command(Command::RevokeClaim { claim_id: claim_id.to_vec(), reason: "testkit".into() })
}

/// Runs claim `n` to its capsule through `call` (any runtime's request path): four commands,
/// one leaf. Returns the claim id.
pub fn run_to_capsule(n: u32, mut call: impl FnMut(Principal, Request) -> Result<Response, KernelError>) -> Vec<u8> {
    let id = claim_id(&call(agent(n), create(n)).expect("create accepted"));
    for request in to_capsule(&id) {
        call(agent(n), request).expect("claim step accepted");
    }
    id
}
