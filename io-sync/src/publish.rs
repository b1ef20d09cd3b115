//! Publishing the ETL in the C2SP formats (SPEC §10) to a [`PublishStore`] (a directory any
//! static web server can serve, or an S3 bucket): `tile/…` objects first, `checkpoint` last. One
//! place for both runtimes and both stores: a thread of its own follows `etl.log` on disk up to
//! the durable size the runtime reports, so publishing never blocks or fails an RPC, holds
//! bounded memory, and never publishes a size that is not durable.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use evidenceos_core::frame;
use evidenceos_core::keys::{KeyId, Keyring};
use evidenceos_core::merkle::empty_root;
use evidenceos_tlog::builder::{Completed, LogTiler};
use evidenceos_tlog::checkpoint::{Checkpoint, CheckpointError, CheckpointPolicy, Origin};
use evidenceos_tlog::note::{KeyName, NoteLimits, SignatureType, VerifierKey};

use crate::publish_store::{CacheControl, Created, PublishStore};
use crate::stats::RuntimeStats;
use crate::witnessing::{CosignRound, Witnesses};

/// The one mutable object of a published log, relative to its root.
pub const CHECKPOINT_FILE: &str = "checkpoint";
/// Completed tiles and bundles are written once they hold this many bytes, so catching up on a
/// large log (first start with publishing on) holds bounded memory.
const FLUSH_BYTES: usize = 8 << 20;
/// Longest wait between retries after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The origin a log gets without `--log-origin`: named after the signing key that was active when
/// publishing started. Set `--log-origin` before rotating keys, or the default changes with them.
pub fn default_origin(key_id: &KeyId) -> Origin {
    let hex = key_id.to_hex();
    KeyName::new(&format!("evidenceos.local/etl/{}", &hex[..16])).expect("publish: a hex suffix is a valid key name")
}

/// The configured origin, or the default for the active key: the one rule the daemon and
/// `evidenceosctl keys list` share.
pub fn log_origin(configured: Option<&Origin>, active_key: &KeyId) -> Origin {
    configured.cloned().unwrap_or_else(|| default_origin(active_key))
}

/// The vkey (c2sp.org/signed-note) of an ETL key under `origin`: what verifiers configure.
pub fn log_vkey(origin: &Origin, public_key: &[u8; 32]) -> VerifierKey {
    VerifierKey::new(origin.clone(), SignatureType::Ed25519, public_key).expect("publish: a keyring key is valid")
}

/// Why a round of publishing failed; the publisher retries with backoff.
#[derive(Debug)]
pub enum PublishError {
    Io {
        path: PathBuf,
        source: io::Error,
    },
    /// Reading or writing a published object failed (the store is down, full, or refuses).
    Store {
        key: String,
        source: io::Error,
    },
    /// The directory's checkpoint does not verify under this log's keys and origin.
    Checkpoint(CheckpointError),
    /// The directory's checkpoint names a size the log has not made durable.
    CheckpointAhead {
        published: u64,
        durable: u64,
    },
    /// The directory's checkpoint root is not the log's root at that size: publishing on would
    /// sign a split view, so it stops until an operator looks.
    NotAPrefix {
        size: u64,
    },
    /// `etl.log` ends (or is damaged) before the durable size.
    EtlShort {
        offset: u64,
    },
    EtlDamaged {
        offset: u64,
    },
    /// A logged entry over 65,535 bytes (the kernel refuses those before logging them).
    EntryTooLarge {
        index: u64,
    },
    /// An immutable object already present with other bytes.
    ObjectDiffers {
        path: String,
    },
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Store { key, source } => write!(f, "{key}: {source}"),
            Self::Checkpoint(CheckpointError::WrongOrigin) => {
                f.write_str("the published checkpoint has another origin (pass the log's --log-origin)")
            }
            Self::Checkpoint(e) => write!(f, "the published checkpoint does not verify: {e}"),
            Self::CheckpointAhead { published, durable } => {
                write!(f, "the published checkpoint has size {published}, the durable log only {durable}")
            }
            Self::NotAPrefix { size } => {
                write!(
                    f,
                    "the published checkpoint at size {size} does not match the log: refusing to sign a split view"
                )
            }
            Self::EtlShort { offset } => write!(f, "etl.log ends at byte {offset}, before the durable size"),
            Self::EtlDamaged { offset } => write!(f, "etl.log has a damaged record at byte {offset}"),
            Self::EntryTooLarge { index } => {
                write!(f, "ETL entry {index} is over 65,535 bytes and cannot be published")
            }
            Self::ObjectDiffers { path } => {
                write!(f, "published {path} exists with other bytes: refusing to publish a split view")
            }
        }
    }
}

impl std::error::Error for PublishError {}

impl PublishError {
    /// What the store holds contradicts this log: retrying cannot help until an operator looks.
    pub fn is_split_view(&self) -> bool {
        matches!(self, Self::NotAPrefix { .. } | Self::ObjectDiffers { .. } | Self::CheckpointAhead { .. })
    }
}

fn store_error(key: &str) -> impl FnOnce(io::Error) -> PublishError + '_ {
    move |source| PublishError::Store { key: key.to_string(), source }
}

/// Reads `etl.log` records in order, from the start.
#[derive(Debug)]
struct EtlReader {
    file: BufReader<File>,
    offset: u64,
}

impl EtlReader {
    fn open(path: &Path) -> Result<Self, PublishError> {
        let file = File::open(path).map_err(|source| PublishError::Io { path: path.to_path_buf(), source })?;
        Ok(Self { file: BufReader::new(file), offset: 0 })
    }

    /// The next record's payload. Called only for records below the durable size, which are
    /// whole on disk; a short read means the file changed under us.
    fn next(&mut self) -> Result<Vec<u8>, PublishError> {
        let short = |_| PublishError::EtlShort { offset: self.offset };
        let mut len = [0u8; 4];
        self.file.read_exact(&mut len).map_err(short)?;
        let payload_len = u32::from_le_bytes(len) as usize;
        if payload_len > frame::MAX_PAYLOAD_BYTES {
            return Err(PublishError::EtlDamaged { offset: self.offset });
        }
        let mut record = Vec::with_capacity(payload_len + 8);
        record.extend_from_slice(&len);
        record.resize(payload_len + 8, 0);
        self.file.read_exact(&mut record[4..]).map_err(short)?;
        let scan = frame::scan(&record, 0).map_err(|_| PublishError::EtlDamaged { offset: self.offset })?;
        if scan.records.len() != 1 || scan.torn_bytes != 0 {
            return Err(PublishError::EtlDamaged { offset: self.offset });
        }
        self.offset += record.len() as u64;
        record.truncate(payload_len + 4);
        record.drain(..4);
        Ok(record)
    }
}

/// Where the publisher stands: the tiles of the published prefix and the log read up to it.
#[derive(Debug)]
struct Following {
    tiler: LogTiler,
    etl: EtlReader,
    /// Size of the directory's checkpoint; `None` before the first (an empty log gets one too).
    published: Option<u64>,
}

/// Publishes one log to one store. Sans thread: [`spawn`] drives it.
#[derive(Debug)]
pub struct Publisher {
    store: Box<dyn PublishStore>,
    etl_path: PathBuf,
    origin: Origin,
    keyring: Keyring,
    following: Option<Following>,
    witnesses: Option<Witnesses>,
    /// What the witnesses did for the last checkpoint written.
    last_round: Option<CosignRound>,
}

impl Publisher {
    /// `etl_path` is the data directory's `etl.log`.
    pub fn new(store: Box<dyn PublishStore>, etl_path: PathBuf, origin: Origin, keyring: Keyring) -> Self {
        Self { store, etl_path, origin, keyring, following: None, witnesses: None, last_round: None }
    }

    /// Each checkpoint goes to these witnesses before it is written, with their cosignatures.
    pub fn with_witnesses(mut self, witnesses: Witnesses) -> Self {
        self.witnesses = Some(witnesses);
        self
    }

    /// The witnesses' answers for the checkpoint the last `publish` wrote (`None` without
    /// witnesses).
    pub fn last_round(&self) -> Option<CosignRound> {
        self.last_round
    }

    /// Publishes the first `durable` leaves of the log if they are not yet: tiles, then the
    /// checkpoint. Returns the new published size. After an error the next call starts over from
    /// what the store holds.
    pub fn publish(&mut self, durable: u64) -> Result<Option<u64>, PublishError> {
        let mut following = match self.following.take() {
            Some(following) => following,
            None => self.resume(durable)?,
        };
        let published = self.advance(&mut following, durable)?;
        self.following = Some(following);
        Ok(published)
    }

    /// Continues from the store's checkpoint, after checking that the log's first leaves
    /// hash to its root (so nothing signed next can be inconsistent with it). The log is read
    /// from the start to find where that prefix ends, as the kernel's own recovery does.
    fn resume(&self, durable: u64) -> Result<Following, PublishError> {
        let stored = self.store.read(CHECKPOINT_FILE).map_err(store_error(CHECKPOINT_FILE))?;
        let (size, root, published) = match stored {
            Some(bytes) => {
                let verified = self.policy().verify(&bytes, NoteLimits::DEFAULT).map_err(PublishError::Checkpoint)?;
                let size = verified.checkpoint.size();
                (size, *verified.checkpoint.root(), Some(size))
            }
            None => (0, empty_root(), None),
        };
        if size > durable {
            return Err(PublishError::CheckpointAhead { published: size, durable });
        }
        let mut etl = EtlReader::open(&self.etl_path)?;
        let (mut tiler, mut discard) = (LogTiler::new(), Completed::default());
        while tiler.size() < size {
            append(&mut tiler, &etl.next()?, &mut discard)?;
            // Already published under the checkpoint: only the right edge is kept.
            discard.tiles.clear();
            discard.bundles.clear();
        }
        if tiler.root() != root {
            return Err(PublishError::NotAPrefix { size });
        }
        Ok(Following { tiler, etl, published })
    }

    /// Every key this log ever signed with, under its origin (old checkpoints survive rotation).
    fn policy(&self) -> CheckpointPolicy {
        let log_keys = self
            .keyring
            .key_ids()
            .filter_map(|id| self.keyring.public_key(id))
            .map(|key| log_vkey(&self.origin, &key))
            .collect();
        CheckpointPolicy { origin: self.origin.clone(), log_keys, witness_keys: Vec::new(), quorum: 0 }
    }

    fn advance(&mut self, following: &mut Following, durable: u64) -> Result<Option<u64>, PublishError> {
        if following.published.is_some_and(|published| durable <= published) {
            return Ok(None);
        }
        let (mut completed, mut pending) = (Completed::default(), 0usize);
        while following.tiler.size() < durable {
            let entry = following.etl.next()?;
            pending += entry.len();
            append(&mut following.tiler, &entry, &mut completed)?;
            if pending >= FLUSH_BYTES {
                self.store_completed(&mut completed)?;
                pending = 0;
            }
        }
        self.store_completed(&mut completed)?;
        let (tiles, bundle) = following.tiler.partial();
        // Partial tiles are named by their width, so they never change either; caches still
        // revalidate them, as the full tile replaces them for readers.
        for tile in tiles {
            self.store_immutable(&tile.id.path(), &tile.data, CacheControl::Revalidate)?;
        }
        if let Some(bundle) = bundle {
            self.store_immutable(&bundle.id.path(), &bundle.data, CacheControl::Revalidate)?;
        }
        // Crash boundary: every object the checkpoint needs is durable before it names them.
        let active = self.keyring.active_key_id();
        let public_key = self.keyring.public_key(&active).expect("publish: the active key is in the keyring");
        let checkpoint = Checkpoint::new(self.origin.clone(), durable, following.tiler.root());
        let mut note = checkpoint.sign_with(&public_key, |message| self.keyring.sign(message));
        // The witnesses prove consistency from the tiles just written; the checkpoint waits for
        // them at most one witness timeout, and goes out with whatever valid cosignatures came.
        if let Some(witnesses) = &mut self.witnesses {
            self.last_round = Some(witnesses.cosign(&mut note, &checkpoint, &*self.store));
        }
        let bytes = note.to_bytes();
        self.store.replace(CHECKPOINT_FILE, &bytes, CacheControl::Revalidate).map_err(store_error(CHECKPOINT_FILE))?;
        following.published = Some(durable);
        Ok(Some(durable))
    }

    fn store_completed(&self, completed: &mut Completed) -> Result<(), PublishError> {
        for bundle in completed.bundles.drain(..) {
            self.store_immutable(&bundle.id.path(), &bundle.data, CacheControl::Immutable)?;
        }
        for tile in completed.tiles.drain(..) {
            self.store_immutable(&tile.id.path(), &tile.data, CacheControl::Immutable)?;
        }
        Ok(())
    }

    /// Writes an object that never changes once written, create-only; one already present must
    /// be equal (a restart after a crash between objects and checkpoint finds some of them).
    fn store_immutable(&self, key: &str, bytes: &[u8], cache: CacheControl) -> Result<(), PublishError> {
        if self.store.create(key, bytes, cache).map_err(store_error(key))? == Created::Written {
            return Ok(());
        }
        match self.store.read(key).map_err(store_error(key))? {
            Some(existing) if existing == bytes => Ok(()),
            _ => Err(PublishError::ObjectDiffers { path: key.to_string() }),
        }
    }
}

fn append(tiler: &mut LogTiler, entry: &[u8], completed: &mut Completed) -> Result<(), PublishError> {
    let index = tiler.size();
    tiler.append::<()>(entry, completed).map_err(|_| PublishError::EntryTooLarge { index })
}

/// Runs `publisher` on a thread of its own: at most once per `interval`, publishes the durable
/// size `stats` reports; on failure logs `event=publish_failed` and retries with backoff.
pub fn spawn(
    mut publisher: Publisher,
    interval: Duration,
    stats: Arc<RuntimeStats>,
) -> io::Result<std::thread::JoinHandle<()>> {
    stats.publishing.store(true, Ordering::Relaxed);
    std::thread::Builder::new().name("etl-publisher".into()).spawn(move || {
        let mut wait = Duration::ZERO;
        loop {
            std::thread::sleep(wait);
            let durable = RuntimeStats::load(&stats.durable_tree_size);
            match publisher.publish(durable) {
                Ok(Some(size)) => {
                    stats.published_tree_size.store(size, Ordering::Relaxed);
                    let cosigned = publisher.last_round().map_or(0, |round| round.cosigned);
                    tracing::info!(event = "checkpoint_published", size, cosigned, "published a checkpoint");
                    if let Some(round) = publisher.last_round() {
                        report_round(&stats, size, round);
                    }
                    wait = interval;
                }
                Ok(None) => wait = interval,
                Err(error) => {
                    wait = (wait * 2).max(interval).min(MAX_BACKOFF.max(interval));
                    let retry_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                    if error.is_split_view() {
                        tracing::error!(event = "publish_failed", split_view = true, reason = %error, retry_ms, "publishing the ETL refused: the store contradicts the log");
                    } else {
                        tracing::warn!(event = "publish_failed", reason = %error, retry_ms, "publishing the ETL failed");
                    }
                }
            }
        }
    })
}

/// Exports the witnesses' count and warns when fewer than the quorum cosigned.
fn report_round(stats: &RuntimeStats, size: u64, round: CosignRound) {
    stats.witness_cosignatures.store(round.cosigned as u64, Ordering::Relaxed);
    if round.cosigned < round.quorum {
        let (cosigned, quorum, witnesses) = (round.cosigned, round.quorum, round.witnesses);
        tracing::warn!(
            event = "witness_quorum_not_met",
            size,
            cosigned,
            quorum,
            witnesses,
            "fewer witnesses than the quorum cosigned the checkpoint"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish_store::DirStore;
    use evidenceos_core::keys::{KeyFile, key_file_name, key_id_for_seed};
    use evidenceos_core::merkle::{MerkleTree, leaf_hash};
    use evidenceos_tlog::TileReader;
    use evidenceos_tlog::tile::TileId;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    const SEED: [u8; 32] = [7; 32];

    fn keyring() -> Keyring {
        let id = key_id_for_seed(&SEED);
        let file = KeyFile { name: key_file_name(&id), bytes: SEED.to_vec() };
        Keyring::from_files(&[file], format!("{id}\n").as_bytes()).unwrap()
    }

    fn entry(i: u64) -> Vec<u8> {
        format!("{{\"kind\":\"test\",\"n\":{i}}}").into_bytes()
    }

    struct Fixture {
        tmp: tempfile::TempDir,
        tree: MerkleTree,
    }

    impl Fixture {
        fn new() -> Self {
            Self { tmp: tempfile::tempdir().unwrap(), tree: MerkleTree::new() }
        }
        fn etl(&self) -> PathBuf {
            self.tmp.path().join("etl.log")
        }
        fn out(&self) -> PathBuf {
            self.tmp.path().join("pub")
        }
        /// Appends leaves up to `to` to etl.log.
        fn grow(&mut self, to: u64) {
            let mut bytes = Vec::new();
            for i in self.tree.len()..to {
                frame::encode_into(&entry(i), &mut bytes);
                self.tree.push(leaf_hash(&entry(i)));
            }
            let mut file = fs::OpenOptions::new().create(true).append(true).open(self.etl()).unwrap();
            std::io::Write::write_all(&mut file, &bytes).unwrap();
        }
        fn publisher(&self) -> Publisher {
            Publisher::new(
                Box::new(DirStore::new(self.out())),
                self.etl(),
                default_origin(&key_id_for_seed(&SEED)),
                keyring(),
            )
        }
        fn checkpoint(&self) -> Checkpoint {
            let origin = default_origin(&key_id_for_seed(&SEED));
            let policy = CheckpointPolicy {
                origin: origin.clone(),
                log_keys: vec![log_vkey(&origin, &evidenceos_core::keys::public_key_for_seed(&SEED))],
                witness_keys: Vec::new(),
                quorum: 0,
            };
            let bytes = fs::read(self.out().join(CHECKPOINT_FILE)).unwrap();
            policy.verify(&bytes, NoteLimits::DEFAULT).unwrap().checkpoint
        }
    }

    struct DirReader(PathBuf);

    impl TileReader for DirReader {
        type Error = io::Error;
        fn read_tile(&mut self, tile: TileId) -> io::Result<Vec<u8>> {
            fs::read(self.0.join(tile.path()))
        }
    }

    #[test]
    fn publishes_only_the_durable_prefix_and_every_leaf_proves_from_the_tiles() {
        let mut f = Fixture::new();
        f.grow(700);
        let mut publisher = f.publisher();
        assert_eq!(publisher.publish(0).unwrap(), Some(0), "an empty log has a checkpoint too");
        assert_eq!(f.checkpoint().size(), 0);
        assert_eq!(publisher.publish(600).unwrap(), Some(600), "records past the durable size stay unpublished");
        assert_eq!(publisher.publish(600).unwrap(), None);
        let checkpoint = f.checkpoint();
        assert_eq!((checkpoint.size(), *checkpoint.root()), (600, f.tree.root_at(600).unwrap()));
        let mut reader = DirReader(f.out());
        for index in [0, 255, 256, 599] {
            let leaf = f.tree.leaf(index).unwrap();
            evidenceos_tlog::proof::prove_inclusion(&mut reader, &leaf, index, 600, checkpoint.root()).unwrap();
        }
        assert!(f.out().join("tile/entries/001").is_file());
        assert!(f.out().join("tile/entries/002.p/88").is_file());
        assert_eq!(publisher.publish(700).unwrap(), Some(700));
        assert_eq!(*f.checkpoint().root(), f.tree.root_at(700).unwrap());
        let leaf = f.tree.leaf(650).unwrap();
        evidenceos_tlog::proof::prove_inclusion(&mut reader, &leaf, 650, 700, f.checkpoint().root()).unwrap();
    }

    #[test]
    fn a_restart_resumes_from_the_checkpoint_without_rewriting_objects() {
        let mut f = Fixture::new();
        f.grow(300);
        f.publisher().publish(300).unwrap();
        let out = f.out();
        let inode = |path: &str| fs::metadata(out.join(path)).unwrap().ino();
        let before = (inode("tile/0/000"), inode("tile/entries/000"), inode("tile/0/001.p/44"));
        f.grow(1000);
        let mut restarted = f.publisher();
        assert_eq!(restarted.publish(1000).unwrap(), Some(1000));
        assert_eq!(before, (inode("tile/0/000"), inode("tile/entries/000"), inode("tile/0/001.p/44")));
        assert_eq!(*f.checkpoint().root(), f.tree.root_at(1000).unwrap());
    }

    #[test]
    fn refuses_to_continue_a_checkpoint_the_log_does_not_extend() {
        let mut f = Fixture::new();
        f.grow(10);
        f.publisher().publish(10).unwrap();
        // Same key, same size, another root: a split view must never be extended.
        let origin = default_origin(&key_id_for_seed(&SEED));
        let forged = Checkpoint::new(origin, 10, [9; 32]);
        let ring = keyring();
        let public_key = evidenceos_core::keys::public_key_for_seed(&SEED);
        let note = forged.sign_with(&public_key, |m| ring.sign(m));
        fs::write(f.out().join(CHECKPOINT_FILE), note.to_bytes()).unwrap();
        f.grow(20);
        let error = f.publisher().publish(20).unwrap_err();
        assert!(matches!(error, PublishError::NotAPrefix { size: 10 }), "{error}");
        let error = f.publisher().publish(5).unwrap_err();
        assert!(matches!(error, PublishError::CheckpointAhead { published: 10, durable: 5 }), "{error}");
    }

    #[test]
    fn an_immutable_object_with_other_bytes_is_an_error_and_another_origin_is_refused() {
        let mut f = Fixture::new();
        f.grow(256);
        fs::create_dir_all(f.out().join("tile/entries")).unwrap();
        fs::write(f.out().join("tile/entries/000"), b"other").unwrap();
        let error = f.publisher().publish(256).unwrap_err();
        assert!(matches!(&error, PublishError::ObjectDiffers { path } if path == "tile/entries/000"), "{error}");
        fs::remove_file(f.out().join("tile/entries/000")).unwrap();
        f.publisher().publish(256).unwrap();
        let other = KeyName::new("example.org/other").unwrap();
        let error =
            Publisher::new(Box::new(DirStore::new(f.out())), f.etl(), other, keyring()).publish(256).unwrap_err();
        assert!(error.to_string().contains("--log-origin"), "{error}");
    }
}
