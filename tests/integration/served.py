"""A quickstart repo served by a real ``python -m featurestore.server`` process.

Shared by the hostile-input suite and the schemathesis run: the repo is scaffolded
as ``featurestore init`` does, applied, backfilled and materialized into the
embedded online store, then served on a free loopback port with short timeouts.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from featurestore.api.store import FeatureStore
from tests.fixtures.services import free_port
from tests.helpers import quickstart

# short server timeouts, so that the slow-client tests take seconds, not minutes
TIMEOUT_ENV = {
    "FEATURESTORE_BODY_TIMEOUT_SECONDS": "1",
    "FEATURESTORE_HEADER_TIMEOUT_SECONDS": "1",
    "FEATURESTORE_KEEP_ALIVE_SECONDS": "2",
}


def served_repo(root: Path) -> Path:
    repo = quickstart(root)
    data = repo / "data" / "driver_stats.parquet"
    frame = pl.read_parquet(data)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    shift = now - frame["event_timestamp"].max()
    frame.with_columns(pl.col("event_timestamp") + shift, pl.col("created") + shift).write_parquet(
        data
    )
    store = FeatureStore(repo)
    try:
        store.apply()
        store.backfill()
        store.materialize(end=now)
    finally:
        store.close()
    return repo


@contextmanager
def running_server(repo: Path, log: Path) -> Iterator[int]:
    """The port of a server process for ``repo``; stopped (SIGTERM) on exit."""
    port = free_port()
    argv = [sys.executable, "-m", "featurestore.server", "--repo", str(repo), "--port", str(port)]
    with running_process(argv, log, port=port, ready="/health", env=TIMEOUT_ENV):
        yield port


@contextmanager
def running_process(
    argv: list[str], log: Path, *, port: int, ready: str, env: dict[str, str] | None = None
) -> Iterator[None]:
    """Run ``argv`` (stderr to ``log``) until ``GET ready`` on ``port`` answers 200;
    stop it (SIGTERM, then SIGKILL) on exit."""
    proc = subprocess.Popen(
        argv,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"{argv[-5:]} exited: {log.read_text()[-3000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", ready)
                if conn.getresponse().status == 200:
                    conn.close()
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{argv[-5:]} did not come up: {log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
