//! The outbox suites in memory and on Postgres (`DATABASE_URL`; skipped
//! without it unless `CI=true`), and the row-level security of the Postgres
//! event table under an ordinary role.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use tenancy_core::testkit::OutboxSetup;

mod memory {
    use super::*;
    use tenancy_core::MemoryBackend;

    async fn setup() -> Option<OutboxSetup> {
        let backend = MemoryBackend::new();
        Some((Arc::new(backend.clone()), Arc::new(backend)))
    }

    tenancy_core::outbox_tests!(setup());
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use serde_json::json;
    use tenancy_core::outbox::{EventType, NewEvent, ReplayFrom};
    use tenancy_core::postgres::{PgBackend, append_event, begin_tenant_transaction};
    use tenancy_core::testkit::postgres::TestSchema;
    use tenancy_core::{
        AuditContext, Directory, EventFeed, NewTenant, NewUser, Owner, Slug, TenantName,
    };

    async fn migrated() -> Option<(TestSchema, PgBackend)> {
        let schema = TestSchema::create().await?;
        let backend = PgBackend::new(schema.pool.clone());
        backend.migrate().await.unwrap();
        Some((schema, backend))
    }

    async fn setup() -> Option<OutboxSetup> {
        let (_schema, backend) = migrated().await?;
        Some((Arc::new(backend.clone()), Arc::new(backend)))
    }

    tenancy_core::outbox_tests!(setup());

    /// A tenant's transaction sees and writes its own events only; the
    /// relay's setting reads them all; a host's own sqlx transaction
    /// appends with [`append_event`].
    #[tokio::test]
    async fn events_are_tenant_isolated_by_row_level_security() {
        let Some((_schema, backend)) = migrated().await else {
            return;
        };
        let directory = Directory::new(Arc::new(backend.clone()));
        let mut tenants = Vec::new();
        for slug in ["rls-events-a", "rls-events-b"] {
            let created = directory
                .create_tenant(
                    NewTenant::new(Slug::new(slug).unwrap(), TenantName::new(slug).unwrap()),
                    Owner::New(NewUser::new(
                        tenancy_core::Email::new(&format!("owner@{slug}.test")).unwrap(),
                    )),
                    &AuditContext::system(),
                )
                .await
                .unwrap();
            tenants.push(created.tenant.id);
        }
        let (a, b) = (tenants[0], tenants[1]);
        let pool = backend.pool();

        // The host's transaction: its own change and its event commit together.
        let mut tx = begin_tenant_transaction(pool, a).await.unwrap();
        let event = NewEvent::new(
            EventType::new("project.archived").unwrap(),
            json!({ "project": 7 }),
        );
        let appended = append_event(&mut tx, a, event).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(appended.seq, 2, "tenant.created came first");

        // Writing into another tenant's stream from A's scope is refused.
        let mut tx = begin_tenant_transaction(pool, a).await.unwrap();
        let event = NewEvent::new(EventType::new("project.archived").unwrap(), json!({}));
        assert!(append_event(&mut tx, b, event).await.is_err());
        drop(tx);

        let mut tx = begin_tenant_transaction(pool, a).await.unwrap();
        let seen: Vec<uuid::Uuid> =
            sqlx::query_scalar("SELECT DISTINCT tenant_id FROM tenancy_outbox_events")
                .fetch_all(&mut *tx)
                .await
                .unwrap();
        assert_eq!(seen, vec![a.as_uuid()]);
        let deleted = sqlx::query("DELETE FROM tenancy_outbox_events")
            .execute(&mut *tx)
            .await
            .unwrap();
        assert_eq!(deleted.rows_affected(), 2);
        drop(tx);

        let mut conn = pool.acquire().await.unwrap();
        let unscoped: i64 = sqlx::query_scalar("SELECT count(*) FROM tenancy_outbox_events")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(unscoped, 0);
        drop(conn);

        let events = backend.read_events(b, ReplayFrom::Start, 10).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type.as_str(), "tenant.created");
        assert_eq!(events[0].tenant_id, b);
    }
}
