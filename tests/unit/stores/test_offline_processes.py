"""Real processes against one Delta table: a writer killed mid-write, concurrent writers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

from featurestore.stores.offline import DeltaOfflineStore
from tests.unit.stores.test_offline_delta import data_files, rows, sort_view, spec_of

SPEC_CODE = """
import sys, time
import polars as pl
from featurestore.stores.offline import DeltaOfflineStore, OfflineTableSpec

spec = OfflineTableSpec(name="driver_stats", join_keys=("driver_id",), key_dtypes=("int64",),
                        features=("trips", "rating"), feature_dtypes=("int64", "float64"))
store = DeltaOfflineStore(sys.argv[1])
T0 = 1_709_251_200_000_000  # 2024-03-01 UTC


def batch(n, *, days, offset):
    i = pl.int_range(n, eager=True)
    ev = (T0 + i * (days * 86_400_000_000 // n)).cast(pl.Datetime("us", "UTC"))
    return pl.DataFrame({"driver_id": i % 50_000 + offset, "event_ts": ev, "created_ts": ev,
                         "trips": i, "rating": i.cast(pl.Float64) / 3})
"""


def run_script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(SPEC_CODE + textwrap.dedent(body))
    return path


def test_killed_writer_leaves_the_previous_version_readable(tmp_path: Path) -> None:
    root = tmp_path / "offline"
    store = DeltaOfflineStore(str(root))
    spec = spec_of()
    store.write_view(spec, rows(500, days=3), mode="append")
    before = sort_view(store.read_view(spec).collect(), spec)
    table_dir = root / spec.name
    initial_files = set(data_files(table_dir))
    log_before = sorted(p.name for p in (table_dir / "_delta_log").iterdir())

    script = run_script(
        tmp_path,
        "big_write",
        """
        frame = batch(3_000_000, days=300, offset=0)
        print("ready", flush=True)
        store.write_view(spec, frame, mode="append")
        print("committed", flush=True)
        """,
    )
    proc = subprocess.Popen(
        [sys.executable, str(script), str(root)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 60
    # Kill as soon as the writer has put its first data file down: the commit comes last.
    while time.monotonic() < deadline and proc.poll() is None:
        new = [p for p in table_dir.rglob("*.parquet*") if p not in initial_files]
        if new:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.001)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the writer finished before it could be killed"

    orphans = [p for p in table_dir.rglob("*.parquet*") if p not in initial_files]
    assert orphans, "the kill should have interrupted a write in progress"
    assert sorted(p.name for p in (table_dir / "_delta_log").iterdir()) == log_before
    assert store.version(spec.name) == 1  # the empty create, then the first rows
    assert_frame_equal(sort_view(store.read_view(spec).collect(), spec), before)

    # The orphans are invisible to readers and vacuum removes them; writing goes on.
    removed = store.vacuum(spec.name, retention_hours=0)
    assert len(removed) == len([p for p in orphans if p.suffix == ".parquet"])
    assert set(data_files(table_dir)) == initial_files
    vacuumed = store.version(spec.name)  # vacuum logs its start and end as commits
    report = store.write_view(spec, rows(10, seed=1), mode="append")
    assert report.version == vacuumed + 1
    assert store.read_view(spec).collect().height == before.height + 10


def test_two_processes_appending_concurrently_both_land(tmp_path: Path) -> None:
    root = tmp_path / "offline"
    store = DeltaOfflineStore(str(root))
    spec = spec_of()
    store.write_view(spec, rows(10, days=1), mode="append")
    go = tmp_path / "go"
    script = run_script(
        tmp_path,
        "appender",
        f"""
        offset = int(sys.argv[2])
        frames = [batch(2_000, days=2, offset=offset + k * 100_000) for k in range(8)]
        print("ready", flush=True)
        while not __import__("os").path.exists({str(go)!r}):
            time.sleep(0.001)
        for f in frames:
            r = store.write_view(spec, f, mode="append")
            assert r.rows_written == 2_000, r
        print("done", flush=True)
        """,
    )
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(root), str(offset)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for offset in (1_000_000, 2_000_000)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    go.touch()  # both start committing at the same moment
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert out.strip() == "done"

    assert store.version(spec.name) == 17  # the empty create, the first rows, 2 x 8 appends
    table = store.read_view(spec).collect()
    assert table.height == 10 + 2 * 8 * 2_000
    per_writer = table.group_by(pl.col("driver_id") // 1_000_000).len().sort("driver_id")
    assert per_writer["len"].to_list() == [10, 16_000, 16_000]
    ops = [h["operation"] for h in store.history(spec.name)]
    assert ops.count("WRITE") == 17
