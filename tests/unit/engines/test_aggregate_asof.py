"""The Polars driver: spine in, spine plus aggregates out, checked against the reference."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.engines.aggregate.asof import aggregate_spine
from featurestore.engines.aggregate.reference import reference_aggregate
from featurestore.engines.aggregate.spec import WindowSpec
from featurestore.errors import DataError, DefinitionError, RequestError

T0 = datetime(2024, 3, 1, tzinfo=UTC)
US = 1_000_000
UTC_US = pl.Datetime("us", "UTC")


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def expected(
    events: pl.DataFrame,
    spine: pl.DataFrame,
    keys: list[str],
    column: str | None,
    spec: WindowSpec,
    as_of: bool,
) -> tuple[list[Any], list[bool]]:
    """The reference answer, with keys coded by hand (any null part: no match)."""
    codes: dict[tuple[Any, ...], int] = {}
    for row in spine.select(keys).iter_rows():
        codes.setdefault(row, len(codes))

    def code(row: tuple[Any, ...]) -> int:
        return -1 if any(v is None for v in row) else codes.get(row, -1)

    values = None if column is None else events[column].to_list()
    return reference_aggregate(
        event_keys=[code(r) for r in events.select(keys).iter_rows()],
        event_ts=events["event_ts"].to_physical().to_list(),
        created_ts=events["created_ts"].to_physical().to_list(),
        values=None
        if values is None
        else np.array([0 if v is None else v for v in values], dtype=object),
        valid=None if values is None else [v is not None for v in values],
        query_keys=[code(r) for r in spine.select(keys).iter_rows()],
        query_ts=spine["timestamp"].to_physical().to_list(),
        specs=[spec],
        as_of_known_time=as_of,
    )[0]


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))
    return bool(a == b)


def column(draw: st.DrawFn, values: st.SearchStrategy[Any], n: int) -> list[Any]:
    return draw(st.lists(values, min_size=n, max_size=n))


@st.composite
def frames(draw: st.DrawFn) -> tuple[pl.DataFrame, pl.DataFrame]:
    n = draw(st.integers(0, 40))
    users = st.one_of(st.none(), st.sampled_from(["ann", "bob", "cy"]))
    secs = st.integers(0, 40)
    floats = st.one_of(st.none(), st.integers(-20, 20).map(lambda i: i / 2), st.just(math.nan))
    ets = column(draw, secs, n)
    events = pl.DataFrame(
        {
            "user": column(draw, users, n),
            "shard": column(draw, st.integers(0, 1), n),
            "event_ts": [at(s) for s in ets],
            "created_ts": [
                at(s + d)
                for s, d in zip(
                    ets,
                    column(draw, st.sampled_from([0, 2, 9]), n),
                    strict=True,
                )
            ],
            "amount": column(draw, floats, n),
            "tag": column(draw, st.one_of(st.none(), st.sampled_from(["x", "y", "é"])), n),
            "qty": column(draw, st.one_of(st.none(), st.integers(-5, 5)), n),
        },
        schema_overrides={
            "user": pl.String,
            "shard": pl.Int64,
            "event_ts": UTC_US,
            "created_ts": UTC_US,
            "amount": pl.Float64,
            "tag": pl.String,
            "qty": pl.Int32,
        },
    )
    m = draw(st.integers(0, 10))
    spine = pl.DataFrame(
        {
            "user": column(draw, users, m),
            "shard": column(draw, st.integers(0, 1), m),
            "timestamp": [at(s) for s in column(draw, st.integers(-5, 50), m)],
            "label": list(range(m)),
        },
        schema_overrides={
            "timestamp": UTC_US,
            "user": pl.String,
            "shard": pl.Int64,
            "label": pl.Int64,
        },
    )
    return events, spine


FUNCS_BY_COLUMN = {
    "amount": ["sum", "mean", "min", "max", "stddev", "count", "first", "last", "count_distinct"],
    "qty": ["sum", "mean", "min", "max", "count_distinct", "last"],
    "tag": ["min", "max", "first", "last", "count", "count_distinct"],
    None: ["count"],
}


@settings(max_examples=100, deadline=None)
@given(
    data=frames(),
    as_of=st.booleans(),
    two_keys=st.booleans(),
    draw=st.data(),
    strategy=st.sampled_from(["auto", "scan", "sorted"]),
)
def test_driver_matches_reference(
    data: tuple[pl.DataFrame, pl.DataFrame],
    as_of: bool,
    two_keys: bool,
    draw: st.DataObject,
    strategy: str,
) -> None:
    events, spine = data
    keys = ["user", "shard"] if two_keys else ["user"]
    aggs = []
    for i in range(draw.draw(st.integers(1, 5))):
        source = draw.draw(st.sampled_from(list(FUNCS_BY_COLUMN)))
        f = draw.draw(st.sampled_from(FUNCS_BY_COLUMN[source]))
        window = draw.draw(st.sampled_from([None, 5 * US, 12 * US]))
        hop = draw.draw(st.sampled_from([None, None, 4 * US]))
        aggs.append((f"a{i}", source, WindowSpec(f, window, hop)))  # type: ignore[arg-type]
    out = aggregate_spine(
        events=events,
        spine=spine,
        keys=keys,
        aggregations=aggs,
        as_of_known_time=as_of,
        strategy=strategy,
    )
    assert out.select(spine.columns).equals(spine)  # spine order and columns kept
    for name, column, spec in aggs:
        want, ok = expected(events, spine, keys, column, spec, as_of)
        got = out[name].to_list()
        for g, w, good in zip(got, want, ok, strict=True):
            assert (g is not None) == good, (name, spec, g, w)
            if good:
                assert same(g, w), (name, spec, g, w)


def test_dtypes_expressions_and_nested_first_last() -> None:
    events = pl.DataFrame(
        {
            "user": [1, 1, 1, 2],
            "event_ts": [at(0), at(10), at(20), at(5)],
            "amount": [1.5, None, 4.0, 2.0],
            "seen": [at(100), at(50), at(70), at(10)],
            "items": [[1], [2, 3], None, [4]],
            "small": pl.Series([3, -1, 7, 2], dtype=pl.Int8),
        },
        schema_overrides={"event_ts": UTC_US, "seen": UTC_US},
    )
    spine = pl.DataFrame(
        {"user": [2, 1, 1, None], "timestamp": [at(30), at(30), at(10), at(30)]},
        schema_overrides={"timestamp": UTC_US},
    )
    out = aggregate_spine(
        events=events,
        spine=spine,
        keys=["user"],
        created_ts=None,
        aggregations=[
            ("double", pl.col("amount") * 2, WindowSpec("sum", None)),
            ("latest_seen", "seen", WindowSpec("max", None)),
            ("last_items", "items", WindowSpec("last", None)),
            ("min_small", "small", WindowSpec("min", 25 * US)),
            ("n", None, WindowSpec("count", None)),
            ("n_amount", "amount", WindowSpec("count", None)),
        ],
    )
    assert out["double"].to_list() == [4.0, 11.0, 3.0, None]
    assert out.schema["latest_seen"] == UTC_US
    assert out["latest_seen"].to_list() == [at(10), at(100), at(100), None]
    assert out["last_items"].to_list() == [[4], [2, 3], [2, 3], None]  # the null row is skipped
    assert out.schema["min_small"] == pl.Int8
    # 25 s windows: user 2 at 30 s is (5, 30], and its event at exactly 5 s is out.
    assert out["min_small"].to_list() == [None, -1, -1, None]
    assert out["n"].to_list() == [1, 3, 2, 0]
    assert out["n_amount"].to_list() == [1, 2, 1, 0]


def test_errors_name_the_culprit() -> None:
    events = pl.DataFrame(
        {"user": [1], "event_ts": [at(0)], "tag": ["x"]}, schema_overrides={"event_ts": UTC_US}
    )
    spine = pl.DataFrame(
        {"user": [1], "timestamp": [at(1)]}, schema_overrides={"timestamp": UTC_US}
    )
    ok = {"events": events, "spine": spine, "keys": ["user"], "created_ts": None}
    with pytest.raises(DefinitionError, match=r"'total'.*sum of a string"):
        aggregate_spine(**ok, aggregations=[("total", "tag", WindowSpec("sum", None))], obj="v")
    with pytest.raises(RequestError, match="user"):
        aggregate_spine(**ok, aggregations=[("user", None, WindowSpec("count", None))])
    naive = spine.with_columns(pl.col("timestamp").dt.replace_time_zone(None))
    with pytest.raises(DataError, match=r"timestamp.*naive"):
        aggregate_spine(
            **{**ok, "spine": naive}, aggregations=[("n", None, WindowSpec("count", None))]
        )
    wrong = spine.with_columns(pl.col("user").cast(pl.String))
    with pytest.raises(DataError, match="key dtypes differ"):
        aggregate_spine(
            **{**ok, "spine": wrong}, aggregations=[("n", None, WindowSpec("count", None))]
        )
    with pytest.raises(DataError, match=r"amount.*Columns present: user, event_ts, tag"):
        aggregate_spine(**ok, aggregations=[("s", "amount", WindowSpec("sum", None))])
    with pytest.raises(DataError, match="cannot evaluate"):
        aggregate_spine(**ok, aggregations=[("s", pl.col("nope") + 1, WindowSpec("sum", None))])
    with pytest.raises(DataError, match=r"uid.*Spine columns"):
        aggregate_spine(
            **ok, spine_keys=["uid"], aggregations=[("n", None, WindowSpec("count", None))]
        )
    no_ts = events.with_columns(pl.lit(None, UTC_US).alias("event_ts"))
    with pytest.raises(DataError, match="null timestamp"):
        aggregate_spine(
            **{**ok, "events": no_ts}, aggregations=[("n", None, WindowSpec("count", None))]
        )
