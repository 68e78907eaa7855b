#!/usr/bin/env bash
# Set up .venv and run the whole test suite. PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) are started
# if they are installed but stopped; in CI (CI=true) their absence is an error instead of a skip.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh

if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
        echo "test: starting PostgreSQL"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
        for _ in $(seq 20); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
    fi
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && command -v redis-server >/dev/null 2>&1; then
    echo "test: starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
fi
bash scripts/browser.sh  # Debian chromium for the UI tests (installed with apt-get when missing)
if [ "${CI:-}" = "true" ]; then
    export TWINS_REQUIRE_SERVICES=1  # tests fail instead of skipping when PostgreSQL or Redis is missing
fi
# pytest-randomly shuffles the order every run (tests must not depend on each other); CI takes one fixed shuffled
# order (TWINS_TEST_SEED) so that a red run is reproduced by the same command. -p no:randomly: file order.
seed=()
if [ "${CI:-}" = "true" ]; then
    seed=(--randomly-seed="${TWINS_TEST_SEED:-20261129}")
fi
exec .venv/bin/python -m pytest --durations=15 "${seed[@]}" "$@"
