"""stddev with NaN and nulls: every path gives SEMANTICS' answer.

"stddev is the sample standard deviation (ddof=1), and is null for fewer than 2
values. NaN counts as a value here, and this check comes first: a window holding
only one NaN gives null, one holding NaN and 1.0 gives NaN (as Polars does)."
Nulls are not values. The paths: the batch kernels (scan and sorted, small windows
summed directly and large ones through the moment tree), mergeable states (one
state, and two states merged at every split point), online records (lifetime,
hopped and raw-event slots) and the brute-force reference.
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.engines.aggregate import state as S
from featurestore.engines.aggregate.kernels import Strategy, aggregate_asof
from featurestore.engines.aggregate.online import (
    build_slots,
    decode_record,
    encode_records,
    evaluate,
)
from featurestore.engines.aggregate.reference import reference_value
from featurestore.engines.aggregate.spec import AggFunction, WindowSpec

NULL = None
NAN = math.nan
# Events at 1..n (at most 12), every window asked at T: a hop of 10 divides T, so
# the floored query time is T itself and every window holds every event.
T = 100
# (window values in time order, None = null; the answer, None = null)
CASES = [
    ([NAN], NULL),
    ([NAN, 1.0], NAN),
    ([1.0], NULL),
    ([NULL, NAN], NULL),
    ([NAN, NAN], NAN),
    ([1.0, 2.0], math.sqrt(0.5)),
    ([NULL, 1.0, NULL, 2.0], math.sqrt(0.5)),
    ([NAN, NULL, NULL], NULL),
    ([math.inf, 1.0], NAN),
    ([math.inf], NULL),
    ([], NULL),
]
ONLINE_SPECS = [
    WindowSpec("stddev", None),
    WindowSpec("stddev", 100, 10),
    WindowSpec("stddev", 1000),
]


def _arrays(window: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    values = np.array([0.0 if v is None else v for v in window], np.float64)
    return values, np.array([v is not None for v in window], bool)


def _kernel(
    values: np.ndarray, valid: np.ndarray, *, strategy: Strategy, direct_max: int
) -> float | None:
    n = len(values)
    ((out, ok),) = aggregate_asof(
        event_keys=np.zeros(n, np.int64),
        event_ts=np.arange(1, n + 1, dtype=np.int64),
        created_ts=np.arange(1, n + 1, dtype=np.int64),
        values=values,
        valid=valid,
        query_keys=np.array([0]),
        query_ts=np.array([T]),
        specs=[WindowSpec("stddev", 1000)],
        strategy=strategy,
        direct_max=direct_max,
    )
    return float(out[0]) if ok[0] else None


def _states(values: np.ndarray, valid: np.ndarray, cuts: list[int]) -> float | None:
    """The events cut at ``cuts`` into consecutive states, folded in order."""
    bounds = [0, *cuts, len(values)]
    parts = [
        S.from_events(
            "stddev",
            groups=np.zeros(hi - lo, np.int64),
            n_groups=1,
            values=values[lo:hi],
            valid=valid[lo:hi],
        )
        for lo, hi in itertools.pairwise(bounds)
    ]
    folded = S.combine(S.concat(parts), groups=np.zeros(len(parts), np.int64), n_groups=1)
    out, ok = S.finalize(folded)
    return float(out[0]) if ok[0] else None


def _online(values: np.ndarray, valid: np.ndarray, spec: WindowSpec) -> float | None:
    n = len(values)
    slots = build_slots(
        spec,
        at_us=T,
        entities=np.zeros(n, np.int64),
        n_entities=1,
        event_ts=np.arange(1, n + 1, dtype=np.int64),
        created_ts=np.arange(1, n + 1, dtype=np.int64),
        values=values,
        valid=valid,
    )
    (text,) = encode_records(at_us=T, slots=[slots], n_entities=1)
    at, (slot,) = decode_record(text, functions=["stddev"])
    out, ok = evaluate(spec, [slot], at_us=[at], request_us=T)
    return float(out[0]) if ok[0] else None


def _reference(window: list[Any]) -> float | None:
    value, ok = reference_value("stddev", rows=[(i, i, i, v) for i, v in enumerate(window)])
    return float(value) if ok else None


def _same(a: float | None, b: float | None, *, scale: float = 0.0) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    # Rounding scales with the values in play, not with a result that cancels to ~0.
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b), scale)


def _every_path(window: list[Any]) -> dict[str, float | None]:
    values, valid = _arrays(window)
    answers = {"reference": _reference(window)}
    strategies: tuple[Strategy, ...] = ("scan", "sorted")
    for strategy in strategies:
        for direct_max in (64, 0):  # 0: every window goes through the moment tree
            answers[f"kernel {strategy} direct_max={direct_max}"] = _kernel(
                values, valid, strategy=strategy, direct_max=direct_max
            )
    answers["one state"] = _states(values, valid, [])
    for cut in range(len(window) + 1):
        answers[f"states merged at {cut}"] = _states(values, valid, [cut])
    for spec in ONLINE_SPECS:
        answers[f"online window={spec.window_us} hop={spec.hop_us}"] = _online(values, valid, spec)
    return answers


@pytest.mark.parametrize(("window", "expected"), CASES, ids=[repr(w) for w, _ in CASES])
def test_every_path_gives_the_semantics_answer(window: list[Any], expected: float | None) -> None:
    wrong = {path: got for path, got in _every_path(window).items() if not _same(got, expected)}
    assert not wrong, f"{window}: expected {expected}, got {wrong}"


@pytest.mark.parametrize(("window", "expected"), CASES[:6], ids=[repr(w) for w, _ in CASES[:6]])
def test_polars_agrees_with_the_table(window: list[Any], expected: float | None) -> None:
    got = pl.Series(window, dtype=pl.Float64).std(ddof=1)
    assert got is None or isinstance(got, float)
    assert _same(got, expected)


values_with_gaps = st.one_of(
    st.integers(-40, 40).map(lambda i: i / 4),
    st.floats(-1e3, 1e3, allow_nan=False),
    st.just(NAN),
    st.just(NULL),
    st.sampled_from([math.inf, -math.inf]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(window=st.lists(values_with_gaps, max_size=12), data=st.data())
def test_kernel_state_merges_and_reference_agree(window: list[Any], data: st.DataObject) -> None:
    values, valid = _arrays(window)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(window)), max_size=4), label="cuts"))
    answers = _every_path(window)
    answers[f"states cut at {cuts}"] = _states(values, valid, cuts)
    scale = max((abs(v) for v in window if v is not None and math.isfinite(v)), default=0.0)
    reference = answers.pop("reference")
    wrong = {p: got for p, got in answers.items() if not _same(got, reference, scale=scale)}
    assert not wrong, f"{window}: reference {reference}, got {wrong}"
    counted = sum(v is not None for v in window)
    assert (reference is None) == (counted < 2)  # the count check comes first


@pytest.mark.parametrize("function", ["sum", "mean", "stddev"])
def test_merging_infinities_gives_nan_without_a_warning(function: AggFunction) -> None:
    # inf + -inf is NaN by IEEE and by SEMANTICS: intended, so numpy must not warn.
    values = np.array([1.0, math.inf, 2.0, -math.inf])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one = S.from_events(function, groups=np.zeros(4, np.int64), n_groups=1, values=values)
        single = [
            S.from_events(
                function, groups=np.zeros(1, np.int64), n_groups=1, values=values[i : i + 1]
            )
            for i in range(4)
        ]
        merged = S.merge(S.merge(single[0], single[1]), S.merge(single[2], single[3]))
        results = [S.finalize(one), S.finalize(merged)]
    for out, ok in results:
        assert ok.tolist() == [True]
        assert math.isnan(out[0])
