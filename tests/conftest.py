"""Fixtures for the integration tests: a private PostgreSQL cluster with the
worker preloaded (started once per session), and the local target servers."""

import itertools
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time

import psycopg
import pytest

from targets import Targets

ROOT = pathlib.Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "scripts" / "cluster.sh"


def wait_for(predicate, timeout, interval=0.05, what="condition"):
    """Polls until predicate() returns something truthy; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, datadir, port):
        self.datadir = datadir
        self.port = port
        self._conn = None

    def start(self, *settings):
        subprocess.run([str(CLUSTER), "start", self.datadir, str(self.port), *settings], check=True)

    def stop(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        subprocess.run([str(CLUSTER), "stop", self.datadir], check=True)

    def connect(self):
        return psycopg.connect(host=self.datadir, port=self.port, user="postgres", dbname="postgres", autocommit=True)

    @property
    def conn(self):
        if self._conn is None or self._conn.closed:
            self._conn = self.connect()
        return self._conn

    def rows(self, query, params=None):
        with self.conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []

    def one(self, query, params=None):
        rows = self.rows(query, params)
        return rows[0][0] if rows else None

    def log(self):
        return pathlib.Path(self.datadir, "server.log").read_text(errors="replace")

    def set(self, name, value):
        """Changes a setting server-wide (ALTER SYSTEM + reload) and waits until
        this session sees it; the worker gets the same SIGHUP."""
        self.rows(f"ALTER SYSTEM SET {name} = '{value}'")
        self._reload_and_wait(name, value)

    def reset(self, name):
        self.rows(f"ALTER SYSTEM RESET {name}")
        default = self.one("SELECT boot_val FROM pg_settings WHERE name = %s", (name,))
        self._reload_and_wait(name, default or "")  # hidden settings (secrets) default to empty

    def _reload_and_wait(self, name, value):
        self.rows("SELECT pg_reload_conf()")
        # pg_settings gives the value without its unit; hidden settings only show in current_setting.
        current = "SELECT coalesce((SELECT setting FROM pg_settings WHERE name = %s), current_setting(%s))"
        wait_for(lambda: self.one(current, (name, name)) == value, 5, 0.02, f"{name} = {value}")
        time.sleep(0.2)  # the worker reloads on the same signal

    def worker(self):
        """(pid, running) of the worker as worker_status() reports it."""
        return self.rows("SELECT pid, running FROM synthetic_monitoring.worker_status()")[0]

    def wait_worker_running(self, timeout=15):
        return wait_for(
            lambda: (lambda w: w[0] if w[1] else None)(self.worker()), timeout, 0.1, "the worker to run"
        )


@pytest.fixture(scope="session")
def cluster():
    datadir = tempfile.mkdtemp(prefix="sm-it-", dir="/tmp")
    shutil.chown(datadir, "postgres", "postgres") if os.geteuid() == 0 else None
    port = int(os.environ.get("SM_TEST_PORT") or free_port())
    c = Cluster(datadir, port)
    c.start(
        "synthetic_monitoring.allowed_networks = '127.0.0.0/8, ::1/128'",
        "log_min_messages = log",
    )
    try:
        # The worker starts before the extension exists and must wait politely.
        time.sleep(1.5)
        c.rows("CREATE EXTENSION synthetic_monitoring")
        c.wait_worker_running()
        yield c
    finally:
        c.stop()
        # Kept for a look after a failed run.
        shutil.copy(pathlib.Path(datadir, "server.log"), "/tmp/synthetic_monitoring-it-server.log")
        shutil.rmtree(datadir, ignore_errors=True)


_teams = itertools.count(1000)


@pytest.fixture
def team(cluster):
    """A team id of its own for each test; its monitors are deleted afterwards."""
    team_id = next(_teams)
    yield team_id
    cluster.rows("DELETE FROM synthetic_monitoring.monitors WHERE team_id = %s", (team_id,))


@pytest.fixture(scope="session")
def targets():
    t = Targets()
    yield t
    t.close()
