//! [`Directory`]: the tenant, member and invitation workflows apps need, each
//! atomic and audited.

mod provision;

use std::io::Write;
use std::sync::Arc;

use serde_json::json;
use time::{Duration, OffsetDateTime};

use crate::audit::{
    self, AuditAction, AuditContext, AuditEvent, AuditQuery, ChainReport, ExportError,
    ExportFormat, NewAuditEvent, Target,
};
use crate::clock::{Clock, SystemClock, truncate_to_micros};
use crate::error::{Conflict, Entity, StoreError};
use crate::grants::{GrantCheck, Grantor};
use crate::id::{InvitationId, MembershipId, TenantId, UserId};
use crate::invitation::{Invitation, InvitationStatus, InvitationToken};
use crate::membership::{Member, Membership, MembershipStatus, RoleName, RoleSet, UserTenant};
use crate::page::{Page, PageRequest, PageSize};
use crate::scope::TenantScope;
use crate::seats::Seats;
use crate::store::{
    AuditLog, Backend, InvitationStore, MembershipStore, TenantStore, Transaction, UserStore,
};
use crate::tenant::{NewTenant, Tenant, TenantStatus, TenantUpdate};
use crate::text::Metadata;
use crate::user::{DisplayName, Email, NewUser, User, UserStatus};

pub use provision::Provisioned;

/// The audit actions [`Directory`] records, for filtering the log.
pub mod actions {
    /// A tenant was created with its first owner.
    pub const TENANT_CREATED: &str = "tenant.created";
    /// A tenant's slug, name or metadata changed.
    pub const TENANT_UPDATED: &str = "tenant.updated";
    /// A tenant was suspended.
    pub const TENANT_SUSPENDED: &str = "tenant.suspended";
    /// A suspended tenant was reactivated.
    pub const TENANT_REACTIVATED: &str = "tenant.reactivated";
    /// A tenant was soft-deleted.
    pub const TENANT_DELETED: &str = "tenant.deleted";
    /// Someone was invited.
    pub const MEMBER_INVITED: &str = "member.invited";
    /// An invitation was withdrawn.
    pub const INVITATION_REVOKED: &str = "invitation.revoked";
    /// An invitee accepted and became a member.
    pub const MEMBER_JOINED: &str = "member.joined";
    /// A member's roles changed.
    pub const MEMBER_ROLE_CHANGED: &str = "member.role_changed";
    /// A member was suspended.
    pub const MEMBER_SUSPENDED: &str = "member.suspended";
    /// A suspended member was reactivated.
    pub const MEMBER_REACTIVATED: &str = "member.reactivated";
    /// A member was removed.
    pub const MEMBER_REMOVED: &str = "member.removed";
    /// A member was added without an invitation, by provisioning
    /// ([`super::Directory::provision_member`]).
    pub const MEMBER_PROVISIONED: &str = "member.provisioned";
}

/// What a [`Directory`] workflow can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// A store failure: not found, conflict, invalid input or unavailable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The tenant is suspended or deleted.
    #[error("tenant is {status}")]
    TenantNotActive {
        /// Its status.
        status: TenantStatus,
    },
    /// The tenant cannot move between these statuses.
    #[error("tenant cannot go from {from} to {to}")]
    InvalidTransition {
        /// Its current status.
        from: TenantStatus,
        /// The status asked for.
        to: TenantStatus,
    },
    /// The change would leave the tenant without an active owner.
    #[error("the tenant must keep at least one active owner")]
    LastOwner,
    /// The user is already a member of the tenant.
    #[error("user is already a member of this tenant")]
    AlreadyMember,
    /// The user account is disabled.
    #[error("user account is disabled")]
    UserDisabled,
    /// The invitation token is malformed or matches no invitation.
    #[error("invitation not found")]
    InvitationNotFound,
    /// The invitation was already accepted.
    #[error("invitation has already been accepted")]
    InvitationAlreadyAccepted,
    /// The invitation was revoked.
    #[error("invitation has been revoked")]
    InvitationRevoked,
    /// The invitation expired.
    #[error("invitation expired at {expires_at}")]
    InvitationExpired {
        /// When it expired.
        expires_at: OffsetDateTime,
    },
    /// The invitation was sent to another email address.
    #[error("invitation was sent to a different email address")]
    InvitationEmailMismatch,
    /// The invited address already has an account: its owner must sign in
    /// and accept as that user.
    #[error("an account already exists for this email address; sign in to accept")]
    AccountExists,
    /// Whoever sent the invitation can no longer grant its roles: they are
    /// no longer an active member, or (asked of the directory's
    /// [`GrantCheck`]) they lost the power since. The acceptance is
    /// refused and the invitation revoked; the invitee needs a new one.
    #[error(
        "the sender of this invitation can no longer grant its roles; ask for a new invitation"
    )]
    InviterLacksPower,
    /// Inviting, provisioning, accepting an invitation or reactivating a
    /// member would fill more seats (active members and pending
    /// invitations) than the tenant's hard limit ([`crate::Seats`]).
    #[error(
        "the tenant's plan allows {limit} seats and all are taken (members and pending invitations)"
    )]
    SeatLimitReached {
        /// The limit.
        limit: u64,
    },
}

/// Who accepts an invitation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acceptor {
    /// A signed-in user (the caller authenticated them); their email must
    /// be the invited address.
    User(UserId),
    /// Someone without an account. One is created for the invited address,
    /// marked verified since the token reached it. If the address already
    /// has an account, this fails with [`DirectoryError::AccountExists`]:
    /// attaching an invitation to an account nobody proved to own would let
    /// whoever registered the address first take the membership.
    NewUser {
        /// How the new user is shown to others.
        display_name: Option<DisplayName>,
    },
}

/// Who owns a new tenant.
#[derive(Debug, Clone)]
pub enum Owner {
    /// A user who already exists.
    Existing(UserId),
    /// A user created together with the tenant.
    New(NewUser),
}

/// The result of [`Directory::create_tenant`].
#[derive(Debug, Clone)]
pub struct CreatedTenant {
    /// The tenant.
    pub tenant: Tenant,
    /// Its owner.
    pub owner: User,
    /// The owner's membership.
    pub membership: Membership,
}

/// The result of [`Directory::invite`]. The token is shown here once; only
/// its hash is stored.
#[derive(Debug, Clone)]
pub struct IssuedInvitation {
    /// The invitation.
    pub invitation: Invitation,
    /// The secret to send to the invitee.
    pub token: InvitationToken,
}

/// The result of [`Directory::accept_invitation`].
#[derive(Debug, Clone)]
pub struct Acceptance {
    /// The member.
    pub user: User,
    /// The new membership.
    pub membership: Membership,
    /// Whether the user was created by accepting.
    pub user_created: bool,
}

/// The tenant, membership and invitation workflows, over any [`Backend`].
///
/// Each workflow runs in one transaction that also appends its audit event,
/// so a change and its record happen together or not at all.
///
/// ```
/// # #[cfg(feature = "memory")]
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use tenancy_core::*;
///
/// let directory = Directory::new(Arc::new(MemoryBackend::new()));
/// let created = directory
///     .create_tenant(
///         NewTenant::new(Slug::new("acme")?, TenantName::new("Acme")?),
///         Owner::New(NewUser::new(Email::new("ann@acme.test")?)),
///         &AuditContext::system(),
///     )
///     .await?;
/// let scope = directory.scope(created.tenant.id).await?;
/// let members = directory.list_members(&scope, &PageRequest::default()).await?;
/// assert_eq!(members.items.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Directory {
    backend: Arc<dyn Backend>,
    clock: Arc<dyn Clock>,
    invitation_ttl: Duration,
    grants: Option<Arc<dyn GrantCheck>>,
    seats: Option<Arc<dyn Seats>>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("invitation_ttl", &self.invitation_ttl)
            .field("grant_check", &self.grants.is_some())
            .field("seat_limit", &self.seats.is_some())
            .finish_non_exhaustive()
    }
}

type Result<T, E = DirectoryError> = std::result::Result<T, E>;

impl Directory {
    /// How long invitations stay valid unless configured: 7 days.
    pub const DEFAULT_INVITATION_TTL: Duration = Duration::days(7);

    /// A directory over `backend`, on the system clock.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            clock: Arc::new(SystemClock),
            invitation_ttl: Self::DEFAULT_INVITATION_TTL,
            grants: None,
            seats: None,
        }
    }

    /// Re-checks invitations against their sender's current powers with
    /// `check`: when one is accepted (refused with
    /// [`DirectoryError::InviterLacksPower`] and revoked if the sender can
    /// no longer grant its roles) and when the sender's roles change (what
    /// they could no longer send is revoked in the same transaction).
    /// Without a check, an acceptance still requires that a member who
    /// sent the invitation be an active member.
    pub fn with_grant_check(mut self, check: Arc<dyn GrantCheck>) -> Self {
        self.grants = Some(check);
        self
    }

    /// Refuses invitations past the tenant's seat limit, as `seats` says
    /// ([`DirectoryError::SeatLimitReached`]), counted under the tenant's
    /// lock so concurrent invitations cannot overshoot it; tells `seats`
    /// when a tenant's active members change.
    pub fn with_seats(mut self, seats: Arc<dyn Seats>) -> Self {
        self.seats = Some(seats);
        self
    }

    /// The tenant's hard seat limit (`None`: unlimited, or no
    /// [`Seats`](crate::Seats) wired). Read it before opening a transaction
    /// and pass it to [`Directory::accept_invitation_in`].
    pub async fn seat_limit(&self, tenant_id: TenantId) -> Result<Option<u64>> {
        match &self.seats {
            Some(seats) => Ok(seats.seat_limit(tenant_id).await?),
            None => Ok(None),
        }
    }

    /// Tells the directory's [`Seats`] that the tenant's active members
    /// changed. The directory does so after each change it commits; a
    /// caller of [`Directory::accept_invitation_in`] calls it after its
    /// own commit.
    pub fn members_changed(&self, tenant_id: TenantId) {
        if let Some(seats) = &self.seats {
            seats.members_changed(tenant_id);
        }
    }

    /// Uses `clock` for timestamps and expiry (tests use [`crate::ManualClock`]).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets how long new invitations stay valid, clamped to one minute ..= 365 days.
    pub fn with_invitation_ttl(mut self, ttl: Duration) -> Self {
        self.invitation_ttl = ttl.clamp(Duration::MINUTE, Duration::days(365));
        self
    }

    /// The backend, for reads the directory does not wrap.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    fn now(&self) -> OffsetDateTime {
        truncate_to_micros(self.clock.now())
    }

    fn event(
        &self,
        context: &AuditContext,
        action: &str,
        target: (&str, &dyn std::fmt::Display),
        metadata: serde_json::Value,
    ) -> Result<NewAuditEvent> {
        let action = AuditAction::new(action).map_err(StoreError::from)?;
        let target = Target::new(target.0, target.1).map_err(StoreError::from)?;
        let metadata = Metadata::new(metadata).map_err(StoreError::from)?;
        Ok(NewAuditEvent::new(
            context,
            action,
            target,
            metadata,
            self.now(),
        ))
    }

    /// Creates a user who belongs to no tenant yet.
    #[tracing::instrument(skip_all, err(Debug))]
    pub async fn create_user(&self, new: NewUser) -> Result<User> {
        let user = self.user_from(new);
        self.backend.insert_user(&user).await?;
        Ok(user)
    }

    fn user_from(&self, new: NewUser) -> User {
        let now = self.now();
        User {
            id: UserId::new(),
            email: new.email,
            display_name: new.display_name,
            email_verified: new.email_verified,
            status: UserStatus::Active,
            created_at: now,
            updated_at: now,
        }
    }

    /// Creates a tenant with its first owner: the tenant, the owner (if
    /// new), the owner's membership and a `tenant.created` event, in one
    /// transaction.
    pub async fn create_tenant(
        &self,
        new: NewTenant,
        owner: Owner,
        context: &AuditContext,
    ) -> Result<CreatedTenant> {
        let tx = self.backend.begin().await?;
        let created = self.create_tenant_in(&*tx, new, owner, context).await?;
        tx.commit().await?;
        Ok(created)
    }

    /// [`Directory::create_tenant`] as part of `tx`, which the caller
    /// commits (or drops, undoing it), so other writes can join it.
    #[tracing::instrument(skip_all, fields(tenant_id = tracing::field::Empty), err(Debug))]
    pub async fn create_tenant_in(
        &self,
        tx: &dyn Transaction,
        new: NewTenant,
        owner: Owner,
        context: &AuditContext,
    ) -> Result<CreatedTenant> {
        let now = self.now();
        let tenant = Tenant {
            id: TenantId::new(),
            slug: new.slug,
            name: new.name,
            status: TenantStatus::Active,
            metadata: new.metadata,
            created_at: now,
            updated_at: now,
        };
        tracing::Span::current().record("tenant_id", tracing::field::display(tenant.id));
        tx.insert_tenant(&tenant).await?;
        let owner = match owner {
            Owner::Existing(id) => tx.get_user(id).await?,
            Owner::New(new) => {
                let user = self.user_from(new);
                tx.insert_user(&user).await?;
                user
            }
        };
        if owner.status == UserStatus::Disabled {
            return Err(DirectoryError::UserDisabled);
        }
        let membership = Membership {
            id: MembershipId::new(),
            tenant_id: tenant.id,
            user_id: owner.id,
            roles: RoleSet::single(RoleName::OWNER),
            status: MembershipStatus::Active,
            created_at: now,
            updated_at: now,
        };
        tx.insert_membership(&membership).await?;
        let event = self.event(
            context,
            actions::TENANT_CREATED,
            ("tenant", &tenant.id),
            json!({ "slug": tenant.slug, "name": tenant.name, "owner_id": owner.id }),
        )?;
        tx.append_audit(tenant.id, event).await?;
        Ok(CreatedTenant {
            tenant,
            owner,
            membership,
        })
    }

    /// Checks that `tenant_id` exists and is active, and returns the scope
    /// tenant-owned workflows take.
    #[tracing::instrument(skip(self), err(Debug))]
    pub async fn scope(&self, tenant_id: TenantId) -> Result<TenantScope> {
        let tenant = self.backend.get_tenant(tenant_id).await?;
        ensure_active(&tenant)?;
        Ok(TenantScope::assume_resolved(tenant_id))
    }

    /// Reads a tenant in any status.
    #[tracing::instrument(skip(self), err(Debug))]
    pub async fn tenant(&self, tenant_id: TenantId) -> Result<Tenant> {
        Ok(self.backend.get_tenant(tenant_id).await?)
    }

    /// Changes a tenant's slug, name or metadata. Deleted tenants cannot change.
    #[tracing::instrument(skip(self, update, context), err(Debug))]
    pub async fn update_tenant(
        &self,
        tenant_id: TenantId,
        update: TenantUpdate,
        context: &AuditContext,
    ) -> Result<Tenant> {
        let tx = self.backend.begin().await?;
        let mut tenant = tx.lock_tenant(tenant_id).await?;
        if tenant.status == TenantStatus::Deleted {
            return Err(DirectoryError::TenantNotActive {
                status: tenant.status,
            });
        }
        let mut changed = serde_json::Map::new();
        if let Some(slug) = update.slug.filter(|s| *s != tenant.slug) {
            changed.insert("slug".into(), json!({ "from": tenant.slug, "to": slug }));
            tenant.slug = slug;
        }
        if let Some(name) = update.name.filter(|n| *n != tenant.name) {
            changed.insert("name".into(), json!({ "from": tenant.name, "to": name }));
            tenant.name = name;
        }
        if let Some(metadata) = update.metadata.filter(|m| *m != tenant.metadata) {
            changed.insert("metadata".into(), json!(true));
            tenant.metadata = metadata;
        }
        if changed.is_empty() {
            return Ok(tenant);
        }
        tenant.updated_at = self.now();
        tx.update_tenant(&tenant).await?;
        let event = self.event(
            context,
            actions::TENANT_UPDATED,
            ("tenant", &tenant.id),
            serde_json::Value::Object(changed),
        )?;
        tx.append_audit(tenant.id, event).await?;
        tx.commit().await?;
        Ok(tenant)
    }

    /// Suspends an active tenant: its members can no longer act in it.
    pub async fn suspend_tenant(
        &self,
        tenant_id: TenantId,
        context: &AuditContext,
    ) -> Result<Tenant> {
        self.transition(
            tenant_id,
            TenantStatus::Suspended,
            actions::TENANT_SUSPENDED,
            context,
        )
        .await
    }

    /// Reactivates a suspended tenant.
    pub async fn reactivate_tenant(
        &self,
        tenant_id: TenantId,
        context: &AuditContext,
    ) -> Result<Tenant> {
        self.transition(
            tenant_id,
            TenantStatus::Active,
            actions::TENANT_REACTIVATED,
            context,
        )
        .await
    }

    /// Soft-deletes a tenant. It stays stored with its audit log and slug,
    /// but no workflow acts on it again.
    pub async fn delete_tenant(
        &self,
        tenant_id: TenantId,
        context: &AuditContext,
    ) -> Result<Tenant> {
        self.transition(
            tenant_id,
            TenantStatus::Deleted,
            actions::TENANT_DELETED,
            context,
        )
        .await
    }

    #[tracing::instrument(skip(self, action, context), err(Debug))]
    async fn transition(
        &self,
        tenant_id: TenantId,
        to: TenantStatus,
        action: &str,
        context: &AuditContext,
    ) -> Result<Tenant> {
        let tx = self.backend.begin().await?;
        let mut tenant = tx.lock_tenant(tenant_id).await?;
        let from = tenant.status;
        let allowed = matches!(
            (from, to),
            (TenantStatus::Active, TenantStatus::Suspended)
                | (TenantStatus::Suspended, TenantStatus::Active)
                | (
                    TenantStatus::Active | TenantStatus::Suspended,
                    TenantStatus::Deleted
                )
        );
        if !allowed {
            return Err(DirectoryError::InvalidTransition { from, to });
        }
        tenant.status = to;
        tenant.updated_at = self.now();
        tx.update_tenant(&tenant).await?;
        let event = self.event(
            context,
            action,
            ("tenant", &tenant.id),
            json!({ "from": from, "to": to }),
        )?;
        tx.append_audit(tenant_id, event).await?;
        tx.commit().await?;
        Ok(tenant)
    }

    /// Locks the scope's tenant for the rest of `tx` and checks it is active.
    /// Marks `invitation` revoked in `tx` and appends its audit event,
    /// naming `reason` when the SDK revoked it rather than a person.
    async fn revoke_in(
        &self,
        tx: &dyn Transaction,
        tenant_id: TenantId,
        invitation: &mut Invitation,
        reason: Option<&str>,
        context: &AuditContext,
    ) -> Result<()> {
        invitation.status = InvitationStatus::Revoked;
        invitation.updated_at = self.now();
        tx.update_invitation(invitation).await?;
        let mut metadata = json!({ "email": invitation.email });
        if let Some(reason) = reason {
            metadata["reason"] = json!(reason);
        }
        let event = self.event(
            context,
            actions::INVITATION_REVOKED,
            ("invitation", &invitation.id),
            metadata,
        )?;
        tx.append_audit(tenant_id, event).await?;
        Ok(())
    }

    async fn lock_active(&self, tx: &dyn Transaction, tenant_id: TenantId) -> Result<Tenant> {
        let tenant = tx.lock_tenant(tenant_id).await?;
        ensure_active(&tenant)?;
        Ok(tenant)
    }

    /// Refuses one more active member of `tenant_id` in `tx` when its seats
    /// (active members and pending invitations) already reach `limit`, what
    /// [`Directory::seat_limit`] said before `tx` opened
    /// ([`DirectoryError::SeatLimitReached`]). For memberships created
    /// outside an invitation (single sign-on's just-in-time members); lock
    /// the tenant in `tx` first so concurrent additions are counted.
    pub async fn ensure_seat_in(
        &self,
        tx: &dyn Transaction,
        tenant_id: TenantId,
        limit: Option<u64>,
    ) -> Result<()> {
        if let Some(limit) = limit
            && crate::seats::seats_used(tx, tenant_id, self.now(), limit).await? >= limit
        {
            return Err(DirectoryError::SeatLimitReached { limit });
        }
        Ok(())
    }

    /// Invites `email` to the scope's tenant with `roles`. The returned token
    /// is the only copy of the secret; send it to the invitee.
    #[tracing::instrument(skip_all, fields(tenant_id = %scope.tenant_id()), err(Debug))]
    pub async fn invite(
        &self,
        scope: &TenantScope,
        email: Email,
        roles: RoleSet,
        context: &AuditContext,
    ) -> Result<IssuedInvitation> {
        let limit = self.seat_limit(scope.tenant_id()).await?;
        let tx = self.backend.begin().await?;
        let tenant = self.lock_active(&*tx, scope.tenant_id()).await?;
        if let Some(user) = tx.find_user_by_email(&email).await?
            && tx.find_membership(tenant.id, user.id).await?.is_some()
        {
            return Err(DirectoryError::AlreadyMember);
        }
        let now = self.now();
        if let Some(limit) = limit
            && crate::seats::seats_used(&*tx, tenant.id, now, limit).await? >= limit
        {
            return Err(DirectoryError::SeatLimitReached { limit });
        }
        // An expired invitation no longer blocks a new one for the address.
        if let Some(mut stale) = tx.find_pending_invitation(tenant.id, &email).await?
            && stale.is_expired_at(now)
        {
            stale.status = InvitationStatus::Expired;
            stale.updated_at = now;
            tx.update_invitation(&stale).await?;
        }
        let token = InvitationToken::generate(tenant.id);
        let invitation = Invitation {
            id: InvitationId::new(),
            tenant_id: tenant.id,
            email,
            roles,
            invited_by: context.actor,
            status: InvitationStatus::Pending,
            token_hash: *token.hash(),
            expires_at: now + self.invitation_ttl,
            created_at: now,
            updated_at: now,
            accepted_by: None,
        };
        tx.insert_invitation(&invitation).await?;
        let event = self.event(
            context,
            actions::MEMBER_INVITED,
            ("invitation", &invitation.id),
            json!({ "email": invitation.email, "roles": invitation.roles }),
        )?;
        tx.append_audit(tenant.id, event).await?;
        tx.commit().await?;
        Ok(IssuedInvitation { invitation, token })
    }

    /// Withdraws a pending invitation.
    #[tracing::instrument(skip_all, fields(tenant_id = %scope.tenant_id()), err(Debug))]
    pub async fn revoke_invitation(
        &self,
        scope: &TenantScope,
        invitation_id: InvitationId,
        context: &AuditContext,
    ) -> Result<Invitation> {
        let tx = self.backend.begin().await?;
        let tenant = self.lock_active(&*tx, scope.tenant_id()).await?;
        let mut invitation = tx.get_invitation(tenant.id, invitation_id).await?;
        ensure_pending(&invitation)?;
        self.revoke_in(&*tx, tenant.id, &mut invitation, None, context)
            .await?;
        tx.commit().await?;
        Ok(invitation)
    }

    /// Redeems an invitation. The audit actor is the accepting user;
    /// `context` contributes the request's address and user agent.
    ///
    /// Fails with a distinct error when the token is unknown, was already
    /// used, was revoked, has expired, was sent to another address than the
    /// signed-in user's, names an address that already has an account
    /// while no user is signed in, or was sent by someone who can no longer
    /// grant its roles ([`DirectoryError::InviterLacksPower`]; the
    /// invitation is then revoked, audited).
    pub async fn accept_invitation(
        &self,
        token: &InvitationToken,
        acceptor: Acceptor,
        context: &AuditContext,
    ) -> Result<Acceptance> {
        self.check_invitation_sender(token, context).await?;
        let seat_limit = self.seat_limit(token.tenant_id()).await?;
        let tx = self.backend.begin().await?;
        let accepted = match self
            .accept_invitation_in(&*tx, token, acceptor, seat_limit, context)
            .await
        {
            Err(DirectoryError::InviterLacksPower) => {
                drop(tx);
                self.withdraw_unbacked_invitation(token, context).await?;
                return Err(DirectoryError::InviterLacksPower);
            }
            other => other?,
        };
        tx.commit().await?;
        self.members_changed(accepted.membership.tenant_id);
        Ok(accepted)
    }

    /// [`Directory::accept_invitation`] as part of `tx`, which the caller
    /// commits (or drops, undoing it), so other writes (such as the new
    /// user's password) can join it.
    ///
    /// A member who sent the invitation is checked here, under the tenant's
    /// lock. An API key that sent it is not: its powers live in other
    /// stores, which may refuse reads while their own transaction (the
    /// caller's) is open; run [`Directory::check_invitation_sender`] before
    /// opening `tx`, as [`Directory::accept_invitation`] does.
    ///
    /// On [`DirectoryError::InviterLacksPower`] nothing was written: drop
    /// `tx`, then call [`Directory::withdraw_unbacked_invitation`] so the
    /// invitation is revoked and the refusal audited. After committing,
    /// call [`Directory::members_changed`].
    ///
    /// `seat_limit` is what [`Directory::seat_limit`] said before `tx`
    /// opened: an acceptance that would leave the tenant with more seats
    /// than that (the plan was downgraded after the invitation was sent)
    /// fails with [`DirectoryError::SeatLimitReached`].
    #[tracing::instrument(skip_all, fields(tenant_id = %token.tenant_id()), err(Debug))]
    pub async fn accept_invitation_in(
        &self,
        tx: &dyn Transaction,
        token: &InvitationToken,
        acceptor: Acceptor,
        seat_limit: Option<u64>,
        context: &AuditContext,
    ) -> Result<Acceptance> {
        let tenant_id = token.tenant_id();
        // Find the invitation before locking anything, so forged tokens
        // cannot queue up behind a tenant's workflows.
        let found = tx
            .find_invitation_by_token(tenant_id, token.hash())
            .await?
            .ok_or(DirectoryError::InvitationNotFound)?;
        let tenant = tx.lock_tenant(tenant_id).await?;
        // Read again under the lock: a concurrent acceptance may have won.
        let mut invitation = tx.get_invitation(tenant_id, found.id).await?;
        let now = self.now();
        ensure_pending(&invitation)?;
        ensure_active(&tenant)?;
        if invitation.is_expired_at(now) {
            return Err(DirectoryError::InvitationExpired {
                expires_at: invitation.expires_at,
            });
        }
        if self.unbacked(tx, &invitation, false).await?.is_some() {
            return Err(DirectoryError::InviterLacksPower);
        }
        // The pending invitation already holds one of the counted seats.
        if let Some(limit) = seat_limit
            && crate::seats::seats_used(tx, tenant_id, now, limit.saturating_add(1)).await? > limit
        {
            return Err(DirectoryError::SeatLimitReached { limit });
        }
        let (user, user_created) = match acceptor {
            Acceptor::User(id) => {
                let mut user = tx.lock_user(id).await?;
                if !invitation.email.same_address(&user.email) {
                    return Err(DirectoryError::InvitationEmailMismatch);
                }
                if user.status == UserStatus::Disabled {
                    return Err(DirectoryError::UserDisabled);
                }
                if !user.email_verified {
                    // The token reached this address and its owner is signed in.
                    user.email_verified = true;
                    user.updated_at = now;
                    tx.update_user(&user).await?;
                }
                (user, false)
            }
            Acceptor::NewUser { display_name } => {
                if tx.find_user_by_email(&invitation.email).await?.is_some() {
                    return Err(DirectoryError::AccountExists);
                }
                let mut new = NewUser::new(invitation.email.clone());
                new.display_name = display_name;
                new.email_verified = true;
                let user = self.user_from(new);
                match tx.insert_user(&user).await {
                    // Created concurrently by another acceptance.
                    Err(StoreError::Conflict(Conflict::UserEmail)) => {
                        return Err(DirectoryError::AccountExists);
                    }
                    other => other?,
                }
                (user, true)
            }
        };
        if tx.find_membership(tenant_id, user.id).await?.is_some() {
            return Err(DirectoryError::AlreadyMember);
        }
        let membership = Membership {
            id: MembershipId::new(),
            tenant_id,
            user_id: user.id,
            roles: invitation.roles.clone(),
            status: MembershipStatus::Active,
            created_at: now,
            updated_at: now,
        };
        tx.insert_membership(&membership).await?;
        invitation.status = InvitationStatus::Accepted;
        invitation.accepted_by = Some(user.id);
        invitation.updated_at = now;
        tx.update_invitation(&invitation).await?;
        let mut context = context.clone();
        context.actor = audit::Actor::User(user.id);
        let event = self.event(
            &context,
            actions::MEMBER_JOINED,
            ("membership", &membership.id),
            json!({ "invitation_id": invitation.id, "user_id": user.id, "roles": membership.roles }),
        )?;
        tx.append_audit(tenant_id, event).await?;
        Ok(Acceptance {
            user,
            membership,
            user_created,
        })
    }

    /// Fails with [`DirectoryError::InviterLacksPower`], revoking the
    /// invitation (see [`Directory::withdraw_unbacked_invitation`]), if
    /// the sender of the invitation `token` names can no longer grant its
    /// roles, whether a member or an API key. Run it before the
    /// transaction of [`Directory::accept_invitation_in`]; an unknown or
    /// no longer pending invitation passes (the acceptance then says why it
    /// cannot be used).
    pub async fn check_invitation_sender(
        &self,
        token: &InvitationToken,
        context: &AuditContext,
    ) -> Result<()> {
        match self.withdraw_unbacked_invitation(token, context).await? {
            Some(_) => Err(DirectoryError::InviterLacksPower),
            None => Ok(()),
        }
    }

    /// Revokes the invitation `token` names if it is still pending and its
    /// sender, a member or an API key, can no longer grant its roles,
    /// audited with the reason (`inviter_inactive` or
    /// `inviter_lacks_power`). Returns the revoked invitation, or `None`
    /// when there was nothing to revoke.
    #[tracing::instrument(skip_all, fields(tenant_id = %token.tenant_id()), err(Debug))]
    pub async fn withdraw_unbacked_invitation(
        &self,
        token: &InvitationToken,
        context: &AuditContext,
    ) -> Result<Option<Invitation>> {
        let tenant_id = token.tenant_id();
        let tx = self.backend.begin().await?;
        let Some(found) = tx.find_invitation_by_token(tenant_id, token.hash()).await? else {
            return Ok(None);
        };
        tx.lock_tenant(tenant_id).await?;
        let mut invitation = tx.get_invitation(tenant_id, found.id).await?;
        if invitation.status != InvitationStatus::Pending {
            return Ok(None);
        }
        let Some(reason) = self.unbacked(&*tx, &invitation, true).await? else {
            return Ok(None);
        };
        self.revoke_in(&*tx, tenant_id, &mut invitation, Some(reason), context)
            .await?;
        tx.commit().await?;
        Ok(Some(invitation))
    }

    /// Why `invitation`'s sender no longer backs it, if they do not: a
    /// member who sent it must still be an active member and (with a
    /// [`GrantCheck`]) able to grant its roles; an API key that sent it is
    /// asked of the check when `keys` (otherwise passed). Invitations the
    /// host sent as [`audit::Actor::System`] are always backed.
    async fn unbacked(
        &self,
        tx: &dyn Transaction,
        invitation: &Invitation,
        keys: bool,
    ) -> Result<Option<&'static str>> {
        let tenant_id = invitation.tenant_id;
        let grantor_roles;
        let grantor = match invitation.invited_by {
            // The host, or a tenant's identity provider, which invites no one.
            audit::Actor::System | audit::Actor::ScimToken(_) => return Ok(None),
            // A machine client of the authorization server backs no invitation.
            audit::Actor::OAuthClient(_) => return Ok(Some("inviter_inactive")),
            audit::Actor::User(user) => {
                match tx
                    .find_membership(tenant_id, user)
                    .await?
                    .filter(|m| m.status == MembershipStatus::Active)
                {
                    None => return Ok(Some("inviter_inactive")),
                    Some(membership) => grantor_roles = membership.roles,
                }
                Grantor::Member {
                    user,
                    roles: &grantor_roles,
                }
            }
            audit::Actor::ApiKey(key) if keys => Grantor::ApiKey(key),
            audit::Actor::ApiKey(_) => return Ok(None),
        };
        match &self.grants {
            Some(check)
                if !check
                    .may_grant(tx, tenant_id, grantor, &invitation.roles)
                    .await? =>
            {
                Ok(Some("inviter_lacks_power"))
            }
            _ => Ok(None),
        }
    }

    /// Replaces a member's roles. Refuses to take the owner role from the
    /// last active owner. With a [`GrantCheck`], the member's pending
    /// invitations that their new roles could no longer send are revoked
    /// in the same transaction, each audited (reason `sender_demoted`).
    #[tracing::instrument(skip_all, fields(tenant_id = %scope.tenant_id(), user_id = %user_id), err(Debug))]
    pub async fn change_roles(
        &self,
        scope: &TenantScope,
        user_id: UserId,
        roles: RoleSet,
        context: &AuditContext,
    ) -> Result<Membership> {
        let tx = self.backend.begin().await?;
        let mut membership = self.locked_member(&*tx, scope, user_id).await?;
        if membership.roles == roles {
            return Ok(membership);
        }
        if !roles.contains(&RoleName::OWNER) {
            ensure_not_last_owner(&*tx, &membership).await?;
        }
        let previous = std::mem::replace(&mut membership.roles, roles);
        membership.updated_at = self.now();
        tx.update_membership(&membership).await?;
        let event = self.event(
            context,
            actions::MEMBER_ROLE_CHANGED,
            ("membership", &membership.id),
            json!({ "user_id": user_id, "from": previous, "to": membership.roles }),
        )?;
        tx.append_audit(membership.tenant_id, event).await?;
        if let Some(check) = &self.grants {
            let grantor = Grantor::Member {
                user: user_id,
                roles: &membership.roles,
            };
            for mut invitation in pending_sent_by(&*tx, membership.tenant_id, user_id).await? {
                if check
                    .may_grant(&*tx, membership.tenant_id, grantor, &invitation.roles)
                    .await?
                {
                    continue;
                }
                self.revoke_in(
                    &*tx,
                    membership.tenant_id,
                    &mut invitation,
                    Some("sender_demoted"),
                    context,
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(membership)
    }

    /// Suspends a member: the membership stays but grants nothing. Refuses
    /// to suspend the last active owner.
    pub async fn suspend_member(
        &self,
        scope: &TenantScope,
        user_id: UserId,
        context: &AuditContext,
    ) -> Result<Membership> {
        self.set_member_status(scope, user_id, MembershipStatus::Suspended, context)
            .await
    }

    /// Reactivates a suspended member. A suspended member holds no seat:
    /// past the tenant's hard seat limit this fails with
    /// [`DirectoryError::SeatLimitReached`].
    pub async fn reactivate_member(
        &self,
        scope: &TenantScope,
        user_id: UserId,
        context: &AuditContext,
    ) -> Result<Membership> {
        self.set_member_status(scope, user_id, MembershipStatus::Active, context)
            .await
    }

    #[tracing::instrument(skip_all, fields(tenant_id = %scope.tenant_id(), user_id = %user_id), err(Debug))]
    async fn set_member_status(
        &self,
        scope: &TenantScope,
        user_id: UserId,
        status: MembershipStatus,
        context: &AuditContext,
    ) -> Result<Membership> {
        let limit = match status {
            MembershipStatus::Active => self.seat_limit(scope.tenant_id()).await?,
            _ => None,
        };
        let tx = self.backend.begin().await?;
        let mut membership = self.locked_member(&*tx, scope, user_id).await?;
        if membership.status == status {
            return Ok(membership);
        }
        if status != MembershipStatus::Active {
            ensure_not_last_owner(&*tx, &membership).await?;
        }
        if let Some(limit) = limit
            && crate::seats::seats_used(&*tx, membership.tenant_id, self.now(), limit).await?
                >= limit
        {
            return Err(DirectoryError::SeatLimitReached { limit });
        }
        membership.status = status;
        membership.updated_at = self.now();
        tx.update_membership(&membership).await?;
        let action = match status {
            MembershipStatus::Active => actions::MEMBER_REACTIVATED,
            MembershipStatus::Suspended | MembershipStatus::Invited => actions::MEMBER_SUSPENDED,
        };
        let event = self.event(
            context,
            action,
            ("membership", &membership.id),
            json!({ "user_id": user_id }),
        )?;
        tx.append_audit(membership.tenant_id, event).await?;
        tx.commit().await?;
        self.members_changed(membership.tenant_id);
        Ok(membership)
    }

    /// Removes a member from the scope's tenant. Refuses to remove the last
    /// active owner.
    #[tracing::instrument(skip_all, fields(tenant_id = %scope.tenant_id(), user_id = %user_id), err(Debug))]
    pub async fn remove_member(
        &self,
        scope: &TenantScope,
        user_id: UserId,
        context: &AuditContext,
    ) -> Result<Membership> {
        let tx = self.backend.begin().await?;
        let membership = self.locked_member(&*tx, scope, user_id).await?;
        ensure_not_last_owner(&*tx, &membership).await?;
        tx.delete_membership(membership.tenant_id, membership.id)
            .await?;
        let event = self.event(
            context,
            actions::MEMBER_REMOVED,
            ("membership", &membership.id),
            json!({ "user_id": user_id, "roles": membership.roles }),
        )?;
        tx.append_audit(membership.tenant_id, event).await?;
        // What they sent goes with them: an invitation must not grant, after
        // its sender left, roles nobody in the tenant chose to grant.
        for mut invitation in pending_sent_by(&*tx, membership.tenant_id, user_id).await? {
            self.revoke_in(
                &*tx,
                membership.tenant_id,
                &mut invitation,
                Some("sender_removed"),
                context,
            )
            .await?;
        }
        tx.commit().await?;
        self.members_changed(membership.tenant_id);
        Ok(membership)
    }

    /// The scope's pending invitations sent by `user`, oldest first: what a
    /// host re-checks when the sender's powers shrink in ways the directory
    /// does not see (with a [`GrantCheck`], [`Directory::change_roles`]
    /// revokes those the sender could no longer send, and every acceptance
    /// re-checks).
    pub async fn pending_invitations_sent_by(
        &self,
        scope: &TenantScope,
        user: UserId,
    ) -> Result<Vec<Invitation>> {
        let tx = self.backend.begin().await?;
        let pending = pending_sent_by(&*tx, scope.tenant_id(), user).await?;
        tx.commit().await?;
        Ok(pending)
    }

    async fn locked_member(
        &self,
        tx: &dyn Transaction,
        scope: &TenantScope,
        user_id: UserId,
    ) -> Result<Membership> {
        let tenant = self.lock_active(tx, scope.tenant_id()).await?;
        tx.find_membership(tenant.id, user_id)
            .await?
            .ok_or(DirectoryError::Store(StoreError::NotFound(
                Entity::Membership,
            )))
    }

    /// Lists the scope's members with their users, oldest membership first.
    #[tracing::instrument(skip_all, fields(tenant_id = %scope.tenant_id()), err(Debug))]
    pub async fn list_members(
        &self,
        scope: &TenantScope,
        page: &PageRequest,
    ) -> Result<Page<Member>> {
        Ok(self.backend.list_members(scope.tenant_id(), page).await?)
    }

    /// Lists the scope's invitations in every status, oldest first.
    #[tracing::instrument(skip_all, fields(tenant_id = %scope.tenant_id()), err(Debug))]
    pub async fn list_invitations(
        &self,
        scope: &TenantScope,
        page: &PageRequest,
    ) -> Result<Page<Invitation>> {
        Ok(self
            .backend
            .list_invitations(scope.tenant_id(), page)
            .await?)
    }

    /// Lists the tenants a user belongs to (deleted ones left out), with
    /// the user's membership in each.
    #[tracing::instrument(skip(self, page), err(Debug))]
    pub async fn list_user_tenants(
        &self,
        user_id: UserId,
        page: &PageRequest,
    ) -> Result<Page<UserTenant>> {
        Ok(self.backend.list_user_tenants(user_id, page).await?)
    }

    /// Reads the scope's audit events matching `query`, oldest first.
    #[tracing::instrument(skip_all, fields(tenant_id = %scope.tenant_id()), err(Debug))]
    pub async fn audit_events(
        &self,
        scope: &TenantScope,
        query: &AuditQuery,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>> {
        Ok(self
            .backend
            .query_audit(scope.tenant_id(), query, page)
            .await?)
    }

    /// Re-verifies a tenant's audit chain (any status: deleted tenants keep
    /// their log).
    #[tracing::instrument(skip(self), err(Debug))]
    pub async fn verify_audit_chain(&self, tenant_id: TenantId) -> Result<ChainReport> {
        Ok(self.backend.verify_chain(tenant_id).await?)
    }

    /// Writes the scope's audit events matching `query` to `out` as JSON
    /// lines or CSV; returns how many were written.
    #[tracing::instrument(skip_all, fields(tenant_id = %scope.tenant_id()), err(Debug))]
    pub async fn export_audit<W: Write + Send>(
        &self,
        scope: &TenantScope,
        query: &AuditQuery,
        format: ExportFormat,
        out: W,
    ) -> Result<u64, ExportError> {
        audit::export(&*self.backend, scope.tenant_id(), query, format, out).await
    }
}

fn ensure_active(tenant: &Tenant) -> Result<()> {
    match tenant.status {
        TenantStatus::Active => Ok(()),
        status => Err(DirectoryError::TenantNotActive { status }),
    }
}

fn ensure_pending(invitation: &Invitation) -> Result<()> {
    match invitation.status {
        InvitationStatus::Pending => Ok(()),
        InvitationStatus::Accepted => Err(DirectoryError::InvitationAlreadyAccepted),
        InvitationStatus::Revoked => Err(DirectoryError::InvitationRevoked),
        InvitationStatus::Expired => Err(DirectoryError::InvitationExpired {
            expires_at: invitation.expires_at,
        }),
    }
}

/// Every pending invitation of `tenant` sent by `user`.
async fn pending_sent_by(
    tx: &dyn Transaction,
    tenant: TenantId,
    user: UserId,
) -> Result<Vec<Invitation>> {
    let mut found = Vec::new();
    let mut page = PageRequest::first(PageSize::MAX);
    loop {
        let listed = tx.list_invitations(tenant, &page).await?;
        found.extend(listed.items.into_iter().filter(|invitation| {
            invitation.status == InvitationStatus::Pending
                && invitation.invited_by == audit::Actor::User(user)
        }));
        match listed.next {
            Some(cursor) => page.after = Some(cursor),
            None => return Ok(found),
        }
    }
}

/// Fails if `membership` is the tenant's only active owner. Callers hold the
/// tenant lock, so no concurrent change can slip between count and write.
async fn ensure_not_last_owner(tx: &dyn Transaction, membership: &Membership) -> Result<()> {
    if membership.is_active_owner()
        && tx
            .count_active_with_role(membership.tenant_id, &RoleName::OWNER)
            .await?
            <= 1
    {
        return Err(DirectoryError::LastOwner);
    }
    Ok(())
}
