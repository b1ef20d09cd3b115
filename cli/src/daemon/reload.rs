//! SIGHUP, for both runtimes: validate every operator file, then swap atomically through the
//! kernel (a journaled command), or keep the last good configuration. Never fatal.

use evidenceos_core::environment::Settings;
use evidenceos_core::{Command, KernelError, Principal, Request, Response, Role};
use evidenceos_io_sync::DataDir;

/// Who asks the kernel to reload.
pub(crate) fn principal() -> Principal {
    Principal::new("system:reload", Role::Operator)
}

/// The reload command for the operator files as they are now, or `None` (logged) if any of them
/// does not validate.
pub(crate) fn read_request(dir: &DataDir, settings: Settings) -> Option<Request> {
    match dir.read_environment(settings) {
        Ok(environment) => Some(Request::Command(Command::ReloadEnvironment(Box::new(environment)))),
        Err(error) => {
            let reason = error.to_string();
            tracing::warn!(
                event = "config_reload_rejected",
                reason = reason.as_str(),
                "keeping the last good configuration"
            );
            None
        }
    }
}

pub(crate) fn log_outcome(outcome: Result<Response, KernelError>) {
    match outcome {
        Ok(Response::EnvironmentReloaded { before, after }) => tracing::info!(
            event = "config_reload",
            holdouts_before = before.holdouts,
            holdouts_after = after.holdouts,
            nullspecs_before = before.nullspecs,
            nullspecs_after = after.nullspecs,
            active_nullspecs_before = before.active_nullspecs,
            active_nullspecs_after = after.active_nullspecs,
            oracles_before = before.oracles,
            oracles_after = after.oracles,
            epoch_before = before.epoch,
            epoch_after = after.epoch,
            canary_resets_before = before.canary_resets,
            canary_resets_after = after.canary_resets,
            "operator files reloaded"
        ),
        Ok(_) => tracing::error!(event = "config_reload_rejected", reason = "unexpected kernel answer"),
        Err(error) => {
            let reason = error.message;
            tracing::warn!(
                event = "config_reload_rejected",
                reason = reason.as_str(),
                "keeping the last good configuration"
            );
        }
    }
}
