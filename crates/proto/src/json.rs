//! The switchboard JSON mapping.
//!
//! Proto3 canonical JSON (as produced by the pbjson-generated serde implementations in
//! [`crate::v1`]: lowerCamelCase names, 64-bit integers as strings, defaults omitted) with one
//! deviation so JSON clients exchange application payloads as natural JSON:
//!
//! * payload fields — every `bytes` field of the package, which the build script guarantees is
//!   named `data` or `conn_info` — carry **embedded raw JSON**: the payload bytes are the UTF-8
//!   text of the JSON value, written verbatim (`"data":{"any":"json"}`);
//! * a payload that is not valid JSON is written as canonical base64 under the key prefixed
//!   with `b64` (`"b64data":"AAEC"`, `"b64connInfo":"..."`); readers accept that form too, so
//!   JSON clients can send binary.
//!
//! Values of `tags` maps (the only `map<string, string>` fields, also build-checked) are never
//! treated as payloads. Unknown fields are ignored, as in binary protobuf.

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Payload field names as they appear in JSON (canonical and original proto spelling).
const PAYLOAD_KEYS: [&str; 3] = ["data", "connInfo", "conn_info"];
/// Prefix of the base64 (binary) form of a payload key.
const B64_PREFIX: &str = "b64";
/// Keys whose values are string maps and must be copied untouched.
const OPAQUE_KEYS: [&str; 1] = ["tags"];
/// Deepest object/array nesting accepted outside payloads (the schema needs < 10).
const MAX_DEPTH: usize = 32;

/// Errors of the JSON mapping.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// Not JSON, or JSON that does not match the message schema.
    #[error("invalid JSON message: {0}")]
    Invalid(#[from] serde_json::Error),
    /// Both `data` and `b64data` (or the `connInfo` pair) were given.
    #[error("both {0} and its b64 form given")]
    DuplicatePayload(&'static str),
    /// A `b64…` payload field was not a string.
    #[error("b64 payload field must be a base64 string")]
    B64NotString,
    /// Object/array nesting deeper than the schema allows.
    #[error("JSON nested too deeply")]
    TooDeep,
}

/// Serializes a switchboard message to the JSON mapping.
pub fn to_string<T: Serialize>(msg: &T) -> Result<String, JsonError> {
    let value = serde_json::to_value(msg)?;
    let mut out = String::with_capacity(128);
    write_value(&mut out, &value)?;
    Ok(out)
}

/// Serializes a switchboard message to the JSON mapping, as bytes.
pub fn to_vec<T: Serialize>(msg: &T) -> Result<Vec<u8>, JsonError> {
    to_string(msg).map(String::into_bytes)
}

/// Parses a switchboard message from the JSON mapping.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, JsonError> {
    let raw: &RawValue = serde_json::from_str(text)?;
    let value = to_canonical(raw, 0)?;
    Ok(serde_json::from_value(value)?)
}

/// Parses a switchboard message from the JSON mapping, from bytes (must be UTF-8).
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonError> {
    let raw: &RawValue = serde_json::from_slice(bytes)?;
    let value = to_canonical(raw, 0)?;
    Ok(serde_json::from_value(value)?)
}

/// Rewrites mapping JSON into canonical JSON: payload values become base64 strings of their
/// raw text, `b64…` keys lose the prefix.
fn to_canonical(raw: &RawValue, depth: usize) -> Result<Value, JsonError> {
    if depth > MAX_DEPTH {
        return Err(JsonError::TooDeep);
    }
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'{') => {
            let fields: Vec<(String, &RawValue)> = serde_json::from_str::<RawObject<'_>>(text)?.0;
            let mut map = Map::with_capacity(fields.len());
            for (key, value) in fields {
                if let Some(name) = PAYLOAD_KEYS.iter().find(|k| **k == key) {
                    let encoded = base64::engine::general_purpose::STANDARD.encode(value.get());
                    if map.insert(key, Value::String(encoded)).is_some() {
                        return Err(JsonError::DuplicatePayload(name));
                    }
                } else if let Some(name) = key
                    .strip_prefix(B64_PREFIX)
                    .and_then(|rest| PAYLOAD_KEYS.iter().find(|k| **k == rest))
                {
                    let Value::String(b64) = serde_json::from_str::<Value>(value.get())? else {
                        return Err(JsonError::B64NotString);
                    };
                    if map.insert((*name).to_owned(), Value::String(b64)).is_some() {
                        return Err(JsonError::DuplicatePayload(name));
                    }
                } else if OPAQUE_KEYS.contains(&key.as_str()) {
                    map.insert(key, serde_json::from_str(value.get())?);
                } else {
                    let converted = to_canonical(value, depth + 1)?;
                    map.insert(key, converted);
                }
            }
            Ok(Value::Object(map))
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text)?;
            items
                .into_iter()
                .map(|v| to_canonical(v, depth + 1))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
        }
        _ => Ok(serde_json::from_str(text)?),
    }
}

/// A JSON object read as its fields in order, values left raw.
struct RawObject<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for RawObject<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = RawObject<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, &'de RawValue>()? {
                    fields.push((k, v));
                }
                Ok(RawObject(fields))
            }
        }
        d.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

/// Writes canonical JSON `value` in the mapping: payload strings (base64) become raw JSON.
fn write_value(out: &mut String, value: &Value) -> Result<(), JsonError> {
    match value {
        Value::Object(map) => {
            out.push('{');
            for (i, (key, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                match (PAYLOAD_KEYS.contains(&key.as_str()), v) {
                    (true, Value::String(b64)) => write_payload(out, key, b64)?,
                    _ if OPAQUE_KEYS.contains(&key.as_str()) => {
                        write_scalar(out, key)?;
                        out.push(':');
                        write_scalar(out, v)?;
                    }
                    _ => {
                        write_scalar(out, key)?;
                        out.push(':');
                        write_value(out, v)?;
                    }
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, v)?;
            }
            out.push(']');
        }
        other => write_scalar(out, other)?,
    }
    Ok(())
}

/// Writes one payload field: raw JSON if the decoded bytes are JSON, else the `b64` form.
fn write_payload(out: &mut String, key: &str, b64: &str) -> Result<(), JsonError> {
    let decoded = base64::engine::general_purpose::STANDARD.decode(b64).ok();
    let json = decoded
        .as_deref()
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
        .and_then(|text| serde_json::from_str::<&RawValue>(text).ok());
    match json {
        Some(raw) => {
            write_scalar(out, key)?;
            out.push(':');
            out.push_str(raw.get());
        }
        None => {
            let mut prefixed = String::with_capacity(B64_PREFIX.len() + key.len());
            prefixed.push_str(B64_PREFIX);
            prefixed.push_str(key);
            write_scalar(out, &prefixed)?;
            out.push(':');
            write_scalar(out, b64)?;
        }
    }
    Ok(())
}

fn write_scalar<T: Serialize + ?Sized>(out: &mut String, v: &T) -> Result<(), JsonError> {
    out.push_str(&serde_json::to_string(v)?);
    Ok(())
}
