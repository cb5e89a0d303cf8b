//! synthetic_monitoring: synthetic monitoring inside PostgreSQL.
//!
//! This file only wires the modules together; each concern has its own file.

use pgrx::prelude::*;

mod alerts;
mod api;
mod check_job;
mod errors;
mod gucs;
mod http_check;
mod policy;
mod redact;
pub mod spec;
mod status;
mod worker;

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

::pgrx::pg_module_magic!(name, version);

pgrx::extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
pgrx::extension_sql_file!("../sql/api.sql", name = "api", requires = ["schema", api::_normalize_monitor_spec, api::_redact_url, status::_wake_worker_at_commit]);
pgrx::extension_sql_file!(
    "../sql/worker.sql",
    name = "worker",
    requires = ["api", api::_run_check, status::_is_preloaded, status::_worker_shared_status]
);
pgrx::extension_sql_file!("../sql/security.sql", name = "security", finalize);

#[allow(non_snake_case)]
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    let preloading = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
    gucs::define(preloading);
    if preloading {
        status::init_shared_memory();
        worker::register();
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
