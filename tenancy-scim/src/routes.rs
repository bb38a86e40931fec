//! The SCIM routes: `/scim/v2/...` (authenticated by a SCIM token inside
//! each handler, hence [`Access::Public`] for the pipeline) and
//! `/scim/tokens` (the SDK's normal auth, `scim:manage`).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tenancy_authz::sdk;
use tenancy_core::{DisplayName, Email, MembershipStore, ScimTokenId};
use tenancy_http::{Access, ApiRequest, Problem, RequestContext, Route, Tenancy, route};
use uuid::Uuid;

use crate::error::{SCIM_JSON, ScimError, ScimType};
use crate::filter::{AttrPath, CaseRules, CompValue, CompareOp, Filter};
use crate::module::{Caller, Scim, actions, audit, now, refuse_owner, store_error};
use crate::resource::{self, Op, Versioned};
use crate::schema::{self, GROUP_SCHEMA, LIST_RESPONSE, PATCH_OP, USER_SCHEMA, UserCaseRules};
use crate::store::UserRecord;
use crate::{groups, settings};

/// Where the SCIM protocol routes are mounted.
pub const BASE_PATH: &str = "/scim/v2";

pub(crate) fn routes() -> Vec<Route> {
    use Access::*;
    vec![
        route!(GET "/scim/v2/ServiceProviderConfig", Public, service_provider_config),
        route!(GET "/scim/v2/ResourceTypes", Public, resource_types),
        route!(GET "/scim/v2/ResourceTypes/{id}", Public, resource_type),
        route!(GET "/scim/v2/Schemas", Public, schemas),
        route!(GET "/scim/v2/Schemas/{id}", Public, one_schema),
        route!(GET "/scim/v2/Users", Public, list_users),
        route!(POST "/scim/v2/Users", Public, create_user),
        route!(POST "/scim/v2/Users/.search", Public, search_users),
        route!(GET "/scim/v2/Users/{id}", Public, get_user),
        route!(PUT "/scim/v2/Users/{id}", Public, replace_user),
        route!(PATCH "/scim/v2/Users/{id}", Public, patch_user),
        route!(DELETE "/scim/v2/Users/{id}", Public, delete_user),
        route!(GET "/scim/v2/Groups", Public, groups::list_groups),
        route!(POST "/scim/v2/Groups", Public, groups::create_group),
        route!(POST "/scim/v2/Groups/.search", Public, groups::search_groups),
        route!(GET "/scim/v2/Groups/{id}", Public, groups::get_group),
        route!(PUT "/scim/v2/Groups/{id}", Public, groups::replace_group),
        route!(PATCH "/scim/v2/Groups/{id}", Public, groups::patch_group),
        route!(DELETE "/scim/v2/Groups/{id}", Public, groups::delete_group),
        route!(POST "/scim/v2/Bulk", Public, not_implemented),
        route!(GET "/scim/v2/Me", Public, not_implemented),
        // Any other path under the base: a SCIM 404, not the app's.
        route!(GET "/scim/v2/{*path}", Public, no_endpoint),
        route!(POST "/scim/v2/{*path}", Public, no_endpoint),
        route!(PUT "/scim/v2/{*path}", Public, no_endpoint),
        route!(PATCH "/scim/v2/{*path}", Public, no_endpoint),
        route!(DELETE "/scim/v2/{*path}", Public, no_endpoint),
        route!(POST "/scim/tokens", Permission(sdk::SCIM_MANAGE), issue_token),
        route!(GET "/scim/tokens", Permission(sdk::SCIM_MANAGE), list_tokens),
        route!(DELETE "/scim/tokens/{id}", Permission(sdk::SCIM_MANAGE), revoke_token),
        route!(GET "/scim/settings", Permission(sdk::SCIM_MANAGE), settings::get_settings),
        route!(PUT "/scim/settings", Permission(sdk::SCIM_MANAGE), settings::put_settings),
    ]
}

pub(crate) type Answer = Result<Response<Bytes>, Problem>;

pub(crate) fn module(t: &Tenancy) -> Result<&Scim, ScimError> {
    t.module::<Scim>()
        .ok_or_else(|| ScimError::unavailable(&"the scim module is not registered"))
}

pub(crate) fn scim_json(status: StatusCode, body: &Value) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
    response
}

/// Runs a SCIM handler: errors become SCIM error bodies.
pub(crate) fn answer(result: Result<Response<Bytes>, ScimError>) -> Answer {
    Ok(result.unwrap_or_else(|error| error.to_response()))
}

/// The public URL of the SCIM routes.
pub(crate) fn base(t: &Tenancy, scim: &Scim, r: &ApiRequest) -> String {
    if let Some(url) = &scim.config.base_url {
        return url.clone();
    }
    match r.origin(t.config()) {
        Some(origin) => format!("{}{BASE_PATH}", origin.url_prefix()),
        None => BASE_PATH.to_owned(),
    }
}

pub(crate) async fn caller(
    t: &Tenancy,
    r: &ApiRequest,
) -> Result<(&'static str, Caller), ScimError> {
    let scim = module(t)?;
    let authorization = r
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let caller = scim
        .authenticate(t, authorization, &r.client(t.config()))
        .await?;
    Ok(("", caller))
}

/// The request body as JSON: `application/scim+json` or `application/json`.
pub(crate) fn body(t: &Tenancy, r: &ApiRequest) -> Result<Value, ScimError> {
    r.json::<Value>(t.config().body_limit)
        .map_err(|problem| match problem.status() {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ScimError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send application/scim+json or application/json",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => {
                ScimError::new(StatusCode::PAYLOAD_TOO_LARGE, "the body is too large")
            }
            _ => ScimError::bad_request(ScimType::InvalidSyntax, "the body is not valid JSON"),
        })
}

// ---------------------------------------------------------------- discovery

async fn service_provider_config(
    t: &Tenancy,
    r: &ApiRequest,
    _: Option<&RequestContext>,
) -> Answer {
    answer((|| {
        let scim = module(t)?;
        let base = base(t, scim, r);
        Ok(scim_json(
            StatusCode::OK,
            &json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
                "documentationUri": "https://github.com/tenancy-rs/tenancy#scim-provisioning",
                "patch": { "supported": true },
                "bulk": { "supported": false, "maxOperations": 0, "maxPayloadSize": 0 },
                "filter": { "supported": true, "maxResults": scim.config.max_results },
                "changePassword": { "supported": false },
                "sort": { "supported": true },
                "etag": { "supported": true },
                "authenticationSchemes": [{
                    "type": "oauthbearertoken",
                    "name": "SCIM bearer token",
                    "description": "a per-tenant token issued at POST /scim/tokens, sent as Authorization: Bearer",
                    "primary": true,
                }],
                "meta": { "resourceType": "ServiceProviderConfig", "location": format!("{base}/ServiceProviderConfig") },
            }),
        ))
    })())
}

fn user_resource_type(base: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
        "id": "User",
        "name": "User",
        "endpoint": "/Users",
        "description": "a member of the tenant",
        "schema": USER_SCHEMA,
        "schemaExtensions": [{ "schema": schema::ENTERPRISE_SCHEMA, "required": false }],
        "meta": { "resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User") },
    })
}

fn group_resource_type(base: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
        "id": "Group",
        "name": "Group",
        "endpoint": "/Groups",
        "description": "a group of the tenant's members; mapped groups grant tenant roles",
        "schema": GROUP_SCHEMA,
        "meta": { "resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group") },
    })
}

fn list(resources: Vec<Value>, total: usize, start: usize) -> Value {
    json!({
        "schemas": [LIST_RESPONSE],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

async fn resource_types(t: &Tenancy, r: &ApiRequest, _: Option<&RequestContext>) -> Answer {
    answer(module(t).map(|scim| {
        let base = base(t, scim, r);
        scim_json(
            StatusCode::OK,
            &list(
                vec![user_resource_type(&base), group_resource_type(&base)],
                2,
                1,
            ),
        )
    }))
}

async fn resource_type(t: &Tenancy, r: &ApiRequest, _: Option<&RequestContext>) -> Answer {
    answer((|| {
        let scim = module(t)?;
        let base = base(t, scim, r);
        match r.param("id").ok() {
            Some("User") => Ok(scim_json(StatusCode::OK, &user_resource_type(&base))),
            Some("Group") => Ok(scim_json(StatusCode::OK, &group_resource_type(&base))),
            _ => Err(ScimError::not_found()),
        }
    })())
}

async fn schemas(t: &Tenancy, r: &ApiRequest, _: Option<&RequestContext>) -> Answer {
    answer(module(t).map(|scim| {
        let all = schema::schemas(&base(t, scim, r));
        let total = all.len();
        scim_json(StatusCode::OK, &list(all, total, 1))
    }))
}

async fn one_schema(t: &Tenancy, r: &ApiRequest, _: Option<&RequestContext>) -> Answer {
    answer((|| {
        let scim = module(t)?;
        let id = r.param("id").map_err(|_| ScimError::not_found())?;
        schema::schemas(&base(t, scim, r))
            .into_iter()
            .find(|s| s["id"] == id)
            .map(|s| scim_json(StatusCode::OK, &s))
            .ok_or_else(ScimError::not_found)
    })())
}

async fn not_implemented(t: &Tenancy, r: &ApiRequest, _: Option<&RequestContext>) -> Answer {
    answer(
        async {
            caller(t, r).await?;
            Err(ScimError::new(
                StatusCode::NOT_IMPLEMENTED,
                "not supported by this service provider (see /ServiceProviderConfig)",
            ))
        }
        .await,
    )
}

async fn no_endpoint(t: &Tenancy, r: &ApiRequest, _: Option<&RequestContext>) -> Answer {
    answer(
        async {
            caller(t, r).await?;
            Err(ScimError::new(
                StatusCode::NOT_FOUND,
                "no SCIM endpoint at this path (see /ResourceTypes)",
            ))
        }
        .await,
    )
}

// ---------------------------------------------------------------- Users

fn user_answer(
    t: &Tenancy,
    status: StatusCode,
    record: &UserRecord,
    scim: &Scim,
    r: &ApiRequest,
) -> Response<Bytes> {
    resource_answer(status, &resource::render(record, &base(t, scim, r)), record)
}

/// A resource answer: the body, its `ETag`, and `Location` on `201`.
pub(crate) fn resource_answer(
    status: StatusCode,
    rendered: &Value,
    record: &impl Versioned,
) -> Response<Bytes> {
    let mut response = scim_json(status, rendered);
    if let Ok(etag) = HeaderValue::from_str(&resource::etag(record)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    if status == StatusCode::CREATED
        && let Some(location) = rendered["meta"]["location"].as_str()
        && let Ok(location) = HeaderValue::from_str(location)
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// The `{id}` of a resource route; `404` when it is no SCIM id.
pub(crate) fn resource_id(r: &ApiRequest) -> Result<Uuid, ScimError> {
    r.param("id")
        .ok()
        .and_then(|id| id.parse().ok())
        .ok_or_else(ScimError::not_found)
}

async fn find_record(
    scim: &Scim,
    caller: &Caller,
    r: &ApiRequest,
) -> Result<UserRecord, ScimError> {
    let id = resource_id(r)?;
    scim.store
        .get_user(caller.tenant(), id)
        .await
        .map_err(|e| store_error(&e))?
        .ok_or_else(ScimError::not_found)
}

/// `If-Match` (RFC 7232 §3.1, weak comparison as RFC 7644 §3.14 uses it).
pub(crate) fn check_if_match(r: &ApiRequest, record: &impl Versioned) -> Result<(), ScimError> {
    let Some(header) = r
        .headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    let current = resource::etag(record);
    let strip = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let matches = header
        .split(',')
        .any(|tag| tag.trim() == "*" || strip(tag) == strip(&current));
    if matches {
        Ok(())
    } else {
        Err(ScimError::precondition_failed())
    }
}

/// A GET on a resource whose version the client already has (`If-None-Match`).
fn not_modified(r: &ApiRequest, record: &impl Versioned) -> bool {
    let current = resource::etag(record);
    r.headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|h| {
            h.split(',')
                .any(|tag| tag.trim().trim_start_matches("W/") == current.trim_start_matches("W/"))
        })
}

async fn get_user(t: &Tenancy, r: &ApiRequest, _: Option<&RequestContext>) -> Answer {
    answer(
        async {
            let (_, caller) = caller(t, r).await?;
            let scim = module(t)?;
            let record = find_record(scim, &caller, r).await?;
            read_answer(r, &record, resource::render(&record, &base(t, scim, r)))
        }
        .await,
    )
}

/// A GET answer: `304` for a version the client has (`If-None-Match`),
/// else the resource projected by `attributes`/`excludedAttributes`.
pub(crate) fn read_answer(
    r: &ApiRequest,
    record: &impl Versioned,
    rendered: Value,
) -> Result<Response<Bytes>, ScimError> {
    if not_modified(r, record) {
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(response);
    }
    let (attributes, excluded) = projection(r.query("attributes"), r.query("excludedAttributes"))?;
    let projected = resource::project(rendered, &attributes, &excluded);
    Ok(resource_answer(StatusCode::OK, &projected, record))
}

fn projection(
    attributes: Option<String>,
    excluded: Option<String>,
) -> Result<(Vec<AttrPath>, Vec<AttrPath>), ScimError> {
    Ok((
        attributes
            .as_deref()
            .map(resource::attribute_list)
            .transpose()?
            .unwrap_or_default(),
        excluded
            .as_deref()
            .map(resource::attribute_list)
            .transpose()?
            .unwrap_or_default(),
    ))
}

/// A list query, from the URL or a `.search` body.
pub(crate) struct Query {
    pub(crate) filter: Option<String>,
    start: Option<i64>,
    count: Option<i64>,
    sort_by: Option<String>,
    descending: bool,
    attributes: Option<String>,
    excluded: Option<String>,
}

fn integer(name: &str, text: Option<String>) -> Result<Option<i64>, ScimError> {
    text.map(|t| {
        t.trim().parse::<i64>().map_err(|_| {
            ScimError::bad_request(ScimType::InvalidValue, format!("{name} must be an integer"))
        })
    })
    .transpose()
}

fn descending(text: Option<&str>) -> Result<bool, ScimError> {
    match text.map(str::to_ascii_lowercase).as_deref() {
        None | Some("ascending") => Ok(false),
        Some("descending") => Ok(true),
        Some(_) => Err(ScimError::bad_request(
            ScimType::InvalidValue,
            "sortOrder must be ascending or descending",
        )),
    }
}

/// The list query of a `GET` on a resource type.
pub(crate) fn url_query(r: &ApiRequest) -> Result<Query, ScimError> {
    Ok(Query {
        filter: r.query("filter"),
        start: integer("startIndex", r.query("startIndex"))?,
        count: integer("count", r.query("count"))?,
        sort_by: r.query("sortBy"),
        descending: descending(r.query("sortOrder").as_deref())?,
        attributes: r.query("attributes"),
        excluded: r.query("excludedAttributes"),
    })
}

async fn list_users(t: &Tenancy, r: &ApiRequest, _: Option<&RequestContext>) -> Answer {
    answer(async { run_list(t, r, url_query(r)?).await }.await)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchBody {
    #[serde(default)]
    schemas: Vec<String>,
    filter: Option<String>,
    start_index: Option<i64>,
    count: Option<i64>,
    sort_by: Option<String>,
    sort_order: Option<String>,
    #[serde(default)]
    attributes: Vec<String>,
    #[serde(default)]
    excluded_attributes: Vec<String>,
}

async fn search_users(t: &Tenancy, r: &ApiRequest, _: Option<&RequestContext>) -> Answer {
    answer(
        async {
            caller(t, r).await?;
            run_list(t, r, search_query(t, r)?).await
        }
        .await,
    )
}

/// The list query of a `POST .../.search` (RFC 7644 §3.4.3).
pub(crate) fn search_query(t: &Tenancy, r: &ApiRequest) -> Result<Query, ScimError> {
    let input: SearchBody = serde_json::from_value(body(t, r)?).map_err(|e| {
        ScimError::bad_request(
            ScimType::InvalidSyntax,
            format!("invalid search request: {e}"),
        )
    })?;
    if !input
        .schemas
        .iter()
        .any(|s| s == "urn:ietf:params:scim:api:messages:2.0:SearchRequest")
    {
        return Err(ScimError::bad_request(
            ScimType::InvalidSyntax,
            "schemas must name the SearchRequest message",
        ));
    }
    let join = |list: Vec<String>| (!list.is_empty()).then(|| list.join(","));
    Ok(Query {
        filter: input.filter,
        start: input.start_index,
        count: input.count,
        sort_by: input.sort_by,
        descending: descending(input.sort_order.as_deref())?,
        attributes: join(input.attributes),
        excluded: join(input.excluded_attributes),
    })
}

/// `userName eq "…"`: what identity providers ask before creating, served
/// by the store's index instead of a scan.
fn user_name_lookup(filter: &Filter) -> Option<&str> {
    match filter {
        Filter::Compare {
            path,
            op: CompareOp::Eq,
            value: CompValue::String(name),
        } if path.is("userName") && path.sub.is_none() => Some(name),
        _ => None,
    }
}

async fn run_list(t: &Tenancy, r: &ApiRequest, query: Query) -> Result<Response<Bytes>, ScimError> {
    let (_, caller) = caller(t, r).await?;
    let scim = module(t)?;
    let filter = query.filter.as_deref().map(Filter::parse).transpose()?;
    if let Some(filter) = &filter {
        schema::check_user_filter(filter)?;
    }
    let records = match filter.as_ref().and_then(user_name_lookup) {
        Some(name) => scim
            .store
            .find_user_by_name(caller.tenant(), name)
            .await
            .map_err(|e| store_error(&e))?
            .into_iter()
            .collect(),
        None => scim
            .store
            .list_users(caller.tenant())
            .await
            .map_err(|e| store_error(&e))?,
    };
    let base = base(t, scim, r);
    let rendered = records
        .iter()
        .map(|record| resource::render(record, &base))
        .collect();
    list_answer(scim, query, filter.as_ref(), rendered, &UserCaseRules)
}

/// A list answer over rendered resources: filtered, sorted, paged
/// (RFC 7644 §3.4.2) and projected.
pub(crate) fn list_answer(
    scim: &Scim,
    query: Query,
    filter: Option<&Filter>,
    rendered: Vec<Value>,
    rules: &dyn CaseRules,
) -> Result<Response<Bytes>, ScimError> {
    let (attributes, excluded) = projection(query.attributes, query.excluded)?;
    let sort_by = query
        .sort_by
        .as_deref()
        .map(|text| {
            AttrPath::parse(text)
                .map_err(|e| ScimError::bad_request(ScimType::InvalidValue, format!("sortBy: {e}")))
        })
        .transpose()?;
    let mut resources: Vec<Value> = rendered
        .into_iter()
        .filter(|rendered| filter.is_none_or(|f| f.matches(rendered, rules)))
        .collect();
    if let Some(path) = &sort_by {
        resource::sort(&mut resources, path, query.descending, rules);
    }
    let total = resources.len();
    // RFC 7644 §3.4.2.4: startIndex below 1 is 1; a negative count is 0.
    let start = usize::try_from(query.start.unwrap_or(1).max(1)).unwrap_or(1);
    let count = usize::try_from(query.count.unwrap_or(scim.config.max_results as i64).max(0))
        .unwrap_or(0)
        .min(scim.config.max_results);
    let page: Vec<Value> = resources
        .into_iter()
        .skip(start - 1)
        .take(count)
        .map(|resource| resource::project(resource, &attributes, &excluded))
        .collect();
    Ok(scim_json(StatusCode::OK, &list(page, total, start)))
}

/// What a create or replace body says, cleaned against the schema.
struct Input {
    user_name: String,
    external_id: Option<String>,
    /// `None` when the resource leaves `active` out: a new user is active,
    /// an existing one keeps its state (a `PUT` without `active`, or a
    /// `PATCH` removing it, never reactivates a deprovisioned member).
    active: Option<bool>,
    attributes: Map<String, Value>,
}

fn input(value: &Value) -> Result<Input, ScimError> {
    let mut cleaned = schema::clean_user(value)?;
    let user_name = match cleaned.remove("userName") {
        Some(Value::String(name)) if !name.trim().is_empty() => name,
        _ => {
            return Err(ScimError::bad_request(
                ScimType::InvalidValue,
                "userName is required",
            ));
        }
    };
    let external_id = match cleaned.remove("externalId") {
        Some(Value::String(id)) => Some(id),
        _ => None,
    };
    // What Postgres cannot store is refused on every store alike.
    resource::check_text("userName", &user_name, 256)?;
    if let Some(id) = &external_id {
        resource::check_text("externalId", id, resource::MAX_EXTERNAL_ID)?;
    }
    resource::check_no_nul(&Value::Object(cleaned.clone()))?;
    let active = match cleaned.remove("active") {
        Some(Value::Bool(active)) => Some(active),
        _ => None,
    };
    Ok(Input {
        user_name,
        external_id,
        active,
        attributes: cleaned,
    })
}

fn check_schemas(value: &Value) -> Result<(), ScimError> {
    require_schema(value, USER_SCHEMA)
}

/// Refuses a resource body whose `schemas` does not name `uri`.
pub(crate) fn require_schema(value: &Value, uri: &str) -> Result<(), ScimError> {
    let names = value
        .get("schemas")
        .and_then(Value::as_array)
        .is_some_and(|schemas| {
            schemas
                .iter()
                .any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(uri)))
        });
    if names {
        Ok(())
    } else {
        Err(ScimError::bad_request(
            ScimType::InvalidSyntax,
            format!("schemas must include {uri}"),
        ))
    }
}

/// The address that links the account: the primary email, else the first
/// work one, else the first, else `userName` when it is an address.
fn account_email(input: &Input) -> Result<Email, ScimError> {
    let emails: Vec<&Value> = input
        .attributes
        .get("emails")
        .and_then(Value::as_array)
        .map(|items| items.iter().collect())
        .unwrap_or_default();
    let pick = emails
        .iter()
        .find(|e| e.get("primary") == Some(&Value::Bool(true)))
        .or_else(|| {
            emails
                .iter()
                .find(|e| e.get("type").and_then(Value::as_str) == Some("work"))
        })
        .or_else(|| emails.first())
        .and_then(|e| e.get("value"))
        .and_then(Value::as_str);
    pick.and_then(|text| Email::new(text).ok())
        .or_else(|| Email::new(&input.user_name).ok())
        .ok_or_else(|| {
            ScimError::bad_request(
                ScimType::InvalidValue,
                "a user needs an email address: a valid address in emails, or as userName",
            )
        })
}

fn display_name(input: &Input) -> Option<DisplayName> {
    let text = input
        .attributes
        .get("displayName")
        .and_then(Value::as_str)
        .or_else(|| {
            input
                .attributes
                .get("name")
                .and_then(|n| n.get("formatted"))
                .and_then(Value::as_str)
        })?;
    DisplayName::new(text).ok()
}

async fn create_user(t: &Tenancy, r: &ApiRequest, _: Option<&RequestContext>) -> Answer {
    answer(
        async {
            let (_, caller) = caller(t, r).await?;
            let scim = module(t)?;
            let value = body(t, r)?;
            check_schemas(&value)?;
            let input = input(&value)?;
            let tenant = caller.tenant();
            let taken = |_: ()| {
                ScimError::uniqueness(format!(
                    "userName `{}` is already provisioned",
                    input.user_name
                ))
            };
            if scim
                .store
                .find_user_by_name(tenant, &input.user_name)
                .await
                .map_err(|e| store_error(&e))?
                .is_some()
            {
                return Err(taken(()));
            }
            let email = account_email(&input)?;
            let (user, created) = scim.link(t, &caller, email, display_name(&input)).await?;
            if scim
                .store
                .find_user_by_account(tenant, user)
                .await
                .map_err(|e| store_error(&e))?
                .is_some()
            {
                return Err(ScimError::uniqueness(
                    "this account is already provisioned under another userName",
                ));
            }
            let at = now();
            let record = UserRecord {
                id: Uuid::now_v7(),
                tenant_id: tenant,
                user_id: user,
                user_name: input.user_name.clone(),
                external_id: input.external_id.clone(),
                active: input.active.unwrap_or(true),
                attributes: input.attributes.clone(),
                version: 1,
                created_at: at,
                updated_at: at,
            };
            if let Err(error) = scim.store.insert_user(&record).await {
                // Lost a race: undo the membership this call made, unless a
                // record that won the race provisions the same account.
                let claimed = scim
                    .store
                    .find_user_by_account(tenant, user)
                    .await
                    .map_err(|e| store_error(&e))?
                    .is_some();
                if created && !claimed {
                    scim.deprovision(t, &caller, user, true).await?;
                }
                return Err(store_error(&error));
            }
            if record.active {
                // A request that lost a race for this account may have
                // undone the membership between the link and the insert.
                let missing = t
                    .directory()
                    .backend()
                    .find_membership(tenant, user)
                    .await
                    .map_err(|e| ScimError::unavailable(&e))?
                    .is_none();
                if missing {
                    scim.reprovision(t, &caller, user).await?;
                }
            } else {
                scim.deprovision(t, &caller, user, false).await?;
            }
            Ok(user_answer(t, StatusCode::CREATED, &record, scim, r))
        }
        .await,
    )
}

/// Stores `next` in place of `current` and makes the membership follow
/// `active`: deactivation deprovisions, reactivation restores.
async fn save(
    t: &Tenancy,
    scim: &Scim,
    caller: &Caller,
    current: &UserRecord,
    next: Input,
) -> Result<UserRecord, ScimError> {
    if !next.user_name.eq_ignore_ascii_case(&current.user_name)
        && let Some(other) = scim
            .store
            .find_user_by_name(caller.tenant(), &next.user_name)
            .await
            .map_err(|e| store_error(&e))?
        && other.id != current.id
    {
        return Err(ScimError::uniqueness(format!(
            "userName `{}` is already provisioned",
            next.user_name
        )));
    }
    let active = next.active.unwrap_or(current.active);
    if current.active && !active {
        // What the directory would refuse is refused before anything changes.
        refuse_owner(t, caller, current.user_id).await?;
    }
    let record = UserRecord {
        user_name: next.user_name,
        external_id: next.external_id,
        active,
        attributes: next.attributes,
        version: current.version + 1,
        updated_at: now(),
        ..current.clone()
    };
    // The versioned write comes first: of two racing changes, only the one
    // that wins it goes on to change the membership.
    scim.store
        .update_user(&record, current.version)
        .await
        .map_err(|e| store_error(&e))?;
    let membership = match (current.active, active) {
        (true, false) => scim.deprovision(t, caller, current.user_id, false).await,
        (false, true) => scim.reprovision(t, caller, current.user_id).await,
        _ => Ok(()),
    };
    if let Err(error) = membership {
        // The membership did not follow: the record goes back to what it
        // was, so that it keeps describing the membership and a retry
        // tries the change again.
        let restored = UserRecord {
            version: record.version + 1,
            updated_at: now(),
            ..current.clone()
        };
        if let Err(restore) = scim.store.update_user(&restored, record.version).await {
            tracing::warn!(scim_id = %current.id, error = %restore, "scim: could not restore a record after a failed membership change");
        }
        return Err(error);
    }
    audit(
        t,
        caller.tenant(),
        &caller.audit,
        actions::USER_UPDATED,
        ("user", &record.user_id),
        json!({ "scim_id": record.id, "version": record.version, "active": record.active }),
    )
    .await?;
    Ok(record)
}

async fn replace_user(t: &Tenancy, r: &ApiRequest, _: Option<&RequestContext>) -> Answer {
    answer(
        async {
            let (_, caller) = caller(t, r).await?;
            let scim = module(t)?;
            let current = find_record(scim, &caller, r).await?;
            check_if_match(r, &current)?;
            let value = body(t, r)?;
            check_schemas(&value)?;
            if let Some(id) = value.get("id").and_then(Value::as_str)
                && id != current.id.to_string()
            {
                return Err(ScimError::bad_request(
                    ScimType::Mutability,
                    "id cannot change",
                ));
            }
            let next = input(&value)?;
            let record = save(t, scim, &caller, &current, next).await?;
            Ok(user_answer(t, StatusCode::OK, &record, scim, r))
        }
        .await,
    )
}

#[derive(Deserialize)]
struct PatchBody {
    #[serde(default)]
    schemas: Vec<String>,
    #[serde(rename = "Operations")]
    operations: Vec<PatchOperation>,
}

/// One operation of a PATCH request (RFC 7644 §3.5.2).
#[derive(Deserialize)]
pub(crate) struct PatchOperation {
    pub(crate) op: String,
    pub(crate) path: Option<String>,
    pub(crate) value: Option<Value>,
}

/// The operations of a PATCH request body.
pub(crate) fn patch_operations(
    t: &Tenancy,
    r: &ApiRequest,
) -> Result<Vec<PatchOperation>, ScimError> {
    let patch: PatchBody = serde_json::from_value(body(t, r)?).map_err(|e| {
        ScimError::bad_request(
            ScimType::InvalidSyntax,
            format!("invalid PATCH request: {e}"),
        )
    })?;
    if !patch.schemas.iter().any(|s| s == PATCH_OP) {
        return Err(ScimError::bad_request(
            ScimType::InvalidSyntax,
            format!("schemas must be [\"{PATCH_OP}\"]"),
        ));
    }
    Ok(patch.operations)
}

async fn patch_user(t: &Tenancy, r: &ApiRequest, _: Option<&RequestContext>) -> Answer {
    answer(
        async {
            let (_, caller) = caller(t, r).await?;
            let scim = module(t)?;
            let current = find_record(scim, &caller, r).await?;
            check_if_match(r, &current)?;
            let operations = patch_operations(t, r)?;
            let Value::Object(mut resource) = resource::render(&current, "") else {
                return Err(ScimError::unavailable(&"a rendered user is not an object"));
            };
            for operation in operations {
                resource::apply(
                    &mut resource,
                    Op::parse(&operation.op)?,
                    operation.path.as_deref(),
                    operation.value,
                )?;
            }
            let next = input(&Value::Object(resource))?;
            let record = save(t, scim, &caller, &current, next).await?;
            Ok(user_answer(t, StatusCode::OK, &record, scim, r))
        }
        .await,
    )
}

async fn delete_user(t: &Tenancy, r: &ApiRequest, _: Option<&RequestContext>) -> Answer {
    answer(
        async {
            let (_, caller) = caller(t, r).await?;
            let scim = module(t)?;
            let current = find_record(scim, &caller, r).await?;
            check_if_match(r, &current)?;
            scim.deprovision(t, &caller, current.user_id, true).await?;
            scim.store
                .delete_user(caller.tenant(), current.id)
                .await
                .map_err(|e| store_error(&e))?;
            audit(
                t,
                caller.tenant(),
                &caller.audit,
                actions::USER_DELETED,
                ("user", &current.user_id),
                json!({ "scim_id": current.id }),
            )
            .await?;
            let mut response = Response::new(Bytes::new());
            *response.status_mut() = StatusCode::NO_CONTENT;
            Ok(response)
        }
        .await,
    )
}

// ---------------------------------------------------------------- tokens

pub(crate) fn problem(error: ScimError) -> Problem {
    match error.status {
        StatusCode::NOT_FOUND => Problem::not_found(),
        StatusCode::BAD_REQUEST => Problem::invalid("name", error.detail),
        status => {
            Problem::new(status, "unavailable", "Service unavailable").with_detail(error.detail)
        }
    }
}

pub(crate) fn context(c: Option<&RequestContext>) -> Result<&RequestContext, Problem> {
    c.ok_or_else(|| Problem::forbidden("this route needs a signed-in caller"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    name: String,
}

async fn issue_token(t: &Tenancy, r: &ApiRequest, c: Option<&RequestContext>) -> Answer {
    let c = context(c)?;
    let scim = module(t).map_err(problem)?;
    let input: TokenBody = r.json(t.config().body_limit)?;
    let issued = scim
        .issue_token(t, c.scope(), &input.name, &c.audit())
        .await
        .map_err(problem)?;
    let mut response = tenancy_http::json(
        StatusCode::CREATED,
        &json!({ "scim_token": issued.token, "token": issued.secret.expose_secret() }),
    )?;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn list_tokens(t: &Tenancy, _: &ApiRequest, c: Option<&RequestContext>) -> Answer {
    let c = context(c)?;
    let scim = module(t).map_err(problem)?;
    let tokens = scim
        .store
        .list_tokens(c.tenant_id())
        .await
        .map_err(|e| problem(store_error(&e)))?;
    tenancy_http::json(StatusCode::OK, &json!({ "items": tokens }))
}

async fn revoke_token(t: &Tenancy, r: &ApiRequest, c: Option<&RequestContext>) -> Answer {
    let c = context(c)?;
    let scim = module(t).map_err(problem)?;
    let id: ScimTokenId = r.param("id")?.parse().map_err(|_| Problem::not_found())?;
    scim.revoke_token(t, c.scope(), id, &c.audit())
        .await
        .map_err(problem)?;
    Ok(tenancy_http::no_content())
}
