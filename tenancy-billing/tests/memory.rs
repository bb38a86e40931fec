//! The conformance suites against the in-memory store.

tenancy_billing::conformance_tests!(tenancy_billing::testkit::memory());

mod signed {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::sync::Arc;

    use tenancy_billing::testkit::webhooks::{an_hour_ago, catalog, realistic_sequence};
    use tenancy_billing::testkit::{create_tenant, memory};
    use tenancy_billing::webhook::{SignatureError, WebhookSecret, WebhookVerifier};
    use tenancy_billing::{
        AccessPolicy, BillingService, EntitlementCache, WebhookError, WebhookOutcome,
    };

    /// The whole path: verify the raw body, parse, apply once, and the
    /// cache the service invalidates grants the plan.
    #[tokio::test]
    async fn signed_webhooks_apply_once_and_refresh_entitlements() {
        let f = memory().await.unwrap();
        let cache = Arc::new(EntitlementCache::new(
            Arc::clone(&f.store),
            catalog(),
            AccessPolicy::new(),
        ));
        let service =
            BillingService::new(Arc::clone(&f.store), catalog()).with_cache(Arc::clone(&cache));
        let secret = WebhookSecret::new("whsec_live").unwrap();
        let verifier =
            WebhookVerifier::new([WebhookSecret::new("whsec_old").unwrap(), secret.clone()]);
        let tenant = create_tenant(&f.backend).await;
        let sso = catalog().feature("sso").unwrap();
        assert!(!cache.get(tenant).await.unwrap().check(sso));

        let events = realistic_sequence(tenant, an_hour_ago());
        let active = serde_json::to_vec(&events[2]).unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let header = secret.sign(now, &active);
        let outcome = service
            .handle_webhook(&verifier, Some(&header), &active)
            .await
            .unwrap();
        assert!(
            matches!(outcome, WebhookOutcome::Applied { .. }),
            "{outcome:?}"
        );
        assert!(
            cache.get(tenant).await.unwrap().check(sso),
            "cache refreshed"
        );
        assert_eq!(
            service
                .handle_webhook(&verifier, Some(&header), &active)
                .await
                .unwrap(),
            WebhookOutcome::Duplicate
        );

        let mut tampered = active.clone();
        let at = tampered.len() / 2;
        tampered[at] ^= 1;
        let refused = service
            .handle_webhook(&verifier, Some(&header), &tampered)
            .await
            .unwrap_err();
        assert!(matches!(
            refused,
            WebhookError::Signature(SignatureError::Mismatch)
        ));
        assert!(refused.is_bad_request());
        let garbage = b"not json";
        let refused = service
            .handle_webhook(&verifier, Some(&secret.sign(now, garbage)), garbage)
            .await
            .unwrap_err();
        assert!(matches!(refused, WebhookError::Payload(_)));
        assert!(refused.is_bad_request());
    }
}
