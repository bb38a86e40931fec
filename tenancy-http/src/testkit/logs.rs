//! Captures what the SDK logs while scenarios run, to show no secret
//! reaches a log and the request span carries its fields.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;

/// Everything logged since [`capture_logs`] installed the capture.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// The text logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::fmt::Debug for CapturedLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapturedLogs").finish_non_exhaustive()
    }
}

/// One write into the capture.
#[derive(Debug)]
pub struct CaptureWriter(CapturedLogs);

impl Write for CaptureWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for CapturedLogs {
    type Writer = CaptureWriter;

    fn make_writer(&'a self) -> Self::Writer {
        CaptureWriter(self.clone())
    }
}

/// Installs (once per process) a global subscriber writing every event of
/// the tenancy crates at `TRACE`, and of sqlx at `DEBUG`, with its spans'
/// fields, into memory; returns the capture.
pub fn capture_logs() -> CapturedLogs {
    static CAPTURE: OnceLock<CapturedLogs> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let capture = CapturedLogs::default();
            let targets = tracing_subscriber::filter::Targets::new()
                .with_target("tenancy_core", tracing::Level::TRACE)
                .with_target("tenancy_auth", tracing::Level::TRACE)
                .with_target("tenancy_authz", tracing::Level::TRACE)
                .with_target("tenancy_http", tracing::Level::TRACE)
                .with_target("tenancy_billing", tracing::Level::TRACE)
                .with_target("tenancy_axum", tracing::Level::TRACE)
                .with_target("tenancy_actix", tracing::Level::TRACE)
                .with_target("sqlx", tracing::Level::DEBUG);
            let layer = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(capture.clone());
            let subscriber = tracing_subscriber::registry().with(layer).with(targets);
            // Another capture installed first keeps its place.
            let _ = tracing::subscriber::set_global_default(subscriber);
            capture
        })
        .clone()
}

/// Asserts the logs hold none of the secrets the app handed out or was
/// given (every token, key and password the scenarios saw), and no JWT at
/// all; and that request spans were recorded with their fields.
pub fn assert_logs_hold_no_secrets(logs: &CapturedLogs, secrets: &[String]) {
    let text = logs.text();
    assert!(
        !secrets.is_empty(),
        "the scenarios saw no secret to look for"
    );
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "a secret reached the logs: {}…",
            secret.chars().take(6).collect::<String>()
        );
    }
    assert!(!text.contains("eyJ"), "a JWT reached the logs");
    assert!(
        text.contains("tenancy.request"),
        "no request span was logged"
    );
    for field in ["tenant=", "principal=", "decision=", "problem="] {
        assert!(text.contains(field), "no request span recorded `{field}`");
    }
}
