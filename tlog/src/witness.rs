//! The witness protocol's add-checkpoint messages (c2sp.org/tlog-witness): the request body
//! `old <size>\n`, up to 63 base64 consistency-proof hashes, an empty line, the signed checkpoint;
//! and the answers (200 cosignature lines, 409 with the witness's size, error statuses).
//! HTTP itself is the caller's.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::Hash;
use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::note::{NoteError, NoteLimits, NoteSignature, SignedNote};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cosignature::Cosigner;
    use crate::note::{KeyName, NoteSigner};

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
}
