//! `log verify` and `log monitor`: check the ETL from what `evidenceosd --publish-dir` wrote
//! (C2SP checkpoint, tiles and entry bundles; SPEC §10), with no daemon and no trust in the
//! server that holds the files: everything is checked against the signed checkpoint.

use std::io;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use evidenceos_core::capsule::{CAPSULE_SCHEMA, Capsule, RevocationLeaf, capsule_hash};
use evidenceos_core::merkle::{empty_root, leaf_hash};
use evidenceos_io_sync::http_client::{HttpClient, HttpLimits, HttpUrl};
use evidenceos_io_sync::https_trust::HttpsTrust;
use evidenceos_tlog::builder::{TileBuilder, parse_bundle};
use evidenceos_tlog::checkpoint::{CheckpointPolicy, VerifiedCheckpoint};
use evidenceos_tlog::note::{NoteLimits, VerifierKey};
use evidenceos_tlog::proof::{bundle_for, prove_consistency, prove_inclusion};
use evidenceos_tlog::tile::{BundleId, FULL_WIDTH, TileId, TileReader};
use evidenceos_tlog::{Hash, TilePath};
use serde_json::{Value, json};

use super::operator::{Outcome, line};

#[derive(Debug, Subcommand)]
pub(crate) enum LogCommand {
    Verify(LogVerifyArgs),
    Monitor(LogMonitorArgs),
}

/// Where the published log is and whom to trust for it.
#[derive(Debug, Args)]
pub(crate) struct LogSource {
    /// The published log: the directory evidenceosd --publish-dir writes (or a copy of it), or
    /// the http:// or https:// URL a web server, bucket or CDN serves it at.
    #[arg(long, value_name = "URL_OR_DIR")]
    pub(crate) url: String,

    /// For an https:// --url: trust only the CA certificates in this PEM file (default:
    /// Mozilla's public root CAs, built in).
    #[arg(long, value_name = "PEM")]
    pub(crate) ca_cert: Option<PathBuf>,

    /// The log's vkey, as evidenceosd logs it at start and `keys list` prints it; repeat it for
    /// every key the log has signed with (rotation). All must share one name: the log's origin.
    #[arg(long, value_name = "VKEY", required = true)]
    pub(crate) vkey: Vec<VerifierKey>,

    /// A witness's cosigning vkey (c2sp.org/tlog-cosignature); repeatable.
    #[arg(long, value_name = "VKEY")]
    pub(crate) witness_vkey: Vec<VerifierKey>,

    /// How many of the --witness-vkey witnesses must have cosigned the checkpoint (default: all).
    #[arg(long, value_name = "N")]
    pub(crate) quorum: Option<usize>,
}

/// Prove that one entry is in the published log, from static files only.
///
/// Reads the checkpoint, verifies the log's signature (and the witnesses' quorum), then reads
/// only the tiles the inclusion proof needs and the entry's bundle. --claim-id and
/// --capsule-hash find the entry by scanning every entry bundle (O(n) in the log's size);
/// --index needs no scan. Prints one JSON object; exits 1 if anything does not verify.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("entry").required(true).multiple(false))]
pub(crate) struct LogVerifyArgs {
    #[command(flatten)]
    pub(crate) source: LogSource,

    /// The entry's index in the log (a capsule's etl index).
    #[arg(long, value_name = "N", group = "entry")]
    pub(crate) index: Option<u64>,

    /// The capsule of this claim (64 hex digits); found by scanning the bundles.
    #[arg(long, value_name = "HEX", group = "entry")]
    pub(crate) claim_id: Option<String>,

    /// The capsule with this SHA-256 (64 hex digits); found by scanning the bundles.
    #[arg(long, value_name = "HEX", group = "entry")]
    pub(crate) capsule_hash: Option<String>,
}

/// Follow the published log: each new checkpoint consistent, each new entry well-formed.
///
/// Proves each new checkpoint consistent with the last one kept in FILE, and checks that every
/// new entry is a leaf kind of SPEC §3 (capsule, revocation, incident) and that the entries hash
/// to the checkpoint's root. Progress goes to stderr; FILE is replaced atomically after each
/// checkpoint that passes. A split view (`SPLIT VIEW`) or a bad entry (`BAD ENTRY`) stops it with
/// exit status 1 and FILE unchanged.
#[derive(Debug, Args)]
pub(crate) struct LogMonitorArgs {
    #[command(flatten)]
    pub(crate) source: LogSource,

    /// The monitor's memory: the last checkpoint it accepted (created on first run).
    #[arg(long, value_name = "FILE")]
    pub(crate) state: PathBuf,

    /// Keep following: check again every MS milliseconds. Without it, one check and exit.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) poll_ms: Option<u64>,
}

/// Bounds of one object fetched over HTTP: the largest is a full entry bundle (256 entries of
/// up to 65,535 bytes, each with a 2-byte length).
const HTTP_LIMITS: HttpLimits = HttpLimits {
    timeout: std::time::Duration::from_secs(30),
    max_head_bytes: 16 * 1024,
    max_body_bytes: 256 * (u16::MAX as usize + 2),
};

/// Where the published objects are.
#[derive(Debug)]
enum Root {
    Dir(PathBuf),
    Http(HttpUrl, HttpClient),
}

impl Root {
    fn describe(&self, relative: &str) -> String {
        match self {
            Root::Dir(dir) => dir.join(relative).display().to_string(),
            Root::Http(url, _) => url.join(relative).to_string(),
        }
    }
}

/// Tiles and bundles from a directory or a web server. A partial tile that is gone (the server
/// kept only the full one) is the full tile's prefix.
#[derive(Debug)]
struct DirReader {
    root: Root,
    reads: u64,
}

impl DirReader {
    fn open(source: &LogSource) -> Outcome<Self> {
        let root = if source.url.starts_with("http://") || source.url.starts_with("https://") {
            let url = HttpUrl::parse(&source.url).map_err(|e| format!("--url {}: {e}", source.url))?;
            let trust = match &source.ca_cert {
                None => HttpsTrust::public_roots(),
                Some(path) => std::fs::read(path)
                    .map_err(|e| e.to_string())
                    .and_then(|pem| HttpsTrust::from_ca_pem(&pem).map_err(|e| e.to_string()))
                    .map_err(|e| format!("--ca-cert {}: {e}", path.display()))?,
            };
            Root::Http(url, HttpClient::new(HTTP_LIMITS, trust))
        } else if source.ca_cert.is_some() {
            return Err("--ca-cert applies to an https:// --url only".to_string());
        } else {
            Root::Dir(PathBuf::from(&source.url))
        };
        Ok(Self { root, reads: 0 })
    }

    /// One object; a missing one is `NotFound` from either kind of root (404 over HTTP).
    fn read(&mut self, relative: &str) -> io::Result<Vec<u8>> {
        self.reads += 1;
        let (url, client) = match &self.root {
            Root::Dir(dir) => return std::fs::read(dir.join(relative)),
            Root::Http(base, client) => (base.join(relative), client),
        };
        let response = client.get(&url).map_err(io::Error::other)?;
        match response.status {
            200 => Ok(response.body),
            404 => Err(io::Error::new(io::ErrorKind::NotFound, "404 Not Found")),
            status => Err(io::Error::other(format!("HTTP status {status}"))),
        }
    }

    fn read_object(&mut self, path: TilePath, full: TilePath, len: usize) -> io::Result<Vec<u8>> {
        match self.read(&path.path()) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && path != full => {
                let mut data = self.read(&full.path())?;
                if data.len() < len {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{} is short", full.path())));
                }
                data.truncate(len);
                Ok(data)
            }
            other => other,
        }
    }

    fn bundle(&mut self, bundle: BundleId) -> Outcome<Vec<u8>> {
        let full = BundleId::new(bundle.index(), FULL_WIDTH).expect("log: a full bundle id");
        // A partial bundle's prefix length is not known from the full one: read exactly.
        let read = if bundle.is_full() { self.read(&full.path()) } else { self.read(&bundle.path()) };
        read.map_err(|e| format!("{}: {e}", self.root.describe(&bundle.path())))
    }

    fn checkpoint(&mut self, source: &LogSource) -> Outcome<VerifiedCheckpoint> {
        let bytes = self.read("checkpoint").map_err(|e| format!("{}: {e}", self.root.describe("checkpoint")))?;
        policy(source)?.verify(&bytes, NoteLimits::DEFAULT).map_err(|e| format!("checkpoint: {e}"))
    }
}

impl TileReader for DirReader {
    type Error = io::Error;

    fn read_tile(&mut self, tile: TileId) -> io::Result<Vec<u8>> {
        let full = TileId::new(tile.level(), tile.index(), FULL_WIDTH).expect("log: a full tile id");
        self.read_object(TilePath::Hashes(tile), TilePath::Hashes(full), tile.byte_len())
    }
}

fn policy(source: &LogSource) -> Outcome<CheckpointPolicy> {
    let origin = source.vkey[0].name().clone();
    if source.vkey.iter().any(|key| key.name() != &origin) {
        return Err("every --vkey must name the same log origin".into());
    }
    let quorum = source.quorum.unwrap_or(source.witness_vkey.len());
    if quorum > source.witness_vkey.len() {
        return Err(format!("--quorum {quorum} is more than the {} --witness-vkey given", source.witness_vkey.len()));
    }
    Ok(CheckpointPolicy { origin, log_keys: source.vkey.clone(), witness_keys: source.witness_vkey.clone(), quorum })
}

/// What an ETL entry is (SPEC §3), or why it is none of them.
#[derive(Debug, Clone, PartialEq)]
enum Leaf {
    Capsule { claim_id_hex: String, capsule_hash_hex: String },
    Revocation { capsule_hash_hex: String },
    Incident { kind: String },
}

impl Leaf {
    fn parse(entry: &[u8]) -> Result<Self, String> {
        let value: Value = serde_json::from_slice(entry).map_err(|e| format!("not JSON: {e}"))?;
        let canonical = evidenceos_core::canonical::value_to_vec(&value).map_err(|e| format!("not canonical: {e}"))?;
        if canonical != entry {
            return Err("not canonical JSON".into());
        }
        let object = value.as_object().ok_or("not a JSON object")?;
        if object.get("schema").and_then(Value::as_str) == Some(CAPSULE_SCHEMA) {
            let capsule: Capsule = serde_json::from_value(value.clone()).map_err(|e| format!("bad capsule: {e}"))?;
            let capsule_hash_hex = hex::encode(capsule_hash(entry));
            return Ok(Leaf::Capsule { claim_id_hex: capsule.claim_id_hex, capsule_hash_hex });
        }
        if object.len() == 3 && object.contains_key("revoked_at_index") {
            let leaf: RevocationLeaf =
                serde_json::from_value(value.clone()).map_err(|e| format!("bad revocation: {e}"))?;
            return Ok(Leaf::Revocation { capsule_hash_hex: leaf.capsule_hash_hex });
        }
        match object.get("kind").and_then(Value::as_str) {
            Some(kind) if !kind.is_empty() => Ok(Leaf::Incident { kind: kind.to_string() }),
            _ => Err("neither a capsule, a revocation nor an incident".into()),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Leaf::Capsule { claim_id_hex, capsule_hash_hex } => {
                json!({"kind": "capsule", "claim_id_hex": claim_id_hex, "capsule_hash_hex": capsule_hash_hex})
            }
            Leaf::Revocation { capsule_hash_hex } => {
                json!({"kind": "revocation", "capsule_hash_hex": capsule_hash_hex})
            }
            Leaf::Incident { kind } => json!({"kind": "incident", "incident_kind": kind}),
        }
    }
}

/// The entries of the bundle holding `index` in a tree of `size`, and `index`'s position.
fn bundle_entries(reader: &mut DirReader, index: u64, size: u64) -> Outcome<(Vec<Vec<u8>>, usize)> {
    let (bundle, position) = bundle_for(index, size).map_err(|e| format!("entry {index}: {e}"))?;
    let data = reader.bundle(bundle)?;
    let entries = parse_bundle::<io::Error>(&data, bundle.width()).map_err(|e| format!("{}: {e}", bundle.path()))?;
    Ok((entries.into_iter().map(<[u8]>::to_vec).collect(), position))
}

/// Scans every bundle for the first capsule that `wanted` accepts (O(n)).
fn find(reader: &mut DirReader, size: u64, wanted: impl Fn(&Leaf) -> bool) -> Outcome<u64> {
    let mut start = 0;
    while start < size {
        let (entries, _) = bundle_entries(reader, start, size)?;
        for (offset, entry) in entries.iter().enumerate() {
            if Leaf::parse(entry).is_ok_and(|leaf| wanted(&leaf)) {
                return Ok(start + offset as u64);
            }
        }
        start += u64::from(FULL_WIDTH);
    }
    Err(format!("no such capsule in the log's {size} entries"))
}

fn parse_hex32(flag: &str, text: &str) -> Outcome<String> {
    let bytes = hex::decode(text).map_err(|_| format!("{flag}: not hex"))?;
    if bytes.len() != 32 {
        return Err(format!("{flag}: want 64 hex digits"));
    }
    Ok(hex::encode(bytes))
}

pub(crate) fn verify(args: &LogVerifyArgs) -> Outcome<String> {
    let mut reader = DirReader::open(&args.source)?;
    let verified = reader.checkpoint(&args.source)?;
    let (size, root) = (verified.checkpoint.size(), *verified.checkpoint.root());
    let index = match (&args.index, &args.claim_id, &args.capsule_hash) {
        (Some(index), _, _) => *index,
        (_, Some(claim), _) => {
            let claim = parse_hex32("--claim-id", claim)?;
            find(
                &mut reader,
                size,
                |leaf| matches!(leaf, Leaf::Capsule { claim_id_hex, .. } if *claim_id_hex == claim),
            )?
        }
        (_, _, Some(hash)) => {
            let hash = parse_hex32("--capsule-hash", hash)?;
            find(
                &mut reader,
                size,
                |leaf| matches!(leaf, Leaf::Capsule { capsule_hash_hex, .. } if *capsule_hash_hex == hash),
            )?
        }
        (None, None, None) => unreachable!("clap requires one of --index, --claim-id, --capsule-hash"),
    };
    let (entries, position) = bundle_entries(&mut reader, index, size)?;
    let entry = &entries[position];
    let leaf = leaf_hash(entry);
    prove_inclusion(&mut reader, &leaf, index, size, &root).map_err(|e| format!("entry {index}: {e}"))?;
    let kind = Leaf::parse(entry).map_err(|e| format!("entry {index} is included but is not a SPEC §3 leaf: {e}"))?;
    Ok(line(&json!({
        "verified": true,
        "origin": verified.checkpoint.origin().as_str(),
        "tree_size": size,
        "root_hex": hex::encode(root),
        "index": index,
        "leaf_hash_hex": hex::encode(leaf),
        "entry": kind.to_json(),
        "cosignatures": verified.cosignatures.len(),
        "objects_read": reader.reads,
    })))
}

/// The last checkpoint the monitor accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Kept {
    size: u64,
    root: Hash,
}

fn load_state(path: &Path, origin: &str) -> Outcome<Kept> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Kept { size: 0, root: empty_root() }),
        Err(e) => return Err(format!("--state {}: {e}", path.display())),
    };
    let bad = || format!("--state {}: not a monitor state file", path.display());
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if value["origin"].as_str() != Some(origin) {
        return Err(format!("--state {}: kept for another log origin", path.display()));
    }
    let size = value["size"].as_u64().ok_or_else(bad)?;
    let root = value["root_hex"].as_str().and_then(|h| hex::decode(h).ok()).and_then(|b| b.try_into().ok());
    Ok(Kept { size, root: root.ok_or_else(bad)? })
}

/// One monitoring round: returns the newly accepted checkpoint.
fn monitor_once(args: &LogMonitorArgs) -> Outcome<Kept> {
    let mut reader = DirReader::open(&args.source)?;
    let verified = reader.checkpoint(&args.source)?;
    let origin = verified.checkpoint.origin().as_str().to_string();
    let new = Kept { size: verified.checkpoint.size(), root: *verified.checkpoint.root() };
    let old = load_state(&args.state, &origin)?;
    let split = |why: String| {
        format!(
            "SPLIT VIEW: the log's checkpoint (size {}) is not consistent with the one kept in {} (size {}): {why}",
            new.size,
            args.state.display(),
            old.size
        )
    };
    if new.size < old.size {
        return Err(split("the log went back".into()));
    }
    prove_consistency(&mut reader, (old.size, &old.root), (new.size, &new.root)).map_err(|e| split(e.to_string()))?;
    if new.size == old.size && new.root != old.root {
        return Err(split("two roots for one size".into()));
    }
    // Rebuild the tree from the kept head and the new entries: each entry is bound to the root.
    let mut tree = TileBuilder::resume(old.size, &old.root, &mut reader).map_err(|e| split(e.to_string()))?;
    let mut discard = Vec::new();
    let mut index = old.size;
    while index < new.size {
        let (entries, position) = bundle_entries(&mut reader, index, new.size)?;
        for entry in &entries[position..] {
            Leaf::parse(entry).map_err(|e| format!("BAD ENTRY {index}: {e}"))?;
            tree.push(leaf_hash(entry), &mut discard);
            discard.clear();
            index += 1;
        }
        super::output::progress("monitor", &format!("entries checked up to {index} of {}", new.size));
    }
    if tree.root() != new.root {
        return Err(format!("BAD ENTRY: the entries up to {} do not hash to the checkpoint's root", new.size));
    }
    let state = json!({"origin": origin, "size": new.size, "root_hex": hex::encode(new.root)});
    // Crash boundary: the state moves only after the whole new range checked out.
    evidenceos_io_sync::write_atomically(&args.state, line(&state).as_bytes()).map_err(|e| e.to_string())?;
    super::output::progress("monitor", &format!("checkpoint at size {} consistent with size {}", new.size, old.size));
    Ok(new)
}

pub(crate) fn monitor(args: &LogMonitorArgs) -> Outcome<String> {
    loop {
        let kept = monitor_once(args)?;
        let Some(poll) = args.poll_ms else {
            return Ok(line(&json!({"consistent": true, "tree_size": kept.size, "root_hex": hex::encode(kept.root)})));
        };
        std::thread::sleep(std::time::Duration::from_millis(poll));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_of_each_kind_parse_and_others_are_refused() {
        let revocation = RevocationLeaf { capsule_hash_hex: "ab".into(), reason: "r".into(), revoked_at_index: 3 };
        assert_eq!(Leaf::parse(&revocation.to_bytes()), Ok(Leaf::Revocation { capsule_hash_hex: "ab".into() }));
        let incident = br#"{"kind":"canary_incident","n":1}"#;
        assert_eq!(Leaf::parse(incident), Ok(Leaf::Incident { kind: "canary_incident".into() }));
        assert!(Leaf::parse(br#"{"n":1}"#).is_err());
        assert!(Leaf::parse(br#"{ "kind":"x"}"#).unwrap_err().contains("canonical"));
        assert!(Leaf::parse(b"[1]").is_err());
        let capsule = format!(r#"{{"claim_id_hex":"aa","schema":"{CAPSULE_SCHEMA}"}}"#);
        assert!(Leaf::parse(capsule.as_bytes()).unwrap_err().contains("bad capsule"));
    }
}
