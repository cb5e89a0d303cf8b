//! The background worker. Only this main thread touches Postgres; checks run
//! on a tokio runtime and send their results back over a channel, waking the
//! main thread through a socket pair that its latch wait also watches.

use crate::alerts::{self, AlertSettings, Delivery, DeliveryOutcome};
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
/// Most alert deliveries running at once.
const DELIVERIES_IN_FLIGHT_MAX: usize = 100;

/// What a tokio task hands back to the main thread.
enum Finished {
    Check(CheckResult),
    Delivery(DeliveryOutcome),
}

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
    let mut worker = Worker::new();
    worker.run();
    worker.shutdown();
    status::worker_stopped();
    // Exit code 1 asks the postmaster to restart us: after pg_terminate_backend
    // the worker must come back. During shutdown nothing is restarted anyway.
    unsafe { pg_sys::proc_exit(1) };
}

struct Worker {
    runtime: tokio::runtime::Runtime,
    context: Option<CheckContext>,
    alert_settings: Option<Arc<AlertSettings>>,
    results: Receiver<Finished>,
    results_sender: Sender<Finished>,
    wake_reader: UnixStream,
    wake_writer: Arc<UnixStream>,
    region: String,
    in_flight: usize,
    deliveries_in_flight: usize,
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
            alert_settings: None,
            results,
            results_sender,
            wake_reader,
            wake_writer: Arc::new(wake_writer),
            region: gucs::region(),
            in_flight: 0,
            deliveries_in_flight: 0,
            checks_done: 0,
        }
    }

    /// The main loop: wait, record what finished, claim and start what is due.
    fn run(&mut self) {
        if !self.wait_for_extension() {
            return;
        }
        self.reload_settings();
        self.recover_interrupted_work();
        let mut sleep = Duration::ZERO;
        while self.wait(sleep) {
            self.record_finished();
            sleep = self.start_due_checks().min(self.start_due_deliveries());
            status::publish(self.in_flight, self.checks_done);
        }
        log!("synthetic_monitoring worker stopping with {} checks in flight", self.in_flight);
    }

    /// Stops at once: running checks are dropped (start-up recovery reschedules
    /// their slots) and nobody waits for a DNS lookup still in progress.
    fn shutdown(self) {
        self.runtime.shutdown_background();
    }

    /// pg_cron-style start-up recovery: checks and alert deliveries that a
    /// previous worker claimed but never recorded are made due again.
    fn recover_interrupted_work(&mut self) {
        let region = self.region.clone();
        let (checks, deliveries) = transaction(|| {
            let checks = Spi::get_one_with_args::<i32>(
                "SELECT synthetic_monitoring._recover_interrupted_checks($1)",
                &[region.into()],
            )?;
            let deliveries = Spi::get_one::<i32>("SELECT synthetic_monitoring._recover_deliveries()")?;
            Ok(Some((checks.unwrap_or(0), deliveries.unwrap_or(0))))
        })
        .unwrap_or_default();
        log!(
            "synthetic_monitoring worker started in region \"{}\" ({checks} interrupted checks rescheduled, \
             {deliveries} interrupted alert deliveries requeued)",
            self.region
        );
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
                warning!("synthetic_monitoring: {error}; checks and alert deliveries are paused until it is fixed");
                self.context = None;
            }
        }
        match alert_settings() {
            Ok(settings) => self.alert_settings = Some(Arc::new(settings)),
            Err(error) => {
                warning!("synthetic_monitoring: {error}; alert deliveries wait until it is fixed");
                self.alert_settings = None;
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

    /// Writes every finished check and delivery, in transactions of up to
    /// RECORD_BATCH_MAX results.
    fn record_finished(&mut self) {
        loop {
            let mut checks = Vec::new();
            let mut deliveries = Vec::new();
            for finished in self.results.try_iter().take(RECORD_BATCH_MAX) {
                match finished {
                    Finished::Check(result) => checks.push(result),
                    Finished::Delivery(outcome) => deliveries.push(outcome),
                }
            }
            if checks.is_empty() && deliveries.is_empty() {
                return;
            }
            self.in_flight -= checks.len();
            self.deliveries_in_flight -= deliveries.len();
            self.checks_done += checks.len() as u64;
            let checks = (!checks.is_empty()).then(|| serde_json::to_string(&checks).expect("results serialize"));
            let deliveries = (!deliveries.is_empty()).then(|| serde_json::to_string(&deliveries).expect("outcomes serialize"));
            let max_attempts = gucs::ALERT_MAX_ATTEMPTS.get();
            let retry_base_ms = gucs::ALERT_RETRY_BASE_MS.get();
            transaction(|| {
                if let Some(rows) = checks {
                    Spi::run_with_args("SELECT count(*) FROM synthetic_monitoring._record_checks($1::jsonb)", &[rows.into()])?;
                }
                if let Some(rows) = deliveries {
                    Spi::run_with_args(
                        "SELECT synthetic_monitoring._complete_deliveries($1::jsonb, $2, $3)",
                        &[rows.into(), max_attempts.into(), retry_base_ms.into()],
                    )?;
                }
                Ok(Some(()))
            });
        }
    }

    /// Claims due alert notifications and starts their delivery. Returns how
    /// long the loop may sleep before the next one is due.
    fn start_due_deliveries(&mut self) -> Duration {
        let poll = Duration::from_millis(gucs::POLL_INTERVAL_MS.get() as u64);
        let (Some(settings), Some(context)) = (self.alert_settings.clone(), self.context.clone()) else { return poll };
        let limit = DELIVERIES_IN_FLIGHT_MAX.saturating_sub(self.deliveries_in_flight);
        if limit == 0 {
            return poll;
        }
        let (claimed, seconds_to_next) = transaction(|| {
            let claimed = Spi::connect_mut(|client| {
                let rows = client.update("SELECT d FROM synthetic_monitoring._claim_deliveries($1) AS d", None, &[(limit as i32).into()])?;
                Ok::<_, pgrx::spi::Error>(rows.filter_map(|row| row.get::<pgrx::JsonB>(1).ok().flatten()).map(|pgrx::JsonB(v)| v).collect::<Vec<_>>())
            })?;
            let next = if claimed.len() < limit {
                Spi::get_one::<f64>("SELECT synthetic_monitoring._seconds_to_next_delivery()")?
            } else {
                Some(0.0)
            };
            Ok(Some((claimed, next)))
        })
        .unwrap_or_default();
        for row in claimed {
            self.deliveries_in_flight += 1;
            let outcome_of_unreadable = |error: serde_json::Error, row: &serde_json::Value| DeliveryOutcome {
                id: row["id"].as_i64().unwrap_or_default(),
                delivered: false,
                permanent: true,
                error: Some(format!("unreadable outbox row: {error}")),
                retry_after_s: None,
            };
            match serde_json::from_value::<Delivery>(row.clone()) {
                Ok(delivery) => {
                    let (settings, context) = (Arc::clone(&settings), context.clone());
                    self.spawn_task(async move { Finished::Delivery(alerts::deliver(&delivery, &settings, &context).await) });
                }
                Err(error) => {
                    let _ = self.results_sender.send(Finished::Delivery(outcome_of_unreadable(error, &row)));
                }
            }
        }
        match seconds_to_next {
            Some(seconds) => poll.min(Duration::from_secs_f64(seconds.max(0.0))),
            None => poll,
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
        let _ = self.results_sender.send(Finished::Check(result));
    }

    fn spawn(&mut self, job: Job, context: &CheckContext, max_body_bytes: usize) {
        self.in_flight += 1;
        let context = context.clone();
        let region = self.region.clone();
        self.spawn_task(async move { Finished::Check(job.run(&context, "scheduled", &region, max_body_bytes).await) });
    }

    /// Runs `task` on the runtime; its result goes back over the channel and
    /// wakes the main loop.
    fn spawn_task(&self, task: impl std::future::Future<Output = Finished> + Send + 'static) {
        let sender = self.results_sender.clone();
        let waker = Arc::clone(&self.wake_writer);
        self.runtime.spawn(async move {
            // The receiver lives as long as the runtime; a send cannot fail while it runs.
            let _ = sender.send(task.await);
            // A full socket buffer already guarantees a wake-up.
            let _ = (&*waker).write(&[1]);
        });
    }
}

fn alert_settings() -> Result<AlertSettings, String> {
    Ok(AlertSettings {
        smtp_host: gucs::text_or_empty(&gucs::SMTP_HOST),
        smtp_port: gucs::SMTP_PORT.get().clamp(1, 65535) as u16,
        smtp_tls: AlertSettings::parse_tls(&gucs::text_or_empty(&gucs::SMTP_TLS))?,
        smtp_user: gucs::text_or_empty(&gucs::SMTP_USER),
        smtp_password: gucs::secret(&gucs::SMTP_PASSWORD, &gucs::SMTP_PASSWORD_FILE, "synthetic_monitoring.smtp_password_file")?,
        smtp_from: gucs::text_or_empty(&gucs::SMTP_FROM),
        site_url: gucs::text_or_empty(&gucs::SITE_URL),
        slack_api_url: gucs::text_or_empty(&gucs::SLACK_API_URL),
        slack_bot_token: gucs::secret(&gucs::SLACK_BOT_TOKEN, &gucs::SLACK_BOT_TOKEN_FILE, "synthetic_monitoring.slack_bot_token_file")?,
        webhook_signing_secret: gucs::secret(
            &gucs::WEBHOOK_SIGNING_SECRET,
            &gucs::WEBHOOK_SIGNING_SECRET_FILE,
            "synthetic_monitoring.webhook_signing_secret_file",
        )?,
        timeout: Duration::from_millis(gucs::clamp_positive(gucs::ALERT_TIMEOUT_MS.get()) as u64),
    })
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
