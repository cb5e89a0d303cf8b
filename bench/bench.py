"""Measurements of the synthetic_monitoring worker; started by bench/run.sh,
which provides nginx and the cluster through BENCH_* environment variables.

Phases: ceiling (wrk), drain (N monitors due at once), optional profile
(perf record of a second drain), steady (M one-minute monitors). Results go to
stdout and bench/results/latest.{md,json}. Exit code 1 when a phase failed.
"""

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def env_int(name, default):
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


QUICK = os.environ.get("BENCH_QUICK", "0") == "1"
PG_PORT = env_int("BENCH_PG_PORT", 55531)
HTTP_PORT = env_int("BENCH_HTTP_PORT", 55532)
PGDATA = os.environ["BENCH_PGDATA"]
WORK = Path(os.environ.get("BENCH_WORK", "/tmp"))
N = env_int("BENCH_N", 300 if QUICK else 20000)
STEADY_N = env_int("BENCH_STEADY_N", 100 if QUICK else 5000)
STEADY_MINUTES = env_int("BENCH_STEADY_MINUTES", 1 if QUICK else 3)
WRK_SECONDS = env_int("BENCH_WRK_SECONDS", 5 if QUICK else 10)
PERF = os.environ.get("BENCH_PERF", "0") == "1"
PERF_SECONDS = env_int("BENCH_PERF_SECONDS", 10)
CHECK_TIMEOUT_MS = env_int("BENCH_CHECK_TIMEOUT_MS", 5000)
# A phase fails when no check completes for this long.
STALL_SECONDS = env_int("BENCH_STALL_SECONDS", 60)
URL = f"http://127.0.0.1:{HTTP_PORT}/"


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class PhaseFailed(Exception):
    pass


# --- database ------------------------------------------------------------------

def connect():
    return psycopg.connect(host=PGDATA, port=PG_PORT, user="postgres", dbname="postgres",
                           autocommit=True, connect_timeout=10)


def one(conn, sql, params=None):
    row = conn.execute(sql, params).fetchone()
    return row[0] if row and len(row) == 1 else row


def set_worker_enabled(conn, on):
    conn.execute(f"ALTER SYSTEM SET synthetic_monitoring.worker_enabled = {'on' if on else 'off'}")
    conn.execute("SELECT pg_reload_conf()")


def worker_pid(conn):
    return one(conn, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'synthetic_monitoring worker'")


def wait_for_worker_loop(conn, since, timeout=60):
    """Waits until the worker runs its main loop (it publishes last_loop_at there)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT running, pid, last_loop_at > %s FROM synthetic_monitoring.worker_status()", (since,)
        ).fetchone()
        if row and row[0] and row[2]:
            return row[1]
        time.sleep(0.2)
    raise PhaseFailed(f"the worker did not reach its main loop within {timeout} s")


def wait_idle(conn, timeout=30):
    """Waits until the worker has no check in flight (after it was disabled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if one(conn, "SELECT count(*) FROM synthetic_monitoring.monitors WHERE in_flight_slot IS NOT NULL") == 0:
            return True
        time.sleep(0.2)
    return False


def reset_tables(conn):
    conn.execute("TRUNCATE synthetic_monitoring.monitors, synthetic_monitoring.checks, synthetic_monitoring.events, synthetic_monitoring.outbox")


def create_monitors(conn, count, frequency_minutes, prefix):
    started = time.monotonic()
    for first in range(1, count + 1, 5000):
        last = min(count, first + 4999)
        conn.execute(
            """SELECT count(synthetic_monitoring.create_monitor(1, jsonb_build_object(
                   'name', %s::text || g, 'url', %s::text, 'frequency_minutes', %s::int, 'timeout_ms', %s::int)))
               FROM generate_series(%s::int, %s::int) g""",
            (prefix, URL, frequency_minutes, CHECK_TIMEOUT_MS, first, last),
        )
    conn.execute("VACUUM ANALYZE synthetic_monitoring.monitors")
    log(f"created {count} monitors ({frequency_minutes} min) in {time.monotonic() - started:.1f} s")


# --- processes -------------------------------------------------------------------

def proc_cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def thread_cpu_seconds(pid):
    """CPU seconds per thread name (the main thread runs SQL, the others the checks)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        if task.name == str(pid):
            name = "main (postgres)"
        fields = stat.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def proc_status_kb(pid, key):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def system_cpu():
    """(busy, total) jiffies of the whole machine."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    return total - idle, total


def time_wait_sockets():
    try:
        out = subprocess.run(["ss", "-Htan", "state", "time-wait"], capture_output=True, text=True, timeout=10).stdout
        return len(out.splitlines())
    except (OSError, subprocess.SubprocessError):
        return None


# --- phases --------------------------------------------------------------------

def phase_ceiling():
    cmd = ["wrk", "-t1", "-c64", f"-d{WRK_SECONDS}s", "-H", "Connection: close", URL]
    log("ceiling: " + " ".join(cmd))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=WRK_SECONDS + 60).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise PhaseFailed("wrk printed no Requests/sec:\n" + out)
    errors = re.search(r"Socket errors:.*", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    latency = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", out)
    # TIME_WAIT sockets left by wrk would distort the drain; let most expire.
    return {
        "command": " ".join(cmd),
        "requests_per_s": float(match.group(1)),
        "socket_errors": errors.group(0) if errors else None,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "latency_avg": latency.group(1) if latency else None,
    }


def run_drain(conn, count, label, perf_file=None):
    """Enables the worker over `count` due monitors and waits until every one has
    its first check recorded. Returns the measurements."""
    pid = worker_pid(conn)
    if not pid:
        raise PhaseFailed("no worker process")
    conn.execute("CHECKPOINT")
    lsn0 = one(conn, "SELECT pg_current_wal_lsn()")
    cpu0 = proc_cpu_seconds(pid)
    threads0 = thread_cpu_seconds(pid)
    sys0 = system_cpu()
    t0 = one(conn, "SELECT clock_timestamp()")
    wall0 = time.monotonic()
    set_worker_enabled(conn, True)
    perf = None
    if perf_file:
        perf = subprocess.Popen(
            ["perf", "record", "-F", "499", "-g", "-p", str(pid), "-o", str(perf_file), "--", "sleep", str(PERF_SECONDS)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    progress = []  # (seconds since enable, first checks recorded)
    last_change = wall0
    done_first = 0
    max_in_flight = 0
    deadline = wall0 + max(120, count / 20)
    try:
        while True:
            time.sleep(0.2)
            now = time.monotonic()
            first, in_flight, wpid = conn.execute(
                """SELECT (SELECT count(*) FROM synthetic_monitoring.checks WHERE scheduled_at <= %s),
                          s.checks_in_flight, s.pid
                   FROM synthetic_monitoring.worker_status() s""", (t0,)).fetchone()
            max_in_flight = max(max_in_flight, in_flight or 0)
            if wpid != pid:
                raise PhaseFailed(f"{label}: the worker restarted (pid {pid} -> {wpid})")
            if first != done_first:
                done_first, last_change = first, now
                progress.append((round(now - wall0, 2), first))
            if first >= count:
                break
            if now - last_change > STALL_SECONDS:
                raise PhaseFailed(f"{label}: stalled at {first}/{count} checks for {STALL_SECONDS} s")
            if now > deadline:
                raise PhaseFailed(f"{label}: timed out at {first}/{count} checks after {now - wall0:.0f} s")
        drain_s = time.monotonic() - wall0
        lsn1, recorded = conn.execute(
            "SELECT pg_current_wal_lsn(), (SELECT count(*) FROM synthetic_monitoring.checks)").fetchone()
        cpu1 = proc_cpu_seconds(pid)
        threads1 = thread_cpu_seconds(pid)
        sys1 = system_cpu()
        hwm_kb = proc_status_kb(pid, "VmHWM")
        rss_kb = proc_status_kb(pid, "VmRSS")
        tw = time_wait_sockets()
    finally:
        set_worker_enabled(conn, False)
        if perf:
            try:
                perf.wait(timeout=PERF_SECONDS + 30)
            except subprocess.TimeoutExpired:
                perf.terminate()
                perf.wait(timeout=10)
    idle = wait_idle(conn)
    wal_bytes = one(conn, "SELECT pg_wal_lsn_diff(%s, %s)::bigint", (lsn1, lsn0))
    busy = (sys1[0] - sys0[0]) / max(1, sys1[1] - sys0[1])
    return {
        "label": label,
        "pid": pid,
        "enabled_at": t0,
        "seconds": drain_s,
        "checks_per_s": count / drain_s,
        "progress": progress,
        "max_in_flight": max_in_flight,
        "recorded_at_end": recorded,
        "wal_bytes": wal_bytes,
        "wal_bytes_per_check": wal_bytes / max(1, recorded),
        "worker_cpu_s": cpu1 - cpu0,
        "worker_cpu_by_thread_s": {k: round(threads1.get(k, 0) - threads0.get(k, 0), 2) for k in threads1},
        "worker_vmhwm_kb": hwm_kb,
        "worker_vmrss_kb": rss_kb,
        "machine_cpu_busy": busy,
        "time_wait_sockets": tw,
        "idle_after": idle,
        "perf_stderr": perf.stderr.read()[-500:] if perf and perf.stderr else None,
    }


def drain_details(conn, drain, count):
    t0 = drain["enabled_at"]
    q = lambda sql, params=None: conn.execute(sql, params).fetchone()
    checks, first_checks, successes = q(
        """SELECT count(*), count(*) FILTER (WHERE scheduled_at <= %s), count(*) FILTER (WHERE success)
           FROM synthetic_monitoring.checks""", (t0,))
    events = q("SELECT count(*) FROM synthetic_monitoring.events WHERE event = 'synthetic_http_check'")[0]
    states = dict(conn.execute("SELECT state, count(*) FROM synthetic_monitoring.monitors GROUP BY 1").fetchall())
    errors = dict(conn.execute(
        "SELECT coalesce(error_class, 'none'), count(*) FROM synthetic_monitoring.checks GROUP BY 1").fetchall())
    first_start, last_finish, p50_total, p99_total, max_total, p99_connect = q(
        """SELECT extract(epoch FROM min(started_at) - %s)::float8, extract(epoch FROM max(finished_at) - %s)::float8,
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY total_ms),
                  percentile_cont(0.99) WITHIN GROUP (ORDER BY total_ms), max(total_ms),
                  percentile_cont(0.99) WITHIN GROUP (ORDER BY connect_ms)
           FROM synthetic_monitoring.checks WHERE scheduled_at <= %s""", (t0, t0, t0))
    peak_1s = q(
        """SELECT max(n) FROM (SELECT count(*) n FROM synthetic_monitoring.checks
           WHERE scheduled_at <= %s GROUP BY date_trunc('second', finished_at)) s""", (t0,))[0]
    sizes = q(
        """SELECT pg_total_relation_size('synthetic_monitoring.checks'),
                  pg_total_relation_size('synthetic_monitoring.events')""")
    return {
        "checks": checks,
        "first_checks": first_checks,
        "extra_slot_checks": checks - first_checks,
        "events": events,
        "successes": successes,
        "states": states,
        "error_classes": errors,
        "first_start_s": float(first_start or 0),
        "last_finish_s": float(last_finish or 0),
        "total_ms_p50": p50_total,
        "total_ms_p99": p99_total,
        "total_ms_max": max_total,
        "connect_ms_p99": p99_connect,
        "peak_1s_finished": peak_1s,
        "checks_bytes": sizes[0],
        "events_bytes": sizes[1],
        "bytes_per_check": (sizes[0] + sizes[1]) / max(1, checks),
        "all_healthy": states.get("healthy", 0) == count and len(states) == 1,
    }


def phase_drain(conn):
    reset_tables(conn)
    # 60 minutes, the longest interval: few monitors reach their second slot
    # during the drain; those checks are counted apart (extra_slot_checks).
    create_monitors(conn, N, 60, "drain-")
    log(f"drain: enabling the worker over {N} due monitors")
    drain = run_drain(conn, N, "drain")
    drain.update(drain_details(conn, drain, N))
    failures = []
    if drain["first_checks"] != N:
        failures.append(f"drain: {drain['first_checks']} first checks recorded, expected {N}")
    if drain["events"] != drain["checks"]:
        failures.append(f"drain: {drain['events']} check events for {drain['checks']} checks")
    if not drain["all_healthy"]:
        failures.append(f"drain: monitor states {drain['states']}, expected all healthy")
    if not drain["idle_after"]:
        failures.append("drain: checks still in flight 30 s after the worker was disabled")
    return drain, failures


def phase_profile(conn):
    perf_file = WORK / "perf.data"
    reset_tables(conn)
    create_monitors(conn, N, 60, "profile-")
    log(f"profile: perf record -p WORKER for {PERF_SECONDS} s during a second drain of {N}")
    drain = run_drain(conn, N, "profile", perf_file=perf_file)
    report = {"drain_seconds_under_perf": drain["seconds"], "perf_stderr": drain["perf_stderr"]}
    if not perf_file.exists():
        report["error"] = "perf wrote no data"
        return report
    views = (("by_thread", "comm", []), ("by_dso", "dso", []), ("by_symbol", "dso,sym", []),
             ("main_thread_by_symbol", "dso,sym", ["--comms", "postgres"]))
    for key, sort, extra in views:
        out = subprocess.run(
            ["perf", "report", "-i", str(perf_file), "--stdio", "--no-children", "--sort", sort, "-g", "none",
             "--percent-limit", "0.7", *extra],
            capture_output=True, text=True, timeout=300).stdout
        lines = [line for line in out.splitlines() if line.strip() and not line.startswith("#")]
        report[key] = lines[:40]
    (RESULTS / "perf-report.txt").write_text(
        "\n\n".join(f"== {key} ==\n" + "\n".join(report[key]) for key, _, _ in views) + "\n")
    return report


def phase_steady(conn):
    reset_tables(conn)
    create_monitors(conn, STEADY_N, 1, "steady-")
    t_enable = one(conn, "SELECT clock_timestamp()")
    set_worker_enabled(conn, True)
    wall0 = time.monotonic()
    failures = []
    try:
        # First checks: every monitor once, then each runs at its phase.
        last, last_change = -1, wall0
        while True:
            time.sleep(0.5)
            first = one(conn, "SELECT count(DISTINCT monitor_id) FROM synthetic_monitoring.checks")
            if first != last:
                last, last_change = first, time.monotonic()
            if first >= STEADY_N:
                break
            if time.monotonic() - last_change > STALL_SECONDS:
                raise PhaseFailed(f"steady: first checks stalled at {first}/{STEADY_N}")
        first_done_s = time.monotonic() - wall0
        # The window starts after every first check; each monitor has exactly
        # STEADY_MINUTES phase-aligned slots inside it.
        w_start = one(conn, "SELECT greatest(clock_timestamp(), %s::timestamptz + interval '1 second')", (t_enable,))
        w_end = w_start + dt.timedelta(minutes=STEADY_MINUTES)
        expected = STEADY_N * STEADY_MINUTES
        log(f"steady: all {STEADY_N} first checks after {first_done_s:.1f} s; measuring {STEADY_MINUTES} min")
        grace = dt.timedelta(milliseconds=CHECK_TIMEOUT_MS + 15000)
        last, last_change, next_note = -1, time.monotonic(), time.monotonic() + 30
        while True:
            time.sleep(1)
            now, got = conn.execute(
                """SELECT clock_timestamp(), count(*) FROM synthetic_monitoring.checks
                   WHERE scheduled_at >= %s AND scheduled_at < %s""", (w_start, w_end)).fetchone()
            if got != last:
                last, last_change = got, time.monotonic()
            if time.monotonic() > next_note:
                log(f"steady: {got}/{expected} slots recorded")
                next_note += 30
            if got >= expected and now >= w_end:
                break
            if now > w_end + grace:
                break  # what is missing now is reported as missed
            if time.monotonic() - last_change > STALL_SECONDS + 60:
                raise PhaseFailed(f"steady: no check recorded for {STALL_SECONDS + 60} s ({got}/{expected})")
    finally:
        set_worker_enabled(conn, False)
    wait_idle(conn)
    window = (w_start, w_end)
    p50, p95, p99, pmax, n_late = conn.execute(
        """SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY l), percentile_cont(0.95) WITHIN GROUP (ORDER BY l),
                  percentile_cont(0.99) WITHIN GROUP (ORDER BY l), max(l), count(*)
           FROM (SELECT (extract(epoch FROM started_at - scheduled_at) * 1000)::float8 AS l
                 FROM synthetic_monitoring.checks
                 WHERE trigger = 'scheduled' AND scheduled_at IS NOT NULL
                   AND scheduled_at >= %s AND scheduled_at < %s) s""", window).fetchone()
    bmax, bmean, bstd, bzero = conn.execute(
        """SELECT max(n), avg(n), stddev_pop(n), count(*) FILTER (WHERE n = 0)
           FROM (SELECT s, (SELECT count(*) FROM synthetic_monitoring.checks c
                            WHERE c.started_at >= s AND c.started_at < s + interval '1 second'
                              -- slots of the window only: a late first check is not bunching
                              AND c.scheduled_at >= %s) AS n
                 FROM generate_series(date_trunc('second', %s::timestamptz),
                                      %s::timestamptz - interval '1 second', interval '1 second') s) b""",
        (w_start, w_start, w_end)).fetchone()
    short, missed, extra = conn.execute(
        """SELECT count(*) FILTER (WHERE n < %s), coalesce(sum(greatest(%s - n, 0)), 0),
                  coalesce(sum(greatest(n - %s, 0)), 0)
           FROM (SELECT m.id, count(c.id) n FROM synthetic_monitoring.monitors m
                 LEFT JOIN synthetic_monitoring.checks c
                   ON c.monitor_id = m.id AND c.scheduled_at >= %s AND c.scheduled_at < %s
                 GROUP BY m.id) s""",
        (STEADY_MINUTES, STEADY_MINUTES, STEADY_MINUTES, w_start, w_end)).fetchone()
    failed = one(conn, """SELECT count(*) FROM synthetic_monitoring.checks
                          WHERE NOT success AND scheduled_at >= %s AND scheduled_at < %s""", window)
    result = {
        "monitors": STEADY_N,
        "minutes": STEADY_MINUTES,
        "first_checks_seconds": first_done_s,
        "window_start": w_start.isoformat(),
        "expected_slots": expected,
        "scheduled_checks": n_late,
        "lateness_ms": {"p50": p50, "p95": p95, "p99": p99, "max": pmax},
        "per_second": {"max": bmax, "mean": float(bmean or 0), "stddev": float(bstd or 0), "zero_seconds": bzero,
                       "ideal_mean": STEADY_N / 60},
        "monitors_with_missed_slots": short,
        "missed_slots": int(missed),
        "extra_checks": int(extra),
        "failed_checks": failed,
    }
    if n_late == 0:
        failures.append("steady: no scheduled check in the window")
    return result, failures


# --- report --------------------------------------------------------------------

def fmt(value, digits=1):
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render(results):
    c, d, s, p = results.get("ceiling"), results.get("drain"), results.get("steady"), results.get("profile")
    rows = []
    add = lambda *r: rows.append(r)
    if c:
        add("ceiling", "wrk -t1 -c64, fresh connection per request", f"{fmt(c['requests_per_s'], 0)} req/s")
    if d:
        add("drain", f"{N:,} monitors due at once: seconds to all recorded", f"{fmt(d['seconds'], 2)} s")
        add("drain", "checks completed and persisted per second", f"{fmt(d['checks_per_s'], 0)} /s")
        if c:
            add("drain", "ratio to ceiling", f"{d['checks_per_s'] / c['requests_per_s'] * 100:.1f} %")
        add("drain", "peak 1-s bucket (finished_at)", f"{fmt(d['peak_1s_finished'])} /s")
        add("drain", "first check started / last finished after enable",
            f"{fmt(d['first_start_s'], 2)} s / {fmt(d['last_finish_s'], 2)} s")
        add("drain", "check total_ms p50 / p99 / max (connect p99)",
            f"{fmt(d['total_ms_p50'])} / {fmt(d['total_ms_p99'])} / {fmt(d['total_ms_max'])} ms "
            f"({fmt(d['connect_ms_p99'])})")
        add("drain", "max checks in flight seen", fmt(d["max_in_flight"]))
        add("drain", "checks / check events / extra-slot checks",
            f"{fmt(d['checks'])} / {fmt(d['events'])} / {fmt(d['extra_slot_checks'])}")
        add("drain", "monitor states", ", ".join(f"{k} {v:,}" for k, v in sorted(d["states"].items())))
        add("drain", "error classes", ", ".join(f"{k} {v:,}" for k, v in sorted(d["error_classes"].items())))
        add("cost", "worker CPU during drain (total, per check)",
            f"{fmt(d['worker_cpu_s'], 2)} s, {d['worker_cpu_s'] / N * 1e6:,.0f} µs/check")
        add("cost", "worker CPU by thread",
            ", ".join(f"{k} {v:.2f} s" for k, v in sorted(d["worker_cpu_by_thread_s"].items(), key=lambda kv: -kv[1])))
        add("cost", "machine CPU busy during drain (all cores)", f"{d['machine_cpu_busy'] * 100:.0f} %")
        add("cost", "worker peak RSS (VmHWM)", f"{d['worker_vmhwm_kb'] / 1024:,.1f} MiB")
        add("cost", "WAL bytes per check", f"{fmt(d['wal_bytes_per_check'], 0)} B")
        add("cost", "checks + events bytes per check (tables + indexes)",
            f"{fmt(d['bytes_per_check'], 0)} B ({d['checks_bytes'] / max(1, d['checks']):,.0f} + "
            f"{d['events_bytes'] / max(1, d['checks']):,.0f})")
        add("cost", "TIME_WAIT sockets after drain", fmt(d["time_wait_sockets"]))
    if p:
        add("profile", f"drain under perf record ({PERF_SECONDS} s)", f"{fmt(p.get('drain_seconds_under_perf'), 2)} s")
    if s:
        lat = s["lateness_ms"]
        add("steady", f"{s['monitors']:,} monitors x 1 min, window", f"{s['minutes']} min, {s['scheduled_checks']:,} checks")
        add("steady", "lateness p50 / p95 / p99 / max",
            f"{fmt(lat['p50'])} / {fmt(lat['p95'])} / {fmt(lat['p99'])} / {fmt(lat['max'])} ms")
        ps = s["per_second"]
        add("steady", "checks started per 1-s bucket max / mean (ideal mean)",
            f"{fmt(ps['max'])} / {ps['mean']:.1f} ({ps['ideal_mean']:.1f}), stddev {ps['stddev']:.1f}, "
            f"{ps['zero_seconds']} empty s")
        add("steady", "missed slots (monitors short)", f"{s['missed_slots']:,} ({s['monitors_with_missed_slots']:,})")
        add("steady", "extra checks / failed checks in window", f"{s['extra_checks']:,} / {s['failed_checks']:,}")
    elif results.get("steady_skipped"):
        add("steady", "skipped", results["steady_skipped"])
    out = ["| phase | measure | value |", "|---|---|---|"]
    out += [f"| {a} | {b} | {v} |" for a, b, v in rows]
    return "\n".join(out)


def main():
    results = {"quick": QUICK, "n": N, "steady_n": STEADY_N, "steady_minutes": STEADY_MINUTES,
               "started": dt.datetime.now(dt.timezone.utc).isoformat(), "machine_cores": os.cpu_count()}
    failures = []
    RESULTS.mkdir(exist_ok=True)
    try:
        with connect() as conn:
            results["settings"] = dict(conn.execute(
                """SELECT name, setting FROM pg_settings WHERE name LIKE 'synthetic_monitoring.%%'
                   OR name IN ('shared_buffers', 'max_wal_size', 'synchronous_commit', 'wal_level')""").fetchall())
            results["server_version"] = one(conn, "SHOW server_version")
            t = one(conn, "SELECT clock_timestamp()")
            conn.execute("CREATE EXTENSION IF NOT EXISTS synthetic_monitoring")
            wait_for_worker_loop(conn, t)
            results["ceiling"] = phase_ceiling()
            log(f"ceiling: {results['ceiling']['requests_per_s']:,.0f} req/s")
            time.sleep(2)
            drain, f = phase_drain(conn)
            results["drain"], failures = drain, failures + f
            log(f"drain: {drain['seconds']:.2f} s, {drain['checks_per_s']:,.0f} checks/s")
            if PERF and shutil.which("perf"):
                try:
                    results["profile"] = phase_profile(conn)
                except (PhaseFailed, subprocess.SubprocessError, OSError) as error:
                    results["profile"] = {"error": str(error)}
            if STEADY_N > 0 and STEADY_MINUTES > 0:
                steady, f = phase_steady(conn)
                results["steady"], failures = steady, failures + f
            else:
                results["steady_skipped"] = "BENCH_STEADY_N or BENCH_STEADY_MINUTES is 0"
    except PhaseFailed as error:
        failures.append(str(error))
    except (psycopg.Error, subprocess.SubprocessError, OSError) as error:
        failures.append(f"{type(error).__name__}: {error}")
    results["failures"] = failures
    table = render(results)
    mode = "quick" if QUICK else "full"
    header = (f"# synthetic_monitoring benchmark ({mode}, {results['started'][:19]}Z, "
              f"{os.cpu_count()} cores, PostgreSQL {results.get('server_version', '?')})\n")
    text = header + "\n" + table + "\n"
    if "profile" in results:
        prof = results["profile"]
        text += "\n## perf (worker process, during a second drain)\n\n```\n"
        for key in ("by_thread", "by_dso", "by_symbol", "main_thread_by_symbol"):
            text += f"-- {key}\n" + "\n".join(prof.get(key, [])[:20]) + "\n"
        if not any(prof.get(key) for key in ("by_thread", "by_dso")):
            text += "(no samples: the drain was too short to profile)\n"
        if prof.get("error"):
            text += "error: " + prof["error"] + "\n"
        text += "```\n"
    text += "\n" + ("FAILED:\n" + "\n".join(f"- {x}" for x in failures) if failures else "OK") + "\n"
    print(text)
    (RESULTS / "latest.md").write_text(text)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"{stamp}-{mode}.md").write_text(text)
    (RESULTS / f"{stamp}-{mode}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
