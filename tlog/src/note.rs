//! Signed notes (c2sp.org/signed-note): text, an empty line, then signature lines
//! `— <key name> <base64(key id ‖ signature)>`; verifier keys (vkeys) `<name>+<hex id>+<base64(type ‖ key)>`.
//!
//! Only the two Ed25519 signature types this project uses are understood: plain note signatures
//! (type 0x01, the log's key) and timestamped checkpoint cosignatures (type 0x04, witnesses; the
//! signed message is defined in [`crate::cosignature`]).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::cosignature;

/// The em dash (U+2014) and space that start every signature line.
const SIGNATURE_LINE_PREFIX: &str = "\u{2014} ";

/// Longest key name accepted: origins and cosigner names are single-byte-length fields in the
/// ML-DSA cosignature message of the same ecosystem, so nothing longer interoperates.
pub const MAX_KEY_NAME_BYTES: usize = 255;

/// Size limits applied when parsing a note from untrusted bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoteLimits {
    /// Whole note (text and signature lines), in bytes.
    pub max_bytes: usize,
    /// Signature lines (the spec requires accepting at least 16).
    pub max_signatures: usize,
}

impl NoteLimits {
    /// A checkpoint is about 100 bytes and an Ed25519 signature line about 120: 64 KiB and 64
    /// lines leave room for every witness network in use while bounding the work per request.
    pub const DEFAULT: NoteLimits = NoteLimits { max_bytes: 64 * 1024, max_signatures: 64 };
}

/// Why a note, a signature line, a key name or a vkey was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoteError {
    /// The note is larger than [`NoteLimits::max_bytes`].
    TooLarge { len: usize, max: usize },
    /// More signature lines than [`NoteLimits::max_signatures`].
    TooManySignatures { max: usize },
    /// Not valid UTF-8.
    NotUtf8,
    /// An ASCII control character other than newline.
    ControlCharacter,
    /// The note text is empty or does not end with a newline.
    TextNotNewlineTerminated,
    /// No empty line separating the text from signature lines, or no signature lines.
    MissingSignatures,
    /// A signature line without the `— name base64` shape.
    MalformedSignatureLine,
    /// A signature shorter than a key id plus one byte.
    SignatureTooShort,
    /// Base64 that does not decode (standard alphabet, padded).
    BadBase64,
    /// A key name that is empty, too long, or contains a space or `+`.
    InvalidKeyName,
    /// A vkey without three `+`-separated parts or with a key id that is not 8 hex digits.
    MalformedVkey,
    /// A vkey whose key id does not match its name, type and public key.
    VkeyIdMismatch,
    /// A vkey with a signature type this crate does not implement.
    UnsupportedSignatureType(u8),
    /// A vkey whose key material is not a valid 32-byte Ed25519 public key.
    InvalidPublicKey,
    /// No signature by any of the given keys.
    NoKnownSignature,
    /// A signature by a known key (name and key id match) that does not verify.
    BadSignature { name: KeyName, key_id: KeyId },
}

impl std::fmt::Display for NoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoteError::TooLarge { len, max } => write!(f, "note of {len} bytes exceeds the limit of {max}"),
            NoteError::TooManySignatures { max } => write!(f, "note has more than {max} signature lines"),
            NoteError::NotUtf8 => f.write_str("note is not valid UTF-8"),
            NoteError::ControlCharacter => f.write_str("note contains a control character other than newline"),
            NoteError::TextNotNewlineTerminated => f.write_str("note text is empty or does not end with a newline"),
            NoteError::MissingSignatures => f.write_str("note has no signature lines after an empty line"),
            NoteError::MalformedSignatureLine => f.write_str("malformed note signature line"),
            NoteError::SignatureTooShort => f.write_str("note signature shorter than a key id"),
            NoteError::BadBase64 => f.write_str("invalid base64"),
            NoteError::InvalidKeyName => f.write_str("key name is empty, too long, or contains a space or '+'"),
            NoteError::MalformedVkey => f.write_str("malformed verifier key (want name+hexid+base64)"),
            NoteError::VkeyIdMismatch => f.write_str("verifier key id does not match its name and public key"),
            NoteError::UnsupportedSignatureType(t) => write!(f, "unsupported signature type 0x{t:02x}"),
            NoteError::InvalidPublicKey => f.write_str("invalid Ed25519 public key"),
            NoteError::NoKnownSignature => f.write_str("note carries no signature by a known key"),
            NoteError::BadSignature { name, key_id } => {
                write!(f, "signature by known key {name}+{key_id} does not verify")
            }
        }
    }
}

impl std::error::Error for NoteError {}

/// A key name: non-empty, at most [`MAX_KEY_NAME_BYTES`], no Unicode space, no `+`, no control
/// character. A checkpoint's origin is the log key's name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyName(String);

impl KeyName {
    pub fn new(name: &str) -> Result<Self, NoteError> {
        let valid = !name.is_empty()
            && name.len() <= MAX_KEY_NAME_BYTES
            && !name.chars().any(|c| c.is_whitespace() || c.is_control() || c == '+');
        if !valid {
            return Err(NoteError::InvalidKeyName);
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for KeyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The 32-bit key id that opens every signature (big-endian on the wire, 8 hex digits in vkeys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub u32);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// Signature types (the byte that domain-separates key ids and opens a vkey's key material).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SignatureType {
    /// 0x01: Ed25519 over the note text (the log's checkpoint signature).
    Ed25519,
    /// 0x04: timestamped Ed25519 checkpoint cosignature (c2sp.org/tlog-cosignature).
    Cosignature,
}

impl SignatureType {
    pub fn byte(self) -> u8 {
        match self {
            SignatureType::Ed25519 => 0x01,
            SignatureType::Cosignature => 0x04,
        }
    }

    pub fn from_byte(byte: u8) -> Result<Self, NoteError> {
        match byte {
            0x01 => Ok(SignatureType::Ed25519),
            0x04 => Ok(SignatureType::Cosignature),
            other => Err(NoteError::UnsupportedSignatureType(other)),
        }
    }
}

/// Key id = first 4 bytes, big-endian, of SHA-256(name ‖ 0x0A ‖ type ‖ public key).
pub fn key_id(name: &KeyName, kind: SignatureType, public_key: &[u8; 32]) -> KeyId {
    let digest = Sha256::new()
        .chain_update(name.as_str().as_bytes())
        .chain_update([b'\n', kind.byte()])
        .chain_update(public_key)
        .finalize();
    KeyId(u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]))
}

/// A verifier key: who may sign (name, key id) and how to check it (type, Ed25519 public key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: KeyName,
    kind: SignatureType,
    key_id: KeyId,
    public_key: VerifyingKey,
}

impl VerifierKey {
    pub fn new(name: KeyName, kind: SignatureType, public_key: &[u8; 32]) -> Result<Self, NoteError> {
        let key = VerifyingKey::from_bytes(public_key).map_err(|_| NoteError::InvalidPublicKey)?;
        let key_id = key_id(&name, kind, public_key);
        Ok(Self { name, kind, key_id, public_key: key })
    }

    /// Parses `<name>+<8 hex digits>+<base64(type ‖ 32-byte key)>`. The base64 part may itself
    /// contain `+`, so only the first two separate fields.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::MalformedVkey);
        };
        let name = KeyName::new(name)?;
        if id_hex.len() != 8 || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NoteError::MalformedVkey);
        }
        let id = u32::from_str_radix(id_hex, 16).map_err(|_| NoteError::MalformedVkey)?;
        let material = BASE64.decode(key_b64).map_err(|_| NoteError::BadBase64)?;
        let (&type_byte, public_key) = material.split_first().ok_or(NoteError::MalformedVkey)?;
        let kind = SignatureType::from_byte(type_byte)?;
        let public_key: &[u8; 32] = public_key.try_into().map_err(|_| NoteError::InvalidPublicKey)?;
        let key = Self::new(name, kind, public_key)?;
        if key.key_id != KeyId(id) {
            return Err(NoteError::VkeyIdMismatch);
        }
        Ok(key)
    }

    pub fn name(&self) -> &KeyName {
        &self.name
    }

    pub fn kind(&self) -> SignatureType {
        self.kind
    }

    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.public_key.to_bytes()
    }

    /// Checks `signature` (the bytes after the key id) over `text` by this key's rules; returns
    /// the cosignature timestamp for type 0x04.
    fn check(&self, text: &NoteText, signature: &[u8]) -> Result<Option<u64>, ()> {
        match self.kind {
            SignatureType::Ed25519 => {
                let signature = ed25519_dalek::Signature::from_slice(signature).map_err(|_| ())?;
                self.public_key.verify(text.as_str().as_bytes(), &signature).map_err(|_| ())?;
                Ok(None)
            }
            SignatureType::Cosignature => {
                cosignature::check_signature_bytes(&self.public_key, text, signature).map(Some).map_err(|_| ())
            }
        }
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut material = Vec::with_capacity(33);
        material.push(self.kind.byte());
        material.extend_from_slice(self.public_key.as_bytes());
        write!(f, "{}+{}+{}", self.name, self.key_id, BASE64.encode(material))
    }
}

impl std::str::FromStr for VerifierKey {
    type Err = NoteError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Rejects ASCII control characters other than newline (the rule covers text and signatures).
fn check_no_control_characters(s: &str) -> Result<(), NoteError> {
    if s.bytes().any(|b| b < 0x20 && b != b'\n') {
        return Err(NoteError::ControlCharacter);
    }
    Ok(())
}

/// Note text: valid UTF-8, no control character but newline, non-empty, ends with a newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteText(String);

impl NoteText {
    pub fn new(text: String) -> Result<Self, NoteError> {
        check_no_control_characters(&text)?;
        if !text.ends_with('\n') {
            return Err(NoteError::TextNotNewlineTerminated);
        }
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One signature line: key name, key id and the signature bytes after the key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    name: KeyName,
    key_id: KeyId,
    signature: Vec<u8>,
}

impl NoteSignature {
    pub fn new(name: KeyName, key_id: KeyId, signature: Vec<u8>) -> Result<Self, NoteError> {
        if signature.is_empty() {
            return Err(NoteError::SignatureTooShort);
        }
        Ok(Self { name, key_id, signature })
    }

    /// A type 0x01 signature made elsewhere (e.g. by the kernel's keyring, which signs any
    /// message with the active ETL key): the key id is derived from `name` and `public_key`.
    pub fn ed25519(name: KeyName, public_key: &[u8; 32], signature: [u8; 64]) -> Self {
        let key_id = key_id(&name, SignatureType::Ed25519, public_key);
        Self { name, key_id, signature: signature.to_vec() }
    }

    /// Parses one line, with or without its final newline.
    pub fn parse_line(line: &str) -> Result<Self, NoteError> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        check_no_control_characters(line)?;
        let rest = line.strip_prefix(SIGNATURE_LINE_PREFIX).ok_or(NoteError::MalformedSignatureLine)?;
        let (name, b64) = rest.split_once(' ').ok_or(NoteError::MalformedSignatureLine)?;
        let name = KeyName::new(name)?;
        let bytes = BASE64.decode(b64).map_err(|_| NoteError::BadBase64)?;
        if bytes.len() <= 4 {
            return Err(NoteError::SignatureTooShort);
        }
        let key_id = KeyId(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
        Self::new(name, key_id, bytes[4..].to_vec())
    }

    /// The line, ending with a newline.
    pub fn to_line(&self) -> String {
        let mut bytes = Vec::with_capacity(4 + self.signature.len());
        bytes.extend_from_slice(&self.key_id.0.to_be_bytes());
        bytes.extend_from_slice(&self.signature);
        format!("{SIGNATURE_LINE_PREFIX}{} {}\n", self.name, BASE64.encode(bytes))
    }

    pub fn name(&self) -> &KeyName {
        &self.name
    }

    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    pub fn signature(&self) -> &[u8] {
        &self.signature
    }
}

/// A signature that verified with one of the given keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignature {
    pub name: KeyName,
    pub key_id: KeyId,
    pub kind: SignatureType,
    /// The cosignature's timestamp (type 0x04 only).
    pub timestamp: Option<u64>,
}

/// A note text with at least one signature line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    text: NoteText,
    signatures: Vec<NoteSignature>,
}

impl SignedNote {
    pub fn new(text: NoteText, first: NoteSignature) -> Self {
        Self { text, signatures: vec![first] }
    }

    /// Parses a note from untrusted bytes. The text ends at the last empty line.
    pub fn parse(bytes: &[u8], limits: NoteLimits) -> Result<Self, NoteError> {
        if bytes.len() > limits.max_bytes {
            return Err(NoteError::TooLarge { len: bytes.len(), max: limits.max_bytes });
        }
        let note = std::str::from_utf8(bytes).map_err(|_| NoteError::NotUtf8)?;
        check_no_control_characters(note)?;
        let (text, block) = note.rsplit_once("\n\n").ok_or(NoteError::MissingSignatures)?;
        let block = block.strip_suffix('\n').ok_or(NoteError::MissingSignatures)?;
        if block.is_empty() {
            return Err(NoteError::MissingSignatures);
        }
        let mut signatures = Vec::new();
        for line in block.split('\n') {
            if signatures.len() == limits.max_signatures {
                return Err(NoteError::TooManySignatures { max: limits.max_signatures });
            }
            signatures.push(NoteSignature::parse_line(line)?);
        }
        let text = NoteText::new(format!("{text}\n"))?;
        Ok(Self { text, signatures })
    }

    pub fn text(&self) -> &NoteText {
        &self.text
    }

    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Adds a signature line, replacing any earlier one by the same key (name and key id).
    pub fn push_signature(&mut self, signature: NoteSignature) {
        self.signatures.retain(|s| !(s.name == signature.name && s.key_id == signature.key_id));
        self.signatures.push(signature);
    }

    /// Text, empty line, signature lines.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(self.text.0.len() + 1 + 128 * self.signatures.len());
        out.push_str(self.text.as_str());
        out.push('\n');
        for signature in &self.signatures {
            out.push_str(&signature.to_line());
        }
        out.into_bytes()
    }

    /// Verifies the signatures by `keys` (one entry per key that signed, in line order).
    /// Signatures by unknown keys are ignored (rotation, cosigning); a known key is one whose
    /// name and key id both match. A failing signature by a known key rejects the whole note,
    /// and at least one known signature is required.
    pub fn verify(&self, keys: &[VerifierKey]) -> Result<Vec<VerifiedSignature>, NoteError> {
        let mut verified: Vec<VerifiedSignature> = Vec::new();
        for signature in &self.signatures {
            let Some(key) = keys.iter().find(|k| k.name == signature.name && k.key_id == signature.key_id) else {
                continue;
            };
            let timestamp = key
                .check(&self.text, &signature.signature)
                .map_err(|()| NoteError::BadSignature { name: signature.name.clone(), key_id: signature.key_id })?;
            if !verified.iter().any(|v| v.name == signature.name && v.key_id == signature.key_id) {
                verified.push(VerifiedSignature {
                    name: signature.name.clone(),
                    key_id: signature.key_id,
                    kind: key.kind,
                    timestamp,
                });
            }
        }
        if verified.is_empty() {
            return Err(NoteError::NoKnownSignature);
        }
        Ok(verified)
    }
}

/// Signs note texts with an Ed25519 key (type 0x01); the log's checkpoint signer.
pub struct NoteSigner {
    name: KeyName,
    key: SigningKey,
    key_id: KeyId,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the seed.
        f.debug_struct("NoteSigner").field("name", &self.name).field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// A signer from a raw 32-byte Ed25519 seed (the format of SPEC §4 key files).
    pub fn new(name: KeyName, seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        let key_id = key_id(&name, SignatureType::Ed25519, key.verifying_key().as_bytes());
        Self { name, key, key_id }
    }

    pub fn name(&self) -> &KeyName {
        &self.name
    }

    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    pub fn verifier_key(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            kind: SignatureType::Ed25519,
            key_id: self.key_id,
            public_key: self.key.verifying_key(),
        }
    }

    pub fn sign(&self, text: &NoteText) -> NoteSignature {
        let signature = self.key.sign(text.as_str().as_bytes());
        NoteSignature::ed25519(self.name.clone(), self.key.verifying_key().as_bytes(), signature.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // The example of c2sp.org/signed-note ("Verifier keys"), an independent test vector.
    const SPEC_VKEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
    const SPEC_NOTE: &str = "This is an example message.\n\n\u{2014} example.com/foo \
        Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";

    fn name(s: &str) -> KeyName {
        KeyName::new(s).unwrap()
    }

    fn signer(n: &str, byte: u8) -> NoteSigner {
        NoteSigner::new(name(n), &[byte; 32])
    }

    fn text(s: &str) -> NoteText {
        NoteText::new(s.to_owned()).unwrap()
    }

    #[test]
    fn spec_example_vkey_verifies_spec_example_note() {
        let key = VerifierKey::parse(SPEC_VKEY).unwrap();
        assert_eq!(key.to_string(), SPEC_VKEY);
        assert_eq!(key.key_id(), KeyId(0x530d903a));
        let note = SignedNote::parse(SPEC_NOTE.as_bytes(), NoteLimits::DEFAULT).unwrap();
        assert_eq!(note.text().as_str(), "This is an example message.\n");
        assert_eq!(note.to_bytes(), SPEC_NOTE.as_bytes());
        let verified = note.verify(&[key]).unwrap();
        assert_eq!(verified.len(), 1);
        assert_eq!(verified[0].timestamp, None);
    }

    #[test]
    fn vkey_parse_rejects_each_malformation() {
        let cases: [(&str, NoteError); 7] = [
            ("example.com/foo+530d903a", NoteError::MalformedVkey),
            ("example.com/foo+530d903+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", NoteError::MalformedVkey),
            ("example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", NoteError::VkeyIdMismatch),
            ("example.com/bar+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", NoteError::VkeyIdMismatch),
            ("+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", NoteError::InvalidKeyName),
            ("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2", NoteError::BadBase64),
            (
                "example.com/foo+530d903a+AukyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
                NoteError::UnsupportedSignatureType(2),
            ),
        ];
        for (vkey, want) in cases {
            assert_eq!(VerifierKey::parse(vkey), Err(want), "{vkey}");
        }
    }

    #[test]
    fn key_names_follow_the_spec() {
        assert!(KeyName::new("example.com/log").is_ok());
        for bad in ["", "a b", "a+b", "a\u{00a0}b", "a\tb"] {
            assert_eq!(KeyName::new(bad), Err(NoteError::InvalidKeyName), "{bad:?}");
        }
        assert!(KeyName::new(&"a".repeat(MAX_KEY_NAME_BYTES)).is_ok());
        assert!(KeyName::new(&"a".repeat(MAX_KEY_NAME_BYTES + 1)).is_err());
    }

    #[test]
    fn unknown_keys_are_ignored_and_one_known_signature_is_required() {
        let (log, other) = (signer("log.example/a", 1), signer("other.example/b", 2));
        let mut note = SignedNote::new(text("hello\n"), other.sign(&text("hello\n")));
        assert_eq!(note.verify(&[log.verifier_key()]), Err(NoteError::NoKnownSignature));
        note.push_signature(log.sign(&text("hello\n")));
        let verified = note.verify(&[log.verifier_key()]).unwrap();
        assert_eq!(verified.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["log.example/a"]);
        assert_eq!(verified[0].kind, SignatureType::Ed25519);
    }

    #[test]
    fn a_bad_signature_by_a_known_key_rejects_the_note() {
        let log = signer("log.example/a", 1);
        let forged = NoteSignature::new(log.name().clone(), log.key_id(), vec![7; 64]).unwrap();
        let mut note = SignedNote::new(text("hello\n"), log.sign(&text("hello\n")));
        note.signatures.push(forged);
        let want = NoteError::BadSignature { name: log.name().clone(), key_id: log.key_id() };
        assert_eq!(note.verify(&[log.verifier_key()]), Err(want));
        // The same name with another key id is another key: ignored.
        let mut note = SignedNote::new(text("hello\n"), log.sign(&text("hello\n")));
        note.push_signature(NoteSignature::new(log.name().clone(), KeyId(log.key_id().0 ^ 1), vec![7; 64]).unwrap());
        assert!(note.verify(&[log.verifier_key()]).is_ok());
    }

    #[test]
    fn other_signature_types_are_parsed_and_ignored() {
        // An ML-DSA-44 cosignature (type 0x06) is 8 + 2420 bytes: parse it, never check it.
        let log = signer("log.example/a", 1);
        let body = text("x\n");
        let mut note = SignedNote::new(body.clone(), log.sign(&body));
        note.push_signature(NoteSignature::new(name("w.example/pq"), KeyId(0x0102_0304), vec![6; 2428]).unwrap());
        let parsed = SignedNote::parse(&note.to_bytes(), NoteLimits::DEFAULT).unwrap();
        assert_eq!(parsed.signatures()[1].signature().len(), 2428);
        assert_eq!(parsed.verify(&[log.verifier_key()]).unwrap().len(), 1);
    }

    #[test]
    fn push_signature_replaces_the_same_keys_line() {
        let log = signer("log.example/a", 1);
        let mut note = SignedNote::new(text("x\n"), log.sign(&text("x\n")));
        note.push_signature(log.sign(&text("x\n")));
        assert_eq!(note.signatures().len(), 1);
    }

    #[test]
    fn parse_rejects_malformed_notes() {
        let line = signer("log.example/a", 1).sign(&text("x\n")).to_line();
        let ok = format!("x\n\n{line}");
        assert!(SignedNote::parse(ok.as_bytes(), NoteLimits::DEFAULT).is_ok());
        let cases: Vec<(Vec<u8>, NoteError)> = vec![
            (format!("x\n{line}").into_bytes(), NoteError::MissingSignatures),
            (b"x\n\n".to_vec(), NoteError::MissingSignatures),
            (format!("x\n\n{}", line.trim_end()).into_bytes(), NoteError::MissingSignatures),
            (format!("x\r\n\n{line}").into_bytes(), NoteError::ControlCharacter),
            (b"x\n\n\xff\n".to_vec(), NoteError::NotUtf8),
            (b"x\n\n- log.example/a AAAAAAA=\n".to_vec(), NoteError::MalformedSignatureLine),
            ("x\n\n\u{2014} log.example/a AAAA\n".as_bytes().to_vec(), NoteError::SignatureTooShort),
            ("x\n\n\u{2014} log.example/a AAAA*AAA\n".as_bytes().to_vec(), NoteError::BadBase64),
            ("x\n\n\u{2014} log.example/a\n".as_bytes().to_vec(), NoteError::MalformedSignatureLine),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                SignedNote::parse(&bytes, NoteLimits::DEFAULT),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
        assert_eq!(NoteText::new("no newline".into()), Err(NoteError::TextNotNewlineTerminated));
    }

    #[test]
    fn parse_enforces_the_limits() {
        let line = signer("log.example/a", 1).sign(&text("x\n")).to_line();
        let note = format!("x\n\n{}", line.repeat(3));
        let limits = NoteLimits { max_bytes: note.len(), max_signatures: 3 };
        assert!(SignedNote::parse(note.as_bytes(), limits).is_ok());
        let fewer = NoteLimits { max_signatures: 2, ..limits };
        assert_eq!(SignedNote::parse(note.as_bytes(), fewer), Err(NoteError::TooManySignatures { max: 2 }));
        let smaller = NoteLimits { max_bytes: note.len() - 1, ..limits };
        assert_eq!(
            SignedNote::parse(note.as_bytes(), smaller),
            Err(NoteError::TooLarge { len: note.len(), max: note.len() - 1 })
        );
    }

    #[test]
    fn text_may_contain_empty_lines_and_ends_at_the_last_one() {
        let log = signer("log.example/a", 1);
        let body = text("a\n\nb\n\n");
        let note = SignedNote::new(body.clone(), log.sign(&body));
        let parsed = SignedNote::parse(&note.to_bytes(), NoteLimits::DEFAULT).unwrap();
        assert_eq!(parsed.text(), &body);
        assert!(parsed.verify(&[log.verifier_key()]).is_ok());
    }

    #[test]
    fn debug_never_shows_the_seed() {
        let shown = format!("{:?}", signer("log.example/a", 0xab));
        assert!(!shown.contains("171") && !shown.to_lowercase().contains("abab"), "{shown}");
    }

    proptest! {
        #[test]
        fn signed_notes_round_trip(
            lines in proptest::collection::vec("[^\\x00-\\x1f]{0,40}", 1..6),
            signers in proptest::collection::vec((0u8..8, "[a-z]{1,8}\\.example/[a-z0-9]{1,8}"), 1..5),
        ) {
            let body = text(&(lines.join("\n") + "\n"));
            let signers: Vec<NoteSigner> = signers.iter().map(|(seed, n)| signer(n, *seed)).collect();
            let mut note = SignedNote::new(body.clone(), signers[0].sign(&body));
            for s in &signers[1..] {
                note.push_signature(s.sign(&body));
            }
            let parsed = SignedNote::parse(&note.to_bytes(), NoteLimits::DEFAULT).unwrap();
            prop_assert_eq!(&parsed, &note);
            let keys: Vec<VerifierKey> = signers.iter().map(NoteSigner::verifier_key).collect();
            prop_assert!(parsed.verify(&keys).is_ok());
            for key in &keys {
                prop_assert_eq!(&VerifierKey::parse(&key.to_string()).unwrap(), key);
            }
        }
    }
}
