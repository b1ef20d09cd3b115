//! Where the publisher writes the log: a directory any static web server can serve, or an
//! S3-compatible bucket (`s3` feature). One small blocking trait, so both destinations share the
//! publisher's loop, its resume and its split-view checks (publish.rs); a store only moves bytes.

use std::fmt;
use std::fs;
use std::io;
use std::path::PathBuf;

use crate::data_dir::{DataDirError, write_atomically_with_mode};

/// Published objects are world-readable: a web server serves them as they are.
const OBJECT_MODE: u32 = 0o644;

/// How long caches may keep an object (sent as Cache-Control where the store keeps it, and by
/// `--tiles-listen`). The one rule for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheControl {
    /// Full tiles and entry bundles never change once written.
    Immutable,
    /// The checkpoint and partial tiles are superseded as the log grows: caches revalidate.
    Revalidate,
}

impl CacheControl {
    pub fn header_value(self) -> &'static str {
        match self {
            Self::Immutable => "public, max-age=31536000, immutable",
            Self::Revalidate => "no-cache",
        }
    }
}

/// Content types of published objects (sent by `--tiles-listen`, stored with S3 objects).
pub const CHECKPOINT_TYPE: &str = "text/plain; charset=utf-8";
pub const TILE_TYPE: &str = "application/octet-stream";

/// What a create-only write found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Written,
    /// An object was already there; the caller compares its bytes.
    AlreadyExists,
}

/// A destination for published objects, named by their path relative to the log's root
/// (`checkpoint`, `tile/0/000`). Shared by the publisher thread and the witness threads that
/// read tiles to prove consistency, hence `Sync`.
pub trait PublishStore: Send + Sync + fmt::Debug {
    /// Where the objects go, for logs and errors.
    fn location(&self) -> String;
    /// The object's bytes; `None` when absent.
    fn read(&self, key: &str) -> io::Result<Option<Vec<u8>>>;
    /// Writes the object only if none is there (S3: `If-None-Match: *`).
    fn create(&self, key: &str, bytes: &[u8], cache: CacheControl) -> io::Result<Created>;
    /// Writes or replaces the object (the checkpoint), whole or not at all.
    fn replace(&self, key: &str, bytes: &[u8], cache: CacheControl) -> io::Result<()>;
}

/// A directory of files written atomically (temporary file, fsync, rename, fsync of the
/// directory), so a static web server never serves a torn object.
#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    /// `root` is created on the first write.
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn write(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.root.join(key);
        let parent = path.parent().expect("publish store: an object path has a parent");
        fs::create_dir_all(parent)?;
        write_atomically_with_mode(&path, bytes, OBJECT_MODE).map_err(|error| match error {
            DataDirError::Io { source, .. } => source,
            other => io::Error::other(other),
        })
    }
}

impl PublishStore for DirStore {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn read(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.root.join(key)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One writer per directory (the daemon holds its data directory's lock), so checking first
    /// and renaming after cannot race another publisher.
    fn create(&self, key: &str, bytes: &[u8], _cache: CacheControl) -> io::Result<Created> {
        match fs::symlink_metadata(self.root.join(key)) {
            Ok(_) => return Ok(Created::AlreadyExists),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.write(key, bytes)?;
        Ok(Created::Written)
    }

    fn replace(&self, key: &str, bytes: &[u8], _cache: CacheControl) -> io::Result<()> {
        self.write(key, bytes)
    }
}

/// `--publish-s3 s3://BUCKET[/PREFIX]`: the bucket and the key prefix the log is published
/// under (objects `PREFIX/checkpoint`, `PREFIX/tile/…`). Endpoint, region and credentials come
/// from the AWS environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    bucket: String,
    /// Key segments before each object's path; empty for the bucket's root.
    prefix: Vec<String>,
}

/// S3's own bucket-name length bounds.
const BUCKET_LEN: std::ops::RangeInclusive<usize> = 3..=63;
/// Keys are at most 1,024 bytes; a tile path is under 64, so the prefix keeps the rest.
const MAX_PREFIX_BYTES: usize = 900;

impl S3Url {
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn prefix(&self) -> impl Iterator<Item = &str> {
        self.prefix.iter().map(String::as_str)
    }
}

impl std::str::FromStr for S3Url {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let rest = text.strip_prefix("s3://").ok_or("expected s3://BUCKET[/PREFIX]")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_chars =
            bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        let edges = bucket.bytes().next().zip(bucket.bytes().last());
        let alnum_edges = edges.is_some_and(|(a, z)| a.is_ascii_alphanumeric() && z.is_ascii_alphanumeric());
        if !BUCKET_LEN.contains(&bucket.len()) || !bucket_chars || !alnum_edges {
            return Err(format!(
                "bucket name {bucket:?}: 3 to 63 lowercase letters, digits, '.' or '-', starting and ending with a letter or digit"
            ));
        }
        if prefix.len() > MAX_PREFIX_BYTES {
            return Err(format!("the prefix is over {MAX_PREFIX_BYTES} bytes"));
        }
        let prefix: Vec<String> = prefix.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect();
        for segment in &prefix {
            let bad_char = segment.chars().any(|c| c.is_control() || matches!(c, '?' | '#' | '\\'));
            if segment == "." || segment == ".." || bad_char {
                return Err(format!("prefix segment {segment:?}: no '.', '..', control characters, '?', '#' or '\\'"));
            }
        }
        Ok(Self { bucket: bucket.to_string(), prefix })
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}", self.bucket)?;
        self.prefix.iter().try_for_each(|segment| write!(f, "/{segment}"))
    }
}

#[cfg(feature = "s3")]
pub use s3::S3Store;

#[cfg(feature = "s3")]
mod s3 {
    use std::future::Future;
    use std::io;
    use std::sync::OnceLock;
    use std::time::Duration;

    use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
    use object_store::path::Path as ObjectPath;
    use object_store::{
        Attribute, Attributes, ObjectStore as _, ObjectStoreExt as _, PutMode, PutOptions, PutPayload, RetryConfig,
    };
    use tokio::runtime::Runtime;

    use super::{CHECKPOINT_TYPE, CacheControl, Created, PublishStore, S3Url, TILE_TYPE};
    use crate::publish::CHECKPOINT_FILE;

    /// An S3-compatible bucket through `object_store`, driven from the blocking publisher by a
    /// current-thread tokio runtime of its own, built on first use (on the publisher thread, never
    /// inside the tokio daemon's runtime, where building or dropping one would panic).
    #[derive(Debug)]
    pub struct S3Store {
        url: S3Url,
        store: AmazonS3,
        prefix: ObjectPath,
        runtime: OnceLock<Runtime>,
    }

    /// Each request gets this many quick retries inside object_store; past them the publisher's own
    /// backoff takes over (and logs `event=publish_failed`), so an outage is visible within seconds.
    const RETRIES: usize = 2;
    const RETRY_TIMEOUT: Duration = Duration::from_secs(10);

    impl S3Store {
        /// Reads endpoint, region and credentials from the AWS environment variables
        /// (AWS_ENDPOINT_URL, AWS_REGION / AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID,
        /// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_ALLOW_HTTP). Contacts nothing: the store
        /// may be down at start; publishing catches up when it returns.
        pub fn from_env(url: S3Url) -> Result<Self, object_store::Error> {
            Self::from_vars(url, std::env::vars())
        }

        /// As [`Self::from_env`], from these `(name, value)` pairs; names other than the AWS
        /// settings object_store knows are ignored.
        pub fn from_vars(
            url: S3Url,
            vars: impl IntoIterator<Item = (String, String)>,
        ) -> Result<Self, object_store::Error> {
            // reqwest's rustls has no provider of its own here (no aws-lc-rs): ring, as the
            // daemon's TLS. An error means a default is already installed, which is as good.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let mut builder = AmazonS3Builder::new();
            for (name, value) in vars {
                let key =
                    name.strip_prefix("AWS_").and_then(|_| name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>().ok());
                if let Some(key) = key {
                    builder = builder.with_config(key, value);
                }
            }
            let retry = RetryConfig { max_retries: RETRIES, retry_timeout: RETRY_TIMEOUT, ..RetryConfig::default() };
            let store = builder.with_bucket_name(url.bucket()).with_retry(retry).build()?;
            let prefix = url.prefix().collect();
            Ok(Self { url, store, prefix, runtime: OnceLock::new() })
        }

        fn path(&self, key: &str) -> ObjectPath {
            key.split('/').fold(self.prefix.clone(), |path, segment| path.join(segment))
        }

        fn block_on<F: Future>(&self, future: F) -> F::Output {
            let runtime = self.runtime.get_or_init(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("publish store: cannot build the S3 client's runtime")
            });
            runtime.block_on(future)
        }

        fn options(key: &str, mode: PutMode, cache: CacheControl) -> PutOptions {
            let content_type = if key == CHECKPOINT_FILE { CHECKPOINT_TYPE } else { TILE_TYPE };
            let attributes = Attributes::from_iter([
                (Attribute::CacheControl, cache.header_value()),
                (Attribute::ContentType, content_type),
            ]);
            PutOptions { mode, attributes, ..PutOptions::default() }
        }
    }

    impl PublishStore for S3Store {
        fn location(&self) -> String {
            self.url.to_string()
        }

        fn read(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
            let path = self.path(key);
            self.block_on(async {
                match self.store.get(&path).await {
                    Ok(result) => Ok(Some(result.bytes().await?.to_vec())),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e.into()),
                }
            })
        }

        fn create(&self, key: &str, bytes: &[u8], cache: CacheControl) -> io::Result<Created> {
            let (path, payload) = (self.path(key), PutPayload::from(bytes.to_vec()));
            // If-None-Match: *: an object already there is never overwritten, whoever wrote it.
            match self.block_on(self.store.put_opts(&path, payload, Self::options(key, PutMode::Create, cache))) {
                Ok(_) => Ok(Created::Written),
                Err(object_store::Error::AlreadyExists { .. }) => Ok(Created::AlreadyExists),
                Err(e) => Err(e.into()),
            }
        }

        fn replace(&self, key: &str, bytes: &[u8], cache: CacheControl) -> io::Result<()> {
            let (path, payload) = (self.path(key), PutPayload::from(bytes.to_vec()));
            self.block_on(self.store.put_opts(&path, payload, Self::options(key, PutMode::Overwrite, cache)))?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_name_a_valid_bucket_and_a_clean_prefix() {
        let url: S3Url = "s3://etl-log.example/logs//etl/".parse().unwrap();
        assert_eq!((url.bucket(), url.prefix().collect::<Vec<_>>()), ("etl-log.example", vec!["logs", "etl"]));
        assert_eq!(url.to_string(), "s3://etl-log.example/logs/etl");
        assert_eq!("s3://etl".parse::<S3Url>().unwrap().prefix().count(), 0);
        let long_prefix = format!("s3://etl/{}", "p".repeat(MAX_PREFIX_BYTES + 1));
        for bad in
            ["http://etl/x", "s3://", "s3://ab", "s3://Etl", "s3://-etl", "s3://etl/../x", "s3://etl/a?b", &long_prefix]
        {
            assert!(bad.parse::<S3Url>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_directory_creates_once_and_replaces_on_demand() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DirStore::new(tmp.path().join("pub"));
        assert_eq!(store.read("tile/0/000").unwrap(), None);
        assert_eq!(store.create("tile/0/000", b"a", CacheControl::Immutable).unwrap(), Created::Written);
        assert_eq!(store.create("tile/0/000", b"b", CacheControl::Immutable).unwrap(), Created::AlreadyExists);
        assert_eq!(store.read("tile/0/000").unwrap().as_deref(), Some(&b"a"[..]));
        store.replace("checkpoint", b"1", CacheControl::Revalidate).unwrap();
        store.replace("checkpoint", b"2", CacheControl::Revalidate).unwrap();
        assert_eq!(store.read("checkpoint").unwrap().as_deref(), Some(&b"2"[..]));
    }
}
