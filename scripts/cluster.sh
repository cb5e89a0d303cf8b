#!/usr/bin/env bash
# A private PostgreSQL 15 cluster with synthetic_monitoring preloaded, run as the
# postgres OS user (initdb refuses root).
#   scripts/cluster.sh start DATADIR PORT [extra postgresql.conf lines...]
#   scripts/cluster.sh stop  DATADIR
# PG_BIN overrides the server binaries (default: Debian's PostgreSQL 15).
set -euo pipefail
BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
action=${1:?usage: cluster.sh start|stop DATADIR [PORT]}
datadir=${2:?data directory}
as_postgres() { if [ "$(id -u)" = 0 ]; then sudo -u postgres "$@"; else "$@"; fi; }

case "$action" in
start)
    port=${3:?port}
    shift 3
    if [ ! -s "$datadir/PG_VERSION" ]; then
        mkdir -p "$datadir"
        [ "$(id -u)" = 0 ] && chown postgres:postgres "$datadir"
        as_postgres "$BIN/initdb" -D "$datadir" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
        {
            echo "port = $port"
            echo "listen_addresses = '127.0.0.1'"
            echo "unix_socket_directories = '$datadir'"
            echo "shared_preload_libraries = 'synthetic_monitoring'"
            echo "synthetic_monitoring.database = 'postgres'"
            echo "log_line_prefix = '%m [%p] '"
            for line in "$@"; do echo "$line"; done
        } | as_postgres tee -a "$datadir/postgresql.conf" >/dev/null
    fi
    as_postgres "$BIN/pg_ctl" -D "$datadir" -l "$datadir/server.log" -w -t 60 start >/dev/null
    ;;
stop)
    [ -s "$datadir/postmaster.pid" ] && as_postgres "$BIN/pg_ctl" -D "$datadir" -m fast -w stop >/dev/null || true
    ;;
*)
    echo "usage: cluster.sh start|stop DATADIR [PORT]" >&2
    exit 2
    ;;
esac
