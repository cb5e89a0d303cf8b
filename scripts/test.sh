#!/usr/bin/env bash
# Runs every test tier:
#   1. unit tests and #[pg_test] SQL tests (cargo pgrx test, a throw-away cluster)
#   2. integration tests: a private cluster with the worker preloaded, checking
#      real local servers (pytest, tests/)
#   3. the benchmark harness once at a small size, to prove it works
# Installs what is missing first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests
export PATH="$HOME/.cargo/bin:$PATH"
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config

echo "== unit and SQL tests"
pgtest_data=$(mktemp -d /tmp/synthetic_monitoring-pgtest.XXXXXX)
trap 'rm -rf "$pgtest_data"' EXIT
rmdir "$pgtest_data"
cargo pgrx test pg15 --runas postgres --pgdata "$pgtest_data"

echo "== integration tests"
cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null
.venv/bin/pytest -q tests/

if [ -x bench/run.sh ]; then
    echo "== benchmark harness (quick)"
    BENCH_QUICK=1 BENCH_SKIP_INSTALL=1 bench/run.sh
fi
