#!/usr/bin/env bash
# Installs what building and running the extension needs on Debian 12, once:
# PostgreSQL 15 and its headers, clang for bindgen, nginx for local targets,
# cargo-pgrx 0.18.1; with --tests also a Python virtualenv (.venv) for the
# integration tests. Safe to run again: every step is skipped when done.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(postgresql-15 postgresql-server-dev-15 libclang-dev clang pkg-config sudo nginx-light libnginx-mod-http-echo ca-certificates python3-venv)
missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo pgrx --version 2>/dev/null | grep -q "0.18.1"; then
    echo "setup: installing cargo-pgrx 0.18.1 (takes a few minutes)"
    cargo install cargo-pgrx --version 0.18.1 --locked --quiet
fi
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
if ! grep -qs "pg15" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
    cargo pgrx init --pg15 "$PG_CONFIG" >/dev/null
fi

if [ "${1:-}" = "--tests" ] && [ ! -x .venv/bin/pytest ]; then
    echo "setup: creating .venv for the integration tests"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
fi
