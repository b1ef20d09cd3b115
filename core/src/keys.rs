//! The ETL signing keyring (SPEC §4). The runtime reads `keys/` into bytes; the kernel parses,
//! checks and signs. Every historical key stays loaded so old signatures remain verifiable.

use std::collections::BTreeMap;

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};

use crate::hash::{Hash, sha256};

/// Key id = SHA-256(Ed25519 public key).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub Hash);

impl KeyId {
    pub fn of_public_key(public_key: &[u8; 32]) -> Self {
        Self(sha256(public_key))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({})", self.to_hex())
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Public key for a raw 32-byte seed (what `keys/<kid>.key` holds).
pub fn public_key_for_seed(seed: &[u8; 32]) -> [u8; 32] {
    SigningKey::from_bytes(seed).verifying_key().to_bytes()
}

/// Key id for a raw 32-byte seed: the file name a runtime must give a freshly generated key.
pub fn key_id_for_seed(seed: &[u8; 32]) -> KeyId {
    KeyId::of_public_key(&public_key_for_seed(seed))
}

/// File name of a key inside `keys/`.
pub fn key_file_name(key_id: &KeyId) -> String {
    format!("{}.key", key_id.to_hex())
}

/// Verifies an Ed25519 signature over `message` with a raw public key.
pub fn verify_signature(public_key: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(public_key) else {
        return false;
    };
    let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
        return false;
    };
    key.verify(message, &signature).is_ok()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// A `*.key` file whose size is not 32 bytes.
    BadSeedLength { file: String, len: usize },
    /// A `*.key` file whose name is not the key id of the seed it holds.
    NameMismatch { file: String, key_id: KeyId },
    /// `active_key_id` is not 64 hex characters (plus optional newline).
    BadActiveKeyId,
    /// `active_key_id` names a key with no file.
    ActiveKeyMissing(KeyId),
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadSeedLength { file, len } => {
                write!(f, "keys/{file}: expected a raw 32-byte Ed25519 seed, found {len} bytes")
            }
            Self::NameMismatch { file, key_id } => {
                write!(f, "keys/{file}: file name does not match its key id {key_id}")
            }
            Self::BadActiveKeyId => f.write_str("keys/active_key_id: expected 64 hex characters"),
            Self::ActiveKeyMissing(id) => write!(f, "keys/active_key_id names {id}, but keys/{id}.key is missing"),
        }
    }
}

impl std::error::Error for KeyError {}

/// A key file as the runtime found it: name inside `keys/` and raw contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

pub struct Keyring {
    keys: BTreeMap<KeyId, SigningKey>,
    active: KeyId,
}

impl std::fmt::Debug for Keyring {
    // Never print seeds.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("active", &self.active)
            .finish()
    }
}

impl Keyring {
    /// Builds the keyring from the `*.key` files of `keys/` and the contents of `active_key_id`.
    /// Files not ending in `.key` are ignored (temporary files, editor backups).
    pub fn from_files(files: &[KeyFile], active_key_id: &[u8]) -> Result<Self, KeyError> {
        let mut keys = BTreeMap::new();
        for file in files.iter().filter(|f| f.name.ends_with(".key")) {
            let seed: [u8; 32] = file
                .bytes
                .as_slice()
                .try_into()
                .map_err(|_| KeyError::BadSeedLength { file: file.name.clone(), len: file.bytes.len() })?;
            let key = SigningKey::from_bytes(&seed);
            let key_id = KeyId::of_public_key(&key.verifying_key().to_bytes());
            if file.name != key_file_name(&key_id) {
                return Err(KeyError::NameMismatch { file: file.name.clone(), key_id });
            }
            keys.insert(key_id, key);
        }
        let text = std::str::from_utf8(active_key_id).map_err(|_| KeyError::BadActiveKeyId)?;
        let active = crate::hash::parse_hash_hex(text.trim_end_matches(['\n', '\r']))
            .map(KeyId)
            .ok_or(KeyError::BadActiveKeyId)?;
        if !keys.contains_key(&active) {
            return Err(KeyError::ActiveKeyMissing(active));
        }
        Ok(Self { keys, active })
    }

    pub fn active_key_id(&self) -> KeyId {
        self.active
    }

    pub fn public_key(&self, key_id: &KeyId) -> Option<[u8; 32]> {
        self.keys.get(key_id).map(|key| key.verifying_key().to_bytes())
    }

    pub fn key_ids(&self) -> impl Iterator<Item = &KeyId> {
        self.keys.keys()
    }

    /// Signs `message` with the active key.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.keys[&self.active].sign(message).to_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn seed(byte: u8) -> [u8; 32] {
        [byte; 32]
    }

    fn file_for(seed: [u8; 32]) -> KeyFile {
        KeyFile { name: key_file_name(&key_id_for_seed(&seed)), bytes: seed.to_vec() }
    }

    #[test]
    fn key_id_matches_the_sth_vector() {
        let seed: [u8; 32] = hex::decode(SEED_HEX).unwrap().try_into().unwrap();
        assert_eq!(
            hex::encode(public_key_for_seed(&seed)),
            "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
        );
        assert_eq!(key_id_for_seed(&seed).to_hex(), "56475aa75463474c0285df5dbf2bcab73da651358839e9b77481b2eab107708c");
    }

    #[test]
    fn loads_all_keys_and_signs_with_the_active_one() {
        let (a, b) = (seed(1), seed(2));
        let active = format!("{}\n", key_id_for_seed(&b));
        let ring = Keyring::from_files(&[file_for(a), file_for(b)], active.as_bytes()).unwrap();
        assert_eq!(ring.active_key_id(), key_id_for_seed(&b));
        assert_eq!(ring.key_ids().count(), 2);
        let signature = ring.sign(b"m");
        assert!(verify_signature(&public_key_for_seed(&b), b"m", &signature));
        assert!(!verify_signature(&public_key_for_seed(&a), b"m", &signature));
        assert_eq!(ring.public_key(&key_id_for_seed(&a)), Some(public_key_for_seed(&a)));
    }

    #[test]
    fn rejects_bad_files_with_named_errors() {
        let a = seed(1);
        let active = key_id_for_seed(&a).to_hex();
        let short = KeyFile { name: key_file_name(&key_id_for_seed(&a)), bytes: vec![0; 31] };
        assert!(matches!(
            Keyring::from_files(&[short], active.as_bytes()),
            Err(KeyError::BadSeedLength { len: 31, .. })
        ));
        let misnamed = KeyFile { name: "other.key".into(), bytes: a.to_vec() };
        assert!(matches!(Keyring::from_files(&[misnamed], active.as_bytes()), Err(KeyError::NameMismatch { .. })));
        assert_eq!(Keyring::from_files(&[file_for(a)], b"xyz").unwrap_err(), KeyError::BadActiveKeyId);
        let missing = key_id_for_seed(&seed(9));
        assert_eq!(
            Keyring::from_files(&[file_for(a)], missing.to_hex().as_bytes()).unwrap_err(),
            KeyError::ActiveKeyMissing(missing)
        );
    }

    #[test]
    fn debug_output_never_contains_the_seed() {
        let a = seed(0xab);
        let ring = Keyring::from_files(&[file_for(a)], key_id_for_seed(&a).to_hex().as_bytes()).unwrap();
        assert!(!format!("{ring:?}").contains(&"ab".repeat(32)));
    }
}
