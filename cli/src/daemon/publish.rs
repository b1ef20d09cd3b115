//! `--log-origin`, `--checkpoint-interval-ms`, `--publish-dir`: the ETL as a C2SP log (SPEC §10),
//! published by a thread of its own that follows the durable size of either runtime.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use evidenceos_core::FileId;
use evidenceos_core::keys::Keyring;
use evidenceos_io_sync::publish::{Publisher, log_origin, log_vkey, spawn};
use evidenceos_io_sync::{DataDir, RuntimeStats};
use evidenceos_tlog::checkpoint::Origin;
use evidenceos_tlog::note::KeyName;

const PUBLISHING: &str = "Transparency-log publishing (C2SP checkpoints and tiles)";

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PublishArgs {
    /// The log's name: the first line of every checkpoint and the name in its vkey. Default:
    /// evidenceos.local/etl/<first 16 hex digits of the active signing key id>; set it before
    /// rotating keys, or the default changes with the key.
    #[arg(long, value_name = "NAME", value_parser = parse_origin, help_heading = PUBLISHING)]
    pub(crate) log_origin: Option<Origin>,

    /// Sign and publish a checkpoint at most this often (milliseconds), when the log has grown.
    #[arg(long, default_value_t = 1000, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=3_600_000), help_heading = PUBLISHING)]
    pub(crate) checkpoint_interval_ms: u64,

    /// Publish the log to this directory (created if absent): tile/… objects and the signed
    /// `checkpoint`, written atomically, so any static web server can serve it. Off when not given.
    #[arg(long, value_name = "DIR", help_heading = PUBLISHING)]
    pub(crate) publish_dir: Option<PathBuf>,
}

fn parse_origin(text: &str) -> Result<Origin, String> {
    KeyName::new(text).map_err(|e| format!("not a log origin (no spaces or '+'): {e}"))
}

/// Logs the log's origin and vkey and, with --publish-dir, starts the publisher following `stats`.
pub(crate) fn start(args: &PublishArgs, dir: &DataDir, stats: Arc<RuntimeStats>) -> Result<(), String> {
    let files = dir.read_recovery_files().map_err(|e| e.to_string())?;
    let keyring = Keyring::from_files(&files.keys, &files.active_key_id).map_err(|e| e.to_string())?;
    let active = keyring.active_key_id();
    let origin = log_origin(args.log_origin.as_ref(), &active);
    let public_key = keyring.public_key(&active).ok_or("the active signing key is not loaded")?;
    let vkey = log_vkey(&origin, &public_key);
    let Some(publish_dir) = &args.publish_dir else {
        tracing::info!(event = "log_identity", origin = %origin, vkey = %vkey, "checkpoints are not published (no --publish-dir)");
        return Ok(());
    };
    tracing::info!(event = "log_identity", origin = %origin, vkey = %vkey, publish_dir = %publish_dir.display(), "publishing checkpoints and tiles");
    let publisher = Publisher::new(publish_dir.clone(), dir.path_of(FileId::Etl), origin, keyring);
    spawn(publisher, Duration::from_millis(args.checkpoint_interval_ms), stats)
        .map_err(|e| format!("cannot start the publisher thread: {e}"))?;
    Ok(())
}
