//! `--log-origin`, `--checkpoint-interval-ms`, `--publish-dir`, `--publish-s3`: the ETL as a C2SP
//! log (SPEC §10), published by a thread of its own that follows the durable size of either runtime.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use evidenceos_core::FileId;
use evidenceos_core::keys::Keyring;
use evidenceos_io_sync::publish::{Publisher, log_origin, log_vkey, spawn};
use evidenceos_io_sync::publish_store::{DirStore, PublishStore, S3Url};
use evidenceos_io_sync::witnessing::{STATE_FILE as WITNESS_STATE_FILE, WITNESS_LIMITS, WitnessTarget, Witnesses};
use evidenceos_io_sync::{DataDir, RuntimeStats};
use evidenceos_tlog::checkpoint::Origin;
use evidenceos_tlog::note::KeyName;

const PUBLISHING: &str = "Transparency-log publishing (C2SP checkpoints and tiles)";
/// At most one of --publish-dir and --publish-s3.
const DESTINATION: &str = "publish_destination";

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
    #[arg(long, value_name = "DIR", group = DESTINATION, help_heading = PUBLISHING)]
    pub(crate) publish_dir: Option<PathBuf>,

    /// Publish the log to an S3-compatible bucket under a key prefix, s3://BUCKET[/PREFIX]:
    /// full tiles and bundles create-only (If-None-Match: *), the checkpoint last. Endpoint,
    /// region and credentials come from AWS_ENDPOINT_URL, AWS_REGION (or AWS_DEFAULT_REGION),
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN; AWS_ALLOW_HTTP=true permits
    /// a plain-http endpoint. Instead of --publish-dir.
    #[arg(long, value_name = "URL", group = DESTINATION, help_heading = PUBLISHING)]
    pub(crate) publish_s3: Option<S3Url>,

    /// A witness (c2sp.org/tlog-witness) that cosigns each published checkpoint: its base URL
    /// (plain http://; the daemon POSTs to URL/add-checkpoint) and its cosignature vkey, joined
    /// by the first `=`. Repeatable; needs --publish-dir or --publish-s3. Each witness has 5 s to answer; the
    /// checkpoint is then published with every valid cosignature received.
    #[arg(long, value_name = "URL=VKEY", requires = DESTINATION, help_heading = PUBLISHING)]
    pub(crate) witness: Vec<WitnessTarget>,

    /// How many witnesses must cosign each checkpoint (default: every --witness). Below it the
    /// checkpoint is still published, with the cosignatures it has, and the daemon logs
    /// event=witness_quorum_not_met and exports evidenceos_witness_cosignatures: publishing
    /// never stops for a witness outage; clients enforce their own quorum.
    #[arg(long, value_name = "N", requires = "witness", help_heading = PUBLISHING)]
    pub(crate) witness_quorum: Option<usize>,
}

impl PublishArgs {
    /// The quorum, checked against the witnesses given.
    fn witness_quorum(&self) -> Result<usize, String> {
        let quorum = self.witness_quorum.unwrap_or(self.witness.len());
        if quorum > self.witness.len() {
            return Err(format!("--witness-quorum {quorum} is more than the {} --witness given", self.witness.len()));
        }
        Ok(quorum)
    }
}

fn parse_origin(text: &str) -> Result<Origin, String> {
    KeyName::new(text).map_err(|e| format!("not a log origin (no spaces or '+'): {e}"))
}

/// Logs the log's origin and vkey and, with --publish-dir, starts the publisher following `stats`.
pub(crate) fn start(args: &PublishArgs, dir: &DataDir, stats: Arc<RuntimeStats>) -> Result<(), String> {
    let quorum = args.witness_quorum()?;
    let files = dir.read_signing_keys().map_err(|e| e.to_string())?;
    let keyring = Keyring::from_files(&files.keys, &files.active_key_id).map_err(|e| e.to_string())?;
    let active = keyring.active_key_id();
    let origin = log_origin(args.log_origin.as_ref(), &active);
    let public_key = keyring.public_key(&active).ok_or("the active signing key is not loaded")?;
    let vkey = log_vkey(&origin, &public_key);
    let Some(store) = store(args)? else {
        tracing::info!(event = "log_identity", origin = %origin, vkey = %vkey, "checkpoints are not published (no --publish-dir or --publish-s3)");
        return Ok(());
    };
    tracing::info!(event = "log_identity", origin = %origin, vkey = %vkey, publish_to = %store.location(), "publishing checkpoints and tiles");
    let mut publisher = Publisher::new(store, dir.path_of(FileId::Etl), origin, keyring);
    if !args.witness.is_empty() {
        for target in &args.witness {
            tracing::info!(event = "witness_configured", url = %target.url, vkey = %target.vkey, quorum, "checkpoints go to this witness");
        }
        stats.witnesses.store(args.witness.len() as u64, std::sync::atomic::Ordering::Relaxed);
        stats.witness_quorum.store(quorum as u64, std::sync::atomic::Ordering::Relaxed);
        let state_file = dir.root().join(WITNESS_STATE_FILE);
        let witnesses = Witnesses::new(args.witness.clone(), quorum, WITNESS_LIMITS)
            .with_state_file(state_file.clone())
            .map_err(|e| format!("{}: {e}", state_file.display()))?;
        publisher = publisher.with_witnesses(witnesses);
    }
    spawn(publisher, Duration::from_millis(args.checkpoint_interval_ms), stats)
        .map_err(|e| format!("cannot start the publisher thread: {e}"))?;
    Ok(())
}

/// The store the flags name, if any; an S3 configuration that cannot work fails the start.
fn store(args: &PublishArgs) -> Result<Option<Box<dyn PublishStore>>, String> {
    if let Some(dir) = &args.publish_dir {
        return Ok(Some(Box::new(DirStore::new(dir.clone()))));
    }
    args.publish_s3.as_ref().map(s3_store).transpose()
}

#[cfg(feature = "publish-s3")]
fn s3_store(url: &S3Url) -> Result<Box<dyn PublishStore>, String> {
    let store = evidenceos_io_sync::publish_store::S3Store::from_env(url.clone())
        .map_err(|e| format!("--publish-s3 {url}: {e}"))?;
    Ok(Box::new(store))
}

#[cfg(not(feature = "publish-s3"))]
fn s3_store(url: &S3Url) -> Result<Box<dyn PublishStore>, String> {
    Err(format!("--publish-s3 {url}: this evidenceosd was built without the publish-s3 feature"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        publish: PublishArgs,
    }

    fn parse(extra: &[&str]) -> Result<PublishArgs, String> {
        let args = ["evidenceosd", "--publish-dir", "/tmp/p"].iter().chain(extra);
        Cli::try_parse_from(args).map(|cli| cli.publish).map_err(|e| e.to_string())
    }

    #[test]
    fn witness_flags_split_at_the_first_equals_and_default_to_every_witness() {
        let vkey = evidenceos_tlog::cosignature::Cosigner::new(
            evidenceos_tlog::note::KeyName::new("w.example").unwrap(),
            &[5; 32],
        )
        .verifier_key()
        .to_string();
        let flag = format!("http://127.0.0.1:9000/w={vkey}");
        let args = parse(&["--witness", &flag, "--witness", &flag]).unwrap();
        assert_eq!(args.witness[0].url.to_string(), "http://127.0.0.1:9000/w");
        assert_eq!(args.witness[0].vkey.to_string(), vkey);
        assert_eq!(args.witness_quorum(), Ok(2));
        let args = parse(&["--witness", &flag, "--witness-quorum", "1"]).unwrap();
        assert_eq!(args.witness_quorum(), Ok(1));
        let args = parse(&["--witness", &flag, "--witness-quorum", "2"]).unwrap();
        assert!(args.witness_quorum().unwrap_err().contains("more than the 1 --witness"));
        let log_key =
            evidenceos_tlog::note::NoteSigner::new(evidenceos_tlog::note::KeyName::new("w.example").unwrap(), &[5; 32])
                .verifier_key();
        let not_a_cosigner = format!("http://w.example={log_key}");
        let https = format!("https://w.example={vkey}");
        let args = parse(&["--witness", &https]).unwrap();
        assert_eq!(args.witness[0].url.to_string(), "https://w.example/", "https witnesses are accepted");
        for bad in ["http://127.0.0.1:9000", &not_a_cosigner, &flag[..flag.len() - 2]] {
            assert!(parse(&["--witness", bad]).is_err(), "{bad}");
        }
        // Everything after the first `=` is the vkey, `=` included (base64 padding of other key
        // types): the URL part parses, the vkey part is what is refused.
        let error = parse(&["--witness", &format!("{flag}=")]).unwrap_err();
        assert!(error.contains("witness vkey"), "{error}");
        let no_dir = Cli::try_parse_from(["evidenceosd", "--witness", &flag]);
        assert!(no_dir.is_err(), "--witness needs --publish-dir");
    }
}
