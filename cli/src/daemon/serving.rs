//! What both serve loops say and do the same way: the GetServerInfo answer, the start-up
//! announcement and the exit code.

use std::net::SocketAddr;
use std::process::ExitCode;

use evidenceos_core::keys::KeyId;
use evidenceos_io_sync::{DataDir, Stopped};

use crate::RuntimeKind;

/// GetServerInfo's answer: this build and the features `args` turn on.
pub(crate) fn server_info(args: &crate::Args) -> evidenceos_grpc::v2::GetServerInfoResponse {
    evidenceos_grpc::rpc::server_info(
        env!("CARGO_PKG_VERSION").to_string(),
        env!("EVIDENCEOS_BUILD_GIT_COMMIT").to_string(),
        env!("EVIDENCEOS_BUILD_TIME_UTC").to_string(),
        crate::feature_flags(args),
    )
}

/// Logs `event=listening` and prints the line scripts and tests wait for on stdout.
pub(crate) fn announce(local: SocketAddr, key_id: &KeyId, tree_size: u64, dir: &DataDir, runtime: RuntimeKind) {
    let data_dir = dir.root().display();
    let (runtime, protocol) = match runtime {
        #[cfg(feature = "runtime-sync")]
        RuntimeKind::Sync => ("sync", "connect"),
        #[cfg(feature = "runtime-tokio")]
        RuntimeKind::Tokio => ("tokio", "grpc"),
    };
    tracing::info!(event = "listening", addr = %local, key_id = %key_id, tree_size, data_dir = %data_dir, runtime, protocol, "evidenceosd is serving");
    #[allow(clippy::print_stdout)]
    {
        println!("evidenceosd listening on {local} (signing key id {key_id}, data dir {data_dir})");
    }
}

/// 0 after a requested stop with its final checkpoint; otherwise 2, so that a supervisor
/// restarts the daemon into recovery.
pub(crate) fn exit_code(stopped: Stopped) -> ExitCode {
    match stopped {
        Stopped::Clean => {
            tracing::info!(event = "stopped", "checkpoint written; exiting");
            ExitCode::SUCCESS
        }
        Stopped::StorageFailed => {
            tracing::error!(
                event = "stopped",
                reason = "storage_failed",
                "exiting non-zero so a supervisor restarts into recovery"
            );
            ExitCode::from(2)
        }
    }
}
