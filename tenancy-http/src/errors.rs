//! How the domain errors answer over HTTP. Anything that is not the
//! caller's fault answers 500 or 503 with a generic body and is logged.

use http::StatusCode;
use tenancy_auth::{AuthError, Error as AuthServiceError};
use tenancy_core::{Conflict, DirectoryError, StoreError};
use time::OffsetDateTime;

use crate::problem::{Problem, ProblemKind};

/// The realm named in `WWW-Authenticate`.
pub(crate) fn unauthorized(error: &AuthError, realm: &str) -> Problem {
    if !error.is_unauthorized() {
        return Problem::unavailable(error);
    }
    if matches!(error, AuthError::MalformedHeader) {
        // RFC 6750 §3.1: invalid_request answers 400.
        let mut problem =
            Problem::bad_request("malformed Authorization header: expected `Bearer <token>`");
        if let Some(value) = error.www_authenticate(realm) {
            problem = problem.with_www_authenticate(value);
        }
        return problem;
    }
    let detail = match error {
        AuthError::MissingCredentials => "authentication required",
        AuthError::UnsupportedScheme => "the Authorization scheme must be Bearer",
        AuthError::InvalidToken(tenancy_auth::TokenRejection::Expired) => {
            "the access token expired"
        }
        _ => "the credentials are invalid",
    };
    let mut problem =
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized").with_detail(detail);
    if let Some(value) = error.www_authenticate(realm) {
        problem = problem.with_www_authenticate(value);
    }
    tracing::debug!(%error, "request not authenticated");
    problem
}

pub(crate) fn store(error: &StoreError) -> Problem {
    match error {
        StoreError::NotFound(_) => Problem::not_found(),
        StoreError::Conflict(conflict) => conflict_problem(*conflict),
        StoreError::InvalidInput(invalid) => Problem::invalid("request", invalid.to_string()),
        other => Problem::unavailable(other),
    }
}

fn conflict_problem(conflict: Conflict) -> Problem {
    let field = match conflict {
        Conflict::TenantSlug => Some("tenant.slug"),
        Conflict::UserEmail => Some("email"),
        Conflict::PendingInvitation => Some("email"),
        _ => None,
    };
    let problem = Problem::conflict(conflict.to_string());
    match field {
        Some(field) => problem.with_field(field, conflict.to_string()),
        None => problem,
    }
}

pub(crate) fn directory(error: &DirectoryError) -> Problem {
    use DirectoryError as E;
    match error {
        E::Store(store_error) => store(store_error),
        E::TenantNotActive { status } => Problem::new(
            StatusCode::FORBIDDEN,
            "tenant-inactive",
            "Tenant not active",
        )
        .with_detail(format!("the tenant is {status}")),
        E::InvalidTransition { .. } | E::LastOwner | E::AlreadyMember | E::AccountExists => {
            Problem::conflict(error.to_string())
        }
        E::UserDisabled => Problem::forbidden(error.to_string()),
        E::InvitationNotFound => Problem::not_found().with_detail("invitation not found"),
        E::InvitationAlreadyAccepted | E::InvitationRevoked | E::InvitationExpired { .. } => {
            Problem::new(
                StatusCode::GONE,
                "invitation-unusable",
                "Invitation no longer usable",
            )
            .with_detail(error.to_string())
        }
        E::InvitationEmailMismatch => Problem::forbidden(error.to_string()),
        E::InviterLacksPower => Problem::new(
            StatusCode::GONE,
            "inviter-lacks-power",
            "Invitation no longer backed by its sender",
        )
        .with_detail(error.to_string()),
        E::SeatLimitReached { limit } => Problem::of(crate::ProblemKind::LimitExceeded)
            .with_detail(error.to_string())
            .with_extension("limit", serde_json::json!("seats"))
            .with_extension("max", serde_json::json!(limit)),
        other => Problem::internal(other),
    }
}

pub(crate) fn auth_service(error: &AuthServiceError, now: OffsetDateTime) -> Problem {
    use AuthServiceError as E;
    match error {
        E::InvalidCredentials => Problem::new(
            StatusCode::UNAUTHORIZED,
            "invalid-credentials",
            "Invalid credentials",
        )
        .with_detail("invalid email or password"),
        E::AccountLocked { until } => Problem::of(ProblemKind::AccountLocked)
            .with_detail("too many failed logins; try again later")
            .retry_after(*until, now),
        E::ClientThrottled { until } => Problem::of(ProblemKind::Throttled)
            .with_detail("too many failed attempts from this client; try again later")
            .retry_after(*until, now),
        E::RateLimited { until } => Problem::rate_limited(*until, now),
        E::Overloaded { until } => Problem::overloaded(*until, now),
        E::RegistrationClosed => Problem::of(ProblemKind::RegistrationClosed)
            .with_detail("this app does not accept new registrations"),
        E::InvitationRequired => Problem::of(ProblemKind::InvitationRequired)
            .with_detail("registration needs an invitation; accept yours instead"),
        E::AccountDisabled => Problem::forbidden("account disabled"),
        E::SsoRequired { .. } => Problem::new(
            StatusCode::FORBIDDEN,
            "sso-required",
            "Single sign-on required",
        )
        .with_detail("this tenant requires signing in through its identity provider"),
        E::ReauthenticationRequired => Problem::new(
            StatusCode::FORBIDDEN,
            "reauthentication-required",
            "Sign in again",
        )
        .with_detail("this session was opened through a tenant's identity provider; sign in again to enter another tenant"),
        E::NotAMember => Problem::not_found().with_detail("no active membership in this tenant"),
        E::TenantNotActive { status } => Problem::new(
            StatusCode::FORBIDDEN,
            "tenant-inactive",
            "Tenant not active",
        )
        .with_detail(format!("the tenant is {status}")),
        E::WeakPassword(rejected) => Problem::invalid("password", rejected.to_string()),
        E::InvalidRefreshToken | E::RefreshTokenReused | E::SessionInactive => Problem::new(
            StatusCode::UNAUTHORIZED,
            "invalid-refresh-token",
            "Invalid refresh token",
        )
        .with_detail(error.to_string()),
        E::SessionNotFound => Problem::not_found(),
        E::InvalidOneTimeToken => Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-token",
            "Invalid or expired token",
        ),
        E::UserRequired => Problem::forbidden("this operation needs a signed-in user"),
        E::InvalidInput(invalid) => Problem::invalid("request", invalid.to_string()),
        E::Directory(directory_error) => directory(directory_error),
        E::Store(store_error) => store(store_error),
        other => Problem::internal(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abuse_errors_answer_with_their_status_and_retry_after() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let until = now + time::Duration::seconds(30);
        for (error, status, kind) in [
            (
                AuthServiceError::RateLimited { until },
                429,
                ProblemKind::RateLimited,
            ),
            (
                AuthServiceError::Overloaded { until },
                503,
                ProblemKind::Overloaded,
            ),
            (
                AuthServiceError::ClientThrottled { until },
                429,
                ProblemKind::Throttled,
            ),
            (
                AuthServiceError::AccountLocked { until },
                429,
                ProblemKind::AccountLocked,
            ),
        ] {
            let problem = auth_service(&error, now);
            assert_eq!(problem.status().as_u16(), status, "{error}");
            assert_eq!(problem.problem_kind(), kind, "{error}");
            assert_eq!(problem.retry_after_seconds(), Some(30), "{error}");
        }
        for (error, kind) in [
            (
                AuthServiceError::RegistrationClosed,
                ProblemKind::RegistrationClosed,
            ),
            (
                AuthServiceError::InvitationRequired,
                ProblemKind::InvitationRequired,
            ),
        ] {
            let problem = auth_service(&error, now);
            assert_eq!(problem.status().as_u16(), 403, "{error}");
            assert_eq!(problem.problem_kind(), kind, "{error}");
        }
    }
}
