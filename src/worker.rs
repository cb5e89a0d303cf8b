//! The background worker. Only this main thread touches Postgres; checks run
//! on a tokio runtime and send their results back over a channel, waking the
//! main thread through a socket pair that its latch wait also watches.

use crate::check_job::{self, CheckResult, Job};
use crate::http_check::CheckContext;
use crate::{gucs, status};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

const EXTENSION_RETRY: Duration = Duration::from_secs(5);
/// Most results written by one transaction.
const RECORD_BATCH_MAX: usize = 5000;

pub fn register() {
    BackgroundWorkerBuilder::new("synthetic_monitoring worker")
        .set_type("synthetic_monitoring worker")
        .set_library("synthetic_monitoring")
        .set_function("synthetic_monitoring_worker_main")
        .enable_spi_access()
        .set_restart_time(Some(Duration::from_secs(1)))
        .load();
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn synthetic_monitoring_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(Some(&gucs::database()), None);
    status::worker_started();
    Worker::new().run();
    status::worker_stopped();
    // Exit code 1 asks the postmaster to restart us: after pg_terminate_backend
    // the worker must come back. During shutdown nothing is restarted anyway.
    unsafe { pg_sys::proc_exit(1) };
}

struct Worker {
    runtime: tokio::runtime::Runtime,
    context: Option<CheckContext>,
    results: Receiver<CheckResult>,
    results_sender: Sender<CheckResult>,
    wake_reader: UnixStream,
    wake_writer: Arc<UnixStream>,
    region: String,
    in_flight: usize,
    checks_done: u64,
}

impl Worker {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("synthetic_monitoring-check")
            .enable_all()
            .build()
            .expect("the check runtime starts");
        let (results_sender, results) = mpsc::channel();
        let (wake_reader, wake_writer) = UnixStream::pair().expect("a socket pair for wake-ups");
        wake_reader.set_nonblocking(true).expect("non-blocking wake socket");
        wake_writer.set_nonblocking(true).expect("non-blocking wake socket");
        Worker {
            runtime,
            context: None,
            results,
            results_sender,
            wake_reader,
            wake_writer: Arc::new(wake_writer),
            region: gucs::region(),
            in_flight: 0,
            checks_done: 0,
        }
    }

    /// The main loop: wait, record what finished, claim and start what is due.
    fn run(&mut self) {
        if !self.wait_for_extension() {
            return;
        }
        self.reload_settings();
        let region = self.region.clone();
        let recovered = transaction(|| {
            Spi::get_one_with_args::<i32>("SELECT synthetic_monitoring._recover_interrupted_checks($1)", &[region.into()])
        });
        log!("synthetic_monitoring worker started in region \"{}\" ({} interrupted checks rescheduled)", self.region, recovered.unwrap_or(0));

        let mut sleep = Duration::ZERO;
        while self.wait(sleep) {
            self.record_finished();
            sleep = self.start_due_checks();
            status::publish(self.in_flight, self.checks_done);
        }
        // Checks still running are abandoned; start-up recovery reschedules their slots.
        log!("synthetic_monitoring worker stopping with {} checks in flight", self.in_flight);
    }

    /// Sleeps until `timeout`, a latch set (commit of queued work, signals) or a
    /// finished check. Returns false when the worker must stop.
    fn wait(&mut self, timeout: Duration) -> bool {
        let events = pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH | pg_sys::WL_SOCKET_READABLE;
        unsafe {
            pg_sys::WaitLatchOrSocket(
                pg_sys::MyLatch,
                events as i32,
                self.wake_reader.as_raw_fd(),
                timeout.as_millis().min(i64::MAX as u128) as _,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        let mut drained = [0u8; 256];
        while matches!(self.wake_reader.read(&mut drained), Ok(n) if n > 0) {}
        pgrx::check_for_interrupts!();
        if BackgroundWorker::sigterm_received() {
            return false;
        }
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            self.reload_settings();
        }
        true
    }

    fn reload_settings(&mut self) {
        self.region = gucs::region();
        match check_job::context(&gucs::allowed_networks()) {
            Ok(context) => self.context = Some(context),
            Err(error) => {
                // Fail closed: without a valid policy no check runs.
                warning!("synthetic_monitoring: {error}; scheduled checks are paused until it is fixed");
                self.context = None;
            }
        }
    }

    /// Waits politely until the extension exists in the database.
    fn wait_for_extension(&mut self) -> bool {
        let mut said = false;
        loop {
            let exists = transaction(|| {
                Spi::get_one::<bool>("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'synthetic_monitoring')")
            });
            if exists == Some(true) {
                return true;
            }
            if !said {
                log!(
                    "synthetic_monitoring worker: waiting for CREATE EXTENSION synthetic_monitoring in database \"{}\"",
                    gucs::database()
                );
                said = true;
            }
            if !self.wait(EXTENSION_RETRY) {
                return false;
            }
        }
    }

    /// Writes every finished result, in transactions of up to RECORD_BATCH_MAX.
    fn record_finished(&mut self) {
        loop {
            let batch: Vec<CheckResult> = self.results.try_iter().take(RECORD_BATCH_MAX).collect();
            if batch.is_empty() {
                return;
            }
            self.in_flight -= batch.len();
            self.checks_done += batch.len() as u64;
            let rows = serde_json::to_string(&batch).expect("results serialize");
            transaction(|| {
                Spi::run_with_args("SELECT count(*) FROM synthetic_monitoring._record_checks($1::jsonb)", &[rows.into()])
                    .map(|_| Some(()))
            });
        }
    }

    /// Claims due monitors up to the free capacity and starts their checks.
    /// Returns how long the loop may sleep.
    fn start_due_checks(&mut self) -> Duration {
        let poll = Duration::from_millis(gucs::POLL_INTERVAL_MS.get() as u64);
        let Some(context) = self.context.clone() else { return poll };
        if !gucs::WORKER_ENABLED.get() {
            return poll;
        }
        let capacity = gucs::clamp_positive(gucs::MAX_IN_FLIGHT.get()).saturating_sub(self.in_flight);
        let limit = capacity.min(gucs::clamp_positive(gucs::BATCH_SIZE.get()));
        if limit == 0 {
            return poll; // a finishing check wakes the loop
        }
        let region = self.region.clone();
        let (claimed, seconds_to_next) = transaction(|| {
            let jobs = claim(&region, limit);
            let next = if jobs.len() < limit { seconds_until_next_due(&region) } else { Some(0.0) };
            Ok::<_, pgrx::spi::Error>(Some((jobs, next)))
        })
        .unwrap_or_default();
        let max_body_bytes = gucs::clamp_positive(gucs::MAX_BODY_BYTES.get());
        for job in claimed {
            match serde_json::from_value::<Job>(job.clone()) {
                Ok(job) => self.spawn(job, &context, max_body_bytes),
                Err(error) => self.fail_unreadable(job, error.to_string()),
            }
        }
        match seconds_to_next {
            Some(seconds) => poll.min(Duration::from_secs_f64(seconds.max(0.0))),
            None => poll,
        }
    }

    /// A claimed job that cannot be read is still answered, as an `internal`
    /// failure, so its slot is released and the fault is visible.
    fn fail_unreadable(&mut self, job: serde_json::Value, error: String) {
        let monitor_id = job["monitor_id"].as_str().unwrap_or_default().to_string();
        let result = CheckResult::internal(monitor_id, job["scheduled_at"].as_f64(), format!("unreadable job: {error}"), "scheduled", &self.region);
        self.in_flight += 1;
        let _ = self.results_sender.send(result);
    }

    fn spawn(&mut self, job: Job, context: &CheckContext, max_body_bytes: usize) {
        self.in_flight += 1;
        let context = context.clone();
        let sender = self.results_sender.clone();
        let waker = Arc::clone(&self.wake_writer);
        let region = self.region.clone();
        self.runtime.spawn(async move {
            let result = job.run(&context, "scheduled", &region, max_body_bytes).await;
            // The receiver lives as long as the runtime; a send cannot fail while it runs.
            let _ = sender.send(result);
            // A full socket buffer already guarantees a wake-up.
            let _ = (&*waker).write(&[1]);
        });
    }
}

/// Runs `body` in its own transaction; an SPI error aborts the worker (it is
/// restarted and recovers) rather than being ignored.
fn transaction<T>(body: impl FnOnce() -> Result<Option<T>, pgrx::spi::Error> + std::panic::UnwindSafe + std::panic::RefUnwindSafe) -> Option<T> {
    BackgroundWorker::transaction(|| body().unwrap_or_else(|error| panic!("synthetic_monitoring worker: {error}")))
}

fn claim(region: &str, limit: usize) -> Vec<serde_json::Value> {
    Spi::connect_mut(|client| {
        let rows = client
            .update(
                "SELECT job FROM synthetic_monitoring._claim_due_checks($1, $2) AS job",
                None,
                &[region.into(), (limit as i32).into()],
            )
            .unwrap_or_else(|error| panic!("synthetic_monitoring worker: claiming due checks failed: {error}"));
        rows.filter_map(|row| row.get::<pgrx::JsonB>(1).ok().flatten()).map(|pgrx::JsonB(value)| value).collect()
    })
}

fn seconds_until_next_due(region: &str) -> Option<f64> {
    Spi::get_one_with_args::<f64>(
        "SELECT extract(epoch FROM synthetic_monitoring._next_due_at($1) - clock_timestamp())::float8",
        &[region.into()],
    )
    .ok()
    .flatten()
}
