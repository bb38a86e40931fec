//! Suites for the [`Directory`](crate::Directory) workflows.

use std::sync::Arc;

use time::Duration;

use super::{email, now, roles, slug};
use crate::audit::{ActionFilter, Actor, AuditContext, AuditQuery, ExportFormat};
use crate::clock::ManualClock;
use crate::directory::{Acceptance, Acceptor, Directory, DirectoryError, Owner, actions};
use crate::error::{Conflict, Entity, StoreError};
use crate::grants::{GrantCheck, Grantor};
use crate::id::{ApiKeyId, TenantId, UserId};
use crate::invitation::{InvitationStatus, InvitationToken};
use crate::membership::{MembershipStatus, RoleName, RoleSet};
use crate::page::{PageRequest, PageSize};
use crate::scope::TenantScope;
use crate::store::{
    AuditLog, Backend, InvitationStore, MembershipStore, TenantStore, Transaction, UserStore,
};
use crate::tenant::{NewTenant, TenantName, TenantStatus, TenantUpdate};
use crate::user::{DisplayName, NewUser, UserStatus};

fn directory(backend: Arc<dyn Backend>) -> (Directory, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(now()));
    (Directory::new(backend).with_clock(clock.clone()), clock)
}

fn new_tenant(slug_text: &str) -> NewTenant {
    NewTenant::new(
        slug(slug_text),
        TenantName::new(&format!("{slug_text} Inc.")).unwrap(),
    )
}

fn owner(address: &str) -> Owner {
    Owner::New(NewUser::new(email(address)))
}

async fn actions_of(directory: &Directory, scope: &TenantScope) -> Vec<String> {
    directory
        .audit_events(
            scope,
            &AuditQuery::all(),
            &PageRequest::first(PageSize::MAX),
        )
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| e.action.to_string())
        .collect()
}

/// Invites `address` with `role_names` and accepts as that address.
async fn join(
    directory: &Directory,
    scope: &TenantScope,
    address: &str,
    role_names: &[&str],
) -> Acceptance {
    let issued = directory
        .invite(
            scope,
            email(address),
            roles(role_names),
            &AuditContext::system(),
        )
        .await
        .unwrap();
    directory
        .accept_invitation(&issued.token, new_user(), &AuditContext::system())
        .await
        .unwrap()
}

fn new_user() -> Acceptor {
    Acceptor::NewUser { display_name: None }
}

macro_rules! assert_err {
    ($result:expr, $pattern:pat) => {
        match $result {
            Err($pattern) => {}
            other => panic!("expected {}, got {other:?}", stringify!($pattern)),
        }
    };
}

/// Tenant creation with its owner, lifecycle transitions, profile updates.
pub async fn directory_tenant_lifecycle(backend: Arc<dyn Backend>) {
    let (directory, _) = directory(backend.clone());
    let system = AuditContext::system();
    let created = directory
        .create_tenant(new_tenant("lifecycle"), owner("ann@example.com"), &system)
        .await
        .unwrap();
    assert_eq!(created.tenant.status, TenantStatus::Active);
    assert_eq!(created.membership.roles, roles(&["owner"]));
    assert_eq!(created.membership.user_id, created.owner.id);
    assert_eq!(
        backend.get_tenant(created.tenant.id).await.unwrap(),
        created.tenant
    );
    let id = created.tenant.id;
    let scope = directory.scope(id).await.unwrap();
    assert_eq!(scope.tenant_id(), id);

    assert_err!(
        directory
            .create_tenant(new_tenant("lifecycle"), owner("bob@example.com"), &system)
            .await,
        DirectoryError::Store(StoreError::Conflict(Conflict::TenantSlug))
    );
    assert_err!(
        directory
            .create_tenant(
                new_tenant("no-owner"),
                Owner::Existing(UserId::new()),
                &system
            )
            .await,
        DirectoryError::Store(StoreError::NotFound(Entity::User))
    );
    let mut disabled = backend
        .find_user_by_email(&email("ann@example.com"))
        .await
        .unwrap()
        .unwrap();
    let second = directory
        .create_tenant(
            new_tenant("second-home"),
            Owner::Existing(disabled.id),
            &system,
        )
        .await
        .unwrap();
    assert_eq!(second.owner.id, disabled.id);
    disabled.status = UserStatus::Disabled;
    backend.update_user(&disabled).await.unwrap();
    assert_err!(
        directory
            .create_tenant(
                new_tenant("disabled-owner"),
                Owner::Existing(disabled.id),
                &system
            )
            .await,
        DirectoryError::UserDisabled
    );
    assert_eq!(
        backend
            .find_tenant_by_slug(&slug("disabled-owner"))
            .await
            .unwrap(),
        None
    );

    let updated = directory
        .update_tenant(
            id,
            TenantUpdate {
                slug: Some(slug("lifecycle-renamed")),
                name: Some(TenantName::new("Renamed").unwrap()),
                metadata: None,
            },
            &system,
        )
        .await
        .unwrap();
    assert_eq!(updated.slug.as_str(), "lifecycle-renamed");
    assert_eq!(directory.tenant(id).await.unwrap(), updated);
    assert_err!(
        directory
            .update_tenant(
                second.tenant.id,
                TenantUpdate {
                    slug: Some(slug("lifecycle-renamed")),
                    ..TenantUpdate::default()
                },
                &system,
            )
            .await,
        DirectoryError::Store(StoreError::Conflict(Conflict::TenantSlug))
    );

    let suspended = directory.suspend_tenant(id, &system).await.unwrap();
    assert_eq!(suspended.status, TenantStatus::Suspended);
    assert_err!(
        directory.scope(id).await,
        DirectoryError::TenantNotActive {
            status: TenantStatus::Suspended
        }
    );
    assert_err!(
        directory.suspend_tenant(id, &system).await,
        DirectoryError::InvalidTransition {
            from: TenantStatus::Suspended,
            to: TenantStatus::Suspended
        }
    );
    // A scope taken before the suspension no longer works.
    assert_err!(
        directory
            .invite(
                &scope,
                email("late@example.com"),
                roles(&["member"]),
                &system
            )
            .await,
        DirectoryError::TenantNotActive { .. }
    );
    directory.reactivate_tenant(id, &system).await.unwrap();
    directory.scope(id).await.unwrap();
    let deleted = directory.delete_tenant(id, &system).await.unwrap();
    assert_eq!(deleted.status, TenantStatus::Deleted);
    assert_err!(
        directory.reactivate_tenant(id, &system).await,
        DirectoryError::InvalidTransition {
            from: TenantStatus::Deleted,
            to: TenantStatus::Active
        }
    );
    assert_err!(
        directory
            .update_tenant(id, TenantUpdate::default(), &system)
            .await,
        DirectoryError::TenantNotActive {
            status: TenantStatus::Deleted
        }
    );
    assert_err!(
        directory.suspend_tenant(TenantId::new(), &system).await,
        DirectoryError::Store(StoreError::NotFound(Entity::Tenant))
    );

    // The owner's tenant list leaves out the deleted tenant.
    let tenants = directory
        .list_user_tenants(created.owner.id, &PageRequest::default())
        .await
        .unwrap();
    let ids: Vec<_> = tenants.items.iter().map(|ut| ut.tenant.id).collect();
    assert_eq!(ids, vec![second.tenant.id]);

    // The deleted tenant keeps its log, ending with its deletion.
    let log = backend
        .query_audit(id, &AuditQuery::all(), &PageRequest::default())
        .await
        .unwrap()
        .items;
    let names: Vec<_> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        names,
        vec![
            actions::TENANT_CREATED,
            actions::TENANT_UPDATED,
            actions::TENANT_SUSPENDED,
            actions::TENANT_REACTIVATED,
            actions::TENANT_DELETED
        ]
    );
    assert_eq!(log[1].metadata.as_map()["slug"]["to"], "lifecycle-renamed");
    assert!(directory.verify_audit_chain(id).await.unwrap().is_intact());
}

/// A workflow that fails midway leaves nothing behind: here the tenant is
/// written, then creating its owner hits an email conflict.
pub async fn directory_atomic_rollback(backend: Arc<dyn Backend>) {
    let (directory, _) = directory(backend.clone());
    directory
        .create_user(NewUser::new(email("taken@example.com")))
        .await
        .unwrap();
    let before = backend
        .admin_list_tenants(&PageRequest::default())
        .await
        .unwrap()
        .items
        .len();
    assert_err!(
        directory
            .create_tenant(
                new_tenant("half-written"),
                owner("TAKEN@example.com"),
                &AuditContext::system()
            )
            .await,
        DirectoryError::Store(StoreError::Conflict(Conflict::UserEmail))
    );
    assert_eq!(
        backend
            .find_tenant_by_slug(&slug("half-written"))
            .await
            .unwrap(),
        None
    );
    let after = backend
        .admin_list_tenants(&PageRequest::default())
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(before, after);
    // The slug is still free.
    directory
        .create_tenant(
            new_tenant("half-written"),
            owner("fresh@example.com"),
            &AuditContext::system(),
        )
        .await
        .unwrap();
}

/// Invitations: issue, accept (as a new or a signed-in user), and each
/// distinct refusal: unknown, reused, revoked, expired, another address,
/// an existing account without sign-in, already a member, inactive tenant.
pub async fn directory_invitations(backend: Arc<dyn Backend>) {
    let (directory, clock) = directory(backend.clone());
    let system = AuditContext::system();
    let created = directory
        .create_tenant(new_tenant("inviting"), owner("owner@example.com"), &system)
        .await
        .unwrap();
    let tenant_id = created.tenant.id;
    let scope = directory.scope(tenant_id).await.unwrap();
    let as_owner = AuditContext::user(created.owner.id);
    let invite = |address: &'static str, role: &'static str| {
        let directory = directory.clone();
        let as_owner = as_owner.clone();
        async move {
            directory
                .invite(&scope, email(address), roles(&[role]), &as_owner)
                .await
        }
    };

    let issued = invite("Bob@Example.com", "member").await.unwrap();
    assert_eq!(issued.invitation.status, InvitationStatus::Pending);
    assert_eq!(issued.invitation.invited_by, Actor::User(created.owner.id));
    assert_eq!(
        issued.invitation.expires_at,
        issued.invitation.created_at + Directory::DEFAULT_INVITATION_TTL
    );
    assert_eq!(issued.token.tenant_id(), tenant_id);
    assert_err!(
        invite("bob@example.com", "admin").await,
        DirectoryError::Store(StoreError::Conflict(Conflict::PendingInvitation))
    );
    assert_err!(
        invite("owner@example.com", "admin").await,
        DirectoryError::AlreadyMember
    );

    // A signed-in user with another address cannot take Bob's invitation.
    let mallory = directory
        .create_user(NewUser::new(email("mallory@example.com")))
        .await
        .unwrap();
    let token = InvitationToken::parse(issued.token.expose_secret()).unwrap();
    assert_err!(
        directory
            .accept_invitation(&token, Acceptor::User(mallory.id), &system)
            .await,
        DirectoryError::InvitationEmailMismatch
    );
    let accepted = directory
        .accept_invitation(
            &token,
            Acceptor::NewUser {
                display_name: Some(DisplayName::new("Bob").unwrap()),
            },
            &system,
        )
        .await
        .unwrap();
    assert!(accepted.user_created);
    assert!(accepted.user.email_verified);
    assert_eq!(accepted.user.email.as_str(), "Bob@example.com");
    assert_eq!(accepted.user.display_name.as_ref().unwrap().as_str(), "Bob");
    assert_eq!(accepted.membership.roles, roles(&["member"]));
    assert_eq!(accepted.membership.status, MembershipStatus::Active);
    assert_err!(
        directory
            .accept_invitation(&token, new_user(), &system)
            .await,
        DirectoryError::InvitationAlreadyAccepted
    );

    // Unknown tokens: another secret for this tenant, or a tenant that does not exist.
    for unknown in [
        InvitationToken::generate(tenant_id),
        InvitationToken::generate(TenantId::new()),
    ] {
        assert_err!(
            directory
                .accept_invitation(&unknown, new_user(), &system)
                .await,
            DirectoryError::InvitationNotFound
        );
    }

    // An address with an account joins only as its signed-in owner.
    let mut carol = directory
        .create_user(NewUser::new(email("carol@example.com")))
        .await
        .unwrap();
    let for_carol = invite("carol@example.com", "billing").await.unwrap();
    assert_err!(
        directory
            .accept_invitation(&for_carol.token, new_user(), &system)
            .await,
        DirectoryError::AccountExists
    );
    let joined = directory
        .accept_invitation(&for_carol.token, Acceptor::User(carol.id), &system)
        .await
        .unwrap();
    assert!(!joined.user_created);
    assert_eq!(joined.user.id, carol.id);
    carol.email_verified = true;
    assert!(backend.get_user(carol.id).await.unwrap().email_verified);

    let for_dave = invite("dave@example.com", "member").await.unwrap();
    let revoked = directory
        .revoke_invitation(&scope, for_dave.invitation.id, &as_owner)
        .await
        .unwrap();
    assert_eq!(revoked.status, InvitationStatus::Revoked);
    assert_err!(
        directory
            .accept_invitation(&for_dave.token, new_user(), &system)
            .await,
        DirectoryError::InvitationRevoked
    );
    assert_err!(
        directory
            .revoke_invitation(&scope, for_dave.invitation.id, &as_owner)
            .await,
        DirectoryError::InvitationRevoked
    );
    // A revoked invitation no longer blocks a new one.
    invite("dave@example.com", "member").await.unwrap();

    // Expiry: the token stops working, and the address may be invited again.
    let for_erin = invite("erin@example.com", "member").await.unwrap();
    clock.advance(Duration::days(7) + Duration::seconds(1));
    assert_err!(
        directory
            .accept_invitation(&for_erin.token, new_user(), &system)
            .await,
        DirectoryError::InvitationExpired { .. }
    );
    let again = invite("erin@example.com", "member").await.unwrap();
    assert_eq!(
        backend
            .get_invitation(tenant_id, for_erin.invitation.id)
            .await
            .unwrap()
            .status,
        InvitationStatus::Expired
    );
    assert_err!(
        directory
            .accept_invitation(&for_erin.token, new_user(), &system)
            .await,
        DirectoryError::InvitationExpired { .. }
    );
    directory
        .accept_invitation(&again.token, new_user(), &system)
        .await
        .unwrap();

    // Another tenant's scope cannot revoke this tenant's invitation.
    let other = directory
        .create_tenant(new_tenant("elsewhere"), owner("else@example.com"), &system)
        .await
        .unwrap();
    let other_scope = directory.scope(other.tenant.id).await.unwrap();
    assert_err!(
        directory
            .revoke_invitation(&other_scope, for_dave.invitation.id, &system)
            .await,
        DirectoryError::Store(StoreError::NotFound(Entity::Invitation))
    );

    // A suspended tenant admits no one.
    let for_frank = invite("frank@example.com", "member").await.unwrap();
    directory.suspend_tenant(tenant_id, &system).await.unwrap();
    assert_err!(
        directory
            .accept_invitation(&for_frank.token, new_user(), &system)
            .await,
        DirectoryError::TenantNotActive { .. }
    );
    assert_eq!(
        backend
            .find_user_by_email(&email("frank@example.com"))
            .await
            .unwrap(),
        None
    );

    let invitations = directory
        .list_invitations(&scope, &PageRequest::default())
        .await
        .unwrap();
    let statuses: Vec<_> = invitations.items.iter().map(|i| i.status).collect();
    assert_eq!(
        statuses,
        vec![
            InvitationStatus::Accepted,
            InvitationStatus::Accepted,
            InvitationStatus::Revoked,
            InvitationStatus::Pending,
            InvitationStatus::Expired,
            InvitationStatus::Accepted,
            InvitationStatus::Pending,
        ]
    );
    let joined_events = backend
        .query_audit(
            tenant_id,
            &AuditQuery::all().action(ActionFilter::parse(actions::MEMBER_JOINED).unwrap()),
            &PageRequest::default(),
        )
        .await
        .unwrap()
        .items;
    assert_eq!(joined_events.len(), 3);
    assert_eq!(joined_events[0].actor, Actor::User(accepted.user.id));
}

/// Several clients redeem one invitation at once: exactly one joins; and a
/// very long invitation lifetime is clamped instead of overflowing.
pub async fn directory_invitation_races(backend: Arc<dyn Backend>) {
    let (directory, _) = directory(backend.clone());
    let directory = directory.with_invitation_ttl(Duration::MAX);
    let system = AuditContext::system();
    let created = directory
        .create_tenant(new_tenant("racing"), owner("owner@example.com"), &system)
        .await
        .unwrap();
    let scope = directory.scope(created.tenant.id).await.unwrap();
    let issued = directory
        .invite(
            &scope,
            email("zoe@example.com"),
            roles(&["member"]),
            &system,
        )
        .await
        .unwrap();
    assert_eq!(
        issued.invitation.expires_at,
        issued.invitation.created_at + Duration::days(365)
    );
    let attempts: Vec<_> = (0..6)
        .map(|_| {
            let directory = directory.clone();
            let token = issued.token.clone();
            tokio::spawn(async move {
                directory
                    .accept_invitation(&token, new_user(), &AuditContext::system())
                    .await
            })
        })
        .collect();
    let mut joined = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(_) => joined += 1,
            Err(DirectoryError::InvitationAlreadyAccepted | DirectoryError::AccountExists) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(joined, 1);
    let members = directory
        .list_members(&scope, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(members.items.len(), 2);
}

/// A removed member's pending invitations are revoked with them, in the
/// same transaction, each audited; others' invitations, and invitations
/// already accepted, stay as they are.
pub async fn directory_invitations_leave_with_their_sender(backend: Arc<dyn Backend>) {
    let (directory, _) = directory(backend.clone());
    let system = AuditContext::system();
    let created = directory
        .create_tenant(new_tenant("senders"), owner("ann@example.com"), &system)
        .await
        .unwrap();
    let scope = directory.scope(created.tenant.id).await.unwrap();
    let ann = created.owner.id;
    let bob = join(&directory, &scope, "bob@example.com", &["admin"])
        .await
        .user
        .id;
    let as_bob = AuditContext::new(Actor::User(bob));
    let as_ann = AuditContext::new(Actor::User(ann));
    let mut sent_by_bob = Vec::new();
    for name in ["x", "y"] {
        let issued = directory
            .invite(
                &scope,
                email(&format!("{name}@example.com")),
                roles(&["admin"]),
                &as_bob,
            )
            .await
            .unwrap();
        sent_by_bob.push(issued);
    }
    let accepted_before = directory
        .invite(&scope, email("z@example.com"), roles(&["member"]), &as_bob)
        .await
        .unwrap();
    directory
        .accept_invitation(&accepted_before.token, new_user(), &system)
        .await
        .unwrap();
    let sent_by_ann = directory
        .invite(&scope, email("w@example.com"), roles(&["member"]), &as_ann)
        .await
        .unwrap();
    let pending = directory
        .pending_invitations_sent_by(&scope, bob)
        .await
        .unwrap();
    assert_eq!(pending.len(), 2);

    directory.remove_member(&scope, bob, &as_ann).await.unwrap();
    for issued in &sent_by_bob {
        let stored = backend
            .get_invitation(scope.tenant_id(), issued.invitation.id)
            .await
            .unwrap();
        assert_eq!(stored.status, InvitationStatus::Revoked);
        assert_err!(
            directory
                .accept_invitation(&issued.token, new_user(), &system)
                .await,
            DirectoryError::InvitationRevoked
        );
    }
    assert!(
        directory
            .pending_invitations_sent_by(&scope, bob)
            .await
            .unwrap()
            .is_empty()
    );
    let kept = backend
        .get_invitation(scope.tenant_id(), sent_by_ann.invitation.id)
        .await
        .unwrap();
    assert_eq!(kept.status, InvitationStatus::Pending);
    let accepted = backend
        .get_invitation(scope.tenant_id(), accepted_before.invitation.id)
        .await
        .unwrap();
    assert_eq!(accepted.status, InvitationStatus::Accepted);
    let revoked = backend
        .query_audit(
            scope.tenant_id(),
            &AuditQuery::all().action(ActionFilter::parse(actions::INVITATION_REVOKED).unwrap()),
            &PageRequest::first(PageSize::MAX),
        )
        .await
        .unwrap();
    assert_eq!(revoked.items.len(), 2);
    assert!(revoked.items.iter().all(|event| {
        event.actor == Actor::User(ann) && event.metadata.as_map()["reason"] == "sender_removed"
    }));
}

/// A [`GrantCheck`] for the suites: owners grant anything, admins anything
/// but `owner`, members only `member`; users in `stripped` (powers lost in
/// ways the directory does not see, such as a role redefined) and keys
/// outside `keys` grant nothing.
#[derive(Default)]
struct RoleLadder {
    stripped: std::sync::Mutex<Vec<UserId>>,
    keys: Vec<ApiKeyId>,
}

#[async_trait::async_trait]
impl GrantCheck for RoleLadder {
    async fn may_grant(
        &self,
        tx: &dyn Transaction,
        tenant_id: TenantId,
        grantor: Grantor<'_>,
        roles: &RoleSet,
    ) -> Result<bool, StoreError> {
        // The tenant is readable through the transaction the check runs in.
        tx.get_tenant(tenant_id).await?;
        let held = match grantor {
            Grantor::Member { user, roles } => {
                if self.stripped.lock().unwrap().contains(&user) {
                    return Ok(false);
                }
                roles.clone()
            }
            Grantor::ApiKey(key) if self.keys.contains(&key) => RoleSet::single(RoleName::ADMIN),
            _ => return Ok(false),
        };
        Ok(roles.iter().all(|role| {
            held.contains(&RoleName::OWNER)
                || (held.contains(&RoleName::ADMIN) && *role != RoleName::OWNER)
                || *role == RoleName::MEMBER
        }))
    }
}

/// Invitations follow their sender's powers: a role change revokes, in
/// its transaction, the sender's pending invitations their new roles could
/// not send (audited `sender_demoted`), and an acceptance is refused, the
/// invitation revoked (audited), when the sender is no longer an active
/// member or can no longer grant its roles, with nothing else written.
/// The host's own invitations and those of keys that keep their powers
/// are accepted.
pub async fn directory_invitations_follow_their_senders_powers(backend: Arc<dyn Backend>) {
    let kept_key = ApiKeyId::new();
    let lost_key = ApiKeyId::new();
    let ladder = Arc::new(RoleLadder {
        keys: vec![kept_key],
        ..RoleLadder::default()
    });
    let (directory, _) = directory(backend.clone());
    let directory = directory.with_grant_check(ladder.clone());
    let system = AuditContext::system();
    let created = directory
        .create_tenant(new_tenant("powers"), owner("ann@example.com"), &system)
        .await
        .unwrap();
    let scope = directory.scope(created.tenant.id).await.unwrap();
    let ann = created.owner.id;
    let as_ann = AuditContext::new(Actor::User(ann));
    let bob = join(&directory, &scope, "bob@example.com", &["admin"])
        .await
        .user
        .id;
    let carol = join(&directory, &scope, "carol@example.com", &["admin"])
        .await
        .user
        .id;
    let as_bob = AuditContext::new(Actor::User(bob));
    let invite = |address: &'static str, role: &'static str, context: AuditContext| {
        let directory = directory.clone();
        async move {
            directory
                .invite(&scope, email(address), roles(&[role]), &context)
                .await
                .unwrap()
        }
    };
    let bob_admin = invite("x@example.com", "admin", as_bob.clone()).await;
    let bob_member = invite("y@example.com", "member", as_bob.clone()).await;
    let carol_admin = invite(
        "w@example.com",
        "admin",
        AuditContext::new(Actor::User(carol)),
    )
    .await;
    let by_host = invite("h@example.com", "admin", system.clone()).await;
    let by_kept_key = invite(
        "k@example.com",
        "admin",
        AuditContext::new(Actor::ApiKey(kept_key)),
    )
    .await;
    let by_lost_key = invite(
        "l@example.com",
        "admin",
        AuditContext::new(Actor::ApiKey(lost_key)),
    )
    .await;
    let status = |issued: &crate::IssuedInvitation| {
        let backend = backend.clone();
        let (tenant, id) = (scope.tenant_id(), issued.invitation.id);
        async move { backend.get_invitation(tenant, id).await.unwrap().status }
    };

    // Demoting bob to member revokes what a member could not send, in the
    // role change; what a member may send stays.
    directory
        .change_roles(&scope, bob, roles(&["member"]), &as_ann)
        .await
        .unwrap();
    assert_eq!(status(&bob_admin).await, InvitationStatus::Revoked);
    assert_eq!(status(&bob_member).await, InvitationStatus::Pending);
    assert_eq!(status(&carol_admin).await, InvitationStatus::Pending);
    assert_err!(
        directory
            .accept_invitation(&bob_admin.token, new_user(), &system)
            .await,
        DirectoryError::InvitationRevoked
    );

    // Bob loses even that in a way the directory does not see: accepting
    // is refused, the invitation revoked, and nobody created.
    ladder.stripped.lock().unwrap().push(bob);
    assert_err!(
        directory
            .accept_invitation(&bob_member.token, new_user(), &system)
            .await,
        DirectoryError::InviterLacksPower
    );
    assert_eq!(status(&bob_member).await, InvitationStatus::Revoked);
    assert!(
        backend
            .find_user_by_email(&email("y@example.com"))
            .await
            .unwrap()
            .is_none()
    );
    assert_err!(
        directory
            .accept_invitation(&bob_member.token, new_user(), &system)
            .await,
        DirectoryError::InvitationRevoked
    );

    // A suspended sender backs nothing.
    directory
        .suspend_member(&scope, carol, &as_ann)
        .await
        .unwrap();
    assert_err!(
        directory
            .accept_invitation(&carol_admin.token, new_user(), &system)
            .await,
        DirectoryError::InviterLacksPower
    );
    assert_eq!(status(&carol_admin).await, InvitationStatus::Revoked);

    // Keys are asked of the check; the host's invitations always hold.
    assert_err!(
        directory
            .accept_invitation(&by_lost_key.token, new_user(), &system)
            .await,
        DirectoryError::InviterLacksPower
    );
    for issued in [&by_kept_key, &by_host] {
        let accepted = directory
            .accept_invitation(&issued.token, new_user(), &system)
            .await
            .unwrap();
        assert_eq!(accepted.membership.roles, roles(&["admin"]));
    }

    let revoked = backend
        .query_audit(
            scope.tenant_id(),
            &AuditQuery::all().action(ActionFilter::parse(actions::INVITATION_REVOKED).unwrap()),
            &PageRequest::first(PageSize::MAX),
        )
        .await
        .unwrap();
    let reasons: Vec<(String, String)> = revoked
        .items
        .iter()
        .map(|event| {
            (
                event.target.id.clone(),
                event.metadata.as_map()["reason"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        (&bob_admin, "sender_demoted"),
        (&bob_member, "inviter_lacks_power"),
        (&carol_admin, "inviter_inactive"),
        (&by_lost_key, "inviter_lacks_power"),
    ]
    .into_iter()
    .map(|(issued, reason)| (issued.invitation.id.to_string(), reason.to_owned()))
    .collect();
    assert_eq!(reasons, expected);
    assert_eq!(revoked.items[0].actor, Actor::User(ann));
}

/// Role changes, suspension and removal, guarded so a tenant always keeps
/// an active owner; and no scope reaches another tenant's members.
pub async fn directory_members(backend: Arc<dyn Backend>) {
    let (directory, _) = directory(backend.clone());
    let system = AuditContext::system();
    let created = directory
        .create_tenant(new_tenant("members"), owner("ann@example.com"), &system)
        .await
        .unwrap();
    let scope = directory.scope(created.tenant.id).await.unwrap();
    let ann = created.owner.id;
    let mut people = Vec::new();
    for name in ["bob", "cleo", "dan", "eve"] {
        let accepted = join(
            &directory,
            &scope,
            &format!("{name}@example.com"),
            &["member"],
        )
        .await;
        people.push(accepted.user.id);
    }
    let bob = people[0];

    let changed = directory
        .change_roles(&scope, bob, roles(&["admin", "member"]), &system)
        .await
        .unwrap();
    assert_eq!(changed.roles, roles(&["admin", "member"]));
    assert_err!(
        directory
            .change_roles(&scope, ann, roles(&["admin"]), &system)
            .await,
        DirectoryError::LastOwner
    );
    assert_err!(
        directory.remove_member(&scope, ann, &system).await,
        DirectoryError::LastOwner
    );
    assert_err!(
        directory.suspend_member(&scope, ann, &system).await,
        DirectoryError::LastOwner
    );

    // With a second owner, the first may step down; then the second is last.
    directory
        .change_roles(&scope, bob, roles(&["owner"]), &system)
        .await
        .unwrap();
    directory
        .change_roles(&scope, ann, roles(&["admin"]), &system)
        .await
        .unwrap();
    assert_err!(
        directory.remove_member(&scope, bob, &system).await,
        DirectoryError::LastOwner
    );

    // A suspended owner does not count as an owner.
    directory
        .change_roles(&scope, ann, roles(&["owner"]), &system)
        .await
        .unwrap();
    let suspended = directory
        .suspend_member(&scope, ann, &system)
        .await
        .unwrap();
    assert_eq!(suspended.status, MembershipStatus::Suspended);
    assert_err!(
        directory
            .change_roles(&scope, bob, roles(&["member"]), &system)
            .await,
        DirectoryError::LastOwner
    );
    directory
        .reactivate_member(&scope, ann, &system)
        .await
        .unwrap();
    let removed = directory.remove_member(&scope, bob, &system).await.unwrap();
    assert_eq!(removed.user_id, bob);
    assert_err!(
        directory.remove_member(&scope, bob, &system).await,
        DirectoryError::Store(StoreError::NotFound(Entity::Membership))
    );

    // Another tenant's scope finds none of these members.
    let other = directory
        .create_tenant(
            new_tenant("members-elsewhere"),
            owner("zed@example.com"),
            &system,
        )
        .await
        .unwrap();
    let other_scope = directory.scope(other.tenant.id).await.unwrap();
    for user in [ann, people[1]] {
        assert_err!(
            directory
                .change_roles(&other_scope, user, roles(&["owner"]), &system)
                .await,
            DirectoryError::Store(StoreError::NotFound(Entity::Membership))
        );
        assert_err!(
            directory.remove_member(&other_scope, user, &system).await,
            DirectoryError::Store(StoreError::NotFound(Entity::Membership))
        );
    }

    // Paginated member list: ann, cleo, dan, eve (bob removed).
    let mut request = PageRequest::first(PageSize::new(3).unwrap());
    let mut listed = Vec::new();
    loop {
        let page = directory.list_members(&scope, &request).await.unwrap();
        listed.extend(page.items.into_iter().map(|m| m.user.id));
        match page.next {
            Some(cursor) => request = request.after(cursor),
            None => break,
        }
    }
    assert_eq!(listed, vec![ann, people[1], people[2], people[3]]);

    let trail = actions_of(&directory, &scope).await;
    assert_eq!(
        trail
            .iter()
            .filter(|a| *a == actions::MEMBER_ROLE_CHANGED)
            .count(),
        4
    );
    assert!(trail.contains(&actions::MEMBER_SUSPENDED.to_owned()));
    assert!(trail.contains(&actions::MEMBER_REACTIVATED.to_owned()));
    assert_eq!(
        trail.last().map(String::as_str),
        Some(actions::MEMBER_REMOVED)
    );
}

/// Two owners remove each other at the same time: the tenant lock makes
/// one wait, so exactly one removal succeeds and one owner remains.
pub async fn directory_last_owner_race(backend: Arc<dyn Backend>) {
    let (directory, _) = directory(backend.clone());
    let system = AuditContext::system();
    for round in 0..5 {
        let created = directory
            .create_tenant(
                new_tenant(&format!("race-{round}")),
                owner(&format!("a{round}@example.com")),
                &system,
            )
            .await
            .unwrap();
        let scope = directory.scope(created.tenant.id).await.unwrap();
        let second = join(
            &directory,
            &scope,
            &format!("b{round}@example.com"),
            &["owner"],
        )
        .await;
        let tasks: Vec<_> = [created.owner.id, second.user.id]
            .into_iter()
            .map(|user| {
                let directory = directory.clone();
                tokio::spawn(async move {
                    directory
                        .remove_member(&scope, user, &AuditContext::system())
                        .await
                })
            })
            .collect();
        let mut removed = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => removed += 1,
                Err(DirectoryError::LastOwner) => {}
                Err(other) => panic!("unexpected error {other:?}"),
            }
        }
        assert_eq!(removed, 1, "round {round}");
        let owners = backend
            .count_active_with_role(created.tenant.id, &RoleName::OWNER)
            .await
            .unwrap();
        assert_eq!(owners, 1, "round {round}");
    }
}

/// Every workflow writes its event into the chain, which verifies and
/// exports.
pub async fn directory_audit_trail(backend: Arc<dyn Backend>) {
    let (directory, _) = directory(backend.clone());
    let context = AuditContext::system()
        .with_ip("198.51.100.4".parse().unwrap())
        .with_user_agent("=cmd|' /C calc'!A0");
    let created = directory
        .create_tenant(new_tenant("trail"), owner("ann@example.com"), &context)
        .await
        .unwrap();
    let scope = directory.scope(created.tenant.id).await.unwrap();
    let issued = directory
        .invite(
            &scope,
            email("bob@example.com"),
            roles(&["member"]),
            &context,
        )
        .await
        .unwrap();
    let bob = directory
        .accept_invitation(&issued.token, new_user(), &context)
        .await
        .unwrap();
    directory
        .change_roles(&scope, bob.user.id, roles(&["readonly"]), &context)
        .await
        .unwrap();
    directory
        .remove_member(&scope, bob.user.id, &context)
        .await
        .unwrap();
    assert_eq!(
        actions_of(&directory, &scope).await,
        vec![
            actions::TENANT_CREATED,
            actions::MEMBER_INVITED,
            actions::MEMBER_JOINED,
            actions::MEMBER_ROLE_CHANGED,
            actions::MEMBER_REMOVED
        ]
    );
    let report = directory
        .verify_audit_chain(created.tenant.id)
        .await
        .unwrap();
    assert!(report.is_intact());
    assert_eq!(report.events_checked, 5);

    let events = directory
        .audit_events(&scope, &AuditQuery::all(), &PageRequest::default())
        .await
        .unwrap()
        .items;
    assert_eq!(events[0].ip, Some("198.51.100.4".parse().unwrap()));
    assert_eq!(
        events[3].metadata.as_map()["from"],
        serde_json::json!(["member"])
    );
    assert_eq!(
        events[3].metadata.as_map()["to"],
        serde_json::json!(["readonly"])
    );

    let mut csv = Vec::new();
    let written = directory
        .export_audit(&scope, &AuditQuery::all(), ExportFormat::Csv, &mut csv)
        .await
        .unwrap();
    assert_eq!(written, 5);
    let csv = String::from_utf8(csv).unwrap();
    // The user agent would run as a spreadsheet formula; it is defused.
    assert!(csv.contains("'=cmd|' /C calc'!A0"));
    let mut lines = Vec::new();
    directory
        .export_audit(
            &scope,
            &AuditQuery::all(),
            ExportFormat::JsonLines,
            &mut lines,
        )
        .await
        .unwrap();
    assert_eq!(String::from_utf8(lines).unwrap().lines().count(), 5);
}

/// A seat limit the test changes as a plan change would.
struct PlanSeats(std::sync::atomic::AtomicU64);

#[async_trait::async_trait]
impl crate::seats::Seats for PlanSeats {
    async fn seat_limit(&self, _: TenantId) -> Result<Option<u64>, StoreError> {
        Ok(Some(self.0.load(std::sync::atomic::Ordering::SeqCst)))
    }
}

/// The hard seat limit holds at every door: an invitation sent before a
/// downgrade cannot be accepted past the new limit, a suspended member
/// cannot be reactivated past it, and each works again once a seat frees.
pub async fn directory_seat_limits(backend: Arc<dyn Backend>) {
    let seats = Arc::new(PlanSeats(std::sync::atomic::AtomicU64::new(3)));
    let (directory, _clock) = directory(backend);
    let directory = directory.with_seats(seats.clone());
    let ctx = AuditContext::system();
    let created = directory
        .create_tenant(new_tenant("seat-doors"), owner("o@seat-doors.test"), &ctx)
        .await
        .unwrap();
    let scope = directory.scope(created.tenant.id).await.unwrap();
    let ann = join(&directory, &scope, "ann@seat-doors.test", &["member"]).await;
    // Owner, ann, and a pending invitation: 3 of 3.
    let pending = directory
        .invite(
            &scope,
            email("bo@seat-doors.test"),
            roles(&["member"]),
            &ctx,
        )
        .await
        .unwrap();
    assert_err!(
        directory
            .invite(
                &scope,
                email("cy@seat-doors.test"),
                roles(&["member"]),
                &ctx
            )
            .await,
        DirectoryError::SeatLimitReached { limit: 3 }
    );

    // At the limit, the pending invitation holds its own seat.
    seats.0.store(2, std::sync::atomic::Ordering::SeqCst);
    assert_err!(
        directory
            .accept_invitation(&pending.token, new_user(), &ctx)
            .await,
        DirectoryError::SeatLimitReached { limit: 2 }
    );
    seats.0.store(3, std::sync::atomic::Ordering::SeqCst);
    let bo = directory
        .accept_invitation(&pending.token, new_user(), &ctx)
        .await
        .unwrap();

    // A suspended member frees a seat; taking it back needs one free.
    directory
        .suspend_member(&scope, ann.user.id, &ctx)
        .await
        .unwrap();
    let dee = join(&directory, &scope, "dee@seat-doors.test", &["member"]).await;
    assert_err!(
        directory.reactivate_member(&scope, ann.user.id, &ctx).await,
        DirectoryError::SeatLimitReached { limit: 3 }
    );
    let suspended = directory
        .backend()
        .find_membership(created.tenant.id, ann.user.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(suspended.status, MembershipStatus::Suspended);
    directory
        .remove_member(&scope, dee.user.id, &ctx)
        .await
        .unwrap();
    let back = directory
        .reactivate_member(&scope, ann.user.id, &ctx)
        .await
        .unwrap();
    assert_eq!(back.status, MembershipStatus::Active);
    // Reactivating an active member changes nothing and needs no seat.
    directory
        .reactivate_member(&scope, bo.user.id, &ctx)
        .await
        .unwrap();
}
