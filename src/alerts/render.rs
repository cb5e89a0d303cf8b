//! The words of an alert, for email (plain text and HTML) and Slack.

use super::{Alert, AlertSettings};

pub fn headline(alert: &Alert) -> String {
    let name = one_line(&alert.monitor_name);
    match alert.kind.as_str() {
        "recovery" => format!("✅ {name} has recovered"),
        "reminder" => format!("🔴 {name} is still failing"),
        _ => format!("🔴 {name} is failing"),
    }
}

/// Subjects and Slack headlines must stay on one line.
fn one_line(text: &str) -> String {
    text.split(['\r', '\n']).filter(|part| !part.is_empty()).collect::<Vec<_>>().join(" ")
}

/// The facts of the alert as (label, value) pairs, unescaped.
pub fn facts(alert: &Alert, settings: &AlertSettings) -> Vec<(&'static str, String)> {
    let mut facts = vec![
        ("Monitor", alert.monitor_name.clone()),
        ("URL", alert.url.clone()),
        (
            if alert.kind == "recovery" { "Failed checks before recovery" } else { "Consecutive failures" },
            alert.consecutive_failures.to_string(),
        ),
    ];
    if alert.kind != "recovery" {
        facts.push(("Last error", alert.error_message.clone().unwrap_or_else(|| "none".into())));
    }
    facts.push(("Status code", alert.status_code.map_or("no response".into(), |c| c.to_string())));
    facts.push(("Response time", alert.response_time_ms.map_or("-".into(), |ms| format!("{ms} ms"))));
    facts.push(("Region", alert.region.clone()));
    facts.push(("Checked at", alert.checked_at.clone()));
    facts.push(("Details", settings.monitor_link(alert)));
    facts
}

pub fn plain_text(alert: &Alert, settings: &AlertSettings) -> String {
    let mut text = format!("{}\n\n", headline(alert));
    for (label, value) in facts(alert, settings) {
        text.push_str(&format!("{label}: {value}\n"));
    }
    text
}

pub fn html(alert: &Alert, settings: &AlertSettings) -> String {
    let rows: String = facts(alert, settings)
        .into_iter()
        .map(|(label, value)| {
            let value = if label == "Details" {
                format!("<a href=\"{0}\">{0}</a>", escape_html(&value))
            } else {
                escape_html(&value).replace('\n', "<br>")
            };
            format!("<tr><th align=\"left\" style=\"padding:4px 12px 4px 0\">{label}</th><td>{value}</td></tr>")
        })
        .collect();
    let color = if alert.kind == "recovery" { "#1a7f37" } else { "#cf222e" };
    format!(
        "<!DOCTYPE html><html><body style=\"font-family:sans-serif\">\
         <h2 style=\"color:{color}\">{}</h2><table>{rows}</table></body></html>",
        escape_html(&headline(alert))
    )
}

pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Slack's mrkdwn escaping: only &, < and > are special.
pub fn escape_slack(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

pub fn slack_text(alert: &Alert, settings: &AlertSettings) -> String {
    let mut text = format!("*{}*", escape_slack(&headline(alert)));
    for (label, value) in facts(alert, settings) {
        text.push_str(&format!("\n*{label}:* {}", escape_slack(&value)));
    }
    text
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(escape_html("<a href=\"x\">Tom & 'Jerry'</a>"), "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;");
        assert_eq!(escape_slack("<!channel> & co"), "&lt;!channel&gt; &amp; co");
    }

    #[test]
    fn headline_is_one_line() {
        let alert: Alert = serde_json::from_value(serde_json::json!({
            "kind": "failure", "team_id": 1, "monitor_id": "m", "monitor_name": "Shop\nline two",
            "url": "https://x/", "region": "local", "checked_at": "t", "check_id": 1,
            "consecutive_failures": 3, "status_code": null, "response_time_ms": null,
            "error_class": "timeout", "error_message": "timed out"
        }))
        .unwrap();
        assert_eq!(headline(&alert), "🔴 Shop line two is failing");
    }
}
