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

/// Serializes `value` as canonical JSON bytes: the same bytes as [`value_to_vec`] of
/// `serde_json::to_value(value)`, written directly instead of through a `Value` tree (every
/// journal record, capsule and checkpoint goes through here).
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(256);
    value.serialize(direct::Writer { out: &mut out })?;
    Ok(out)
}

impl serde::ser::Error for CanonicalError {
    fn custom<T: std::fmt::Display>(message: T) -> Self {
        Self::NotJson(message.to_string())
    }
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

/// A serde serializer writing canonical JSON as it goes. Scalars are written by serde_json (same
/// number and string formatting as `Value`); objects buffer their members and write them sorted by
/// key bytes. Non-finite floats become `null`, as `serde_json::to_value` makes them.
mod direct {
    use serde::Serialize;
    use serde::ser::{self, Impossible};

    use super::CanonicalError;

    type Result<T> = std::result::Result<T, CanonicalError>;

    pub(super) struct Writer<'a> {
        pub(super) out: &'a mut Vec<u8>,
    }

    fn json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<()> {
        serde_json::to_writer(out, value).map_err(|e| CanonicalError::NotJson(e.to_string()))
    }

    fn float(out: &mut Vec<u8>, value: f64) -> Result<()> {
        if value.is_finite() {
            json(out, &value)
        } else {
            out.extend_from_slice(b"null");
            Ok(())
        }
    }

    /// Members of one object, written sorted when it ends.
    pub(super) struct Object<'a> {
        out: &'a mut Vec<u8>,
        members: Vec<(String, Vec<u8>)>,
        pending_key: Option<String>,
        /// `{"Variant":` already written for a struct variant; one more `}` closes it.
        variant: bool,
    }

    impl Object<'_> {
        fn member<T: Serialize + ?Sized>(&mut self, key: String, value: &T) -> Result<()> {
            let mut bytes = Vec::new();
            value.serialize(Writer { out: &mut bytes })?;
            self.members.push((key, bytes));
            Ok(())
        }

        fn finish(mut self) -> Result<()> {
            // A later duplicate key wins, as it does when building a `Value` map.
            self.members.reverse();
            self.members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            self.members.dedup_by(|later, earlier| later.0 == earlier.0);
            self.out.push(b'{');
            for (i, (key, value)) in self.members.iter().enumerate() {
                if i > 0 {
                    self.out.push(b',');
                }
                json(self.out, key.as_str())?;
                self.out.push(b':');
                self.out.extend_from_slice(value);
            }
            self.out.push(b'}');
            if self.variant {
                self.out.push(b'}');
            }
            Ok(())
        }
    }

    /// Elements of one array, written in place.
    pub(super) struct Array<'a> {
        out: &'a mut Vec<u8>,
        first: bool,
        /// `{"Variant":` already written for a tuple variant.
        variant: bool,
    }

    impl Array<'_> {
        fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
            if !self.first {
                self.out.push(b',');
            }
            self.first = false;
            value.serialize(Writer { out: self.out })
        }

        fn finish(self) -> Result<()> {
            self.out.push(b']');
            if self.variant {
                self.out.push(b'}');
            }
            Ok(())
        }
    }

    fn variant_open(out: &mut Vec<u8>, variant: &str) -> Result<()> {
        out.push(b'{');
        json(out, variant)?;
        out.push(b':');
        Ok(())
    }

    impl<'a> ser::Serializer for Writer<'a> {
        type Ok = ();
        type Error = CanonicalError;
        type SerializeSeq = Array<'a>;
        type SerializeTuple = Array<'a>;
        type SerializeTupleStruct = Array<'a>;
        type SerializeTupleVariant = Array<'a>;
        type SerializeMap = Object<'a>;
        type SerializeStruct = Object<'a>;
        type SerializeStructVariant = Object<'a>;

        fn serialize_bool(self, v: bool) -> Result<()> {
            json(self.out, &v)
        }
        fn serialize_i8(self, v: i8) -> Result<()> {
            json(self.out, &v)
        }
        fn serialize_i16(self, v: i16) -> Result<()> {
            json(self.out, &v)
        }
        fn serialize_i32(self, v: i32) -> Result<()> {
            json(self.out, &v)
        }
        fn serialize_i64(self, v: i64) -> Result<()> {
            json(self.out, &v)
        }
        fn serialize_i128(self, v: i128) -> Result<()> {
            json(self.out, &v)
        }
        fn serialize_u8(self, v: u8) -> Result<()> {
            json(self.out, &v)
        }
        fn serialize_u16(self, v: u16) -> Result<()> {
            json(self.out, &v)
        }
        fn serialize_u32(self, v: u32) -> Result<()> {
            json(self.out, &v)
        }
        fn serialize_u64(self, v: u64) -> Result<()> {
            json(self.out, &v)
        }
        fn serialize_u128(self, v: u128) -> Result<()> {
            json(self.out, &v)
        }
        fn serialize_f32(self, v: f32) -> Result<()> {
            // `to_value` widens f32 to f64 before formatting.
            float(self.out, f64::from(v))
        }
        fn serialize_f64(self, v: f64) -> Result<()> {
            float(self.out, v)
        }
        fn serialize_char(self, v: char) -> Result<()> {
            json(self.out, &v)
        }
        fn serialize_str(self, v: &str) -> Result<()> {
            json(self.out, v)
        }
        fn serialize_bytes(self, v: &[u8]) -> Result<()> {
            json(self.out, v)
        }
        fn serialize_none(self) -> Result<()> {
            self.serialize_unit()
        }
        fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<()> {
            value.serialize(self)
        }
        fn serialize_unit(self) -> Result<()> {
            self.out.extend_from_slice(b"null");
            Ok(())
        }
        fn serialize_unit_struct(self, _name: &'static str) -> Result<()> {
            self.serialize_unit()
        }
        fn serialize_unit_variant(self, _name: &'static str, _index: u32, variant: &'static str) -> Result<()> {
            json(self.out, variant)
        }
        fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _name: &'static str, value: &T) -> Result<()> {
            value.serialize(self)
        }
        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _name: &'static str,
            _index: u32,
            variant: &'static str,
            value: &T,
        ) -> Result<()> {
            variant_open(self.out, variant)?;
            value.serialize(Writer { out: self.out })?;
            self.out.push(b'}');
            Ok(())
        }
        fn serialize_seq(self, _len: Option<usize>) -> Result<Array<'a>> {
            self.out.push(b'[');
            Ok(Array { out: self.out, first: true, variant: false })
        }
        fn serialize_tuple(self, len: usize) -> Result<Array<'a>> {
            self.serialize_seq(Some(len))
        }
        fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Array<'a>> {
            self.serialize_seq(Some(len))
        }
        fn serialize_tuple_variant(
            self,
            _name: &'static str,
            _index: u32,
            variant: &'static str,
            _len: usize,
        ) -> Result<Array<'a>> {
            variant_open(self.out, variant)?;
            self.out.push(b'[');
            Ok(Array { out: self.out, first: true, variant: true })
        }
        fn serialize_map(self, len: Option<usize>) -> Result<Object<'a>> {
            let members = Vec::with_capacity(len.unwrap_or(0));
            Ok(Object { out: self.out, members, pending_key: None, variant: false })
        }
        fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Object<'a>> {
            self.serialize_map(Some(len))
        }
        fn serialize_struct_variant(
            self,
            _name: &'static str,
            _index: u32,
            variant: &'static str,
            len: usize,
        ) -> Result<Object<'a>> {
            variant_open(self.out, variant)?;
            Ok(Object { out: self.out, members: Vec::with_capacity(len), pending_key: None, variant: true })
        }
    }

    impl ser::SerializeSeq for Array<'_> {
        type Ok = ();
        type Error = CanonicalError;
        fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
            self.element(value)
        }
        fn end(self) -> Result<()> {
            self.finish()
        }
    }

    impl ser::SerializeTuple for Array<'_> {
        type Ok = ();
        type Error = CanonicalError;
        fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
            self.element(value)
        }
        fn end(self) -> Result<()> {
            self.finish()
        }
    }

    impl ser::SerializeTupleStruct for Array<'_> {
        type Ok = ();
        type Error = CanonicalError;
        fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
            self.element(value)
        }
        fn end(self) -> Result<()> {
            self.finish()
        }
    }

    impl ser::SerializeTupleVariant for Array<'_> {
        type Ok = ();
        type Error = CanonicalError;
        fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
            self.element(value)
        }
        fn end(self) -> Result<()> {
            self.finish()
        }
    }

    impl ser::SerializeMap for Object<'_> {
        type Ok = ();
        type Error = CanonicalError;
        fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<()> {
            self.pending_key = Some(key.serialize(KeyWriter)?);
            Ok(())
        }
        fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
            let key =
                self.pending_key.take().ok_or_else(|| CanonicalError::NotJson("map value without a key".into()))?;
            self.member(key, value)
        }
        fn end(self) -> Result<()> {
            self.finish()
        }
    }

    impl ser::SerializeStruct for Object<'_> {
        type Ok = ();
        type Error = CanonicalError;
        fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<()> {
            self.member(key.to_string(), value)
        }
        fn end(self) -> Result<()> {
            self.finish()
        }
    }

    impl ser::SerializeStructVariant for Object<'_> {
        type Ok = ();
        type Error = CanonicalError;
        fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<()> {
            self.member(key.to_string(), value)
        }
        fn end(self) -> Result<()> {
            self.finish()
        }
    }

    /// Map keys become strings the way `serde_json::to_value` makes them: strings as they are,
    /// integers and booleans in decimal text, unit variants by name; anything else is refused.
    struct KeyWriter;

    fn key_error() -> CanonicalError {
        CanonicalError::NotJson("key must be a string".into())
    }

    impl ser::Serializer for KeyWriter {
        type Ok = String;
        type Error = CanonicalError;
        type SerializeSeq = Impossible<String, CanonicalError>;
        type SerializeTuple = Impossible<String, CanonicalError>;
        type SerializeTupleStruct = Impossible<String, CanonicalError>;
        type SerializeTupleVariant = Impossible<String, CanonicalError>;
        type SerializeMap = Impossible<String, CanonicalError>;
        type SerializeStruct = Impossible<String, CanonicalError>;
        type SerializeStructVariant = Impossible<String, CanonicalError>;

        fn serialize_bool(self, v: bool) -> Result<String> {
            Ok(v.to_string())
        }
        fn serialize_i8(self, v: i8) -> Result<String> {
            Ok(v.to_string())
        }
        fn serialize_i16(self, v: i16) -> Result<String> {
            Ok(v.to_string())
        }
        fn serialize_i32(self, v: i32) -> Result<String> {
            Ok(v.to_string())
        }
        fn serialize_i64(self, v: i64) -> Result<String> {
            Ok(v.to_string())
        }
        fn serialize_i128(self, v: i128) -> Result<String> {
            Ok(v.to_string())
        }
        fn serialize_u8(self, v: u8) -> Result<String> {
            Ok(v.to_string())
        }
        fn serialize_u16(self, v: u16) -> Result<String> {
            Ok(v.to_string())
        }
        fn serialize_u32(self, v: u32) -> Result<String> {
            Ok(v.to_string())
        }
        fn serialize_u64(self, v: u64) -> Result<String> {
            Ok(v.to_string())
        }
        fn serialize_u128(self, v: u128) -> Result<String> {
            Ok(v.to_string())
        }
        fn serialize_f32(self, _v: f32) -> Result<String> {
            Err(key_error())
        }
        fn serialize_f64(self, _v: f64) -> Result<String> {
            Err(key_error())
        }
        fn serialize_char(self, v: char) -> Result<String> {
            Ok(v.to_string())
        }
        fn serialize_str(self, v: &str) -> Result<String> {
            Ok(v.to_string())
        }
        fn serialize_bytes(self, _v: &[u8]) -> Result<String> {
            Err(key_error())
        }
        fn serialize_none(self) -> Result<String> {
            Err(key_error())
        }
        fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<String> {
            Err(key_error())
        }
        fn serialize_unit(self) -> Result<String> {
            Err(key_error())
        }
        fn serialize_unit_struct(self, _name: &'static str) -> Result<String> {
            Err(key_error())
        }
        fn serialize_unit_variant(self, _name: &'static str, _index: u32, variant: &'static str) -> Result<String> {
            Ok(variant.to_string())
        }
        fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _name: &'static str, value: &T) -> Result<String> {
            value.serialize(self)
        }
        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _name: &'static str,
            _index: u32,
            _variant: &'static str,
            _value: &T,
        ) -> Result<String> {
            Err(key_error())
        }
        fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq> {
            Err(key_error())
        }
        fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple> {
            Err(key_error())
        }
        fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Self::SerializeTupleStruct> {
            Err(key_error())
        }
        fn serialize_tuple_variant(
            self,
            _name: &'static str,
            _index: u32,
            _variant: &'static str,
            _len: usize,
        ) -> Result<Self::SerializeTupleVariant> {
            Err(key_error())
        }
        fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap> {
            Err(key_error())
        }
        fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self::SerializeStruct> {
            Err(key_error())
        }
        fn serialize_struct_variant(
            self,
            _name: &'static str,
            _index: u32,
            _variant: &'static str,
            _len: usize,
        ) -> Result<Self::SerializeStructVariant> {
            Err(key_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The reference: canonical bytes of the `Value` serde_json builds.
    fn via_value<T: Serialize>(value: &T) -> Vec<u8> {
        value_to_vec(&serde_json::to_value(value).unwrap()).unwrap()
    }

    #[derive(Serialize)]
    #[serde(tag = "record", rename_all = "snake_case")]
    enum Tagged {
        Entry { zeta: u8, alpha: Option<f64>, unit: Unit, nested: Newtype },
    }

    #[derive(Serialize)]
    enum Unit {
        Only,
    }

    #[derive(Serialize)]
    struct Newtype(Vec<(i64, String)>);

    #[derive(Serialize)]
    enum Shapes {
        Tuple(u8, bool),
        Struct { b: f32, a: char },
        Wrapped(std::collections::BTreeMap<u64, f64>),
    }

    #[test]
    fn direct_writing_matches_the_value_path_byte_for_byte() {
        let tagged = Tagged::Entry {
            zeta: 1,
            alpha: Some(0.1 + 0.2),
            unit: Unit::Only,
            nested: Newtype(vec![(-3, "é\n\"".into())]),
        };
        assert_eq!(to_vec(&tagged).unwrap(), via_value(&tagged));
        let nan = Tagged::Entry { zeta: 0, alpha: Some(f64::NAN), unit: Unit::Only, nested: Newtype(Vec::new()) };
        assert_eq!(to_vec(&nan).unwrap(), via_value(&nan));
        let map: std::collections::BTreeMap<u64, f64> = [(10, 1e300), (9, -0.0), (100, f64::INFINITY)].into();
        for shape in [Shapes::Tuple(7, true), Shapes::Struct { b: 1.5, a: 'x' }, Shapes::Wrapped(map)] {
            assert_eq!(to_vec(&shape).unwrap(), via_value(&shape));
        }
        let value = json!({"b": [1, {"d": null, "c": "s"}], "a": 1.8446744073709552e19, "": false});
        assert_eq!(to_vec(&value).unwrap(), value_to_vec(&value).unwrap());
        let keyed: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
        assert!(to_vec(&keyed).is_err(), "non-string keys are not JSON");
    }

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
