#!/usr/bin/env bash
# The main job: a private PostgreSQL 15 with synthetic_monitoring preloaded,
# monitoring local nginx targets (a healthy page, a failing endpoint, a slow
# endpoint) and any URLs given, streaming one line per check until Ctrl-C.
#
#   scripts/run.sh [URL ...]
#
# Environment: SM_RUN_DIR (default /tmp/synthetic_monitoring-run), SM_PORT
# (PostgreSQL, default 55432), SM_TARGET_PORT (nginx, default 18080),
# SM_RUN_SECONDS (stop by itself after that many seconds; default: until Ctrl-C),
# SM_KEEP_DATA=1 (reuse the previous run's cluster instead of starting fresh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUN_DIR=${SM_RUN_DIR:-/tmp/synthetic_monitoring-run}
PORT=${SM_PORT:-55432}
TARGET_PORT=${SM_TARGET_PORT:-18080}
PGDATA_DIR=$RUN_DIR/pgdata
NGINX_DIR=$RUN_DIR/nginx

for url in "$@"; do
    case "$url" in
        http://*|https://*) ;;
        *) echo "run: '$url' is not an http:// or https:// URL" >&2; exit 2 ;;
    esac
done

scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
mkdir -p "$RUN_DIR"
echo "run: building and installing the extension (release build; the first one takes a few minutes)"
if ! cargo pgrx install --release --pg-config /usr/lib/postgresql/15/bin/pg_config >"$RUN_DIR/build.log" 2>&1; then
    tail -n 40 "$RUN_DIR/build.log" >&2
    echo "run: the build failed; full log in $RUN_DIR/build.log" >&2
    exit 1
fi

mkdir -p "$NGINX_DIR/logs" "$NGINX_DIR/tmp"
cat > "$NGINX_DIR/nginx.conf" <<NGINX
load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;
daemon on;
worker_processes 1;
pid $NGINX_DIR/nginx.pid;
error_log $NGINX_DIR/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $NGINX_DIR/tmp;
    proxy_temp_path $NGINX_DIR/tmp;
    fastcgi_temp_path $NGINX_DIR/tmp;
    uwsgi_temp_path $NGINX_DIR/tmp;
    scgi_temp_path $NGINX_DIR/tmp;
    server {
        listen 127.0.0.1:$TARGET_PORT;
        default_type text/html;
        location = /        { return 200 "<html><body><h1>Shop</h1>All systems operational</body></html>\n"; }
        location = /broken  { return 500 "Internal Server Error\n"; }
        location = /slow    { echo_sleep 5; echo "finally"; }
    }
}
NGINX

cleanup() {
    trap - INT TERM EXIT
    echo
    echo "run: stopping nginx and PostgreSQL"
    [ -s "$NGINX_DIR/nginx.pid" ] && nginx -c "$NGINX_DIR/nginx.conf" -p "$NGINX_DIR" -s quit 2>/dev/null || true
    "$ROOT/scripts/cluster.sh" stop "$PGDATA_DIR"
}
trap cleanup INT TERM EXIT

nginx -c "$NGINX_DIR/nginx.conf" -p "$NGINX_DIR" -e "$NGINX_DIR/logs/error.log"
if [ -s "$PGDATA_DIR/PG_VERSION" ]; then
    if [ -n "${SM_KEEP_DATA:-}" ]; then
        echo "run: reusing the cluster in $PGDATA_DIR (SM_KEEP_DATA is set)"
    else
        # A fresh cluster each run: the schema always matches the build just installed.
        scripts/cluster.sh stop "$PGDATA_DIR"
        rm -rf "$PGDATA_DIR"
    fi
fi
scripts/cluster.sh start "$PGDATA_DIR" "$PORT" \
    "synthetic_monitoring.allowed_networks = '127.0.0.0/8, ::1/128'"

PSQL=(psql -h "$PGDATA_DIR" -p "$PORT" -U postgres -d postgres -X -q -v ON_ERROR_STOP=1)
"${PSQL[@]}" -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS synthetic_monitoring"
# Stream only what this run checks.
last_id=$("${PSQL[@]}" -At -c "SELECT coalesce(max(id), 0) FROM synthetic_monitoring.checks")

# One monitor per target, created once (a second run reuses them).
add_monitor() { # name url [extra spec json]
    "${PSQL[@]}" -At -v name="$1" -v url="$2" -v extra="${3:-{\}}" <<'SQL' >/dev/null
SELECT synthetic_monitoring.create_monitor(1,
           jsonb_build_object('name', :'name', 'url', :'url', 'frequency_minutes', 1) || :'extra'::jsonb,
           'run.sh')
WHERE NOT EXISTS (SELECT 1 FROM synthetic_monitoring.monitors WHERE team_id = 1 AND name = :'name');
SQL
}
base="http://127.0.0.1:$TARGET_PORT"
add_monitor "Shop home page" "$base/" '{"body_must_contain": "operational"}'
add_monitor "Broken endpoint" "$base/broken"
add_monitor "Slow endpoint" "$base/slow" '{"timeout_ms": 2000}'
for url in "$@"; do add_monitor "$url" "$url"; done

cat <<EOF

synthetic_monitoring is running; its monitors belong to team 1. In another terminal:
    psql -h $PGDATA_DIR -p $PORT -U postgres
    SELECT * FROM synthetic_monitoring.list_monitors(1);
    SELECT * FROM synthetic_monitoring.worker_status();
Streaming check results as they are recorded (finish time, monitor, result; Ctrl-C stops everything):

EOF

started=$SECONDS
while [ -z "${SM_RUN_SECONDS:-}" ] || (( SECONDS - started < SM_RUN_SECONDS )); do
    while IFS='|' read -r id line; do
        [ -n "$id" ] || continue
        last_id=$id
        echo "$line"
    done < <("${PSQL[@]}" -At -F'|' -v last="$last_id" <<'SQL'
SELECT c.id,
       to_char(c.finished_at, 'HH24:MI:SS') || '  ' ||
       rpad(left(m.name || CASE WHEN m.team_id <> 1 THEN ' [team ' || m.team_id || ']' ELSE '' END, 36), 36) || '  ' ||
       CASE WHEN c.success THEN 'UP  ' ELSE 'DOWN' END || '  ' ||
       lpad(coalesce(c.status_code::text, '-'), 3) || '  ' ||
       lpad(to_char(c.total_ms, 'FM99990.0'), 8) || ' ms  ' ||
       c.trigger ||
       coalesce('  ' || c.error_class || ': ' || c.error_message, '')
FROM synthetic_monitoring.checks c JOIN synthetic_monitoring.monitors m ON m.id = c.monitor_id
WHERE c.id > :last
ORDER BY c.id;
SQL
)
    sleep 1
done
