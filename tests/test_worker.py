"""The worker against real local servers: what it records for healthy and broken
sites, how it keeps time, and how it survives being killed and restarted."""

import threading
import time

import psycopg
import pytest
from psycopg.types.json import Jsonb

from conftest import wait_for
from targets import refused_port

MIB = 1024 * 1024
CHECK_COLUMNS = (
    "id, trigger, region, scheduled_at, started_at, finished_at, success, status_code, response_time_ms, "
    "dns_ms, connect_ms, tls_ms, ttfb_ms, download_ms, total_ms, bytes_read, body_truncated, redirects, "
    "final_url, error_class, error_message"
)


def create(cluster, team, **spec):
    spec.setdefault("name", spec["url"].rsplit("/", 1)[-1] or "root")
    spec.setdefault("frequency_minutes", 1)
    return str(cluster.one("SELECT id FROM synthetic_monitoring.create_monitor(%s, %s)", (team, Jsonb(spec))))


def checks(cluster, monitor_id):
    with cluster.conn.cursor() as cur:
        cur.execute(f"SELECT {CHECK_COLUMNS} FROM synthetic_monitoring.checks WHERE monitor_id = %s ORDER BY id", (monitor_id,))
        names = [d.name for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]


def first_check(cluster, monitor_id, timeout=10):
    return wait_for(lambda: checks(cluster, monitor_id), timeout, what=f"a check of {monitor_id}")[0]


def monitor(cluster, monitor_id):
    with cluster.conn.cursor() as cur:
        cur.execute("SELECT to_jsonb(m) FROM synthetic_monitoring.monitors m WHERE id = %s", (monitor_id,))
        return cur.fetchone()[0]


def event_of(cluster, check_id):
    return cluster.one(
        "SELECT to_jsonb(e) FROM synthetic_monitoring.events e "
        "WHERE event = 'synthetic_http_check' AND (properties->>'check_id')::bigint = %s",
        (check_id,),
    )


def assert_timing_invariants(check):
    phases = [check[k] for k in ("dns_ms", "connect_ms", "tls_ms", "ttfb_ms", "download_ms")]
    total = check["total_ms"]
    assert all(p >= 0 for p in phases), check
    assert all(p <= total for p in phases), check
    assert sum(phases) <= total + 0.5, check
    assert check["response_time_ms"] == total
    elapsed_ms = (check["finished_at"] - check["started_at"]).total_seconds() * 1000
    assert abs(elapsed_ms - total) < 1.0, (elapsed_ms, total)


def test_healthy_site(cluster, team, targets):
    created = time.time()
    mid = create(cluster, team, url=targets.url("/ok"))
    check = first_check(cluster, mid)
    # Woken at COMMIT: the first check does not wait for the next poll.
    assert check["started_at"].timestamp() - created < 1.0
    assert check["trigger"] == "scheduled" and check["region"] == "local"
    assert check["success"] is True and check["status_code"] == 200
    assert check["error_class"] is None and check["error_message"] is None
    assert check["bytes_read"] == len(b"<html><body>All systems operational</body></html>")
    assert check["redirects"] == 0 and check["body_truncated"] is False
    assert check["tls_ms"] == 0 and check["dns_ms"] == 0  # plain http to an IP literal
    assert check["connect_ms"] > 0 and check["ttfb_ms"] > 0
    assert_timing_invariants(check)
    assert 0 <= (check["started_at"] - check["scheduled_at"]).total_seconds() < 1.0

    m = monitor(cluster, mid)
    assert m["state"] == "healthy" and m["consecutive_failures"] == 0
    assert m["in_flight_slot"] is None
    event = event_of(cluster, check["id"])
    assert event["distinct_id"] == f"monitor_{mid}"
    assert event["team_id"] == team
    props = event["properties"]
    assert props["monitor_id"] == mid
    assert props["monitor_name"] == "ok"
    assert props["monitor_type"] == "http"
    assert props["url"] == targets.url("/ok")
    assert props["region"] == "local"
    assert props["success"] is True
    assert props["status_code"] == 200
    assert props["error_message"] is None
    assert props["method"] == "GET"
    assert props["expected_status_codes"] == ["2xx"]
    assert props["consecutive_failures"] == 0
    assert abs(props["response_time_ms"] - check["response_time_ms"]) <= 0.05
    for phase in ("dns_ms", "connect_ms", "tls_ms", "ttfb_ms", "download_ms", "total_ms"):
        assert phase in props


def test_server_error(cluster, team, targets):
    mid = create(cluster, team, url=targets.url("/error"))
    check = first_check(cluster, mid)
    assert check["success"] is False
    assert check["status_code"] == 500
    assert check["error_class"] == "http_status"
    assert "500" in check["error_message"] and "2xx" in check["error_message"]
    m = monitor(cluster, mid)
    assert m["state"] == "failing" and m["consecutive_failures"] == 1
    props = event_of(cluster, check["id"])["properties"]
    assert props["success"] is False and props["status_code"] == 500
    assert props["consecutive_failures"] == 1


def test_slow_beyond_the_timeout(cluster, team, targets):
    mid = create(cluster, team, url=targets.url("/slow/5"), timeout_ms=1000)
    check = first_check(cluster, mid)
    assert check["error_class"] == "timeout"
    assert check["status_code"] is None
    assert "1000 ms" in check["error_message"]
    assert 1000 <= check["total_ms"] < 1500
    assert_timing_invariants(check)


def test_connection_refused(cluster, team):
    mid = create(cluster, team, url=f"http://127.0.0.1:{refused_port()}/")
    check = first_check(cluster, mid)
    assert check["error_class"] == "connect"
    assert check["status_code"] is None
    assert "refused" in check["error_message"].lower()


def test_unknown_host(cluster, team):
    mid = create(cluster, team, url="http://nonexistent.invalid/")
    check = first_check(cluster, mid)
    assert check["error_class"] == "dns"
    assert check["status_code"] is None
    assert "nonexistent.invalid" in check["error_message"]


def test_redirect_followed(cluster, team, targets):
    mid = create(cluster, team, url=targets.url("/moved"))
    check = first_check(cluster, mid)
    assert check["success"] is True and check["status_code"] == 200
    assert check["redirects"] == 1
    assert check["final_url"] == targets.url("/ok")
    assert_timing_invariants(check)


def test_redirect_not_followed(cluster, team, targets):
    mid = create(cluster, team, url=targets.url("/moved"), follow_redirects=False)
    check = first_check(cluster, mid)
    assert check["success"] is False
    assert check["status_code"] == 301
    assert check["error_class"] == "http_status"
    accepted = create(cluster, team, name="moved-ok", url=targets.url("/moved"), follow_redirects=False,
                      expected_status_codes=[301])
    assert first_check(cluster, accepted)["success"] is True


def test_redirect_loop_fails_fast(cluster, team, targets):
    mid = create(cluster, team, url=targets.url("/loop"), max_redirects=3, timeout_ms=20000)
    check = first_check(cluster, mid)
    assert check["error_class"] == "redirect"
    assert "3" in check["error_message"]
    assert check["total_ms"] < 2000


def test_gzip_body_with_forbidden_keyword(cluster, team, targets):
    mid = create(cluster, team, url=targets.url("/gzip-forbidden"), body_must_not_contain="Fatal error")
    check = first_check(cluster, mid)
    assert check["status_code"] == 200
    assert check["error_class"] == "assertion"
    assert "Fatal error" in check["error_message"]
    clean = create(cluster, team, name="gzip-ok", url=targets.url("/gzip-forbidden"), body_must_contain="connection lost")
    assert first_check(cluster, clean)["success"] is True


def test_huge_body_is_read_only_up_to_the_cap(cluster, team, targets):
    before = targets.huge_bytes_sent
    mid = create(cluster, team, url=targets.url("/huge"), timeout_ms=20000)
    check = first_check(cluster, mid, timeout=25)
    assert check["success"] is True and check["status_code"] == 200
    assert check["body_truncated"] is True
    # Reading stops at the cap; at most the last network read lies beyond it.
    assert MIB <= check["bytes_read"] < 2 * MIB
    assert check["total_ms"] < 5000
    time.sleep(0.5)
    assert targets.huge_bytes_sent - before < 64 * MIB, "the 200 MB body must not be downloaded"


def test_hanging_target_does_not_delay_others(cluster, team, targets):
    for i in range(40):
        create(cluster, team, name=f"hang-{i}", url=targets.url("/hang"), timeout_ms=15000)
    wait_for(lambda: cluster.one("SELECT checks_in_flight FROM synthetic_monitoring.worker_status()") >= 40,
             10, what="40 hanging checks in flight")
    created = time.time()
    fast = create(cluster, team, name="fast", url=targets.url("/ok"))
    check = first_check(cluster, fast)
    assert check["success"] is True
    assert check["finished_at"].timestamp() - created < 1.0
    # Its rhythm holds while the hanging checks are still in flight: make its
    # next slot due now and it starts on time.
    cluster.rows("UPDATE synthetic_monitoring.monitors SET next_check_at = now() WHERE id = %s", (fast,))
    second = wait_for(lambda: checks(cluster, fast)[1:], 5, what="the second check")[0]
    assert (second["started_at"] - second["scheduled_at"]).total_seconds() < 1.2
    assert cluster.one("SELECT checks_in_flight FROM synthetic_monitoring.worker_status()") >= 40


def test_overdue_monitor_runs_once_then_keeps_its_phase(cluster, team, targets):
    # Hourly, so that its own next slot rarely falls inside the test.
    mid = create(cluster, team, url=targets.url("/ok"), frequency_minutes=60)
    first = first_check(cluster, mid)
    forced, forced_at = cluster.rows(
        "UPDATE synthetic_monitoring.monitors SET next_check_at = now() - interval '1 hour' WHERE id = %s "
        "RETURNING next_check_at, now()", (mid,))[0]
    wait_for(lambda: [c for c in checks(cluster, mid) if c["scheduled_at"] == forced], 5, what="the overdue check")
    time.sleep(2)
    rows = checks(cluster, mid)
    assert len([c for c in rows if c["scheduled_at"] == forced]) == 1, "the overdue slot runs once"
    caught_up = [c for c in rows if c["id"] != first["id"] and forced < c["scheduled_at"] < forced_at]
    assert not caught_up, "no catch-up of the missed hour"
    rejoined = cluster.one(
        "SELECT next_check_at > now() AND next_check_at <= now() + interval '61 minutes'"
        " AND extract(epoch FROM next_check_at - synthetic_monitoring._next_slot(id, 60, %s))::numeric %% 3600 = 0"
        " FROM synthetic_monitoring.monitors WHERE id = %s",
        (forced_at, mid),
    )
    assert rejoined, monitor(cluster, mid)


def test_pause_and_resume(cluster, team, targets):
    mid = create(cluster, team, url=targets.url("/ok"))
    first_check(cluster, mid)
    cluster.rows("SELECT synthetic_monitoring.pause_monitor(%s, %s)", (team, mid))
    time.sleep(1.5)
    assert len(checks(cluster, mid)) == 1
    resumed = time.time()
    cluster.rows("SELECT synthetic_monitoring.resume_monitor(%s, %s)", (team, mid))
    second = wait_for(lambda: checks(cluster, mid)[1:], 5, what="a check after resume")[0]
    assert second["started_at"].timestamp() - resumed < 1.0


def test_test_monitor_runs_in_the_session(cluster, team, targets):
    cluster.set("synthetic_monitoring.worker_enabled", "off")
    try:
        mid = create(cluster, team, url=targets.url("/ok"))
        with cluster.conn.cursor() as cur:
            cur.execute("SELECT to_jsonb(c) FROM synthetic_monitoring.test_monitor(%s, %s) c", (team, mid))
            check = cur.fetchone()[0]
        assert check["trigger"] == "manual" and check["success"] is True and check["status_code"] == 200
        assert check["scheduled_at"] is None
        assert [c["trigger"] for c in checks(cluster, mid)] == ["manual"]
        assert monitor(cluster, mid)["state"] == "healthy"
        # Bounded by the monitor's timeout.
        slow = create(cluster, team, name="slow", url=targets.url("/slow/5"), timeout_ms=500)
        started = time.monotonic()
        failed = cluster.one("SELECT to_jsonb(c) FROM synthetic_monitoring.test_monitor(%s, %s) c", (team, slow))
        assert failed["error_class"] == "timeout"
        assert time.monotonic() - started < 1.5
    finally:
        cluster.reset("synthetic_monitoring.worker_enabled")


def test_worker_switch_is_reloadable(cluster, team, targets):
    cluster.set("synthetic_monitoring.worker_enabled", "off")
    try:
        time.sleep(0.5)
        mid = create(cluster, team, url=targets.url("/ok"))
        time.sleep(2)
        assert checks(cluster, mid) == []
    finally:
        cluster.reset("synthetic_monitoring.worker_enabled")
    first_check(cluster, mid, timeout=5)


def test_worker_status(cluster, team, targets):
    mid = create(cluster, team, url=targets.url("/ok"))
    first_check(cluster, mid)
    row = cluster.rows(
        "SELECT running, pid, started_at <= now(), now() - last_loop_at < interval '3 s', region, "
        "checks_in_flight >= 0, checks_done >= 1 FROM synthetic_monitoring.worker_status()"
    )[0]
    assert row == (True, row[1], True, True, "local", True, True)
    backend = cluster.one("SELECT backend_type FROM pg_stat_activity WHERE pid = %s", (row[1],))
    assert backend == "synthetic_monitoring worker"


def test_worker_killed_mid_check_comes_back_without_skipping_or_doubling(cluster, team, targets):
    # Hourly, so that its own next slot rarely falls inside the test.
    mid = create(cluster, team, url=targets.url("/slow/2"), timeout_ms=10000, frequency_minutes=60)
    slot = wait_for(
        lambda: cluster.one("SELECT in_flight_slot FROM synthetic_monitoring.monitors WHERE id = %s", (mid,)),
        5,
        what="the check to be in flight",
    )
    old_pid = cluster.worker()[0]
    cluster.rows("SELECT pg_terminate_backend(%s)", (old_pid,))
    new_pid = wait_for(lambda: (lambda w: w[0] if w[1] and w[0] != old_pid else None)(cluster.worker()), 15,
                       0.1, "a new worker")
    assert new_pid != old_pid
    check = first_check(cluster, mid, timeout=15)
    time.sleep(0.5)
    rows = checks(cluster, mid)
    assert [c["scheduled_at"] for c in rows].count(slot) == 1, "the interrupted slot is checked exactly once"
    assert len({c["scheduled_at"] for c in rows}) == len(rows), "no slot runs twice"
    assert check["scheduled_at"] == slot and check["success"] is True
    assert "1 interrupted checks rescheduled" in cluster.log()
    # The next slot is the following phase slot: nothing skipped.
    gap = cluster.one(
        "SELECT extract(epoch FROM m.next_check_at - c.scheduled_at) FROM synthetic_monitoring.monitors m "
        "JOIN synthetic_monitoring.checks c ON c.monitor_id = m.id WHERE m.id = %s AND c.scheduled_at = %s",
        (mid, slot),
    )
    assert 0 < float(gap) <= 3600


def test_worker_waited_politely_for_the_extension(cluster):
    log = cluster.log()
    assert log.count("waiting for CREATE EXTENSION synthetic_monitoring") == 1
    assert "synthetic_monitoring worker started" in log


def test_restart_keeps_everything(cluster, team, targets):
    mid = create(cluster, team, url=targets.url("/ok"))
    check = first_check(cluster, mid)
    cluster.stop()
    cluster.start()
    cluster.wait_worker_running()
    assert checks(cluster, mid)[0]["id"] == check["id"]
    assert event_of(cluster, check["id"]) is not None
    cluster.rows("UPDATE synthetic_monitoring.monitors SET next_check_at = now() WHERE id = %s", (mid,))
    wait_for(lambda: len(checks(cluster, mid)) >= 2, 5, what="a check after restart")


def test_invalid_status_is_a_failed_check_and_the_worker_keeps_going(cluster, team, targets):
    bad = create(cluster, team, name="status600", url=targets.url("/status600"))
    good = create(cluster, team, name="neighbour", url=targets.url("/ok"))
    pid = cluster.worker()[0]
    check = first_check(cluster, bad)
    assert check["success"] is False
    assert check["error_class"] == "http_status"
    assert check["status_code"] is None
    assert "600" in check["error_message"]
    assert first_check(cluster, good)["success"] is True
    assert cluster.worker()[0] == pid, "the worker did not restart"


def test_test_monitor_of_a_monitor_deleted_meanwhile_is_not_found(cluster, team, targets):
    mid = create(cluster, team, name="deleted-meanwhile", url=targets.url("/slow/1.5"), timeout_ms=5000)
    outcome = {}

    def run():
        with cluster.connect() as conn:
            try:
                conn.execute("SELECT synthetic_monitoring.test_monitor(%s, %s)", (team, mid))
                outcome["result"] = "returned"
            except Exception as error:  # noqa: BLE001 - the SQLSTATE is what is asserted
                outcome["result"] = getattr(error, "sqlstate", repr(error))

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.5)
    cluster.rows("SELECT synthetic_monitoring.delete_monitor(%s, %s)", (team, mid))
    thread.join(10)
    assert outcome["result"] == "P0002"


def test_invalid_settings_are_refused_when_set(cluster):
    for name, value in [
        ("synthetic_monitoring.region", "UPPER"),
        ("synthetic_monitoring.allowed_networks", "10.0.0.0/33"),
        ("synthetic_monitoring.smtp_tls", "bogus"),
        ("synthetic_monitoring.site_url", "javascript:alert(1)"),
    ]:
        with pytest.raises(psycopg.Error) as refused:
            cluster.rows(f"ALTER SYSTEM SET {name} = '{value}'")
        assert refused.value.sqlstate == "22023", (name, refused.value)
        assert name in str(refused.value)
    assert cluster.one("SELECT scheduling_enabled FROM synthetic_monitoring.worker_status()") is True


def test_no_server_process_crashed_during_the_run(cluster):
    log = cluster.log()
    for sign in ("terminated by signal", "PANIC", "was terminated by exception"):
        assert sign not in log
