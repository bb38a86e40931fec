//! Row decoding. Stored values are validated again on the way out: a row
//! edited by hand into something invalid is reported, not passed on.

use std::net::IpAddr;

use sqlx::Row;
use sqlx::postgres::PgRow;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::{Actor, AuditAction, AuditEvent, ChainHash, Target, TargetType};
use crate::error::{BoxError, StoreError};
use crate::id::{AuditEventId, InvitationId, MembershipId, TenantId, UserId};
use crate::invitation::{Invitation, TokenHash};
use crate::membership::{Member, Membership, RoleSet, UserTenant};
use crate::tenant::{Slug, Tenant, TenantName};
use crate::text::Metadata;
use crate::user::{DisplayName, Email, User};

type Result<T, E = StoreError> = std::result::Result<T, E>;

macro_rules! tenant_columns {
    ($p:literal) => {
        concat!(
            $p,
            "id AS t_id, ",
            $p,
            "slug AS t_slug, ",
            $p,
            "name AS t_name, ",
            $p,
            "status AS t_status, ",
            $p,
            "metadata AS t_metadata, ",
            $p,
            "created_at AS t_created_at, ",
            $p,
            "updated_at AS t_updated_at"
        )
    };
}
macro_rules! user_columns {
    ($p:literal) => {
        concat!(
            $p,
            "id AS u_id, ",
            $p,
            "email AS u_email, ",
            $p,
            "display_name AS u_display_name, ",
            $p,
            "email_verified AS u_email_verified, ",
            $p,
            "status AS u_status, ",
            $p,
            "created_at AS u_created_at, ",
            $p,
            "updated_at AS u_updated_at"
        )
    };
}
macro_rules! membership_columns {
    ($p:literal) => {
        concat!(
            $p,
            "id AS m_id, ",
            $p,
            "tenant_id AS m_tenant_id, ",
            $p,
            "user_id AS m_user_id, ",
            $p,
            "roles AS m_roles, ",
            $p,
            "status AS m_status, ",
            $p,
            "created_at AS m_created_at, ",
            $p,
            "updated_at AS m_updated_at"
        )
    };
}
macro_rules! invitation_columns {
    () => {
        "id, tenant_id, email, roles, invited_by_kind, invited_by_id, status, token_hash, \
         expires_at, created_at, updated_at, accepted_by"
    };
}
macro_rules! audit_columns {
    () => {
        "tenant_id, seq, id, actor_kind, actor_id, action, target_type, target_id, metadata, \
         host(ip) AS ip, user_agent, occurred_at, prev_hash, hash"
    };
}
pub(super) use {
    audit_columns, invitation_columns, membership_columns, tenant_columns, user_columns,
};

/// A stored value that does not decode into a valid record.
#[derive(Debug, thiserror::Error)]
#[error("stored {column} is invalid")]
struct Corrupt {
    column: &'static str,
    #[source]
    source: BoxError,
}

fn corrupt(column: &'static str) -> impl FnOnce(BoxError) -> StoreError {
    move |source| StoreError::Corrupt(Box::new(Corrupt { column, source }))
}

fn get<'r, T>(row: &'r PgRow, column: &'static str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(column).map_err(StoreError::unavailable)
}

fn parse<T, E>(
    row: &PgRow,
    column: &'static str,
    f: impl FnOnce(String) -> Result<T, E>,
) -> Result<T>
where
    E: Into<BoxError>,
{
    let text: String = get(row, column)?;
    f(text).map_err(|e| corrupt(column)(e.into()))
}

fn hash32(row: &PgRow, column: &'static str) -> Result<[u8; 32]> {
    let bytes: Vec<u8> = get(row, column)?;
    bytes
        .try_into()
        .map_err(|_| corrupt(column)("expected 32 bytes".into()))
}

pub(super) fn tenant_from_row(row: &PgRow) -> Result<Tenant> {
    Ok(Tenant {
        id: TenantId::from_uuid(get(row, "t_id")?),
        slug: parse(row, "t_slug", Slug::new)?,
        name: parse(row, "t_name", |s| TenantName::new(&s))?,
        status: parse(row, "t_status", |s| s.parse())?,
        metadata: Metadata::new(get(row, "t_metadata")?)
            .map_err(|e| corrupt("metadata")(e.into()))?,
        created_at: get(row, "t_created_at")?,
        updated_at: get(row, "t_updated_at")?,
    })
}

pub(super) fn user_from_row(row: &PgRow) -> Result<User> {
    let display_name: Option<String> = get(row, "u_display_name")?;
    Ok(User {
        id: UserId::from_uuid(get(row, "u_id")?),
        email: parse(row, "u_email", |s| Email::new(&s))?,
        display_name: display_name
            .map(|name| DisplayName::new(&name))
            .transpose()
            .map_err(|e| corrupt("display_name")(e.into()))?,
        email_verified: get(row, "u_email_verified")?,
        status: parse(row, "u_status", |s| s.parse())?,
        created_at: get(row, "u_created_at")?,
        updated_at: get(row, "u_updated_at")?,
    })
}

fn roles(row: &PgRow, column: &'static str) -> Result<RoleSet> {
    let names: Vec<String> = get(row, column)?;
    RoleSet::parse(names).map_err(|e| corrupt(column)(e.into()))
}

pub(super) fn membership_from_row(row: &PgRow) -> Result<Membership> {
    Ok(Membership {
        id: MembershipId::from_uuid(get(row, "m_id")?),
        tenant_id: TenantId::from_uuid(get(row, "m_tenant_id")?),
        user_id: UserId::from_uuid(get(row, "m_user_id")?),
        roles: roles(row, "m_roles")?,
        status: parse(row, "m_status", |s| s.parse())?,
        created_at: get(row, "m_created_at")?,
        updated_at: get(row, "m_updated_at")?,
    })
}

pub(super) fn member_from_row(row: &PgRow) -> Result<Member> {
    Ok(Member {
        user: user_from_row(row)?,
        membership: membership_from_row(row)?,
    })
}

pub(super) fn user_tenant_from_row(row: &PgRow) -> Result<UserTenant> {
    Ok(UserTenant {
        tenant: tenant_from_row(row)?,
        membership: membership_from_row(row)?,
    })
}

fn actor(row: &PgRow, kind: &'static str, id: &'static str) -> Result<Actor> {
    let kind_text: String = get(row, kind)?;
    let id: Option<Uuid> = get(row, id)?;
    Actor::from_parts(&kind_text, id).ok_or_else(|| corrupt(kind)("unknown actor".into()))
}

pub(super) fn roles_to_db(roles: &RoleSet) -> Vec<String> {
    roles.iter().map(|r| r.as_str().to_owned()).collect()
}

pub(super) fn invitation_from_row(row: &PgRow) -> Result<Invitation> {
    let accepted_by: Option<Uuid> = get(row, "accepted_by")?;
    Ok(Invitation {
        id: InvitationId::from_uuid(get(row, "id")?),
        tenant_id: TenantId::from_uuid(get(row, "tenant_id")?),
        email: parse(row, "email", |s| Email::new(&s))?,
        roles: roles(row, "roles")?,
        invited_by: actor(row, "invited_by_kind", "invited_by_id")?,
        status: parse(row, "status", |s| s.parse())?,
        token_hash: TokenHash::from_bytes(hash32(row, "token_hash")?),
        expires_at: get(row, "expires_at")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
        accepted_by: accepted_by.map(UserId::from_uuid),
    })
}

pub(super) fn audit_from_row(row: &PgRow) -> Result<AuditEvent> {
    let seq: i64 = get(row, "seq")?;
    let ip: Option<String> = get(row, "ip")?;
    let occurred_at: OffsetDateTime = get(row, "occurred_at")?;
    Ok(AuditEvent {
        id: AuditEventId::from_uuid(get(row, "id")?),
        tenant_id: TenantId::from_uuid(get(row, "tenant_id")?),
        seq: u64::try_from(seq).map_err(|e| corrupt("seq")(e.into()))?,
        actor: actor(row, "actor_kind", "actor_id")?,
        action: parse(row, "action", AuditAction::new)?,
        target: Target {
            target_type: parse(row, "target_type", TargetType::new)?,
            id: get(row, "target_id")?,
        },
        metadata: Metadata::new(get(row, "metadata")?)
            .map_err(|e| corrupt("metadata")(e.into()))?,
        ip: ip
            .map(|text| text.parse::<IpAddr>())
            .transpose()
            .map_err(|e| corrupt("ip")(e.into()))?,
        user_agent: get(row, "user_agent")?,
        occurred_at,
        prev_hash: ChainHash::from_bytes(hash32(row, "prev_hash")?),
        hash: ChainHash::from_bytes(hash32(row, "hash")?),
    })
}
