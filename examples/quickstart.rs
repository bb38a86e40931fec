//! The tenancy quickstart: a tenant with its owner, an invited member, a
//! role change, a paginated member list and the audit trail with its chain
//! verification.
//!
//! ```text
//! cargo run --example quickstart                                             # in memory
//! DATABASE_URL=postgres://… cargo run --example quickstart --features postgres  # on Postgres
//! ```

use std::error::Error;
use std::sync::Arc;

use tenancy::{
    Acceptor, AuditContext, AuditQuery, Backend, Directory, DirectoryError, DisplayName, Email,
    MemoryBackend, NewTenant, NewUser, Owner, PageRequest, PageSize, RoleName, RoleSet, Slug,
    TenantName,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let backend = backend().await?;
    let directory = Directory::new(backend);
    // Unique names, so the example can run again against the same database.
    let run = &uuid_suffix();

    // A tenant and its first owner, created together in one transaction.
    let created = directory
        .create_tenant(
            NewTenant::new(
                Slug::new(format!("acme-{run}"))?,
                TenantName::new("Acme Corp")?,
            ),
            Owner::New(
                NewUser::new(Email::new(&format!("ada-{run}@acme.example"))?)
                    .with_display_name(DisplayName::new("Ada")?),
            ),
            &AuditContext::system(),
        )
        .await?;
    let tenant = &created.tenant;
    let ada = AuditContext::user(created.owner.id).with_ip("192.0.2.10".parse()?);
    println!(
        "created tenant {} ({}) owned by {}",
        tenant.slug, tenant.id, created.owner.email
    );

    // Ada invites Grace as a member; the token goes out by email, once.
    let scope = directory.scope(tenant.id).await?;
    let grace_email = Email::new(&format!("grace-{run}@acme.example"))?;
    let invitation = directory
        .invite(&scope, grace_email, RoleSet::single(RoleName::MEMBER), &ada)
        .await?;
    println!(
        "invited {} (expires {}), link token {}…",
        invitation.invitation.email,
        invitation.invitation.expires_at.date(),
        &invitation.token.expose_secret()[..12]
    );

    // Grace follows the link; her account is created on acceptance.
    let joined = directory
        .accept_invitation(
            &invitation.token,
            Acceptor::NewUser {
                display_name: DisplayName::new("Grace").ok(),
            },
            &AuditContext::system(),
        )
        .await?;
    println!(
        "{} joined as {:?}",
        joined.user.email,
        names(&joined.membership.roles)
    );

    // Two more members, so the member list spans pages.
    for name in ["alan", "barbara"] {
        let email = Email::new(&format!("{name}-{run}@acme.example"))?;
        let issued = directory
            .invite(&scope, email, RoleSet::single(RoleName::READONLY), &ada)
            .await?;
        directory
            .accept_invitation(
                &issued.token,
                Acceptor::NewUser { display_name: None },
                &AuditContext::system(),
            )
            .await?;
    }

    // Ada makes Grace an admin.
    let promoted = directory
        .change_roles(
            &scope,
            joined.user.id,
            RoleSet::new([RoleName::ADMIN, RoleName::MEMBER])?,
            &ada,
        )
        .await?;
    println!(
        "{} now holds {:?}",
        joined.user.email,
        names(&promoted.roles)
    );

    // The last owner cannot be demoted.
    match directory
        .change_roles(
            &scope,
            created.owner.id,
            RoleSet::single(RoleName::ADMIN),
            &ada,
        )
        .await
    {
        Err(DirectoryError::LastOwner) => println!("demoting the last owner: refused"),
        other => return Err(format!("the last owner was demoted: {other:?}").into()),
    }

    // Members, two per page.
    let mut page = PageRequest::first(PageSize::new(2)?);
    let mut number = 1;
    loop {
        let members = directory.list_members(&scope, &page).await?;
        for member in &members.items {
            println!(
                "  page {number}: {:<32} {:?}",
                member.user.email.as_str(),
                names(&member.membership.roles)
            );
        }
        match members.next {
            Some(cursor) => page = page.after(cursor),
            None => break,
        }
        number += 1;
    }

    // The audit trail and its hash chain.
    let events = directory
        .audit_events(&scope, &AuditQuery::all(), &PageRequest::default())
        .await?;
    println!("audit trail:");
    for event in &events.items {
        println!(
            "  #{:<2} {:<20} by {:<45} on {} {}  {}…",
            event.seq,
            event.action.as_str(),
            event.actor.to_string(),
            event.target.target_type,
            event.target.id,
            &event.hash.to_string()[..16]
        );
    }
    let report = directory.verify_audit_chain(tenant.id).await?;
    println!(
        "audit chain: {} events checked, {}",
        report.events_checked,
        if report.is_intact() {
            "intact"
        } else {
            "BROKEN"
        }
    );
    Ok(())
}

fn names(roles: &RoleSet) -> Vec<&str> {
    roles.iter().map(RoleName::as_str).collect()
}

fn uuid_suffix() -> String {
    let id = tenancy::TenantId::new().to_string();
    id[id.len() - 8..].to_owned()
}

/// Postgres when built with `--features postgres` and `DATABASE_URL` is set;
/// otherwise memory.
async fn backend() -> Result<Arc<dyn Backend>, Box<dyn Error>> {
    #[cfg(feature = "postgres")]
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let postgres = tenancy::postgres::PgBackend::connect(&url).await?;
        postgres.migrate().await?;
        println!("backend: postgres");
        return Ok(Arc::new(postgres));
    }
    println!("backend: memory");
    Ok(Arc::new(MemoryBackend::new()))
}
