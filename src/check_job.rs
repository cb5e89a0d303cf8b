//! The unit of work between Postgres and the checker: a job (claimed monitor,
//! as JSON from `_claim_due_checks`) in, a result (JSON rows for
//! `_record_checks`) out. Pure Rust: runs on tokio threads.

use crate::http_check::{self, CheckContext, CheckOutcome, CheckRequest};
use crate::policy::AddressPolicy;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest error message stored (the column allows 2000 characters).
const ERROR_MESSAGE_MAX_CHARS: usize = 1000;

pub const USER_AGENT: &str = concat!("synthetic_monitoring/", env!("CARGO_PKG_VERSION"));

/// A monitor's check configuration, as claimed.
#[derive(Debug, Clone, Deserialize)]
pub struct Job {
    pub monitor_id: String,
    pub url: String,
    pub method: String,
    #[serde(default)]
    pub headers: serde_json::Map<String, serde_json::Value>,
    pub body: Option<String>,
    pub expected_status_codes: Vec<String>,
    pub timeout_ms: u64,
    pub follow_redirects: bool,
    pub max_redirects: u32,
    pub body_must_contain: Option<String>,
    pub body_must_not_contain: Option<String>,
    pub max_response_time_ms: Option<u32>,
    /// Epoch seconds of the slot; absent for manual checks.
    pub scheduled_at: Option<f64>,
}

/// One row for `_record_checks`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub monitor_id: String,
    pub trigger: &'static str,
    pub region: String,
    pub scheduled_epoch: Option<f64>,
    pub started_epoch: f64,
    pub finished_epoch: f64,
    pub success: bool,
    pub status_code: Option<u16>,
    pub dns_ms: f64,
    pub connect_ms: f64,
    pub tls_ms: f64,
    pub ttfb_ms: f64,
    pub download_ms: f64,
    pub total_ms: f64,
    pub bytes_read: u64,
    pub body_truncated: bool,
    pub redirects: u32,
    pub final_url: Option<String>,
    pub tls_cert_expires_epoch: Option<f64>,
    pub error_class: Option<&'static str>,
    pub error_message: Option<String>,
}

fn epoch_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl Job {
    pub fn request(&self, max_body_bytes: usize) -> CheckRequest {
        CheckRequest {
            url: self.url.clone(),
            method: self.method.clone(),
            headers: self
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), value.as_str().unwrap_or_default().to_string()))
                .collect(),
            body: self.body.clone(),
            timeout: Duration::from_millis(self.timeout_ms),
            follow_redirects: self.follow_redirects,
            max_redirects: self.max_redirects,
            expected_status: self.expected_status_codes.clone(),
            body_must_contain: self.body_must_contain.clone(),
            body_must_not_contain: self.body_must_not_contain.clone(),
            max_response_time_ms: self.max_response_time_ms,
            max_body_bytes,
        }
    }

    /// Runs the check and turns its outcome into a result row.
    pub async fn run(&self, ctx: &CheckContext, trigger: &'static str, region: &str, max_body_bytes: usize) -> CheckResult {
        let request = self.request(max_body_bytes);
        let started = SystemTime::now();
        let outcome = http_check::run_check(&request, ctx).await;
        self.result(outcome, started, trigger, region)
    }

    pub fn result(&self, outcome: CheckOutcome, started: SystemTime, trigger: &'static str, region: &str) -> CheckResult {
        let outcome = within_table_rules(outcome);
        let started_epoch = epoch_seconds(started);
        // Finish = start + measured total, so the row's times agree with total_ms.
        let finished_epoch = started_epoch + outcome.timings.total_ms / 1000.0;
        let t = outcome.timings;
        CheckResult {
            monitor_id: self.monitor_id.clone(),
            trigger,
            region: region.to_string(),
            scheduled_epoch: self.scheduled_at,
            started_epoch,
            finished_epoch,
            success: outcome.success,
            status_code: outcome.status_code,
            dns_ms: t.dns_ms,
            connect_ms: t.connect_ms,
            tls_ms: t.tls_ms,
            ttfb_ms: t.ttfb_ms,
            download_ms: t.download_ms,
            total_ms: t.total_ms,
            bytes_read: outcome.bytes_read,
            body_truncated: outcome.body_truncated,
            redirects: outcome.redirects,
            final_url: Some(outcome.final_url).filter(|url| !url.is_empty()),
            tls_cert_expires_epoch: outcome.tls_cert_not_after.map(epoch_seconds),
            error_class: if outcome.success { None } else { Some(outcome.error_class.map_or("internal", |c| c.as_str())) },
            error_message: if outcome.success {
                None
            } else {
                Some(truncate(outcome.error_message.unwrap_or_else(|| "check failed".to_string())))
            },
        }
    }

}

impl CheckResult {
    /// A result for a claimed job the checker could not run at all (a fault of
    /// the checker, not of the target): recorded as `internal`.
    pub fn internal(monitor_id: String, scheduled_epoch: Option<f64>, message: String, trigger: &'static str, region: &str) -> Self {
        let now = epoch_seconds(SystemTime::now());
        CheckResult {
            monitor_id,
            trigger,
            region: region.to_string(),
            scheduled_epoch,
            started_epoch: now,
            finished_epoch: now,
            success: false,
            status_code: None,
            dns_ms: 0.0,
            connect_ms: 0.0,
            tls_ms: 0.0,
            ttfb_ms: 0.0,
            download_ms: 0.0,
            total_ms: 0.0,
            bytes_read: 0,
            body_truncated: false,
            redirects: 0,
            final_url: None,
            tls_cert_expires_epoch: None,
            error_class: Some("internal"),
            error_message: Some(truncate(message)),
        }
    }
}

/// The longest a timing may be (a day, in ms); anything else is a clock fault.
const TIMING_MAX_MS: f64 = 86_400_000.0;

/// Whatever a target sends, the result must fit the `checks` table's rules: a
/// row the table refuses would fail the whole batch it is recorded in.
fn within_table_rules(mut outcome: CheckOutcome) -> CheckOutcome {
    if let Some(code) = outcome.status_code.filter(|code| !(100..=599).contains(code)) {
        outcome.status_code = None;
        outcome.success = false;
        outcome.error_class = Some(http_check::ErrorClass::HttpStatus);
        outcome.error_message = Some(format!("the server answered with the invalid HTTP status code {code}"));
    }
    let t = &mut outcome.timings;
    for value in [&mut t.dns_ms, &mut t.connect_ms, &mut t.tls_ms, &mut t.ttfb_ms, &mut t.download_ms, &mut t.total_ms] {
        if !value.is_finite() || *value < 0.0 {
            *value = 0.0;
        }
        *value = value.min(TIMING_MAX_MS);
    }
    outcome
}

fn truncate(message: String) -> String {
    if message.chars().count() <= ERROR_MESSAGE_MAX_CHARS {
        message
    } else {
        format!("{}…", message.chars().take(ERROR_MESSAGE_MAX_CHARS).collect::<String>())
    }
}

/// The shared resources for checks, from the current settings.
pub fn context(allowed_networks: &str) -> Result<CheckContext, String> {
    let policy = AddressPolicy::parse_allowlist(allowed_networks)
        .map_err(|error| format!("invalid synthetic_monitoring.allowed_networks: {error}"))?;
    Ok(CheckContext { tls: tls_config()?, policy: Arc::new(policy), user_agent: USER_AGENT.to_string() })
}

/// Loading the system's root certificates takes milliseconds: once per process.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static TLS: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> = std::sync::OnceLock::new();
    TLS.get_or_init(|| http_check::build_tls_config(None).map(Arc::new)).clone()
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use crate::http_check::{ErrorClass, Timings};

    fn outcome(status: u16) -> CheckOutcome {
        CheckOutcome {
            success: true,
            status_code: Some(status),
            timings: Timings { dns_ms: f64::NAN, connect_ms: -1.0, tls_ms: 0.0, ttfb_ms: 1e12, download_ms: 1.0, total_ms: 2.0 },
            bytes_read: 0,
            body_truncated: false,
            error_class: None,
            error_message: None,
            final_url: String::new(),
            redirects: 0,
            tls_cert_not_after: None,
            retry_after: None,
        }
    }

    #[test]
    fn invalid_status_becomes_a_failed_check() {
        let fixed = within_table_rules(outcome(600));
        assert!(!fixed.success);
        assert_eq!(fixed.status_code, None);
        assert_eq!(fixed.error_class, Some(ErrorClass::HttpStatus));
        assert_eq!(fixed.error_message.as_deref(), Some("the server answered with the invalid HTTP status code 600"));
        let kept = within_table_rules(outcome(599));
        assert!(kept.success && kept.status_code == Some(599));
    }

    #[test]
    fn timings_are_finite_and_bounded() {
        let t = within_table_rules(outcome(200)).timings;
        assert_eq!((t.dns_ms, t.connect_ms, t.ttfb_ms, t.download_ms), (0.0, 0.0, TIMING_MAX_MS, 1.0));
    }
}
