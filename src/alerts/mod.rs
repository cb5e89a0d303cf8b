//! Alert delivery: the dispatcher's unit of work is one outbox row, claimed in
//! its own transaction and delivered here on the tokio runtime (no Postgres,
//! no open transaction), then reported back as a `DeliveryOutcome`.

mod email;
mod render;
mod webhooks;

use crate::http_check::CheckContext;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A claimed outbox row.
#[derive(Debug, Clone, Deserialize)]
pub struct Delivery {
    pub id: i64,
    pub channel: String,
    pub destination: String,
    pub payload: Alert,
    pub idempotency_key: String,
}

/// What an alert says, as `_record_checks` wrote it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Alert {
    pub kind: String,
    pub team_id: i64,
    pub monitor_id: String,
    pub monitor_name: String,
    pub url: String,
    pub region: String,
    pub checked_at: String,
    pub check_id: i64,
    pub consecutive_failures: i64,
    pub status_code: Option<i64>,
    pub response_time_ms: Option<f64>,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
}

/// One row for `_complete_deliveries`.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryOutcome {
    pub id: i64,
    pub delivered: bool,
    /// No retry can help (e.g. a 4xx answer, a refused address, missing settings).
    pub permanent: bool,
    pub error: Option<String>,
    pub retry_after_s: Option<f64>,
}

impl DeliveryOutcome {
    fn delivered(id: i64) -> Self {
        DeliveryOutcome { id, delivered: true, permanent: false, error: None, retry_after_s: None }
    }

    fn failed(id: i64, error: String, permanent: bool, retry_after: Option<Duration>) -> Self {
        DeliveryOutcome { id, delivered: false, permanent, error: Some(error), retry_after_s: retry_after.map(|d| d.as_secs_f64()) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    None,
    StartTls,
    Implicit,
}

/// The alert settings, read on the worker's main thread and shared with tasks.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub smtp_host: String,
    pub smtp_port: u16,
    pub smtp_tls: SmtpTls,
    pub smtp_user: String,
    pub smtp_password: String,
    pub smtp_from: String,
    pub site_url: String,
    pub slack_api_url: String,
    pub slack_bot_token: String,
    pub webhook_signing_secret: String,
    pub timeout: Duration,
}

impl AlertSettings {
    pub fn parse_tls(mode: &str) -> Result<SmtpTls, String> {
        match mode.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(SmtpTls::None),
            "" | "starttls" => Ok(SmtpTls::StartTls),
            "tls" => Ok(SmtpTls::Implicit),
            other => Err(format!("synthetic_monitoring.smtp_tls must be none, starttls or tls, not \"{other}\"")),
        }
    }

    /// Secrets to scrub from any error text before it is stored.
    fn secrets(&self) -> Vec<&str> {
        [&self.smtp_password, &self.slack_bot_token, &self.webhook_signing_secret]
            .into_iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// The monitor's page in the web app.
    pub fn monitor_link(&self, alert: &Alert) -> String {
        format!(
            "{}/project/{}/synthetic-monitoring/{}",
            self.site_url.trim_end_matches('/'),
            alert.team_id,
            alert.monitor_id
        )
    }
}

/// Delivers one notification. Never panics; every failure becomes an outcome.
pub async fn deliver(delivery: &Delivery, settings: &AlertSettings, http: &CheckContext) -> DeliveryOutcome {
    let outcome = match delivery.channel.as_str() {
        "email" => email::send(delivery, settings).await,
        "slack" => webhooks::slack(delivery, settings, http).await,
        "webhook" => webhooks::signed_webhook(delivery, settings, http).await,
        other => DeliveryOutcome::failed(delivery.id, format!("unknown channel {other}"), true, None),
    };
    match outcome.error {
        Some(ref error) => {
            let scrubbed = crate::redact::redact_text(error, &settings.secrets());
            DeliveryOutcome { error: Some(scrubbed), ..outcome }
        }
        None => outcome,
    }
}
