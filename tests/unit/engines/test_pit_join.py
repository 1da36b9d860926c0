"""point_in_time_join against a brute-force reference written from SEMANTICS."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime, timedelta
from unittest import mock

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.engines.pit import FeatureFrame, event_time_bounds, join, point_in_time_join
from featurestore.errors import DataError

T0 = datetime(2024, 3, 1, tzinfo=UTC)
SEC = 1_000_000
UTC_US = pl.Datetime("us", "UTC")


def _ts(seconds: list[int | None], tz: str = "UTC") -> pl.Series:
    us = [None if s is None else s * SEC + int(T0.timestamp()) * SEC for s in seconds]
    return pl.Series(us, dtype=pl.Int64).cast(UTC_US).dt.convert_time_zone(tz)


def _view(name, frame, *, keys=("k",), spine_keys=None, features=("x",), ttl=None, **kw):
    return FeatureFrame(
        name=name,
        frame=frame,
        join_keys=tuple(keys),
        spine_keys=tuple(spine_keys or keys),
        features=tuple(features),
        output_names=tuple(kw.pop("output_names", features)),
        ttl_us=ttl,
        **kw,
    )


def _reference(spine: dict, views: list[dict], as_of_known_time: bool) -> dict[str, list]:
    """SEMANTICS, row by row, on plain Python values (times in seconds)."""
    out: dict[str, list] = {}
    for v in views:
        for name in v["outputs"]:
            out[name] = []
        for j, t in enumerate(spine["ts"]):
            key = tuple(spine[c][j] for c in v["spine_keys"])
            best = None
            for i, row_key in enumerate(v["keys"]):
                e, c = v["event"][i], v["created"][i] if v["created"] is not None else 0
                if t is None or None in key or row_key != key or e > t:
                    continue
                if v["ttl"] is not None and e <= t - v["ttl"]:
                    continue
                if as_of_known_time and v["created"] is not None and c > t:
                    continue
                if best is None or (e, c, i) > best:
                    best = (e, c, i)
            for name, values in zip(v["outputs"], v["values"], strict=True):
                out[name].append(None if best is None else values[best[2]])
    return out


INT_POOLS = [[0, 1, 2, 3], [-(2**40), 5, 2**50]]  # dense (array table), sparse (hash)
STR_POOL = ["a", "b", "ß"]
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"]


@st.composite
def _case(draw):
    pool = draw(st.sampled_from(INT_POOLS))
    ints = st.one_of(st.none(), st.sampled_from(pool))
    strs = st.one_of(st.none(), st.sampled_from(STR_POOL))
    maybe_small_int = st.one_of(st.none(), st.integers(-5, 5))
    n = draw(st.integers(0, 12))
    spine = {
        "k": draw(st.lists(ints, min_size=n, max_size=n)),
        "s": draw(st.lists(strs, min_size=n, max_size=n)),
        "ts": draw(st.lists(st.one_of(st.none(), st.integers(-2, 24)), min_size=n, max_size=n)),
        "label": list(range(n)),
    }
    views = []
    for number, key_cols in enumerate([("k",), draw(st.sampled_from([("s",), ("k", "s")]))]):
        m = draw(st.integers(0, 15))
        keys = [tuple(draw(ints if c == "k" else strs) for c in key_cols) for _ in range(m)]
        event = draw(st.lists(st.integers(0, 20), min_size=m, max_size=m))
        delay = draw(st.lists(st.integers(-1, 4), min_size=m, max_size=m))
        has_created = number == 0 or draw(st.booleans())
        created = [e + d for e, d in zip(event, delay, strict=True)]
        views.append(
            {
                "name": f"v{number}",
                "spine_keys": key_cols,
                "keys": keys,
                "event": event,
                "created": created if has_created else None,
                "ttl": draw(st.sampled_from([None, 0, 1, 5, 10])),
                "values": [
                    draw(st.lists(maybe_small_int, min_size=m, max_size=m)),
                    [float(i) for i in range(m)],
                ],
                "outputs": [f"v{number}_a", f"v{number}_b"],
                "lazy": draw(st.booleans()),
                "zone": draw(st.sampled_from(ZONES)),
            }
        )
    return (
        spine,
        views,
        draw(st.sampled_from(ZONES)),
        draw(st.booleans()),
        draw(st.sampled_from([4, 1000])),
    )


def _frames(spine: dict, views: list[dict], zone: str):
    spine_df = pl.DataFrame(
        {
            "k": pl.Series(spine["k"], dtype=pl.Int64),
            "s": pl.Series(spine["s"], dtype=pl.String),
            "ts": _ts(spine["ts"], zone),
            "label": pl.Series(spine["label"], dtype=pl.Int64),
        }
    )
    out = []
    for v in views:
        # Frame key columns have their own names, matched to the spine's.
        cols = {
            f"{c}_{v['name']}": pl.Series(
                [key[i] for key in v["keys"]], dtype=pl.Int64 if c == "k" else pl.String
            )
            for i, c in enumerate(v["spine_keys"])
        }
        cols["event_ts"] = _ts(v["event"], v["zone"])
        if v["created"] is not None:
            cols["created_ts"] = _ts(v["created"], v["zone"])
        cols["a"] = pl.Series(v["values"][0], dtype=pl.Int32)
        cols["b"] = pl.Series(v["values"][1], dtype=pl.Float64)
        frame = pl.DataFrame(cols)
        out.append(
            _view(
                v["name"],
                frame.lazy() if v["lazy"] else frame,
                keys=tuple(cols)[: len(v["spine_keys"])],
                spine_keys=v["spine_keys"],
                features=("a", "b"),
                output_names=v["outputs"],
                ttl=None if v["ttl"] is None else v["ttl"] * SEC,
                created_ts="created_ts" if v["created"] is not None else None,
            )
        )
    return spine_df, out


@settings(max_examples=200, deadline=None)
@given(case=_case(), threads=st.sampled_from([1, 2, 3]))
def test_matches_the_reference(case, threads):
    spine, views, zone, known, chunk_rows = case
    spine_df, feature_frames = _frames(spine, views, zone)
    # Any number of kernel threads (lanes of key codes) gives the same answer.
    with mock.patch.object(join, "_threads", return_value=threads):
        got = point_in_time_join(
            spine_df,
            timestamp="ts",
            views=feature_frames,
            as_of_known_time=known,
            chunk_rows=chunk_rows,
        )
    # The spine passes through untouched, in order, with its columns first.
    assert got.select(spine_df.columns).equals(spine_df)
    expected = _reference(spine, views, known)
    assert got.columns == spine_df.columns + list(expected)
    for name, values in expected.items():
        assert got[name].to_list() == values, name
    for v in views:
        assert got.schema[v["outputs"][0]] == pl.Int32
        assert got.schema[v["outputs"][1]] == pl.Float64


# --- rules, one example each -----------------------------------------------------


def _spine(keys, seconds, tz="UTC"):
    return pl.DataFrame({"k": pl.Series(keys, dtype=pl.Int64), "ts": _ts(seconds, tz)})


def _rows(keys, event, created=None, x=None):
    created = event if created is None else created
    x = list(range(len(keys))) if x is None else x
    return pl.DataFrame(
        {
            "k": pl.Series(keys, dtype=pl.Int64),
            "event_ts": _ts(event),
            "created_ts": _ts(created),
            "x": pl.Series(x, dtype=pl.Int64),
        }
    )


def _x(spine, rows, **kw):
    known = kw.pop("as_of_known_time", False)
    out = point_in_time_join(
        spine, timestamp="ts", views=[_view("v", rows, **kw)], as_of_known_time=known
    )
    return out["x"].to_list()


def test_ttl_edge_and_row_at_t():
    rows = _rows([1, 1], [0, 10])
    # At 10 the row at 10 is in; at 20 it is exactly ttl old, so out.
    assert _x(_spine([1, 1, 1], [10, 19, 20]), rows, ttl=10 * SEC) == [1, 1, None]


def test_null_value_is_returned_not_an_older_one():
    rows = _rows([1, 1], [0, 5], x=[7, None])
    assert _x(_spine([1], [6]), rows) == [None]


def test_late_rows_and_as_of_known_time():
    rows = _rows([1, 1], [0, 5], created=[0, 50])
    assert _x(_spine([1, 1], [10, 60]), rows) == [1, 1]
    assert _x(_spine([1, 1], [10, 60]), rows, as_of_known_time=True) == [0, 1]


def test_exact_ties_take_the_last_row_in_input_order():
    rows = _rows([1, 1, 1], [5, 5, 5], created=[6, 6, 2])
    assert _x(_spine([1], [9]), rows) == [1]


def test_duplicate_spine_rows_and_null_keys():
    rows = _rows([1, 2], [0, 0])
    spine = _spine([1, 1, None, 2, 1], [1, 1, 1, 1, 1])
    assert _x(spine, rows) == [0, 0, None, 1, 0]


def test_non_utc_spine_is_converted():
    rows = _rows([1, 1], [0, 3600])
    paris = _spine([1], [3599], tz="Europe/Paris")
    assert _x(paris, rows) == [0]
    assert _x(_spine([1], [3600], tz="Asia/Tokyo"), rows) == [1]


def test_naive_spine_timestamp_names_the_column():
    spine = pl.DataFrame({"k": [1], "when": [datetime(2024, 1, 1)]})
    with pytest.raises(DataError, match=r"when.*naive"):
        point_in_time_join(spine, timestamp="when", views=[_view("v", _rows([1], [0]))])


def test_naive_feature_timestamp_names_the_view():
    rows = _rows([1], [0]).with_columns(pl.col("event_ts").dt.replace_time_zone(None))
    with pytest.raises(DataError, match=r"view 'v', field event_ts.*naive"):
        _x(_spine([1], [0]), rows)


def test_missing_columns_are_named():
    with pytest.raises(DataError, match=r"view 'v', field id.*missing from the spine"):
        _x(_spine([1], [0]), _rows([1], [0]).rename({"k": "id"}), keys=("id",), spine_keys=("id",))
    with pytest.raises(DataError, match=r"view 'v', field y.*missing from the feature frame"):
        _x(_spine([1], [0]), _rows([1], [0]), features=("y",))
    # a lazy scan: the failed read is named from the scan's schema
    with pytest.raises(DataError, match=r"view 'v', field y.*missing from the feature frame"):
        _x(_spine([1], [0]), _rows([1], [0]).lazy(), features=("y",))


def test_key_dtype_mismatch_names_view_column_and_fix():
    rows = _rows([1], [0]).with_columns(pl.col("k").cast(pl.String))
    with pytest.raises(DataError, match=r"view 'v', field k.*String.*Cast one side") as err:
        _x(_spine([1], [0]), rows)
    assert err.value.obj == "view 'v'"


def test_output_name_clash():
    with pytest.raises(DataError, match=r"clashes with a column of the spine"):
        _x(_spine([1], [0]), _rows([1], [0]).rename({"x": "ts"}), features=("ts",))
    views = [_view("a", _rows([1], [0])), _view("b", _rows([1], [0]))]
    with pytest.raises(DataError, match=r"view 'b', field x.*clashes with a column of view 'a'"):
        point_in_time_join(_spine([1], [0]), timestamp="ts", views=views)


def test_null_feature_timestamps_are_rejected():
    rows = pl.concat([_rows([1], [0]), _rows([1], [0]).with_columns(event_ts=None)])
    with pytest.raises(DataError, match=r"view 'v', field event_ts.*1 null"):
        _x(_spine([1], [0]), rows)


def test_empty_inputs():
    assert _x(_spine([1, 2], [0, 5]), _rows([], [])) == [None, None]
    out = point_in_time_join(_spine([], []), timestamp="ts", views=[_view("v", _rows([1], [0]))])
    assert out.height == 0
    assert out.schema["x"] == pl.Int64
    assert _x(_spine([1, 1], [None, None]), _rows([1], [0])) == [None, None]
    spine = _spine([1], [0])
    assert point_in_time_join(spine, timestamp="ts", views=[]).equals(spine)


def test_created_ts_none_ties_go_to_the_last_row():
    rows = _rows([1, 1], [3, 3]).drop("created_ts")
    assert _x(_spine([1], [3]), rows, created_ts=None, as_of_known_time=True) == [1]


def test_uint64_keys_beyond_int64():
    big = 2**64 - 1
    spine = pl.DataFrame({"k": pl.Series([big, 1], dtype=pl.UInt64), "ts": _ts([1, 1])})
    rows = _rows([0, 0], [0, 0]).with_columns(k=pl.Series([1, big], dtype=pl.UInt64))
    assert _x(spine, rows) == [1, 0]


def test_chunks_give_the_same_answer():
    rng = np.random.default_rng(3)
    rows = _rows(rng.integers(0, 50, 2_000).tolist(), rng.integers(0, 1_000, 2_000).tolist())
    spine = _spine(rng.integers(0, 60, 500).tolist(), rng.integers(0, 1_100, 500).tolist())
    # Two views on the same spine key: the second reuses or rebuilds the spine index.
    views = [
        _view("a", rows, ttl=100 * SEC, output_names=("a",)),
        _view("b", rows.lazy(), ttl=None, output_names=("b",)),
    ]
    whole = point_in_time_join(spine, timestamp="ts", views=views)
    for chunk_rows in (77, 499, 500):
        assert whole.equals(
            point_in_time_join(spine, timestamp="ts", views=views, chunk_rows=chunk_rows)
        )
    assert whole["a"].null_count() < whole.height
    assert whole["b"].null_count() < whole["a"].null_count()


def test_partitions_sorted_by_key_take_the_blocked_path(monkeypatch):
    rng = np.random.default_rng(5)
    # Three "date partitions", each sorted by key, read in a shuffled date order,
    # plus one unsorted chunk and one with a null key: every branch of batches().
    parts = []
    for day in (2, 0, 1):
        keys = np.sort(rng.integers(0, 40, 300))
        parts.append(_rows(keys.tolist(), (day * 100 + rng.integers(0, 100, 300)).tolist()))
    parts.append(_rows(rng.integers(0, 40, 50).tolist(), rng.integers(0, 300, 50).tolist()))
    parts.append(_rows([None, 3], [5, 6]))
    offsets = np.cumsum([0] + [p.height for p in parts])
    parts = [
        p.with_columns(x=pl.int_range(pl.len()) + o) for p, o in zip(parts, offsets, strict=False)
    ]
    rows = pl.concat(parts, rechunk=False)
    assert rows.n_chunks("all") == [5] * rows.width
    spine = _spine(rng.integers(0, 45, 400).tolist(), rng.integers(0, 320, 400).tolist())
    views = [_view("v", rows, ttl=60 * SEC)]
    streamed = point_in_time_join(spine, timestamp="ts", views=views)
    monkeypatch.setattr(join, "_BLOCK_KEYS", 4)
    blocked = point_in_time_join(spine, timestamp="ts", views=views)
    assert blocked.equals(streamed)
    # On threads: 2 and 3 lanes cut on block edges (and 64, more than the blocks).
    monkeypatch.setattr(join, "_PARALLEL_ROWS", 0)
    for threads in (2, 3, 64):
        monkeypatch.setattr(join._parallel, "threads", lambda threads=threads: threads)
        codes = join._KeyCodes(spine, ("k",), 10**6, None)
        key_lanes, row_lanes = join._ViewRows(views[0], rows, codes).lanes(
            join._threads(rows.height)
        )
        assert codes.blocks.size > 3
        assert len(key_lanes) == min(threads, codes.blocks.size)
        # The unsorted chunk and the one with a null key: 52 rows in equal shares.
        shares = [sum(len(b[1]) for b in lane) for lane in row_lanes]
        assert sum(shares) == 52
        assert len(shares) == min(threads, 52)
        assert max(shares) - min(shares) <= 52 // len(shares) + 1
        assert point_in_time_join(spine, timestamp="ts", views=views).equals(streamed)
    expected = _reference(
        {"k": spine["k"].to_list(), "ts": [_sec(t) for t in spine["ts"].to_list()]},
        [
            {
                "spine_keys": ("k",),
                "keys": [(k,) for k in rows["k"].to_list()],
                "event": [_sec(t) for t in rows["event_ts"].to_list()],
                "created": [_sec(t) for t in rows["created_ts"].to_list()],
                "ttl": 60,
                "values": [rows["x"].to_list()],
                "outputs": ["x"],
            }
        ],
        as_of_known_time=False,
    )
    assert blocked["x"].to_list() == expected["x"]


def _sec(value: datetime) -> int:
    return round((value - T0).total_seconds())


def test_lazy_frames_and_event_time_bounds():
    rows = _rows([1, 1, 1], [0, 50, 100])
    spine = _spine([1, 1, None], [60, 70, None])
    got = point_in_time_join(spine, timestamp="ts", views=[_view("v", rows.lazy(), ttl=30 * SEC)])
    assert got["x"].to_list() == [1, 1, None]
    at = [T0 + timedelta(seconds=s) for s in (30, 70)]
    assert event_time_bounds(spine, timestamp="ts", ttl_us=30 * SEC) == (at[0], at[1])
    assert event_time_bounds(spine, timestamp="ts", ttl_us=None) == (None, at[1])
    assert event_time_bounds(_spine([1], [None]), timestamp="ts", ttl_us=None) is None


def test_docstring_example_runs():
    result = doctest.testmod(join, raise_on_error=False)
    assert result.attempted > 0
    assert result.failed == 0
