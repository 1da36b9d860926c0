"""Issue 3 end to end: backfill -> point-in-time training data -> lineage -> rebuild."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from featurestore import FeatureStore
from featurestore.errors import DataError, RequestError
from tests.helpers import quickstart

TTL = timedelta(days=2)


def _spine(n: int = 400, seed: int = 3) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    start = datetime(2025, 12, 31, tzinfo=UTC)
    return pl.DataFrame(
        {
            "driver_id": rng.integers(1000, 1023, n),  # includes ids with no data
            "event_timestamp": [
                start + timedelta(minutes=int(m)) for m in rng.integers(0, 11 * 24 * 60, n)
            ],
            "label": rng.integers(0, 2, n),
        }
    ).with_columns(pl.col("event_timestamp").dt.cast_time_unit("us"))


def _reference(
    source: pl.DataFrame, spine: pl.DataFrame, *, as_of_known: bool = False
) -> pl.DataFrame:
    """Brute force, straight from SEMANTICS, on the raw source rows."""
    src = source.with_columns(acceptance_gap=pl.col("conv_rate") - pl.col("acc_rate"))
    out = []
    for row in spine.iter_rows(named=True):
        t = row["event_timestamp"]
        cand = src.filter(
            (pl.col("driver_id") == row["driver_id"])
            & (pl.col("event_timestamp") <= t)
            & (pl.col("event_timestamp") > t - TTL)
        )
        if as_of_known:
            cand = cand.filter(pl.col("created") <= t)
        if cand.height:
            best = cand.sort(["event_timestamp", "created"]).row(-1, named=True)
            out.append(
                {k: best[k] for k in ("conv_rate", "acc_rate", "avg_daily_trips", "acceptance_gap")}
            )
        else:
            out.append(
                dict.fromkeys(("conv_rate", "acc_rate", "avg_daily_trips", "acceptance_gap"))
            )
    return pl.concat(
        [
            spine,
            pl.DataFrame(
                out,
                schema={
                    "conv_rate": pl.Float64,
                    "acc_rate": pl.Float64,
                    "avg_daily_trips": pl.Int64,
                    "acceptance_gap": pl.Float64,
                },
            ),
        ],
        how="horizontal",
    )


@pytest.fixture
def repo(tmp_path):
    root = quickstart(tmp_path / "repo")
    store = FeatureStore(root)
    store.apply()
    (report,) = store.backfill(["driver_hourly_stats"])
    assert report.rows_written == pl.read_parquet(root / "data/driver_stats.parquet").height
    yield root
    store.close()


@pytest.mark.parametrize("as_of_known", [False, True])
def test_training_dataset_matches_brute_force(repo, as_of_known):
    store = FeatureStore(repo)
    spine = _spine()
    source = pl.read_parquet(repo / "data/driver_stats.parquet")
    ds = store.get_training_dataset(
        spine, feature_service="driver_ranking", as_of_known_time=as_of_known
    )
    expected = _reference(source, spine, as_of_known=as_of_known)
    assert ds.frame.equals(expected)
    assert ds.frame["conv_rate"].null_count() < spine.height  # not trivially empty
    assert ds.to_pandas().shape == (spine.height, 7)
    assert ds.to_arrow().num_rows == spine.height


def test_backfill_is_idempotent(repo):
    store = FeatureStore(repo)
    before = store.offline.version("driver_hourly_stats")
    (again,) = store.backfill(["driver_hourly_stats"])
    assert (again.rows_written, again.rows_updated) == (0, 0)
    table = store.offline.read_table("driver_hourly_stats").collect()
    assert table.height == pl.read_parquet(repo / "data/driver_stats.parquet").height
    assert store.offline.version("driver_hourly_stats") >= before


def test_naive_spine_and_missing_keys_are_clear_errors(repo):
    store = FeatureStore(repo)
    naive = _spine().with_columns(pl.col("event_timestamp").dt.replace_time_zone(None))
    with pytest.raises(DataError, match="naive"):
        store.get_training_dataset(naive, feature_service="driver_ranking")
    with pytest.raises(RequestError, match="join keys"):
        store.get_training_dataset(_spine().drop("driver_id"), feature_service="driver_ranking")


def test_rebuild_is_identical_after_appends_and_definition_change(repo):
    store = FeatureStore(repo)
    spine = _spine()
    ds = store.get_training_dataset(spine, feature_service="driver_ranking")
    lineage = store.save_dataset(ds, "ranking_v1", entity_df=spine)
    # 0: the table created empty, 1: the first merge, 2: its sorted rewrite
    assert lineage.table_versions == {"driver_hourly_stats": 2}

    # New data arrives (a late correction of an old hour, and new hours) ...
    path = repo / "data/driver_stats.parquet"
    source = pl.read_parquet(path)
    correction = source.head(50).with_columns(
        pl.col("conv_rate") + 1.0, pl.col("created") + pl.duration(hours=1)
    )
    later = source.tail(50).with_columns(
        pl.col("event_timestamp") + pl.duration(days=3), pl.col("created") + pl.duration(days=3)
    )
    pl.concat([source, correction, later]).write_parquet(path)
    store.backfill()
    # ... and the definition changes (a different transform).
    features = repo / "features.py"
    features.write_text(
        features.read_text().replace(
            'pl.col("conv_rate") - pl.col("acc_rate")', 'pl.col("conv_rate") + pl.col("acc_rate")'
        )
    )
    applied = store.apply()
    assert applied.version == 2

    fresh = FeatureStore(repo)
    now = fresh.get_training_dataset(spine, feature_service="driver_ranking")
    assert now.lineage.content_hash != lineage.content_hash  # the change is visible today
    rebuilt, saved = fresh.rebuild_dataset("ranking_v1")
    assert saved.content_hash == lineage.content_hash
    assert rebuilt.lineage.content_hash == lineage.content_hash
    assert rebuilt.frame.equals(ds.frame)


def _fs(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "featurestore", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_dataset_create_and_rebuild(repo, tmp_path):
    spine_path = tmp_path / "spine.parquet"
    _spine().write_parquet(spine_path)
    out = tmp_path / "train.parquet"
    proc = _fs(
        "dataset",
        "create",
        "--entities",
        str(spine_path),
        "--service",
        "driver_ranking",
        "--out",
        str(out),
        "--save",
        "cli_ds",
        cwd=repo,
    )
    assert proc.returncode == 0, proc.stderr
    assert "rows/s" in proc.stdout and "saved as dataset cli_ds" in proc.stdout
    assert pl.read_parquet(out).height == 400
    proc = _fs("dataset", "rebuild", "cli_ds", "--json", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["identical"] is True


def test_killed_backfill_leaves_previous_version_readable(repo):
    store = FeatureStore(repo)
    before = (
        store.offline.read_table("driver_hourly_stats").collect().sort(["driver_id", "event_ts"])
    )
    version = store.offline.version("driver_hourly_stats")
    table_dir = Path(store.offline.table_uri("driver_hourly_stats"))
    files_before = {p for p in table_dir.rglob("*.parquet")}
    # A much bigger source, so that the backfill writes for a while.
    path = repo / "data/driver_stats.parquet"
    source = pl.read_parquet(path)
    big = pl.concat(
        [
            source.with_columns(pl.col("driver_id") + 100 * i, pl.col("conv_rate") + i)
            for i in range(300)
        ]
    )
    big.write_parquet(path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "featurestore", "backfill"],
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ},
    )
    # Kill it the moment it starts writing data files: mid-commit.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if set(table_dir.rglob("*.parquet")) - files_before:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "backfill finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    fresh = FeatureStore(repo)
    current = fresh.offline.version("driver_hourly_stats")
    assert current is not None and current >= version
    pinned = fresh.offline.read_table("driver_hourly_stats", version=version).collect()
    assert pinned.sort(["driver_id", "event_ts"]).equals(before)
    # Whatever version the table is at, it reads, and holds only whole commits.
    latest = fresh.offline.read_table("driver_hourly_stats").collect()
    assert before.height <= latest.height <= big.height
