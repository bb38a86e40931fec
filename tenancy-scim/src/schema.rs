//! The User schema this service provider supports (RFC 7643 §4.1, and the
//! enterprise extension of §4.3), as one table: it answers `/Schemas`,
//! cleans what clients send, and gives the filter its case rules.

use serde_json::{Map, Value, json};

use crate::error::{ScimError, ScimType};
use crate::filter::{AttrPath, CaseRules, get_ci};

/// The core User schema URI.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// The core Group schema URI.
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// The enterprise User extension URI.
pub const ENTERPRISE_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// The list response message URI.
pub const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// The PATCH request message URI.
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// The error message URI.
pub const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    String,
    Boolean,
    Complex,
    Reference,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mutability {
    ReadOnly,
    ReadWrite,
}

/// One attribute of the schema.
#[derive(Debug)]
pub(crate) struct Attribute {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) multi: bool,
    pub(crate) required: bool,
    pub(crate) case_exact: bool,
    pub(crate) mutability: Mutability,
    pub(crate) unique: bool,
    pub(crate) description: &'static str,
    pub(crate) sub: &'static [Attribute],
}

const fn attr(name: &'static str, kind: Kind, description: &'static str) -> Attribute {
    Attribute {
        name,
        kind,
        multi: false,
        required: false,
        case_exact: false,
        mutability: Mutability::ReadWrite,
        unique: false,
        description,
        sub: &[],
    }
}

const fn string(name: &'static str, description: &'static str) -> Attribute {
    attr(name, Kind::String, description)
}

const fn complex(
    name: &'static str,
    multi: bool,
    description: &'static str,
    sub: &'static [Attribute],
) -> Attribute {
    Attribute {
        multi,
        sub,
        ..attr(name, Kind::Complex, description)
    }
}

const TYPED_SUB: [Attribute; 4] = [
    string("value", "the value"),
    string("display", "a human-readable name"),
    string("type", "a label: work, home, other"),
    attr(
        "primary",
        Kind::Boolean,
        "whether this is the preferred value",
    ),
];

const META: Attribute = Attribute {
    mutability: Mutability::ReadOnly,
    ..complex(
        "meta",
        false,
        "resource metadata",
        &[
            string("resourceType", "the resource type"),
            string("created", "when the resource was created"),
            string("lastModified", "when the resource last changed"),
            string("location", "the resource's URI"),
            Attribute {
                case_exact: true,
                ..string("version", "the resource's entity tag")
            },
        ],
    )
};

/// The core User attributes supported, `id` first.
pub(crate) static USER_ATTRIBUTES: [Attribute; 17] = [
    Attribute {
        case_exact: true,
        mutability: Mutability::ReadOnly,
        unique: true,
        ..string(
            "id",
            "the service provider's identifier of the user in this tenant",
        )
    },
    Attribute {
        case_exact: true,
        ..string(
            "externalId",
            "the identity provider's identifier of the user",
        )
    },
    Attribute {
        required: true,
        unique: true,
        ..string(
            "userName",
            "unique identifier within the tenant, typically the sign-in email",
        )
    },
    complex(
        "name",
        false,
        "the components of the user's name",
        &[
            string("formatted", "the full name"),
            string("familyName", "the family name"),
            string("givenName", "the given name"),
            string("middleName", "the middle name"),
            string("honorificPrefix", "the honorific prefix"),
            string("honorificSuffix", "the honorific suffix"),
        ],
    ),
    string("displayName", "the name to display"),
    string("nickName", "the casual name"),
    attr("profileUrl", Kind::Reference, "a URL of the user's profile"),
    string("title", "the user's title"),
    string("userType", "the relationship to the organization"),
    string(
        "preferredLanguage",
        "the preferred language (RFC 7231 Accept-Language)",
    ),
    string("locale", "the default location"),
    string("timezone", "the time zone (IANA name)"),
    attr(
        "active",
        Kind::Boolean,
        "whether the user may use the tenant; false suspends or removes the membership",
    ),
    complex(
        "emails",
        true,
        "email addresses; the primary (or first work) one links the user's account",
        &TYPED_SUB,
    ),
    complex("phoneNumbers", true, "phone numbers", &TYPED_SUB),
    complex(
        "addresses",
        true,
        "physical addresses",
        &[
            string("formatted", "the full address"),
            string("streetAddress", "the street"),
            string("locality", "the city"),
            string("region", "the state or region"),
            string("postalCode", "the postal code"),
            string("country", "the country (ISO 3166-1 alpha-2)"),
            string("type", "a label: work, home, other"),
            attr(
                "primary",
                Kind::Boolean,
                "whether this is the preferred address",
            ),
        ],
    ),
    META,
];

/// The Group attributes (RFC 7643 §4.2), `id` first.
pub(crate) static GROUP_ATTRIBUTES: [Attribute; 5] = [
    Attribute {
        case_exact: true,
        mutability: Mutability::ReadOnly,
        unique: true,
        ..string(
            "id",
            "the service provider's identifier of the group in this tenant",
        )
    },
    Attribute {
        case_exact: true,
        ..string(
            "externalId",
            "the identity provider's identifier of the group",
        )
    },
    Attribute {
        required: true,
        unique: true,
        ..string(
            "displayName",
            "the group's name, unique in the tenant; the tenant's role mapping names groups by it",
        )
    },
    complex(
        "members",
        true,
        "the group's members: users of this tenant",
        &[
            Attribute {
                case_exact: true,
                ..string("value", "the member's User id")
            },
            attr("$ref", Kind::Reference, "the member's User URI"),
            Attribute {
                mutability: Mutability::ReadOnly,
                ..string("display", "the member's name")
            },
            string("type", "the member's resource type: User"),
        ],
    ),
    META,
];

/// The Group schema's case rules for filters.
#[derive(Debug, Clone, Copy, Default)]
pub struct GroupCaseRules;

impl CaseRules for GroupCaseRules {
    fn case_exact(&self, path: &AttrPath) -> bool {
        match resolve_group(path) {
            Some((_, Some(sub))) => sub.case_exact,
            Some((top, None)) => top.case_exact,
            None => false,
        }
    }
}

/// The Group attribute (and sub-attribute) a path names, if any.
fn resolve_group(path: &AttrPath) -> Option<(&'static Attribute, Option<&'static Attribute>)> {
    if path
        .uri
        .as_deref()
        .is_some_and(|uri| !uri.eq_ignore_ascii_case(GROUP_SCHEMA))
    {
        return None;
    }
    let top = find(&GROUP_ATTRIBUTES, &path.name)?;
    match &path.sub {
        None => Some((top, None)),
        Some(sub) => find(top.sub, sub).map(|sub| (top, Some(sub))),
    }
}

/// The enterprise extension attributes supported.
pub(crate) static ENTERPRISE_ATTRIBUTES: [Attribute; 6] = [
    string("employeeNumber", "the employee number"),
    string("costCenter", "the cost center"),
    string("organization", "the organization"),
    string("division", "the division"),
    string("department", "the department"),
    complex(
        "manager",
        false,
        "the user's manager",
        &[
            string("value", "the manager's id"),
            string("displayName", "the manager's name"),
        ],
    ),
];

pub(crate) fn find<'a>(attributes: &'a [Attribute], name: &str) -> Option<&'a Attribute> {
    attributes
        .iter()
        .find(|a| a.name.eq_ignore_ascii_case(name))
}

/// The schema's attributes named by `uri` (`None`: the core schema).
pub(crate) fn attributes_of(uri: Option<&str>) -> Option<&'static [Attribute]> {
    match uri {
        None => Some(&USER_ATTRIBUTES),
        Some(uri) if uri.eq_ignore_ascii_case(USER_SCHEMA) => Some(&USER_ATTRIBUTES),
        Some(uri) if uri.eq_ignore_ascii_case(ENTERPRISE_SCHEMA) => Some(&ENTERPRISE_ATTRIBUTES),
        Some(_) => None,
    }
}

/// The attribute (and sub-attribute) a path names, if the schema has it.
pub(crate) fn resolve(path: &AttrPath) -> Option<(&'static Attribute, Option<&'static Attribute>)> {
    let attributes = attributes_of(path.uri.as_deref())?;
    let top = find(attributes, &path.name)?;
    match &path.sub {
        None => Some((top, None)),
        Some(sub) => find(top.sub, sub).map(|sub| (top, Some(sub))),
    }
}

/// Refuses a filter naming an attribute the User schema does not have
/// (RFC 7644 §3.4.2.2: `invalidFilter`), rather than matching nothing.
pub(crate) fn check_user_filter(filter: &crate::filter::Filter) -> Result<(), ScimError> {
    check_filter(filter, "Users", |path| resolve(path).is_some())
}

/// As [`check_user_filter`], for the Group schema.
pub(crate) fn check_group_filter(filter: &crate::filter::Filter) -> Result<(), ScimError> {
    check_filter(filter, "Groups", |path| resolve_group(path).is_some())
}

fn check_filter(
    filter: &crate::filter::Filter,
    resources: &str,
    known: impl Fn(&AttrPath) -> bool,
) -> Result<(), ScimError> {
    match filter
        .attribute_paths()
        .into_iter()
        .find(|path| !known(path))
    {
        Some(unknown) => Err(ScimError::bad_request(
            ScimType::InvalidFilter,
            format!("the filter names `{unknown}`, which {resources} do not have"),
        )),
        None => Ok(()),
    }
}

/// The User schema's case rules for filters.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserCaseRules;

impl CaseRules for UserCaseRules {
    fn case_exact(&self, path: &AttrPath) -> bool {
        match resolve(path) {
            Some((_, Some(sub))) => sub.case_exact,
            Some((top, None)) => top.case_exact,
            None => false,
        }
    }
}

fn invalid(detail: String) -> ScimError {
    ScimError::bad_request(ScimType::InvalidValue, detail)
}

/// Coerces `value` to the attribute's type. Booleans sent as the strings
/// `"True"`/`"False"` (as some identity providers do) are accepted.
fn clean_single(attribute: &Attribute, value: &Value, at: &str) -> Result<Value, ScimError> {
    match (attribute.kind, value) {
        (_, Value::Null) => Ok(Value::Null),
        (Kind::String | Kind::Reference, Value::String(_)) => Ok(value.clone()),
        (Kind::Boolean, Value::Bool(_)) => Ok(value.clone()),
        (Kind::Boolean, Value::String(text)) if text.eq_ignore_ascii_case("true") => {
            Ok(Value::Bool(true))
        }
        (Kind::Boolean, Value::String(text)) if text.eq_ignore_ascii_case("false") => {
            Ok(Value::Bool(false))
        }
        // A bare id where a complex `{value}` belongs (a manager, as some
        // identity providers send it).
        (Kind::Complex, Value::String(_)) if find(attribute.sub, "value").is_some() => {
            Ok(serde_json::json!({ "value": value }))
        }
        (Kind::Complex, Value::Object(object)) => {
            let mut out = Map::new();
            for (key, value) in object {
                let Some(sub) = find(attribute.sub, key) else {
                    continue;
                };
                let cleaned = clean_single(sub, value, &format!("{at}.{}", sub.name))?;
                if !cleaned.is_null() {
                    out.insert(sub.name.to_owned(), cleaned);
                }
            }
            Ok(Value::Object(out))
        }
        _ => Err(invalid(format!("`{at}` has the wrong type"))),
    }
}

pub(crate) fn clean_value(attribute: &Attribute, value: &Value) -> Result<Value, ScimError> {
    if attribute.multi {
        let items = match value {
            Value::Null => return Ok(Value::Null),
            Value::Array(items) => items.clone(),
            single => vec![single.clone()],
        };
        let mut out = Vec::with_capacity(items.len());
        for item in &items {
            let cleaned = clean_single(attribute, item, attribute.name)?;
            if !cleaned.is_null() {
                out.push(cleaned);
            }
        }
        if out
            .iter()
            .filter(|item| get_ci(item, "primary") == Some(&Value::Bool(true)))
            .count()
            > 1
        {
            return Err(invalid(format!(
                "`{}` has more than one primary value",
                attribute.name
            )));
        }
        Ok(Value::Array(out))
    } else {
        clean_single(attribute, value, attribute.name)
    }
}

/// The writable attributes of `input` that the schema knows, typed, with
/// canonical names: read-only ones (`id`, `meta`) and unknown ones are
/// dropped (RFC 7643 §2.2, RFC 7644 §3.3). The enterprise extension stays
/// under its URI.
pub(crate) fn clean_user(input: &Value) -> Result<Map<String, Value>, ScimError> {
    let Value::Object(object) = input else {
        return Err(ScimError::bad_request(
            ScimType::InvalidSyntax,
            "a User must be a JSON object",
        ));
    };
    let mut out = Map::new();
    for (key, value) in object {
        if key.eq_ignore_ascii_case(ENTERPRISE_SCHEMA) {
            let Value::Object(extension) = value else {
                return Err(invalid(format!("`{ENTERPRISE_SCHEMA}` must be an object")));
            };
            let mut cleaned = Map::new();
            for (key, value) in extension {
                if let Some(attribute) = find(&ENTERPRISE_ATTRIBUTES, key) {
                    let value = clean_value(attribute, value)?;
                    if !value.is_null() {
                        cleaned.insert(attribute.name.to_owned(), value);
                    }
                }
            }
            if !cleaned.is_empty() {
                out.insert(ENTERPRISE_SCHEMA.to_owned(), Value::Object(cleaned));
            }
            continue;
        }
        let Some(attribute) = find(&USER_ATTRIBUTES, key) else {
            continue;
        };
        if attribute.mutability == Mutability::ReadOnly {
            continue;
        }
        let value = clean_value(attribute, value)?;
        if !value.is_null() && value != json!([]) {
            out.insert(attribute.name.to_owned(), value);
        }
    }
    Ok(out)
}

fn describe(attribute: &Attribute) -> Value {
    let kind = match attribute.kind {
        Kind::String => "string",
        Kind::Boolean => "boolean",
        Kind::Complex => "complex",
        Kind::Reference => "reference",
    };
    let mut out = json!({
        "name": attribute.name,
        "type": kind,
        "multiValued": attribute.multi,
        "description": attribute.description,
        "required": attribute.required,
        "caseExact": attribute.case_exact,
        "mutability": match attribute.mutability {
            Mutability::ReadOnly => "readOnly",
            Mutability::ReadWrite => "readWrite",
        },
        "returned": if attribute.name == "id" { "always" } else { "default" },
        "uniqueness": if attribute.unique { "server" } else { "none" },
    });
    if attribute.kind == Kind::Reference
        && let Some(object) = out.as_object_mut()
    {
        // A group member's `$ref` points at a User; `profileUrl` anywhere.
        let types = if attribute.name == "$ref" {
            json!(["User"])
        } else {
            json!(["external"])
        };
        object.insert("referenceTypes".into(), types);
    }
    if !attribute.sub.is_empty()
        && let Some(object) = out.as_object_mut()
    {
        object.insert(
            "subAttributes".into(),
            Value::Array(attribute.sub.iter().map(describe).collect()),
        );
    }
    out
}

/// The `/Schemas` resources: the User schema, the enterprise extension and
/// the Group schema,
/// listing exactly the attributes kept.
pub(crate) fn schemas(base: &str) -> Vec<Value> {
    let schema = |id: &str, name: &str, description: &str, attributes: &[Attribute]| {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
            "id": id,
            "name": name,
            "description": description,
            "attributes": attributes.iter().filter(|a| a.name != "meta").map(describe).collect::<Vec<_>>(),
            "meta": { "resourceType": "Schema", "location": format!("{base}/Schemas/{id}") },
        })
    };
    vec![
        schema(
            USER_SCHEMA,
            "User",
            "a member of the tenant",
            &USER_ATTRIBUTES,
        ),
        schema(
            ENTERPRISE_SCHEMA,
            "EnterpriseUser",
            "enterprise attributes of a member",
            &ENTERPRISE_ATTRIBUTES,
        ),
        schema(
            GROUP_SCHEMA,
            "Group",
            "a group of the tenant's members; mapped groups grant tenant roles",
            &GROUP_ATTRIBUTES,
        ),
    ]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn cleaning_keeps_known_writable_attributes_typed() {
        let cleaned = clean_user(&json!({
            "schemas": [USER_SCHEMA],
            "id": "forged",
            "meta": {"version": "x"},
            "USERNAME": "ada@example.com",
            "active": "False",
            "password": "never kept",
            "emails": {"value": "ada@example.com", "primary": true},
            ENTERPRISE_SCHEMA: {"department": "R&D", "unknown": 1},
        }))
        .unwrap();
        assert_eq!(
            Value::Object(cleaned),
            json!({
                "userName": "ada@example.com",
                "active": false,
                "emails": [{"value": "ada@example.com", "primary": true}],
                ENTERPRISE_SCHEMA: {"department": "R&D"},
            })
        );
        for bad in [
            json!({"userName": 5}),
            json!({"active": "maybe"}),
            json!({"emails": [{"value": "a", "primary": true}, {"value": "b", "primary": true}]}),
            json!({"name": "Ada"}),
        ] {
            let error = clean_user(&bad).unwrap_err();
            assert_eq!(error.scim_type, Some(ScimType::InvalidValue), "{bad}");
        }
    }

    #[test]
    fn case_rules_follow_the_schema() {
        let rules = UserCaseRules;
        assert!(rules.case_exact(&AttrPath::new("id")));
        assert!(rules.case_exact(&AttrPath::new("externalId")));
        assert!(!rules.case_exact(&AttrPath::new("userName")));
        let version = AttrPath {
            uri: None,
            name: "meta".into(),
            sub: Some("version".into()),
        };
        assert!(rules.case_exact(&version));
    }
}
