#!/usr/bin/env bash
# The end-to-end demo on embedded defaults: no servers. A SQLite registry, a local
# Delta Lake directory and an embedded SQLite online store, all inside ./demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$PWD/.venv/numba-cache}"
rm -rf demo
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "featurestore init demo: a repo with a week of hourly sample data"
featurestore init demo
cd demo
step "featurestore plan"
featurestore plan
step "featurestore apply"
featurestore apply
step "featurestore backfill: source -> row transforms -> Delta tables"
featurestore backfill
step "featurestore materialize: latest values -> the online store"
featurestore materialize
step "featurestore get: one online lookup, with a request-time feature"
featurestore get --entity driver_id=1001 --service driver_ranking_with_request \
  --request distance_km=12.5
step "featurestore get: windowed aggregations, combined from tiles at request time"
featurestore get --entity driver_id=1001 --service driver_windows_service
step "featurestore dataset create: point-in-time training data with lineage"
python - <<'PY'
from datetime import timedelta
import polars as pl
src = pl.read_parquet("data/driver_stats.parquet")
end = src["event_timestamp"].max()
spine = pl.DataFrame({
    "driver_id": [1001, 1002, 1003, 1004],
    "event_timestamp": [end - timedelta(hours=h) for h in (1, 5, 30, 60)],
    "label": [1, 0, 1, 0],
})
spine.write_parquet("spine.parquet")
PY
featurestore dataset create --entities spine.parquet --service driver_ranking \
  --out training.parquet --save demo_training
python -c 'import polars as pl; print(pl.read_parquet("training.parquet"))'
step "featurestore dataset rebuild: recompute from pinned versions, prove identical"
featurestore dataset rebuild demo_training
