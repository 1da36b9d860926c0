"""Materialization on a real local Ray cluster (issue 17, part 1): every record the
Ray tasks write (each task opening the SQLite online store from its URL) equals the
record the local, unpartitioned run writes, for plain and aggregated views; the
``--engine ray`` option of ``featurestore materialize`` runs it.

One cluster for the module, as in ``test_executor_ray.py``. Under CI=true a missing
``ray`` fails the run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from featurestore import FeatureStore
from featurestore._time import to_us
from featurestore.config import OnlineRetention
from featurestore.engines.executor import LocalExecutor
from featurestore.materialize import backfill_view, materialize_view
from featurestore.stores.offline.delta import DeltaOfflineStore
from featurestore.stores.online import open_online_store
from featurestore.stores.online.base import ReadRequest
from featurestore.stores.view_specs import offline_spec, online_schema
from tests.fixtures.ray_cluster import ray_executor_on_private_cluster
from tests.helpers import quickstart, write_repo
from tests.integration.test_aggregations import DEFS as AGG_DEFS
from tests.integration.test_aggregations import T0, _events

KEEP_ALL = OnlineRetention.of("none", {})


@pytest.fixture(scope="module")
def ray_executor() -> Iterator[object]:
    with ray_executor_on_private_cluster() as executor:
        yield executor


def _records(url: str, schema, keys: pl.DataFrame, *, with_created: bool) -> list[tuple]:
    """Every record of ``keys`` in the store at ``url``: (keys, event_ts[, created_ts],
    features), one tuple per entity, in ``keys`` order."""
    store = open_online_store(url)
    try:
        request = ReadRequest(schema, {k: keys[k].to_list() for k in keys.columns})
        (result,) = store.read([request])
    finally:
        store.close()
    columns = [keys[k].to_list() for k in keys.columns]
    columns.append(result.event_ts)
    if with_created:
        columns.append(result.created_ts)
    columns += [result.features[f] for f in sorted(result.features)]
    return list(zip(*columns, strict=True))


def _run(store: FeatureStore, view, url: str, *, end_us: int, executor=None, start_us=None):
    online = open_online_store(url)
    try:
        return materialize_view(
            view,
            project=store.project,
            offline=store.offline,
            online=online,
            end_us=end_us,
            start_us=start_us,
            retention=KEEP_ALL,
            executor=executor,
            online_url=url,
        )
    finally:
        online.close()


@pytest.fixture(scope="module")
def plain_repo(tmp_path_factory) -> Path:
    root = quickstart(tmp_path_factory.mktemp("raybatch") / "repo")
    store = FeatureStore(root)
    store.apply()
    store.backfill(["driver_hourly_stats"])
    store.close()
    return root


def test_materialize_on_ray_writes_the_local_records(plain_repo, ray_executor, tmp_path):
    store = FeatureStore(plain_repo)
    view = store.index().view("driver_hourly_stats")
    source = pl.read_parquet(plain_repo / "data/driver_stats.parquet")
    keys = source.select("driver_id").unique().sort("driver_id")
    end_us = int(source["event_timestamp"].dt.epoch("us").max()) - 3_600_000_000
    urls = {name: f"sqlite:///{tmp_path / name}.db" for name in ("local", "ray", "local3")}
    local = _run(store, view, urls["local"], end_us=end_us)
    on_ray = _run(store, view, urls["ray"], end_us=end_us, executor=ray_executor)
    parted = _run(store, view, urls["local3"], end_us=end_us, executor=LocalExecutor(3))
    assert local.entities == keys.height > 3
    for report in (on_ray, parted):
        assert (report.entities, report.written) == (local.entities, local.written)
    schema = online_schema(store.project, view, retention=KEEP_ALL)
    want = _records(urls["local"], schema, keys, with_created=True)
    assert all(r[1] is not None for r in want)  # every entity stored, none a miss
    assert _records(urls["ray"], schema, keys, with_created=True) == want
    assert _records(urls["local3"], schema, keys, with_created=True) == want
    # A re-run on Ray finds every record already as new: compare-and-set held.
    again = _run(store, view, urls["ray"], end_us=end_us, executor=ray_executor)
    assert again.written == 0 and again.skipped_stale == again.entities == local.entities
    # A start bound is pushed into the map side like the local read.
    start_us = end_us - 6 * 3_600_000_000
    urls2 = {n: f"sqlite:///{tmp_path / n}-range.db" for n in ("local", "ray")}
    a = _run(store, view, urls2["local"], end_us=end_us, start_us=start_us)
    b = _run(store, view, urls2["ray"], end_us=end_us, start_us=start_us, executor=ray_executor)
    assert a.entities == b.entities
    assert _records(urls2["ray"], schema, keys, with_created=True) == _records(
        urls2["local"], schema, keys, with_created=True
    )
    store.close()


def test_aggregate_records_on_ray_equal_the_local_ones(tmp_path, ray_executor):
    root = write_repo(tmp_path / "agg", {"features.py": AGG_DEFS})
    (root / "data").mkdir()
    events = _events()
    events.write_parquet(root / "data" / "trips.parquet")
    store = FeatureStore(root)
    store.apply()
    store.backfill()
    view = store.index().view("driver_trips")
    keys = events.select("driver_id").unique().sort("driver_id")
    end_us = to_us(T0 + timedelta(days=2, hours=5, minutes=17))
    urls = {name: f"sqlite:///{tmp_path / name}.db" for name in ("local", "ray", "local5")}
    local = _run(store, view, urls["local"], end_us=end_us)
    on_ray = _run(store, view, urls["ray"], end_us=end_us, executor=ray_executor)
    parted = _run(store, view, urls["local5"], end_us=end_us, executor=LocalExecutor(5))
    assert local.entities > 20
    for report in (on_ray, parted):
        assert (report.entities, report.written) == (local.entities, local.written)
    schema = online_schema(store.project, view, retention=KEEP_ALL)
    # created_ts is each run's wall clock; event_ts (= end) and the record must match.
    want = _records(urls["local"], schema, keys, with_created=False)
    assert sum(r[1] is not None for r in want) == local.entities
    assert _records(urls["ray"], schema, keys, with_created=False) == want
    assert _records(urls["local5"], schema, keys, with_created=False) == want
    store.close()


def test_cli_materialize_with_engine_ray(plain_repo, ray_executor):
    from featurestore.cli.main import app

    toml = (plain_repo / "featurestore.toml").read_text()
    (plain_repo / "featurestore.toml").write_text(
        toml + '\n[online_store.retention_per_view]\ndriver_hourly_stats = "none"\n'
    )
    try:
        result = CliRunner().invoke(
            app,
            [
                "materialize",
                "--repo",
                str(plain_repo),
                "--view",
                "driver_hourly_stats",
                "--engine",
                "ray",
                "--partitions",
                "3",
                "--end",
                "2100-01-01T00:00:00+00:00",
                "--json",
            ],
        )
        assert result.exit_code == 0, result.output
        (report,) = json.loads(result.stdout)
        assert report["view"] == "driver_hourly_stats"
        assert (
            report["entities"] > 3
            and report["written"] + report["skipped_stale"] == (report["entities"])
        )
        store = FeatureStore(plain_repo)
        view = store.index().view("driver_hourly_stats")
        keys = pl.read_parquet(plain_repo / "data/driver_stats.parquet").select("driver_id")
        keys = keys.unique().sort("driver_id")
        schema = online_schema(store.project, view, retention=store.settings.online_retention)
        stored = _records(store.settings.online_url, schema, keys, with_created=False)
        assert len(stored) == report["entities"] and all(r[1] is not None for r in stored)
        store.close()
        before = FeatureStore(plain_repo).offline.version("driver_hourly_stats")
        result = CliRunner().invoke(
            app,
            [
                *("backfill", "driver_hourly_stats", "--repo", str(plain_repo)),
                *("--engine", "ray", "--partitions", "2", "--json"),
            ],
        )
        assert result.exit_code == 0, result.output
        (done,) = json.loads(result.stdout)
        assert done["rows_read"] > 0 and done["rows_written"] == 0  # already backfilled
        assert done["table_version"] == before
        import ray

        assert ray.is_initialized()  # the command used the running cluster, left it running
    finally:
        (plain_repo / "featurestore.toml").write_text(toml)


def _table(offline: DeltaOfflineStore, view) -> pl.DataFrame:
    rows = offline.read_view(offline_spec(view)).collect()
    return rows.sort(rows.columns)


@pytest.mark.parametrize("kind", ["plain", "event_log"])
def test_backfill_reading_on_ray_leaves_the_local_table(kind, plain_repo, ray_executor, tmp_path):
    if kind == "plain":
        root, name = plain_repo, "driver_hourly_stats"
    else:
        root = write_repo(tmp_path / "agg", {"features.py": AGG_DEFS})
        (root / "data").mkdir()
        _events().write_parquet(root / "data" / "trips.parquet")
        FeatureStore(root).apply()
        name = "driver_trips"
    view = FeatureStore(root).index().view(name)
    local = DeltaOfflineStore(str(tmp_path / "local"))
    on_ray = DeltaOfflineStore(str(tmp_path / "ray"))
    a = backfill_view(view, repo=root, offline=local, chunk_days=1)
    b = backfill_view(view, repo=root, offline=on_ray, chunk_days=1, executor=ray_executor)
    assert a.chunks >= 3  # several tasks (plain: more than one wave of 4)
    assert a.event_log == (kind == "event_log")
    same = ("rows_read", "rows_written", "rows_updated", "rows_replaced", "chunks")
    assert [getattr(b, f) for f in same] == [getattr(a, f) for f in same]
    assert b.table_version == a.table_version  # one commit per chunk, as locally
    assert _table(on_ray, view).equals(_table(local, view))
    assert _table(local, view).height == a.rows_written > 0
    again = backfill_view(view, repo=root, offline=on_ray, chunk_days=1, executor=ray_executor)
    assert again.table_version == b.table_version  # a re-run commits nothing
