//! Turning refusals into SQL errors with an explicit SQLSTATE and a hint.

use crate::spec::SpecError;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// Raises `error` as ERROR 22023 (invalid_parameter_value). Never returns.
pub fn raise_spec_error(error: SpecError, function: &'static str) -> ! {
    ErrorReport::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, error.message, function)
        .set_hint(error.hint)
        .report(PgLogLevel::ERROR);
    unreachable!("an ERROR report does not return")
}
