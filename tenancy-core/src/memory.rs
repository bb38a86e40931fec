//! In-memory backend (feature `memory`, on by default).
//!
//! Every rule the Postgres backend enforces (uniqueness, tenant isolation,
//! ordering, pagination, chain integrity) holds here too; the shared
//! conformance suites prove it. Transactions take one lock over the whole
//! state, so they run one at a time, and work on a copy that replaces the
//! state on commit: persistent maps make that copy O(1).

use std::ops::Bound;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use imbl::{HashMap, HashSet, OrdMap, OrdSet, Vector};
use tokio::sync::OwnedMutexGuard;

use crate::audit::{AuditEvent, AuditQuery, ChainEntry, ChainHash, ChainHead, NewAuditEvent};
use crate::clock::truncate_to_micros;
use crate::error::{Conflict, Entity, StoreError};
use crate::id::{AuditEventId, InvitationId, MembershipId, TenantId, UserId};
use crate::invitation::{Invitation, InvitationStatus, TokenHash};
use crate::membership::{Member, Membership, MembershipStatus, RoleName, UserTenant};
use crate::page::{Cursor, Page, PageRequest};
use crate::store::{
    AuditLog, Backend, InvitationStore, MembershipStore, TenantStore, Transaction, UserStore,
};
use crate::tenant::{Slug, Tenant, TenantStatus};
use crate::user::{Email, User};

mod outbox;

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Stores everything in process memory. Cheap to clone: clones share the data.
///
/// ```
/// use std::sync::Arc;
/// use tenancy_core::{MemoryBackend, TenantStore};
/// let tenants: Arc<dyn TenantStore> = Arc::new(MemoryBackend::new());
/// # let _ = tenants;
/// ```
#[derive(Clone, Default)]
pub struct MemoryBackend {
    state: Arc<tokio::sync::Mutex<State>>,
    holder: Arc<Mutex<Option<Holder>>>,
    feed: Arc<Mutex<outbox::FeedState>>,
}

/// Who holds the state lock: a tokio task, or a thread blocking on a
/// future outside any task (such as `#[tokio::main]`'s).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Holder {
    Task(tokio::task::Id),
    Thread(std::thread::ThreadId),
}

impl Holder {
    fn current() -> Self {
        tokio::task::try_id()
            .map_or_else(|| Holder::Thread(std::thread::current().id()), Holder::Task)
    }
}

/// Clears the holder when its transaction ends, however it ends, unless
/// the next transaction's holder has already replaced it.
struct HolderGuard {
    slot: Arc<Mutex<Option<Holder>>>,
    holder: Holder,
}

impl Drop for HolderGuard {
    fn drop(&mut self) {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if *slot == Some(self.holder) {
            *slot = None;
        }
    }
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend").finish_non_exhaustive()
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn begin(&self) -> Result<Box<dyn Transaction>> {
        // Waiting for a lock this very task holds would never end.
        let me = Holder::current();
        if *self.holder.lock().unwrap_or_else(PoisonError::into_inner) == Some(me) {
            return Err(StoreError::NestedTransaction);
        }
        let committed = Arc::clone(&self.state).lock_owned().await;
        *self.holder.lock().unwrap_or_else(PoisonError::into_inner) = Some(me);
        let work = committed.clone();
        Ok(Box::new(MemoryTransaction {
            _holder: HolderGuard {
                slot: Arc::clone(&self.holder),
                holder: me,
            },
            inner: Mutex::new(Inner {
                committed,
                work,
                aborted: false,
            }),
        }))
    }
}

/// A transaction of [`MemoryBackend`]: holds the state lock until it ends.
struct MemoryTransaction {
    inner: Mutex<Inner>,
    _holder: HolderGuard,
}

struct Inner {
    committed: OwnedMutexGuard<State>,
    work: State,
    aborted: bool,
}

impl MemoryTransaction {
    /// Runs one operation. As in Postgres, a broken uniqueness rule aborts
    /// the transaction; a record that is simply absent does not.
    fn with<R>(&self, f: impl FnOnce(&mut State) -> Result<R>) -> Result<R> {
        self.run(|e| matches!(e, StoreError::Conflict(_)), f)
    }

    /// Runs an insert: any failure aborts the transaction, as a unique or
    /// foreign-key violation does in Postgres.
    fn with_insert<R>(&self, f: impl FnOnce(&mut State) -> Result<R>) -> Result<R> {
        self.run(|_| true, f)
    }

    fn run<R>(
        &self,
        aborts: impl FnOnce(&StoreError) -> bool,
        f: impl FnOnce(&mut State) -> Result<R>,
    ) -> Result<R> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.aborted {
            return Err(StoreError::TransactionAborted);
        }
        let out = f(&mut inner.work);
        if out.as_ref().is_err_and(aborts) {
            inner.aborted = true;
        }
        out
    }
}

#[derive(Clone, Default)]
struct State {
    tenants: OrdMap<TenantId, Tenant>,
    tenant_slugs: HashMap<Slug, TenantId>,
    users: OrdMap<UserId, User>,
    user_emails: HashMap<String, UserId>,
    memberships: OrdMap<MembershipId, Membership>,
    tenant_memberships: OrdSet<(TenantId, MembershipId)>,
    user_memberships: OrdSet<(UserId, MembershipId)>,
    member_pairs: HashMap<(TenantId, UserId), MembershipId>,
    invitations: OrdMap<InvitationId, Invitation>,
    tenant_invitations: OrdSet<(TenantId, InvitationId)>,
    invitation_tokens: HashMap<(TenantId, [u8; 32]), InvitationId>,
    pending_invitations: HashMap<(TenantId, String), InvitationId>,
    audit: HashMap<TenantId, Vector<AuditEvent>>,
    audit_ids: HashSet<AuditEventId>,
    outbox: outbox::Streams,
}

const MIN_MEMBERSHIP: MembershipId = MembershipId::from_uuid(uuid::Uuid::nil());
const MIN_INVITATION: InvitationId = InvitationId::from_uuid(uuid::Uuid::nil());

fn micros(mut tenant: Tenant) -> Tenant {
    tenant.created_at = truncate_to_micros(tenant.created_at);
    tenant.updated_at = truncate_to_micros(tenant.updated_at);
    tenant
}

impl State {
    fn tenant(&self, id: TenantId) -> Result<&Tenant> {
        self.tenants
            .get(&id)
            .ok_or(StoreError::NotFound(Entity::Tenant))
    }

    fn insert_tenant(&mut self, tenant: &Tenant) -> Result<()> {
        if self.tenants.contains_key(&tenant.id) {
            return Err(StoreError::Conflict(Conflict::Id(Entity::Tenant)));
        }
        if self.tenant_slugs.contains_key(&tenant.slug) {
            return Err(StoreError::Conflict(Conflict::TenantSlug));
        }
        self.tenant_slugs.insert(tenant.slug.clone(), tenant.id);
        self.tenants.insert(tenant.id, micros(tenant.clone()));
        Ok(())
    }

    fn update_tenant(&mut self, tenant: &Tenant) -> Result<()> {
        let existing = self.tenant(tenant.id)?.clone();
        if existing.slug != tenant.slug {
            if self.tenant_slugs.contains_key(&tenant.slug) {
                return Err(StoreError::Conflict(Conflict::TenantSlug));
            }
            self.tenant_slugs.remove(&existing.slug);
            self.tenant_slugs.insert(tenant.slug.clone(), tenant.id);
        }
        let updated = Tenant {
            created_at: existing.created_at,
            ..micros(tenant.clone())
        };
        self.tenants.insert(tenant.id, updated);
        Ok(())
    }

    fn list_tenants(&self, page: &PageRequest) -> Result<Page<Tenant>> {
        let after: Option<TenantId> = page.after_key("tenants")?;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let items = self
            .tenants
            .range::<_, TenantId>((lower, Bound::Unbounded))
            .take(page.size.get() + 1)
            .map(|(_, tenant)| tenant.clone())
            .collect();
        Ok(Page::from_overfetch(items, page.size, |t| {
            Cursor::encode("tenants", t.id)
        }))
    }

    fn user(&self, id: UserId) -> Result<&User> {
        self.users
            .get(&id)
            .ok_or(StoreError::NotFound(Entity::User))
    }

    fn insert_user(&mut self, user: &User) -> Result<()> {
        if self.users.contains_key(&user.id) {
            return Err(StoreError::Conflict(Conflict::Id(Entity::User)));
        }
        let key = user.email.unique_key();
        if self.user_emails.contains_key(&key) {
            return Err(StoreError::Conflict(Conflict::UserEmail));
        }
        self.user_emails.insert(key, user.id);
        self.users.insert(user.id, normalize_user(user.clone()));
        Ok(())
    }

    fn update_user(&mut self, user: &User) -> Result<()> {
        let existing = self.user(user.id)?.clone();
        let (old_key, new_key) = (existing.email.unique_key(), user.email.unique_key());
        if old_key != new_key {
            if self.user_emails.contains_key(&new_key) {
                return Err(StoreError::Conflict(Conflict::UserEmail));
            }
            self.user_emails.remove(&old_key);
            self.user_emails.insert(new_key, user.id);
        }
        let updated = User {
            created_at: existing.created_at,
            ..normalize_user(user.clone())
        };
        self.users.insert(user.id, updated);
        Ok(())
    }

    fn list_users(&self, page: &PageRequest) -> Result<Page<User>> {
        let after: Option<UserId> = page.after_key("users")?;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let items = self
            .users
            .range::<_, UserId>((lower, Bound::Unbounded))
            .take(page.size.get() + 1)
            .map(|(_, user)| user.clone())
            .collect();
        Ok(Page::from_overfetch(items, page.size, |u| {
            Cursor::encode("users", u.id)
        }))
    }

    fn membership(&self, tenant_id: TenantId, id: MembershipId) -> Result<&Membership> {
        self.memberships
            .get(&id)
            .filter(|m| m.tenant_id == tenant_id)
            .ok_or(StoreError::NotFound(Entity::Membership))
    }

    fn insert_membership(&mut self, membership: &Membership) -> Result<()> {
        if self.memberships.contains_key(&membership.id) {
            return Err(StoreError::Conflict(Conflict::Id(Entity::Membership)));
        }
        let pair = (membership.tenant_id, membership.user_id);
        if self.member_pairs.contains_key(&pair) {
            return Err(StoreError::Conflict(Conflict::Membership));
        }
        self.tenant(membership.tenant_id)?;
        self.user(membership.user_id)?;
        self.member_pairs.insert(pair, membership.id);
        self.tenant_memberships
            .insert((membership.tenant_id, membership.id));
        self.user_memberships
            .insert((membership.user_id, membership.id));
        self.memberships
            .insert(membership.id, normalize_membership(membership.clone()));
        Ok(())
    }

    fn update_membership(&mut self, membership: &Membership) -> Result<()> {
        let existing = self
            .membership(membership.tenant_id, membership.id)?
            .clone();
        let updated = Membership {
            roles: membership.roles.clone(),
            status: membership.status,
            updated_at: truncate_to_micros(membership.updated_at),
            ..existing
        };
        self.memberships.insert(membership.id, updated);
        Ok(())
    }

    fn delete_membership(&mut self, tenant_id: TenantId, id: MembershipId) -> Result<()> {
        let existing = self.membership(tenant_id, id)?.clone();
        self.memberships.remove(&id);
        self.member_pairs.remove(&(tenant_id, existing.user_id));
        self.tenant_memberships.remove(&(tenant_id, id));
        self.user_memberships.remove(&(existing.user_id, id));
        Ok(())
    }

    fn list_members(&self, tenant_id: TenantId, page: &PageRequest) -> Result<Page<Member>> {
        let after: Option<MembershipId> = page.after_key("members")?;
        let mut items = Vec::new();
        let from = (tenant_id, after.unwrap_or(MIN_MEMBERSHIP));
        for &(tenant, id) in self.tenant_memberships.range(from..) {
            if tenant != tenant_id || items.len() > page.size.get() {
                break;
            }
            if Some(id) == after {
                continue;
            }
            let membership = self.membership(tenant_id, id)?.clone();
            let user = self.user(membership.user_id)?.clone();
            items.push(Member { user, membership });
        }
        Ok(Page::from_overfetch(items, page.size, |m| {
            Cursor::encode("members", m.membership.id)
        }))
    }

    fn count_active_with_role(&self, tenant_id: TenantId, role: &RoleName) -> Result<u64> {
        let from = (tenant_id, MIN_MEMBERSHIP);
        let mut count = 0;
        for &(tenant, id) in self.tenant_memberships.range(from..) {
            if tenant != tenant_id {
                break;
            }
            let membership = self.membership(tenant_id, id)?;
            if membership.status == MembershipStatus::Active && membership.roles.contains(role) {
                count += 1;
            }
        }
        Ok(count)
    }

    fn list_user_tenants(&self, user_id: UserId, page: &PageRequest) -> Result<Page<UserTenant>> {
        let after: Option<MembershipId> = page.after_key("user-tenants")?;
        let mut items = Vec::new();
        let from = (user_id, after.unwrap_or(MIN_MEMBERSHIP));
        for &(user, id) in self.user_memberships.range(from..) {
            if user != user_id || items.len() > page.size.get() {
                break;
            }
            if Some(id) == after {
                continue;
            }
            let Some(membership) = self.memberships.get(&id) else {
                continue;
            };
            let tenant = self.tenant(membership.tenant_id)?;
            if tenant.status != TenantStatus::Deleted {
                items.push(UserTenant {
                    tenant: tenant.clone(),
                    membership: membership.clone(),
                });
            }
        }
        Ok(Page::from_overfetch(items, page.size, |ut| {
            Cursor::encode("user-tenants", ut.membership.id)
        }))
    }

    fn invitation(&self, tenant_id: TenantId, id: InvitationId) -> Result<&Invitation> {
        self.invitations
            .get(&id)
            .filter(|i| i.tenant_id == tenant_id)
            .ok_or(StoreError::NotFound(Entity::Invitation))
    }

    fn insert_invitation(&mut self, invitation: &Invitation) -> Result<()> {
        if self.invitations.contains_key(&invitation.id) {
            return Err(StoreError::Conflict(Conflict::Id(Entity::Invitation)));
        }
        let pending_key = (invitation.tenant_id, invitation.email.unique_key());
        if invitation.status == InvitationStatus::Pending
            && self.pending_invitations.contains_key(&pending_key)
        {
            return Err(StoreError::Conflict(Conflict::PendingInvitation));
        }
        self.tenant(invitation.tenant_id)?;
        if invitation.status == InvitationStatus::Pending {
            self.pending_invitations.insert(pending_key, invitation.id);
        }
        self.invitation_tokens.insert(
            (invitation.tenant_id, *invitation.token_hash.as_bytes()),
            invitation.id,
        );
        self.tenant_invitations
            .insert((invitation.tenant_id, invitation.id));
        self.invitations
            .insert(invitation.id, normalize_invitation(invitation.clone()));
        Ok(())
    }

    fn update_invitation(&mut self, invitation: &Invitation) -> Result<()> {
        let existing = self
            .invitation(invitation.tenant_id, invitation.id)?
            .clone();
        let pending_key = (existing.tenant_id, existing.email.unique_key());
        let was_pending = existing.status == InvitationStatus::Pending;
        let is_pending = invitation.status == InvitationStatus::Pending;
        if is_pending && !was_pending {
            if self.pending_invitations.contains_key(&pending_key) {
                return Err(StoreError::Conflict(Conflict::PendingInvitation));
            }
            self.pending_invitations.insert(pending_key, existing.id);
        } else if was_pending && !is_pending {
            self.pending_invitations.remove(&pending_key);
        }
        let updated = Invitation {
            status: invitation.status,
            accepted_by: invitation.accepted_by,
            updated_at: truncate_to_micros(invitation.updated_at),
            ..existing
        };
        self.invitations.insert(invitation.id, updated);
        Ok(())
    }

    fn find_pending_invitation(&self, tenant_id: TenantId, email: &Email) -> Option<Invitation> {
        self.pending_invitations
            .get(&(tenant_id, email.unique_key()))
            .and_then(|id| self.invitations.get(id))
            .cloned()
    }

    fn find_invitation_by_token(
        &self,
        tenant_id: TenantId,
        hash: &TokenHash,
    ) -> Option<Invitation> {
        self.invitation_tokens
            .get(&(tenant_id, *hash.as_bytes()))
            .and_then(|id| self.invitations.get(id))
            .filter(|i| i.tenant_id == tenant_id && i.token_hash == *hash)
            .cloned()
    }

    fn list_invitations(
        &self,
        tenant_id: TenantId,
        page: &PageRequest,
    ) -> Result<Page<Invitation>> {
        let after: Option<InvitationId> = page.after_key("invitations")?;
        let from = (tenant_id, after.unwrap_or(MIN_INVITATION));
        let mut items = Vec::new();
        for &(tenant, id) in self.tenant_invitations.range(from..) {
            if tenant != tenant_id || items.len() > page.size.get() {
                break;
            }
            if Some(id) != after {
                items.push(self.invitation(tenant_id, id)?.clone());
            }
        }
        Ok(Page::from_overfetch(items, page.size, |i| {
            Cursor::encode("invitations", i.id)
        }))
    }

    fn append_audit(&mut self, tenant_id: TenantId, event: NewAuditEvent) -> Result<AuditEvent> {
        if self.audit_ids.contains(&event.id) {
            return Err(StoreError::Conflict(Conflict::Id(Entity::AuditEvent)));
        }
        self.tenant(tenant_id)?;
        let chain = self.audit.entry(tenant_id).or_default();
        let prev = chain.last().map_or(ChainHash::GENESIS, |last| last.hash);
        let sealed = event.seal(tenant_id, chain.len() as u64 + 1, prev);
        chain.push_back(sealed.clone());
        self.audit_ids.insert(sealed.id);
        if let Some(event) = crate::outbox::event_for_audit(&sealed) {
            self.outbox.append(tenant_id, event, sealed.occurred_at)?;
        }
        Ok(sealed)
    }

    fn query_audit(
        &self,
        tenant_id: TenantId,
        query: &AuditQuery,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>> {
        let after: u64 = page.after_key("audit")?.unwrap_or(0);
        let items = self
            .audit
            .get(&tenant_id)
            .map(|chain| {
                chain
                    .iter()
                    .skip(usize::try_from(after).unwrap_or(usize::MAX))
                    .filter(|e| query.matches(e))
                    .take(page.size.get() + 1)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        Ok(Page::from_overfetch(items, page.size, |e| {
            Cursor::encode("audit", e.seq)
        }))
    }

    fn read_chain(&self, tenant_id: TenantId, after: u64, limit: usize) -> Vec<ChainEntry> {
        self.audit
            .get(&tenant_id)
            .map(|chain| {
                chain
                    .iter()
                    .skip(usize::try_from(after).unwrap_or(usize::MAX))
                    .take(limit)
                    .map(|event| ChainEntry::Event(Box::new(event.clone())))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn audit_head(&self, tenant_id: TenantId) -> Option<ChainHead> {
        self.audit
            .get(&tenant_id)
            .and_then(|chain| chain.last())
            .map(|last| ChainHead {
                seq: last.seq,
                hash: last.hash,
            })
    }
}

fn normalize_user(mut user: User) -> User {
    user.created_at = truncate_to_micros(user.created_at);
    user.updated_at = truncate_to_micros(user.updated_at);
    user
}

fn normalize_membership(mut membership: Membership) -> Membership {
    membership.created_at = truncate_to_micros(membership.created_at);
    membership.updated_at = truncate_to_micros(membership.updated_at);
    membership
}

fn normalize_invitation(mut invitation: Invitation) -> Invitation {
    invitation.created_at = truncate_to_micros(invitation.created_at);
    invitation.updated_at = truncate_to_micros(invitation.updated_at);
    invitation.expires_at = truncate_to_micros(invitation.expires_at);
    invitation
}

#[async_trait]
impl Transaction for MemoryTransaction {
    async fn commit(self: Box<Self>) -> Result<()> {
        let mut inner = self
            .inner
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        if inner.aborted {
            return Err(StoreError::TransactionAborted);
        }
        *inner.committed = inner.work;
        Ok(())
    }
}

#[async_trait]
impl TenantStore for MemoryTransaction {
    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %tenant.id), err)]
    async fn insert_tenant(&self, tenant: &Tenant) -> Result<()> {
        self.with_insert(|s| s.insert_tenant(tenant))
    }

    #[tracing::instrument(level = "debug", skip(self), fields(tenant_id = %id), err)]
    async fn get_tenant(&self, id: TenantId) -> Result<Tenant> {
        self.with(|s| s.tenant(id).cloned())
    }

    #[tracing::instrument(level = "debug", skip(self), fields(tenant_id = %id), err)]
    async fn lock_tenant(&self, id: TenantId) -> Result<Tenant> {
        // The transaction already holds the lock over all state.
        self.with(|s| s.tenant(id).cloned())
    }

    #[tracing::instrument(level = "debug", skip(self), err)]
    async fn find_tenant_by_slug(&self, slug: &Slug) -> Result<Option<Tenant>> {
        self.with(|s| {
            Ok(s.tenant_slugs
                .get(slug)
                .and_then(|id| s.tenants.get(id))
                .cloned())
        })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %tenant.id), err)]
    async fn update_tenant(&self, tenant: &Tenant) -> Result<()> {
        self.with(|s| s.update_tenant(tenant))
    }

    #[tracing::instrument(level = "debug", skip_all, err)]
    async fn admin_list_tenants(&self, page: &PageRequest) -> Result<Page<Tenant>> {
        self.with(|s| s.list_tenants(page))
    }
}

#[async_trait]
impl UserStore for MemoryTransaction {
    #[tracing::instrument(level = "debug", skip_all, fields(user_id = %user.id), err)]
    async fn insert_user(&self, user: &User) -> Result<()> {
        self.with_insert(|s| s.insert_user(user))
    }

    #[tracing::instrument(level = "debug", skip(self), err)]
    async fn get_user(&self, id: UserId) -> Result<User> {
        self.with(|s| s.user(id).cloned())
    }

    #[tracing::instrument(level = "debug", skip(self), err)]
    async fn lock_user(&self, id: UserId) -> Result<User> {
        // The transaction already holds the lock over all state.
        self.with(|s| s.user(id).cloned())
    }

    #[tracing::instrument(level = "debug", skip_all, err)]
    async fn find_user_by_email(&self, email: &Email) -> Result<Option<User>> {
        self.with(|s| {
            Ok(s.user_emails
                .get(&email.unique_key())
                .and_then(|id| s.users.get(id))
                .cloned())
        })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user_id = %user.id), err)]
    async fn update_user(&self, user: &User) -> Result<()> {
        self.with(|s| s.update_user(user))
    }

    #[tracing::instrument(level = "debug", skip_all, err)]
    async fn admin_list_users(&self, page: &PageRequest) -> Result<Page<User>> {
        self.with(|s| s.list_users(page))
    }
}

#[async_trait]
impl MembershipStore for MemoryTransaction {
    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %membership.tenant_id), err)]
    async fn insert_membership(&self, membership: &Membership) -> Result<()> {
        self.with_insert(|s| s.insert_membership(membership))
    }

    #[tracing::instrument(level = "debug", skip(self), err)]
    async fn get_membership(&self, tenant_id: TenantId, id: MembershipId) -> Result<Membership> {
        self.with(|s| s.membership(tenant_id, id).cloned())
    }

    #[tracing::instrument(level = "debug", skip(self), err)]
    async fn find_membership(
        &self,
        tenant_id: TenantId,
        user_id: UserId,
    ) -> Result<Option<Membership>> {
        self.with(|s| {
            Ok(s.member_pairs
                .get(&(tenant_id, user_id))
                .and_then(|id| s.memberships.get(id))
                .cloned())
        })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %membership.tenant_id), err)]
    async fn update_membership(&self, membership: &Membership) -> Result<()> {
        self.with(|s| s.update_membership(membership))
    }

    #[tracing::instrument(level = "debug", skip(self), err)]
    async fn delete_membership(&self, tenant_id: TenantId, id: MembershipId) -> Result<()> {
        self.with(|s| s.delete_membership(tenant_id, id))
    }

    #[tracing::instrument(level = "debug", skip(self, page), err)]
    async fn list_members(&self, tenant_id: TenantId, page: &PageRequest) -> Result<Page<Member>> {
        self.with(|s| s.list_members(tenant_id, page))
    }

    #[tracing::instrument(level = "debug", skip(self), err)]
    async fn count_active_with_role(&self, tenant_id: TenantId, role: &RoleName) -> Result<u64> {
        self.with(|s| s.count_active_with_role(tenant_id, role))
    }

    #[tracing::instrument(level = "debug", skip(self, page), err)]
    async fn list_user_tenants(
        &self,
        user_id: UserId,
        page: &PageRequest,
    ) -> Result<Page<UserTenant>> {
        self.with(|s| s.list_user_tenants(user_id, page))
    }
}

#[async_trait]
impl InvitationStore for MemoryTransaction {
    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %invitation.tenant_id), err)]
    async fn insert_invitation(&self, invitation: &Invitation) -> Result<()> {
        self.with_insert(|s| s.insert_invitation(invitation))
    }

    #[tracing::instrument(level = "debug", skip(self), err)]
    async fn get_invitation(&self, tenant_id: TenantId, id: InvitationId) -> Result<Invitation> {
        self.with(|s| s.invitation(tenant_id, id).cloned())
    }

    #[tracing::instrument(level = "debug", skip(self, token_hash), err)]
    async fn find_invitation_by_token(
        &self,
        tenant_id: TenantId,
        token_hash: &TokenHash,
    ) -> Result<Option<Invitation>> {
        self.with(|s| Ok(s.find_invitation_by_token(tenant_id, token_hash)))
    }

    #[tracing::instrument(level = "debug", skip(self, email), err)]
    async fn find_pending_invitation(
        &self,
        tenant_id: TenantId,
        email: &Email,
    ) -> Result<Option<Invitation>> {
        self.with(|s| Ok(s.find_pending_invitation(tenant_id, email)))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %invitation.tenant_id), err)]
    async fn update_invitation(&self, invitation: &Invitation) -> Result<()> {
        self.with(|s| s.update_invitation(invitation))
    }

    #[tracing::instrument(level = "debug", skip(self, page), err)]
    async fn list_invitations(
        &self,
        tenant_id: TenantId,
        page: &PageRequest,
    ) -> Result<Page<Invitation>> {
        self.with(|s| s.list_invitations(tenant_id, page))
    }
}

#[async_trait]
impl AuditLog for MemoryTransaction {
    #[tracing::instrument(level = "debug", skip(self, event), fields(action = %event.action), err)]
    async fn append_audit(&self, tenant_id: TenantId, event: NewAuditEvent) -> Result<AuditEvent> {
        event.validate()?;
        self.with_insert(|s| s.append_audit(tenant_id, event))
    }

    #[tracing::instrument(level = "debug", skip(self, query, page), err)]
    async fn query_audit(
        &self,
        tenant_id: TenantId,
        query: &AuditQuery,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>> {
        self.with(|s| s.query_audit(tenant_id, query, page))
    }

    #[tracing::instrument(level = "debug", skip(self), err)]
    async fn read_chain(
        &self,
        tenant_id: TenantId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ChainEntry>> {
        self.with(|s| Ok(s.read_chain(tenant_id, after, limit)))
    }

    #[tracing::instrument(level = "debug", skip(self), err)]
    async fn audit_head(&self, tenant_id: TenantId) -> Result<Option<ChainHead>> {
        self.with(|s| Ok(s.audit_head(tenant_id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_transaction_in_the_same_task_is_refused_not_deadlocked() {
        let backend = MemoryBackend::new();
        let tx = backend.begin().await.unwrap();
        assert!(matches!(
            backend.get_tenant(TenantId::new()).await,
            Err(StoreError::NestedTransaction)
        ));
        // Another task waits its turn instead.
        let other = backend.clone();
        let waiting = tokio::spawn(async move { other.get_tenant(TenantId::new()).await });
        drop(tx);
        assert!(matches!(
            waiting.await.unwrap(),
            Err(StoreError::NotFound(Entity::Tenant))
        ));
        backend.begin().await.unwrap().commit().await.unwrap();
    }
}
