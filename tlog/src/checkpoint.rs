//! Checkpoints (c2sp.org/tlog-checkpoint): the note text `<origin>\n<size>\n<base64 root>\n`,
//! signed by the log's key, whose name is the origin.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::Hash;
use crate::note::{KeyName, NoteError, NoteLimits, NoteSigner, NoteText, SignedNote, VerifiedSignature, VerifierKey};

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
}

/// Base64 of exactly 32 bytes, in the one canonical spelling.
fn parse_root(s: &str) -> Option<Hash> {
    let bytes = BASE64.decode(s).ok()?;
    let root: Hash = bytes.try_into().ok()?;
    (BASE64.encode(root) == s).then_some(root)
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
