//! The witness protocol's add-checkpoint messages (c2sp.org/tlog-witness): the request body
//! `old <size>\n`, up to 63 base64 consistency-proof hashes, an empty line, the signed checkpoint;
//! and the answers (200 cosignature lines, 409 with the witness's size, error statuses).
//! HTTP itself is the caller's.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use evidenceos_core::merkle::{empty_root, verify_consistency};

use crate::Hash;
use crate::checkpoint::{Checkpoint, CheckpointError, Origin};
use crate::cosignature::Cosigner;
use crate::note::{NoteError, NoteLimits, NoteSignature, SignedNote, VerifierKey};

/// A client must not send more consistency-proof lines than this.
pub const MAX_PROOF_HASHES: usize = 63;
/// Content type of a 409 answer.
pub const CONFLICT_CONTENT_TYPE: &str = "text/x.tlog.size";
/// Longest proof line: base64 of 32 bytes plus newline.
const PROOF_LINE_BYTES: usize = 45;

/// Why a witness message was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WitnessError {
    /// More than [`MAX_PROOF_HASHES`] proof hashes.
    ProofTooLong(usize),
    /// The `old <size>` line is missing or not canonical.
    BadOldSize,
    /// A proof line is not base64 of 32 bytes.
    BadProofHash,
    /// No empty line before the checkpoint.
    MissingCheckpoint,
    /// A body over the size limit.
    TooLarge { len: usize, max: usize },
    /// A 409 body that is not `<size>\n`.
    BadConflictBody,
    /// A 200 body without cosignature lines, or a line that does not end with a newline.
    BadCosignatureBody,
    /// The checkpoint note or a signature line.
    Note(NoteError),
}

impl std::fmt::Display for WitnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WitnessError::ProofTooLong(n) => write!(f, "{n} proof hashes exceed {MAX_PROOF_HASHES}"),
            WitnessError::BadOldSize => f.write_str("missing or malformed 'old <size>' line"),
            WitnessError::BadProofHash => f.write_str("proof line is not base64 of 32 bytes"),
            WitnessError::MissingCheckpoint => f.write_str("no empty line before the checkpoint"),
            WitnessError::TooLarge { len, max } => write!(f, "body of {len} bytes exceeds {max}"),
            WitnessError::BadConflictBody => f.write_str("409 body is not a decimal tree size and newline"),
            WitnessError::BadCosignatureBody => f.write_str("200 body is not newline-terminated signature lines"),
            WitnessError::Note(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for WitnessError {}

impl From<NoteError> for WitnessError {
    fn from(e: NoteError) -> Self {
        WitnessError::Note(e)
    }
}

/// An add-checkpoint request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    old_size: u64,
    proof: Vec<Hash>,
    checkpoint: SignedNote,
}

impl AddCheckpoint {
    /// `proof` is the consistency proof from `old_size` to the checkpoint's size (empty for 0).
    pub fn new(old_size: u64, proof: Vec<Hash>, checkpoint: SignedNote) -> Result<Self, WitnessError> {
        if proof.len() > MAX_PROOF_HASHES {
            return Err(WitnessError::ProofTooLong(proof.len()));
        }
        Ok(Self { old_size, proof, checkpoint })
    }

    pub fn old_size(&self) -> u64 {
        self.old_size
    }

    pub fn proof(&self) -> &[Hash] {
        &self.proof
    }

    pub fn checkpoint(&self) -> &SignedNote {
        &self.checkpoint
    }

    /// The checkpoint's fields (the witness compares its size with `old_size`: 400 if smaller).
    pub fn parsed_checkpoint(&self) -> Result<Checkpoint, CheckpointError> {
        Checkpoint::parse(self.checkpoint.text())
    }

    pub fn to_body(&self) -> Vec<u8> {
        let mut body = format!("old {}\n", self.old_size).into_bytes();
        for hash in &self.proof {
            body.extend_from_slice(BASE64.encode(hash).as_bytes());
            body.push(b'\n');
        }
        body.push(b'\n');
        body.extend_from_slice(&self.checkpoint.to_bytes());
        body
    }

    /// Parses a request body; `limits` bound the checkpoint note.
    pub fn parse(body: &[u8], limits: NoteLimits) -> Result<Self, WitnessError> {
        let max = limits.max_bytes + 32 + (MAX_PROOF_HASHES + 1) * PROOF_LINE_BYTES;
        if body.len() > max {
            return Err(WitnessError::TooLarge { len: body.len(), max });
        }
        let (old_line, mut rest) = split_line(body).ok_or(WitnessError::BadOldSize)?;
        let old_size = std::str::from_utf8(old_line)
            .ok()
            .and_then(|line| line.strip_prefix("old "))
            .and_then(crate::parse_canonical_decimal)
            .ok_or(WitnessError::BadOldSize)?;
        let mut proof = Vec::new();
        loop {
            let (line, tail) = split_line(rest).ok_or(WitnessError::MissingCheckpoint)?;
            rest = tail;
            if line.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_HASHES {
                return Err(WitnessError::ProofTooLong(MAX_PROOF_HASHES + 1));
            }
            proof.push(parse_hash(line).ok_or(WitnessError::BadProofHash)?);
        }
        let checkpoint = SignedNote::parse(rest, limits)?;
        Ok(Self { old_size, proof, checkpoint })
    }
}

/// Splits off one newline-terminated line (without its newline).
fn split_line(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = bytes.iter().position(|&b| b == b'\n')?;
    Some((&bytes[..end], &bytes[end + 1..]))
}

/// Base64 of exactly 32 bytes (canonical spelling only, as the padded standard engine enforces).
fn parse_hash(line: &[u8]) -> Option<Hash> {
    BASE64.decode(line).ok()?.try_into().ok()
}

/// A witness's answer to add-checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddCheckpointResponse {
    /// 200: cosignature lines (verify each against the witness key; ignore unknown keys).
    Cosigned(Vec<NoteSignature>),
    /// 409: the witness's latest size for this origin; prove consistency from there.
    Conflict { witness_size: u64 },
    /// 404: the witness does not know the origin.
    UnknownOrigin,
    /// 403: the log signature is missing or bad for the witness.
    LogSignatureRejected,
    /// 422: the consistency proof or roots do not check.
    ProofRejected,
    /// 400: the witness found the request malformed.
    BadRequest,
    /// Any other status.
    Unexpected(u16),
}

impl AddCheckpointResponse {
    /// Interprets an HTTP status and body.
    pub fn parse(status: u16, body: &[u8], limits: NoteLimits) -> Result<Self, WitnessError> {
        match status {
            200 => Ok(Self::Cosigned(parse_cosignatures(body, limits)?)),
            409 => Ok(Self::Conflict { witness_size: parse_conflict_body(body)? }),
            404 => Ok(Self::UnknownOrigin),
            403 => Ok(Self::LogSignatureRejected),
            422 => Ok(Self::ProofRejected),
            400 => Ok(Self::BadRequest),
            other => Ok(Self::Unexpected(other)),
        }
    }
}

/// A 200 body: one or more signature lines, each ending with a newline.
pub fn parse_cosignatures(body: &[u8], limits: NoteLimits) -> Result<Vec<NoteSignature>, WitnessError> {
    if body.len() > limits.max_bytes {
        return Err(WitnessError::TooLarge { len: body.len(), max: limits.max_bytes });
    }
    let body = std::str::from_utf8(body).map_err(|_| NoteError::NotUtf8)?;
    let lines = body.strip_suffix('\n').ok_or(WitnessError::BadCosignatureBody)?;
    if lines.is_empty() {
        return Err(WitnessError::BadCosignatureBody);
    }
    let mut signatures = Vec::new();
    for line in lines.split('\n') {
        if signatures.len() == limits.max_signatures {
            return Err(NoteError::TooManySignatures { max: limits.max_signatures }.into());
        }
        signatures.push(NoteSignature::parse_line(line)?);
    }
    Ok(signatures)
}

/// A 200 body from cosignature lines (what a witness sends).
pub fn cosignatures_body(signatures: &[NoteSignature]) -> Vec<u8> {
    signatures.iter().map(NoteSignature::to_line).collect::<String>().into_bytes()
}

/// A 409 body: `<size>\n`.
pub fn parse_conflict_body(body: &[u8]) -> Result<u64, WitnessError> {
    std::str::from_utf8(body)
        .ok()
        .and_then(|b| b.strip_suffix('\n'))
        .and_then(crate::parse_canonical_decimal)
        .ok_or(WitnessError::BadConflictBody)
}

/// A 409 body (what a witness sends, with [`CONFLICT_CONTENT_TYPE`]).
pub fn conflict_body(witness_size: u64) -> Vec<u8> {
    format!("{witness_size}\n").into_bytes()
}

/// A witness's record for one log: the latest checkpoint it cosigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WitnessedHead {
    pub size: u64,
    pub root: Hash,
}

/// A reply of a witness: HTTP status, content type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl WitnessReply {
    fn error(status: u16, message: &str) -> Self {
        Self { status, content_type: "text/plain; charset=utf-8", body: format!("{message}\n").into_bytes() }
    }
}

/// The add-checkpoint rules of a witness, without HTTP or storage: the in-process witness of
/// the integration tests, and the reference the log's witness client is tested against. The
/// caller serializes calls (check and update must be atomic) and persists [`Witness::heads`]
/// before sending a 200.
#[derive(Debug)]
pub struct Witness {
    cosigner: Cosigner,
    logs: BTreeMap<Origin, Vec<VerifierKey>>,
    heads: BTreeMap<Origin, WitnessedHead>,
}

impl Witness {
    pub fn new(cosigner: Cosigner) -> Self {
        Self { cosigner, logs: Default::default(), heads: Default::default() }
    }

    /// Trusts `log_keys` for checkpoints of `origin`.
    pub fn add_log(&mut self, origin: Origin, log_keys: Vec<VerifierKey>) {
        self.logs.insert(origin, log_keys);
    }

    pub fn heads(&self) -> &BTreeMap<Origin, WitnessedHead> {
        &self.heads
    }

    /// Handles one add-checkpoint body at `timestamp` (POSIX seconds, passed in).
    pub fn add_checkpoint(&mut self, body: &[u8], timestamp: u64) -> WitnessReply {
        let Ok(request) = AddCheckpoint::parse(body, NoteLimits::DEFAULT) else {
            return WitnessReply::error(400, "malformed request");
        };
        let Ok(checkpoint) = request.parsed_checkpoint() else {
            return WitnessReply::error(400, "malformed checkpoint");
        };
        let Some(log_keys) = self.logs.get(checkpoint.origin()) else {
            return WitnessReply::error(404, "unknown origin");
        };
        if request.checkpoint().verify(log_keys).is_err() {
            return WitnessReply::error(403, "no valid log signature");
        }
        if request.old_size() > checkpoint.size() {
            return WitnessReply::error(400, "old size above the checkpoint size");
        }
        let latest = self.heads.get(checkpoint.origin()).copied();
        let latest_size = latest.map_or(0, |head| head.size);
        if request.old_size() != latest_size {
            return WitnessReply { status: 409, content_type: CONFLICT_CONTENT_TYPE, body: conflict_body(latest_size) };
        }
        if !Self::consistent(&request, &checkpoint, latest) {
            return WitnessReply::error(422, "not consistent with the last cosigned checkpoint");
        }
        let Ok(cosignature) = self.cosigner.cosign(request.checkpoint().text(), timestamp) else {
            return WitnessReply::error(500, "timestamp out of range");
        };
        let head = WitnessedHead { size: checkpoint.size(), root: *checkpoint.root() };
        self.heads.insert(checkpoint.origin().clone(), head);
        WitnessReply { status: 200, content_type: "text/plain; charset=utf-8", body: cosignatures_body(&[cosignature]) }
    }

    /// The 422 rules: the empty tree's root, no proof from size 0, equal roots at equal sizes,
    /// and a verifying consistency proof otherwise.
    fn consistent(request: &AddCheckpoint, checkpoint: &Checkpoint, latest: Option<WitnessedHead>) -> bool {
        if checkpoint.size() == 0 && *checkpoint.root() != empty_root() {
            return false;
        }
        let Some(latest) = latest.filter(|head| head.size > 0) else {
            return request.proof().is_empty();
        };
        verify_consistency(latest.size, checkpoint.size(), &latest.root, checkpoint.root(), request.proof()).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::{KeyName, NoteSigner};
    use evidenceos_core::merkle::{MerkleTree, leaf_hash};

    // The request body of c2sp.org/tlog-witness's example (its signatures are by keys we do not
    // have, so only the format is checked).
    const SPEC_BODY: &str = "old 20852014\n\
        PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n\
        jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n\
        5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n\
        /6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n\
        \n\
        example.com/behind-the-sofa\n\
        20852163\n\
        CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\
        \n\
        \u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n\
        \u{2014} example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=\n";

    #[test]
    fn parses_and_reproduces_the_spec_example_request() {
        let request = AddCheckpoint::parse(SPEC_BODY.as_bytes(), NoteLimits::DEFAULT).unwrap();
        assert_eq!(request.old_size(), 20852014);
        assert_eq!(request.proof().len(), 4);
        assert_eq!(request.checkpoint().signatures().len(), 2);
        let checkpoint = request.parsed_checkpoint().unwrap();
        assert_eq!(checkpoint.size(), 20852163);
        assert_eq!(request.to_body(), SPEC_BODY.as_bytes());
    }

    fn signed_checkpoint() -> SignedNote {
        let origin = KeyName::new("log.example/etl").unwrap();
        Checkpoint::new(origin.clone(), 10, [3; 32]).sign(&NoteSigner::new(origin, &[1; 32])).unwrap()
    }

    #[test]
    fn request_round_trips_and_limits_the_proof() {
        let request = AddCheckpoint::new(0, Vec::new(), signed_checkpoint()).unwrap();
        assert!(request.to_body().starts_with(b"old 0\n\nlog.example/etl\n"));
        assert_eq!(AddCheckpoint::parse(&request.to_body(), NoteLimits::DEFAULT), Ok(request));
        let longest = AddCheckpoint::new(9, vec![[7; 32]; MAX_PROOF_HASHES], signed_checkpoint()).unwrap();
        assert_eq!(AddCheckpoint::parse(&longest.to_body(), NoteLimits::DEFAULT), Ok(longest.clone()));
        assert_eq!(
            AddCheckpoint::new(9, vec![[7; 32]; MAX_PROOF_HASHES + 1], signed_checkpoint()),
            Err(WitnessError::ProofTooLong(MAX_PROOF_HASHES + 1))
        );
        let mut too_long = b"old 9\n".to_vec();
        too_long.extend_from_slice(&longest.to_body()[6..]);
        too_long.splice(6..6, b"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n".iter().copied());
        assert_eq!(
            AddCheckpoint::parse(&too_long, NoteLimits::DEFAULT),
            Err(WitnessError::ProofTooLong(MAX_PROOF_HASHES + 1))
        );
    }

    #[test]
    fn request_parse_rejects_malformed_bodies() {
        let note = String::from_utf8(signed_checkpoint().to_bytes()).unwrap();
        let hash = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
        let cases = [
            (format!("old 01\n\n{note}"), WitnessError::BadOldSize),
            (format!("old -1\n\n{note}"), WitnessError::BadOldSize),
            (format!("new 1\n\n{note}"), WitnessError::BadOldSize),
            ("old 1".to_string(), WitnessError::BadOldSize),
            (format!("old 1\n{hash}\n"), WitnessError::MissingCheckpoint),
            (format!("old 1\nAAAA\n\n{note}"), WitnessError::BadProofHash),
            (format!("old 1\n{}\n\n{note}", &hash[..43]), WitnessError::BadProofHash),
            (format!("old 1\n{}d=\n\n{note}", &hash[..42]), WitnessError::BadProofHash),
            ("old 1\n\nlog.example/etl\n".to_string(), WitnessError::Note(NoteError::MissingSignatures)),
        ];
        for (body, want) in cases {
            assert_eq!(AddCheckpoint::parse(body.as_bytes(), NoteLimits::DEFAULT), Err(want), "{body:?}");
        }
    }

    #[test]
    fn responses_map_statuses_and_bodies() {
        let checkpoint = signed_checkpoint();
        let witness = Cosigner::new(KeyName::new("w.example").unwrap(), &[5; 32]);
        let cosignature = witness.cosign(checkpoint.text(), 1234).unwrap();
        let body = cosignatures_body(std::slice::from_ref(&cosignature));
        let parsed = AddCheckpointResponse::parse(200, &body, NoteLimits::DEFAULT).unwrap();
        assert_eq!(parsed, AddCheckpointResponse::Cosigned(vec![cosignature.clone()]));
        let verified = crate::cosignature::verify(&witness.verifier_key(), checkpoint.text(), &cosignature);
        assert_eq!(verified, Ok(1234));
        assert_eq!(
            AddCheckpointResponse::parse(409, &conflict_body(42), NoteLimits::DEFAULT),
            Ok(AddCheckpointResponse::Conflict { witness_size: 42 })
        );
        for (status, want) in [
            (404, AddCheckpointResponse::UnknownOrigin),
            (403, AddCheckpointResponse::LogSignatureRejected),
            (422, AddCheckpointResponse::ProofRejected),
            (400, AddCheckpointResponse::BadRequest),
            (503, AddCheckpointResponse::Unexpected(503)),
        ] {
            assert_eq!(AddCheckpointResponse::parse(status, b"whatever", NoteLimits::DEFAULT), Ok(want));
        }
    }

    #[test]
    fn malformed_response_bodies_are_errors() {
        let limits = NoteLimits::DEFAULT;
        assert_eq!(AddCheckpointResponse::parse(409, b"42", limits), Err(WitnessError::BadConflictBody));
        assert_eq!(AddCheckpointResponse::parse(409, b"042\n", limits), Err(WitnessError::BadConflictBody));
        assert_eq!(AddCheckpointResponse::parse(200, b"", limits), Err(WitnessError::BadCosignatureBody));
        assert_eq!(AddCheckpointResponse::parse(200, b"\n", limits), Err(WitnessError::BadCosignatureBody));
        let line = Cosigner::new(KeyName::new("w.example").unwrap(), &[5; 32])
            .cosign(signed_checkpoint().text(), 1)
            .unwrap()
            .to_line();
        let unterminated = line.trim_end().as_bytes().to_vec();
        assert_eq!(AddCheckpointResponse::parse(200, &unterminated, limits), Err(WitnessError::BadCosignatureBody));
        let two = format!("{line}{line}");
        let one_allowed = NoteLimits { max_signatures: 1, ..limits };
        assert_eq!(
            AddCheckpointResponse::parse(200, two.as_bytes(), one_allowed),
            Err(WitnessError::Note(NoteError::TooManySignatures { max: 1 }))
        );
    }

    struct Log {
        tree: MerkleTree,
        signer: NoteSigner,
    }

    impl Log {
        fn new(seed: u8) -> Self {
            Self {
                tree: MerkleTree::new(),
                signer: NoteSigner::new(KeyName::new("log.example/etl").unwrap(), &[seed; 32]),
            }
        }

        fn grow_to(&mut self, size: u64) {
            while self.tree.len() < size {
                self.tree.push(leaf_hash(&self.tree.len().to_be_bytes()));
            }
        }

        fn checkpoint(&self, size: u64) -> SignedNote {
            let checkpoint = Checkpoint::new(self.signer.name().clone(), size, self.tree.root_at(size).unwrap());
            checkpoint.sign(&self.signer).unwrap()
        }

        fn body(&self, old: u64, size: u64) -> Vec<u8> {
            let proof = if old == 0 { Vec::new() } else { self.tree.consistency_proof(old, size).unwrap() };
            AddCheckpoint::new(old, proof, self.checkpoint(size)).unwrap().to_body()
        }
    }

    fn witness_for(log: &Log) -> Witness {
        let mut witness = Witness::new(Cosigner::new(KeyName::new("w.example").unwrap(), &[5; 32]));
        witness.add_log(log.signer.name().clone(), vec![log.signer.verifier_key()]);
        witness
    }

    #[test]
    fn witness_cosigns_consistent_growth_and_answers_409_with_its_size() {
        let mut log = Log::new(1);
        log.grow_to(12);
        let mut witness = witness_for(&log);
        let vkey = witness.cosigner.verifier_key();
        let reply = witness.add_checkpoint(&log.body(0, 5), 1_000);
        assert_eq!(reply.status, 200);
        let AddCheckpointResponse::Cosigned(lines) =
            AddCheckpointResponse::parse(200, &reply.body, NoteLimits::DEFAULT).unwrap()
        else {
            panic!("not cosigned");
        };
        assert_eq!(crate::cosignature::verify(&vkey, log.checkpoint(5).text(), &lines[0]), Ok(1_000));
        let reply = witness.add_checkpoint(&log.body(0, 9), 1_001);
        assert_eq!((reply.status, reply.content_type), (409, CONFLICT_CONTENT_TYPE));
        let parsed = AddCheckpointResponse::parse(409, &reply.body, NoteLimits::DEFAULT).unwrap();
        assert_eq!(parsed, AddCheckpointResponse::Conflict { witness_size: 5 });
        assert_eq!(witness.add_checkpoint(&log.body(5, 9), 1_002).status, 200);
        assert_eq!(witness.add_checkpoint(&log.body(9, 9), 1_003).status, 200);
        assert_eq!(witness.heads()[log.signer.name()], WitnessedHead { size: 9, root: log.tree.root_at(9).unwrap() });
    }

    #[test]
    fn witness_refuses_what_the_spec_refuses() {
        let mut log = Log::new(1);
        log.grow_to(12);
        let mut witness = witness_for(&log);
        assert_eq!(witness.add_checkpoint(&log.body(0, 5), 1).status, 200);
        // A fork: another tree of the same origin, signed by the same key.
        let mut fork = Log::new(1);
        fork.tree.push([9; 32]);
        fork.grow_to(12);
        let forged_proof =
            AddCheckpoint::new(5, log.tree.consistency_proof(5, 12).unwrap(), fork.checkpoint(12)).unwrap();
        assert_eq!(witness.add_checkpoint(&forged_proof.to_body(), 2).status, 422);
        let same_size_other_root = AddCheckpoint::new(5, Vec::new(), fork.checkpoint(5)).unwrap();
        assert_eq!(witness.add_checkpoint(&same_size_other_root.to_body(), 2).status, 422);
        assert_eq!(witness.add_checkpoint(&Log::new(2).body(0, 0), 2).status, 403);
        let mut stranger = Log::new(3);
        stranger.signer = NoteSigner::new(KeyName::new("other.example/log").unwrap(), &[3; 32]);
        stranger.grow_to(2);
        assert_eq!(witness.add_checkpoint(&stranger.body(0, 2), 2).status, 404);
        assert_eq!(witness.add_checkpoint(&log.body(5, 12)[1..], 2).status, 400);
        let backwards = AddCheckpoint::new(12, Vec::new(), log.checkpoint(5)).unwrap();
        assert_eq!(witness.add_checkpoint(&backwards.to_body(), 2).status, 400);
        // Nothing above moved the witness.
        assert_eq!(witness.heads()[log.signer.name()].size, 5);
    }

    #[test]
    fn witness_checks_the_empty_tree_and_proofs_from_zero() {
        let mut log = Log::new(1);
        log.grow_to(3);
        let mut witness = witness_for(&log);
        let with_proof = AddCheckpoint::new(0, vec![[1; 32]], log.checkpoint(3)).unwrap();
        assert_eq!(witness.add_checkpoint(&with_proof.to_body(), 1).status, 422);
        let origin = log.signer.name().clone();
        let bad_empty = Checkpoint::new(origin.clone(), 0, [1; 32]).sign(&log.signer).unwrap();
        assert_eq!(witness.add_checkpoint(&AddCheckpoint::new(0, vec![], bad_empty).unwrap().to_body(), 1).status, 422);
        let empty = Checkpoint::new(origin, 0, empty_root()).sign(&log.signer).unwrap();
        assert_eq!(witness.add_checkpoint(&AddCheckpoint::new(0, vec![], empty).unwrap().to_body(), 1).status, 200);
        assert_eq!(witness.add_checkpoint(&log.body(0, 3), 1).status, 200);
        // A clock beyond 2^63 - 1 seconds cannot be cosigned, and the record stays.
        log.grow_to(5);
        assert_eq!(witness.add_checkpoint(&log.body(3, 5), u64::MAX).status, 500);
        assert_eq!(witness.heads()[log.signer.name()].size, 3);
    }
}
