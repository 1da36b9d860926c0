"""Mergeable states: any cut of the events into tiles, merged and finalized, equals the
direct computation (SEMANTICS: Windowed aggregations)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.engines.aggregate import state as S
from featurestore.engines.aggregate.reference import reference_value
from featurestore.engines.aggregate.spec import AGG_FUNCTIONS
from featurestore.errors import DataError, DefinitionError

FLOAT_ORDER_SENSITIVE = {"sum", "mean", "stddev"}


def same(a: Any, b: Any, *, rel: float) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        if math.isinf(a) or math.isinf(b):
            return a == b
        return abs(a - b) <= rel * max(abs(a), abs(b))
    return bool(a == b)


def column(draw: st.DrawFn, values: st.SearchStrategy[Any], n: int) -> list[Any]:
    return draw(st.lists(values, min_size=n, max_size=n))


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(0, 50))
    kind = draw(st.sampled_from(["float", "int", "bool", "str"]))
    if kind == "float":
        pool = st.one_of(
            st.floats(0.5, 1000.0),
            st.integers(-40, 40).map(lambda i: i / 4),
            st.sampled_from([math.nan, math.inf, -0.0]),
        )
        values = np.array(column(draw, pool, n), np.float64)
    elif kind == "int":
        values = np.array(column(draw, st.integers(-(2**40), 2**40), n), np.int64)
    elif kind == "bool":
        values = np.array(column(draw, st.booleans(), n), bool)
    else:
        values = np.array(column(draw, st.sampled_from(["a", "b", "zz", ""]), n), object)
    ets = np.array(column(draw, st.integers(-30, 30), n), np.int64)
    lag = np.array(column(draw, st.sampled_from([0, 0, 1, -1, 4]), n), np.int64)
    entity = np.array(column(draw, st.integers(0, 2), n), np.int64)
    cts = ets + lag
    # Ties on (entity, event_ts, created_ts) with other values: first/last go by value.
    for _ in range(draw(st.integers(0, n // 2))):
        src, dst = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        entity[dst], ets[dst], cts[dst] = entity[src], ets[src], cts[src]
    return {
        "values": values,
        "valid": np.array(column(draw, st.sampled_from([True, True, False]), n), bool),
        "event_ts": ets,
        "created_ts": cts,
        "entity": entity,
    }


def direct(function: str, ev: dict[str, Any], mask: np.ndarray) -> tuple[Any, bool]:
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


def applicable(function: str, values: np.ndarray) -> bool:
    return not (function in ("sum", "mean", "stddev") and values.dtype.kind == "O")


@settings(max_examples=200, deadline=None)
@given(ev=events(), function=st.sampled_from(AGG_FUNCTIONS), hop=st.integers(1, 25), data=st.data())
def test_tiles_merged_equal_direct(
    ev: dict[str, Any], function: str, hop: int, data: st.DataObject
) -> None:
    if not applicable(function, ev["values"]):
        return
    # Hop-aligned tiles per entity, as the online store will keep them.
    tile = ev["event_ts"] // hop
    t0 = int(tile.min()) if len(tile) else 0
    n_tiles = int(tile.max()) - t0 + 1 if len(tile) else 1
    group = ev["entity"] * n_tiles + (tile - t0)
    kw = {
        "values": ev["values"],
        "valid": ev["valid"],
        "event_ts": ev["event_ts"],
        "created_ts": ev["created_ts"],
    }
    tiles = S.from_events(function, groups=group, n_groups=3 * n_tiles, **kw)
    # Tile states are laid out entity-major, time-minor: combine keeps time order.
    per_entity = S.combine(tiles, groups=np.repeat(np.arange(3), n_tiles), n_groups=3)
    # The stream worker's way: fold contiguous micro-batches in with merge().
    cuts = sorted(data.draw(st.lists(st.integers(0, len(group)), max_size=4)))
    running = S.empty(function, dtype=ev["values"].dtype, n=3)  # type: ignore[arg-type]
    for a, b in zip([0, *cuts], [*cuts, len(group)], strict=True):
        batch = S.from_events(
            function, groups=ev["entity"][a:b], n_groups=3, **{k: v[a:b] for k, v in kw.items()}
        )
        running = S.merge(running, batch)
    stored = S.from_arrow(S.to_arrow(per_entity))
    # Order of float arithmetic differs: stddev always, sum/mean of floats (not ints).
    inexact = function == "stddev" or (
        function in FLOAT_ORDER_SENSITIVE and ev["values"].dtype.kind == "f"
    )
    rel = 1e-9 if inexact else 0.0
    for states in (per_entity, running, stored):
        vals, ok = S.finalize(states)
        for e in range(3):
            want, want_ok = direct(function, ev, ev["entity"] == e)
            assert bool(ok[e]) == want_ok, (function, e)
            if want_ok:
                got = vals[e].item() if hasattr(vals[e], "item") else vals[e]
                assert same(got, want, rel=rel), (function, e, got, want)


@settings(max_examples=60, deadline=None)
@given(ev=events(), function=st.sampled_from(AGG_FUNCTIONS), data=st.data())
def test_merge_is_associative(ev: dict[str, Any], function: str, data: st.DataObject) -> None:
    if not applicable(function, ev["values"]):
        return
    n = len(ev["values"])
    g = np.array(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)), np.int64)
    kw = {k: ev[k] for k in ("values", "valid", "event_ts", "created_ts")}
    parts = [
        S.from_events(
            function,
            groups=ev["entity"][g == i],
            n_groups=3,
            **{k: v[g == i] for k, v in kw.items()},
        )
        for i in range(3)
    ]
    left = S.merge(S.merge(parts[0], parts[1]), parts[2])
    right = S.merge(parts[0], S.merge(parts[1], parts[2]))
    lv, lok = S.finalize(left)
    rv, rok = S.finalize(right)
    assert lok.tolist() == rok.tolist()
    rel = 1e-9 if function in FLOAT_ORDER_SENSITIVE else 0.0
    for a, b, ok in zip(lv.tolist(), rv.tolist(), lok.tolist(), strict=True):
        if ok:
            assert same(a, b, rel=rel)


def test_compact_vectorised_layout() -> None:
    states = S.from_events(
        "stddev", groups=np.array([0, 0, 1]), n_groups=2, values=np.array([1.0, 3.0, 5.0])
    )
    assert set(states.fields) == {"n", "mean", "m2"}
    assert states.fields["n"].tolist() == [2, 1]
    assert states.fields["mean"].tolist() == [2.0, 5.0]
    assert states.fields["m2"].tolist() == [2.0, 0.0]
    vals, ok = S.finalize(states)
    assert ok.tolist() == [True, False]
    assert vals[0] == pytest.approx(math.sqrt(2.0))
    table = S.to_arrow(states)
    assert table.num_rows == 2
    assert S.from_arrow(table).fields["m2"].tolist() == [2.0, 0.0]


def test_count_distinct_sets_and_take() -> None:
    states = S.from_events(
        "count_distinct",
        groups=np.array([0, 0, 0, 1, 1]),
        n_groups=3,
        values=np.array([math.nan, -0.0, 0.0, math.nan, math.nan]),
    )
    assert S.finalize(states)[0].tolist() == [2, 1, 0]
    picked = states.take(np.array([1, 1, 0]))
    assert S.finalize(picked)[0].tolist() == [1, 1, 2]
    assert S.finalize(S.merge(states, states))[0].tolist() == [2, 1, 0]


def test_errors() -> None:
    with pytest.raises(DefinitionError, match="mean"):
        S.from_events("mean", groups=np.array([0]), n_groups=1, values=np.array(["a"], object))
    with pytest.raises(DataError, match="first/last need"):
        S.from_events("first", groups=np.array([0]), n_groups=1, values=np.array([1]))
    with pytest.raises(DataError, match="different aggregations"):
        S.merge(S.empty("sum", n=1), S.empty("count", n=1))
    table = S.to_arrow(S.empty("count", n=1))
    future = table.replace_schema_metadata({b"featurestore.aggregate_state": b'{"version": 99}'})
    with pytest.raises(DataError, match="version"):
        S.from_arrow(future)
