//! Monitor spec and patch validation.
//!
//! Pure Rust (no Postgres calls) so that it can be unit-tested and fuzzed on its
//! own. `normalize` merges a patch into the current spec (or the defaults, for a
//! new monitor), validates every field and returns the complete normalized spec.
//! A refusal names the field, says what is wrong and what is allowed.

use serde_json::{Map, Value};
use std::fmt;

/// Keys a spec or patch may set; every other key is refused.
pub const SPEC_FIELDS: &[&str] = &[
    "name",
    "monitor_type",
    "url",
    "method",
    "headers",
    "body",
    "expected_status_codes",
    "timeout_ms",
    "frequency_minutes",
    "follow_redirects",
    "max_redirects",
    "body_must_contain",
    "body_must_not_contain",
    "max_response_time_ms",
    "regions",
    "enabled",
    "alert_enabled",
    "alert_threshold_failures",
    "alert_recipients",
    "slack_channel",
    "slack_webhook_url",
    "webhook_url",
    "alert_cooldown_minutes",
];

/// Columns the system maintains; a spec naming them is refused with a pointer
/// to the function that changes them.
const READ_ONLY_FIELDS: &[(&str, &str)] = &[
    ("id", "the id is assigned by create_monitor"),
    ("team_id", "the team is the team_id argument of each function"),
    ("state", "state follows the check results; use pause_monitor and resume_monitor to disable or enable"),
    ("consecutive_failures", "maintained by the checks"),
    ("last_checked_at", "maintained by the checks"),
    ("next_check_at", "maintained by the scheduler; use resume_monitor or test_monitor to check now"),
    ("last_alerted_at", "maintained by the alerting"),
    ("alerting", "maintained by the alerting"),
    ("in_flight_slot", "maintained by the worker"),
    ("created_by", "pass the acting user as the acting_user argument"),
    ("created_at", "set by create_monitor"),
    ("updated_at", "set on every update"),
];

pub const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
pub const MONITOR_TYPES: &[&str] = &["http", "web_performance"];
pub const STATES: &[&str] = &["pending", "healthy", "failing", "error", "disabled"];

pub const NAME_MAX_CHARS: usize = 400;
pub const URL_MAX_CHARS: usize = 2048;
pub const BODY_MAX_BYTES: usize = 65536;
pub const HEADERS_MAX: usize = 50;
pub const HEADER_VALUE_MAX_BYTES: usize = 8192;
pub const TIMEOUT_MS_RANGE: (i64, i64) = (100, 300_000);
pub const FREQUENCY_MINUTES_RANGE: (i64, i64) = (1, 60);
pub const MAX_REDIRECTS_RANGE: (i64, i64) = (0, 20);
pub const ASSERTION_MAX_CHARS: usize = 1000;
pub const REGIONS_MAX: usize = 20;
pub const STATUS_CODES_MAX: usize = 50;
pub const ALERT_THRESHOLD_RANGE: (i64, i64) = (1, 100);
pub const RECIPIENTS_MAX: usize = 50;
pub const COOLDOWN_MINUTES_RANGE: (i64, i64) = (1, 10_080);

/// Headers the checker controls itself (connection management and framing).
const RESERVED_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// A refused spec: which field, what is wrong, what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub field: String,
    pub message: String,
    pub hint: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (hint: {})", self.message, self.hint)
    }
}

fn refuse(field: &str, problem: impl fmt::Display, hint: impl Into<String>) -> SpecError {
    SpecError {
        field: field.to_string(),
        message: format!("invalid {field}: {problem}"),
        hint: hint.into(),
    }
}

/// The spec of a new monitor before the caller's keys are applied.
pub fn defaults(default_region: &str) -> Map<String, Value> {
    let value = serde_json::json!({
        "monitor_type": "http",
        "method": "GET",
        "headers": {},
        "body": null,
        "expected_status_codes": ["2xx"],
        "timeout_ms": 30000,
        "frequency_minutes": 5,
        "follow_redirects": true,
        "max_redirects": 10,
        "body_must_contain": null,
        "body_must_not_contain": null,
        "max_response_time_ms": null,
        "regions": [default_region],
        "enabled": true,
        "alert_enabled": true,
        "alert_threshold_failures": 3,
        "alert_recipients": [],
        "slack_channel": null,
        "slack_webhook_url": null,
        "webhook_url": null,
        "alert_cooldown_minutes": 60,
    });
    match value {
        Value::Object(map) => map,
        _ => unreachable!("defaults are a JSON object literal"),
    }
}

/// Applies `patch` to `current` (or to the defaults when creating) and returns
/// the complete, validated, normalized spec with exactly the keys of
/// [`SPEC_FIELDS`].
pub fn normalize(
    current: Option<&Map<String, Value>>,
    patch: &Value,
    default_region: &str,
) -> Result<Map<String, Value>, SpecError> {
    let patch = match patch {
        Value::Object(map) => map,
        other => {
            return Err(refuse(
                "spec",
                format!("expected a JSON object, got {}", json_type(other)),
                format!("pass an object with some of the keys: {}", SPEC_FIELDS.join(", ")),
            ))
        }
    };
    check_keys(patch)?;

    let mut merged = match current {
        Some(current) => current.clone(),
        None => defaults(default_region),
    };
    for (key, value) in patch {
        merged.insert(key.clone(), value.clone());
    }
    for required in ["name", "url"] {
        if !merged.contains_key(required) {
            return Err(refuse(required, "is required", format!("{required} must be given when creating a monitor")));
        }
    }

    let mut out = Map::new();
    let get = |key: &str| merged.get(key).unwrap_or(&Value::Null);
    out.insert("name".into(), name(get("name"))?);
    out.insert("monitor_type".into(), one_of("monitor_type", get("monitor_type"), MONITOR_TYPES, false)?);
    out.insert("url".into(), url_field("url", get("url"), false)?);
    out.insert("method".into(), one_of("method", get("method"), METHODS, true)?);
    out.insert("headers".into(), headers(get("headers"))?);
    out.insert("body".into(), body(get("body"))?);
    out.insert("expected_status_codes".into(), status_codes(get("expected_status_codes"))?);
    out.insert("timeout_ms".into(), integer("timeout_ms", get("timeout_ms"), TIMEOUT_MS_RANGE, "milliseconds")?);
    out.insert(
        "frequency_minutes".into(),
        integer("frequency_minutes", get("frequency_minutes"), FREQUENCY_MINUTES_RANGE, "minutes")?,
    );
    out.insert("follow_redirects".into(), boolean("follow_redirects", get("follow_redirects"))?);
    out.insert("max_redirects".into(), integer("max_redirects", get("max_redirects"), MAX_REDIRECTS_RANGE, "redirects")?);
    out.insert("body_must_contain".into(), assertion_text("body_must_contain", get("body_must_contain"))?);
    out.insert("body_must_not_contain".into(), assertion_text("body_must_not_contain", get("body_must_not_contain"))?);
    out.insert(
        "max_response_time_ms".into(),
        optional_integer("max_response_time_ms", get("max_response_time_ms"), TIMEOUT_MS_RANGE, "milliseconds")?,
    );
    out.insert("regions".into(), regions(get("regions"))?);
    out.insert("enabled".into(), boolean("enabled", get("enabled"))?);
    out.insert("alert_enabled".into(), boolean("alert_enabled", get("alert_enabled"))?);
    out.insert(
        "alert_threshold_failures".into(),
        integer("alert_threshold_failures", get("alert_threshold_failures"), ALERT_THRESHOLD_RANGE, "failures")?,
    );
    out.insert("alert_recipients".into(), recipients(get("alert_recipients"))?);
    out.insert("slack_channel".into(), slack_channel(get("slack_channel"))?);
    out.insert("slack_webhook_url".into(), url_field("slack_webhook_url", get("slack_webhook_url"), true)?);
    out.insert("webhook_url".into(), url_field("webhook_url", get("webhook_url"), true)?);
    out.insert(
        "alert_cooldown_minutes".into(),
        integer("alert_cooldown_minutes", get("alert_cooldown_minutes"), COOLDOWN_MINUTES_RANGE, "minutes")?,
    );
    check_combinations(&out)?;
    Ok(out)
}

fn check_keys(patch: &Map<String, Value>) -> Result<(), SpecError> {
    for key in patch.keys() {
        if SPEC_FIELDS.contains(&key.as_str()) {
            continue;
        }
        if let Some((_, why)) = READ_ONLY_FIELDS.iter().find(|(name, _)| *name == key) {
            return Err(refuse(key, "is read-only", *why));
        }
        let shown: String = key.chars().take(64).collect();
        return Err(SpecError {
            field: if shown.is_empty() { "spec".to_string() } else { shown.clone() },
            message: format!("unknown field \"{shown}\" in spec"),
            hint: format!("allowed fields: {}", SPEC_FIELDS.join(", ")),
        });
    }
    Ok(())
}

fn check_combinations(spec: &Map<String, Value>) -> Result<(), SpecError> {
    let int = |key: &str| spec.get(key).and_then(Value::as_i64);
    let timeout = int("timeout_ms").unwrap_or_default();
    let frequency = int("frequency_minutes").unwrap_or_default();
    if timeout >= frequency * 60_000 {
        return Err(refuse(
            "timeout_ms",
            format!("{timeout} ms is not below the interval of {frequency} minute(s) ({} ms)", frequency * 60_000),
            "lower timeout_ms or raise frequency_minutes: a check must end before the next one is due",
        ));
    }
    if let Some(max) = int("max_response_time_ms") {
        if max > timeout {
            return Err(refuse(
                "max_response_time_ms",
                format!("{max} ms exceeds timeout_ms ({timeout} ms)"),
                "max_response_time_ms must be at most timeout_ms; a check is cut off at the timeout",
            ));
        }
    }
    let method = spec.get("method").and_then(Value::as_str).unwrap_or_default();
    let has_body = !spec.get("body").map_or(true, Value::is_null);
    if spec.get("monitor_type").and_then(Value::as_str) == Some("web_performance") && (method != "GET" || has_body) {
        let field = if method != "GET" { "method" } else { "body" };
        return Err(refuse(
            field,
            "web_performance monitors load the page like a browser: only GET without a body",
            "set method to GET and body to null, or use monitor_type http",
        ));
    }
    if method == "HEAD" && has_body {
        return Err(refuse("body", "a HEAD request cannot carry a body", "set body to null or use another method"));
    }
    Ok(())
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn expect_str<'a>(field: &str, value: &'a Value, hint: &str) -> Result<&'a str, SpecError> {
    value
        .as_str()
        .ok_or_else(|| refuse(field, format!("expected a string, got {}", json_type(value)), hint))
}

fn name(value: &Value) -> Result<Value, SpecError> {
    let hint = format!("a non-blank text of at most {NAME_MAX_CHARS} characters");
    let text = expect_str("name", value, &hint)?.trim();
    if text.is_empty() {
        return Err(refuse("name", "must not be blank", hint));
    }
    let length = text.chars().count();
    if length > NAME_MAX_CHARS {
        return Err(refuse("name", format!("is {length} characters long"), hint));
    }
    Ok(Value::String(text.to_string()))
}

fn one_of(field: &str, value: &Value, allowed: &[&str], case_insensitive: bool) -> Result<Value, SpecError> {
    let hint = format!("one of: {}", allowed.join(", "));
    let text = expect_str(field, value, &hint)?;
    let wanted = if case_insensitive { text.to_ascii_uppercase() } else { text.to_string() };
    match allowed.iter().find(|candidate| **candidate == wanted) {
        Some(found) => Ok(Value::String(found.to_string())),
        None => Err(refuse(field, format!("\"{}\" is not allowed", shorten(text)), hint)),
    }
}

fn shorten(text: &str) -> String {
    const SHOWN: usize = 60;
    if text.chars().count() <= SHOWN {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(SHOWN).collect::<String>())
    }
}

/// Parses an absolute http(s) URL with a host and returns its normalized form.
/// The refusal never repeats the URL, which may hold credentials.
fn url_field(field: &str, value: &Value, nullable: bool) -> Result<Value, SpecError> {
    let hint = format!("an absolute http:// or https:// URL with a host, at most {URL_MAX_CHARS} characters");
    if value.is_null() && nullable {
        return Ok(Value::Null);
    }
    let text = expect_str(field, value, &hint)?.trim();
    if text.chars().any(char::is_whitespace) {
        return Err(refuse(field, "contains white space", hint));
    }
    let mut parsed = url::Url::parse(text).map_err(|error| refuse(field, format!("is not a valid URL ({error})"), &*hint))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(refuse(field, format!("scheme \"{}\" is not allowed", shorten(parsed.scheme())), hint));
    }
    if parsed.host_str().map_or(true, str::is_empty) {
        return Err(refuse(field, "has no host", hint));
    }
    if parsed.port() == Some(0) {
        return Err(refuse(field, "port 0 is not a valid port", hint));
    }
    parsed.set_fragment(None);
    let normalized = parsed.to_string();
    if normalized.chars().count() > URL_MAX_CHARS {
        return Err(refuse(field, format!("is longer than {URL_MAX_CHARS} characters"), hint));
    }
    Ok(Value::String(normalized))
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn headers(value: &Value) -> Result<Value, SpecError> {
    let hint = format!(
        "an object of at most {HEADERS_MAX} header names to string values, e.g. {{\"Accept\": \"text/html\"}}; \
         not allowed: {}",
        RESERVED_HEADERS.join(", ")
    );
    let map = match value {
        Value::Object(map) => map,
        other => return Err(refuse("headers", format!("expected an object, got {}", json_type(other)), hint)),
    };
    if map.len() > HEADERS_MAX {
        return Err(refuse("headers", format!("has {} entries", map.len()), hint));
    }
    let mut seen = std::collections::HashSet::new();
    for (header, header_value) in map {
        let shown = shorten(header);
        if header.is_empty() || header.len() > 100 || !header.chars().all(is_token_char) {
            return Err(refuse("headers", format!("\"{shown}\" is not a valid header name"), hint));
        }
        let lower = header.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(refuse("headers", format!("\"{shown}\" is managed by the checker"), hint));
        }
        if !seen.insert(lower) {
            return Err(refuse("headers", format!("\"{shown}\" is given twice (names are case-insensitive)"), hint));
        }
        let text = header_value.as_str().ok_or_else(|| {
            refuse("headers", format!("the value of \"{shown}\" must be a string, got {}", json_type(header_value)), &*hint)
        })?;
        if text.len() > HEADER_VALUE_MAX_BYTES || text.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
            return Err(refuse(
                "headers",
                format!("the value of \"{shown}\" must be one line of at most {HEADER_VALUE_MAX_BYTES} bytes"),
                hint,
            ));
        }
    }
    Ok(value.clone())
}

fn body(value: &Value) -> Result<Value, SpecError> {
    let hint = format!("a string of at most {BODY_MAX_BYTES} bytes, or null");
    if value.is_null() {
        return Ok(Value::Null);
    }
    let text = expect_str("body", value, &hint)?;
    if text.len() > BODY_MAX_BYTES {
        return Err(refuse("body", format!("is {} bytes long", text.len()), hint));
    }
    Ok(value.clone())
}

fn status_codes(value: &Value) -> Result<Value, SpecError> {
    let hint = format!(
        "a non-empty array of at most {STATUS_CODES_MAX} status codes (100-599) and/or classes (\"1xx\" to \"5xx\"), e.g. [\"2xx\", 301]"
    );
    let items = match value {
        Value::Array(items) => items,
        other => {
            return Err(refuse("expected_status_codes", format!("expected an array, got {}", json_type(other)), hint))
        }
    };
    if items.is_empty() || items.len() > STATUS_CODES_MAX {
        return Err(refuse("expected_status_codes", format!("has {} entries", items.len()), hint));
    }
    let mut out: Vec<Value> = Vec::new();
    for item in items {
        let code = match item {
            Value::Number(n) => n.as_i64().filter(|c| (100..=599).contains(c)).map(|c| c.to_string()),
            Value::String(s) => {
                let lower = s.trim().to_ascii_lowercase();
                let bytes = lower.as_bytes();
                let valid = bytes.len() == 3
                    && (b'1'..=b'5').contains(&bytes[0])
                    && ((bytes[1] == b'x' && bytes[2] == b'x')
                        || (bytes[1].is_ascii_digit() && bytes[2].is_ascii_digit()));
                valid.then_some(lower)
            }
            _ => None,
        };
        let code = code.ok_or_else(|| {
            refuse("expected_status_codes", format!("{} is not a status code or class", shorten(&item.to_string())), &*hint)
        })?;
        let code = Value::String(code);
        if !out.contains(&code) {
            out.push(code);
        }
    }
    Ok(Value::Array(out))
}

fn integer_value(field: &str, value: &Value, range: (i64, i64), unit: &str) -> Result<i64, SpecError> {
    let hint = format!("an integer from {} to {} ({unit})", range.0, range.1);
    let number = match value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e15).map(|f| f as i64)),
        _ => return Err(refuse(field, format!("expected an integer, got {}", json_type(value)), hint)),
    };
    match number {
        Some(n) if (range.0..=range.1).contains(&n) => Ok(n),
        Some(n) => Err(refuse(field, format!("{n} is out of range"), hint)),
        None => Err(refuse(field, format!("{value} is not an integer"), hint)),
    }
}

fn integer(field: &str, value: &Value, range: (i64, i64), unit: &str) -> Result<Value, SpecError> {
    integer_value(field, value, range, unit).map(Value::from)
}

fn optional_integer(field: &str, value: &Value, range: (i64, i64), unit: &str) -> Result<Value, SpecError> {
    if value.is_null() {
        return Ok(Value::Null);
    }
    integer(field, value, range, unit)
}

fn boolean(field: &str, value: &Value) -> Result<Value, SpecError> {
    match value {
        Value::Bool(_) => Ok(value.clone()),
        other => Err(refuse(field, format!("expected a boolean, got {}", json_type(other)), "true or false")),
    }
}

fn assertion_text(field: &str, value: &Value) -> Result<Value, SpecError> {
    let hint = format!("a non-empty text of at most {ASSERTION_MAX_CHARS} characters, or null for no assertion");
    if value.is_null() {
        return Ok(Value::Null);
    }
    let text = expect_str(field, value, &hint)?;
    let length = text.chars().count();
    if length == 0 || length > ASSERTION_MAX_CHARS {
        return Err(refuse(field, format!("is {length} characters long"), hint));
    }
    Ok(value.clone())
}

/// Lower-case letters, digits and '-', 1 to 63 characters, not starting with '-'.
pub fn is_region_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

fn regions(value: &Value) -> Result<Value, SpecError> {
    let hint = format!(
        "a non-empty array of at most {REGIONS_MAX} region names (lower-case letters, digits and '-', e.g. \"us-east-1\")"
    );
    let items = match value {
        Value::Array(items) => items,
        other => return Err(refuse("regions", format!("expected an array, got {}", json_type(other)), hint)),
    };
    if items.is_empty() || items.len() > REGIONS_MAX {
        return Err(refuse("regions", format!("has {} entries", items.len()), hint));
    }
    let mut out: Vec<Value> = Vec::new();
    for item in items {
        match item.as_str() {
            Some(region) if is_region_name(region) => {
                if !out.contains(item) {
                    out.push(item.clone());
                }
            }
            _ => return Err(refuse("regions", format!("{} is not a region name", shorten(&item.to_string())), hint)),
        }
    }
    Ok(Value::Array(out))
}

/// A deliverable address: the syntax of RFC 5322 without quoted local parts or
/// comments, and a domain with a dot.
fn is_email(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else { return false };
    !local.starts_with('"')
        && domain.contains('.')
        && !domain.starts_with('[')
        && !address.chars().any(|c| c.is_whitespace() || c == ',')
        && email_address::EmailAddress::is_valid(address)
}

fn recipients(value: &Value) -> Result<Value, SpecError> {
    let hint = format!("an array of at most {RECIPIENTS_MAX} email addresses, e.g. [\"oncall@example.com\"]");
    let items = match value {
        Value::Array(items) => items,
        other => return Err(refuse("alert_recipients", format!("expected an array, got {}", json_type(other)), hint)),
    };
    if items.len() > RECIPIENTS_MAX {
        return Err(refuse("alert_recipients", format!("has {} entries", items.len()), hint));
    }
    let mut out: Vec<Value> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for item in items {
        match item.as_str().map(str::trim) {
            Some(address) if is_email(address) => {
                if seen.insert(address.to_lowercase()) {
                    out.push(Value::String(address.to_string()));
                }
            }
            _ => {
                return Err(refuse(
                    "alert_recipients",
                    format!("{} is not a valid email address", shorten(&item.to_string())),
                    hint,
                ))
            }
        }
    }
    Ok(Value::Array(out))
}

fn slack_channel(value: &Value) -> Result<Value, SpecError> {
    let hint = "a channel name such as \"#alerts\" or a channel id such as \"C0123456789\" (letters, digits, '.', '_', '-'; at most 80), or null";
    if value.is_null() {
        return Ok(Value::Null);
    }
    let text = expect_str("slack_channel", value, hint)?;
    let bare = text.strip_prefix('#').unwrap_or(text);
    if bare.is_empty() || bare.len() > 80 || !bare.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        return Err(refuse("slack_channel", format!("\"{}\" is not a channel name or id", shorten(text)), hint));
    }
    Ok(value.clone())
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use serde_json::json;

    fn create(spec: Value) -> Result<Map<String, Value>, SpecError> {
        normalize(None, &spec, "local")
    }

    #[test]
    fn minimal_spec_gets_every_default() {
        let out = create(json!({"name": " Home ", "url": "HTTPS://Example.com"})).unwrap();
        assert_eq!(out.len(), SPEC_FIELDS.len());
        assert_eq!(out["name"], json!("Home"));
        assert_eq!(out["url"], json!("https://example.com/"));
        assert_eq!(out["timeout_ms"], json!(30000));
        assert_eq!(out["expected_status_codes"], json!(["2xx"]));
        assert_eq!(out["regions"], json!(["local"]));
    }

    #[test]
    fn patch_keeps_other_fields() {
        let base = create(json!({"name": "a", "url": "http://a.example/x", "frequency_minutes": 1})).unwrap();
        let out = normalize(Some(&base), &json!({"timeout_ms": 5000}), "local").unwrap();
        assert_eq!(out["timeout_ms"], json!(5000));
        assert_eq!(out["url"], json!("http://a.example/x"));
        assert_eq!(out["frequency_minutes"], json!(1));
    }

    #[test]
    fn url_error_never_repeats_credentials() {
        let error = create(json!({"name": "a", "url": "ftp://user:hunter2@host/"})).unwrap_err();
        assert_eq!(error.field, "url");
        assert!(!error.message.contains("hunter2"), "{error}");
    }

    #[test]
    fn status_codes_are_normalized_and_deduplicated() {
        let out = create(json!({"name": "a", "url": "http://a.example", "expected_status_codes": [200, "2XX", "200"]})).unwrap();
        assert_eq!(out["expected_status_codes"], json!(["200", "2xx"]));
    }

    #[test]
    fn arbitrary_json_never_panics() {
        let samples = [
            json!(null),
            json!([]),
            json!({"name": {}, "url": []}),
            json!({"name": "a", "url": "http://[::1", "timeout_ms": 1e300}),
            json!({"name": "a", "url": "http://a", "timeout_ms": -0.5}),
            json!({"name": "a", "url": "http://a", "headers": {"": ""}}),
            json!({"name": "a", "url": "http://a", "alert_recipients": ["@", "a@", "\"x y\"@a.b"]}),
        ];
        for sample in samples {
            assert!(create(sample).is_err());
        }
    }

    fn arbitrary_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            ".{0,40}".prop_map(Value::from),
            prop::sample::select(vec!["GET", "2xx", "https://a.example/", "a@b.co", "local", "#c"]).prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map(".{0,12}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        /// Whatever JSON arrives: no panic, and a refusal names a field and says what is allowed.
        #[test]
        fn any_json_is_normalized_or_refused_clearly(patch in arbitrary_json()) {
            match normalize(None, &patch, "local") {
                Ok(spec) => proptest::prop_assert_eq!(spec.len(), SPEC_FIELDS.len()),
                Err(error) => {
                    proptest::prop_assert!(!error.field.is_empty());
                    proptest::prop_assert!(error.message.contains(&error.field));
                    proptest::prop_assert!(!error.hint.is_empty());
                }
            }
        }

        /// One field of a valid spec replaced by anything: valid results are
        /// stable under re-normalization (what is stored validates again).
        #[test]
        fn normalized_specs_are_fixed_points(field in proptest::sample::select(SPEC_FIELDS.to_vec()), value in arbitrary_json()) {
            let mut spec = json!({"name": "n", "url": "https://example.com/"});
            spec[field] = value;
            if let Ok(first) = normalize(None, &spec, "local") {
                let again = normalize(Some(&first), &json!({}), "local").expect("a normalized spec validates");
                proptest::prop_assert_eq!(again, first);
            }
        }
    }
}
