//! Serde for byte fields as lowercase hex strings: compact, greppable journal and checkpoint
//! records (a wasm module as a JSON number array would be ~3.5× its size).

use serde::{Deserialize, Deserializer, Serializer};

pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&hex::encode(bytes))
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
    hex::decode(text.as_ref()).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Wrapped(#[serde(with = "super")] Vec<u8>);

    #[test]
    fn round_trips_as_hex() {
        let json = serde_json::to_string(&Wrapped(vec![0, 0xab])).unwrap();
        assert_eq!(json, r#""00ab""#);
        assert_eq!(serde_json::from_str::<Wrapped>(&json).unwrap(), Wrapped(vec![0, 0xab]));
        assert!(serde_json::from_str::<Wrapped>(r#""zz""#).is_err());
    }
}
