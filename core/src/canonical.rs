//! Canonical JSON (SPEC notation): keys sorted by byte order at every depth, compact, UTF-8.
//! `serde_json` turns NaN/inf into `null`, so floats must be checked finite where they enter the
//! kernel (request validation), never here. Written by hand rather than trusting `serde_json::Map` ordering, which a
//! feature flag elsewhere in the build (`preserve_order`) could silently change.

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanonicalError {
    /// The value could not be represented as JSON (e.g. a map with non-string keys).
    NotJson(String),
}

impl std::fmt::Display for CanonicalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotJson(reason) => write!(f, "value is not representable as JSON: {reason}"),
        }
    }
}

impl std::error::Error for CanonicalError {}

/// Serializes `value` as canonical JSON bytes.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    let value = serde_json::to_value(value).map_err(|e| CanonicalError::NotJson(e.to_string()))?;
    value_to_vec(&value)
}

/// Serializes an already-built JSON value canonically.
pub fn value_to_vec(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(256);
    write_value(value, &mut out)?;
    Ok(out)
}

fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) | Value::Number(_) => {
            serde_json::to_writer(&mut *out, value).map_err(|e| CanonicalError::NotJson(e.to_string()))
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
            Ok(())
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key).map_err(|e| CanonicalError::NotJson(e.to_string()))?;
                out.push(b':');
                write_value(item, out)?;
            }
            out.push(b'}');
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_at_every_depth_and_is_compact() {
        let value = json!({"b": 1, "a": {"z": [true, null], "y": "s"}, "A": 2.5});
        let bytes = value_to_vec(&value).unwrap();
        assert_eq!(String::from_utf8(bytes).unwrap(), r#"{"A":2.5,"a":{"y":"s","z":[true,null]},"b":1}"#);
    }

    #[test]
    fn matches_the_etl_vector_entry_encoding() {
        let bytes = value_to_vec(&json!({"n": 0, "kind": "example"})).unwrap();
        assert_eq!(bytes, br#"{"kind":"example","n":0}"#);
    }

    #[test]
    fn escapes_strings_like_json() {
        let bytes = value_to_vec(&json!({"k": "a\"b\n\u{e9}"})).unwrap();
        assert_eq!(String::from_utf8(bytes).unwrap(), "{\"k\":\"a\\\"b\\n\u{e9}\"}");
    }
}
