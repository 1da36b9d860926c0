"""The offline store on S3 (issue 17, part 3): a real S3 server (moto, started by
``tests/fixtures/s3.py``), the offline root set in ``featurestore.toml`` only.

The claims: backfill, training, time travel and dataset rebuild give on S3 exactly
what they give on a local directory; compact and vacuum work on S3; two processes
backfilling at once (other views, or one view on adjoining ranges that share a
date partition) lose no commit and store every row once; the feature logger and
push (the stream's sinks) write to the same S3 root.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from featurestore import FeatureStore
from featurestore.scaffold.sample_data import SAMPLE_END, spine
from featurestore.stores.offline.delta import DeltaOfflineStore
from featurestore.stores.view_specs import offline_spec
from tests.fixtures.s3 import REPO_ROOT, S3Server
from tests.helpers import quickstart

PLAIN, AGG = "driver_hourly_stats", "driver_windows"
SOURCE = "data/driver_stats.parquet"


def _repo(path: Path, *, root: str | None = None, options: dict[str, str] | None = None) -> Path:
    """The quickstart repo; with ``root``, its offline store on S3 (config only)."""
    repo = quickstart(path)
    if root is not None:
        pairs = ", ".join(f'{k} = "{v}"' for k, v in (options or {}).items())
        with (repo / "featurestore.toml").open("a") as f:
            f.write(f'\n[offline_store]\nroot = "{root}"\nstorage_options = {{ {pairs} }}\n')
    return repo


def _rows(store: FeatureStore, view: str, **kwargs: object) -> pl.DataFrame:
    frame = store.offline.read_view(offline_spec(store.index().view(view)), **kwargs).collect()
    cols = [c for c in frame.columns if not c.startswith("_")]
    return frame.select(cols).sort(cols)


def _source_rows(repo: Path) -> pl.DataFrame:
    """The source as the plain view stores it (keys, times, features), sorted."""
    src = pl.read_parquet(repo / SOURCE)
    return src.select(
        "driver_id",
        pl.col("event_timestamp").alias("event_ts"),
        pl.col("created").alias("created_ts"),
        "conv_rate",
        "acc_rate",
        "avg_daily_trips",
        acceptance_gap=pl.col("conv_rate") - pl.col("acc_rate"),
    )


@pytest.fixture
def s3_repo(tmp_path: Path, s3_server: S3Server, s3_root: str) -> Path:
    repo = _repo(tmp_path / "s3", root=s3_root, options=s3_server.storage_options())
    FeatureStore(repo).apply()
    return repo


def test_backfill_training_time_travel_and_rebuild_on_s3(tmp_path, s3_server, s3_root, s3_repo):
    local_repo = _repo(tmp_path / "local")
    local, store = FeatureStore(local_repo), FeatureStore(s3_repo)
    local.apply()
    for s in (local, store):
        reports = s.backfill([PLAIN, AGG])
        assert [r.rows_written for r in reports] == [3360, 3360]
    # The tables live in the bucket, not on the local disk.
    prefix = s3_root.removeprefix(f"s3://{s3_server.bucket}/")
    keys = s3_server.keys(prefix)
    for view in (PLAIN, AGG):
        assert f"{prefix}/{view}/_delta_log/00000000000000000000.json" in keys
        assert any(k.startswith(f"{prefix}/{view}/event_date=") for k in keys)
    assert not (s3_repo / ".featurestore" / "offline").exists()
    assert store.offline.root == s3_root

    # Training data: the same frame as from the local directory, plain and aggregated.
    entity_df = spine(end=SAMPLE_END)
    for service in ("driver_ranking", "driver_windows_service"):
        want = local.get_training_dataset(entity_df, feature_service=service).frame
        got = store.get_training_dataset(entity_df, feature_service=service)
        # Floats to 1e-12: a window mean folds rows in the order the scan returns them,
        # which differs between stores (S3 lists files in another order), by one ulp.
        assert_frame_equal(got.frame, want, rel_tol=1e-12, abs_tol=0.0)
        assert got.frame.drop("driver_id", "event_timestamp").null_count().sum_horizontal()[0] == 0
    ds = store.get_training_dataset(entity_df, feature_service="driver_ranking")
    lineage = store.save_dataset(ds, "ranking_v1", entity_df=entity_df)
    before = store.offline.version(PLAIN)
    assert lineage.table_versions == {PLAIN: before}
    old_rows = _rows(store, PLAIN)
    assert old_rows.equals(_source_rows(s3_repo).sort(old_rows.columns))

    # A late correction of the first hour of every driver, backfilled again.
    path = s3_repo / SOURCE
    source = pl.read_parquet(path)
    first_hour = pl.col("event_timestamp") == pl.col("event_timestamp").min()
    source.with_columns(
        pl.when(first_hour).then(pl.col("conv_rate") + 1).otherwise("conv_rate").alias("conv_rate")
    ).write_parquet(path)
    (report,) = store.backfill([PLAIN])
    assert (report.rows_written, report.rows_updated) == (0, 20)
    assert store.offline.version(PLAIN) > before

    # Time travel: the version the dataset pinned still reads the old rows.
    assert _rows(store, PLAIN, version=before).equals(old_rows)
    now_rows = _rows(store, PLAIN)
    assert not now_rows.equals(old_rows)
    assert now_rows.filter(pl.col("conv_rate") > 1).height == 20

    # dataset rebuild: from a fresh process' view of the store, identical to the saved one.
    rebuilt, saved = FeatureStore(s3_repo).rebuild_dataset("ranking_v1")
    assert saved.content_hash == lineage.content_hash
    assert rebuilt.lineage.content_hash == lineage.content_hash
    assert rebuilt.frame.equals(ds.frame)
    local.close()
    store.close()


def test_compact_and_vacuum_on_s3(s3_server, s3_root, s3_repo):
    store = FeatureStore(s3_repo)
    spec = dataclasses.replace(offline_spec(store.index().view(PLAIN)), name="appended")
    rows = _source_rows(s3_repo).sample(fraction=1.0, shuffle=True, seed=5)
    for part in rows.iter_slices(rows.height // 3 + 1):  # three appends: 3 files a date
        store.offline.write_view(spec, part, mode="append")
    prefix = s3_root.removeprefix(f"s3://{s3_server.bucket}/")
    files = lambda: {  # noqa: E731
        k for k in s3_server.keys(f"{prefix}/appended") if k.endswith(".parquet")
    }
    before_files, appended_version = files(), store.offline.version("appended")
    assert len(before_files) == 3 * 7

    result = store.offline.compact("appended")
    assert result["partitions_rewritten"] == 7
    assert result["batches_skipped_on_conflict"] == 0
    compacted = store.offline.read_view(spec).collect()
    assert compacted.sort(compacted.columns).equals(rows.sort(rows.columns))
    # each date is one file again, sorted by (keys, event_ts, created_ts)
    table = store.offline._open_required("appended", None)
    assert len(table.file_uris()) == 7
    for uri in table.file_uris():
        part = pl.read_parquet(uri, storage_options=s3_server.storage_options())
        assert part.equals(part.sort("driver_id", "event_ts", "created_ts"))

    # vacuum with no retention removes the 21 replaced files from the bucket ...
    deleted = store.offline.vacuum("appended", retention_hours=0)
    assert len(deleted) == 21
    after_files = files()
    assert len(after_files) == 7 and not after_files & before_files
    # ... the current version still reads every row; the pre-compaction one opens (the
    # log is kept) but its files are gone, as on a local disk.
    assert store.offline.read_view(spec).collect().height == rows.height
    with pytest.raises(FileNotFoundError, match="404 Not Found"):
        store.offline.read_view(spec, version=appended_version).collect()
    store.close()


# ------------------------------------------------------------------ concurrent writers

CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    from datetime import datetime
    import deltalake.exceptions as dx
    import featurestore.stores.offline.delta as delta_mod
    from featurestore import FeatureStore

    # Count the commit races this process loses (the store retries them).
    lost = []
    real = delta_mod.DeltaOfflineStore._with_retries
    def counting(self, name, fn):
        def attempt():
            try:
                return fn()
            except dx.CommitFailedError:
                lost.append(name)
                raise
        return real(self, name, attempt)
    delta_mod.DeltaOfflineStore._with_retries = counting

    repo, gate, jobs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    store = FeatureStore(repo)
    store.index()  # read the registry before the race starts
    while not os.path.exists(gate):
        time.sleep(0.005)
    out = []
    for views, start, end in jobs:
        reports = store.backfill(
            views,
            start=None if start is None else datetime.fromisoformat(start),
            end=None if end is None else datetime.fromisoformat(end),
        )
        out.append([r.rows_written for r in reports])
    print(json.dumps({"rows": out, "lost_races": len(lost)}))
    """
)


def _race(repo: Path, tmp_path: Path, *jobs: list[tuple[list[str], str | None, str | None]]):
    """Run one process per job list, released at the same moment; their outputs."""
    gate = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(repo), str(gate), json.dumps(job)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for job in jobs
    ]
    time.sleep(2.5)  # both have imported featurestore and are polling the gate
    gate.touch()
    outs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr[-3000:]
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    return outs


def _iso(t: datetime) -> str:
    return t.isoformat()


def test_two_processes_backfill_different_views_at_once(tmp_path, s3_repo):
    a, b = _race(s3_repo, tmp_path, [([PLAIN], None, None)], [([AGG], None, None)])
    assert a["rows"] == [[3360]] and b["rows"] == [[3360]]
    store = FeatureStore(s3_repo)
    want = _source_rows(s3_repo)
    assert _rows(store, PLAIN).equals(want.sort(want.columns))
    agg = _rows(store, AGG)
    assert agg.height == 3360 and agg.select("driver_id", "event_ts").is_unique().all()
    store.close()


def test_two_processes_backfill_one_view_on_adjoining_ranges(tmp_path, s3_repo):
    """Six ranges cut at noon, taken alternately by two processes: neighbours share a
    date partition, so their commits conflict and the loser must retry on the new
    snapshot. Both views: the plain one merges, the aggregated one replaces ranges."""
    start = SAMPLE_END - timedelta(days=7)
    cuts = [start] + [start + timedelta(days=d, hours=12) for d in (1, 2, 3, 4, 5)] + [SAMPLE_END]
    ranges = [(_iso(lo), _iso(hi)) for lo, hi in itertools.pairwise(cuts)]
    jobs = [[([PLAIN, AGG], lo, hi) for lo, hi in ranges[i::2]] for i in (0, 1)]
    a, b = _race(s3_repo, tmp_path, *jobs)
    written = sum(sum(r) for out in (a, b) for r in out["rows"])
    assert written == 2 * 3360  # every row written by exactly one of the processes
    races = f"commit races lost and retried: {a['lost_races'] + b['lost_races']}"
    store = FeatureStore(s3_repo)
    want = _source_rows(s3_repo)
    assert _rows(store, PLAIN).equals(want.sort(want.columns)), races
    agg = _rows(store, AGG)
    assert agg.equals(want.sort(want.columns).select(agg.columns).sort(agg.columns)), races
    # the histories hold every commit: nothing was overwritten by a racing writer
    for view in (PLAIN, AGG):
        versions = [h["version"] for h in store.offline.history(view)]
        assert sorted(versions) == list(range(max(versions) + 1))
    store.close()


# ------------------------------------------------------------------ logger and stream


@pytest.mark.kafka
def test_feature_logger_and_stream_worker_write_to_the_same_s3_root(
    tmp_path, s3_server, s3_root, s3_repo, kafka_broker, kafka_topics
):
    """While the stream worker applies a topic to its views' tables under the S3 root,
    the feature logger of the quickstart repo logs lookups into the same root."""
    from featurestore.engines.stream import run_worker
    from featurestore.stores.offline import DeltaOfflineStore
    from featurestore.stores.online import open_online_store
    from tests.integration.test_stream_worker import (
        expected_rows,
        make_log,
        offline_rows,
        produce,
        settings,
        stream_views,
    )

    store = FeatureStore(s3_repo)
    store.backfill([PLAIN])
    store.materialize([PLAIN], end=SAMPLE_END)
    logger = store.enable_feature_logging(flush_seconds=0.2)
    topic = kafka_topics(2)
    views = stream_views(tmp_path, topic=topic, bootstrap=kafka_broker.bootstrap)
    log = make_log(1500)
    produce(kafka_broker.bootstrap, topic, log)

    stop = threading.Event()
    lookups: list[int] = []

    def serve() -> None:  # an application serving lookups meanwhile
        while not stop.is_set():
            ids = [1001 + len(lookups) % 20, 1021]  # 1021 has no features
            store.get_online_features({"driver_id": ids}, feature_service="driver_ranking")
            lookups.append(len(ids))
            time.sleep(0.01)

    server = threading.Thread(target=serve)
    server.start()
    offline = DeltaOfflineStore(s3_root, storage_options=s3_server.storage_options())
    try:
        report = run_worker(
            project="it",
            views=views,
            offline=offline,
            online=open_online_store(f"sqlite:///{tmp_path / 'stream-online.db'}"),
            group_id="g-s3",
            settings=settings(flush_rows=300, flush_interval_s=0.2),
            until_end=True,
            idle_timeout_s=60,
        )
    finally:
        stop.set()
        server.join()
    assert logger.flush(timeout=30)
    assert report.records == len(log) and report.checkpoints >= 2
    for view in views:  # every valid record once
        assert_frame_equal(offline_rows(offline, view), expected_rows(view, log))
    logged = store.offline.read_table("_feature_logs/driver_ranking").collect()
    stats = logger.stats()
    assert logged.height == sum(lookups) == stats["written_rows"] > 0
    assert stats["written_batches"] >= 2  # commits interleaved with the worker's
    assert (stats["dropped"], stats["failed_rows"], stats["write_errors"]) == (0, 0, 0)
    # one root holds them all, next to the backfilled view
    prefix = s3_root.removeprefix(f"s3://{s3_server.bucket}/")
    tables = {k.split("/_delta_log/")[0] for k in s3_server.keys(prefix) if "/_delta_log/" in k}
    assert {t.removeprefix(f"{prefix}/") for t in tables} == {
        PLAIN,
        "driver_fares",
        "driver_cities",
        "_feature_logs/driver_ranking",
    }
    assert _rows(store, PLAIN).height == 3360
    store.close()


# ------------------------------------------------------------------ many commit races

APPENDER = textwrap.dedent(
    """
    import json, os, sys, time
    import polars as pl
    from featurestore.stores.offline.delta import DeltaOfflineStore

    root, options, gate, who = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
    store = DeltaOfflineStore(root, storage_options=options)
    while not os.path.exists(gate):
        time.sleep(0.005)
    for i in range(APPENDS):
        store.write_table("events", pl.DataFrame({"who": [who], "i": [i]}), mode="append")
    """
)
APPENDS = 12


def _append_race(server: S3Server, root: str, tmp_path: Path) -> pl.DataFrame:
    """Two processes append APPENDS one-row commits each to one table at once."""
    store = DeltaOfflineStore(root, storage_options=server.storage_options())
    store.write_table("events", pl.DataFrame({"who": ["setup"], "i": [-1]}), mode="append")
    gate = tmp_path / "go-append"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    code = APPENDER.replace("APPENDS", str(APPENDS))
    args = [root, json.dumps(server.storage_options()), str(gate)]
    procs = [
        subprocess.Popen([sys.executable, "-c", code, *args, who], env=env, stderr=subprocess.PIPE)
        for who in ("a", "b")
    ]
    time.sleep(1.5)
    gate.touch()
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr.decode()[-3000:]
    return store.read_table("events").collect().filter(pl.col("who") != "setup")


def test_two_processes_appending_to_one_table_keep_every_commit(tmp_path, s3_server, s3_root):
    """Back-to-back one-row commits from two processes race for nearly every version;
    the server's If-None-Match makes the loser retry. (Against a server that ignores
    it, this lost commits in 2 of 3 runs: docs/s3.md.)"""
    rows = _append_race(s3_server, s3_root, tmp_path)
    assert rows.height == 2 * APPENDS
    assert rows.sort("who", "i").rows() == [(w, i) for w in "ab" for i in range(APPENDS)]
    store = DeltaOfflineStore(s3_root, storage_options=s3_server.storage_options())
    versions = sorted(h["version"] for h in store.history("events"))
    assert versions == list(range(2 * APPENDS + 1))


def test_erase_finds_feature_logs_and_dataset_spines_on_s3(s3_server, s3_root, s3_repo):
    """Erasure lists the tables under the S3 root (feature logs, dataset spines) as it
    walks a local one: none of the erased driver's logged rows may stay behind."""
    from featurestore.api.erase import erase

    store = FeatureStore(s3_repo)
    store.backfill([PLAIN])
    store.materialize([PLAIN], end=SAMPLE_END)
    logger = store.enable_feature_logging(flush_seconds=0.2)
    for ids in ([1001, 1002], [1001, 1003]):
        store.get_online_features({"driver_id": ids}, feature_service="driver_ranking")
    assert logger.flush(timeout=30)
    entity_df = spine().head(50)
    dataset = store.get_training_dataset(entity_df, feature_service="driver_ranking")
    store.save_dataset(dataset, "train", entity_df=entity_df)
    assert store.offline.tables_under("_feature_logs") == ["_feature_logs/driver_ranking"]
    assert "_datasets/train/spine" in store.offline.tables_under("_datasets")
    assert store.offline.tables_under("_no_such_prefix") == []
    in_spine = entity_df["driver_id"].to_list().count(1001)

    report = erase(store, {"driver_id": ["1001"]})
    assert report.feature_logs == {"_feature_logs/driver_ranking": 2}
    assert report.datasets.get("train", 0) == in_spine
    logged = store.offline.read_table("_feature_logs/driver_ranking").collect()
    assert sorted(logged["driver_id"].to_list()) == [1002, 1003]
    store.close()
