//! Property tests for the validating parsers: they never panic on any
//! input, accept exactly what their rules allow, and are idempotent.

#![allow(clippy::unwrap_used)] // test assertions

use proptest::prelude::*;
use tenancy_core::{Cursor, Email, InvitationToken, RESERVED_SLUGS, RoleName, Slug, TenantId};

proptest! {
    #[test]
    fn slug_accepts_exactly_its_rules(raw in "\\PC{0,70}") {
        let valid = (3..=63).contains(&raw.chars().count())
            && raw.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !raw.starts_with('-')
            && !raw.ends_with('-')
            && raw.get(2..4) != Some("--")
            && !RESERVED_SLUGS.contains(&raw.as_str());
        prop_assert_eq!(Slug::new(raw.clone()).is_ok(), valid);
    }

    #[test]
    fn encoded_labels_are_refused(prefix in "[a-z0-9]{2}", rest in "[a-z0-9-]{0,58}[a-z0-9]") {
        let raw = format!("{prefix}--{rest}");
        prop_assert!(Slug::new(raw).is_err());
    }

    #[test]
    fn generated_slugs_are_accepted(raw in "[a-z0-9][a-z0-9-]{1,61}[a-z0-9]") {
        prop_assume!(!RESERVED_SLUGS.contains(&raw.as_str()));
        prop_assume!(raw.get(2..4) != Some("--"));
        let slug = Slug::new(raw.clone()).unwrap();
        prop_assert_eq!(slug.as_str(), raw.as_str());
    }

    #[test]
    fn email_normalization_is_idempotent(raw in "\\PC{0,80}") {
        if let Ok(email) = Email::new(&raw) {
            let again = Email::new(email.as_str()).unwrap();
            prop_assert_eq!(&again, &email);
            let (_, domain) = email.as_str().rsplit_once('@').unwrap();
            prop_assert_eq!(domain, domain.to_ascii_lowercase());
            prop_assert!(email.as_str().len() <= Email::MAX_LEN);
        }
    }

    #[test]
    fn plausible_addresses_are_accepted(
        local in "[a-zA-Z0-9][a-zA-Z0-9._+-]{0,20}[a-zA-Z0-9]",
        domain in "[a-zA-Z0-9]{1,20}\\.[a-zA-Z]{2,10}",
    ) {
        prop_assume!(!local.contains(".."));
        let email = Email::new(&format!(" {local}@{domain} ")).unwrap();
        prop_assert_eq!(email.as_str(), format!("{local}@{}", domain.to_ascii_lowercase()));
    }

    #[test]
    fn role_names_accept_exactly_their_rules(raw in "\\PC{0,70}") {
        let valid = (1..=64).contains(&raw.len())
            && raw.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | ':' | '-'));
        prop_assert_eq!(RoleName::new(raw).is_ok(), valid);
    }

    #[test]
    fn cursors_and_tokens_never_panic(raw in "\\PC{0,120}") {
        let _ = Cursor::new(raw.clone()).decode::<u64>("audit");
        let _ = Cursor::new(raw.clone()).decode::<TenantId>("tenants");
        let _ = InvitationToken::parse(&raw);
        let _ = InvitationToken::parse(&format!("inv_{raw}"));
    }

    #[test]
    fn cursor_round_trips_any_key(key in any::<u64>()) {
        prop_assert_eq!(Cursor::encode("audit", key).decode::<u64>("audit").unwrap(), key);
    }
}
