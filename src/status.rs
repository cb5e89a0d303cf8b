//! The worker's shared-memory status: health numbers for `worker_status()` and
//! the worker's latch, so a committing transaction that queued work can wake it.

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgAtomic};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Default)]
pub struct WorkerStatus {
    pid: AtomicI32,
    /// Index of the worker's PGPROC, whose latch wakes it; -1 when none.
    procno: AtomicI32,
    started_at_us: AtomicI64,
    last_loop_at_us: AtomicI64,
    in_flight: AtomicI64,
    checks_done: AtomicI64,
}

unsafe impl PGRXSharedMemory for WorkerStatus {}

static STATUS: PgAtomic<WorkerStatus> = unsafe { PgAtomic::new(c"synthetic_monitoring_worker_status") };

/// Set in `_PG_init` of a preloaded library: shared memory exists.
static PRELOADED: AtomicBool = AtomicBool::new(false);

pub fn init_shared_memory() {
    pg_shmem_init!(STATUS = WorkerStatus { procno: AtomicI32::new(-1), ..Default::default() });
    PRELOADED.store(true, Ordering::Relaxed);
}

fn shared() -> Option<&'static WorkerStatus> {
    PRELOADED.load(Ordering::Relaxed).then(|| STATUS.get())
}

pub fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// Called by the worker once connected.
pub fn worker_started() {
    if let Some(status) = shared() {
        status.pid.store(unsafe { pg_sys::MyProcPid }, Ordering::Relaxed);
        status.procno.store(unsafe { (*pg_sys::MyProc).pgprocno }, Ordering::Release);
        status.started_at_us.store(now_us(), Ordering::Relaxed);
        status.in_flight.store(0, Ordering::Relaxed);
        status.checks_done.store(0, Ordering::Relaxed);
    }
}

/// Called by the worker on every loop.
pub fn publish(in_flight: usize, checks_done: u64) {
    if let Some(status) = shared() {
        status.last_loop_at_us.store(now_us(), Ordering::Relaxed);
        status.in_flight.store(in_flight as i64, Ordering::Relaxed);
        status.checks_done.store(checks_done as i64, Ordering::Relaxed);
    }
}

pub fn worker_stopped() {
    if let Some(status) = shared() {
        status.procno.store(-1, Ordering::Release);
        status.pid.store(0, Ordering::Relaxed);
        status.in_flight.store(0, Ordering::Relaxed);
    }
}

fn set_worker_latch() {
    let Some(status) = shared() else { return };
    let procno = status.procno.load(Ordering::Acquire);
    if procno < 0 {
        return;
    }
    // Setting the latch of a slot that another process took over after the
    // worker died only causes a spurious wake-up there, which latches allow.
    unsafe {
        let proc_ = (*pg_sys::ProcGlobal).allProcs.add(procno as usize);
        pg_sys::SetLatch(&mut (*proc_).procLatch);
    }
}

thread_local! {
    static WAKE_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// Wakes the worker when the current transaction commits (not before: it
/// would not see the work yet), at most once per transaction.
#[pg_extern(volatile, parallel_unsafe)]
fn _wake_worker_at_commit() {
    if shared().is_none() || WAKE_REGISTERED.with(Cell::get) {
        return;
    }
    WAKE_REGISTERED.with(|flag| flag.set(true));
    pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, || {
        WAKE_REGISTERED.with(|flag| flag.set(false));
        set_worker_latch();
    });
    pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Abort, || {
        WAKE_REGISTERED.with(|flag| flag.set(false));
    });
}

/// Whether the library was preloaded, i.e. whether a worker can run.
#[pg_extern(stable, parallel_safe)]
fn _is_preloaded() -> bool {
    shared().is_some()
}

fn timestamp_from_us(us: i64) -> Option<TimestampWithTimeZone> {
    if us == 0 {
        return None;
    }
    // Postgres timestamps count from 2000-01-01.
    const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;
    TimestampWithTimeZone::try_from(us - PG_EPOCH_OFFSET_US).ok()
}

/// Raw shared-memory status; `worker_status()` is the public view of it.
#[pg_extern(stable, parallel_safe)]
fn _worker_shared_status() -> TableIterator<
    'static,
    (
        name!(running, bool),
        name!(pid, Option<i32>),
        name!(started_at, Option<TimestampWithTimeZone>),
        name!(last_loop_at, Option<TimestampWithTimeZone>),
        name!(checks_in_flight, i64),
        name!(checks_done, i64),
    ),
> {
    let row = match shared() {
        Some(status) => {
            let pid = status.pid.load(Ordering::Relaxed);
            let alive = pid != 0 && worker_backend_exists(pid);
            (
                alive,
                (pid != 0).then_some(pid),
                timestamp_from_us(status.started_at_us.load(Ordering::Relaxed)),
                timestamp_from_us(status.last_loop_at_us.load(Ordering::Relaxed)),
                if alive { status.in_flight.load(Ordering::Relaxed) } else { 0 },
                status.checks_done.load(Ordering::Relaxed),
            )
        }
        None => (false, None, None, None, 0, 0),
    };
    TableIterator::once(row)
}

/// Whether `pid` is a live synthetic_monitoring worker (not a recycled pid).
fn worker_backend_exists(pid: i32) -> bool {
    Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND backend_type = 'synthetic_monitoring worker')",
        &[pid.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}
