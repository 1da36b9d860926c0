"""Windowed aggregation kernels against the brute-force reference (SEMANTICS: Windowed
aggregations), plus worked examples of each rule."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.engines.aggregate.kernels import Workload, aggregate_asof
from featurestore.engines.aggregate.reference import reference_aggregate
from featurestore.engines.aggregate.spec import AGG_FUNCTIONS, WindowSpec
from featurestore.errors import DataError, DefinitionError

WINDOWS = [None, 1, 5, 10, 30]
HOPS = [None, None, 1, 3, 7]
SPECIAL_FLOATS = [math.nan, math.inf, -math.inf, -0.0, 0.0]


def same(a: Any, b: Any, *, exact: bool) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        if exact or math.isinf(a) or math.isinf(b):
            return a == b
        return abs(a - b) <= 1e-9 * max(abs(a), abs(b))
    return bool(a == b)


def check(
    kernel: list[tuple[np.ndarray, np.ndarray]], ref: list, specs: list, *, exact: bool
) -> None:
    for spec, (kv, kok), (rv, rok) in zip(specs, kernel, ref, strict=True):
        assert kok.tolist() == rok, spec
        for i, (a, b, good) in enumerate(zip(kv.tolist(), rv, rok, strict=True)):
            if good:
                assert same(a, b, exact=exact), (spec, i, a, b)


def column(draw: st.DrawFn, values: st.SearchStrategy[Any], n: int) -> list[Any]:
    return draw(st.lists(values, min_size=n, max_size=n))


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    n_keys = draw(st.integers(1, 4))
    n = draw(st.integers(0, 60))
    # Few distinct instants: duplicates, ties and hits on window edges are common.
    ets = column(draw, st.integers(-40, 40), n)
    lags = column(draw, st.sampled_from([0, 0, 1, 3, 20, -2]), n)
    kind = draw(st.sampled_from(["float", "int", "bool"]))
    if kind == "float":
        pool = st.one_of(
            st.integers(-400, 400).map(lambda i: i / 4), st.sampled_from(SPECIAL_FLOATS)
        )
        values = np.array(column(draw, pool, n), np.float64)
    elif kind == "int":
        values = np.array(column(draw, st.integers(-1000, 1000), n))
    else:
        values = np.array(column(draw, st.booleans(), n), bool)
    nq = draw(st.integers(0, 12))
    q_ts_pool = st.one_of(
        st.integers(-50, 50), st.sampled_from(ets) if ets else st.integers(-50, 50)
    )
    specs = [
        WindowSpec(
            draw(st.sampled_from(AGG_FUNCTIONS)),
            draw(st.sampled_from(WINDOWS)),
            draw(st.sampled_from(HOPS)),
        )
        for _ in range(draw(st.integers(1, 4)))
    ]
    return {
        "event_keys": np.array(column(draw, st.integers(0, n_keys - 1), n), np.int64),
        "event_ts": np.array(ets, np.int64),
        "created_ts": np.array(ets, np.int64) + np.array(lags, np.int64),
        "values": values,
        "valid": np.array(column(draw, st.sampled_from([True, True, True, False]), n), bool),
        "query_keys": np.array(column(draw, st.integers(-1, n_keys), nq), np.int64),
        "query_ts": np.array(column(draw, q_ts_pool, nq), np.int64),
        "specs": specs,
        "as_of_known_time": draw(st.booleans()),
    }


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=scenarios(),
    direct_max=st.sampled_from([64, 64, 0, 2]),
    strategy=st.sampled_from(["auto", "scan", "sorted"]),
)
def test_kernel_matches_reference(case: dict[str, Any], direct_max: int, strategy: str) -> None:
    got = aggregate_asof(**case, direct_max=direct_max, strategy=strategy)
    want = reference_aggregate(**case)
    # The sorted path's direct summation follows the reference's order: identical.
    # Trees and the scan reorder sums of quarters (exact anyway) but compute mean
    # and stddev along other paths, so those are compared within 1e-9.
    exact = strategy == "sorted" and direct_max >= len(case["event_ts"])
    check(got, want, case["specs"], exact=exact)


def test_window_edges_and_hops() -> None:
    # Events at 0, 10, 20 (values 1, 2, 4); one key.
    ev = {
        "event_keys": np.array([0, 0, 0]),
        "event_ts": np.array([0, 10, 20]),
        "created_ts": np.array([0, 10, 20]),
        "values": np.array([1, 2, 4]),
    }
    q = {"query_keys": np.array([0, 0, 0, 0]), "query_ts": np.array([20, 19, 29, 30])}
    (s10, _), (s_hop, _), (life, _) = aggregate_asof(
        **ev, **q, specs=[WindowSpec("sum", 10), WindowSpec("sum", 10, 15), WindowSpec("sum", None)]
    )
    # t=20: (10, 20] holds 20 only (10 is exactly t - window: out). t=19: (9, 19] -> 10.
    # t=29: (19, 29] -> 20. t=30: (20, 30] -> nothing, sum is null (0 in the slot).
    assert s10.tolist() == [4, 2, 4, 0]
    # hop 15 floors 20->15, 19->15, 29->15, 30->30: (5, 15] -> 2, (20, 30] -> none.
    assert s_hop.tolist() == [2, 2, 2, 0]
    assert life.tolist() == [7, 3, 7, 7]


def test_as_of_known_time_and_hop_floor_the_created_cutoff() -> None:
    ev = {
        "event_keys": np.array([0, 0, 0]),
        "event_ts": np.array([0, 5, 6]),
        "created_ts": np.array([0, 9, 6]),  # the event at 5 arrives late, at 9
        "values": np.array([1.0, 2.0, 4.0]),
    }
    specs = [WindowSpec("sum", None), WindowSpec("last", None), WindowSpec("count", None, 4)]
    got = aggregate_asof(
        **ev,
        query_keys=np.array([0, 0, 0]),
        query_ts=np.array([8, 9, 11]),
        specs=specs,
        as_of_known_time=True,
    )
    assert got[0][0].tolist() == [5.0, 7.0, 7.0]
    assert got[1][0].tolist() == [4.0, 4.0, 4.0]  # last by event time, not arrival
    # hop 4: t=8 -> 8, t=9 -> 8 (created 9 > 8: still unknown), t=11 -> 8.
    assert got[2][0].tolist() == [2, 2, 2]


def test_nan_null_and_empty_rules() -> None:
    ev = {
        "event_keys": np.zeros(4, np.int64),
        "event_ts": np.array([1, 2, 3, 4]),
        "created_ts": np.array([1, 2, 3, 4]),
        "values": np.array([math.nan, 3.0, 5.0, math.nan]),
        "valid": np.array([True, True, False, True]),
    }
    fns = ["count", "sum", "mean", "min", "max", "stddev", "first", "last", "count_distinct"]
    specs = [WindowSpec(f, None) for f in fns]
    got = aggregate_asof(
        **ev, query_keys=np.array([0, 0, 1]), query_ts=np.array([4, 1, 4]), specs=specs
    )
    res = {f: g for f, g in zip(fns, got, strict=True)}
    assert res["count"][0].tolist() == [3, 1, 0]  # NaN counts, null does not
    assert math.isnan(res["sum"][0][0]) and math.isnan(res["mean"][0][0])
    assert res["min"][0][0] == 3.0 and res["max"][0][0] == 3.0  # NaN skipped
    assert math.isnan(res["min"][0][1])  # all NaN -> NaN
    assert res["stddev"][1].tolist() == [True, False, False]  # < 2 values -> null
    assert math.isnan(res["first"][0][0]) and math.isnan(res["last"][0][0])
    assert res["count_distinct"][0].tolist() == [2, 1, 0]  # NaN is one value
    for f in fns:  # the key with no events: count 0, everything else null
        assert res[f][1][2] == (f in ("count", "count_distinct"))
        if f in ("count", "count_distinct"):
            assert res[f][0][2] == 0


@pytest.mark.parametrize("strategy", ["scan", "sorted"])
@pytest.mark.parametrize(
    ("values", "first", "last"),
    [
        ([10, 20, 30, 5], 30, 20),
        ([10.0, math.nan, 30.0, 5.0], 30.0, math.nan),  # NaN after every number
        ([-0.0, math.inf, 30.0, 0.0], 30.0, math.inf),
        (["b", "ab", "z", "zz"], "z", "b"),  # by code point
        ([False, True, False, True], False, True),
        (np.array([2**64 - 1, 1, 7, 9], np.uint64), 7, 2**64 - 1),
    ],
)
def test_first_last_ties_go_by_value_in_any_input_order(
    strategy: str, values: Any, first: Any, last: Any
) -> None:
    # (5,6) comes first; (5,7) holds two tied events and (4,9) is out of the window.
    ets, cts = np.array([5, 5, 5, 4]), np.array([7, 7, 6, 9])
    vals = np.asarray(values, dtype=object if isinstance(values[0], str) else None)
    for perm in itertools.permutations(range(3)):
        p = np.array([*perm, 3])
        got = aggregate_asof(
            event_keys=np.zeros(4, np.int64),
            event_ts=ets[p],
            created_ts=cts[p],
            values=vals[p],
            query_keys=np.array([0]),
            query_ts=np.array([5]),
            specs=[WindowSpec("first", 1), WindowSpec("last", 1)],
            strategy=strategy,
        )
        for (v, ok), want in zip(got, (first, last), strict=True):
            assert ok.tolist() == [True]
            if isinstance(want, float) and math.isnan(want):
                assert math.isnan(v[0]), perm
            else:
                assert v[0] == want, (perm, v[0], want)


@pytest.mark.parametrize("strategy", ["scan", "sorted"])
def test_zeros_tie_with_negative_zero_first(strategy: str) -> None:
    for order in ([0.0, -0.0], [-0.0, 0.0]):
        got = aggregate_asof(
            event_keys=np.zeros(2, np.int64),
            event_ts=np.ones(2, np.int64),
            created_ts=np.ones(2, np.int64),
            values=np.array(order),
            query_keys=np.array([0]),
            query_ts=np.array([1]),
            specs=[WindowSpec("first", None), WindowSpec("last", None)],
            strategy=strategy,
        )
        assert math.copysign(1.0, got[0][0][0]) == -1.0
        assert math.copysign(1.0, got[1][0][0]) == 1.0


@pytest.mark.parametrize("strategy", ["scan", "sorted"])
def test_float_sums_survive_huge_values_outside_the_window(strategy: str) -> None:
    # A prefix sum would return 0 here: 1e20 swamps everything that follows it.
    # Windows of ~2000 events also take the sorted path's trees of partial sums.
    rng = np.random.default_rng(7)
    n = 5000
    ets = np.arange(n, dtype=np.int64)
    values = rng.uniform(0.5, 1.5, n)
    values[:100] = 1e20
    values[100:200] = -1e20
    spec = [WindowSpec("sum", 2000), WindowSpec("mean", 2000), WindowSpec("stddev", 2000)]
    keys = np.zeros(n, np.int64)
    qts = rng.integers(2300, n, 200)
    got = aggregate_asof(
        event_keys=keys,
        event_ts=ets,
        created_ts=ets,
        values=values,
        query_keys=np.zeros(200, np.int64),
        query_ts=qts,
        specs=spec,
        strategy=strategy,
    )
    for (vals, _), s in zip(got, spec, strict=True):
        for q, t in enumerate(qts):
            w = values[(ets > t - 2000) & (ets <= t)]
            want = {"sum": math.fsum(w), "mean": math.fsum(w) / len(w), "stddev": w.std(ddof=1)}
            assert vals[q] == pytest.approx(want[s.function], rel=1e-9)


def test_large_unsorted_groups_and_arbitrary_query_order() -> None:
    rng = np.random.default_rng(11)
    n = 1500
    keys = rng.integers(0, 3, n)
    ets = rng.integers(0, 500, n)  # many ties, heavily out of order
    cts = ets + rng.integers(-5, 30, n)
    values = rng.integers(-50, 50, n)
    valid = rng.random(n) > 0.1
    qk = rng.integers(-1, 4, 150)
    qt = rng.integers(-10, 520, 150)
    specs = [
        WindowSpec(f, w, h) for f in AGG_FUNCTIONS for w, h in [(None, None), (40, None), (100, 7)]
    ]
    for as_of in (False, True):
        args = {
            "event_keys": keys,
            "event_ts": ets,
            "created_ts": cts,
            "values": values,
            "valid": valid,
            "query_keys": qk,
            "query_ts": qt,
            "specs": specs,
            "as_of_known_time": as_of,
        }
        want = reference_aggregate(**args)
        for strategy in ("scan", "sorted"):
            check(aggregate_asof(**args, strategy=strategy), want, specs, exact=False)


@pytest.mark.parametrize(
    "values",
    [
        np.array(["b", "a", "c", "a", None, "b"], dtype=object),
        np.array([2**64 - 1, 5, 2**63, 7, 0, 1], dtype=np.uint64),
        np.array([-3, 9, 2, -8, 0, 1], dtype=np.int8),
        np.array([1.5, -2.0, 3.25, 0.0, 7.0, -1.0], dtype=np.float32),
        np.array([1, 5, 3, 2, 9, 4], dtype="datetime64[us]"),
    ],
)
def test_min_max_first_last_distinct_keep_dtypes(values: np.ndarray) -> None:
    valid = np.array([v is not None for v in values.tolist()])
    args = {
        "event_keys": np.array([0, 0, 0, 1, 1, 1]),
        "event_ts": np.array([3, 1, 2, 1, 2, 2]),
        "created_ts": np.array([3, 1, 2, 1, 2, 2]),
        "values": values,
        "valid": valid,
        "query_keys": np.array([0, 1, 0, 1, -1]),
        "query_ts": np.array([3, 2, 1, 1, 3]),
    }
    specs = [WindowSpec(f, None) for f in ("min", "max", "first", "last", "count_distinct")]
    ref_values = values.astype(np.int64) if values.dtype.kind == "M" else values
    want = reference_aggregate(**{**args, "values": ref_values}, specs=specs)
    for strategy in ("scan", "sorted"):
        got = aggregate_asof(**args, specs=specs, strategy=strategy)
        for (kv, _), s in zip(got[:4], specs[:4], strict=True):
            assert kv.dtype == values.dtype, s
        got_cmp = [(v.astype(np.int64) if v.dtype.kind == "M" else v, ok) for v, ok in got]
        check(got_cmp, want, specs, exact=True)


def test_errors_name_the_culprit() -> None:
    base = {
        "event_keys": np.array([0]),
        "event_ts": np.array([1]),
        "created_ts": np.array([1]),
        "query_keys": np.array([0]),
        "query_ts": np.array([1]),
    }
    with pytest.raises(DefinitionError, match="sum"):
        aggregate_asof(**base, values=np.array(["x"], dtype=object), specs=[WindowSpec("sum", 5)])
    with pytest.raises(DefinitionError, match="only count"):
        aggregate_asof(**base, specs=[WindowSpec("max", 5)])
    with pytest.raises(DataError, match="event_ts"):
        aggregate_asof(**{**base, "event_ts": np.array([1.5])}, specs=[WindowSpec("count", 5)])
    with pytest.raises(DataError, match="one entry per event"):
        aggregate_asof(**base, values=np.array([1, 2]), specs=[WindowSpec("count", 5)])
    with pytest.raises(DefinitionError, match="window_us"):
        WindowSpec("sum", 0)
    with pytest.raises(DefinitionError, match="function"):
        WindowSpec("median", 5)  # type: ignore[arg-type]


def test_sparse_key_codes_are_recoded() -> None:
    got = aggregate_asof(
        event_keys=np.array([10**12, 5]),
        event_ts=np.array([1, 1]),
        created_ts=np.array([1, 1]),
        query_keys=np.array([10**12, 5, 7]),
        query_ts=np.array([1, 1, 1]),
        specs=[WindowSpec("count", None)],
    )
    assert got[0][0].tolist() == [1, 1, 0]


def test_partitioned_layout_takes_the_merging_scan() -> None:
    # As the offline store writes events: partitions, each sorted by key. Keys are
    # coded in key order, so the scan merges the partitions' runs by key.
    rng = np.random.default_rng(5)
    parts = []
    for day in range(4):
        keys = np.sort(rng.integers(0, 40, 300))
        parts.append((keys, day * 1000 + rng.integers(0, 1000, 300)))
    keys = np.concatenate([k for k, _ in parts])
    ets = np.concatenate([t for _, t in parts])
    values = rng.normal(size=len(keys)).round(2)
    args = {
        "event_keys": keys,
        "event_ts": ets,
        "created_ts": ets + 3,
        "values": values,
        "query_keys": rng.integers(-1, 42, 60),
        "query_ts": rng.integers(0, 4100, 60),
    }
    work = Workload(**{k: v for k, v in args.items() if k != "values"}, n_keys=42)
    assert work.pairs_and_runs()[1] == 4
    assert work.use_scan(3)
    specs = [WindowSpec(f, w) for f in AGG_FUNCTIONS for w in (None, 500, 2000)]
    want = reference_aggregate(**args, valid=None, specs=specs)
    check(aggregate_asof(**args, specs=specs), want, specs, exact=False)
    # A shuffled copy of the same events goes the sorted way, to the same answers.
    shuffle = rng.permutation(len(keys))
    mixed = {
        **args,
        **{k: args[k][shuffle] for k in ("event_keys", "event_ts", "values")},
        "created_ts": args["created_ts"][shuffle],
    }
    mixed_work = Workload(**{k: v for k, v in mixed.items() if k != "values"}, n_keys=42)
    assert not mixed_work.use_scan(3)
    want = reference_aggregate(**mixed, valid=None, specs=specs)
    check(aggregate_asof(**mixed, specs=specs), want, specs, exact=False)
