//! A real storage failure, on both runtimes: the daemon runs under a file-size limit
//! (RLIMIT_FSIZE, with SIGXFSZ ignored), so once the journal or log outgrows it, write(2) on the
//! data directory fails with EFBIG, through the same executor path as a full disk (ENOSPC) or an
//! I/O error. This needs no privileges and no mount (a small full filesystem would need both) and
//! binds root too. The failed request gets UNAVAILABLE, the daemon exits with status 2 for its
//! supervisor, and a restart without the limit recovers every acknowledged claim.

mod support;

use std::path::Path;

use evidenceos_core::hash::sha256;
use evidenceos_grpc::v2;
use support::rpc::{Rpc, Runtime};

const AGENT: &str = "agent-secret";
const AUDITOR: &str = "auditor-secret";
const TOKENS: [(&str, &str); 2] = [("EVIDENCEOS_AGENT_TOKENS", AGENT), ("EVIDENCEOS_AUDITOR_TOKENS", AUDITOR)];
/// 32 blocks (16 KiB where sh counts 512-byte blocks, 32 KiB where it counts KiB): room for
/// start-up and a few claims, not for `MAX_CLAIMS`.
const LIMITED: &str = r#"trap '' XFSZ; ulimit -f 32 && exec "$0" "$@""#;
/// Lifecycles tried before the limit must have been hit.
const MAX_CLAIMS: usize = 200;

/// Create → commit → freeze → execute `name`; the capsule hash, or the first error.
async fn lifecycle(agent: &Rpc, name: &str) -> Result<(Vec<u8>, Vec<u8>), String> {
    let module = wat::parse_file(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/claim_mod3.wat")).unwrap();
    let create = support::claim_request(name, "fast", "demo");
    let created: v2::CreateClaimV2Response = agent.call("CreateClaimV2", create, Some(name)).await?;
    let id = created.claim_id;
    let artifacts = vec![v2::Artifact { artifact_hash: sha256(&module).to_vec(), kind: "wasm".into() }];
    let commit = v2::CommitArtifactsRequest { claim_id: id.clone(), artifacts, wasm_module: module };
    agent.call::<_, v2::CommitArtifactsResponse>("CommitArtifacts", commit, None).await?;
    agent
        .call::<_, v2::FreezeGatesResponse>("FreezeGates", v2::FreezeGatesRequest { claim_id: id.clone() }, None)
        .await?;
    let execute = v2::ExecuteClaimV2Request { claim_id: id.clone() };
    let done: v2::ExecuteClaimV2Response = agent.call("ExecuteClaimV2", execute, Some(name)).await?;
    Ok((id, done.capsule_hash))
}

async fn failed_storage_exits_2_and_loses_nothing_acknowledged(runtime: Runtime) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    support::install_demo_holdout(&data);
    let flags = ["--runtime", runtime.flag()];
    let mut daemon = support::start_under_shell(LIMITED, &data, tmp.path(), &flags, &TOKENS);
    let agent = Rpc::connect(runtime, &daemon.addr, AGENT).await.unwrap();
    let mut acked = Vec::new();
    let mut failure = None;
    for n in 0..MAX_CLAIMS {
        match lifecycle(&agent, &format!("claim-{n}")).await {
            Ok(capsule) => acked.push(capsule),
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    drop(agent);
    let failure = failure.unwrap_or_else(|| panic!("{runtime:?}: {MAX_CLAIMS} claims fit under the limit"));
    assert!(failure.contains("storage failure"), "{runtime:?}: the failed request says why: {failure}");
    assert!(!acked.is_empty(), "{runtime:?}: the limit left room for work before the failure");
    let status = daemon.wait();
    assert_eq!(status.code(), Some(2), "{runtime:?}: storage failure exit status; log:\n{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains("storage_failed") && log.contains("File too large"), "{runtime:?}: logged:\n{log}");

    // Without the limit the daemon recovers, with every acknowledged capsule.
    let daemon = support::start_with(&data, tmp.path(), &flags, &TOKENS);
    let auditor = Rpc::connect(runtime, &daemon.addr, AUDITOR).await.unwrap();
    for (claim_id, capsule_hash) in &acked {
        let request = v2::GetCapsuleRequest { claim_id: claim_id.clone() };
        let got: v2::GetCapsuleResponse = auditor.call("GetCapsule", request, None).await.unwrap();
        assert_eq!(&got.capsule_hash, capsule_hash, "{runtime:?}");
    }
    let agent = Rpc::connect(runtime, &daemon.addr, AGENT).await.unwrap();
    lifecycle(&agent, "after-recovery").await.unwrap();
    drop((agent, auditor));
    daemon.stop();
}

#[tokio::test]
async fn failed_storage_exits_2_and_loses_nothing_acknowledged_on_tokio() {
    failed_storage_exits_2_and_loses_nothing_acknowledged(Runtime::Tokio).await;
}

#[tokio::test]
async fn failed_storage_exits_2_and_loses_nothing_acknowledged_on_sync() {
    failed_storage_exits_2_and_loses_nothing_acknowledged(Runtime::Sync).await;
}
