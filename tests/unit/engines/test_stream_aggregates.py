"""The stream worker's aggregate sink against batch materialization: the same events
cut into any micro-batches, late and duplicated, give the same online values; a
replayed batch changes nothing (no broker: in-memory online store)."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl
import pytest

from featurestore import Aggregation
from featurestore.compile.views import FeatureViewPlan
from featurestore.engines.aggregate.online import AggregateReader
from featurestore.engines.aggregate.view_records import build_records, window_specs
from featurestore.engines.stream.aggregates import AggregateSink
from featurestore.engines.stream.decode import META_COLUMNS, EventDecoder, RecordBatch
from featurestore.engines.stream.metrics import StreamMetrics
from featurestore.engines.stream.sinks import ViewBatch
from featurestore.materialize.aggregates import materialize_aggregates
from featurestore.stores.offline import DeltaOfflineStore
from featurestore.stores.offline.spec import EVENT_TS
from featurestore.stores.online import MemoryOnlineStore, ReadRequest
from featurestore.stores.view_specs import RECORD_COLUMN, offline_spec, online_schema
from tests.unit.engines.test_stream_sinks import (
    SCHEMA,
    T0_US,
    compile_view,
    event,
    transform,
)

AGGREGATIONS = [
    Aggregation(name="fare_sum_1h", column="fare", function="sum", window="1h", hop="5m"),
    Aggregation(name="trips_10m", column=None, function="count", window="10m"),
    Aggregation(name="fare_mean", column="fare", function="mean", window="lifetime", hop="1h"),
    Aggregation(name="fare_last", column="fare", function="last", window="lifetime"),
    Aggregation(name="fare_max_2h", column=pl.col("fare") * 2, function="max", window="2h"),
    Aggregation(name="codes", column="code", function="count_distinct", window="1d", hop="1h"),
]


def view_of(tmp: Path) -> FeatureViewPlan:
    return compile_view(tmp, aggregations=AGGREGATIONS)


def reader(view: FeatureViewPlan) -> AggregateReader:
    specs = window_specs(view)
    return AggregateReader(
        tuple(s.function for s in specs),
        {
            a["name"]: (j, spec, "float64")
            for j, (a, spec) in enumerate(zip(view.aggregations, specs, strict=True))
        },
    )


def online_records(store: MemoryOnlineStore, view: FeatureViewPlan, keys: list[int]):
    (res,) = store.read(
        [ReadRequest(online_schema("p", view), {"driver_id": keys}, features=[RECORD_COLUMN])]
    )
    return res.features[RECORD_COLUMN], res.event_ts


def values_at(view: FeatureViewPlan, texts, stamps, request_us: int) -> dict[str, list[Any]]:
    return reader(view).values(texts, at_us=stamps, request_us=request_us)


def same(a: list[Any], b: list[Any]) -> bool:
    for x, y in zip(a, b, strict=True):
        if x is None or y is None:
            if x is not y:
                return False
        elif isinstance(x, float) and (math.isnan(x) or math.isnan(y)):
            if not (math.isnan(x) and math.isnan(y)):
                return False
        elif not math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12):
            return False
    return True


def decoded(events: list[dict[str, Any]], *, first_offset: int = 0) -> pl.DataFrame:
    """Decoded as the worker would, every record stamped a day after T0 (so no event
    is refused as being from the future), one millisecond apart."""
    dec = EventDecoder(source="trips", fields=list(SCHEMA.items()), timestamp_field="event_ts")
    raw = [orjson.dumps(e) for e in events]
    offsets = list(range(first_offset, first_offset + len(raw)))
    stamps = [T0_US // 1000 + 86_400_000 + o for o in offsets]
    out = dec.decode(RecordBatch("trips", raw, stamps, [0] * len(raw), offsets))
    assert out.rejects == []
    return out.frame


def make_events(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """Out of order (up to 3h late), with duplicates and a few entities."""
    out = []
    for i in range(n):
        ts = i * 37 - rng.randrange(0, 3 * 3600) if rng.random() < 0.2 else i * 37
        out.append(
            event(
                rng.randrange(6),
                max(ts, 0),
                fare=float(rng.randrange(1, 50)),
                code=str(rng.randrange(4)),
            )
        )
        if rng.random() < 0.05:
            out.append(dict(out[-1]))  # a duplicate
    return out


def feed(sink: AggregateSink, view: FeatureViewPlan, events, cuts: list[int], offset0: int = 0):
    t = transform(view)
    bounds = [0, *sorted(cuts), len(events)]
    for a, b in itertools.pairwise(bounds):
        if b > a:
            rows = t.apply(decoded(events[a:b], first_offset=offset0 + a)).frame
            sink.write(ViewBatch(view, "trips", rows))
    sink.checkpoint({})


@pytest.mark.parametrize("seed", range(6))
def test_any_cut_into_micro_batches_gives_the_batch_values(tmp_path, seed):
    rng = random.Random(seed)
    view = view_of(tmp_path)
    events = make_events(rng, 400)
    store = MemoryOnlineStore()
    sink = AggregateSink(view, project="p", online=store, metrics=StreamMetrics())
    feed(sink, view, events, [rng.randrange(len(events)) for _ in range(rng.randrange(0, 12))])

    rows = transform(view).apply(decoded(events)).frame
    end_us = int(rows[EVENT_TS].dt.epoch("us").max())
    keys_frame, batch_texts = build_records(view, rows, end_us=end_us)
    keys = keys_frame["driver_id"].to_list()
    stream_texts, stream_at = online_records(store, view, keys)
    for request in (end_us, end_us + 7 * 60_000_000, end_us + 90 * 60_000_000):
        got = values_at(view, stream_texts, stream_at, request)
        want = values_at(view, batch_texts, [end_us] * len(keys), request)
        for name in want:
            assert same(got[name], want[name]), (name, request, got[name], want[name])


def test_a_replayed_batch_is_skipped_by_the_record_marks(tmp_path):
    view = view_of(tmp_path)
    events = make_events(random.Random(7), 200)
    store = MemoryOnlineStore()
    metrics = StreamMetrics()
    sink = AggregateSink(view, project="p", online=store, metrics=metrics)
    feed(sink, view, events, [50, 120])
    keys = sorted({e["driver_id"] for e in events})
    before = online_records(store, view, keys)
    feed(sink, view, events[100:], [30], offset0=100)  # a crash replays offsets 100..
    after = online_records(store, view, keys)
    assert metrics.aggregate_skipped.total() == len(events) - 100
    request = int(max(before[1])) + 1
    assert values_at(view, *after, request) == values_at(view, *before, request)
    assert np.array_equal(before[1], after[1])


def test_materialize_leaves_the_records_the_stream_keeps_alone(tmp_path):
    view = view_of(tmp_path)
    events = make_events(random.Random(3), 120)
    store = MemoryOnlineStore()
    sink = AggregateSink(view, project="p", online=store, metrics=StreamMetrics())
    feed(sink, view, events, [60])
    streamed = sorted({e["driver_id"] for e in events})
    before = online_records(store, view, streamed)

    offline = DeltaOfflineStore(str(tmp_path / "offline"))
    rows = transform(view).apply(decoded([*events, event(99, 10, fare=5.0)])).frame
    offline.write_view(offline_spec(view), rows.drop(META_COLUMNS), mode="append")
    end_us = int(rows[EVENT_TS].dt.epoch("us").max())
    report = materialize_aggregates(view, project="p", offline=offline, online=store, end_us=end_us)
    assert (report.entities, report.written, report.skipped_stale) == (
        len(streamed) + 1,
        1,
        len(streamed),
    )
    assert online_records(store, view, streamed) == before  # the stream's state is intact
    texts, stamps = online_records(store, view, [99])
    assert stamps == [end_us]
    assert values_at(view, texts, stamps, end_us)["fare_last"] == [5.0]
