"""first/last over events tied on (key, event_ts, created_ts) with other values
(SEMANTICS: Windowed aggregations): first takes the smallest value, last the largest,
so every path (kernels, states, online records, the stream worker, the training
driver) gives the same answer whatever order the rows arrive in and however they are
cut into states."""

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
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore import Aggregation
from featurestore.engines.aggregate import state as S
from featurestore.engines.aggregate._ties import value_order
from featurestore.engines.aggregate.asof import aggregate_spine
from featurestore.engines.aggregate.kernels import Strategy
from featurestore.engines.aggregate.online import evaluate, event_states, fold_slots
from featurestore.engines.aggregate.reference import reference_value
from featurestore.engines.aggregate.spec import WindowSpec
from featurestore.engines.aggregate.view_records import build_records
from featurestore.engines.stream.aggregates import AggregateSink
from featurestore.engines.stream.decode import EventDecoder, RecordBatch
from featurestore.engines.stream.metrics import StreamMetrics
from featurestore.engines.stream.sinks import ViewBatch
from featurestore.stores.offline.spec import EVENT_TS
from featurestore.stores.online import MemoryOnlineStore
from tests.unit.engines.test_stream_aggregates import online_records, values_at
from tests.unit.engines.test_stream_sinks import SCHEMA, T0_US, compile_view, event, transform

EDGES = ("first", "last")


def test_value_order_is_polars_sort_order() -> None:
    floats = np.array([math.nan, math.inf, 1.5, 0.0, -0.0, -1.0, -math.inf, -math.nan])
    keys = value_order(floats)
    ranked = floats[np.argsort(keys, kind="stable")].tolist()
    assert ranked[:6] == [-math.inf, -1.0, -0.0, 0.0, 1.5, math.inf]
    assert math.copysign(1.0, ranked[2]) == -1.0 and all(map(math.isnan, ranked[6:]))
    assert keys[0] == keys[7]  # every NaN is one value
    big = np.array([2**64 - 1, 0, 2**63], np.uint64)
    assert np.argsort(value_order(big)).tolist() == [1, 2, 0]
    words = np.array(["b", "é", "a", "B", ""], object)
    assert words[np.argsort(value_order(words))].tolist() == sorted(words.tolist())
    polars_sorted = pl.Series(words.tolist()).sort().to_list()
    assert words[np.argsort(value_order(words))].tolist() == polars_sorted
    assert value_order(np.array([True, False])).tolist() == [1, 0]


@st.composite
def tied_events(draw: st.DrawFn) -> dict[str, Any]:
    """Few instants, so most events tie with another on (entity, event_ts, created_ts)."""
    n = draw(st.integers(1, 30))
    kind = draw(st.sampled_from(["float", "int", "bool", "str"]))
    pool: st.SearchStrategy[Any]
    dtype: Any
    if kind == "float":
        pool, dtype = st.sampled_from([1.0, 2.5, -0.0, 0.0, math.nan, math.inf, -3.0]), np.float64
    elif kind == "int":
        pool, dtype = st.integers(-5, 5), np.int64
    elif kind == "bool":
        pool, dtype = st.booleans(), bool
    else:
        pool, dtype = st.sampled_from(["a", "b", "zz", "", "é"]), object

    def col(s: st.SearchStrategy[Any]) -> list[Any]:
        return draw(st.lists(s, min_size=n, max_size=n))

    ets = np.array(col(st.integers(0, 3)), np.int64)
    return {
        "entity": np.array(col(st.integers(0, 1)), np.int64),
        "event_ts": ets,
        "created_ts": ets + np.array(col(st.sampled_from([0, 0, 1])), np.int64),
        "values": np.array(col(pool), dtype),
        "valid": np.array(col(st.sampled_from([True, True, True, False])), bool),
    }


def _reference(function: str, ev: dict[str, Any], mask: np.ndarray) -> tuple[Any, bool]:
    vals = ev["values"].tolist()
    rows = [
        (
            int(ev["event_ts"][i]),
            int(ev["created_ts"][i]),
            int(i),
            vals[i] if ev["valid"][i] else None,
        )
        for i in np.flatnonzero(mask)
    ]
    return reference_value(function, rows=rows)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return bool(a == b)


def _check(function: str, states: S.States, ev: dict[str, Any], n: int = 2) -> None:
    vals, ok = S.finalize(states)
    for e in range(n):
        want, want_ok = _reference(function, ev, ev["entity"] == e)
        assert bool(ok[e]) == want_ok
        if want_ok:
            got = vals[e].item() if hasattr(vals[e], "item") else vals[e]
            assert _same(got, want), (function, e, got, want)
            if isinstance(want, float) and want == 0.0:  # -0.0 before 0.0, everywhere
                assert math.copysign(1.0, got) == math.copysign(1.0, want)


def _take(ev: dict[str, Any], rows: Any) -> dict[str, Any]:
    return {k: v[np.asarray(rows, np.int64)] for k, v in ev.items()}


@settings(max_examples=150, deadline=None)
@given(ev=tied_events(), function=st.sampled_from(EDGES), data=st.data())
def test_states_agree_in_any_order_and_any_cut(
    ev: dict[str, Any], function: str, data: st.DataObject
) -> None:
    n = len(ev["values"])
    ev = _take(ev, data.draw(st.permutations(range(n))))  # another arrival order
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=4)))
    batches = []
    for a, b in itertools.pairwise([0, *cuts, n]):
        part = _take(ev, range(a, b))
        batches.append(
            S.from_events(
                function,  # type: ignore[arg-type]
                groups=part["entity"],
                n_groups=2,
                values=part["values"],
                valid=part["valid"],
                event_ts=part["event_ts"],
                created_ts=part["created_ts"],
            )
        )
    # Merged in the order the batches came, and in reverse (a late replay).
    forward = batches[0]
    for later in batches[1:]:
        forward = S.merge(forward, later)
    backward = batches[-1]
    for earlier in reversed(batches[:-1]):
        backward = S.merge(backward, earlier)
    for states in (forward, backward, S.from_arrow(S.to_arrow(forward))):
        _check(function, states, ev)


@settings(max_examples=100, deadline=None)
@given(
    ev=tied_events(),
    function=st.sampled_from(EDGES),
    window=st.sampled_from([None, 2, 4]),
    hop=st.sampled_from([None, 2]),
    data=st.data(),
)
def test_online_slots_agree_in_any_order_and_any_cut(
    ev: dict[str, Any], function: str, window: int | None, hop: int | None, data: st.DataObject
) -> None:
    """Records folded from micro-batches (as the stream worker does) answer as the
    reference does, whatever the arrival order and the cut."""
    spec = WindowSpec(function, window, hop)  # type: ignore[arg-type]
    n = len(ev["values"])
    ev = _take(ev, data.draw(st.permutations(range(n))))
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=3)))
    at = np.full(2, 3, np.int64)
    slots = None
    for a, b in itertools.pairwise([0, *cuts, n]):
        part = _take(ev, range(a, b))
        new = event_states(
            spec,
            entities=part["entity"],
            event_ts=part["event_ts"],
            created_ts=part["created_ts"],
            values=part["values"],
            valid=part["valid"],
        )
        parts = [new] if slots is None else [_as_part(slots), new]
        slots = fold_slots(spec, at_us=at, n_entities=2, parts=parts)
    assert slots is not None
    entity_slots = [
        (
            slots.pos[slots.offsets[e] : slots.offsets[e + 1]],
            slots.states.take(np.arange(slots.offsets[e], slots.offsets[e + 1])),
        )
        for e in range(2)
    ]
    vals, ok = evaluate(spec, entity_slots, at_us=[3, 3], request_us=3)
    for e in range(2):
        inside = (ev["entity"] == e) & (ev["event_ts"] <= spec.query_time(3))
        if window is not None:
            inside &= ev["event_ts"] > spec.query_time(3) - window
        want, want_ok = _reference(function, ev, inside)
        assert bool(ok[e]) == want_ok
        if want_ok:
            got = vals[e].item() if hasattr(vals[e], "item") else vals[e]
            assert _same(got, want), (spec, e, got, want)


def _as_part(slots: Any) -> tuple[np.ndarray, np.ndarray, S.States]:
    ent = np.repeat(np.arange(len(slots.offsets) - 1), np.diff(slots.offsets))
    return ent, slots.pos, slots.states


@pytest.mark.parametrize("strategy", ["scan", "sorted"])
def test_training_driver_picks_by_value_for_any_dtype(strategy: Strategy) -> None:
    """``aggregate_spine`` gathers first/last rows from the column itself; ties go by
    the column's Polars order, lists and categoricals included."""
    rng = random.Random(5)
    ts = [1, 1, 1, 2, 2, 2, 2, 3]  # ties at 1 and at 2 (the window's last instant)
    frame = pl.DataFrame(
        {
            "k": [7] * len(ts),
            "event_ts": ts,
            "x": [3.0, None, -1.0, 9.0, math.nan, 4.0, None, 100.0],
            "s": ["m", "a", "z", "q", "b", None, "qq", "zzz"],
            "c": ["m", "a", "z", "q", "b", None, "qq", "zzz"],
            "l": [[2, 1], [1], [3], [0, 9], [1, 5], [0], None, [9]],
        }
    ).with_columns(
        pl.col("event_ts").cast(pl.Datetime("us", "UTC")),
        pl.col("c").cast(pl.Categorical),
    )
    spine = pl.DataFrame({"k": [7], "timestamp": [2]}).with_columns(
        pl.col("timestamp").cast(pl.Datetime("us", "UTC"))
    )
    want = {
        "x": (-1.0, math.nan),  # -1 < 3 at ts 1; NaN after every number at ts 2
        "s": ("a", "qq"),
        "c": ("a", "qq"),
        "l": ([1], [1, 5]),
    }
    aggs = [
        (f"{f}_{c}", c, WindowSpec(f, None))  # type: ignore[arg-type]
        for c in want
        for f in EDGES
    ]
    for _ in range(6):
        shuffled = frame.sample(fraction=1.0, shuffle=True, seed=rng.randrange(1000))
        out = aggregate_spine(
            events=shuffled,
            spine=spine,
            keys=["k"],
            aggregations=aggs,
            created_ts=None,
            strategy=strategy,
        )
        for c, (first, last) in want.items():
            got_first, got_last = out[f"first_{c}"].to_list()[0], out[f"last_{c}"].to_list()[0]
            assert got_first == first, (c, got_first)
            if isinstance(last, float):
                assert math.isnan(got_last)
            else:
                assert got_last == last, (c, got_last)


# -- the stream worker -------------------------------------------------------------

STREAM_AGGS = [
    Aggregation(name="fare_first", column="fare", function="first", window="lifetime"),
    Aggregation(name="fare_last", column="fare", function="last", window="10m"),
    Aggregation(name="code_last", column="code", function="last", window="1h", hop="5m"),
    Aggregation(name="code_first", column="code", function="first", window="1h"),
]


def _decoded(events: list[dict[str, Any]], offsets: list[int]) -> pl.DataFrame:
    """Every record with the same Kafka timestamp: created_ts ties too."""
    dec = EventDecoder(source="trips", fields=list(SCHEMA.items()), timestamp_field="event_ts")
    raw = [orjson.dumps(e) for e in events]
    stamps = [T0_US // 1000 + 86_400_000] * len(raw)
    out = dec.decode(RecordBatch("trips", raw, stamps, [0] * len(raw), offsets))
    assert out.rejects == []
    return out.frame


def test_stream_worker_agrees_with_batch_in_any_arrival_order(tmp_path: Path) -> None:
    view = compile_view(tmp_path, aggregations=STREAM_AGGS)
    rng = random.Random(11)
    events = [
        event(d, ts, fare=float(rng.randrange(1, 9)), code=rng.choice("abcdz"))
        for d in range(3)
        for ts in (60, 60, 60, 120, 300, 300, 300)
    ]
    t = transform(view)
    answers = []
    for trial in range(5):
        order = list(range(len(events)))
        rng.shuffle(order)
        store = MemoryOnlineStore()
        sink = AggregateSink(view, project="p", online=store, metrics=StreamMetrics())
        cuts = sorted(rng.sample(range(1, len(events)), k=trial))
        for a, b in itertools.pairwise([0, *cuts, len(events)]):
            arrived = [events[i] for i in order[a:b]]
            rows = t.apply(_decoded(arrived, list(range(a, b)))).frame
            sink.write(ViewBatch(view, "trips", rows))
        sink.checkpoint({})
        texts, stamps = online_records(store, view, [0, 1, 2])
        end_us = T0_US + 300 * 1_000_000
        answers.append(values_at(view, texts, stamps, end_us))

        rows = t.apply(_decoded([events[i] for i in order], list(range(len(events))))).frame
        assert rows[EVENT_TS].dt.epoch("us").max() == end_us
        keys, batch_texts = build_records(view, rows, end_us=end_us)
        by_key = dict(zip(keys["driver_id"].to_list(), batch_texts, strict=True))
        batch = values_at(view, [by_key[d] for d in (0, 1, 2)], [end_us] * 3, end_us)
        assert batch == answers[-1]  # the stream worker's records answer as batch ones
    assert all(a == answers[0] for a in answers)
    for d in range(3):
        mine = [e for e in events if e["driver_id"] == d]
        first_fare = min(e["fare"] for e in mine if e["event_ts"] == mine[0]["event_ts"])
        at_end = [e for e in mine if e["event_ts"] == T0_US + 300 * 1_000_000]
        assert answers[0]["fare_first"][d] == first_fare
        assert answers[0]["fare_last"][d] == max(e["fare"] for e in at_end)
        assert answers[0]["code_last"][d] == max(e["code"] for e in at_end)
        assert answers[0]["code_first"][d] == min(e["code"] for e in mine[:3])
