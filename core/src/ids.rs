//! 32-byte identifiers as types. Each serializes as 64 lowercase hex characters, exactly as the
//! `*_hex` strings it replaces, and orders as that text does (hex keeps byte order), so maps
//! keyed by them serialize to the same bytes.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::hash::{Hash, parse_hash_hex};

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
        pub struct $name(pub Hash);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&hex::encode(self.0))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                let bytes = parse_hash_hex(&text)
                    .ok_or_else(|| serde::de::Error::custom(concat!(stringify!($name), " must be 64 hex characters")))?;
                Ok(Self(bytes))
            }
        }
    };
}

hex_id!(
    /// A claim's id (SPEC §5.1), derived from its topic, holdout, signals and oracle shape.
    ClaimId
);

hex_id!(
    /// A claim's topic (SPEC §5.1): the key of its topic pool.
    TopicId
);

hex_id!(
    /// SHA-256 of a capsule's canonical JSON: the id revocations and dependencies name.
    CapsuleHash
);

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn ids_serialize_as_the_hex_strings_they_replace() {
        let id = ClaimId([0xab; 32]);
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<ClaimId>(&format!("\"{}\"", "ab".repeat(32))).unwrap(), id);
        assert!(serde_json::from_str::<CapsuleHash>("\"ab\"").is_err(), "not 32 bytes");
    }

    #[test]
    fn maps_keyed_by_ids_keep_the_order_and_bytes_of_hex_keys() {
        let ids: Vec<[u8; 32]> = [0x00, 0x0a, 0x9f, 0xa0, 0xff].iter().map(|b| [*b; 32]).collect();
        let typed: BTreeMap<CapsuleHash, ClaimId> = ids.iter().map(|b| (CapsuleHash(*b), ClaimId(*b))).collect();
        let text: BTreeMap<String, String> = ids.iter().map(|b| (hex::encode(b), hex::encode(b))).collect();
        assert_eq!(serde_json::to_string(&typed).unwrap(), serde_json::to_string(&text).unwrap());
        let back: BTreeMap<CapsuleHash, ClaimId> =
            serde_json::from_str(&serde_json::to_string(&text).unwrap()).unwrap();
        assert_eq!(back, typed);
    }
}
