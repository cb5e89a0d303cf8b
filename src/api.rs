//! Rust helpers behind the SQL API in `sql/api.sql`.

use crate::{check_job, errors, gucs, spec};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{JsonB, PgLogLevel, PgSqlErrorCode};
use serde_json::Value;

/// Validates `patch` applied to `current` (NULL when creating) and returns the
/// complete normalized spec; raises 22023 naming the field otherwise. The patch
/// arrives as text and is parsed here, so that JSON Postgres accepts but Rust
/// cannot represent (numbers beyond f64, extreme nesting) is refused cleanly.
#[pg_extern(stable, parallel_safe)]
fn _normalize_monitor_spec(current: Option<JsonB>, patch: Option<&str>) -> JsonB {
    let current = match current.map(|JsonB(value)| value) {
        Some(Value::Object(map)) => Some(map),
        _ => None,
    };
    let patch = match patch.map(serde_json::from_str::<Value>) {
        None => Value::Null,
        Some(Ok(value)) => value,
        Some(Err(error)) => errors::raise_spec_error(
            spec::SpecError {
                field: "spec".into(),
                message: format!("invalid spec: {}", error.to_string().split(" at line").next().unwrap_or_default()),
                hint: "numbers must fit a 64-bit float and values may nest at most 100 levels deep".into(),
            },
            "_normalize_monitor_spec",
        ),
    };
    match spec::normalize(current.as_ref(), &patch, &gucs::region()) {
        Ok(normalized) => JsonB(Value::Object(normalized)),
        Err(error) => errors::raise_spec_error(error, "_normalize_monitor_spec"),
    }
}

/// The URL with credentials and secret query values replaced by `***`.
#[pg_extern(immutable, parallel_safe, strict)]
fn _redact_url(url: &str) -> String {
    crate::redact::redact_url(url)
}

/// Runs one check of `job` (the JSON test_monitor builds) in this session and
/// returns the result row for `_record_checks`. Cancellable: a query cancel or
/// termination interrupts the check within 100 ms.
#[pg_extern(volatile, parallel_unsafe)]
fn _run_check(job: JsonB) -> JsonB {
    let job: check_job::Job = serde_json::from_value(job.0).unwrap_or_else(|error| {
        pgrx::error!("synthetic_monitoring: unreadable check job: {error}");
    });
    let context = check_job::context(&gucs::allowed_networks()).unwrap_or_else(|error| {
        ErrorReport::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, error, "_run_check")
            .set_hint("a comma-separated list of CIDRs such as '127.0.0.0/8, 10.0.0.0/8'")
            .report(PgLogLevel::ERROR);
        unreachable!()
    });
    let region = gucs::region();
    let max_body_bytes = gucs::clamp_positive(gucs::MAX_BODY_BYTES.get());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|error| pgrx::error!("synthetic_monitoring: cannot start the check runtime: {error}"));
    let finished = runtime.block_on(async {
        let check = job.run(&context, "manual", &region, max_body_bytes);
        tokio::pin!(check);
        loop {
            tokio::select! {
                result = &mut check => break Some(result),
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {
                    if unsafe { std::ptr::read_volatile(&raw const pg_sys::InterruptPending) } != 0 {
                        break None;
                    }
                }
            }
        }
    });
    drop(runtime);
    match finished {
        Some(result) => JsonB(serde_json::to_value(result).expect("results serialize")),
        None => {
            pgrx::check_for_interrupts!();
            pgrx::error!("synthetic_monitoring: check interrupted")
        }
    }
}
