#!/bin/sh
# Compile and cache the Numba kernels once, at image build time, so that the first
# training join, materialization or aggregated lookup of a new container does not
# spend seconds in the JIT. Runs the quickstart end to end in a throwaway directory:
# every kernel those commands call lands in $NUMBA_CACHE_DIR (index + object code,
# keyed by the installed source files, so the cache is valid for this image only).
# tests/integration/test_deploy.py runs this script against a fresh cache directory.
set -eu
: "${NUMBA_CACHE_DIR:?set NUMBA_CACHE_DIR to the cache directory to fill}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$NUMBA_CACHE_DIR"
featurestore init "$work/repo" --project warm >/dev/null
cd "$work/repo"
featurestore apply >/dev/null
featurestore backfill >/dev/null
featurestore materialize >/dev/null
featurestore dataset create --entities data/spine.parquet -s driver_ranking \
  --out "$work/train.parquet" >/dev/null
featurestore get -e driver_id=1001 -s driver_ranking >/dev/null
echo "warm-numba: $(find "$NUMBA_CACHE_DIR" -name '*.nbi' | wc -l) kernels cached in $NUMBA_CACHE_DIR"
