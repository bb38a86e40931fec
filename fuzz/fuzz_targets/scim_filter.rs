//! The SCIM filter and PATCH path parsers must never panic, whatever the
//! input; whatever parses must print to text that parses back to the same
//! tree, and evaluate against a resource without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenancy_scim::UserCaseRules;
use tenancy_scim::filter::{Filter, PatchPath};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(path) = PatchPath::parse(text) {
        assert_eq!(PatchPath::parse(&path.to_string()).ok(), Some(path));
    }
    let Ok(filter) = Filter::parse(text) else {
        return;
    };
    assert_eq!(Filter::parse(&filter.to_string()).ok(), Some(filter.clone()));
    let user = serde_json::json!({
        "id": "1",
        "userName": "Ada@example.com",
        "active": true,
        "name": { "givenName": "Ada" },
        "emails": [{ "value": "ada@example.com", "type": "work", "primary": true }],
        "meta": { "created": "2026-01-01T00:00:00Z" },
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": { "department": "R&D" },
    });
    let _ = filter.matches(&user, &UserCaseRules);
});
