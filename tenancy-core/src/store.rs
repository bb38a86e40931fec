//! Store traits: what every storage backend provides.
//!
//! A backend implements the record stores ([`TenantStore`],
//! [`UserStore`], [`MembershipStore`], [`InvitationStore`], [`AuditLog`])
//! and the event [`Outbox`] on
//! its [`Transaction`] type, and [`Backend::begin`] to open one. Every
//! [`Backend`] is then also each of these stores, running each call in a
//! transaction of its own, so a host can hold `Arc<MemoryBackend>` or
//! `Arc<PgBackend>` as `Arc<dyn TenantStore>` and so on. Multi-step
//! workflows ([`crate::Directory`]) run in one transaction: all of it
//! happens, or none.
//!
//! Every tenant-owned method takes the [`TenantId`]; a record of another
//! tenant answers [`StoreError::NotFound`] as if it did not exist. The only
//! methods that read across tenants are named `admin_*`, plus
//! [`MembershipStore::list_user_tenants`], which reads one user's own
//! memberships. Timestamps are stored to the microsecond.
//!
//! `testkit` (feature `testkit`) holds the conformance suites that prove a
//! backend keeps these rules.

use async_trait::async_trait;

use crate::audit::{
    AuditEvent, AuditQuery, ChainEntry, ChainHead, ChainReport, ChainVerifier, NewAuditEvent,
};
use crate::error::StoreError;
use crate::id::{InvitationId, MembershipId, TenantId, UserId};
use crate::invitation::{Invitation, TokenHash};
use crate::membership::{Member, Membership, RoleName, UserTenant};
use crate::outbox::{Event, EventFeed, NewEvent, Outbox};
use crate::page::{Page, PageRequest};
use crate::tenant::{Slug, Tenant};
use crate::user::{Email, User};

/// Tenants. Slugs are unique across all tenants, deleted ones included.
#[async_trait]
pub trait TenantStore: Send + Sync {
    /// Inserts a new tenant; [`crate::Conflict::TenantSlug`] if the slug is taken.
    async fn insert_tenant(&self, tenant: &Tenant) -> Result<(), StoreError>;

    /// Reads a tenant.
    async fn get_tenant(&self, id: TenantId) -> Result<Tenant, StoreError>;

    /// Reads a tenant and, inside a transaction, locks it until the
    /// transaction ends, so concurrent workflows on one tenant (such as two
    /// owners removing each other) run one after the other.
    async fn lock_tenant(&self, id: TenantId) -> Result<Tenant, StoreError>;

    /// Finds a tenant by slug.
    async fn find_tenant_by_slug(&self, slug: &Slug) -> Result<Option<Tenant>, StoreError>;

    /// Replaces the slug, name, status, metadata and `updated_at` of an
    /// existing tenant.
    async fn update_tenant(&self, tenant: &Tenant) -> Result<(), StoreError>;

    /// Lists every tenant, oldest first. Crosses tenants: for operators only.
    async fn admin_list_tenants(&self, page: &PageRequest) -> Result<Page<Tenant>, StoreError>;
}

/// Users. Emails are unique, compared case-insensitively.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Inserts a new user; [`crate::Conflict::UserEmail`] if the email is taken.
    async fn insert_user(&self, user: &User) -> Result<(), StoreError>;

    /// Reads a user.
    async fn get_user(&self, id: UserId) -> Result<User, StoreError>;

    /// Reads a user and, inside a transaction, locks it until the
    /// transaction ends, so a read-modify-write cannot lose a concurrent change.
    async fn lock_user(&self, id: UserId) -> Result<User, StoreError>;

    /// Finds a user by email, ignoring case.
    async fn find_user_by_email(&self, email: &Email) -> Result<Option<User>, StoreError>;

    /// Replaces the email, display name, verification flag, status and
    /// `updated_at` of an existing user.
    async fn update_user(&self, user: &User) -> Result<(), StoreError>;

    /// Lists every user, oldest first. Crosses tenants: for operators only.
    async fn admin_list_users(&self, page: &PageRequest) -> Result<Page<User>, StoreError>;
}

/// Memberships of users in tenants; one per (tenant, user).
#[async_trait]
pub trait MembershipStore: Send + Sync {
    /// Inserts a membership. The tenant and the user must exist
    /// ([`StoreError::NotFound`]); [`crate::Conflict::Membership`] if the
    /// user is already a member.
    async fn insert_membership(&self, membership: &Membership) -> Result<(), StoreError>;

    /// Reads a membership of `tenant_id`.
    async fn get_membership(
        &self,
        tenant_id: TenantId,
        id: MembershipId,
    ) -> Result<Membership, StoreError>;

    /// Finds the membership of `user_id` in `tenant_id`.
    async fn find_membership(
        &self,
        tenant_id: TenantId,
        user_id: UserId,
    ) -> Result<Option<Membership>, StoreError>;

    /// Replaces the roles, status and `updated_at` of a membership of
    /// `membership.tenant_id`.
    async fn update_membership(&self, membership: &Membership) -> Result<(), StoreError>;

    /// Deletes a membership of `tenant_id`.
    async fn delete_membership(
        &self,
        tenant_id: TenantId,
        id: MembershipId,
    ) -> Result<(), StoreError>;

    /// Lists the members of `tenant_id` with their users, oldest membership first.
    async fn list_members(
        &self,
        tenant_id: TenantId,
        page: &PageRequest,
    ) -> Result<Page<Member>, StoreError>;

    /// Counts the active memberships of `tenant_id` that hold `role`.
    async fn count_active_with_role(
        &self,
        tenant_id: TenantId,
        role: &RoleName,
    ) -> Result<u64, StoreError>;

    /// Lists the tenants `user_id` belongs to with the membership in each,
    /// oldest membership first, leaving out deleted tenants. Reads across
    /// tenants, but only this one user's memberships.
    async fn list_user_tenants(
        &self,
        user_id: UserId,
        page: &PageRequest,
    ) -> Result<Page<UserTenant>, StoreError>;
}

/// Invitations. At most one pending invitation per (tenant, email).
#[async_trait]
pub trait InvitationStore: Send + Sync {
    /// Inserts an invitation; [`crate::Conflict::PendingInvitation`] if one
    /// is already pending for the email.
    async fn insert_invitation(&self, invitation: &Invitation) -> Result<(), StoreError>;

    /// Reads an invitation of `tenant_id`.
    async fn get_invitation(
        &self,
        tenant_id: TenantId,
        id: InvitationId,
    ) -> Result<Invitation, StoreError>;

    /// Finds the pending invitation of `tenant_id` for `email` (ignoring case).
    async fn find_pending_invitation(
        &self,
        tenant_id: TenantId,
        email: &Email,
    ) -> Result<Option<Invitation>, StoreError>;

    /// Finds the invitation of `tenant_id` whose token hashes to `token_hash`.
    async fn find_invitation_by_token(
        &self,
        tenant_id: TenantId,
        token_hash: &TokenHash,
    ) -> Result<Option<Invitation>, StoreError>;

    /// Replaces the status, `accepted_by` and `updated_at` of an invitation
    /// of `invitation.tenant_id`.
    async fn update_invitation(&self, invitation: &Invitation) -> Result<(), StoreError>;

    /// Lists the invitations of `tenant_id`, oldest first.
    async fn list_invitations(
        &self,
        tenant_id: TenantId,
        page: &PageRequest,
    ) -> Result<Page<Invitation>, StoreError>;
}

/// Append-only, hash-chained audit log, one chain per tenant.
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends an event as the next link of `tenant_id`'s chain. Concurrent
    /// appends to one tenant are serialized: the chain never forks.
    async fn append_audit(
        &self,
        tenant_id: TenantId,
        event: NewAuditEvent,
    ) -> Result<AuditEvent, StoreError>;

    /// Reads events of `tenant_id` matching `query`, in sequence order.
    async fn query_audit(
        &self,
        tenant_id: TenantId,
        query: &AuditQuery,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>, StoreError>;

    /// The newest link of `tenant_id`'s chain, recorded apart from the events.
    async fn audit_head(&self, tenant_id: TenantId) -> Result<Option<ChainHead>, StoreError>;

    /// Reads up to `limit` stored events of `tenant_id` after sequence
    /// number `after`, in order, for verification: events that no longer
    /// decode are returned as [`ChainEntry::Corrupt`] instead of failing.
    async fn read_chain(
        &self,
        tenant_id: TenantId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ChainEntry>, StoreError>;

    /// Re-verifies `tenant_id`'s whole chain against its recorded head and
    /// reports the first broken link. Runs while appends continue: events
    /// appended meanwhile are checked too, and are not a break.
    async fn verify_chain(&self, tenant_id: TenantId) -> Result<ChainReport, StoreError> {
        const BATCH: usize = 1000;
        let head_before = self.audit_head(tenant_id).await?;
        let mut verifier = ChainVerifier::new();
        let mut after = 0;
        'read: loop {
            let batch = self.read_chain(tenant_id, after, BATCH).await?;
            for entry in &batch {
                let (seq, intact) = match entry {
                    ChainEntry::Event(event) => (event.seq, verifier.push(event)),
                    ChainEntry::Corrupt { seq } => (*seq, verifier.push_corrupt(*seq)),
                };
                if !intact {
                    break 'read;
                }
                after = seq;
            }
            if batch.len() < BATCH {
                break;
            }
        }
        let head_after = self.audit_head(tenant_id).await?;
        Ok(verifier.finish(head_before, head_after))
    }
}

/// A unit of work over every store: changes become visible together on
/// [`Transaction::commit`], and are discarded if it is dropped uncommitted.
#[async_trait]
pub trait Transaction:
    TenantStore + UserStore + MembershipStore + InvitationStore + AuditLog + Outbox
{
    /// Makes the changes durable and visible.
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// A storage backend: opens transactions. Every backend is also each of
/// the record stores, with one transaction per call, and the
/// [`EventFeed`] relays read its outbox through (an `Arc<dyn Backend>`
/// converts to an `Arc<dyn EventFeed>`).
#[async_trait]
pub trait Backend: EventFeed + Send + Sync + 'static {
    /// Opens a transaction.
    async fn begin(&self) -> Result<Box<dyn Transaction>, StoreError>;
}

/// Runs one store call in a transaction of its own.
macro_rules! autocommit {
    ($backend:ident, $method:ident($($arg:expr),*)) => {{
        let tx = $backend.begin().await?;
        let out = tx.$method($($arg),*).await?;
        tx.commit().await?;
        Ok(out)
    }};
}

#[async_trait]
impl<B: Backend + ?Sized> TenantStore for B {
    async fn insert_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        autocommit!(self, insert_tenant(tenant))
    }
    async fn get_tenant(&self, id: TenantId) -> Result<Tenant, StoreError> {
        autocommit!(self, get_tenant(id))
    }
    async fn lock_tenant(&self, id: TenantId) -> Result<Tenant, StoreError> {
        autocommit!(self, lock_tenant(id))
    }
    async fn find_tenant_by_slug(&self, slug: &Slug) -> Result<Option<Tenant>, StoreError> {
        autocommit!(self, find_tenant_by_slug(slug))
    }
    async fn update_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        autocommit!(self, update_tenant(tenant))
    }
    async fn admin_list_tenants(&self, page: &PageRequest) -> Result<Page<Tenant>, StoreError> {
        autocommit!(self, admin_list_tenants(page))
    }
}

#[async_trait]
impl<B: Backend + ?Sized> UserStore for B {
    async fn insert_user(&self, user: &User) -> Result<(), StoreError> {
        autocommit!(self, insert_user(user))
    }
    async fn get_user(&self, id: UserId) -> Result<User, StoreError> {
        autocommit!(self, get_user(id))
    }
    async fn lock_user(&self, id: UserId) -> Result<User, StoreError> {
        autocommit!(self, lock_user(id))
    }
    async fn find_user_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        autocommit!(self, find_user_by_email(email))
    }
    async fn update_user(&self, user: &User) -> Result<(), StoreError> {
        autocommit!(self, update_user(user))
    }
    async fn admin_list_users(&self, page: &PageRequest) -> Result<Page<User>, StoreError> {
        autocommit!(self, admin_list_users(page))
    }
}

#[async_trait]
impl<B: Backend + ?Sized> MembershipStore for B {
    async fn insert_membership(&self, membership: &Membership) -> Result<(), StoreError> {
        autocommit!(self, insert_membership(membership))
    }
    async fn get_membership(
        &self,
        tenant_id: TenantId,
        id: MembershipId,
    ) -> Result<Membership, StoreError> {
        autocommit!(self, get_membership(tenant_id, id))
    }
    async fn find_membership(
        &self,
        tenant_id: TenantId,
        user_id: UserId,
    ) -> Result<Option<Membership>, StoreError> {
        autocommit!(self, find_membership(tenant_id, user_id))
    }
    async fn update_membership(&self, membership: &Membership) -> Result<(), StoreError> {
        autocommit!(self, update_membership(membership))
    }
    async fn delete_membership(
        &self,
        tenant_id: TenantId,
        id: MembershipId,
    ) -> Result<(), StoreError> {
        autocommit!(self, delete_membership(tenant_id, id))
    }
    async fn list_members(
        &self,
        tenant_id: TenantId,
        page: &PageRequest,
    ) -> Result<Page<Member>, StoreError> {
        autocommit!(self, list_members(tenant_id, page))
    }
    async fn count_active_with_role(
        &self,
        tenant_id: TenantId,
        role: &RoleName,
    ) -> Result<u64, StoreError> {
        autocommit!(self, count_active_with_role(tenant_id, role))
    }
    async fn list_user_tenants(
        &self,
        user_id: UserId,
        page: &PageRequest,
    ) -> Result<Page<UserTenant>, StoreError> {
        autocommit!(self, list_user_tenants(user_id, page))
    }
}

#[async_trait]
impl<B: Backend + ?Sized> InvitationStore for B {
    async fn insert_invitation(&self, invitation: &Invitation) -> Result<(), StoreError> {
        autocommit!(self, insert_invitation(invitation))
    }
    async fn get_invitation(
        &self,
        tenant_id: TenantId,
        id: InvitationId,
    ) -> Result<Invitation, StoreError> {
        autocommit!(self, get_invitation(tenant_id, id))
    }
    async fn find_invitation_by_token(
        &self,
        tenant_id: TenantId,
        token_hash: &TokenHash,
    ) -> Result<Option<Invitation>, StoreError> {
        autocommit!(self, find_invitation_by_token(tenant_id, token_hash))
    }
    async fn find_pending_invitation(
        &self,
        tenant_id: TenantId,
        email: &Email,
    ) -> Result<Option<Invitation>, StoreError> {
        autocommit!(self, find_pending_invitation(tenant_id, email))
    }
    async fn update_invitation(&self, invitation: &Invitation) -> Result<(), StoreError> {
        autocommit!(self, update_invitation(invitation))
    }
    async fn list_invitations(
        &self,
        tenant_id: TenantId,
        page: &PageRequest,
    ) -> Result<Page<Invitation>, StoreError> {
        autocommit!(self, list_invitations(tenant_id, page))
    }
}

#[async_trait]
impl<B: Backend + ?Sized> AuditLog for B {
    async fn append_audit(
        &self,
        tenant_id: TenantId,
        event: NewAuditEvent,
    ) -> Result<AuditEvent, StoreError> {
        autocommit!(self, append_audit(tenant_id, event))
    }
    async fn query_audit(
        &self,
        tenant_id: TenantId,
        query: &AuditQuery,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>, StoreError> {
        autocommit!(self, query_audit(tenant_id, query, page))
    }
    async fn audit_head(&self, tenant_id: TenantId) -> Result<Option<ChainHead>, StoreError> {
        autocommit!(self, audit_head(tenant_id))
    }
    async fn read_chain(
        &self,
        tenant_id: TenantId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ChainEntry>, StoreError> {
        autocommit!(self, read_chain(tenant_id, after, limit))
    }
}

#[async_trait]
impl<B: Backend + ?Sized> Outbox for B {
    async fn append_event(
        &self,
        tenant_id: TenantId,
        event: NewEvent,
    ) -> Result<Event, StoreError> {
        autocommit!(self, append_event(tenant_id, event))
    }
}
