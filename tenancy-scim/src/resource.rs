//! A User record as a SCIM resource: rendering with `meta` (shared with
//! Groups, like the ETags, the projection and sorting), the
//! `attributes`/`excludedAttributes` projection, sorting, and PATCH
//! (RFC 7644 §3.5.2) over the rendered JSON.

use std::cmp::Ordering;

use serde_json::{Map, Value, json};
use time::format_description::well_known::Rfc3339;

use crate::error::{ScimError, ScimType};
use crate::filter::CaseRules;
use crate::filter::{AttrPath, CompValue, CompareOp, Filter, PatchPath, get_ci};
use crate::schema::{
    self, Attribute, ENTERPRISE_SCHEMA, Kind, Mutability, USER_SCHEMA, UserCaseRules,
};
use crate::store::UserRecord;

/// A stored resource whose version is its entity tag.
pub(crate) trait Versioned {
    /// The version, bumped on every change.
    fn version(&self) -> i64;
}

impl Versioned for UserRecord {
    fn version(&self) -> i64 {
        self.version
    }
}

impl Versioned for crate::store::GroupRecord {
    fn version(&self) -> i64 {
        self.version
    }
}

/// The weak entity tag of a record's version.
/// The longest `externalId` kept, on Users and Groups.
pub(crate) const MAX_EXTERNAL_ID: usize = 256;

/// Refuses (`400 invalidValue`) a name or id holding a control character
/// (which Postgres cannot store, or which no identity provider means), or
/// longer than `max` characters.
pub(crate) fn check_text(name: &str, text: &str, max: usize) -> Result<(), ScimError> {
    if text.chars().any(char::is_control) {
        return Err(ScimError::bad_request(
            ScimType::InvalidValue,
            format!("`{name}` must not contain control characters"),
        ));
    }
    if text.chars().count() > max {
        return Err(ScimError::bad_request(
            ScimType::InvalidValue,
            format!("`{name}` must be at most {max} characters"),
        ));
    }
    Ok(())
}

/// Refuses (`400 invalidValue`) a NUL character anywhere in `value`'s
/// strings or keys: no store keeps one.
pub(crate) fn check_no_nul(value: &Value) -> Result<(), ScimError> {
    let refused = || {
        ScimError::bad_request(
            ScimType::InvalidValue,
            "attribute values must not contain NUL characters",
        )
    };
    match value {
        Value::String(text) if text.contains('\0') => Err(refused()),
        Value::Array(items) => items.iter().try_for_each(check_no_nul),
        Value::Object(map) => map.iter().try_for_each(|(key, item)| {
            if key.contains('\0') {
                return Err(refused());
            }
            check_no_nul(item)
        }),
        _ => Ok(()),
    }
}

pub(crate) fn etag(record: &impl Versioned) -> String {
    format!("W/\"{}\"", record.version())
}

fn timestamp(at: time::OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// A resource's `meta` (RFC 7643 §3.1).
pub(crate) fn meta(
    resource_type: &str,
    location: String,
    created: time::OffsetDateTime,
    updated: time::OffsetDateTime,
    record: &impl Versioned,
) -> Value {
    json!({
        "resourceType": resource_type,
        "created": timestamp(created),
        "lastModified": timestamp(updated),
        "location": location,
        "version": etag(record),
    })
}

/// The record as a full User resource.
pub(crate) fn render(record: &UserRecord, base: &str) -> Value {
    let mut out = Map::new();
    let mut schemas = vec![json!(USER_SCHEMA)];
    if record.attributes.contains_key(ENTERPRISE_SCHEMA) {
        schemas.push(json!(ENTERPRISE_SCHEMA));
    }
    out.insert("schemas".into(), Value::Array(schemas));
    out.insert("id".into(), json!(record.id.to_string()));
    if let Some(external) = &record.external_id {
        out.insert("externalId".into(), json!(external));
    }
    out.insert("userName".into(), json!(record.user_name));
    for (key, value) in &record.attributes {
        out.insert(key.clone(), value.clone());
    }
    out.insert("active".into(), json!(record.active));
    out.insert(
        "meta".into(),
        meta(
            "User",
            format!("{base}/Users/{}", record.id),
            record.created_at,
            record.updated_at,
            record,
        ),
    );
    Value::Object(out)
}

/// Parses a comma-separated `attributes` or `excludedAttributes` list.
pub(crate) fn attribute_list(text: &str) -> Result<Vec<AttrPath>, ScimError> {
    text.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            AttrPath::parse(part).map_err(|e| {
                ScimError::bad_request(ScimType::InvalidValue, format!("`{}`: {e}", part.trim()))
            })
        })
        .collect()
}

fn container<'a>(
    resource: &'a mut Map<String, Value>,
    path: &AttrPath,
) -> Option<&'a mut Map<String, Value>> {
    match &path.uri {
        Some(uri) if uri.eq_ignore_ascii_case(ENTERPRISE_SCHEMA) => {
            resource.get_mut(ENTERPRISE_SCHEMA)?.as_object_mut()
        }
        _ => Some(resource),
    }
}

fn key_of(map: &Map<String, Value>, name: &str) -> Option<String> {
    map.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned()
}

/// Keeps only what `attributes` names (with `schemas` and `id`, always
/// returned), or drops what `excluded` names.
pub(crate) fn project(resource: Value, attributes: &[AttrPath], excluded: &[AttrPath]) -> Value {
    let Value::Object(mut full) = resource else {
        return resource;
    };
    if !attributes.is_empty() {
        let mut out = Map::new();
        for always in ["schemas", "id"] {
            if let Some(value) = full.get(always) {
                out.insert(always.into(), value.clone());
            }
        }
        copy_named(&full, &mut out, attributes);
        return Value::Object(out);
    }
    for path in excluded {
        if path.is("id") || path.is("schemas") {
            continue;
        }
        let Some(map) = container(&mut full, path) else {
            continue;
        };
        let Some(key) = key_of(map, &path.name) else {
            continue;
        };
        match &path.sub {
            None => {
                map.remove(&key);
            }
            Some(sub) => remove_sub(map.get_mut(&key), sub),
        }
    }
    Value::Object(full)
}

fn remove_sub(value: Option<&mut Value>, sub: &str) {
    match value {
        Some(Value::Object(object)) => {
            if let Some(key) = key_of(object, sub) {
                object.remove(&key);
            }
        }
        Some(Value::Array(items)) => items
            .iter_mut()
            .for_each(|item| remove_sub(Some(item), sub)),
        _ => {}
    }
}

fn copy_named(full: &Map<String, Value>, out: &mut Map<String, Value>, attributes: &[AttrPath]) {
    for path in attributes {
        let enterprise = path
            .uri
            .as_deref()
            .is_some_and(|u| u.eq_ignore_ascii_case(ENTERPRISE_SCHEMA));
        let source = if enterprise {
            match full.get(ENTERPRISE_SCHEMA) {
                Some(Value::Object(source)) => source,
                _ => continue,
            }
        } else {
            full
        };
        let Some(key) = key_of(source, &path.name) else {
            continue;
        };
        let Some(value) = source.get(&key) else {
            continue;
        };
        let picked = match &path.sub {
            None => value.clone(),
            Some(sub) => pick_sub(value, sub),
        };
        let target = if enterprise {
            match out
                .entry(ENTERPRISE_SCHEMA)
                .or_insert_with(|| json!({}))
                .as_object_mut()
            {
                Some(target) => target,
                None => continue,
            }
        } else {
            &mut *out
        };
        match (target.get_mut(&key), picked) {
            (Some(Value::Object(existing)), Value::Object(more)) => existing.extend(more),
            (_, picked) => {
                target.insert(key, picked);
            }
        }
    }
}

fn pick_sub(value: &Value, sub: &str) -> Value {
    match value {
        Value::Object(object) => {
            let mut out = Map::new();
            if let Some(key) = key_of(object, sub)
                && let Some(v) = object.get(&key)
            {
                out.insert(key, v.clone());
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|item| pick_sub(item, sub)).collect()),
        other => other.clone(),
    }
}

/// Orders rendered resources by `path` (its first value), ascending
/// unless `descending`; resources without a value sort last.
pub(crate) fn sort(
    resources: &mut [Value],
    path: &AttrPath,
    descending: bool,
    rules: &dyn CaseRules,
) {
    let exact = rules.case_exact(path);
    let key = |resource: &Value| -> Option<Value> {
        first_value(resource, path).map(|v| match v {
            Value::String(s) if !exact => Value::String(s.to_lowercase()),
            other => other,
        })
    };
    resources.sort_by(|a, b| {
        let (a, b) = (key(a), key(b));
        let ordering = match (&a, &b) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => return Ordering::Greater,
            (Some(_), None) => return Ordering::Less,
            (Some(a), Some(b)) => compare_values(a, b),
        };
        if descending {
            ordering.reverse()
        } else {
            ordering
        }
    });
}

fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::String(a), Value::String(b)) => a.cmp(b),
        (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
        (Value::Number(a), Value::Number(b)) => a
            .as_f64()
            .partial_cmp(&b.as_f64())
            .unwrap_or(Ordering::Equal),
        _ => Ordering::Equal,
    }
}

fn first_value(resource: &Value, path: &AttrPath) -> Option<Value> {
    let base = match &path.uri {
        Some(uri) if uri.eq_ignore_ascii_case(ENTERPRISE_SCHEMA) => {
            get_ci(resource, ENTERPRISE_SCHEMA)?
        }
        _ => resource,
    };
    let top = get_ci(base, &path.name)?;
    let item = match top {
        Value::Array(items) => items
            .iter()
            .find(|i| get_ci(i, "primary") == Some(&Value::Bool(true)))
            .or_else(|| items.first())?,
        other => other,
    };
    let sub = path.sub.as_deref().or(if item.is_object() {
        Some("value")
    } else {
        None
    });
    match sub {
        Some(sub) => get_ci(item, sub).cloned(),
        None => Some(item.clone()),
    }
}

// ---------------------------------------------------------------- PATCH

/// One PATCH operation's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Add,
    Replace,
    Remove,
}

impl Op {
    pub(crate) fn parse(text: &str) -> Result<Self, ScimError> {
        // Some identity providers capitalize (`Replace`).
        match text.to_ascii_lowercase().as_str() {
            "add" => Ok(Op::Add),
            "replace" => Ok(Op::Replace),
            "remove" => Ok(Op::Remove),
            _ => Err(ScimError::bad_request(
                ScimType::InvalidSyntax,
                format!("unknown PATCH op `{text}`: expected add, replace or remove"),
            )),
        }
    }
}

fn invalid_path(detail: impl Into<String>) -> ScimError {
    ScimError::bad_request(ScimType::InvalidPath, detail)
}

fn no_target(path: &PatchPath) -> ScimError {
    ScimError::bad_request(ScimType::NoTarget, format!("`{path}` selects no value"))
}

/// The schema attribute a path's attribute names; refuses unknown and
/// read-only ones.
fn writable(path: &AttrPath) -> Result<&'static Attribute, ScimError> {
    let top = AttrPath {
        uri: path.uri.clone(),
        name: path.name.clone(),
        sub: None,
    };
    let (attribute, _) = schema::resolve(&top)
        .ok_or_else(|| invalid_path(format!("`{path}` is not an attribute of the User schema")))?;
    if attribute.mutability == Mutability::ReadOnly {
        return Err(ScimError::bad_request(
            ScimType::Mutability,
            format!("`{}` is read-only", attribute.name),
        ));
    }
    if let Some(sub) = &path.sub
        && schema::find(attribute.sub, sub).is_none()
    {
        return Err(invalid_path(format!(
            "`{path}` is not an attribute of the User schema"
        )));
    }
    Ok(attribute)
}

fn enterprise(path: &AttrPath) -> bool {
    path.uri
        .as_deref()
        .is_some_and(|u| u.eq_ignore_ascii_case(ENTERPRISE_SCHEMA))
}

/// Normalizes what an operation sets on `attribute`: a bare id for a
/// complex `{value}`, the strings `True`/`False` for booleans.
fn coerce(attribute: &Attribute, value: Value) -> Result<Value, ScimError> {
    schema::clean_value(attribute, &value)
}

/// Applies one operation to `resource` (a rendered User).
pub(crate) fn apply(
    resource: &mut Map<String, Value>,
    op: Op,
    path: Option<&str>,
    value: Option<Value>,
) -> Result<(), ScimError> {
    let Some(path) = path.filter(|p| !p.trim().is_empty()) else {
        // No path: the value is an object of attributes (add, replace).
        if op == Op::Remove {
            return Err(ScimError::bad_request(
                ScimType::NoTarget,
                "remove needs a path",
            ));
        }
        let Some(Value::Object(values)) = value else {
            return Err(ScimError::bad_request(
                ScimType::InvalidValue,
                "an operation without a path needs an object value",
            ));
        };
        for (key, value) in values {
            if key.eq_ignore_ascii_case(ENTERPRISE_SCHEMA) {
                let Value::Object(extension) = value else {
                    return Err(ScimError::bad_request(
                        ScimType::InvalidValue,
                        "the extension must be an object",
                    ));
                };
                for (name, value) in extension {
                    apply(
                        resource,
                        op,
                        Some(&format!("{ENTERPRISE_SCHEMA}:{name}")),
                        Some(value),
                    )?;
                }
                continue;
            }
            let Ok(parsed) = AttrPath::parse(&key) else {
                continue;
            };
            // Unknown and read-only attributes in a path-less value are ignored.
            match writable(&parsed) {
                Ok(_) => apply(resource, op, Some(&key), Some(value))?,
                Err(_) => continue,
            }
        }
        return Ok(());
    };
    if op == Op::Remove && path.trim().eq_ignore_ascii_case(ENTERPRISE_SCHEMA) {
        // The whole extension.
        resource.remove(ENTERPRISE_SCHEMA);
        return Ok(());
    }
    let path = PatchPath::parse(path).map_err(|e| invalid_path(format!("`{path}`: {e}")))?;
    let attribute = writable(&path.attr)?;
    if let Some(sub) = &path.sub
        && schema::find(attribute.sub, sub).is_none()
    {
        return Err(invalid_path(format!(
            "`{path}` is not an attribute of the User schema"
        )));
    }
    if op != Op::Remove && value.is_none() {
        return Err(ScimError::bad_request(
            ScimType::InvalidValue,
            format!("`{path}` needs a value"),
        ));
    }
    if enterprise(&path.attr) && !resource.contains_key(ENTERPRISE_SCHEMA) {
        resource.insert(ENTERPRISE_SCHEMA.into(), json!({}));
    }
    let Some(map) = container(resource, &path.attr) else {
        return Err(invalid_path("the extension is not an object"));
    };
    let key = key_of(map, attribute.name).unwrap_or_else(|| attribute.name.to_owned());
    match (&path.filter, &path.attr.sub) {
        (None, None) => whole(map, &key, attribute, op, value),
        (None, Some(sub)) => {
            let sub_attribute = schema::find(attribute.sub, sub)
                .ok_or_else(|| invalid_path(format!("`{path}` is not an attribute")))?;
            let sub_key = sub_attribute.name;
            if attribute.multi {
                let Some(Value::Array(items)) = map.get_mut(&key) else {
                    return if op == Op::Replace {
                        Err(no_target(&path))
                    } else {
                        Ok(())
                    };
                };
                for item in items.iter_mut().filter_map(Value::as_object_mut) {
                    set_sub(item, sub_key, sub_attribute, op, value.clone())?;
                }
                return Ok(());
            }
            let object = map.entry(key).or_insert_with(|| json!({}));
            let Some(object) = object.as_object_mut() else {
                return Err(invalid_path(format!("`{path}` is not complex")));
            };
            set_sub(object, sub_key, sub_attribute, op, value)
        }
        (Some(filter), _) => filtered(map, &key, attribute, &path, filter, op, value),
    }
}

fn set_sub(
    object: &mut Map<String, Value>,
    sub_key: &str,
    sub_attribute: &Attribute,
    op: Op,
    value: Option<Value>,
) -> Result<(), ScimError> {
    let existing = key_of(object, sub_key);
    match (op, value) {
        (Op::Remove, _) | (_, None) => {
            if let Some(existing) = existing {
                object.remove(&existing);
            }
        }
        (_, Some(value)) => {
            if let Some(existing) = existing {
                object.remove(&existing);
            }
            object.insert(sub_key.to_owned(), coerce(sub_attribute, value)?);
        }
    }
    Ok(())
}

fn whole(
    map: &mut Map<String, Value>,
    key: &str,
    attribute: &Attribute,
    op: Op,
    value: Option<Value>,
) -> Result<(), ScimError> {
    let Some(value) = value.filter(|_| op != Op::Remove) else {
        // remove; with a value for a multi-valued attribute, remove those values.
        map.remove(key);
        return Ok(());
    };
    let value = coerce(attribute, value)?;
    match (op, map.get_mut(key)) {
        (Op::Add, Some(Value::Array(existing))) if attribute.multi => {
            if let Value::Array(new) = value {
                for item in new {
                    if !existing.contains(&item) {
                        existing.push(item);
                    }
                }
            }
        }
        (Op::Add | Op::Replace, Some(Value::Object(existing)))
            if attribute.kind == Kind::Complex && !attribute.multi =>
        {
            if let Value::Object(new) = value {
                existing.extend(new);
            }
        }
        _ => {
            map.insert(key.to_owned(), value);
        }
    }
    Ok(())
}

fn filtered(
    map: &mut Map<String, Value>,
    key: &str,
    attribute: &Attribute,
    path: &PatchPath,
    filter: &Filter,
    op: Op,
    value: Option<Value>,
) -> Result<(), ScimError> {
    if !attribute.multi {
        return Err(invalid_path(format!(
            "`{}` is not multi-valued",
            attribute.name
        )));
    }
    let parent = AttrPath::new(attribute.name);
    let rules = Scoped(parent);
    let items = match map.get_mut(key) {
        Some(Value::Array(items)) => items,
        _ => {
            map.insert(key.to_owned(), json!([]));
            match map.get_mut(key) {
                Some(Value::Array(items)) => items,
                _ => return Err(no_target(path)),
            }
        }
    };
    let matching: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, item)| filter.matches(item, &rules))
        .map(|(i, _)| i)
        .collect();
    let sub_attribute = match &path.sub {
        Some(sub) => Some(
            schema::find(attribute.sub, sub)
                .ok_or_else(|| invalid_path(format!("`{path}` is not an attribute")))?,
        ),
        None => None,
    };
    if op == Op::Remove {
        match sub_attribute {
            None => {
                let mut i = 0;
                items.retain(|_| {
                    let keep = !matching.contains(&i);
                    i += 1;
                    keep
                });
            }
            Some(sub) => {
                for &i in &matching {
                    if let Some(item) = items.get_mut(i).and_then(Value::as_object_mut) {
                        set_sub(item, sub.name, sub, Op::Remove, None)?;
                    }
                }
            }
        }
        if items.is_empty() {
            map.remove(key);
        }
        return Ok(());
    }
    if matching.is_empty() {
        // What Entra ID sends for an address it has not set before:
        // `emails[type eq "work"].value` = "…". Create the value the filter
        // describes when it is a conjunction of `eq` tests.
        let mut created = Map::new();
        if !equalities(filter, &mut created) {
            return Err(no_target(path));
        }
        let created = match (sub_attribute, value) {
            (Some(sub), Some(value)) => {
                created.insert(sub.name.to_owned(), coerce(sub, value)?);
                Value::Object(created)
            }
            (None, Some(Value::Object(more))) => {
                created.extend(more);
                Value::Object(created)
            }
            _ => return Err(no_target(path)),
        };
        items.push(created);
        let cleaned = coerce(attribute, Value::Array(std::mem::take(items)))?;
        map.insert(key.to_owned(), cleaned);
        return Ok(());
    }
    for &i in &matching {
        let Some(item) = items.get_mut(i) else {
            continue;
        };
        match (sub_attribute, &value) {
            (Some(sub), value) => {
                if let Some(object) = item.as_object_mut() {
                    set_sub(object, sub.name, sub, op, value.clone())?;
                }
            }
            (None, Some(Value::Object(new))) => match (op, item.as_object_mut()) {
                (Op::Add, Some(object)) => object.extend(new.clone()),
                _ => *item = Value::Object(new.clone()),
            },
            (None, _) => {
                return Err(ScimError::bad_request(
                    ScimType::InvalidValue,
                    format!("`{path}` needs an object value"),
                ));
            }
        }
    }
    let cleaned = coerce(attribute, Value::Array(std::mem::take(items)))?;
    map.insert(key.to_owned(), cleaned);
    Ok(())
}

/// Collects `sub eq "literal"` tests joined by `and` into `into`; false if
/// the filter is anything else.
fn equalities(filter: &Filter, into: &mut Map<String, Value>) -> bool {
    match filter {
        Filter::And(a, b) => equalities(a, into) && equalities(b, into),
        Filter::Compare {
            path,
            op: CompareOp::Eq,
            value,
        } if path.sub.is_none() && path.uri.is_none() => {
            let value = match value {
                CompValue::String(s) => json!(s),
                CompValue::Bool(b) => json!(b),
                CompValue::Number(n) => json!(n),
                CompValue::Null => return false,
            };
            into.insert(path.name.clone(), value);
            true
        }
        _ => false,
    }
}

/// Case rules for a filter inside `parent[…]`.
struct Scoped(AttrPath);

impl CaseRules for Scoped {
    fn case_exact(&self, path: &AttrPath) -> bool {
        UserCaseRules.case_exact(&AttrPath {
            uri: self.0.uri.clone(),
            name: self.0.name.clone(),
            sub: Some(path.name.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn user() -> Map<String, Value> {
        let Value::Object(map) = json!({
            "schemas": [USER_SCHEMA],
            "id": "1",
            "userName": "ada@example.com",
            "name": {"givenName": "Ada", "familyName": "Lovelace"},
            "emails": [{"value": "ada@example.com", "type": "work", "primary": true}],
            "active": true,
        }) else {
            unreachable!()
        };
        map
    }

    fn run(ops: &[(Op, Option<&str>, Option<Value>)]) -> Result<Value, ScimError> {
        let mut resource = user();
        for (op, path, value) in ops {
            apply(&mut resource, *op, *path, value.clone())?;
        }
        Ok(Value::Object(resource))
    }

    #[test]
    fn okta_style_operations() {
        // Okta deactivates with a path-less replace.
        let out = run(&[(
            Op::Replace,
            None,
            Some(json!({"active": false, "id": "ignored"})),
        )])
        .unwrap();
        assert_eq!(out["active"], false);
        assert_eq!(out["id"], "1");
        let out = run(&[(
            Op::Replace,
            None,
            Some(json!({"name": {"givenName": "Augusta"}})),
        )])
        .unwrap();
        assert_eq!(
            out["name"],
            json!({"givenName": "Augusta", "familyName": "Lovelace"})
        );
    }

    #[test]
    fn entra_style_operations() {
        let out = run(&[
            (Op::Replace, Some("active"), Some(json!("False"))),
            (
                Op::Add,
                Some(r#"emails[type eq "work"].value"#),
                Some(json!("ada@new.example")),
            ),
            (
                Op::Add,
                Some(r#"phoneNumbers[type eq "mobile"].value"#),
                Some(json!("+1 555")),
            ),
            (Op::Replace, Some("name.familyName"), Some(json!("King"))),
            (
                Op::Add,
                Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager"),
                Some(json!("boss-id")),
            ),
            (
                Op::Replace,
                Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"),
                Some(json!("R&D")),
            ),
        ])
        .unwrap();
        assert_eq!(out["active"], false);
        assert_eq!(
            out["emails"],
            json!([{"value": "ada@new.example", "type": "work", "primary": true}])
        );
        assert_eq!(
            out["phoneNumbers"],
            json!([{"type": "mobile", "value": "+1 555"}])
        );
        assert_eq!(out["name"]["familyName"], "King");
        assert_eq!(
            out[ENTERPRISE_SCHEMA],
            json!({"manager": {"value": "boss-id"}, "department": "R&D"})
        );
    }

    #[test]
    fn removes_and_refusals() {
        let out = run(&[(Op::Remove, Some(r#"emails[type eq "work"]"#), None)]).unwrap();
        assert!(out.get("emails").is_none());
        let out = run(&[(Op::Remove, Some("name.givenName"), None)]).unwrap();
        assert_eq!(out["name"], json!({"familyName": "Lovelace"}));
        let out = run(&[
            (
                Op::Add,
                Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"),
                Some(json!("R&D")),
            ),
            (Op::Remove, Some(ENTERPRISE_SCHEMA), None),
        ])
        .unwrap();
        assert!(out.get(ENTERPRISE_SCHEMA).is_none());
        let kinds = [
            (
                run(&[(Op::Replace, Some("id"), Some(json!("x")))]),
                ScimType::Mutability,
            ),
            (
                run(&[(Op::Replace, Some("meta.version"), Some(json!("x")))]),
                ScimType::Mutability,
            ),
            (
                run(&[(Op::Replace, Some("shoeSize"), Some(json!(4)))]),
                ScimType::InvalidPath,
            ),
            (
                run(&[(Op::Replace, Some("emails[type eq"), Some(json!(4)))]),
                ScimType::InvalidPath,
            ),
            (run(&[(Op::Remove, None, None)]), ScimType::NoTarget),
            (
                run(&[(
                    Op::Replace,
                    Some(r#"emails[type co "x"].value"#),
                    Some(json!("a")),
                )]),
                ScimType::NoTarget,
            ),
            (
                run(&[(Op::Replace, Some("active"), Some(json!("perhaps")))]),
                ScimType::InvalidValue,
            ),
        ];
        for (result, kind) in kinds {
            assert_eq!(result.unwrap_err().scim_type, Some(kind));
        }
    }

    #[test]
    fn projection_and_sorting() {
        let full = Value::Object(user());
        let only = project(
            full.clone(),
            &attribute_list("userName,name.givenName").unwrap(),
            &[],
        );
        assert_eq!(
            only,
            json!({"schemas": [USER_SCHEMA], "id": "1", "userName": "ada@example.com", "name": {"givenName": "Ada"}})
        );
        let without = project(
            full,
            &[],
            &attribute_list("emails,name.familyName,id").unwrap(),
        );
        assert!(without.get("emails").is_none());
        assert_eq!(without["name"], json!({"givenName": "Ada"}));
        assert_eq!(without["id"], "1");
        let mut list = vec![
            json!({"userName": "b"}),
            json!({}),
            json!({"userName": "A"}),
        ];
        sort(&mut list, &AttrPath::new("userName"), false, &UserCaseRules);
        assert_eq!(
            list,
            vec![
                json!({"userName": "A"}),
                json!({"userName": "b"}),
                json!({})
            ]
        );
    }
}
