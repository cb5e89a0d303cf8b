//! Every setting of the extension, in one place. All names share the
//! `synthetic_monitoring.` prefix; each is documented with its unit, default
//! and why it exists.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::{pg_guard, pg_sys};
use std::ffi::{c_char, c_void, CStr, CString};

/// `synthetic_monitoring.database` (text, default `postgres`): the database the
/// worker connects to, the one where `CREATE EXTENSION synthetic_monitoring`
/// ran. Needs a restart: a background worker binds to one database for life.
pub static DATABASE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"postgres"));

/// `synthetic_monitoring.worker_enabled` (boolean, default on): switches the
/// scheduled checks off without unloading the library, e.g. during
/// maintenance. Reloadable.
pub static WORKER_ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);

/// `synthetic_monitoring.region` (text, default `local`): the region this
/// server's worker checks from. The worker runs only monitors whose `regions`
/// include it, and new monitors default to it. Reloadable.
pub static REGION: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"local"));

/// `synthetic_monitoring.poll_interval_ms` (milliseconds, default 1000): the
/// longest the worker sleeps before looking for due monitors. It also wakes at
/// the next due time and when a transaction that queued work commits, so this
/// only bounds how late a check can start after an unnoticed change.
pub static POLL_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(1000);

/// `synthetic_monitoring.max_in_flight` (checks, default 2000): how many checks
/// may run at once. Bounds sockets, memory and load on the targets; a hanging
/// target holds one slot until its timeout, never the others. Reloadable.
pub static MAX_IN_FLIGHT: GucSetting<i32> = GucSetting::<i32>::new(2000);

/// `synthetic_monitoring.batch_size` (rows, default 1000): how many due
/// monitors one claim statement takes and how many results one transaction
/// records. Larger batches mean fewer transactions at high load. Reloadable.
pub static BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(1000);

/// `synthetic_monitoring.max_body_bytes` (bytes, default 1048576): the most of a
/// response body a check reads (and decodes); the rest is not downloaded, so a
/// 200 MB page or an endless stream costs at most this much. Reloadable.
pub static MAX_BODY_BYTES: GucSetting<i32> = GucSetting::<i32>::new(1024 * 1024);

/// `synthetic_monitoring.allowed_networks` (comma-separated CIDRs, default
/// empty): networks checks may reach even though they are loopback, private,
/// link-local or otherwise internal. Empty means only public addresses.
/// Superuser-only, so a user cannot open the internal network to probes.
pub static ALLOWED_NETWORKS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));

/// Defines the settings; `preloading` adds those only the postmaster can set.
/// `synthetic_monitoring.smtp_host` (text, default empty): the SMTP server that
/// sends alert emails. Empty: email alerts wait in the outbox until it is set.
pub static SMTP_HOST: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));

/// `synthetic_monitoring.smtp_port` (TCP port, default 25).
pub static SMTP_PORT: GucSetting<i32> = GucSetting::<i32>::new(25);

/// `synthetic_monitoring.smtp_tls` (`none`, `starttls` or `tls`, default
/// `starttls`): `starttls` upgrades a plain connection (port 587), `tls` is
/// implicit TLS (port 465), `none` is for a relay on a trusted network.
pub static SMTP_TLS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"starttls"));

/// `synthetic_monitoring.smtp_user` (text, default empty: no authentication).
pub static SMTP_USER: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));

/// `synthetic_monitoring.smtp_password` (text): superuser-only and hidden from
/// SHOW ALL and pg_settings for everyone else; never logged.
pub static SMTP_PASSWORD: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));

/// `synthetic_monitoring.smtp_from` (address, default
/// `synthetic-monitoring@localhost`): the From of alert emails.
pub static SMTP_FROM: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"synthetic-monitoring@localhost"));

/// `synthetic_monitoring.site_url` (URL, default `http://localhost:8000`): the
/// web app's address, for the link to the monitor in alerts.
pub static SITE_URL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"http://localhost:8000"));

/// `synthetic_monitoring.slack_api_url` (URL, default `https://slack.com`):
/// base of Slack's Web API (chat.postMessage); a setting so that a local
/// receiver can stand in for Slack.
pub static SLACK_API_URL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"https://slack.com"));

/// `synthetic_monitoring.slack_bot_token` (secret): the bot token of the Slack
/// integration, for monitors with a slack_channel. Superuser-only, hidden.
pub static SLACK_BOT_TOKEN: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));

/// `synthetic_monitoring.webhook_signing_secret` (secret): key of the
/// HMAC-SHA256 signature of alert webhooks. Superuser-only, hidden.
pub static WEBHOOK_SIGNING_SECRET: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));

/// `synthetic_monitoring.smtp_password_file`, `.slack_bot_token_file`,
/// `.webhook_signing_secret_file` (paths, default empty): read the secret from a
/// file the postgres OS user can read instead. Preferred: PostgreSQL logs the
/// new value of a changed setting when it reloads its configuration, but a
/// file's content never passes through the settings. Superuser-only.
pub static SMTP_PASSWORD_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));
pub static SLACK_BOT_TOKEN_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));
pub static WEBHOOK_SIGNING_SECRET_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));

/// `synthetic_monitoring.alert_max_attempts` (attempts, default 10): after this
/// many failed deliveries an alert is marked dead (kept, with its last error).
pub static ALERT_MAX_ATTEMPTS: GucSetting<i32> = GucSetting::<i32>::new(10);

/// `synthetic_monitoring.alert_retry_base_ms` (milliseconds, default 30000):
/// first retry delay; doubled per attempt (at most an hour), with jitter.
pub static ALERT_RETRY_BASE_MS: GucSetting<i32> = GucSetting::<i32>::new(30_000);

/// `synthetic_monitoring.alert_timeout_ms` (milliseconds, default 10000): the
/// limit of one delivery attempt (SMTP session or HTTP request).
pub static ALERT_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(10_000);

/// A text setting whose new values are validated when set (ALTER SYSTEM,
/// SET, configuration reload): a bad value is refused with its reason instead
/// of quietly stopping the worker.
#[allow(clippy::too_many_arguments)]
fn define_checked(
    name: &'static CStr,
    short: &'static CStr,
    long: &'static CStr,
    setting: &'static GucSetting<Option<CString>>,
    context: GucContext,
    flags: GucFlags,
    check: pg_sys::GucStringCheckHook,
) {
    // SAFETY: the hooks are #[pg_guard]ed and only read their argument.
    unsafe { GucRegistry::define_string_guc_with_hooks(name, short, long, setting, context, flags, check, None, None) }
}

/// Runs `validate` on a proposed value; a refusal becomes the setting error's detail.
unsafe fn check_with(newval: *mut *mut c_char, validate: fn(&str) -> Result<(), String>) -> bool {
    let value = unsafe {
        if newval.is_null() || (*newval).is_null() { String::new() } else { CStr::from_ptr(*newval).to_string_lossy().into_owned() }
    };
    match validate(&value) {
        Ok(()) => true,
        Err(reason) => {
            let detail = CString::new(reason.replace('\0', " ")).unwrap_or_default();
            unsafe { pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(detail.as_ptr()) };
            false
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_region(newval: *mut *mut c_char, _extra: *mut *mut c_void, _source: pg_sys::GucSource::Type) -> bool {
    unsafe {
        check_with(newval, |value| {
            if crate::spec::is_region_name(value) {
                Ok(())
            } else {
                Err("A region name is 1 to 63 lower-case letters, digits and '-', starting with a letter or digit.".into())
            }
        })
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_allowed_networks(newval: *mut *mut c_char, _extra: *mut *mut c_void, _source: pg_sys::GucSource::Type) -> bool {
    unsafe { check_with(newval, |value| crate::policy::AddressPolicy::parse_allowlist(value).map(|_| ())) }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_smtp_tls(newval: *mut *mut c_char, _extra: *mut *mut c_void, _source: pg_sys::GucSource::Type) -> bool {
    unsafe { check_with(newval, |value| crate::alerts::AlertSettings::parse_tls(value).map(|_| ())) }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_http_url(newval: *mut *mut c_char, _extra: *mut *mut c_void, _source: pg_sys::GucSource::Type) -> bool {
    unsafe {
        check_with(newval, |value| match url::Url::parse(value) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => Ok(()),
            _ => Err("An absolute http:// or https:// URL is required.".into()),
        })
    }
}

fn define_text(name: &'static CStr, short: &'static CStr, setting: &'static GucSetting<Option<CString>>, secret: bool) {
    let flags = if secret { GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL } else { GucFlags::default() };
    GucRegistry::define_string_guc(name, short, c"", setting, GucContext::Sighup, flags);
}

fn define_alert_settings() {
    define_text(c"synthetic_monitoring.smtp_host", c"SMTP server for alert emails.", &SMTP_HOST, false);
    GucRegistry::define_int_guc(
        c"synthetic_monitoring.smtp_port",
        c"SMTP server port.",
        c"",
        &SMTP_PORT,
        1,
        65535,
        GucContext::Sighup,
        GucFlags::default(),
    );
    define_checked(
        c"synthetic_monitoring.smtp_tls",
        c"SMTP TLS mode: none, starttls or tls.",
        c"",
        &SMTP_TLS,
        GucContext::Sighup,
        GucFlags::default(),
        Some(check_smtp_tls),
    );
    define_text(c"synthetic_monitoring.smtp_user", c"SMTP user name (empty: no authentication).", &SMTP_USER, false);
    define_text(c"synthetic_monitoring.smtp_password", c"SMTP password.", &SMTP_PASSWORD, true);
    define_text(c"synthetic_monitoring.smtp_from", c"From address of alert emails.", &SMTP_FROM, false);
    define_checked(
        c"synthetic_monitoring.site_url",
        c"Web app address for links in alerts.",
        c"",
        &SITE_URL,
        GucContext::Sighup,
        GucFlags::default(),
        Some(check_http_url),
    );
    define_checked(
        c"synthetic_monitoring.slack_api_url",
        c"Base URL of the Slack Web API.",
        c"",
        &SLACK_API_URL,
        GucContext::Sighup,
        GucFlags::default(),
        Some(check_http_url),
    );
    define_text(c"synthetic_monitoring.slack_bot_token", c"Slack bot token for chat.postMessage.", &SLACK_BOT_TOKEN, true);
    define_text(c"synthetic_monitoring.webhook_signing_secret", c"HMAC key for alert webhook signatures.", &WEBHOOK_SIGNING_SECRET, true);
    define_text(c"synthetic_monitoring.smtp_password_file", c"File holding the SMTP password.", &SMTP_PASSWORD_FILE, true);
    define_text(c"synthetic_monitoring.slack_bot_token_file", c"File holding the Slack bot token.", &SLACK_BOT_TOKEN_FILE, true);
    define_text(
        c"synthetic_monitoring.webhook_signing_secret_file",
        c"File holding the webhook signing secret.",
        &WEBHOOK_SIGNING_SECRET_FILE,
        true,
    );
    for (name, short, setting, min, max, unit) in [
        (c"synthetic_monitoring.alert_max_attempts", c"Delivery attempts before an alert is dead.", &ALERT_MAX_ATTEMPTS, 1, 1000, GucFlags::default()),
        (c"synthetic_monitoring.alert_retry_base_ms", c"First retry delay of a failed alert delivery.", &ALERT_RETRY_BASE_MS, 10, 3_600_000, GucFlags::UNIT_MS),
        (c"synthetic_monitoring.alert_timeout_ms", c"Limit of one alert delivery attempt.", &ALERT_TIMEOUT_MS, 100, 300_000, GucFlags::UNIT_MS),
    ] {
        GucRegistry::define_int_guc(name, short, c"", setting, min, max, GucContext::Sighup, unit);
    }
}

/// Defines the settings; `preloading` adds those only the postmaster can set.
pub fn define(preloading: bool) {
    define_alert_settings();
    if preloading {
        GucRegistry::define_string_guc(
            c"synthetic_monitoring.database",
            c"Database the synthetic monitoring worker connects to.",
            c"The database where CREATE EXTENSION synthetic_monitoring was run.",
            &DATABASE,
            GucContext::Postmaster,
            GucFlags::default(),
        );
    }
    GucRegistry::define_bool_guc(
        c"synthetic_monitoring.worker_enabled",
        c"Whether the worker runs scheduled checks.",
        c"Off pauses every scheduled check; results of checks already running are still recorded.",
        &WORKER_ENABLED,
        GucContext::Sighup,
        GucFlags::default(),
    );
    define_checked(
        c"synthetic_monitoring.region",
        c"Region whose monitors this server's worker checks; default region of new monitors.",
        c"Lower-case letters, digits and '-'. A monitor is checked by every worker whose region is in its regions list.",
        &REGION,
        GucContext::Sighup,
        GucFlags::default(),
        Some(check_region),
    );
    GucRegistry::define_int_guc(
        c"synthetic_monitoring.poll_interval_ms",
        c"Longest sleep of the worker between looks for due monitors.",
        c"The worker also wakes at the next due time and at commit of a transaction that queued work.",
        &POLL_INTERVAL_MS,
        10,
        60_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"synthetic_monitoring.max_in_flight",
        c"Most checks the worker runs at once.",
        c"Each running check holds one connection until it ends or times out.",
        &MAX_IN_FLIGHT,
        1,
        100_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"synthetic_monitoring.batch_size",
        c"Due monitors claimed, and results recorded, per transaction.",
        c"",
        &BATCH_SIZE,
        1,
        100_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"synthetic_monitoring.max_body_bytes",
        c"Most bytes of a response body a check reads and decodes.",
        c"",
        &MAX_BODY_BYTES,
        1024,
        64 * 1024 * 1024,
        GucContext::Sighup,
        GucFlags::UNIT_BYTE,
    );
    define_checked(
        c"synthetic_monitoring.allowed_networks",
        c"Internal networks (CIDRs) that checks may reach.",
        c"By default loopback, private, link-local and other internal addresses are refused. Example: '127.0.0.0/8, 10.1.0.0/16'.",
        &ALLOWED_NETWORKS,
        GucContext::Suset,
        GucFlags::default(),
        Some(check_allowed_networks),
    );
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"synthetic_monitoring".as_ptr()) };
}

fn text(setting: &GucSetting<Option<CString>>, default: &CStr) -> String {
    setting
        .get()
        .and_then(|value| value.into_string().ok())
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| default.to_string_lossy().into_owned())
}

/// The configured region.
pub fn region() -> String {
    text(&REGION, c"local")
}

/// The database the worker serves.
pub fn database() -> String {
    text(&DATABASE, c"postgres")
}

/// The raw allowlist text (may be empty).
pub fn allowed_networks() -> String {
    ALLOWED_NETWORKS.get().and_then(|value| value.into_string().ok()).unwrap_or_default()
}

/// A text setting's value, empty when unset.
pub fn text_or_empty(setting: &GucSetting<Option<CString>>) -> String {
    setting.get().and_then(|value| value.into_string().ok()).unwrap_or_default()
}

/// A secret from its `_file` setting when that is set, else from the setting
/// itself. The error names the setting, never the content.
pub fn secret(value: &GucSetting<Option<CString>>, file: &GucSetting<Option<CString>>, file_setting: &str) -> Result<String, String> {
    let path = text_or_empty(file);
    if path.is_empty() {
        return Ok(text_or_empty(value));
    }
    std::fs::read_to_string(&path)
        .map(|content| content.trim_end_matches(['\r', '\n']).to_string())
        .map_err(|error| format!("cannot read {file_setting} ({path}): {error}"))
}

pub fn clamp_positive(value: i32) -> usize {
    value.max(1) as usize
}
