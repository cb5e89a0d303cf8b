//! Slack (incoming webhook or chat.postMessage) and signed generic webhooks.
//! Both go through the HTTP checker, so the target address policy, timeouts
//! and redaction apply to alert destinations exactly as to monitored sites.

use super::{render, AlertSettings, Delivery, DeliveryOutcome};
use crate::http_check::{self, CheckContext, CheckOutcome, CheckRequest, ErrorClass};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::{SystemTime, UNIX_EPOCH};

const RESPONSE_BODY_CAP: usize = 64 * 1024;

fn post(url: String, body: String, headers: Vec<(String, String)>, settings: &AlertSettings) -> CheckRequest {
    let mut all_headers = vec![("Content-Type".to_string(), "application/json; charset=utf-8".to_string())];
    all_headers.extend(headers);
    CheckRequest {
        url,
        method: "POST".into(),
        headers: all_headers,
        body: Some(body),
        timeout: settings.timeout,
        follow_redirects: false,
        max_redirects: 0,
        expected_status: vec!["2xx".into()],
        body_must_contain: None,
        body_must_not_contain: None,
        max_response_time_ms: None,
        max_body_bytes: RESPONSE_BODY_CAP,
    }
}

/// Maps an HTTP attempt to a delivery outcome: 2xx delivered; 429/503 retried
/// after Retry-After; other 4xx and refused addresses are permanent.
fn outcome(id: i64, destination: &str, attempt: CheckOutcome) -> DeliveryOutcome {
    if attempt.success {
        return DeliveryOutcome::delivered(id);
    }
    let permanent = match (attempt.error_class, attempt.status_code) {
        (Some(ErrorClass::Blocked | ErrorClass::Internal | ErrorClass::Assertion), _) => true,
        (Some(ErrorClass::HttpStatus), Some(code)) => (400..500).contains(&code) && code != 408 && code != 429,
        _ => false,
    };
    let retry_after = match attempt.status_code {
        Some(429 | 503) => attempt.retry_after,
        _ => None,
    };
    let error = format!(
        "{}: {}",
        crate::redact::origin_only(destination),
        attempt.error_message.unwrap_or_else(|| "delivery failed".into())
    );
    DeliveryOutcome::failed(id, error, permanent, retry_after)
}

pub async fn slack(delivery: &Delivery, settings: &AlertSettings, http: &CheckContext) -> DeliveryOutcome {
    let text = render::slack_text(&delivery.payload, settings);
    let destination = delivery.destination.as_str();
    let request = if destination.starts_with("http://") || destination.starts_with("https://") {
        post(destination.to_string(), serde_json::json!({ "text": text }).to_string(), vec![], settings)
    } else {
        if settings.slack_bot_token.is_empty() {
            return DeliveryOutcome::failed(
                delivery.id,
                "synthetic_monitoring.slack_bot_token is not set: cannot post to a Slack channel".into(),
                false,
                None,
            );
        }
        let url = format!("{}/api/chat.postMessage", settings.slack_api_url.trim_end_matches('/'));
        let body = serde_json::json!({ "channel": destination, "text": text }).to_string();
        let auth = ("Authorization".to_string(), format!("Bearer {}", settings.slack_bot_token));
        CheckRequest {
            // Slack answers 200 with {"ok": false, "error": ...} on refusals.
            body_must_contain: Some("\"ok\":true".into()),
            ..post(url, body, vec![auth], settings)
        }
    };
    outcome(delivery.id, destination, http_check::run_check(&request, http).await)
}

/// `v1=` + hex HMAC-SHA256 of "<timestamp>.<body>" under `secret`.
pub fn signature(secret: &str, timestamp: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

pub async fn signed_webhook(delivery: &Delivery, settings: &AlertSettings, http: &CheckContext) -> DeliveryOutcome {
    let alert = &delivery.payload;
    let body = serde_json::json!({
        "event": "synthetic_monitor_alert",
        "kind": alert.kind,
        "idempotency_key": delivery.idempotency_key,
        "summary": render::headline(alert),
        "link": settings.monitor_link(alert),
        "alert": alert,
    })
    .to_string();
    let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut headers = vec![
        ("Idempotency-Key".to_string(), delivery.idempotency_key.clone()),
        ("X-Synthetic-Monitoring-Timestamp".to_string(), timestamp.to_string()),
    ];
    if !settings.webhook_signing_secret.is_empty() {
        headers.push((
            "X-Synthetic-Monitoring-Signature".to_string(),
            signature(&settings.webhook_signing_secret, timestamp, &body),
        ));
    }
    let request = post(delivery.destination.clone(), body, headers, settings);
    outcome(delivery.id, &delivery.destination, http_check::run_check(&request, http).await)
}

#[cfg(test)]
mod unit_tests {
    #[test]
    fn signature_matches_a_known_vector() {
        // echo -n '1700000000.{"a":1}' | openssl dgst -sha256 -hmac 'key'
        assert_eq!(
            super::signature("key", 1_700_000_000, "{\"a\":1}"),
            "v1=a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
        );
    }
}
