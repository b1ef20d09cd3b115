//! Asking witnesses (c2sp.org/tlog-witness) to cosign each checkpoint the publisher signs. Each
//! witness gets the checkpoint with a consistency proof from the size it last cosigned, computed
//! from the tiles already published; a 409 names the witness's size (after either side
//! restarted) and the request is proved again from there, once. Every returned line is verified
//! against that witness's vkey; only valid cosignatures are kept.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::str::FromStr;

use evidenceos_tlog::checkpoint::Checkpoint;
use evidenceos_tlog::cosignature;
use evidenceos_tlog::note::{NoteLimits, NoteSignature, SignatureType, SignedNote, VerifierKey};
use evidenceos_tlog::proof::{TileProofError, consistency_proof};
use evidenceos_tlog::tile::{TileId, TileReader};
use evidenceos_tlog::witness::{AddCheckpoint, AddCheckpointResponse, WitnessError};

use crate::data_dir::write_atomically;
use crate::http_client::{self, HttpError, HttpLimits, HttpUrl};
use crate::publish_store::PublishStore;

/// The data directory's file keeping each witness's last cosigned size across restarts: one
/// `<witness vkey> <size>` line per witness that cosigned.
pub const STATE_FILE: &str = "witness_sizes";

/// Each witness answers within this long, or this checkpoint goes without its cosignature.
pub const WITNESS_LIMITS: HttpLimits = HttpLimits { timeout: std::time::Duration::from_secs(5), ..HttpLimits::DEFAULT };

/// `URL=VKEY` from `--witness`: where the witness listens and the key it cosigns with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessTarget {
    pub url: HttpUrl,
    pub vkey: VerifierKey,
}

impl FromStr for WitnessTarget {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (url, vkey) = split_flag(text).ok_or("expected URL=VKEY")?;
        let url = HttpUrl::parse(url).map_err(|e| format!("witness URL {url}: {e}"))?;
        let vkey = VerifierKey::parse(vkey).map_err(|e| format!("witness vkey: {e}"))?;
        if vkey.kind() != SignatureType::Cosignature {
            return Err("the witness vkey is not a cosignature (type 0x04) key".into());
        }
        Ok(Self { url, vkey })
    }
}

/// `URL=VKEY` split at the first `=`: a vkey is base64 and may end in `=` padding, so
/// `--witness` URLs cannot contain `=`.
fn split_flag(text: &str) -> Option<(&str, &str)> {
    text.split_once('=')
}

/// Why one witness did not cosign one checkpoint.
#[derive(Debug)]
pub enum CosignError {
    Http(HttpError),
    /// The witness's reply is not what the protocol allows.
    Response(WitnessError),
    Rejected(AddCheckpointResponse),
    /// The witness cosigned a larger tree than this checkpoint's: it saw a checkpoint we did not
    /// publish (or this log was reset): an operator must look.
    WitnessAhead {
        witness_size: u64,
        size: u64,
    },
    /// The witness answered 409 twice in a row.
    Conflict {
        witness_size: u64,
    },
    Proof(TileProofError<io::Error>),
    /// A 200 with no line that verifies under the configured vkey.
    NoValidCosignature,
}

impl std::fmt::Display for CosignError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Http(e) => write!(f, "{e}"),
            Self::Response(e) => write!(f, "bad reply: {e}"),
            Self::Rejected(response) => write!(f, "refused: {response:?}"),
            Self::WitnessAhead { witness_size, size } => {
                write!(f, "the witness has cosigned size {witness_size}, beyond this checkpoint's {size}")
            }
            Self::Conflict { witness_size } => write!(f, "409 again (witness at size {witness_size})"),
            Self::Proof(e) => write!(f, "cannot prove consistency from the published tiles: {e}"),
            Self::NoValidCosignature => f.write_str("no returned line verifies under the witness's vkey"),
        }
    }
}

impl std::error::Error for CosignError {}

/// One witness and the size it last cosigned (kept in [`STATE_FILE`] when configured; without
/// it, or when the witness lost its own state, a 409 recovers it).
#[derive(Debug)]
struct WitnessState {
    target: WitnessTarget,
    cosigned_size: Option<u64>,
}

/// What the last round got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CosignRound {
    pub cosigned: usize,
    pub witnesses: usize,
    pub quorum: usize,
}

/// The configured witnesses and the quorum an operator expects of them.
#[derive(Debug)]
pub struct Witnesses {
    states: Vec<WitnessState>,
    quorum: usize,
    limits: HttpLimits,
    state_file: Option<PathBuf>,
}

impl Witnesses {
    /// `quorum` is at most the number of witnesses (the daemon checks its flags first).
    pub fn new(targets: Vec<WitnessTarget>, quorum: usize, limits: HttpLimits) -> Self {
        assert!(quorum <= targets.len(), "witnessing: a quorum above the witness count can never be met");
        let states = targets.into_iter().map(|target| WitnessState { target, cosigned_size: None }).collect();
        Self { states, quorum, limits, state_file: None }
    }

    /// Starts from the sizes kept in `path` and keeps them there after each round that changed
    /// one. A missing file is a first start; lines that do not parse, or name a witness no longer
    /// configured, are ignored (the 409 recovers a size): only a read error fails.
    pub fn with_state_file(mut self, path: PathBuf) -> io::Result<Self> {
        let text = match fs::read(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        for (vkey, size) in text.lines().filter_map(|line| line.split_once(' ')) {
            let Ok(size) = size.parse::<u64>() else { continue };
            let known = self.states.iter_mut().find(|state| state.target.vkey.to_string() == vkey);
            if let Some(state) = known {
                state.cosigned_size = Some(size);
            }
        }
        self.state_file = Some(path);
        Ok(self)
    }

    /// Replaces the state file with the current sizes; a failure costs only a 409 after a restart.
    fn save_state(&self) {
        let Some(path) = &self.state_file else { return };
        let mut text = String::new();
        for state in &self.states {
            if let Some(size) = state.cosigned_size {
                text.push_str(&state.target.vkey.to_string());
                text.push(' ');
                text.push_str(&size.to_string());
                text.push('\n');
            }
        }
        // Crash boundary: the file is replaced whole or not at all; an older size only costs a 409.
        if let Err(error) = write_atomically(path, text.as_bytes()) {
            tracing::warn!(event = "witness_state_not_saved", reason = %error, "the witnesses' sizes were not saved");
        }
    }

    /// Asks every witness at once to cosign `note` (the checkpoint `checkpoint`, whose tiles are
    /// already in `tiles`) and appends each valid cosignature to `note`. Failures are
    /// logged (`event=witness_failed`) and cost only that witness's cosignature.
    pub fn cosign(&mut self, note: &mut SignedNote, checkpoint: &Checkpoint, tiles: &dyn PublishStore) -> CosignRound {
        let limits = self.limits;
        let before: Vec<Option<u64>> = self.states.iter().map(|state| state.cosigned_size).collect();
        let results: Vec<Result<Vec<NoteSignature>, CosignError>> = std::thread::scope(|scope| {
            let note = &*note;
            let handles: Vec<_> = self
                .states
                .iter_mut()
                .map(|state| scope.spawn(move || state.submit(note, checkpoint, tiles, limits)))
                .collect();
            handles.into_iter().map(|h| h.join().expect("witnessing: a submission thread panicked")).collect()
        });
        let mut cosigned = 0;
        for (state, result) in self.states.iter().zip(results) {
            match result {
                Ok(signatures) => {
                    cosigned += 1;
                    signatures.into_iter().for_each(|signature| note.push_signature(signature));
                }
                Err(error) => {
                    let witness = state.target.vkey.name().as_str();
                    tracing::warn!(event = "witness_failed", witness, url = %state.target.url, size = checkpoint.size(), reason = %error, "a witness did not cosign");
                }
            }
        }
        if self.states.iter().map(|state| state.cosigned_size).ne(before) {
            self.save_state();
        }
        CosignRound { cosigned, witnesses: self.states.len(), quorum: self.quorum }
    }
}

impl WitnessState {
    fn submit(
        &mut self,
        note: &SignedNote,
        checkpoint: &Checkpoint,
        tiles: &dyn PublishStore,
        limits: HttpLimits,
    ) -> Result<Vec<NoteSignature>, CosignError> {
        let mut old_size = self.cosigned_size.unwrap_or(0);
        let mut conflicts = 0;
        loop {
            let body = request(note, checkpoint, old_size, tiles)?.to_body();
            let url = self.target.url.join("add-checkpoint");
            let reply =
                http_client::post(&url, "text/plain; charset=utf-8", &body, limits).map_err(CosignError::Http)?;
            let response = AddCheckpointResponse::parse(reply.status, &reply.body, NoteLimits::DEFAULT)
                .map_err(CosignError::Response)?;
            match response {
                AddCheckpointResponse::Cosigned(lines) => {
                    let valid = self.valid_cosignatures(note, lines)?;
                    self.cosigned_size = Some(checkpoint.size());
                    return Ok(valid);
                }
                AddCheckpointResponse::Conflict { witness_size } if conflicts == 0 && witness_size != old_size => {
                    conflicts += 1;
                    self.cosigned_size = Some(witness_size);
                    old_size = witness_size;
                }
                AddCheckpointResponse::Conflict { witness_size } => return Err(CosignError::Conflict { witness_size }),
                other => return Err(CosignError::Rejected(other)),
            }
        }
    }

    /// Only lines that verify under this witness's vkey over this note; never an unverified one.
    fn valid_cosignatures(
        &self,
        note: &SignedNote,
        lines: Vec<NoteSignature>,
    ) -> Result<Vec<NoteSignature>, CosignError> {
        let vkey = &self.target.vkey;
        let valid: Vec<NoteSignature> =
            lines.into_iter().filter(|line| cosignature::verify(vkey, note.text(), line).is_ok()).take(1).collect();
        if valid.is_empty() { Err(CosignError::NoValidCosignature) } else { Ok(valid) }
    }
}

/// The add-checkpoint request from `old_size`, its proof read from the published tiles.
fn request(
    note: &SignedNote,
    checkpoint: &Checkpoint,
    old_size: u64,
    tiles: &dyn PublishStore,
) -> Result<AddCheckpoint, CosignError> {
    let size = checkpoint.size();
    if old_size > size {
        return Err(CosignError::WitnessAhead { witness_size: old_size, size });
    }
    let proof = if old_size == 0 || old_size == size {
        Vec::new()
    } else {
        let mut reader = StoredTiles(tiles);
        consistency_proof(&mut reader, old_size, size).map_err(CosignError::Proof)?
    };
    AddCheckpoint::new(old_size, proof, note.clone()).map_err(CosignError::Response)
}

/// The published tiles, written before any checkpoint that needs them.
struct StoredTiles<'a>(&'a dyn PublishStore);

impl TileReader for StoredTiles<'_> {
    type Error = io::Error;

    fn read_tile(&mut self, tile: TileId) -> io::Result<Vec<u8>> {
        let key = tile.path();
        self.0.read(&key)?.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish_store::DirStore;
    use evidenceos_tlog::cosignature::Cosigner;
    use evidenceos_tlog::note::{KeyName, NoteSigner};
    use evidenceos_tlog::witness::cosignatures_body;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A witness that answers every request with `status` and `body`, whatever it was sent.
    fn fixed_witness(status: u16, body: Vec<u8>) -> HttpUrl {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = HttpUrl::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut request = Vec::new();
                let mut byte = [0u8; 1];
                while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
                    request.push(byte[0]);
                }
                let head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n", body.len());
                let _ = stream.write_all(&[head.as_bytes(), &body].concat());
            }
        });
        url
    }

    fn checkpoint() -> (Checkpoint, SignedNote) {
        let origin = KeyName::new("log.example/etl").unwrap();
        let checkpoint = Checkpoint::new(origin.clone(), 3, [4; 32]);
        let note = checkpoint.sign(&NoteSigner::new(origin, &[1; 32])).unwrap();
        (checkpoint, note)
    }

    fn cosigner(name: &str, seed: u8) -> Cosigner {
        Cosigner::new(KeyName::new(name).unwrap(), &[seed; 32])
    }

    #[test]
    fn only_lines_that_verify_under_the_witness_vkey_are_appended() {
        let (checkpoint, note) = checkpoint();
        let witness = cosigner("w.example", 5);
        let forged = cosigner("w.example", 6).cosign(note.text(), 7).unwrap();
        let genuine = witness.cosign(note.text(), 7).unwrap();
        let both = fixed_witness(200, cosignatures_body(&[forged.clone(), genuine.clone()]));
        let only_forged = fixed_witness(200, cosignatures_body(std::slice::from_ref(&forged)));
        let garbled = fixed_witness(200, b"not a signature line\n".to_vec());
        let targets =
            [both, only_forged, garbled].map(|url| WitnessTarget { url, vkey: witness.verifier_key() }).to_vec();
        let mut witnesses = Witnesses::new(targets, 2, WITNESS_LIMITS);
        let mut published = note.clone();
        let round = witnesses.cosign(&mut published, &checkpoint, &DirStore::new("/nonexistent".into()));
        assert_eq!(round, CosignRound { cosigned: 1, witnesses: 3, quorum: 2 });
        assert_eq!(published.signatures(), &[note.signatures()[0].clone(), genuine][..]);
    }

    #[test]
    fn refusals_and_a_witness_ahead_of_the_log_cost_only_that_cosignature() {
        let (checkpoint, note) = checkpoint();
        let vkey = cosigner("w.example", 5).verifier_key();
        let answers = [(404, Vec::new()), (409, b"9\n".to_vec()), (409, b"nine\n".to_vec()), (503, Vec::new())];
        for (status, body) in answers {
            let target = WitnessTarget { url: fixed_witness(status, body.clone()), vkey: vkey.clone() };
            let mut state = WitnessState { target, cosigned_size: None };
            let error =
                state.submit(&note, &checkpoint, &DirStore::new("/nonexistent".into()), WITNESS_LIMITS).unwrap_err();
            let expected = match status {
                409 if body == b"9\n" => matches!(error, CosignError::WitnessAhead { witness_size: 9, size: 3 }),
                409 => matches!(error, CosignError::Response(WitnessError::BadConflictBody)),
                _ => matches!(error, CosignError::Rejected(_)),
            };
            assert!(expected, "{status}: {error}");
        }
    }

    /// A witness that answers every request 409 with `size`, sending each request body's first
    /// line (`old N`) to the receiver.
    fn recording_witness(size: u64) -> (HttpUrl, std::sync::mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = HttpUrl::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
                    head.push(byte[0]);
                }
                let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
                let length = head.split("content-length:").nth(1).and_then(|v| v.lines().next());
                let mut body = vec![0; length.unwrap().trim().parse().unwrap()];
                stream.read_exact(&mut body).unwrap();
                let _ = tx.send(String::from_utf8_lossy(&body).lines().next().unwrap_or_default().to_string());
                let answer = format!("{size}\n");
                let reply = format!("HTTP/1.1 409 X\r\nContent-Length: {}\r\n\r\n{answer}", answer.len());
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        (url, rx)
    }

    #[test]
    fn each_witness_size_survives_a_restart_in_the_state_file() {
        let (checkpoint, note) = checkpoint();
        let witness = cosigner("w.example", 5);
        let genuine = witness.cosign(note.text(), 7).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(STATE_FILE);
        let tiles = DirStore::new("/nonexistent".into());
        let url = fixed_witness(200, cosignatures_body(&[genuine]));
        let targets = vec![WitnessTarget { url, vkey: witness.verifier_key() }];
        let mut witnesses = Witnesses::new(targets, 1, WITNESS_LIMITS).with_state_file(path.clone()).unwrap();
        assert_eq!(witnesses.cosign(&mut note.clone(), &checkpoint, &tiles).cosigned, 1);
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{} 3\n", witness.verifier_key()));

        // Restarted: the first request already proves from the size kept, not from 0.
        let (url, requests) = recording_witness(3);
        let targets = vec![WitnessTarget { url, vkey: witness.verifier_key() }];
        let mut restarted = Witnesses::new(targets, 1, WITNESS_LIMITS).with_state_file(path).unwrap();
        restarted.cosign(&mut note.clone(), &checkpoint, &tiles);
        assert_eq!(requests.recv_timeout(std::time::Duration::from_secs(10)).unwrap(), "old 3");
    }

    #[test]
    fn witness_targets_split_at_the_first_equals() {
        let vkey = cosigner("w.example", 5).verifier_key();
        let target: WitnessTarget = format!("http://127.0.0.1:1/w={vkey}").parse().unwrap();
        assert_eq!((target.url.to_string(), target.vkey), ("http://127.0.0.1:1/w".to_string(), vkey));
        assert!("http://127.0.0.1:1/w".parse::<WitnessTarget>().is_err());
        assert_eq!(split_flag("http://h/w=name+01020304+BAE=="), Some(("http://h/w", "name+01020304+BAE==")));
    }
}
