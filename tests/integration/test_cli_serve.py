"""The issue-4 acceptance path, exactly as a user types it, over a real socket:
init -> apply -> backfill -> materialize -> serve -> POST."""

import http.client
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl

from tests.fixtures.services import free_port, wait_for_port

FS = [sys.executable, "-m", "featurestore"]


def _run(args: list[str], cwd: Path) -> None:
    proc = subprocess.run([*FS, *args], cwd=cwd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{args}: {proc.stdout}\n{proc.stderr}"


def _post(port: int, body: dict) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(
        "POST", "/v1/features/online", json.dumps(body), {"Content-Type": "application/json"}
    )
    resp = conn.getresponse()
    data = json.loads(resp.read())
    conn.close()
    return resp.status, data


def test_init_apply_materialize_serve_curl(tmp_path):
    _run(["init", "demo"], tmp_path)
    demo = tmp_path / "demo"
    for args in (["apply"], ["backfill"], ["materialize"]):
        _run(args, demo)
    port = free_port()
    server = subprocess.Popen(
        [*FS, "serve", "--port", str(port)],
        cwd=demo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    try:
        assert wait_for_port(port, timeout=60), server.stderr.read() if server.stderr else ""
        drivers = [1001, 1007, 1020, 77]
        status, body = _post(
            port, {"entities": {"driver_id": drivers}, "feature_service": "driver_ranking"}
        )
        assert status == 200, body
        src = pl.read_parquet(demo / "data" / "driver_stats.parquet")
        latest = (
            src.sort(["event_timestamp", "created"])
            .group_by("driver_id")
            .last()
            .with_columns(acceptance_gap=pl.col("conv_rate") - pl.col("acc_rate"))
        )
        by_id = {r["driver_id"]: r for r in latest.iter_rows(named=True)}
        for feature in ("conv_rate", "acc_rate", "avg_daily_trips", "acceptance_gap"):
            expected = [by_id[d][feature] if d in by_id else None for d in drivers]
            assert body["features"][feature]["values"] == expected, feature
        assert body["features"]["conv_rate"]["statuses"] == ["PRESENT"] * 3 + ["MISSING"]
        status, body = _post(
            port, {"entities": {"driver_id": [1001]}, "features": ["driver_hourly_stats:nope"]}
        )
        assert status == 404 and "nope" in json.dumps(body)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert server.returncode is not None  # it stopped on SIGTERM
