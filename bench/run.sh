#!/usr/bin/env bash
# Benchmark of the synthetic_monitoring worker against a local nginx.
#
#   bench/run.sh                 full size (see bench/README.md for the knobs)
#   BENCH_QUICK=1 bench/run.sh   tiny sizes, for CI (a few minutes)
#
# Starts a private nginx and a private PostgreSQL cluster, measures
#   1. the HTTP ceiling (wrk, a fresh connection per request),
#   2. the drain rate of N monitors that are all due at once,
#   3. steady-state lateness and bunching of M one-minute monitors,
#   4. the cost per check (worker CPU and peak RSS, WAL and table bytes),
# prints a table and writes bench/results/latest.{md,json}.
# Everything started here is stopped on exit. Exit code 1 when a phase fails
# (stalled worker, incomplete drain, wrong row counts, unhealthy monitors).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PYTHON=${BENCH_PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3

export BENCH_PG_PORT=${BENCH_PG_PORT:-55531}
export BENCH_HTTP_PORT=${BENCH_HTTP_PORT:-55532}
NGINX_WORKERS=${BENCH_NGINX_WORKERS:-1}
# Hard limit for the measuring script; it has its own per-phase timeouts too.
if [ "${BENCH_QUICK:-0}" = 1 ]; then DEFAULT_TIMEOUT=600; else DEFAULT_TIMEOUT=3600; fi
TOTAL_TIMEOUT=${BENCH_TIMEOUT:-$DEFAULT_TIMEOUT}

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- tools ------------------------------------------------------------------
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v ab >/dev/null || missing+=(apache2-utils)
command -v mpstat >/dev/null || missing+=(sysstat)
command -v nginx >/dev/null || missing+=(nginx-light)
if [ "${BENCH_PERF:-0}" = 1 ] && ! command -v perf >/dev/null; then missing+=(linux-perf); fi
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
fi

# --- extension ----------------------------------------------------------------
if [ "${BENCH_SKIP_INSTALL:-0}" != 1 ]; then
    log "installing the extension (release build)"
    (cd "$ROOT" && cargo pgrx install --release --pg-config "$PG_CONFIG") >&2
fi

# Replacing the library while the cluster has it mapped crashes backends
# (SIGBUS); wait for a concurrent install to finish, and detect one later.
LIB="$("$PG_CONFIG" --pkglibdir)/synthetic_monitoring.so"
for _ in $(seq 180); do
    pgrep -f 'cargo-pgrx pgrx install' >/dev/null || break
    log "waiting for a running cargo pgrx install to finish"
    sleep 5
done
lib_stamp() { stat -c '%Y.%Z %s' "$LIB" 2>/dev/null || echo missing; }

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

WORK=$(mktemp -d /tmp/sm-bench-XXXXXX)
chmod 755 "$WORK"
export BENCH_PGDATA=$WORK/pg
NGINX_DIR=$WORK/nginx
export BENCH_WORK=$WORK

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [ -n "${BENCH_CHILD:-}" ] && kill -0 "$BENCH_CHILD" 2>/dev/null; then
        kill "$BENCH_CHILD" 2>/dev/null
        wait "$BENCH_CHILD" 2>/dev/null
    fi
    if [ -s "$NGINX_DIR/nginx.pid" ]; then
        kill -QUIT "$(cat "$NGINX_DIR/nginx.pid")" 2>/dev/null
        for _ in $(seq 50); do [ -s "$NGINX_DIR/nginx.pid" ] || break; sleep 0.1; done
    fi
    if [ -s "$BENCH_PGDATA/postmaster.pid" ]; then
        as_postgres "$BIN/pg_ctl" -D "$BENCH_PGDATA" -m fast -w -t 60 stop >/dev/null 2>&1 \
            || as_postgres "$BIN/pg_ctl" -D "$BENCH_PGDATA" -m immediate -w stop >/dev/null 2>&1
    fi
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- private PostgreSQL installation -------------------------------------------
# The cluster runs from a copy of the PostgreSQL 15 installation (binaries,
# libraries with the extension, share files): PostgreSQL finds $libdir and
# the share directory relative to its binary, so a reinstall of the extension
# during the run cannot change or crash the measured build.
SYS_BIN=$("$PG_CONFIG" --bindir)
SYS_LIB=$("$PG_CONFIG" --pkglibdir)
SYS_SHARE=$("$PG_CONFIG" --sharedir)
INST=$WORK/inst
for _ in 1 2 3; do
    LIB_STAMP=$(lib_stamp)
    rm -rf "$INST"
    mkdir -p "$INST$SYS_BIN" "$INST$SYS_LIB" "$INST$SYS_SHARE"
    cp -a "$SYS_BIN/." "$INST$SYS_BIN/"
    cp -a "$SYS_LIB/." "$INST$SYS_LIB/"
    cp -a "$SYS_SHARE/." "$INST$SYS_SHARE/"
    [ "$(lib_stamp)" = "$LIB_STAMP" ] && break
    log "the extension was reinstalled while it was copied; copying again"
    sleep 10
done
chmod -R a+rX "$INST"
BIN=$INST$SYS_BIN
[ "$("$BIN/pg_config" --pkglibdir 2>/dev/null || echo)" = "$INST$SYS_LIB" ] \
    || log "note: the copied pg_config reports $("$BIN/pg_config" --pkglibdir) as pkglibdir"
log "extension build: $(stat -c '%y' "$LIB" | cut -c1-19), $(sha256sum "$INST$SYS_LIB/synthetic_monitoring.so" | cut -c1-12)"
as_postgres() { sudo -u postgres "$@"; }
[ "$(id -u)" = 0 ] || as_postgres() { "$@"; }

# --- nginx ----------------------------------------------------------------------
mkdir -p "$NGINX_DIR/tmp"
cat >"$NGINX_DIR/nginx.conf" <<EOF
worker_processes $NGINX_WORKERS;
worker_rlimit_nofile 65536;
pid $NGINX_DIR/nginx.pid;
error_log $NGINX_DIR/error.log warn;
events {
    worker_connections 16384;
    multi_accept on;
}
http {
    access_log off;
    client_body_temp_path $NGINX_DIR/tmp/body;
    proxy_temp_path $NGINX_DIR/tmp/proxy;
    fastcgi_temp_path $NGINX_DIR/tmp/fastcgi;
    uwsgi_temp_path $NGINX_DIR/tmp/uwsgi;
    scgi_temp_path $NGINX_DIR/tmp/scgi;
    keepalive_timeout 5;
    server {
        listen 127.0.0.1:$BENCH_HTTP_PORT backlog=4096;
        location / {
            default_type text/plain;
            return 200 "ok\n";
        }
    }
}
EOF
log "starting nginx on 127.0.0.1:$BENCH_HTTP_PORT"
nginx -c "$NGINX_DIR/nginx.conf" -p "$NGINX_DIR" -g 'daemon on;'
for _ in $(seq 50); do
    curl -fsS -o /dev/null "http://127.0.0.1:$BENCH_HTTP_PORT/" 2>/dev/null && break
    sleep 0.1
done
curl -fsS -o /dev/null "http://127.0.0.1:$BENCH_HTTP_PORT/" || { log "nginx does not answer"; exit 1; }

# --- cluster --------------------------------------------------------------------
log "starting PostgreSQL in $BENCH_PGDATA on port $BENCH_PG_PORT"
extra_conf=(
    "synthetic_monitoring.allowed_networks = '127.0.0.0/8'"
    "synthetic_monitoring.worker_enabled = off"
)
[ -n "${BENCH_MAX_IN_FLIGHT:-}" ] && extra_conf+=("synthetic_monitoring.max_in_flight = $BENCH_MAX_IN_FLIGHT")
[ -n "${BENCH_BATCH_SIZE:-}" ] && extra_conf+=("synthetic_monitoring.batch_size = $BENCH_BATCH_SIZE")
# Further postgresql.conf lines, separated by ';'.
if [ -n "${BENCH_PG_CONF:-}" ]; then
    IFS=';' read -r -a more <<<"$BENCH_PG_CONF"
    extra_conf+=("${more[@]}")
fi
# The private installation's binaries find the copied $libdir next to them.
PG_BIN="$BIN" "$ROOT/scripts/cluster.sh" start "$BENCH_PGDATA" "$BENCH_PG_PORT" "${extra_conf[@]}"

# --- measure --------------------------------------------------------------------
mkdir -p "$BENCH_DIR/results"
# timeout bounds the whole run even if a query hangs.
timeout -s TERM -k 30 "$TOTAL_TIMEOUT" "$PYTHON" "$BENCH_DIR/bench.py" &
BENCH_CHILD=$!
set +e
wait "$BENCH_CHILD"
rc=$?
set -e
BENCH_CHILD=
if [ "$(lib_stamp)" != "$LIB_STAMP" ]; then
    log "note: the installed extension changed during the run; the measured build is the copy taken at start"
fi
if [ "$rc" -ne 0 ]; then
    log "benchmark failed (exit $rc); server log tail:"
    tail -n 20 "$BENCH_PGDATA/server.log" >&2 || true
    exit 1
fi
