#!/usr/bin/env bash
# The end-to-end demo on embedded defaults: no servers. A SQLite registry, a local
# Delta Lake directory and an embedded SQLite online store, all inside ./demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$PWD/.venv/numba-cache}"
rm -rf demo
featurestore init demo
cd demo
featurestore plan
featurestore apply
