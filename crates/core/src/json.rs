//! Reading one JSON message without building a tree: the fields a profile names are kept as
//! [`Scalar`]s (strings borrowed from the payload when unescaped), everything else is skipped.

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// A JSON value as validation sees it: scalars kept, arrays and objects only noted.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Cow<'a, str>),
    Array,
    Object,
}

impl Scalar<'_> {
    /// The value as a number, if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Scalar::Int(i) => Some(i as f64),
            Scalar::UInt(u) => Some(u as f64),
            Scalar::Float(f) => Some(f),
            _ => None,
        }
    }

    /// A short description for error messages, e.g. `string "fast"` or `an array`.
    pub fn describe(&self) -> String {
        match self {
            Scalar::Null => "null".into(),
            Scalar::Bool(b) => format!("boolean {b}"),
            Scalar::Int(i) => format!("number {i}"),
            Scalar::UInt(u) => format!("number {u}"),
            Scalar::Float(f) => format!("number {f}"),
            Scalar::Str(s) if s.len() > 40 => format!("a string of {} bytes", s.len()),
            Scalar::Str(s) => format!("string {s:?}"),
            Scalar::Array => "an array".into(),
            Scalar::Object => "an object".into(),
        }
    }
}

impl fmt::Display for Scalar<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::UInt(u) => write!(f, "{u}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Str(s) => write!(f, "{s:?}"),
            other => f.write_str(&other.describe()),
        }
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::UInt(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Object)
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// An object key, borrowed from the payload unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Scalar::deserialize(deserializer)? {
            Scalar::Str(s) => Ok(Key(s)),
            _ => Err(serde::de::Error::custom("object keys must be strings")),
        }
    }
}

/// The names of the fields a profile reads; a field's slot is its position here.
#[derive(Debug, Clone, Default)]
pub struct FieldTable {
    names: Vec<String>,
}

impl FieldTable {
    /// The slot of `name`, adding it if new.
    pub fn slot_for(&mut self, name: &str) -> usize {
        match self.slot(name) {
            Some(slot) => slot,
            None => {
                self.names.push(name.to_string());
                self.names.len() - 1
            }
        }
    }

    pub fn slot(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// One parsed message: the named fields of an object by slot, or what was there instead.
#[derive(Debug, PartialEq)]
pub enum Message<'a> {
    Object(Vec<Option<Scalar<'a>>>),
    NotAnObject(Scalar<'a>),
}

/// Parses `payload` as one JSON value, keeping only the fields in `table`.
pub fn parse_message<'a>(payload: &'a [u8], table: &FieldTable) -> Result<Message<'a>, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(payload);
    let message = MessageSeed { table }.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(message)
}

struct MessageSeed<'t> {
    table: &'t FieldTable,
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_> {
    type Value = Message<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MessageSeed<'_> {
    type Value = Message<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut slots = vec![None; self.table.len()];
        while let Some(Key(key)) = map.next_key()? {
            match self.table.slot(&key) {
                Some(slot) => slots[slot] = Some(map.next_value::<Scalar<'de>>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Message::Object(slots))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        ScalarVisitor.visit_seq(seq).map(Message::NotAnObject)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Message::NotAnObject(Scalar::Null))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Message::NotAnObject(Scalar::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Message::NotAnObject(Scalar::Int(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Message::NotAnObject(Scalar::UInt(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Message::NotAnObject(Scalar::Float(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Message::NotAnObject(Scalar::Str(Cow::Owned(v.to_string()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(names: &[&str]) -> FieldTable {
        let mut table = FieldTable::default();
        for name in names {
            table.slot_for(name);
        }
        table
    }

    #[test]
    fn keeps_named_fields_and_skips_the_rest() {
        let t = table(&["id", "speed", "tags"]);
        let message =
            parse_message(br#"{"speed": 4.5, "junk": {"deep": [1, {"x": 2}]}, "id": "V1", "tags": [1]}"#, &t).unwrap();
        let Message::Object(slots) = message else { panic!("not an object") };
        assert_eq!(slots[0], Some(Scalar::Str(Cow::Borrowed("V1"))));
        assert_eq!(slots[1], Some(Scalar::Float(4.5)));
        assert_eq!(slots[2], Some(Scalar::Array));
    }

    #[test]
    fn escaped_keys_and_values_still_match() {
        let t = table(&["id"]);
        let Message::Object(slots) = parse_message(br#"{"\u0069d": "a\"b"}"#, &t).unwrap() else { panic!() };
        assert_eq!(slots[0], Some(Scalar::Str(Cow::Owned("a\"b".into()))));
    }

    #[test]
    fn non_objects_and_garbage_are_told_apart() {
        let t = table(&["id"]);
        assert_eq!(parse_message(b"[1, 2]", &t).unwrap(), Message::NotAnObject(Scalar::Array));
        assert_eq!(parse_message(b" 42 ", &t).unwrap(), Message::NotAnObject(Scalar::UInt(42)));
        assert!(parse_message(b"{\"id\": 1} trailing", &t).is_err());
        assert!(parse_message(b"{\"id\": NaN}", &t).is_err());
        assert!(parse_message(b"{\"id\": 1e999}", &t).is_err());
    }
}
