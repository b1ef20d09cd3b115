//! Checkpoints (c2sp.org/tlog-checkpoint): the note text `<origin>\n<size>\n<base64 root>\n`,
//! signed by the log's key, whose name is the origin.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::Hash;
use crate::note::{
    KeyName, NoteError, NoteLimits, NoteSignature, NoteSigner, NoteText, SignedNote, VerifiedSignature, VerifierKey,
};

/// A log's origin: the checkpoint's first line and the log key's name. Held to the key-name rules
/// (non-empty, no space, no `+`), which the spec recommends and a signing key name requires.
pub type Origin = KeyName;

/// Why a checkpoint was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointError {
    /// Fewer than three lines, or an empty extension line.
    MissingLines,
    /// The origin line is not a valid key name.
    InvalidOrigin,
    /// The size line is not a decimal without leading zeros that fits in 64 bits.
    InvalidSize,
    /// The root line is not the canonical base64 of 32 bytes.
    InvalidRoot,
    /// The signer's key name is not the checkpoint's origin.
    SignerNotOrigin,
    /// The origin is not the one expected.
    WrongOrigin,
    /// No verified signature by any of the log's keys.
    NotSignedByLog,
    /// Fewer valid witness cosignatures than the quorum.
    QuorumNotMet { cosigned: usize, quorum: usize },
    /// The note around it.
    Note(NoteError),
}

impl std::fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckpointError::MissingLines => f.write_str("checkpoint needs origin, size and root lines"),
            CheckpointError::InvalidOrigin => f.write_str("checkpoint origin is not a valid key name"),
            CheckpointError::InvalidSize => f.write_str("checkpoint size is not a canonical decimal"),
            CheckpointError::InvalidRoot => f.write_str("checkpoint root is not base64 of 32 bytes"),
            CheckpointError::SignerNotOrigin => f.write_str("checkpoint signer's name is not the origin"),
            CheckpointError::WrongOrigin => f.write_str("checkpoint is for another origin"),
            CheckpointError::NotSignedByLog => f.write_str("checkpoint is not signed by the log's key"),
            CheckpointError::QuorumNotMet { cosigned, quorum } => {
                write!(f, "checkpoint has {cosigned} valid witness cosignatures, quorum is {quorum}")
            }
            CheckpointError::Note(e) => write!(f, "checkpoint note: {e}"),
        }
    }
}

impl std::error::Error for CheckpointError {}

impl From<NoteError> for CheckpointError {
    fn from(e: NoteError) -> Self {
        CheckpointError::Note(e)
    }
}

/// A tree head as a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    origin: Origin,
    size: u64,
    root: Hash,
    // Carried from parsed checkpoints so their text (and signatures) survive; never produced.
    extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint without extension lines (the only kind this project signs).
    pub fn new(origin: Origin, size: u64, root: Hash) -> Self {
        Self { origin, size, root, extensions: Vec::new() }
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn root(&self) -> &Hash {
        &self.root
    }

    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    /// The note text.
    pub fn to_text(&self) -> NoteText {
        let mut text = format!("{}\n{}\n{}\n", self.origin, self.size, BASE64.encode(self.root));
        for line in &self.extensions {
            text.push_str(line);
            text.push('\n');
        }
        NoteText::new(text).expect("checkpoint: validated fields always form a valid note text")
    }

    /// Parses a note text: origin, size, root, then optional non-empty extension lines.
    pub fn parse(text: &NoteText) -> Result<Self, CheckpointError> {
        let body = text.as_str().strip_suffix('\n').ok_or(CheckpointError::MissingLines)?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next()) else {
            return Err(CheckpointError::MissingLines);
        };
        let origin = KeyName::new(origin).map_err(|_| CheckpointError::InvalidOrigin)?;
        let size = crate::parse_canonical_decimal(size).ok_or(CheckpointError::InvalidSize)?;
        let root = parse_root(root).ok_or(CheckpointError::InvalidRoot)?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(CheckpointError::MissingLines);
        }
        Ok(Self { origin, size, root, extensions })
    }

    /// Signs with the log key; its name must be the origin.
    pub fn sign(&self, signer: &NoteSigner) -> Result<SignedNote, CheckpointError> {
        if signer.name() != &self.origin {
            return Err(CheckpointError::SignerNotOrigin);
        }
        let text = self.to_text();
        let signature = signer.sign(&text);
        Ok(SignedNote::new(text, signature))
    }

    /// Signs through a function that holds the key (the kernel's keyring signs any message with
    /// the active ETL key): `sign` gets the note text, the signature is named by the origin.
    pub fn sign_with(&self, public_key: &[u8; 32], sign: impl FnOnce(&[u8]) -> [u8; 64]) -> SignedNote {
        let text = self.to_text();
        let signature = sign(text.as_str().as_bytes());
        SignedNote::new(text, NoteSignature::ed25519(self.origin.clone(), public_key, signature))
    }
}

/// Base64 of exactly 32 bytes. The padded standard engine accepts only the canonical spelling
/// (padding required, non-zero trailing bits rejected), so one root has one text.
fn parse_root(s: &str) -> Option<Hash> {
    BASE64.decode(s).ok()?.try_into().ok()
}

/// What a verified checkpoint tells: the tree head and who vouched for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    pub checkpoint: Checkpoint,
    pub note: SignedNote,
    /// The log key(s) that signed.
    pub log_signatures: Vec<VerifiedSignature>,
    /// The witnesses whose cosignature verified.
    pub cosignatures: Vec<VerifiedSignature>,
}

/// Trust policy for reading a checkpoint: the log's keys (several across rotations, all named by
/// the origin), the witnesses' cosigning keys, and how many witnesses must have cosigned.
#[derive(Debug, Clone)]
pub struct CheckpointPolicy {
    pub origin: Origin,
    pub log_keys: Vec<VerifierKey>,
    pub witness_keys: Vec<VerifierKey>,
    pub quorum: usize,
}

impl CheckpointPolicy {
    /// Parses and verifies a signed checkpoint: the origin, a log signature, and `quorum` distinct
    /// witness cosignatures. A bad signature by any configured key rejects the checkpoint.
    pub fn verify(&self, bytes: &[u8], limits: NoteLimits) -> Result<VerifiedCheckpoint, CheckpointError> {
        let note = SignedNote::parse(bytes, limits)?;
        let checkpoint = Checkpoint::parse(note.text())?;
        if checkpoint.origin != self.origin {
            return Err(CheckpointError::WrongOrigin);
        }
        let keys: Vec<VerifierKey> = self.log_keys.iter().chain(&self.witness_keys).cloned().collect();
        let verified = match note.verify(&keys) {
            Ok(verified) => verified,
            Err(NoteError::NoKnownSignature) => return Err(CheckpointError::NotSignedByLog),
            Err(e) => return Err(e.into()),
        };
        let is_log_key = |v: &VerifiedSignature| {
            self.log_keys.iter().any(|k| k.name() == &v.name && k.key_id() == v.key_id && k.kind() == v.kind)
        };
        let (log_signatures, cosignatures): (Vec<_>, Vec<_>) = verified.into_iter().partition(is_log_key);
        if log_signatures.is_empty() {
            return Err(CheckpointError::NotSignedByLog);
        }
        if cosignatures.len() < self.quorum {
            return Err(CheckpointError::QuorumNotMet { cosigned: cosignatures.len(), quorum: self.quorum });
        }
        Ok(VerifiedCheckpoint { checkpoint, note, log_signatures, cosignatures })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cosignature::Cosigner;

    const SPEC_TEXT: &str = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";

    fn origin() -> Origin {
        KeyName::new("log.example/etl").unwrap()
    }

    fn text(s: &str) -> NoteText {
        NoteText::new(s.to_owned()).unwrap()
    }

    #[test]
    fn parses_and_reproduces_the_spec_example() {
        let checkpoint = Checkpoint::parse(&text(SPEC_TEXT)).unwrap();
        assert_eq!(checkpoint.origin().as_str(), "example.com/behind-the-sofa");
        assert_eq!(checkpoint.size(), 20852163);
        assert_eq!(checkpoint.root()[..3], [0x0a, 0xc5, 0x18]);
        assert_eq!(checkpoint.to_text().as_str(), SPEC_TEXT);
    }

    #[test]
    fn extensions_are_carried_but_never_produced() {
        let with_ext = format!("{SPEC_TEXT}ext one\next two\n");
        let checkpoint = Checkpoint::parse(&text(&with_ext)).unwrap();
        assert_eq!(checkpoint.extensions(), ["ext one", "ext two"]);
        assert_eq!(checkpoint.to_text().as_str(), with_ext);
        let fresh = Checkpoint::new(checkpoint.origin().clone(), checkpoint.size(), *checkpoint.root());
        assert_eq!(fresh.to_text().as_str(), SPEC_TEXT);
        assert_eq!(Checkpoint::parse(&text(&format!("{SPEC_TEXT}\n"))), Err(CheckpointError::MissingLines));
    }

    #[test]
    fn rejects_malformed_fields() {
        let root = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=";
        let cases = [
            ("o\n5\n".to_string(), CheckpointError::MissingLines),
            (format!("o o\n5\n{root}\n"), CheckpointError::InvalidOrigin),
            (format!("\n5\n{root}\n"), CheckpointError::InvalidOrigin),
            (format!("o\n05\n{root}\n"), CheckpointError::InvalidSize),
            (format!("o\n+5\n{root}\n"), CheckpointError::InvalidSize),
            (format!("o\n18446744073709551616\n{root}\n"), CheckpointError::InvalidSize),
            ("o\n5\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2\n".to_string(), CheckpointError::InvalidRoot),
            ("o\n5\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2J=\n".to_string(), CheckpointError::InvalidRoot),
            ("o\n5\nAAAA\n".to_string(), CheckpointError::InvalidRoot),
        ];
        for (t, want) in cases {
            assert_eq!(Checkpoint::parse(&text(&t)), Err(want), "{t:?}");
        }
        assert_eq!(Checkpoint::parse(&text(&format!("o\n0\n{root}\n"))).unwrap().size(), 0);
    }

    fn policy(log_keys: Vec<VerifierKey>, witness_keys: Vec<VerifierKey>, quorum: usize) -> CheckpointPolicy {
        CheckpointPolicy { origin: origin(), log_keys, witness_keys, quorum }
    }

    #[test]
    fn sign_with_an_external_key_equals_sign() {
        let seed = [6; 32];
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let checkpoint = Checkpoint::new(origin(), 3, [1; 32]);
        let external =
            checkpoint.sign_with(key.verifying_key().as_bytes(), |m| ed25519_dalek::Signer::sign(&key, m).to_bytes());
        assert_eq!(Ok(external), checkpoint.sign(&NoteSigner::new(origin(), &seed)));
    }

    #[test]
    fn sign_requires_the_origin_as_key_name() {
        let checkpoint = Checkpoint::new(origin(), 3, [1; 32]);
        let stranger = NoteSigner::new(KeyName::new("other.example/etl").unwrap(), &[1; 32]);
        assert_eq!(checkpoint.sign(&stranger), Err(CheckpointError::SignerNotOrigin));
    }

    #[test]
    fn policy_checks_origin_log_signature_and_quorum() {
        let log = NoteSigner::new(origin(), &[1; 32]);
        let rotated_out = NoteSigner::new(origin(), &[2; 32]);
        let w1 = Cosigner::new(KeyName::new("w1.example").unwrap(), &[3; 32]);
        let w2 = Cosigner::new(KeyName::new("w2.example").unwrap(), &[4; 32]);
        let checkpoint = Checkpoint::new(origin(), 3, [1; 32]);
        let mut note = checkpoint.sign(&rotated_out).unwrap();
        note.push_signature(w1.cosign(note.text(), 1000).unwrap());
        let bytes = note.to_bytes();
        let logs = vec![log.verifier_key(), rotated_out.verifier_key()];
        let witnesses = vec![w1.verifier_key(), w2.verifier_key()];

        let verified = policy(logs.clone(), witnesses.clone(), 1).verify(&bytes, NoteLimits::DEFAULT).unwrap();
        assert_eq!(verified.checkpoint, checkpoint);
        assert_eq!(verified.log_signatures.len(), 1);
        assert_eq!(verified.cosignatures[0].timestamp, Some(1000));
        assert_eq!(
            policy(logs.clone(), witnesses.clone(), 2).verify(&bytes, NoteLimits::DEFAULT),
            Err(CheckpointError::QuorumNotMet { cosigned: 1, quorum: 2 })
        );
        assert_eq!(
            policy(vec![log.verifier_key()], witnesses.clone(), 0).verify(&bytes, NoteLimits::DEFAULT),
            Err(CheckpointError::NotSignedByLog)
        );
        let elsewhere =
            CheckpointPolicy { origin: KeyName::new("other.example").unwrap(), ..policy(logs, witnesses, 0) };
        assert_eq!(elsewhere.verify(&bytes, NoteLimits::DEFAULT), Err(CheckpointError::WrongOrigin));
    }

    #[test]
    fn witness_cosignatures_alone_are_not_a_log_signature() {
        let w1 = Cosigner::new(KeyName::new("w1.example").unwrap(), &[3; 32]);
        let t = Checkpoint::new(origin(), 3, [1; 32]).to_text();
        let note = SignedNote::new(t.clone(), w1.cosign(&t, 5).unwrap());
        let log = NoteSigner::new(origin(), &[1; 32]);
        let p = policy(vec![log.verifier_key()], vec![w1.verifier_key()], 1);
        assert_eq!(p.verify(&note.to_bytes(), NoteLimits::DEFAULT), Err(CheckpointError::NotSignedByLog));
    }
}
