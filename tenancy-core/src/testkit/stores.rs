//! Suites for the record stores.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use serde_json::json;
use time::Duration;

use super::{email, new_membership, new_tenant, new_user, now, roles, slug};
use crate::audit::{
    ActionFilter, Actor, AuditAction, AuditContext, AuditQuery, ChainHash, ExportFormat,
    NewAuditEvent, Target, TargetType, export,
};
use crate::error::{Conflict, Entity, StoreError, ValidationError};
use crate::id::{ApiKeyId, InvitationId, TenantId, UserId};
use crate::invitation::{Invitation, InvitationStatus, InvitationToken};
use crate::membership::{MembershipStatus, RoleName};
use crate::page::{Cursor, Page, PageRequest, PageSize};
use crate::store::{AuditLog, Backend, InvitationStore, MembershipStore, TenantStore, UserStore};
use crate::tenant::{TenantName, TenantStatus};
use crate::text::Metadata;
use crate::user::{DisplayName, UserStatus};

fn size(n: usize) -> PageSize {
    PageSize::new(n).unwrap()
}

/// Reads every page of a list, checking each page's size and cursor.
async fn all_pages<T, F, Fut>(page_size: usize, mut fetch: F) -> Vec<T>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: Future<Output = Result<Page<T>, StoreError>>,
{
    let mut request = PageRequest::first(size(page_size));
    let mut items = Vec::new();
    loop {
        let page = fetch(request.clone()).await.unwrap();
        assert!(page.items.len() <= page_size, "page larger than requested");
        let more = page.next.clone();
        if more.is_some() {
            assert_eq!(page.items.len(), page_size, "short page before the end");
        }
        items.extend(page.items);
        match more {
            Some(cursor) => request = request.after(cursor),
            None => return items,
        }
    }
}

fn assert_invalid_cursor<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    match result {
        Err(StoreError::InvalidInput(ValidationError::Cursor)) => {}
        other => panic!("expected an invalid-cursor error, got {other:?}"),
    }
}

fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>, expected: Conflict) {
    match result {
        Err(StoreError::Conflict(conflict)) => assert_eq!(conflict, expected),
        other => panic!("expected conflict {expected:?}, got {other:?}"),
    }
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StoreError>, expected: Entity) {
    match result {
        Err(StoreError::NotFound(entity)) => assert_eq!(entity, expected),
        other => panic!("expected {expected} not found, got {other:?}"),
    }
}

/// Tenants: create, read, update, slug uniqueness, not-found, timestamps,
/// pagination and cursor stability.
pub async fn tenant_store(backend: Arc<dyn Backend>) {
    let b = &*backend;
    let acme = new_tenant("acme");
    b.insert_tenant(&acme).await.unwrap();
    assert_eq!(b.get_tenant(acme.id).await.unwrap(), acme);
    assert_eq!(
        b.find_tenant_by_slug(&slug("acme")).await.unwrap(),
        Some(acme.clone())
    );
    assert_eq!(b.find_tenant_by_slug(&slug("nope")).await.unwrap(), None);

    assert_conflict(
        b.insert_tenant(&new_tenant("acme")).await,
        Conflict::TenantSlug,
    );
    let mut same_id = new_tenant("other");
    same_id.id = acme.id;
    assert_conflict(
        b.insert_tenant(&same_id).await,
        Conflict::Id(Entity::Tenant),
    );

    assert_not_found(b.get_tenant(TenantId::new()).await, Entity::Tenant);
    assert_not_found(b.lock_tenant(TenantId::new()).await, Entity::Tenant);
    assert_not_found(b.update_tenant(&new_tenant("ghost")).await, Entity::Tenant);

    // Updates replace the mutable fields and keep created_at.
    let mut changed = acme.clone();
    changed.slug = slug("acme-two");
    changed.name = TenantName::new("Acme Two").unwrap();
    changed.status = TenantStatus::Suspended;
    changed.metadata = Metadata::new(json!({ "plan": "pro", "seats": 5 })).unwrap();
    changed.updated_at = acme.updated_at + Duration::seconds(5);
    changed.created_at = acme.created_at - Duration::days(1);
    b.update_tenant(&changed).await.unwrap();
    let stored = b.get_tenant(acme.id).await.unwrap();
    assert_eq!(stored.created_at, acme.created_at);
    assert_eq!(stored.slug, changed.slug);
    assert_eq!(stored.name, changed.name);
    assert_eq!(stored.status, TenantStatus::Suspended);
    assert_eq!(stored.metadata, changed.metadata);
    assert_eq!(stored.updated_at, changed.updated_at);
    assert_eq!(b.find_tenant_by_slug(&slug("acme")).await.unwrap(), None);
    b.insert_tenant(&new_tenant("acme")).await.unwrap();
    let mut clash = new_tenant("third");
    b.insert_tenant(&clash).await.unwrap();
    clash.slug = slug("acme-two");
    assert_conflict(b.update_tenant(&clash).await, Conflict::TenantSlug);

    // Sub-microsecond precision is dropped, as Postgres does.
    let mut precise = new_tenant("precise");
    precise.created_at = time::macros::datetime!(2030-01-02 03:04:05.123_456_789 UTC);
    b.insert_tenant(&precise).await.unwrap();
    assert_eq!(
        b.get_tenant(precise.id).await.unwrap().created_at,
        time::macros::datetime!(2030-01-02 03:04:05.123_456 UTC)
    );

    // Pagination: every tenant once, in id order, in full pages.
    for i in 0..7 {
        b.insert_tenant(&new_tenant(&format!("page-{i}")))
            .await
            .unwrap();
    }
    let listed = all_pages(3, |p| async move { b.admin_list_tenants(&p).await }).await;
    let ids: Vec<TenantId> = listed.iter().map(|t| t.id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted);
    assert_eq!(ids.len(), 11);

    // A cursor keeps its place when rows are added meanwhile, and can be reused.
    let first = b
        .admin_list_tenants(&PageRequest::first(size(4)))
        .await
        .unwrap();
    let cursor = first.next.clone().unwrap();
    let second = b
        .admin_list_tenants(&PageRequest::first(size(4)).after(cursor.clone()))
        .await
        .unwrap();
    let late = new_tenant("late-arrival");
    b.insert_tenant(&late).await.unwrap();
    let again = b
        .admin_list_tenants(&PageRequest::first(size(4)).after(cursor))
        .await
        .unwrap();
    assert_eq!(second.items, again.items);
    let after_insert = all_pages(5, |p| async move { b.admin_list_tenants(&p).await }).await;
    assert_eq!(after_insert.len(), 12);
    assert_eq!(after_insert.last().unwrap().id, late.id);

    assert_invalid_cursor(
        b.admin_list_tenants(&PageRequest::default().after(Cursor::new("garbage")))
            .await,
    );
    assert_invalid_cursor(
        b.admin_list_tenants(&PageRequest::default().after(Cursor::encode("users", UserId::new())))
            .await,
    );
}

/// Many writers race to create tenants with one slug: exactly one wins.
pub async fn tenant_store_concurrent_slug(backend: Arc<dyn Backend>) {
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            let backend = Arc::clone(&backend);
            tokio::spawn(async move { backend.insert_tenant(&new_tenant("race")).await })
        })
        .collect();
    let mut won = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(()) => won += 1,
            Err(StoreError::Conflict(Conflict::TenantSlug)) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(won, 1);
}

/// Users: create, read, update, case-insensitive email uniqueness,
/// not-found and pagination.
pub async fn user_store(backend: Arc<dyn Backend>) {
    let b = &*backend;
    let mut ann = new_user("Ann@Example.com");
    ann.display_name = Some(DisplayName::new("Ann").unwrap());
    b.insert_user(&ann).await.unwrap();
    assert_eq!(b.get_user(ann.id).await.unwrap(), ann);
    assert_eq!(
        b.get_user(ann.id).await.unwrap().email.as_str(),
        "Ann@example.com"
    );
    assert_eq!(
        b.find_user_by_email(&email("ann@EXAMPLE.com"))
            .await
            .unwrap(),
        Some(ann.clone())
    );
    assert_eq!(
        b.find_user_by_email(&email("bob@example.com"))
            .await
            .unwrap(),
        None
    );

    assert_conflict(
        b.insert_user(&new_user("ANN@example.com")).await,
        Conflict::UserEmail,
    );
    let mut same_id = new_user("other@example.com");
    same_id.id = ann.id;
    assert_conflict(b.insert_user(&same_id).await, Conflict::Id(Entity::User));
    assert_not_found(b.get_user(UserId::new()).await, Entity::User);
    assert_not_found(b.lock_user(UserId::new()).await, Entity::User);
    assert_eq!(b.lock_user(ann.id).await.unwrap(), ann);
    assert_not_found(
        b.update_user(&new_user("ghost@example.com")).await,
        Entity::User,
    );

    let mut changed = ann.clone();
    changed.email = email("ann.lee@example.com");
    changed.display_name = None;
    changed.email_verified = true;
    changed.status = UserStatus::Disabled;
    changed.updated_at = ann.updated_at + Duration::seconds(1);
    b.update_user(&changed).await.unwrap();
    assert_eq!(b.get_user(ann.id).await.unwrap(), changed);
    assert_eq!(
        b.find_user_by_email(&email("ann@example.com"))
            .await
            .unwrap(),
        None
    );
    let bob = new_user("bob@example.com");
    b.insert_user(&bob).await.unwrap();
    let mut bob_clash = bob.clone();
    bob_clash.email = email("ANN.LEE@example.com");
    assert_conflict(b.update_user(&bob_clash).await, Conflict::UserEmail);
    // The freed address can be taken again.
    b.insert_user(&new_user("ann@example.com")).await.unwrap();

    for i in 0..5 {
        b.insert_user(&new_user(&format!("user{i}@example.com")))
            .await
            .unwrap();
    }
    let listed = all_pages(2, |p| async move { b.admin_list_users(&p).await }).await;
    let ids: Vec<UserId> = listed.iter().map(|u| u.id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    assert_eq!(ids.len(), 8);
    assert_invalid_cursor(
        b.admin_list_users(
            &PageRequest::default().after(Cursor::encode("tenants", TenantId::new())),
        )
        .await,
    );
}

/// Many writers race to create users with one email: exactly one wins.
pub async fn user_store_concurrent_email(backend: Arc<dyn Backend>) {
    let attempts: Vec<_> = (0..8)
        .map(|i| {
            let backend = Arc::clone(&backend);
            let address = if i % 2 == 0 {
                "race@example.com"
            } else {
                "RACE@example.com"
            };
            tokio::spawn(async move { backend.insert_user(&new_user(address)).await })
        })
        .collect();
    let mut won = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(()) => won += 1,
            Err(StoreError::Conflict(Conflict::UserEmail)) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(won, 1);
}

/// Memberships: uniqueness per (tenant, user), referential checks, tenant
/// isolation of every read and write, role counts, member and user-tenant
/// listings.
pub async fn membership_store(backend: Arc<dyn Backend>) {
    let b = &*backend;
    let (a, other) = (new_tenant("tenant-a"), new_tenant("tenant-b"));
    b.insert_tenant(&a).await.unwrap();
    b.insert_tenant(&other).await.unwrap();
    let users: Vec<_> = (0..4)
        .map(|i| new_user(&format!("m{i}@example.com")))
        .collect();
    for user in &users {
        b.insert_user(user).await.unwrap();
    }

    let m0 = new_membership(&a, &users[0], &["owner"]);
    b.insert_membership(&m0).await.unwrap();
    assert_eq!(b.get_membership(a.id, m0.id).await.unwrap(), m0);
    assert_eq!(
        b.find_membership(a.id, users[0].id).await.unwrap(),
        Some(m0.clone())
    );

    // Tenant B can neither see nor touch tenant A's membership.
    assert_not_found(b.get_membership(other.id, m0.id).await, Entity::Membership);
    assert_eq!(
        b.find_membership(other.id, users[0].id).await.unwrap(),
        None
    );
    let mut foreign = m0.clone();
    foreign.tenant_id = other.id;
    foreign.roles = roles(&["readonly"]);
    assert_not_found(b.update_membership(&foreign).await, Entity::Membership);
    assert_not_found(
        b.delete_membership(other.id, m0.id).await,
        Entity::Membership,
    );
    assert_eq!(b.get_membership(a.id, m0.id).await.unwrap().roles, m0.roles);

    assert_conflict(
        b.insert_membership(&new_membership(&a, &users[0], &["member"]))
            .await,
        Conflict::Membership,
    );
    let mut same_id = new_membership(&other, &users[1], &["member"]);
    same_id.id = m0.id;
    assert_conflict(
        b.insert_membership(&same_id).await,
        Conflict::Id(Entity::Membership),
    );
    let ghost_tenant = new_tenant("ghost");
    assert_not_found(
        b.insert_membership(&new_membership(&ghost_tenant, &users[1], &["member"]))
            .await,
        Entity::Tenant,
    );
    assert_not_found(
        b.insert_membership(&new_membership(
            &a,
            &new_user("ghost@example.com"),
            &["member"],
        ))
        .await,
        Entity::User,
    );

    let mut updated = m0.clone();
    updated.roles = roles(&["owner", "billing"]);
    updated.status = MembershipStatus::Suspended;
    updated.updated_at = m0.updated_at + Duration::seconds(3);
    b.update_membership(&updated).await.unwrap();
    assert_eq!(b.get_membership(a.id, m0.id).await.unwrap(), updated);
    b.update_membership(&m0).await.unwrap();

    // Role counts see active memberships only.
    let m1 = new_membership(&a, &users[1], &["owner", "admin"]);
    let mut m2 = new_membership(&a, &users[2], &["owner"]);
    m2.status = MembershipStatus::Suspended;
    let m3 = new_membership(&a, &users[3], &["member"]);
    for m in [&m1, &m2, &m3] {
        b.insert_membership(m).await.unwrap();
    }
    b.insert_membership(&new_membership(&other, &users[1], &["owner"]))
        .await
        .unwrap();
    assert_eq!(
        b.count_active_with_role(a.id, &RoleName::OWNER)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        b.count_active_with_role(a.id, &RoleName::ADMIN)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        b.count_active_with_role(a.id, &RoleName::BILLING)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        b.count_active_with_role(other.id, &RoleName::OWNER)
            .await
            .unwrap(),
        1
    );

    // Members of A, oldest first, with their users, and nothing of B.
    let members = all_pages(3, |p| async move { b.list_members(a.id, &p).await }).await;
    let ids: Vec<_> = members.iter().map(|m| m.membership.id).collect();
    assert_eq!(ids, vec![m0.id, m1.id, m2.id, m3.id]);
    for member in &members {
        assert_eq!(member.user.id, member.membership.user_id);
        assert_eq!(member.membership.tenant_id, a.id);
    }
    let members_of_b = b
        .list_members(other.id, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(members_of_b.items.len(), 1);
    assert_invalid_cursor(
        b.list_members(
            a.id,
            &PageRequest::default().after(Cursor::encode("invitations", m0.id)),
        )
        .await,
    );

    // A user's tenants: across tenants, deleted ones left out.
    let c = new_tenant("tenant-c");
    b.insert_tenant(&c).await.unwrap();
    b.insert_membership(&new_membership(&c, &users[1], &["readonly"]))
        .await
        .unwrap();
    let user1 = users[1].id;
    let of_user = all_pages(1, |p| async move { b.list_user_tenants(user1, &p).await }).await;
    let tenants: Vec<_> = of_user.iter().map(|ut| ut.tenant.id).collect();
    assert_eq!(tenants, vec![a.id, other.id, c.id]);
    let mut deleted = other.clone();
    deleted.status = TenantStatus::Deleted;
    b.update_tenant(&deleted).await.unwrap();
    let of_user = all_pages(2, |p| async move { b.list_user_tenants(user1, &p).await }).await;
    let tenants: Vec<_> = of_user.iter().map(|ut| ut.tenant.id).collect();
    assert_eq!(tenants, vec![a.id, c.id]);
    assert!(
        of_user
            .iter()
            .all(|ut| ut.membership.user_id == users[1].id)
    );

    // Deleting frees the (tenant, user) pair.
    b.delete_membership(a.id, m3.id).await.unwrap();
    assert_not_found(b.get_membership(a.id, m3.id).await, Entity::Membership);
    assert_eq!(b.find_membership(a.id, users[3].id).await.unwrap(), None);
    b.insert_membership(&new_membership(&a, &users[3], &["member"]))
        .await
        .unwrap();
}

fn invitation(tenant: TenantId, address: &str) -> (Invitation, InvitationToken) {
    let at = now();
    let token = InvitationToken::generate(tenant);
    let invitation = Invitation {
        id: InvitationId::new(),
        tenant_id: tenant,
        email: email(address),
        roles: roles(&["member"]),
        invited_by: Actor::System,
        status: InvitationStatus::Pending,
        token_hash: *token.hash(),
        expires_at: at + Duration::days(7),
        created_at: at,
        updated_at: at,
        accepted_by: None,
    };
    (invitation, token)
}

/// Invitations: one pending per (tenant, email), lookup by token hash
/// within the tenant only, status updates, listing.
pub async fn invitation_store(backend: Arc<dyn Backend>) {
    let b = &*backend;
    let (a, other) = (new_tenant("inv-a"), new_tenant("inv-b"));
    b.insert_tenant(&a).await.unwrap();
    b.insert_tenant(&other).await.unwrap();

    let (first, token) = invitation(a.id, "ann@example.com");
    b.insert_invitation(&first).await.unwrap();
    assert_eq!(b.get_invitation(a.id, first.id).await.unwrap(), first);
    assert_eq!(
        b.find_invitation_by_token(a.id, token.hash())
            .await
            .unwrap(),
        Some(first.clone())
    );
    assert_not_found(
        b.get_invitation(other.id, first.id).await,
        Entity::Invitation,
    );
    assert_eq!(
        b.find_invitation_by_token(other.id, token.hash())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        b.find_pending_invitation(a.id, &email("ANN@example.com"))
            .await
            .unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        b.find_pending_invitation(other.id, &email("ann@example.com"))
            .await
            .unwrap(),
        None
    );
    let stranger = InvitationToken::generate(a.id);
    assert_eq!(
        b.find_invitation_by_token(a.id, stranger.hash())
            .await
            .unwrap(),
        None
    );

    assert_conflict(
        b.insert_invitation(&invitation(a.id, "ANN@example.com").0)
            .await,
        Conflict::PendingInvitation,
    );
    let mut same_id = invitation(other.id, "zed@example.com").0;
    same_id.id = first.id;
    assert_conflict(
        b.insert_invitation(&same_id).await,
        Conflict::Id(Entity::Invitation),
    );
    b.insert_invitation(&invitation(other.id, "ann@example.com").0)
        .await
        .unwrap();
    assert_not_found(
        b.insert_invitation(&invitation(TenantId::new(), "x@example.com").0)
            .await,
        Entity::Tenant,
    );

    let ann = new_user("ann@example.com");
    b.insert_user(&ann).await.unwrap();
    let mut accepted = first.clone();
    accepted.status = InvitationStatus::Accepted;
    accepted.accepted_by = Some(ann.id);
    accepted.updated_at = first.updated_at + Duration::seconds(1);
    let mut foreign = accepted.clone();
    foreign.tenant_id = other.id;
    assert_not_found(b.update_invitation(&foreign).await, Entity::Invitation);
    b.update_invitation(&accepted).await.unwrap();
    assert_eq!(b.get_invitation(a.id, first.id).await.unwrap(), accepted);
    assert_eq!(
        b.find_pending_invitation(a.id, &email("ann@example.com"))
            .await
            .unwrap(),
        None
    );

    // Once accepted, the address may be invited again; then the old one
    // cannot go back to pending.
    b.insert_invitation(&invitation(a.id, "ann@example.com").0)
        .await
        .unwrap();
    assert_conflict(
        b.update_invitation(&first).await,
        Conflict::PendingInvitation,
    );

    for i in 0..4 {
        b.insert_invitation(&invitation(a.id, &format!("p{i}@example.com")).0)
            .await
            .unwrap();
    }
    let listed = all_pages(2, |p| async move { b.list_invitations(a.id, &p).await }).await;
    assert_eq!(listed.len(), 6);
    assert!(listed.iter().all(|i| i.tenant_id == a.id));
    let ids: Vec<_> = listed.iter().map(|i| i.id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    assert_invalid_cursor(
        b.list_invitations(a.id, &PageRequest::default().after(Cursor::new("%%")))
            .await,
    );
}

fn audit_event(
    actor: Actor,
    action: &str,
    target_type: &str,
    at: time::OffsetDateTime,
) -> NewAuditEvent {
    let context = AuditContext::new(actor)
        .with_ip("203.0.113.7".parse::<IpAddr>().unwrap())
        .with_user_agent("conformance/1.0");
    NewAuditEvent::new(
        &context,
        AuditAction::new(action).unwrap(),
        Target::new(target_type, "t-1").unwrap(),
        Metadata::new(json!({ "n": 1, "nested": { "b": [1, 2], "a": "x" } })).unwrap(),
        at,
    )
}

/// Audit log: per-tenant sequence and hash chain, heads, verification,
/// filters, pagination, isolation and export.
pub async fn audit_log(backend: Arc<dyn Backend>) {
    let b = &*backend;
    let (a, other) = (new_tenant("audit-a"), new_tenant("audit-b"));
    b.insert_tenant(&a).await.unwrap();
    b.insert_tenant(&other).await.unwrap();
    assert_eq!(b.audit_head(a.id).await.unwrap(), None);
    assert!(b.verify_chain(a.id).await.unwrap().is_intact());

    let ann = Actor::User(UserId::new());
    let key = Actor::ApiKey(ApiKeyId::new());
    let t0 = now();
    let plan = [
        (ann, "member.invited", "invitation", 0),
        (key, "member.role_changed", "membership", 10),
        (Actor::System, "tenant.suspended", "tenant", 20),
        (ann, "member.removed", "membership", 30),
        (key, "project.created", "project", 40),
    ];
    let mut appended = Vec::new();
    for (actor, action, target, offset) in plan {
        let event = audit_event(actor, action, target, t0 + Duration::seconds(offset));
        appended.push(b.append_audit(a.id, event).await.unwrap());
    }
    for (i, event) in appended.iter().enumerate() {
        assert_eq!(event.seq, i as u64 + 1);
        assert_eq!(event.tenant_id, a.id);
        let prev = if i == 0 {
            ChainHash::GENESIS
        } else {
            appended[i - 1].hash
        };
        assert_eq!(event.prev_hash, prev);
        assert_eq!(event.compute_hash(), event.hash);
    }
    let b1 = b
        .append_audit(other.id, audit_event(ann, "tenant.created", "tenant", t0))
        .await
        .unwrap();
    assert_eq!(b1.seq, 1);
    assert_eq!(b1.prev_hash, ChainHash::GENESIS);

    let head = b.audit_head(a.id).await.unwrap().unwrap();
    assert_eq!((head.seq, head.hash), (5, appended[4].hash));
    let report = b.verify_chain(a.id).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.events_checked, 5);
    assert_eq!(report.last_intact, Some(head));
    assert!(b.verify_chain(other.id).await.unwrap().is_intact());

    // Stored events read back exactly as appended.
    let everything = b
        .query_audit(a.id, &AuditQuery::all(), &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(everything.items, appended);
    assert_eq!(everything.next, None);

    let seqs =
        |page: Page<crate::audit::AuditEvent>| page.items.iter().map(|e| e.seq).collect::<Vec<_>>();
    let query = |q: AuditQuery| async move {
        seqs(
            b.query_audit(a.id, &q, &PageRequest::default())
                .await
                .unwrap(),
        )
    };
    assert_eq!(
        query(AuditQuery::all().action(ActionFilter::parse("member.removed").unwrap())).await,
        vec![4]
    );
    assert_eq!(
        query(AuditQuery::all().action(ActionFilter::parse("member.*").unwrap())).await,
        vec![1, 2, 4]
    );
    assert_eq!(
        query(AuditQuery::all().action(ActionFilter::parse("mem.*").unwrap())).await,
        Vec::<u64>::new()
    );
    assert_eq!(query(AuditQuery::all().actor(ann)).await, vec![1, 4]);
    assert_eq!(query(AuditQuery::all().actor(Actor::System)).await, vec![3]);
    assert_eq!(
        query(AuditQuery::all().target_type(TargetType::new("membership").unwrap())).await,
        vec![2, 4]
    );
    let window = AuditQuery::all()
        .between(
            Some(t0 + Duration::seconds(10)),
            Some(t0 + Duration::seconds(30)),
        )
        .unwrap();
    assert_eq!(query(window).await, vec![2, 3]);
    let combined = AuditQuery::all()
        .actor(key)
        .between(Some(t0 + Duration::seconds(15)), None)
        .unwrap();
    assert_eq!(query(combined).await, vec![5]);

    // Filtered pagination.
    let members = AuditQuery::all().action(ActionFilter::parse("member.*").unwrap());
    let paged = all_pages(2, |p| {
        let members = members.clone();
        async move { b.query_audit(a.id, &members, &p).await }
    })
    .await;
    assert_eq!(
        paged.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 4]
    );

    // Tenant B's events never show up in A's log.
    let b_events = b
        .query_audit(other.id, &AuditQuery::all(), &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(b_events.items, vec![b1.clone()]);
    assert_invalid_cursor(
        b.query_audit(
            a.id,
            &AuditQuery::all(),
            &PageRequest::default().after(Cursor::encode("members", 1)),
        )
        .await,
    );

    assert_not_found(
        b.append_audit(
            TenantId::new(),
            audit_event(ann, "tenant.created", "tenant", t0),
        )
        .await,
        Entity::Tenant,
    );
    // Numbers a JSON store might rewrite (1e16, -0.0, 1.10) still verify.
    let mut odd_numbers = audit_event(ann, "tenant.updated", "tenant", t0);
    odd_numbers.metadata = Metadata::new(
        serde_json::from_str(
            r#"{"big": 1e16, "neg": -0.0, "frac": 1.10, "huge": 123456789012345678901234567890}"#,
        )
        .unwrap(),
    )
    .unwrap();
    let odd = b.append_audit(other.id, odd_numbers).await.unwrap();
    let report = b.verify_chain(other.id).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    let read_back = b.read_chain(other.id, 1, 10).await.unwrap();
    assert_eq!(
        read_back,
        vec![crate::audit::ChainEntry::Event(Box::new(odd))]
    );

    // Events whose public fields skipped validation are refused alike.
    let mut control = audit_event(ann, "tenant.updated", "tenant", t0);
    control.target.id = "bad\u{0}id".into();
    assert!(matches!(
        b.append_audit(a.id, control).await,
        Err(StoreError::InvalidInput(
            ValidationError::ControlCharacter { .. }
        ))
    ));
    let mut agent = audit_event(ann, "tenant.updated", "tenant", t0);
    agent.user_agent = Some("x\ny".into());
    assert!(matches!(
        b.append_audit(a.id, agent).await,
        Err(StoreError::InvalidInput(
            ValidationError::ControlCharacter { .. }
        ))
    ));
    // Time bounds finer than a microsecond select the same events everywhere.
    let nanos = AuditQuery::all()
        .between(Some(t0 + Duration::nanoseconds(999)), None)
        .unwrap();
    assert_eq!(query(nanos).await, vec![1, 2, 3, 4, 5]);

    let mut duplicate = audit_event(ann, "tenant.updated", "tenant", t0);
    duplicate.id = appended[0].id;
    assert_conflict(
        b.append_audit(a.id, duplicate).await,
        Conflict::Id(Entity::AuditEvent),
    );
    assert!(b.verify_chain(a.id).await.unwrap().is_intact());

    // Export: one JSON object per line; CSV with a header.
    let mut lines = Vec::new();
    let written = export(
        b,
        a.id,
        &AuditQuery::all(),
        ExportFormat::JsonLines,
        &mut lines,
    )
    .await
    .unwrap();
    assert_eq!(written, 5);
    let text = String::from_utf8(lines).unwrap();
    let parsed: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(parsed.len(), 5);
    assert_eq!(parsed[1]["action"], "member.role_changed");
    assert_eq!(parsed[1]["actor"]["type"], "api_key");
    assert_eq!(parsed[0]["ip"], "203.0.113.7");
    assert_eq!(parsed[4]["hash"], appended[4].hash.to_string());
    let mut csv = Vec::new();
    let written = export(b, a.id, &members, ExportFormat::Csv, &mut csv)
        .await
        .unwrap();
    assert_eq!(written, 3);
    let csv = String::from_utf8(csv).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 4);
    assert!(rows[0].starts_with("seq,id,occurred_at,actor_type,actor_id,action"));
    assert!(rows[3].starts_with("4,"));
}

/// Concurrent appends to one tenant queue up: sequence numbers stay
/// contiguous and the chain never forks.
pub async fn audit_concurrent_appends(backend: Arc<dyn Backend>) {
    let tenant = new_tenant("audit-race");
    backend.insert_tenant(&tenant).await.unwrap();
    let writers: Vec<_> = (0..16)
        .map(|_| {
            let backend = Arc::clone(&backend);
            tokio::spawn(async move {
                for _ in 0..5 {
                    let event = audit_event(Actor::System, "load.tested", "tenant", now());
                    backend.append_audit(tenant.id, event).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let events = all_pages(1000, |p| {
        let backend = Arc::clone(&backend);
        async move { backend.query_audit(tenant.id, &AuditQuery::all(), &p).await }
    })
    .await;
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=80).collect::<Vec<u64>>()
    );
    let report = backend.verify_chain(tenant.id).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.events_checked, 80);
}

/// Transactions: reads see the transaction's own writes; dropping without
/// commit discards everything; commit publishes everything.
pub async fn transactions(backend: Arc<dyn Backend>) {
    let tenant = new_tenant("tx-rollback");
    let user = new_user("tx@example.com");
    {
        let tx = backend.begin().await.unwrap();
        tx.insert_tenant(&tenant).await.unwrap();
        tx.insert_user(&user).await.unwrap();
        tx.insert_membership(&new_membership(&tenant, &user, &["owner"]))
            .await
            .unwrap();
        tx.append_audit(
            tenant.id,
            audit_event(Actor::System, "tenant.created", "tenant", now()),
        )
        .await
        .unwrap();
        assert_eq!(tx.get_tenant(tenant.id).await.unwrap(), tenant);
        assert!(
            tx.find_membership(tenant.id, user.id)
                .await
                .unwrap()
                .is_some()
        );
        // Dropped without commit.
    }
    assert_not_found(backend.get_tenant(tenant.id).await, Entity::Tenant);
    assert_eq!(backend.find_user_by_email(&user.email).await.unwrap(), None);
    assert_eq!(backend.audit_head(tenant.id).await.unwrap(), None);

    let tx = backend.begin().await.unwrap();
    tx.insert_tenant(&tenant).await.unwrap();
    tx.insert_user(&user).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(backend.get_tenant(tenant.id).await.unwrap(), tenant);
    assert_eq!(backend.get_user(user.id).await.unwrap(), user);

    // A record that is absent does not abort a transaction.
    let tx = backend.begin().await.unwrap();
    assert_not_found(tx.get_tenant(TenantId::new()).await, Entity::Tenant);
    let third = new_tenant("tx-third");
    tx.insert_tenant(&third).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(backend.get_tenant(third.id).await.unwrap(), third);

    // A failed write aborts it: every later call and the commit are
    // refused, and nothing of it is kept.
    let tx = backend.begin().await.unwrap();
    let second = new_tenant("tx-second");
    tx.insert_tenant(&second).await.unwrap();
    assert_conflict(
        tx.insert_user(&new_user("TX@example.com")).await,
        Conflict::UserEmail,
    );
    assert!(matches!(
        tx.get_tenant(second.id).await,
        Err(StoreError::TransactionAborted)
    ));
    assert!(matches!(
        tx.commit().await,
        Err(StoreError::TransactionAborted)
    ));
    assert_not_found(backend.get_tenant(second.id).await, Entity::Tenant);
}
