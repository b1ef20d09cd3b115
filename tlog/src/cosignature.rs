//! Timestamped Ed25519 checkpoint cosignatures (c2sp.org/tlog-cosignature, signature type 0x04):
//! what a witness returns. Signature bytes = be64 timestamp ‖ Ed25519 signature over
//! `cosignature/v1\ntime <timestamp>\n` followed by the checkpoint note text.

use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};

use crate::note::{KeyId, KeyName, NoteError, NoteSignature, NoteText, SignatureType, VerifierKey, key_id};

/// Timestamps above 2^63 − 1 are invalid (the spec's bound).
pub const MAX_TIMESTAMP: u64 = i64::MAX as u64;

/// Timestamp (8 bytes) plus Ed25519 signature (64 bytes).
const COSIGNATURE_BYTES: usize = 8 + 64;

/// Why a cosignature was rejected or could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CosignatureError {
    /// The key is not a type 0x04 cosigner key.
    NotACosignerKey,
    /// The line is signed by another key (name or key id differ).
    WrongKey,
    /// Not 8 + 64 bytes after the key id.
    WrongLength(usize),
    /// Timestamp above 2^63 − 1.
    TimestampOutOfRange(u64),
    /// The Ed25519 signature does not verify.
    BadSignature,
    /// The line itself is malformed.
    Note(NoteError),
}

impl std::fmt::Display for CosignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CosignatureError::NotACosignerKey => f.write_str("verifier key is not a cosignature (type 0x04) key"),
            CosignatureError::WrongKey => f.write_str("cosignature is by another key"),
            CosignatureError::WrongLength(n) => write!(f, "cosignature has {n} bytes, want {COSIGNATURE_BYTES}"),
            CosignatureError::TimestampOutOfRange(t) => write!(f, "cosignature timestamp {t} exceeds 2^63-1"),
            CosignatureError::BadSignature => f.write_str("cosignature does not verify"),
            CosignatureError::Note(e) => write!(f, "cosignature line: {e}"),
        }
    }
}

impl std::error::Error for CosignatureError {}

impl From<NoteError> for CosignatureError {
    fn from(e: NoteError) -> Self {
        CosignatureError::Note(e)
    }
}

/// The signed message: header line, timestamp line, then the checkpoint text.
pub fn signed_message(checkpoint_text: &NoteText, timestamp: u64) -> Vec<u8> {
    let text = checkpoint_text.as_str();
    let mut message = Vec::with_capacity(40 + text.len());
    message.extend_from_slice(format!("cosignature/v1\ntime {timestamp}\n").as_bytes());
    message.extend_from_slice(text.as_bytes());
    message
}

/// Checks the signature bytes (after the key id) of a cosignature; returns its timestamp.
pub(crate) fn check_signature_bytes(
    public_key: &VerifyingKey,
    checkpoint_text: &NoteText,
    bytes: &[u8],
) -> Result<u64, CosignatureError> {
    let Some((timestamp, signature)) = bytes.split_first_chunk::<8>().filter(|_| bytes.len() == COSIGNATURE_BYTES)
    else {
        return Err(CosignatureError::WrongLength(bytes.len()));
    };
    let timestamp = u64::from_be_bytes(*timestamp);
    if timestamp > MAX_TIMESTAMP {
        return Err(CosignatureError::TimestampOutOfRange(timestamp));
    }
    let signature = ed25519_dalek::Signature::from_slice(signature).map_err(|_| CosignatureError::BadSignature)?;
    public_key
        .verify(&signed_message(checkpoint_text, timestamp), &signature)
        .map_err(|_| CosignatureError::BadSignature)?;
    Ok(timestamp)
}

/// Verifies one cosignature line by `witness` over `checkpoint_text`; returns its timestamp.
pub fn verify_line(witness: &VerifierKey, checkpoint_text: &NoteText, line: &str) -> Result<u64, CosignatureError> {
    verify(witness, checkpoint_text, &NoteSignature::parse_line(line)?)
}

/// Verifies a parsed cosignature by `witness` over `checkpoint_text`; returns its timestamp.
pub fn verify(
    witness: &VerifierKey,
    checkpoint_text: &NoteText,
    signature: &NoteSignature,
) -> Result<u64, CosignatureError> {
    if witness.kind() != SignatureType::Cosignature {
        return Err(CosignatureError::NotACosignerKey);
    }
    if signature.name() != witness.name() || signature.key_id() != witness.key_id() {
        return Err(CosignatureError::WrongKey);
    }
    let public_key = VerifyingKey::from_bytes(&witness.public_key()).map_err(|_| CosignatureError::BadSignature)?;
    check_signature_bytes(&public_key, checkpoint_text, signature.signature())
}

/// A witness's cosigning key (type 0x04). Tests run a witness with it; the daemon only verifies.
pub struct Cosigner {
    name: KeyName,
    key: SigningKey,
    key_id: KeyId,
}

impl std::fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the seed.
        f.debug_struct("Cosigner").field("name", &self.name).field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl Cosigner {
    pub fn new(name: KeyName, seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        let key_id = key_id(&name, SignatureType::Cosignature, key.verifying_key().as_bytes());
        Self { name, key, key_id }
    }

    pub fn verifier_key(&self) -> VerifierKey {
        VerifierKey::new(self.name.clone(), SignatureType::Cosignature, self.key.verifying_key().as_bytes())
            .expect("cosignature: a signing key's own public key is a valid point")
    }

    /// Cosigns `checkpoint_text` at `timestamp` (POSIX seconds, passed in: no clock here).
    pub fn cosign(&self, checkpoint_text: &NoteText, timestamp: u64) -> Result<NoteSignature, CosignatureError> {
        if timestamp > MAX_TIMESTAMP {
            return Err(CosignatureError::TimestampOutOfRange(timestamp));
        }
        let signature = self.key.sign(&signed_message(checkpoint_text, timestamp));
        let mut bytes = Vec::with_capacity(COSIGNATURE_BYTES);
        bytes.extend_from_slice(&timestamp.to_be_bytes());
        bytes.extend_from_slice(&signature.to_bytes());
        Ok(NoteSignature::new(self.name.clone(), self.key_id, bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::{NoteLimits, NoteSigner, SignedNote};

    fn name(s: &str) -> KeyName {
        KeyName::new(s).unwrap()
    }

    // The checkpoint of c2sp.org/tlog-cosignature's example.
    fn spec_checkpoint() -> NoteText {
        NoteText::new("example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n".into())
            .unwrap()
    }

    #[test]
    fn signed_message_is_the_spec_example() {
        let want = "cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n\
                    CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        assert_eq!(signed_message(&spec_checkpoint(), 1679315147), want.as_bytes());
    }

    #[test]
    fn cosign_then_verify_returns_the_timestamp() {
        let witness = Cosigner::new(name("witness.example/w1"), &[9; 32]);
        let signature = witness.cosign(&spec_checkpoint(), 1679315147).unwrap();
        assert_eq!(signature.signature().len(), 72);
        assert_eq!(&signature.signature()[..8], &1679315147u64.to_be_bytes());
        let vkey = witness.verifier_key();
        assert_eq!(vkey.kind(), SignatureType::Cosignature);
        assert_eq!(verify_line(&vkey, &spec_checkpoint(), &signature.to_line()), Ok(1679315147));
        // Through the note verifier too (how a client reads a cosigned checkpoint).
        let note = SignedNote::new(spec_checkpoint(), signature);
        let verified = note.verify(&[vkey]).unwrap();
        assert_eq!(verified[0].timestamp, Some(1679315147));
    }

    #[test]
    fn type_04_key_id_differs_from_type_01_for_the_same_key() {
        let seed = [9; 32];
        let cosigner = Cosigner::new(name("witness.example/w1"), &seed);
        let note_signer = NoteSigner::new(name("witness.example/w1"), &seed);
        assert_ne!(cosigner.verifier_key().key_id(), note_signer.key_id());
        assert_eq!(cosigner.verifier_key().public_key(), note_signer.verifier_key().public_key());
    }

    #[test]
    fn verify_rejects_tampering_and_the_wrong_key() {
        let witness = Cosigner::new(name("witness.example/w1"), &[9; 32]);
        let vkey = witness.verifier_key();
        let signature = witness.cosign(&spec_checkpoint(), 100).unwrap();
        let other = NoteText::new(
            "example.com/behind-the-sofa\n20852164\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n".into(),
        )
        .unwrap();
        assert_eq!(verify(&vkey, &other, &signature), Err(CosignatureError::BadSignature));
        let mut bytes = signature.signature().to_vec();
        bytes[7] ^= 1; // another timestamp
        let retimed = NoteSignature::new(signature.name().clone(), signature.key_id(), bytes).unwrap();
        assert_eq!(verify(&vkey, &spec_checkpoint(), &retimed), Err(CosignatureError::BadSignature));
        let short = NoteSignature::new(signature.name().clone(), signature.key_id(), vec![0; 71]).unwrap();
        assert_eq!(verify(&vkey, &spec_checkpoint(), &short), Err(CosignatureError::WrongLength(71)));
        let w2 = Cosigner::new(name("witness.example/w2"), &[9; 32]).verifier_key();
        assert_eq!(verify(&w2, &spec_checkpoint(), &signature), Err(CosignatureError::WrongKey));
        let log_key = NoteSigner::new(name("witness.example/w1"), &[9; 32]).verifier_key();
        assert_eq!(verify(&log_key, &spec_checkpoint(), &signature), Err(CosignatureError::NotACosignerKey));
    }

    #[test]
    fn timestamps_above_2_pow_63_are_refused() {
        let witness = Cosigner::new(name("witness.example/w1"), &[9; 32]);
        assert!(witness.cosign(&spec_checkpoint(), MAX_TIMESTAMP).is_ok());
        assert_eq!(
            witness.cosign(&spec_checkpoint(), MAX_TIMESTAMP + 1),
            Err(CosignatureError::TimestampOutOfRange(MAX_TIMESTAMP + 1))
        );
        // A line claiming such a timestamp is refused before any signature check.
        let mut bytes = vec![0xff; 8];
        bytes.extend_from_slice(&[0; 64]);
        let vkey = witness.verifier_key();
        let line = NoteSignature::new(vkey.name().clone(), vkey.key_id(), bytes).unwrap();
        assert_eq!(verify(&vkey, &spec_checkpoint(), &line), Err(CosignatureError::TimestampOutOfRange(u64::MAX)));
        let note =
            SignedNote::parse(&SignedNote::new(spec_checkpoint(), line).to_bytes(), NoteLimits::DEFAULT).unwrap();
        assert!(matches!(note.verify(&[vkey]), Err(NoteError::BadSignature { .. })));
    }
}
