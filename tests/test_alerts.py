"""Alerts end to end: rules driven by real checks, delivery through the outbox to a
real SMTP server (aiosmtpd) and to local HTTP receivers standing in for Slack and
webhook endpoints, with the faults such receivers show (500, slow, 429, down)."""

import email
import email.policy
import hashlib
import hmac
import json
import os
import shutil
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from psycopg.types.json import Jsonb

from conftest import free_port, wait_for
from targets import QuietServer

SMTP_USER = "alerts"
SMTP_PASSWORD = "smtp-s3cret-pw"
SLACK_TOKEN = "xoxb-test-token-777"
SIGNING_SECRET = "whsec-test-secret"
SITE_URL = "https://app.example.com"
AWKWARD_NAME = 'Shop "Prod" <EU> & café 🚀\nsecond line'


class Mailbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.original_content, policy=email.policy.default))
        return "250 OK"


def authenticate(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login == SMTP_USER.encode() and auth_data.password == SMTP_PASSWORD.encode()
    return AuthResult(success=ok)


class SmtpServer:
    def __init__(self):
        self.port = free_port()
        self.mailbox = Mailbox()
        self.controller = None

    def start(self):
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port,
                                     authenticator=authenticate, auth_require_tls=False)
        self.controller.start()

    def stop(self):
        if self.controller:
            self.controller.stop()
            self.controller = None


class Receiver(BaseHTTPRequestHandler):
    """Records every POST; answers per path, following a script of answers."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time()))
            script = self.server.scripts.get(self.path, [])
            answer = script.pop(0) if len(script) > 1 else (script[0] if script else (200, "ok", {}))
        status, text, headers = answer
        if status == "sleep":
            time.sleep(text)
            status, text, headers = 200, "late", {}
        if status == "hang":
            self.server.release.wait(60)
            status, text, headers = 200, "ok", {}
        data = text.encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class Receivers:
    def __init__(self):
        self.server = QuietServer(("127.0.0.1", 0), Receiver)
        self.server.daemon_threads = True
        self.server.lock = threading.Lock()
        self.server.requests = []
        self.server.scripts = {}
        self.server.release = threading.Event()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path):
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def script(self, path, *answers):
        self.server.scripts[path] = list(answers)

    def requests(self, path):
        with self.server.lock:
            return [r for r in self.server.requests if r[0] == path]


@pytest.fixture(scope="module")
def smtp():
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def receivers():
    r = Receivers()
    yield r
    r.server.release.set()
    r.server.shutdown()


@pytest.fixture(scope="module")
def secret_files():
    """Secrets in files only the postgres OS user reads: a changed setting's value
    is written to the server log on reload, a file's content is not."""
    folder = tempfile.mkdtemp(prefix="sm-secrets-")
    paths = {}
    for name, secret in (("smtp_password", SMTP_PASSWORD), ("slack_bot_token", SLACK_TOKEN),
                         ("webhook_signing_secret", SIGNING_SECRET)):
        path = os.path.join(folder, name)
        with open(path, "w") as f:
            f.write(secret + "\n")
        os.chmod(path, 0o600)
        shutil.chown(path, "postgres", "postgres")
        paths[name] = path
    shutil.chown(folder, "postgres", "postgres")
    yield paths
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def alerting(cluster, smtp, receivers, secret_files):
    settings = {
        "synthetic_monitoring.smtp_host": "127.0.0.1",
        "synthetic_monitoring.smtp_port": str(smtp.port),
        "synthetic_monitoring.smtp_tls": "none",
        "synthetic_monitoring.smtp_user": SMTP_USER,
        "synthetic_monitoring.smtp_password_file": secret_files["smtp_password"],
        "synthetic_monitoring.smtp_from": "Synthetic Monitoring <alerts@example.com>",
        "synthetic_monitoring.site_url": SITE_URL,
        "synthetic_monitoring.slack_api_url": receivers.url(""),
        "synthetic_monitoring.slack_bot_token_file": secret_files["slack_bot_token"],
        "synthetic_monitoring.webhook_signing_secret_file": secret_files["webhook_signing_secret"],
        "synthetic_monitoring.alert_retry_base_ms": "300",
        "synthetic_monitoring.alert_timeout_ms": "1500",
    }
    for name, value in settings.items():
        cluster.set(name, value)
    yield settings
    for name in settings:
        cluster.reset(name)


def alerting_monitor(cluster, team, targets, **spec):
    """A monitor the worker never schedules (its region is elsewhere): the test
    drives its checks with test_monitor."""
    base = {"name": AWKWARD_NAME, "url": targets.url("/switch"), "regions": ["elsewhere"],
            "alert_threshold_failures": 3, "timeout_ms": 2000}
    base.update(spec)
    return str(cluster.one("SELECT id FROM synthetic_monitoring.create_monitor(%s, %s)", (team, Jsonb(base))))


def run_checks(cluster, team, mid, targets, sequence):
    for step in sequence:
        targets.server.switch_status = 503 if step == "F" else 200
        cluster.rows("SELECT synthetic_monitoring.test_monitor(%s, %s)", (team, mid))


def outbox(cluster, mid):
    with cluster.conn.cursor() as cur:
        cur.execute("SELECT to_jsonb(o) FROM synthetic_monitoring.outbox o WHERE monitor_id = %s ORDER BY id", (mid,))
        return [row[0] for row in cur.fetchall()]


def wait_delivered(cluster, mid, count, timeout=15):
    return wait_for(
        lambda: (lambda rows: rows if len(rows) >= count and all(r["state"] == "delivered" for r in rows) else None)(
            outbox(cluster, mid)),
        timeout, 0.1, f"{count} delivered alerts")


def test_email_alert_then_recovery(cluster, team, targets, smtp, alerting):
    mid = alerting_monitor(cluster, team, targets, alert_recipients=["oncall@example.com"])
    already = len(smtp.mailbox.messages)
    run_checks(cluster, team, mid, targets, "FFF")
    rows = wait_delivered(cluster, mid, 1)
    assert [r["kind"] for r in rows] == ["failure"]
    wait_for(lambda: len(smtp.mailbox.messages) > already, 5, what="the failure email")
    message = smtp.mailbox.messages[already]

    assert message["Subject"] == '🔴 Shop "Prod" <EU> & café 🚀 second line is failing'
    assert message["To"] == "oncall@example.com"
    assert message["From"] == "Synthetic Monitoring <alerts@example.com>"
    assert message["Message-ID"] == f"<{rows[0]['idempotency_key']}@synthetic-monitoring>"
    assert message.get_content_type() == "multipart/alternative"
    plain = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    link = f"{SITE_URL}/project/{team}/synthetic-monitoring/{mid}"
    for text in (f"URL: {targets.url('/switch')}", "Consecutive failures: 3", "Status code: 503",
                 "Region: local", "Last error: status 503, expected one of 2xx", f"Details: {link}",
                 'Monitor: Shop "Prod" <EU> & café 🚀'):
        assert text in plain, text
    assert "Response time: " in plain and " ms" in plain
    assert "Shop &quot;Prod&quot; &lt;EU&gt; &amp; café 🚀<br>second line" in html
    assert "<EU>" not in html
    assert f'<a href="{link}">' in html

    # Still failing: no repeat within the cooldown. Then one recovery.
    run_checks(cluster, team, mid, targets, "FFS")
    rows = wait_delivered(cluster, mid, 2)
    assert [r["kind"] for r in rows] == ["failure", "recovery"]
    wait_for(lambda: len(smtp.mailbox.messages) >= already + 2, 5, what="the recovery email")
    recovery = smtp.mailbox.messages[already + 1]
    assert recovery["Subject"].endswith("has recovered")
    assert "Failed checks before recovery: 5" in recovery.get_body(("plain",)).get_content()
    # A new blip after recovery alerts nobody.
    run_checks(cluster, team, mid, targets, "F")
    time.sleep(1)
    assert len(outbox(cluster, mid)) == 2
    assert len(smtp.mailbox.messages) == already + 2


def test_blip_sends_nothing(cluster, team, targets, smtp, alerting):
    mid = alerting_monitor(cluster, team, targets, alert_recipients=["oncall@example.com"])
    run_checks(cluster, team, mid, targets, "FSFFSF")
    time.sleep(1)
    assert outbox(cluster, mid) == []


def test_slack_incoming_webhook_and_channel(cluster, team, targets, receivers, alerting):
    hook = alerting_monitor(cluster, team, targets, slack_webhook_url=receivers.url("/slack-hook"))
    receivers.script("/api/chat.postMessage", (200, '{"ok":true,"ts":"1.2"}', {"Content-Type": "application/json"}))
    channel = alerting_monitor(cluster, team, targets, name="channel monitor", slack_channel="#ops-alerts")
    run_checks(cluster, team, hook, targets, "FFF")
    run_checks(cluster, team, channel, targets, "FFF")
    wait_delivered(cluster, hook, 1)
    wait_delivered(cluster, channel, 1)

    (_, headers, body, _), = receivers.requests("/slack-hook")
    text = json.loads(body)["text"]
    assert text.startswith('*🔴 Shop "Prod" &lt;EU&gt; &amp; café 🚀 second line is failing*')
    assert "*Consecutive failures:* 3" in text
    assert "<EU>" not in text
    (_, headers, body, _), = receivers.requests("/api/chat.postMessage")
    assert headers["authorization"] == f"Bearer {SLACK_TOKEN}"
    posted = json.loads(body)
    assert posted["channel"] == "#ops-alerts"
    assert "channel monitor is failing" in posted["text"]


def test_slack_refusal_is_permanent(cluster, team, targets, receivers, alerting):
    receivers.script("/api/chat.postMessage", (200, '{"ok":false,"error":"channel_not_found"}', {}))
    mid = alerting_monitor(cluster, team, targets, slack_channel="#gone")
    run_checks(cluster, team, mid, targets, "FFF")
    row = wait_for(lambda: [r for r in outbox(cluster, mid) if r["state"] == "dead"], 10, what="a dead row")[0]
    assert row["attempts"] == 1
    assert "ok" in row["last_error"]
    assert SLACK_TOKEN not in row["last_error"]


def test_signed_webhook(cluster, team, targets, receivers, alerting):
    mid = alerting_monitor(cluster, team, targets, webhook_url=receivers.url("/hook-signed"))
    run_checks(cluster, team, mid, targets, "FFF")
    row = wait_delivered(cluster, mid, 1)[0]
    (_, headers, body, _), = receivers.requests("/hook-signed")
    timestamp = headers["x-synthetic-monitoring-timestamp"]
    expected = hmac.new(SIGNING_SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["x-synthetic-monitoring-signature"] == f"v1={expected}"
    assert abs(int(timestamp) - time.time()) < 30
    assert headers["idempotency-key"] == row["idempotency_key"]
    payload = json.loads(body)
    assert payload["kind"] == "failure"
    assert payload["idempotency_key"] == row["idempotency_key"]
    assert payload["alert"]["monitor_id"] == mid
    assert payload["alert"]["consecutive_failures"] == 3
    assert payload["link"] == f"{SITE_URL}/project/{team}/synthetic-monitoring/{mid}"


@pytest.mark.parametrize(
    "path, first_answer",
    [
        ("/hook-500-once", (500, "oops", {})),
        ("/hook-slow-once", ("sleep", 3.0, {})),
        ("/hook-429", (429, "slow down", {"Retry-After": "2"})),
    ],
)
def test_flaky_receivers_get_one_logical_notification(cluster, team, targets, receivers, alerting, path, first_answer):
    receivers.script(path, first_answer, (200, "ok", {}))
    mid = alerting_monitor(cluster, team, targets, webhook_url=receivers.url(path))
    run_checks(cluster, team, mid, targets, "FFF")
    row = wait_delivered(cluster, mid, 1, timeout=20)[0]
    assert row["attempts"] == 2
    requests = receivers.requests(path)
    assert len(requests) == 2
    assert {r[1]["idempotency-key"] for r in requests} == {row["idempotency_key"]}
    if path == "/hook-429":
        assert requests[1][3] - requests[0][3] >= 1.9, "Retry-After is honoured"


def test_smtp_down_then_up_loses_nothing(cluster, team, targets, smtp, alerting):
    smtp.stop()
    try:
        ids = [alerting_monitor(cluster, team, targets, name=f"down-{i}", alert_recipients=[f"ops{i}@example.com"])
               for i in range(3)]
        for mid in ids:
            run_checks(cluster, team, mid, targets, "FFF")
        wait_for(lambda: all(r["attempts"] >= 2 and r["state"] == "pending" and r["last_error"]
                             for mid in ids for r in outbox(cluster, mid)), 15, 0.1, "failed attempts")
        errors = [r["last_error"] for mid in ids for r in outbox(cluster, mid)]
        assert all("127.0.0.1" in e for e in errors), errors
    finally:
        already = len(smtp.mailbox.messages)
        smtp.start()
    for mid in ids:
        wait_delivered(cluster, mid, 1, timeout=30)
    wait_for(lambda: len(smtp.mailbox.messages) >= already + 3, 5, what="three emails")
    recipients = sorted(m["To"] for m in smtp.mailbox.messages[already:])
    assert recipients == ["ops0@example.com", "ops1@example.com", "ops2@example.com"]


def test_dead_after_the_last_attempt_then_retried(cluster, team, targets, receivers, alerting):
    cluster.set("synthetic_monitoring.alert_max_attempts", "2")
    try:
        receivers.script("/hook-down", (503, "down", {}))
        mid = alerting_monitor(cluster, team, targets, webhook_url=receivers.url("/hook-down"))
        run_checks(cluster, team, mid, targets, "FFF")
        row = wait_for(lambda: [r for r in outbox(cluster, mid) if r["state"] == "dead"], 15, what="a dead row")[0]
        assert row["attempts"] == 2
        assert "503" in row["last_error"]
        listed = cluster.one("SELECT count(*) FROM synthetic_monitoring.alert_outbox(%s, %s, 'dead')", (team, mid))
        assert listed == 1
    finally:
        cluster.reset("synthetic_monitoring.alert_max_attempts")
    receivers.script("/hook-down", (200, "ok", {}))
    cluster.rows("SELECT synthetic_monitoring.retry_alert(%s, %s)", (team, row["id"]))
    delivered = wait_delivered(cluster, mid, 1)[0]
    assert delivered["idempotency_key"] == row["idempotency_key"]


def test_worker_killed_between_claim_and_mark_redelivers_with_the_same_key(cluster, team, targets, receivers, alerting):
    receivers.server.release.clear()
    receivers.script("/hook-hang", ("hang", None, {}), (200, "ok", {}))
    mid = alerting_monitor(cluster, team, targets, webhook_url=receivers.url("/hook-hang"))
    run_checks(cluster, team, mid, targets, "FFF")
    wait_for(lambda: receivers.requests("/hook-hang") and outbox(cluster, mid)[0]["state"] == "delivering", 10,
             what="a delivery in progress")
    old_pid = cluster.worker()[0]
    cluster.rows("SELECT pg_terminate_backend(%s)", (old_pid,))
    receivers.server.release.set()
    row = wait_delivered(cluster, mid, 1, timeout=20)[0]
    requests = receivers.requests("/hook-hang")
    assert len(requests) == 2
    assert {r[1]["idempotency-key"] for r in requests} == {row["idempotency_key"]}
    assert "1 interrupted alert deliveries requeued" in cluster.log()


def test_smtp_password_never_stored_or_logged(cluster, team, targets, smtp, alerting):
    mid = alerting_monitor(cluster, team, targets, alert_recipients=["audit@example.com"])
    run_checks(cluster, team, mid, targets, "FFF")
    wait_delivered(cluster, mid, 1)
    everything = cluster.one(
        "SELECT concat_ws(' ', (SELECT string_agg(to_jsonb(o)::text, ' ') FROM synthetic_monitoring.outbox o),"
        " (SELECT string_agg(to_jsonb(e)::text, ' ') FROM synthetic_monitoring.events e),"
        " (SELECT string_agg(to_jsonb(c)::text, ' ') FROM synthetic_monitoring.checks c))"
    )
    for secret in (SMTP_PASSWORD, SLACK_TOKEN, SIGNING_SECRET):
        assert secret not in everything
        assert secret not in cluster.log()
