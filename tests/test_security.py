"""Target address policy, secret redaction and privileges against the live cluster.

Every refused target here resolves to this machine (loopback), so a regression in
the policy could only ever reach local test servers. The refusal of the other
internal ranges (private, link-local and the metadata address, CGNAT, unique-local
IPv6, ...) is decided without any traffic and covered by the policy's unit tests.
"""

import contextlib
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest
from psycopg.types.json import Jsonb

from conftest import wait_for
from targets import QuietServer
from test_worker import checks, create, event_of, first_check

HOSTS_FILE = "/etc/hosts"
TRAP_NAME = "status.trap-public-name.com"


def manual_check(cluster, team, monitor_id):
    return cluster.one("SELECT to_jsonb(c) FROM synthetic_monitoring.test_monitor(%s, %s) c", (team, monitor_id))


@contextlib.contextmanager
def allowed_networks(cluster, value):
    cluster.set("synthetic_monitoring.allowed_networks", value)
    try:
        yield
    finally:
        cluster.set("synthetic_monitoring.allowed_networks", "127.0.0.0/8, ::1/128")


@contextlib.contextmanager
def hosts_entry(line):
    with open(HOSTS_FILE) as f:
        original = f.read()
    with open(HOSTS_FILE, "a") as f:
        f.write(f"\n{line}\n")
    try:
        yield
    finally:
        with open(HOSTS_FILE, "w") as f:
            f.write(original)


class RedirectToLoopback(BaseHTTPRequestHandler):
    """Served on 127.0.0.2: redirects every request into 127.0.0.1."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(302)
        self.send_header("Location", self.server.location)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def redirector(targets):
    server = QuietServer(("127.0.0.2", 0), RedirectToLoopback)
    server.location = targets.url("/record")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.2:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "url_template, reason",
    [
        ("http://127.0.0.1:{port}/ok", "loopback"),
        ("http://localhost:{port}/ok", "loopback"),
        ("http://[::ffff:127.0.0.1]:{port}/ok", "loopback"),
        ("http://127.1.2.3:{port}/ok", "loopback"),
        ("http://0.0.0.0:{port}/ok", ""),
    ],
)
def test_internal_targets_are_refused_by_default(cluster, team, targets, url_template, reason):
    url = url_template.format(port=targets.port)
    mid = create(cluster, team, name="internal", url=url)
    with allowed_networks(cluster, ""):
        hits_before = sum(targets.hits.values())
        check = manual_check(cluster, team, mid)
    assert check["success"] is False
    assert check["error_class"] == "blocked", check
    assert check["status_code"] is None
    assert reason in check["error_message"]
    assert "allowed_networks" in check["error_message"]
    assert sum(targets.hits.values()) == hits_before, "a refused target is never contacted"
    assert cluster.one("SELECT state FROM synthetic_monitoring.monitors WHERE id = %s", (mid,)) == "failing"


def test_public_looking_name_resolving_to_loopback_is_refused(cluster, team, targets):
    with hosts_entry(f"127.0.0.1 {TRAP_NAME}"):
        mid = create(cluster, team, name="trap", url=f"http://{TRAP_NAME}:{targets.port}/ok")
        with allowed_networks(cluster, ""):
            check = manual_check(cluster, team, mid)
    assert check["error_class"] == "blocked"
    assert "127.0.0.1" in check["error_message"]


def test_redirect_from_an_allowed_target_into_loopback_is_refused(cluster, team, targets, redirector):
    mid = create(cluster, team, name="redirect-trap", url=redirector)
    with allowed_networks(cluster, "127.0.0.2/32"):
        hits_before = targets.hits["/record"]
        check = manual_check(cluster, team, mid)
    assert check["error_class"] == "blocked", check
    assert "127.0.0.1" in check["error_message"]
    assert targets.hits["/record"] == hits_before
    # With loopback allowed the same redirect is followed.
    followed = manual_check(cluster, team, mid)
    assert followed["success"] is True and followed["redirects"] == 1


def test_the_worker_applies_the_policy_too(cluster, team, targets):
    with allowed_networks(cluster, "::1/128"):
        time.sleep(0.5)  # the worker reloads on SIGHUP
        mid = create(cluster, team, name="scheduled-internal", url=targets.url("/ok"))
        check = first_check(cluster, mid)
    assert check["trigger"] == "scheduled"
    assert check["error_class"] == "blocked"


def test_allowlist_admits_loopback(cluster, team, targets):
    mid = create(cluster, team, name="allowed", url=targets.url("/ok"))
    assert first_check(cluster, mid)["success"] is True


SECRETS = ["s3cr3t-pass", "tok-9f8e7d6c", "Bearer-abcdef123456", "sessioncookie42"]


def test_secrets_never_reach_rows_events_or_the_log(cluster, team, targets):
    url_ok = f"http://alice:{SECRETS[0]}@127.0.0.1:{targets.port}/ok?api_token={SECRETS[1]}"
    url_bad = f"http://alice:{SECRETS[0]}@127.0.0.1:{targets.port}/error?access_token={SECRETS[1]}"
    url_dead = f"http://bob:{SECRETS[0]}@nonexistent.invalid/?token={SECRETS[1]}"
    headers = {"Authorization": SECRETS[2], "Cookie": SECRETS[3]}
    ids = [
        create(cluster, team, name="secret-ok", url=url_ok, headers=headers),
        create(cluster, team, name="secret-bad", url=url_bad, headers=headers),
        create(cluster, team, name="secret-dead", url=url_dead, headers=headers),
    ]
    for mid in ids:
        first_check(cluster, mid)
        manual_check(cluster, team, mid)
    cluster.rows(
        "SELECT synthetic_monitoring.update_monitor(%s, %s, %s, 'secret-tester')",
        (team, ids[0], Jsonb({"name": "renamed"})),
    )
    stored = cluster.one(
        "SELECT string_agg(to_jsonb(c)::text, ' ') FROM synthetic_monitoring.checks c WHERE monitor_id = ANY(%s::uuid[])",
        (ids,),
    )
    events = cluster.one(
        "SELECT string_agg(to_jsonb(e)::text, ' ') FROM synthetic_monitoring.events e WHERE team_id = %s", (team,)
    )
    assert stored and events
    assert "***" in stored and "***" in events
    log = cluster.log()
    for secret in SECRETS:
        assert secret not in stored, secret
        assert secret not in events, secret
        assert secret not in log, secret


def test_app_role_sees_only_the_api(cluster, team, targets):
    cluster.rows("DROP ROLE IF EXISTS django_app")
    cluster.rows("CREATE ROLE django_app LOGIN IN ROLE synthetic_monitoring_app")
    try:
        with cluster.connect() as conn:
            conn.execute("SET ROLE django_app")
            mid = conn.execute(
                "SELECT id FROM synthetic_monitoring.create_monitor(%s, %s)",
                (team, Jsonb({"name": "app", "url": targets.url("/ok")})),
            ).fetchone()[0]
            check = conn.execute("SELECT success FROM synthetic_monitoring.test_monitor(%s, %s)", (team, mid)).fetchone()
            assert check == (True,)
            with pytest.raises(Exception) as denied:
                conn.execute("SELECT count(*) FROM synthetic_monitoring.checks")
            assert denied.value.sqlstate == "42501"
    finally:
        cluster.rows("DROP ROLE IF EXISTS django_app")


def test_credentials_do_not_follow_a_redirect_to_another_origin(cluster, team, targets, redirector):
    # The redirector (127.0.0.2) sends the check on to 127.0.0.1: another origin.
    targets.server.recorded.clear()
    mid = create(cluster, team, name="creds-redirect", url=redirector, regions=["elsewhere"],
                 headers={"Authorization": "Bearer leak-1", "X-Api-Key": "leak-2", "Cookie": "sid=leak-3",
                          "X-Trace": "visible"})
    check = manual_check(cluster, team, mid)
    assert check["success"] is True, check
    (seen,) = targets.server.recorded
    assert seen["x-trace"] == "visible"
    for header in ("authorization", "x-api-key", "cookie"):
        assert header not in seen, header
