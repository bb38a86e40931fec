//! The body cases every framework's JSON extractor must answer like the
//! SDK's routes: one table, asserted by each integration's unit tests.

use serde::Deserialize;

/// The body the cases are read into: a required `name`, an optional
/// numeric `size`, nothing else.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Required.
    pub name: String,
    /// Optional, a number.
    pub size: Option<u32>,
}

/// One request body and the answer it must get.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// The `Content-Type` sent.
    pub content_type: &'static str,
    /// The body sent.
    pub body: &'static str,
    /// The status expected.
    pub status: u16,
    /// The problem `type` suffix expected, for a refusal.
    pub problem: Option<&'static str>,
    /// The field the `422` must name.
    pub field: Option<&'static str>,
}

const fn case(
    content_type: &'static str,
    body: &'static str,
    status: u16,
    problem: Option<&'static str>,
    field: Option<&'static str>,
) -> Case {
    Case {
        content_type,
        body,
        status,
        problem,
        field,
    }
}

const JSON: &str = "application/json";

/// Accepted, refused for its media type, malformed, trailing garbage, a
/// missing field, a field of the wrong type, an unknown field.
pub const CASES: &[Case] = &[
    case(JSON, r#"{"name":"a"}"#, 200, None, None),
    case(
        "application/json; charset=utf-8",
        r#"{"name":"a"}"#,
        200,
        None,
        None,
    ),
    case(
        "application/merge-patch+json",
        r#"{"name":"a"}"#,
        200,
        None,
        None,
    ),
    case(
        "text/plain",
        r#"{"name":"a"}"#,
        415,
        Some("unsupported-media-type"),
        None,
    ),
    case(JSON, r#"{"name":"#, 400, Some("bad-request"), None),
    case(JSON, r#"{"name":"a"} x"#, 400, Some("bad-request"), None),
    case(JSON, r#"{"size":1}"#, 422, Some("validation"), Some("body")),
    case(
        JSON,
        r#"{"name":"a","size":"x"}"#,
        422,
        Some("validation"),
        Some("size"),
    ),
    case(
        JSON,
        r#"{"name":"a","admin":true}"#,
        422,
        Some("validation"),
        Some("admin"),
    ),
];
