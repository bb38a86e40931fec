//! Validated text and JSON values shared by the record types.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ValidationError;

/// Trims `raw` and checks it is 1..=`max` characters without control characters.
pub(crate) fn bounded_text(
    field: &'static str,
    raw: &str,
    max: usize,
) -> Result<String, ValidationError> {
    let trimmed = raw.trim();
    let len = trimmed.chars().count();
    if len == 0 || len > max {
        return Err(ValidationError::TextLength { field, max, len });
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ValidationError::ControlCharacter { field });
    }
    Ok(trimmed.to_owned())
}

/// Free-form JSON object attached to a tenant or an audit event.
///
/// At most [`Metadata::MAX_BYTES`] once encoded, and free of NUL characters
/// (which Postgres cannot store), so every backend accepts the same values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub struct Metadata(Map<String, Value>);

impl Metadata {
    /// Largest encoded size accepted, in bytes (16 KiB).
    pub const MAX_BYTES: usize = 16 * 1024;

    /// An empty object.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Validates a JSON value as metadata.
    pub fn new(value: Value) -> Result<Self, ValidationError> {
        const FIELD: &str = "metadata";
        let Value::Object(map) = value else {
            return Err(ValidationError::MetadataNotObject { field: FIELD });
        };
        let len = serde_json::to_vec(&map).map_or(usize::MAX, |json| json.len());
        if len > Self::MAX_BYTES {
            return Err(ValidationError::MetadataTooLarge {
                field: FIELD,
                max: Self::MAX_BYTES,
                len,
            });
        }
        if map
            .iter()
            .any(|(key, value)| key.contains('\0') || contains_nul(value))
        {
            return Err(ValidationError::MetadataNul { field: FIELD });
        }
        Ok(Self(map))
    }

    /// The JSON object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// Whether the object has no keys.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Canonical JSON text: keys sorted, no insignificant whitespace. Used for
    /// audit hashing, so it must not change between versions.
    pub fn canonical_json(&self) -> String {
        // serde_json's Map is ordered by key unless `preserve_order` is on;
        // sort explicitly so a dependency enabling that feature changes nothing.
        fn canonical(value: &Value) -> Value {
            match value {
                Value::Object(map) => {
                    let mut entries: Vec<_> = map.iter().collect();
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                    Value::Object(
                        entries
                            .into_iter()
                            .map(|(k, v)| (k.clone(), canonical(v)))
                            .collect(),
                    )
                }
                Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
                other => other.clone(),
            }
        }
        canonical(&Value::Object(self.0.clone())).to_string()
    }
}

fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map
            .iter()
            .any(|(key, value)| key.contains('\0') || contains_nul(value)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

impl TryFrom<Value> for Metadata {
    type Error = ValidationError;

    fn try_from(value: Value) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Metadata> for Value {
    fn from(metadata: Metadata) -> Self {
        Value::Object(metadata.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(bounded_text("name", "  Acme  ", 200).unwrap(), "Acme");
        assert_eq!(
            bounded_text("name", "   ", 200).unwrap_err().to_string(),
            "name must be 1 to 200 characters after trimming, got 0"
        );
        assert_eq!(
            bounded_text("name", &"é".repeat(201), 200).unwrap_err(),
            ValidationError::TextLength {
                field: "name",
                max: 200,
                len: 201
            }
        );
        assert_eq!(
            bounded_text("name", &"é".repeat(200), 200).unwrap().len(),
            400
        );
        assert_eq!(
            bounded_text("name", "a\u{0}b", 200)
                .unwrap_err()
                .to_string(),
            "name may not contain control characters"
        );
    }

    #[test]
    fn metadata_must_be_an_object() {
        let err = Metadata::new(json!([1, 2])).unwrap_err();
        assert_eq!(err.to_string(), "metadata must be a JSON object");
    }

    #[test]
    fn metadata_is_capped_at_16_kib() {
        let ok = Metadata::new(json!({ "k": "x".repeat(16 * 1024 - 10) })).unwrap();
        assert!(!ok.is_empty());
        let err = Metadata::new(json!({ "k": "x".repeat(16 * 1024) })).unwrap_err();
        assert!(matches!(
            err,
            ValidationError::MetadataTooLarge { max: 16384, .. }
        ));
        assert!(
            err.to_string()
                .starts_with("metadata must be at most 16384 bytes")
        );
    }

    #[test]
    fn metadata_rejects_nul_anywhere() {
        for bad in [
            json!({ "a\u{0}": 1 }),
            json!({ "a": "x\u{0}" }),
            json!({ "a": [{ "b": "\u{0}" }] }),
        ] {
            assert_eq!(
                Metadata::new(bad).unwrap_err(),
                ValidationError::MetadataNul { field: "metadata" }
            );
        }
    }

    #[test]
    fn canonical_json_sorts_keys_recursively() {
        let m = Metadata::new(json!({ "b": 1, "a": { "d": [ { "z": 1, "y": 2 } ], "c": null } }))
            .unwrap();
        assert_eq!(
            m.canonical_json(),
            r#"{"a":{"c":null,"d":[{"y":2,"z":1}]},"b":1}"#
        );
    }
}
