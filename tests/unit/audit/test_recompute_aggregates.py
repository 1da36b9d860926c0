"""AggregateRecompute against a brute-force reading of SEMANTICS ("Windowed
aggregations") on a small hand-made event log: values, the newest event and created
time in the audited windows (late data included), in full and as of known time
(leaving out events created after the floored request time), from the offline table
and from the batch source; and the values under a hypothesis (as of known time, at a
shifted request time, from the events up to a cap)."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from featurestore import FeatureStore
from featurestore.audit.recompute import (
    OUT_CREATED,
    OUT_EVENT,
    RECOMPUTES,
    SPINE_CAP,
    SPINE_TIME,
    PlainRecompute,
    recompute_for,
)
from featurestore.audit.recompute_aggregates import AggregateRecompute
from featurestore.engines.aggregate.reference import reference_value
from tests.helpers import write_repo

DEFS = """
import polars as pl
from featurestore import Aggregation, BatchSource, Entity, FeatureView

driver = Entity(name="driver", join_keys={"driver_id": "int64"})
events = BatchSource(name="events", path="data/events.parquet", timestamp_field="ts",
                     created_timestamp_field="created")
activity = FeatureView(
    name="activity", entities=[driver], source=events, ttl=None,
    transform={"double": pl.col("amount") * 2},
    aggregations=[
        Aggregation(name="n_1h", column=None, function="count", window="1h"),
        Aggregation(name="double_sum_1d", column="double", function="sum", window="1d",
                    hop="1h"),
        Aggregation(name="amount_max", column="amount", function="max", window="lifetime"),
        Aggregation(name="amount_last_6h", column="amount", function="last", window="6h",
                    hop="30m"),
    ],
)
"""
FEATURES = ["n_1h", "double_sum_1d", "amount_max", "amount_last_6h"]
US = 1
MIN = 60_000_000
H = 60 * MIN
# name -> (function, window_us, hop_us, the value it reads from an event)
SPECS = {
    "n_1h": ("count", H, None, lambda e: 0),  # count(): every event counts
    "double_sum_1d": ("sum", 24 * H, H, lambda e: None if e[3] is None else e[3] * 2),
    "amount_max": ("max", None, None, lambda e: e[3]),
    "amount_last_6h": ("last", 6 * H, 30 * MIN, lambda e: e[3]),
}
T0 = datetime(2024, 3, 1, tzinfo=UTC)
T0_US = int(T0.timestamp()) * 1_000_000
# (driver, event_ts, created_ts, amount) in microseconds after T0; amounts are exact
# binary fractions, so sums do not depend on the order they are added in.
EVENTS = [
    (1, 1 * H, 1 * H + MIN, 1.0),
    (1, 5 * H + 30 * MIN, 5 * H + 32 * MIN, 2.5),
    (1, 10 * H, 10 * H + MIN, 0.25),
    (1, 10 * H + 20 * MIN, 30 * H, 4.0),  # late: arrives 20 hours after it happened
    (1, 26 * H, 26 * H + MIN, None),  # counted by count(), skipped by the others
    (2, 2 * H, 2 * H + 5 * MIN, 8.0),
    (2, 2 * H, 2 * H + 6 * MIN, 8.0),  # the same event twice: both count
    (2, 20 * H + 1, 20 * H + 2 * MIN, 0.5),
]
# Request times: a grid that does not fall on hours, plus times on purpose.
SPECIAL = [
    (1, 11 * H),  # the 1h window's lower edge is exactly the event at 10:00: out
    (1, 11 * H + 1),  # 1 us later: that event is 1 us outside the window
    (1, 5 * H + 30 * MIN - 1),  # the event 1 us after the request
    (1, 10 * H + 30 * MIN),  # the late event is in the windows, unknown then
    (2, 20 * H),  # the event 1 us after the request
    (2, 26 * H + 2 * MIN),  # 1d window (floored to 26:00) starts at 2:00: both out
]
GRID = [(d, 17 * MIN + i * 47 * MIN) for d in (1, 2, 3) for i in range(48)]


def _brute(
    driver: int, r: int, *, known: bool, features: list[str] = FEATURES, cap: int | None = None
) -> dict:
    """``features`` and the facts over their windows for one request, by reading the
    rules literally (only events up to ``cap``, when given)."""
    mine = [e for e in EVENTS if e[0] == driver and (cap is None or e[1] <= cap)]
    out: dict = {}
    counted: list = []
    for name in features:
        function, window, hop, value = SPECS[name]
        q = r if hop is None else r // hop * hop
        rows = [
            e
            for e in mine
            if e[1] <= q and (window is None or e[1] > q - window) and not (known and e[2] > q)
        ]
        counted += rows
        v, ok = reference_value(
            function, rows=[(e[1], e[2], i, value(e)) for i, e in enumerate(rows)]
        )
        out[name] = v if ok else None
    out[OUT_EVENT] = max((e[1] for e in counted), default=None)
    out[OUT_CREATED] = max((e[2] for e in counted), default=None)
    return out


def _us(frame: pl.DataFrame, column: str) -> list:
    return [None if v is None else v - T0_US for v in frame[column].to_list()]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = write_repo(tmp_path_factory.mktemp("agg") / "repo", {"features.py": DEFS})
    (root / "data").mkdir()
    utc = pl.Datetime("us", "UTC")
    pl.DataFrame(
        {
            "driver_id": [e[0] for e in EVENTS],
            "ts": [T0_US + e[1] for e in EVENTS],
            "created": [T0_US + e[2] for e in EVENTS],
            "amount": [e[3] for e in EVENTS],
        },
        schema={"driver_id": pl.Int64, "ts": pl.Int64, "created": pl.Int64, "amount": pl.Float64},
    ).with_columns(pl.col("ts", "created").cast(utc)).write_parquet(root / "data/events.parquet")
    s = FeatureStore(root)
    s.apply()
    s.backfill()
    yield s
    s.close()


def _spine(rows: list[tuple[int, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {"driver_id": [d for d, _ in rows], SPINE_TIME: [T0_US + r for _, r in rows]},
        schema={"driver_id": pl.Int64, SPINE_TIME: pl.Int64},
    ).with_columns(pl.col(SPINE_TIME).cast(pl.Datetime("us", "UTC")))


def _check(
    answer: pl.DataFrame,
    rows: list[tuple[int, int]],
    *,
    known: bool,
    features: list[str] = FEATURES,
) -> None:
    assert answer.columns == [*features, OUT_EVENT, OUT_CREATED]
    got = {
        **{f: answer[f].to_list() for f in features},
        OUT_EVENT: _us(answer, OUT_EVENT),
        OUT_CREATED: _us(answer, OUT_CREATED),
    }
    for i, (driver, r) in enumerate(rows):
        expected = _brute(driver, r, known=known, features=features)
        row = {k: v[i] for k, v in got.items()}
        assert row == expected, (driver, r, known)


def test_offline_recompute_matches_brute_force(store):
    view = store.index().view("activity")
    rows = GRID + SPECIAL
    both = AggregateRecompute().from_offline(
        view,
        _spine(rows),
        features=FEATURES,
        offline=store.offline,
        table_version=store.offline.version("activity"),
    )
    _check(both.full, rows, known=False)
    _check(both.known, rows, known=True)
    # Not vacuous: the hand-made cases are there.
    full = dict(zip(rows, both.full.iter_rows(named=True), strict=True))
    known = dict(zip(rows, both.known.iter_rows(named=True), strict=True))
    late, without = full[(1, 10 * H + 30 * MIN)], known[(1, 10 * H + 30 * MIN)]
    assert late[OUT_CREATED] - T0_US == 30 * H > 10 * H + 30 * MIN  # shows as > r
    assert (late["n_1h"], late["amount_max"]) == (2, 4.0)
    assert (without["n_1h"], without["amount_max"], without[OUT_CREATED]) == (
        1,
        2.5,
        T0_US + 10 * H + MIN,
    )
    assert full[(1, 11 * H)]["n_1h"] == 1
    assert both.full.filter(pl.col("double_sum_1d").is_not_null()).height > 10
    assert full[(3, 17 * MIN)] == {
        "n_1h": 0,
        "double_sum_1d": None,
        "amount_max": None,
        "amount_last_6h": None,
        OUT_EVENT: None,
        OUT_CREATED: None,
    }


@pytest.mark.parametrize("features", [["n_1h"], ["double_sum_1d"], ["amount_last_6h", "n_1h"]])
def test_fewer_features_read_less_and_still_match(store, features):
    """Without a lifetime window only the events the windows and their edges reach
    are read: from the floored earliest request time minus the window, less one hop.
    (At 34:40 the 1d window with its 1h hop starts after 10:00, not 10:40: it holds
    the event at 10:20; at 26:08 the event at 1:00 is one hop from its lower edge.)"""
    view = store.index().view("activity")
    rows = [(d, r) for d, r in GRID + SPECIAL if r > 26 * H] + [(1, 34 * H + 40 * MIN)]
    both = AggregateRecompute().from_offline(
        view,
        _spine(rows),
        features=features,
        offline=store.offline,
        table_version=store.offline.version("activity"),
    )
    _check(both.full, rows, known=False, features=features)
    _check(both.known, rows, known=True, features=features)


@pytest.mark.parametrize("shift", [-1, 1, -H // 2, H // 2])
def test_hypothesis_at_shifted_times_matches_brute_force(store, shift):
    """The edge hypothesis: the request time moved by the tolerance, as of known time,
    from the events read with that margin (the 1h window's edges sit on events)."""
    view = store.index().view("activity")
    rows = GRID[::3] + SPECIAL
    margin = abs(shift)
    both = AggregateRecompute().from_offline(
        view,
        _spine(rows),
        features=FEATURES,
        offline=store.offline,
        table_version=store.offline.version("activity"),
        margin_us=margin,
    )
    assert both.rows is not None
    moved = [(d, r + shift) for d, r in rows]
    got = AggregateRecompute().hypothesis(view, _spine(moved), both.rows, features=FEATURES)
    assert got.columns == FEATURES
    for i, (driver, r) in enumerate(moved):
        expected = _brute(driver, r, known=True)
        assert {f: got[f][i] for f in FEATURES} == {f: expected[f] for f in FEATURES}


def test_hypothesis_with_caps_counts_only_events_up_to_each_cap(store):
    """The stale-online hypothesis: each spine row sees its entity's events up to its
    own cap (a record's watermark); no cap: every event; the same entity twice with
    different caps gets different answers."""
    view = store.index().view("activity")
    rows = [(1, 31 * H), (1, 31 * H), (1, 31 * H), (2, 21 * H), (3, 21 * H), (1, 11 * H)]
    caps = [26 * H, 10 * H + 10 * MIN, None, 2 * H, 5 * H, -(2**62)]
    both = AggregateRecompute().from_offline(
        view,
        _spine(rows),
        features=FEATURES,
        offline=store.offline,
        table_version=store.offline.version("activity"),
    )
    assert both.rows is not None
    spine = _spine(rows).with_columns(
        pl.Series(SPINE_CAP, [None if c is None else T0_US + c for c in caps], pl.Int64)
    )
    got = AggregateRecompute().hypothesis(view, spine, both.rows, features=FEATURES)
    for i, ((driver, r), cap) in enumerate(zip(rows, caps, strict=True)):
        expected = _brute(driver, r, known=True, cap=cap)
        assert {f: got[f][i] for f in FEATURES} == {f: expected[f] for f in FEATURES}, i
    assert got["amount_max"].to_list()[:3] == [4.0, 2.5, 4.0]  # not vacuous
    assert got["n_1h"].to_list()[-1] == 0


def test_only_audited_features_and_their_windows_count(store):
    view = store.index().view("activity")
    rows = [(1, 10 * H + 30 * MIN), (1, 27 * H)]
    both = AggregateRecompute().from_offline(
        view,
        _spine(rows),
        features=["n_1h"],
        offline=store.offline,
        table_version=store.offline.version("activity"),
    )
    assert both.full.columns == ["n_1h", OUT_EVENT, OUT_CREATED]
    # The 1h window alone: the late event at 10:20 is the newest; at 27:00 nothing.
    assert both.full["n_1h"].to_list() == [2, 0]
    assert _us(both.full, OUT_EVENT) == [10 * H + 20 * MIN, None]
    assert _us(both.full, OUT_CREATED) == [30 * H, None]
    assert _us(both.known, OUT_EVENT) == [10 * H, None]
    assert both.known["n_1h"].to_list() == [1, 0]


def test_source_recompute_equals_offline(store):
    view = store.index().view("activity")
    rows = GRID[::5] + SPECIAL
    spine = _spine(rows)
    offline = AggregateRecompute().from_offline(
        view,
        spine,
        features=FEATURES,
        offline=store.offline,
        table_version=store.offline.version("activity"),
    )
    source = AggregateRecompute().from_source(view, spine, features=FEATURES, repo=store.repo)
    assert source.full.equals(offline.full) and source.known.equals(offline.known)


def test_no_table_counts_zero_and_no_rows_is_empty(store):
    view = store.index().view("activity")
    rows = [(1, 11 * H), (3, 11 * H)]
    both = AggregateRecompute().from_offline(
        view, _spine(rows), features=FEATURES, offline=store.offline, table_version=None
    )
    assert both.full["n_1h"].to_list() == [0, 0]
    assert both.full.select(*FEATURES[1:], OUT_EVENT, OUT_CREATED).null_count().row(0) == (2,) * 5
    empty = AggregateRecompute().from_offline(
        view, _spine([]), features=FEATURES, offline=store.offline, table_version=0
    )
    assert empty.full.height == 0
    assert empty.full.columns == [*FEATURES, OUT_EVENT, OUT_CREATED]


def test_recompute_for_picks_the_aggregate_implementation(store):
    view = store.index().view("activity")
    assert isinstance(recompute_for(view), AggregateRecompute)
    assert [type(r) for r in RECOMPUTES] == [PlainRecompute, AggregateRecompute]
