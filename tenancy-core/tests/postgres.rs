//! The conformance suites against Postgres, plus what only Postgres has:
//! row-level security (checked as a non-superuser role), the append-only
//! trigger, tamper detection on stored rows, and migrations shared with
//! other crates.
//!
//! Needs `DATABASE_URL` (see the README); skipped without it unless `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers report failure by panicking

use std::sync::Arc;

use sqlx::{Connection, PgConnection, Row};
use tenancy_core::postgres::{PgBackend, begin_tenant_transaction, enable_tenant_rls};
use tenancy_core::testkit::postgres::TestSchema;
use tenancy_core::*;
use uuid::Uuid;

tenancy_core::conformance_tests!(tenancy_core::testkit::postgres::backend());

async fn migrated() -> Option<(TestSchema, PgBackend, Directory)> {
    let schema = TestSchema::create().await?;
    let backend = PgBackend::new(schema.pool.clone());
    backend.migrate().await.unwrap();
    let directory = Directory::new(Arc::new(backend.clone()));
    Some((schema, backend, directory))
}

async fn tenant_with_member(
    directory: &Directory,
    slug: &str,
) -> (TenantId, MembershipId, MembershipId) {
    let created = directory
        .create_tenant(
            NewTenant::new(Slug::new(slug).unwrap(), TenantName::new(slug).unwrap()),
            Owner::New(NewUser::new(
                Email::new(&format!("owner@{slug}.test")).unwrap(),
            )),
            &AuditContext::system(),
        )
        .await
        .unwrap();
    let scope = directory.scope(created.tenant.id).await.unwrap();
    let invited = Email::new(&format!("member@{slug}.test")).unwrap();
    let issued = directory
        .invite(
            &scope,
            invited.clone(),
            RoleSet::single(RoleName::MEMBER),
            &AuditContext::system(),
        )
        .await
        .unwrap();
    let accepted = directory
        .accept_invitation(
            &issued.token,
            Acceptor::NewUser { display_name: None },
            &AuditContext::system(),
        )
        .await
        .unwrap();
    (
        created.tenant.id,
        created.membership.id,
        accepted.membership.id,
    )
}

async fn count(conn: &mut PgConnection, table: &'static str) -> i64 {
    let sql = match table {
        "tenancy_memberships" => "SELECT count(*) FROM tenancy_memberships",
        "tenancy_invitations" => "SELECT count(*) FROM tenancy_invitations",
        "tenancy_audit_events" => "SELECT count(*) FROM tenancy_audit_events",
        "projects" => "SELECT count(*) FROM projects",
        other => panic!("no count query for {other}"),
    };
    sqlx::query_scalar(sql).fetch_one(conn).await.unwrap()
}

#[tokio::test]
async fn row_level_security_isolates_tenants_for_an_ordinary_role() {
    let Some((schema, backend, directory)) = migrated().await else {
        return;
    };
    let (superuser, bypass, role): (bool, bool, String) = sqlx::query_as(
        "SELECT rolsuper, rolbypassrls, rolname::text FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&schema.pool)
    .await
    .unwrap();
    assert!(
        !superuser && !bypass,
        "row-level security cannot be tested as {role}, which bypasses it: \
         point DATABASE_URL at an ordinary role (see README)"
    );

    let (a, a_owner, _) = tenant_with_member(&directory, "rls-a").await;
    let (b, b_owner, b_member) = tenant_with_member(&directory, "rls-b").await;
    let pool = backend.pool();

    // Unscoped: tenant-owned tables look empty.
    let mut conn = pool.acquire().await.unwrap();
    for table in [
        "tenancy_memberships",
        "tenancy_invitations",
        "tenancy_audit_events",
    ] {
        assert_eq!(count(&mut conn, table).await, 0, "{table} unscoped");
    }
    drop(conn);

    // Scoped to A: only A's rows, even with no WHERE clause at all.
    let mut tx = begin_tenant_transaction(pool, a).await.unwrap();
    assert_eq!(count(&mut tx, "tenancy_memberships").await, 2);
    assert_eq!(count(&mut tx, "tenancy_invitations").await, 1);
    assert_eq!(count(&mut tx, "tenancy_audit_events").await, 3);
    let tenants: Vec<Uuid> =
        sqlx::query_scalar("SELECT DISTINCT tenant_id FROM tenancy_memberships")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    assert_eq!(tenants, vec![a.as_uuid()]);

    // Hand-written SQL inside A's scope cannot change B's rows...
    let updated = sqlx::query("UPDATE tenancy_memberships SET roles = '{owner}' WHERE id = $1")
        .bind(b_member.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(updated.rows_affected(), 0);
    let deleted = sqlx::query("DELETE FROM tenancy_memberships WHERE tenant_id = $1")
        .bind(b.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected(), 0);
    tx.commit().await.unwrap();

    // ...nor move A's rows into B, nor insert rows for B.
    let mut tx = begin_tenant_transaction(pool, a).await.unwrap();
    let moved = sqlx::query("UPDATE tenancy_memberships SET tenant_id = $1 WHERE id = $2")
        .bind(b.as_uuid())
        .bind(a_owner.as_uuid())
        .execute(&mut *tx)
        .await;
    assert!(
        moved
            .unwrap_err()
            .to_string()
            .contains("row-level security")
    );
    drop(tx);
    let mut tx = begin_tenant_transaction(pool, a).await.unwrap();
    let forged = sqlx::query(
        "INSERT INTO tenancy_memberships (id, tenant_id, user_id, roles, status, created_at, updated_at) \
         SELECT $1, $2, user_id, '{owner}', 'active', now(), now() FROM tenancy_memberships LIMIT 1",
    )
    .bind(Uuid::now_v7())
    .bind(b.as_uuid())
    .execute(&mut *tx)
    .await;
    assert!(
        forged
            .unwrap_err()
            .to_string()
            .contains("row-level security")
    );
    drop(tx);

    // B's rows are intact.
    let mut tx = begin_tenant_transaction(pool, b).await.unwrap();
    let roles: Vec<String> =
        sqlx::query_scalar("SELECT unnest(roles) FROM tenancy_memberships WHERE id = $1")
            .bind(b_member.as_uuid())
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    assert_eq!(roles, vec!["member".to_owned()]);
    assert_eq!(count(&mut tx, "tenancy_memberships").await, 2);
    let owner_row = sqlx::query("SELECT tenant_id FROM tenancy_memberships WHERE id = $1")
        .bind(b_owner.as_uuid())
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(owner_row.get::<Uuid, _>("tenant_id"), b.as_uuid());
    drop(tx);

    // The same protection on a host table.
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query(
        "CREATE TABLE projects (id uuid PRIMARY KEY, tenant_id uuid NOT NULL, name text NOT NULL)",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    enable_tenant_rls(&mut conn, "projects", "tenant_id")
        .await
        .unwrap();
    drop(conn);
    for (tenant, name) in [(a, "apollo"), (a, "gemini"), (b, "mercury")] {
        let mut tx = begin_tenant_transaction(pool, tenant).await.unwrap();
        sqlx::query("INSERT INTO projects (id, tenant_id, name) VALUES ($1, $2, $3)")
            .bind(Uuid::now_v7())
            .bind(tenant.as_uuid())
            .bind(name)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(count(&mut conn, "projects").await, 0);
    drop(conn);
    let mut tx = begin_tenant_transaction(pool, a).await.unwrap();
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM projects ORDER BY name")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(names, vec!["apollo", "gemini"]);
    let renamed = sqlx::query("UPDATE projects SET name = 'stolen' WHERE name = 'mercury'")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(renamed.rows_affected(), 0);
    let wrong_tenant =
        sqlx::query("INSERT INTO projects (id, tenant_id, name) VALUES ($1, $2, 'x')")
            .bind(Uuid::now_v7())
            .bind(b.as_uuid())
            .execute(&mut *tx)
            .await;
    assert!(wrong_tenant.is_err());
}

#[tokio::test]
async fn a_user_scope_reads_only_that_users_memberships() {
    let Some((_schema, backend, directory)) = migrated().await else {
        return;
    };
    let (a, _, _) = tenant_with_member(&directory, "user-scope-a").await;
    let (b, _, _) = tenant_with_member(&directory, "user-scope-b").await;
    let ann = directory
        .create_user(NewUser::new(Email::new("ann@multi.test").unwrap()))
        .await
        .unwrap();
    for tenant in [a, b] {
        let scope = directory.scope(tenant).await.unwrap();
        let issued = directory
            .invite(
                &scope,
                ann.email.clone(),
                RoleSet::single(RoleName::READONLY),
                &AuditContext::system(),
            )
            .await
            .unwrap();
        directory
            .accept_invitation(
                &issued.token,
                Acceptor::User(ann.id),
                &AuditContext::system(),
            )
            .await
            .unwrap();
    }
    let listed = directory
        .list_user_tenants(ann.id, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 2);

    // The user scope cannot write memberships.
    let mut tx = backend.pool().begin().await.unwrap();
    sqlx::query("SELECT set_config('tenancy.user_id', $1, true)")
        .bind(ann.id.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(count(&mut tx, "tenancy_memberships").await, 2);
    let changed = sqlx::query("UPDATE tenancy_memberships SET roles = '{owner}'")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(changed.rows_affected(), 0);
}

#[tokio::test]
async fn audit_rows_cannot_be_updated_or_deleted() {
    let Some((_schema, backend, directory)) = migrated().await else {
        return;
    };
    let (a, _, _) = tenant_with_member(&directory, "append-only").await;
    for statement in [
        "UPDATE tenancy_audit_events SET action = 'member.forged'",
        "DELETE FROM tenancy_audit_events",
        "TRUNCATE tenancy_audit_events",
    ] {
        let mut tx = begin_tenant_transaction(backend.pool(), a).await.unwrap();
        let err = sqlx::query(statement).execute(&mut *tx).await.unwrap_err();
        assert!(
            err.to_string().contains("append-only"),
            "{statement}: {err}"
        );
    }
    assert!(directory.verify_audit_chain(a).await.unwrap().is_intact());
}

/// Edits a chain behind the trigger's back, as an attacker with the table
/// owner's rights could, and checks verification finds each break.
#[tokio::test]
async fn tampering_with_stored_events_is_detected() {
    let Some((_schema, backend, directory)) = migrated().await else {
        return;
    };
    let pool = backend.pool();
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query(
        "ALTER TABLE tenancy_audit_events DISABLE TRIGGER tenancy_audit_events_append_only",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    drop(conn);
    async fn tamper(pool: &sqlx::PgPool, tenant: TenantId, sql: &'static str) {
        let mut tx = begin_tenant_transaction(pool, tenant).await.unwrap();
        let done = sqlx::query(sql).execute(&mut *tx).await.unwrap();
        assert_eq!(done.rows_affected(), 1, "{sql}");
        tx.commit().await.unwrap();
    }

    let (edited, _, _) = tenant_with_member(&directory, "tamper-edit").await;
    tamper(
        pool,
        edited,
        "UPDATE tenancy_audit_events SET target_id = 'someone-else' WHERE seq = 2",
    )
    .await;
    let report = directory.verify_audit_chain(edited).await.unwrap();
    assert_eq!(
        report.first_broken,
        Some(BrokenLink {
            seq: 2,
            reason: BrokenReason::HashMismatch
        })
    );
    assert_eq!(report.events_checked, 1);

    let (gap, _, _) = tenant_with_member(&directory, "tamper-gap").await;
    tamper(pool, gap, "DELETE FROM tenancy_audit_events WHERE seq = 2").await;
    let report = directory.verify_audit_chain(gap).await.unwrap();
    assert_eq!(
        report.first_broken,
        Some(BrokenLink {
            seq: 3,
            reason: BrokenReason::SequenceGap { expected: 2 }
        })
    );

    let (relinked, _, _) = tenant_with_member(&directory, "tamper-link").await;
    tamper(
        pool,
        relinked,
        "UPDATE tenancy_audit_events SET prev_hash = hash WHERE seq = 3",
    )
    .await;
    let report = directory.verify_audit_chain(relinked).await.unwrap();
    assert_eq!(
        report.first_broken,
        Some(BrokenLink {
            seq: 3,
            reason: BrokenReason::PrevHashMismatch
        })
    );

    // Rows edited into something that no longer decodes are reported too.
    let (garbled, _, _) = tenant_with_member(&directory, "tamper-garble").await;
    tamper(
        pool,
        garbled,
        "UPDATE tenancy_audit_events SET action = 'Tenant.Created' WHERE seq = 2",
    )
    .await;
    let report = directory.verify_audit_chain(garbled).await.unwrap();
    assert_eq!(
        report.first_broken,
        Some(BrokenLink {
            seq: 2,
            reason: BrokenReason::Corrupt
        })
    );

    let (truncated, _, _) = tenant_with_member(&directory, "tamper-tail").await;
    tamper(
        pool,
        truncated,
        "DELETE FROM tenancy_audit_events WHERE seq = 3",
    )
    .await;
    let report = directory.verify_audit_chain(truncated).await.unwrap();
    assert_eq!(
        report.first_broken,
        Some(BrokenLink {
            seq: 3,
            reason: BrokenReason::Truncated { head_seq: 3 }
        })
    );
    assert_eq!(report.events_checked, 2);
}

/// An event inserted by hand, with the trigger still on, must extend the
/// chain and is then recorded in the head, so verification checks it; the
/// head itself never moves back or disappears.
#[tokio::test]
async fn hand_inserted_events_are_caught() {
    let Some((_schema, backend, directory)) = migrated().await else {
        return;
    };
    let (tenant, _, _) = tenant_with_member(&directory, "forged").await;
    let pool = backend.pool();
    let insert = "INSERT INTO tenancy_audit_events (tenant_id, seq, id, actor_kind, actor_id, action, \
        target_type, target_id, metadata, occurred_at, prev_hash, hash) \
        SELECT tenant_id, seq + $1, $2, 'system', NULL, 'member.forged', 'tenant', 'x', '{}', now(), \
        CASE WHEN $3 THEN hash ELSE decode(repeat('cd', 32), 'hex') END, decode(repeat('ab', 32), 'hex') \
        FROM tenancy_audit_heads WHERE tenant_id = $4";
    // Out of sequence, or not linked to the head: refused.
    for (offset, linked) in [(2_i64, true), (1, false)] {
        let mut tx = begin_tenant_transaction(pool, tenant).await.unwrap();
        let err = sqlx::query(insert)
            .bind(offset)
            .bind(Uuid::now_v7())
            .bind(linked)
            .bind(tenant.as_uuid())
            .execute(&mut *tx)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("does not extend the chain"),
            "{err}"
        );
    }
    // Well placed but forged: accepted by the database, caught by verification.
    let mut tx = begin_tenant_transaction(pool, tenant).await.unwrap();
    sqlx::query(insert)
        .bind(1_i64)
        .bind(Uuid::now_v7())
        .bind(true)
        .bind(tenant.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let report = directory.verify_audit_chain(tenant).await.unwrap();
    assert_eq!(
        report.first_broken,
        Some(BrokenLink {
            seq: 4,
            reason: BrokenReason::HashMismatch
        })
    );
    // The log keeps working after the forgery.
    let scope = directory.scope(tenant).await.unwrap();
    directory
        .invite(
            &scope,
            Email::new("next@forged.test").unwrap(),
            RoleSet::single(RoleName::MEMBER),
            &AuditContext::system(),
        )
        .await
        .unwrap();

    for statement in [
        "UPDATE tenancy_audit_heads SET seq = 1",
        "DELETE FROM tenancy_audit_heads",
    ] {
        let mut tx = begin_tenant_transaction(pool, tenant).await.unwrap();
        let err = sqlx::query(statement).execute(&mut *tx).await.unwrap_err();
        assert!(
            err.to_string().contains("only move forward"),
            "{statement}: {err}"
        );
    }
}

/// Stores that serialize transactions refuse a second one from the task
/// holding the first, instead of waiting forever; Postgres allows it.
#[tokio::test]
async fn host_transactions_compose_with_tenancy_writes() {
    let Some((_schema, backend, _directory)) = migrated().await else {
        return;
    };
    let tenant = Tenant {
        id: TenantId::new(),
        slug: Slug::new("composed").unwrap(),
        name: TenantName::new("Composed").unwrap(),
        status: TenantStatus::Active,
        metadata: Metadata::empty(),
        created_at: truncate_to_micros(time::OffsetDateTime::now_utc()),
        updated_at: truncate_to_micros(time::OffsetDateTime::now_utc()),
    };
    // A host transaction: tenancy writes through it, then the host commits.
    let host = backend.pool().begin().await.unwrap();
    let tx = tenancy_core::postgres::PgTransaction::from_sqlx(host);
    tx.insert_tenant(&tenant).await.unwrap();
    let mut host = tx.into_sqlx();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM tenancy_tenants WHERE id = $1")
        .bind(tenant.id.as_uuid())
        .fetch_one(&mut *host)
        .await
        .unwrap();
    assert_eq!(seen, 1);
    drop(host);
    assert!(matches!(
        backend.get_tenant(tenant.id).await,
        Err(StoreError::NotFound(Entity::Tenant))
    ));
}

/// A workflow joined to a transaction with `Directory::create_tenant_in`
/// and statements of another crate on `PgTransaction::connection` see each
/// other, and commit together or not at all.
#[tokio::test]
async fn workflows_and_other_statements_share_one_transaction() {
    let Some((_schema, backend, directory)) = migrated().await else {
        return;
    };
    for commit in [false, true] {
        let tx =
            tenancy_core::postgres::PgTransaction::from_sqlx(backend.pool().begin().await.unwrap());
        let created = directory
            .create_tenant_in(
                &tx,
                NewTenant::new(
                    Slug::new("joined").unwrap(),
                    TenantName::new("Joined").unwrap(),
                ),
                Owner::New(NewUser::new(Email::new("ann@joined.test").unwrap())),
                &AuditContext::system(),
            )
            .await
            .unwrap();
        {
            let mut conn = tx.connection().await.unwrap();
            let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM tenancy_users WHERE id = $1")
                .bind(created.owner.id.as_uuid())
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(seen, 1);
        }
        let stored = if commit {
            Box::new(tx).commit().await.unwrap();
            true
        } else {
            drop(tx);
            false
        };
        assert_eq!(backend.get_tenant(created.tenant.id).await.is_ok(), stored);
        assert_eq!(
            backend
                .find_user_by_email(&created.owner.email)
                .await
                .unwrap()
                .is_some(),
            stored
        );
    }
}

/// A connection whose `search_path` is the test's schema.
async fn connect_in(schema: &TestSchema) -> PgConnection {
    let mut conn = PgConnection::connect(&schema.url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET search_path TO {}",
        schema.name
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    conn
}

async fn versions(conn: &mut PgConnection, table: &str) -> Vec<i64> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT version FROM {table} ORDER BY version"
    )))
    .fetch_all(conn)
    .await
    .unwrap()
}

fn our_versions() -> Vec<i64> {
    tenancy_core::postgres::migrator()
        .iter()
        .map(|m| m.version)
        .collect()
}

#[tokio::test]
async fn host_migrations_run_beside_ours_in_either_order() {
    use tenancy_core::postgres::{MIGRATIONS_TABLE, migrate_all, migrator};
    let host = sqlx::migrate!("./tests/host_migrations");
    for host_first in [true, false] {
        let Some(schema) = TestSchema::create().await else {
            return;
        };
        if host_first {
            host.run(&schema.pool).await.unwrap();
        }
        migrate_all(&schema.pool, [migrator()]).await.unwrap();
        // The host's migrator knows nothing of tenancy's versions, and
        // must not trip over them (it used to fail with VersionMissing).
        host.run(&schema.pool).await.unwrap();
        migrate_all(&schema.pool, [migrator()]).await.unwrap();
        host.run(&schema.pool).await.unwrap();
        let mut conn = connect_in(&schema).await;
        let host_versions: Vec<i64> = host.iter().map(|m| m.version).collect();
        assert_eq!(versions(&mut conn, "_sqlx_migrations").await, host_versions);
        assert_eq!(versions(&mut conn, MIGRATIONS_TABLE).await, our_versions());
    }
}

#[tokio::test]
async fn migrate_all_merges_crates_and_refuses_conflicting_versions() {
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    use tenancy_core::postgres::{MIGRATIONS_TABLE, migrate_all, migrator};
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let other = |sql: &'static str| {
        Migrator::with_migrations(vec![Migration::new(
            9001,
            "other crate".into(),
            MigrationType::Simple,
            sqlx::AssertSqlSafe(sql).into_sql_str(),
            false,
        )])
    };
    // Given in any order, run in version order, in one go.
    migrate_all(
        &schema.pool,
        [other("CREATE TABLE other_crate (id int)"), migrator()],
    )
    .await
    .unwrap();
    let mut conn = connect_in(&schema).await;
    let mut expected = our_versions();
    expected.push(9001);
    assert_eq!(versions(&mut conn, MIGRATIONS_TABLE).await, expected);
    // One crate's own migrator, run later, ignores the other's version.
    migrate_all(&schema.pool, [migrator()]).await.unwrap();
    // Two crates claiming one version with different SQL is an error.
    let clash = migrate_all(
        &schema.pool,
        [
            other("CREATE TABLE other_crate (id int)"),
            other("CREATE TABLE something_else (id int)"),
        ],
    )
    .await;
    assert!(matches!(
        clash,
        Err(sqlx::migrate::MigrateError::VersionMismatch(9001))
    ));
    // A migration that fails leaves no lock behind for the next run.
    let broken = Migrator::with_migrations(vec![Migration::new(
        9002,
        "broken".into(),
        MigrationType::Simple,
        sqlx::AssertSqlSafe("SELECT missing FROM nowhere").into_sql_str(),
        false,
    )]);
    assert!(migrate_all(&schema.pool, [broken]).await.is_err());
    // Another replica: other connections than the failed run's.
    let replica = schema.pool_as(&schema.url, 1).await;
    let next = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        migrate_all(&replica, [migrator()]),
    )
    .await
    .expect("no migration lock left behind");
    next.unwrap();
}

#[tokio::test]
async fn databases_migrated_into_sqlx_migrations_are_adopted() {
    use tenancy_core::postgres::{MIGRATIONS_TABLE, migrate_all, migrator};
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    // How tenancy migrated before it kept a table of its own.
    let mut legacy = sqlx::migrate!("./migrations");
    legacy.set_ignore_missing(true);
    legacy.run(&schema.pool).await.unwrap();
    let host = sqlx::migrate!("./tests/host_migrations");
    // The failure that kept hosts from migrating beside tenancy. (On a
    // connection of its own, closed after: sqlx keeps its migration lock
    // when a run fails, which would block every other test's migrations.)
    let mut failing = connect_in(&schema).await;
    assert!(matches!(
        host.run(&mut failing).await,
        Err(sqlx::migrate::MigrateError::VersionMissing(_))
    ));
    failing.close().await.unwrap();

    migrate_all(&schema.pool, [migrator()]).await.unwrap();
    migrate_all(&schema.pool, [migrator()]).await.unwrap();
    host.run(&schema.pool).await.unwrap();
    let mut conn = connect_in(&schema).await;
    let host_versions: Vec<i64> = host.iter().map(|m| m.version).collect();
    assert_eq!(versions(&mut conn, "_sqlx_migrations").await, host_versions);
    assert_eq!(versions(&mut conn, MIGRATIONS_TABLE).await, our_versions());
    // Nothing ran twice: the tables the legacy run made are still in use.
    let backend = PgBackend::new(schema.pool.clone());
    let directory = Directory::new(Arc::new(backend));
    tenant_with_member(&directory, "adopted").await;
}

#[tokio::test]
async fn tenant_and_membership_changes_are_announced_as_they_commit() {
    use tenancy_core::postgres::{DirectoryChange, listen_directory_changes};
    let Some((schema, _, directory)) = migrated().await else {
        return;
    };
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let listener = listen_directory_changes(&schema.pool, move |change| {
        let _ = sender.send(change);
    })
    .await
    .unwrap();
    let (tenant, owner, member) = tenant_with_member(&directory, "notices").await;
    let scope = directory.scope(tenant).await.unwrap();
    let members = directory
        .list_members(&scope, &PageRequest::first(PageSize::MAX))
        .await
        .unwrap();
    let user_of = |membership: MembershipId| {
        members
            .items
            .iter()
            .find(|m| m.membership.id == membership)
            .map(|m| m.user.id)
            .unwrap()
    };
    let (owner, member) = (user_of(owner), user_of(member));
    // A rename is no news to the pipeline; removal and suspension are.
    directory
        .update_tenant(
            tenant,
            TenantUpdate {
                name: Some(TenantName::new("Renamed").unwrap()),
                ..TenantUpdate::default()
            },
            &AuditContext::system(),
        )
        .await
        .unwrap();
    directory
        .remove_member(&scope, member, &AuditContext::system())
        .await
        .unwrap();
    directory
        .suspend_tenant(tenant, &AuditContext::system())
        .await
        .unwrap();

    // Other tests share the database: keep only this tenant's notices.
    let mut seen = Vec::new();
    while !seen.contains(&DirectoryChange::Tenant(tenant)) {
        let change = tokio::time::timeout(std::time::Duration::from_secs(10), receiver.recv())
            .await
            .expect("a notice within ten seconds")
            .unwrap();
        let ours = match change {
            DirectoryChange::Tenant(id) | DirectoryChange::Member(id, _) => id == tenant,
            _ => false,
        };
        if ours {
            seen.push(change);
        }
    }
    assert_eq!(
        seen,
        vec![
            DirectoryChange::Member(tenant, owner), // the founding owner joins
            DirectoryChange::Member(tenant, member), // accepts the invitation
            DirectoryChange::Member(tenant, member), // is removed
            DirectoryChange::Tenant(tenant),        // the suspension, not the rename
        ]
    );
    listener.stop();
}

#[derive(Debug, PartialEq)]
enum Heard {
    Notice(String, String),
    Resync,
}

async fn next(heard: &mut tokio::sync::mpsc::UnboundedReceiver<Heard>) -> Heard {
    tokio::time::timeout(std::time::Duration::from_secs(10), heard.recv())
        .await
        .expect("heard within ten seconds")
        .unwrap()
}

#[tokio::test]
async fn one_listener_relays_every_channel_and_resyncs_after_listening_again() {
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use std::str::FromStr;
    use tenancy_core::postgres::{FnSubscriber, Listener};
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    // A pool of its own, named, so the test can cut exactly its connection.
    let name = format!("listener-{}", Uuid::now_v7().simple());
    let options = PgConnectOptions::from_str(&schema.url)
        .unwrap()
        .application_name(&name);
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    let channel_a = format!("test_a_{}", Uuid::now_v7().simple());
    let channel_b = format!("test_b_{}", Uuid::now_v7().simple());
    let (sender, mut heard) = tokio::sync::mpsc::unbounded_channel();
    let subscriber = |sender: tokio::sync::mpsc::UnboundedSender<Heard>| {
        let resync = sender.clone();
        FnSubscriber::new(
            move |channel: &str, payload: &str| {
                let _ = sender.send(Heard::Notice(channel.to_owned(), payload.to_owned()));
            },
            move || {
                let _ = resync.send(Heard::Resync);
            },
        )
    };
    let mut listener = Listener::new(pool.clone());
    listener.subscribe([channel_a.as_str()], subscriber(sender.clone()));
    listener.subscribe([channel_a.as_str(), channel_b.as_str()], subscriber(sender));
    let running = listener.start().await.unwrap();
    let mut notifier = PgConnection::connect(&schema.url).await.unwrap();
    let notify = |channel: String, payload: &'static str| {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
    };
    let notice =
        |channel: &str, payload: &str| Heard::Notice(channel.to_owned(), payload.to_owned());

    notify(channel_a.clone(), "one")
        .execute(&mut notifier)
        .await
        .unwrap();
    // Both subscribers of channel a hear it; only the second hears b.
    assert_eq!(next(&mut heard).await, notice(&channel_a, "one"));
    assert_eq!(next(&mut heard).await, notice(&channel_a, "one"));
    notify(channel_b.clone(), "two")
        .execute(&mut notifier)
        .await
        .unwrap();
    assert_eq!(next(&mut heard).await, notice(&channel_b, "two"));

    // Cut the listener's connection.
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&name)
    .fetch_all(&mut notifier)
    .await
    .unwrap();
    assert!(!cut.is_empty() && cut.iter().all(|ok| *ok));
    // Each subscriber is told once (though one has two channels)…
    assert_eq!(next(&mut heard).await, Heard::Resync);
    assert_eq!(next(&mut heard).await, Heard::Resync);
    // …and only once the new connection listens: a notice sent right after
    // the resync arrives.
    notify(channel_b.clone(), "three")
        .execute(&mut notifier)
        .await
        .unwrap();
    assert_eq!(next(&mut heard).await, notice(&channel_b, "three"));
    assert!(running.is_running());
    running.stop();
}
