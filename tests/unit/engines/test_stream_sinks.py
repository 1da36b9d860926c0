"""Micro-batches -> row transforms -> sinks, with the in-memory online store and a
real Delta table in tmp_path (no broker)."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest

from featurestore import Aggregation, BatchSource, Entity, FeatureView, Field, KafkaSource
from featurestore.compile import PlanIndex, compile_definitions
from featurestore.compile.discover import Found
from featurestore.compile.views import FeatureViewPlan
from featurestore.engines.batch import latest_per_entity as batch_latest
from featurestore.engines.stream import decode as d
from featurestore.engines.stream.decode import EventDecoder, RecordBatch
from featurestore.engines.stream.metrics import StreamMetrics
from featurestore.engines.stream.routes import sinks_for_view
from featurestore.engines.stream.sinks import (
    OfflineSink,
    OnlineLatestSink,
    ViewBatch,
    retrying,
)
from featurestore.engines.stream.transform import ViewTransform
from featurestore.errors import DataError, OnlineStoreUnavailable, StreamError
from featurestore.stores.offline import DeltaOfflineStore
from featurestore.stores.online import MemoryOnlineStore, ReadRequest
from featurestore.stores.view_specs import offline_spec, online_schema

T0_US = int(dt.datetime(2024, 5, 1, tzinfo=dt.UTC).timestamp()) * 1_000_000
SCHEMA = {
    "driver_id": "int64",
    "fare": "float64",
    "distance_km": "float64",
    "code": "string",
    "event_ts": "datetime",
}


def compile_view(
    tmp: Path, *, aggregations: bool | list[Aggregation] = False, online: bool = True
) -> FeatureViewPlan:
    driver = Entity(name="driver", join_keys={"driver_id": "int64"})
    src = KafkaSource(
        name="trips",
        topic="trips",
        bootstrap_servers="127.0.0.1:1",
        schema=SCHEMA,
        timestamp_field="event_ts",
        batch_source=BatchSource(name="trips_history", path="missing", timestamp_field="event_ts"),
    )
    extra: dict[str, Any] = {}
    if isinstance(aggregations, list):
        extra["aggregations"] = aggregations
    elif aggregations:
        extra["aggregations"] = [
            Aggregation(name="fare_sum", column="fare", function="sum", window="1h")
        ]
    else:
        extra["fields"] = [
            Field(name="fare", dtype="float64"),
            Field(name="fare_per_km", dtype="float64"),
            Field(name="code_num", dtype="int64"),
        ]
    fv = FeatureView(
        name="driver_fares",
        entities=[driver],
        source=src,
        ttl=None,
        online=online,
        transform={
            "fare_per_km": pl.col("fare") / pl.col("distance_km"),
            "code_num": pl.col("code").str.to_integer(),
        },
        **extra,
    )
    found = [Found(o, "features.py") for o in (driver, src, fv)]
    plan = compile_definitions(found, repo=tmp, project="p").plan
    return PlanIndex(plan).view("driver_fares")


def decoded(events: list[dict[str, Any]], *, first_offset: int = 0, partition: int = 0):
    dec = EventDecoder(source="trips", fields=list(SCHEMA.items()), timestamp_field="event_ts")
    raw = [orjson.dumps(e) for e in events]
    stamps = [(T0_US // 1000) + first_offset + i for i in range(len(raw))]
    offsets = list(range(first_offset, first_offset + len(raw)))
    return dec.decode(RecordBatch("trips", raw, stamps, [partition] * len(raw), offsets)).frame


def event(key: int, ts_s: int, fare: float = 10.0, code: str = "7") -> dict[str, Any]:
    return {
        "driver_id": key,
        "fare": fare,
        "distance_km": 2.0,
        "code": code,
        "event_ts": T0_US + ts_s * 1_000_000,
    }


def transform(view: FeatureViewPlan, **kw: Any) -> ViewTransform:
    return ViewTransform(view, timestamp_field="event_ts", created_timestamp_field=None, **kw)


def test_transform_runs_the_batch_engine_and_stamps_created_ts_with_the_record_time(tmp_path):
    view = compile_view(tmp_path)
    out = transform(view).apply(decoded([event(1, 5, fare=9.0), event(2, 3)], first_offset=40))
    assert out.rejects == []
    f = out.frame
    assert f.columns[:6] == [
        "driver_id",
        "event_ts",
        "created_ts",
        "fare",
        "fare_per_km",
        "code_num",
    ]
    assert f["fare_per_km"].to_list() == [4.5, 5.0]
    assert f["code_num"].to_list() == [7, 7]
    # created_ts = Kafka record timestamp (ms), identical on every replay
    assert f["created_ts"].dt.epoch("us").to_list() == [T0_US + 40_000, T0_US + 41_000]
    assert f[d.OFFSET].to_list() == [40, 41]


def test_rows_that_break_a_transform_are_refused_one_by_one(tmp_path):
    view = compile_view(tmp_path)
    events = [event(i, i, code="x" if i in (3, 11) else str(i)) for i in range(16)]
    out = transform(view).apply(decoded(events))
    assert sorted((r.index, r.reason) for r in out.rejects) == [
        (3, d.TRANSFORM_ERROR),
        (11, d.TRANSFORM_ERROR),
    ]
    assert "driver_fares" in out.rejects[0].detail
    assert out.frame["driver_id"].to_list() == [i for i in range(16) if i not in (3, 11)]


def test_null_keys_are_refused(tmp_path):
    view = compile_view(tmp_path)
    out = transform(view).apply(decoded([event(1, 1), {**event(2, 2), "driver_id": None}]))
    assert [(r.index, r.reason) for r in out.rejects] == [(1, d.NULL_KEY)]
    assert out.frame["driver_id"].to_list() == [1]


def test_the_watermark_leaves_older_events_to_the_batch_path(tmp_path):
    view = compile_view(tmp_path)
    mark = T0_US + 10 * 1_000_000
    out = transform(view, watermark_us=mark).apply(
        decoded([event(1, 9), event(1, 10), event(2, 11), event(3, 0)])
    )
    assert out.before_watermark == 2
    assert out.frame["event_ts"].dt.epoch("us").to_list() == [mark, mark + 1_000_000]


def test_a_view_the_events_cannot_feed_is_refused_at_start(tmp_path):
    view = compile_view(tmp_path)
    other = EventDecoder(
        source="x",
        fields=[("driver_id", "int64"), ("event_ts", "datetime")],
        timestamp_field="event_ts",
    )
    with pytest.raises((DataError, pl.exceptions.PolarsError), match="fare"):
        transform(view).check(pl.DataFrame(schema=other.schema))


# ---------------------------------------------------------------- online sink


def test_online_sink_keeps_the_newest_row_per_entity_across_batches(tmp_path):
    view = compile_view(tmp_path)
    store = MemoryOnlineStore()
    metrics = StreamMetrics()
    sink = OnlineLatestSink(view, project="p", online=store, metrics=metrics)
    rng = random.Random(4)
    log = [event(rng.randrange(20), rng.randrange(50), fare=float(i)) for i in range(400)]
    rows = []
    for start in range(0, len(log), 37):  # uneven micro-batches, out of order in time
        vr = transform(view).apply(decoded(log[start : start + 37], first_offset=start))
        rows.append(vr.frame)
        sink.write(ViewBatch(view, "trips", vr.frame))
    assert sink.checkpoint({}) is None  # waits for the write in flight
    expected = batch_latest(pl.concat(rows).lazy(), ("driver_id",)).collect().sort("driver_id")
    schema = online_schema("p", view)
    keys = expected["driver_id"].to_list()
    [got] = store.read([ReadRequest(schema, {"driver_id": keys})])
    assert got.features["fare"] == expected["fare"].to_list()
    assert got.event_ts == expected["event_ts"].dt.epoch("us").to_list()
    assert got.created_ts == expected["created_ts"].dt.epoch("us").to_list()
    assert metrics.freshness_seconds.count == len(log)
    assert metrics.online_written.total() + metrics.online_stale.total() > 0


def flush(sink: OfflineSink, replay: dict[tuple[str, int], int]) -> None:
    """What the worker does at a checkpoint (there, off the loop thread)."""
    work = sink.checkpoint(replay)
    if work is not None:
        work()


def offline_rows(store: DeltaOfflineStore, view: FeatureViewPlan) -> pl.DataFrame:
    return store.read_view(offline_spec(view)).collect().sort("driver_id", "event_ts", "created_ts")


def test_offline_sink_appends_and_merges_what_a_replay_may_have_written(tmp_path):
    view = compile_view(tmp_path)
    store = DeltaOfflineStore(str(tmp_path / "offline"))
    sink = OfflineSink(view, offline=store, metrics=StreamMetrics())
    first = transform(view).apply(decoded([event(i, i) for i in range(10)])).frame
    sink.write(ViewBatch(view, "trips", first))
    assert sink.pending() == 10
    flush(sink, {})
    assert sink.pending() == 0
    assert offline_rows(store, view).height == 10
    # A crash before the commit: the next owner re-reads offsets 5.. and more. The
    # pending mark says offsets < 10 of partition 0 may be written: merge, not append.
    again = transform(view).apply(decoded([event(i, i) for i in range(5, 14)], first_offset=5))
    sink.write(ViewBatch(view, "trips", again.frame))
    flush(sink, {("trips", 0): 10})
    rows = offline_rows(store, view)
    assert rows.height == 14
    assert rows.select("driver_id", "event_ts", "created_ts").is_unique().all()
    # Without the mark, a plain append would have doubled offsets 5..9:
    sink.write(ViewBatch(view, "trips", first))
    flush(sink, {("trips", 1): 10**9, ("other", 0): 10**9})
    assert offline_rows(store, view).height == 24


def test_offline_sink_can_always_merge_for_a_reread_with_a_new_group(tmp_path):
    view = compile_view(tmp_path)
    store = DeltaOfflineStore(str(tmp_path / "offline"))
    sink = OfflineSink(view, offline=store, metrics=StreamMetrics(), always_merge=True)
    for _ in range(2):  # the same records read twice, with no pending marks
        rows = transform(view).apply(decoded([event(i, i) for i in range(6)])).frame
        sink.write(ViewBatch(view, "trips", rows))
        flush(sink, {})
    assert offline_rows(store, view).height == 6


def test_offline_sink_drops_rows_of_lost_partitions(tmp_path):
    view = compile_view(tmp_path)
    store = DeltaOfflineStore(str(tmp_path / "offline"))
    sink = OfflineSink(view, offline=store, metrics=StreamMetrics())
    for part in (0, 1, 2):
        rows = transform(view).apply(decoded([event(part, 1), event(part, 2)], partition=part))
        sink.write(ViewBatch(view, "trips", rows.frame))
    sink.discard("trips", [1])
    sink.discard("elsewhere", [0])
    assert sink.pending() == 4
    flush(sink, {})
    assert sorted(set(offline_rows(store, view)["driver_id"].to_list())) == [0, 2]


def test_sinks_for_plain_and_aggregated_views(tmp_path):
    kw: dict[str, Any] = {
        "project": "p",
        "online": MemoryOnlineStore(),
        "offline": DeltaOfflineStore(str(tmp_path / "o")),
        "metrics": StreamMetrics(),
        "retry_s": 1.0,
    }
    plain = sinks_for_view(compile_view(tmp_path), **kw)
    assert [s.name for s in plain] == ["online:driver_fares", "offline:driver_fares"]
    offline_only = sinks_for_view(compile_view(tmp_path, online=False), **kw)
    assert [s.name for s in offline_only] == ["offline:driver_fares"]
    aggregated = sinks_for_view(compile_view(tmp_path, aggregations=True), **kw)
    assert [s.name for s in aggregated] == ["aggregates:driver_fares", "offline:driver_fares"]


def test_retrying_retries_only_retryable_errors_within_budget():
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OnlineStoreUnavailable("down", obj="redis")
        return "ok"

    assert retrying(flaky, what="write", budget_s=5) == "ok"
    assert len(calls) == 3

    def down() -> None:
        raise OnlineStoreUnavailable("down", obj="redis")

    with pytest.raises(StreamError, match="write failed") as err:
        retrying(down, what="write", budget_s=0.2)
    assert err.value.retryable  # the CLI exits with "retry can help"

    def broken() -> None:
        raise ValueError("not a store error")

    with pytest.raises(ValueError, match="not a store error"):
        retrying(broken, what="write", budget_s=5)


def test_an_online_write_that_fails_surfaces_at_the_checkpoint(tmp_path):
    view = compile_view(tmp_path)

    class DownStore(MemoryOnlineStore):  # fault injection: the store is unreachable
        def write(self, schema: Any, rows: Any) -> Any:
            raise OnlineStoreUnavailable("connection refused", obj="test store")

    sink = OnlineLatestSink(
        view, project="p", online=DownStore(), metrics=StreamMetrics(), retry_s=0.1
    )
    sink.write(ViewBatch(view, "trips", transform(view).apply(decoded([event(1, 1)])).frame))
    with pytest.raises(StreamError, match="connection refused"):
        sink.checkpoint({})
    sink.checkpoint({})  # the error is reported once
