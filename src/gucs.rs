//! Every setting of the extension, in one place. All names share the
//! `synthetic_monitoring.` prefix; each is documented with its unit, default
//! and why it exists.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::{CStr, CString};

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
pub fn define(preloading: bool) {
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
    GucRegistry::define_string_guc(
        c"synthetic_monitoring.region",
        c"Region whose monitors this server's worker checks; default region of new monitors.",
        c"Lower-case letters, digits and '-'. A monitor is checked by every worker whose region is in its regions list.",
        &REGION,
        GucContext::Sighup,
        GucFlags::default(),
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
    GucRegistry::define_string_guc(
        c"synthetic_monitoring.allowed_networks",
        c"Internal networks (CIDRs) that checks may reach.",
        c"By default loopback, private, link-local and other internal addresses are refused. Example: '127.0.0.0/8, 10.1.0.0/16'.",
        &ALLOWED_NETWORKS,
        GucContext::Suset,
        GucFlags::default(),
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

pub fn clamp_positive(value: i32) -> usize {
    value.max(1) as usize
}
