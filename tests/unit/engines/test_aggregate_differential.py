"""Differential harness: three independent paths to a windowed aggregate must agree.

For generated event streams (a few keys, out-of-order and late events, duplicates,
events tied on (key, event_ts, created_ts) with other values, events exactly on
window and hop edges, empty windows, nulls, NaN) and query times, in the order
generated and in a random permutation of it:

* training: the batch kernels (``kernels.aggregate_asof``, both strategies),
* online: records built as of ``T = t`` (``online.build_slots``), encoded, decoded and
  evaluated at the request time ``r = t``, with no store in between,
* ``reference.py``: brute force, the executable reading of SEMANTICS.

Counts, min, max, first, last and count_distinct must be identical. Float sum, mean
and stddev may be summed in another order (tiles, prefix sums, Chan merges), so
they agree within 1e-9 relative to the magnitude of the values in play: rounding
errors scale with the inputs, not with a result that can cancel to about zero
(a stddev of equal values is 0 one way and 1e-13 another).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.engines.aggregate.kernels import aggregate_asof
from featurestore.engines.aggregate.online import (
    build_slots,
    decode_record,
    encode_records,
    evaluate,
)
from featurestore.engines.aggregate.reference import reference_aggregate
from featurestore.engines.aggregate.spec import AGG_FUNCTIONS, NUMERIC_ONLY, WindowSpec

HOP = 10
KEYS = 3
ROUNDING = {"sum", "mean", "stddev"}
CASES = {"n": 0, "compared": 0}


@st.composite
def streams(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(0, 40))
    kind = draw(st.sampled_from(["float", "float", "int", "bool", "str"]))
    edge = st.integers(-3, 6).map(lambda k: k * HOP)  # exactly on hop/window edges
    near = (
        st.integers(-3, 6).map(lambda k: k * HOP).flatmap(lambda t: st.sampled_from([t - 1, t + 1]))
    )
    ets = draw(st.lists(st.one_of(edge, near, st.integers(-35, 65)), min_size=n, max_size=n))
    if n and draw(st.booleans()):  # exact duplicates are two events
        ets[-1] = ets[0]
    if kind == "float":
        pool: st.SearchStrategy[Any] = st.one_of(
            st.floats(0.5, 1000.0),
            st.integers(-40, 40).map(lambda i: i / 4),
            st.just(math.nan),
        )
        dtype: Any = np.float64
    elif kind == "int":
        pool, dtype = st.integers(-(2**40), 2**40), np.int64
    elif kind == "bool":
        pool, dtype = st.booleans(), bool
    else:
        pool, dtype = st.sampled_from(["a", "b", "zz", ""]), object
    values = np.array(draw(st.lists(pool, min_size=n, max_size=n)), dtype=dtype)
    lags = draw(st.lists(st.sampled_from([0, 0, 1, 7, 25]), min_size=n, max_size=n))
    keys = draw(st.lists(st.integers(0, KEYS - 1), min_size=n, max_size=n))
    cts = [e + lag for e, lag in zip(ets, lags, strict=True)]  # late arrivals
    # Events tied on (key, event_ts, created_ts) with other values: first/last
    # must pick by value, not by where the copy lands in the input.
    for _ in range(draw(st.integers(0, n // 2))):
        src, dst = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        keys[dst], ets[dst], cts[dst] = keys[src], ets[src], cts[src]
    return {
        "keys": np.array(keys, np.int64),
        "ets": np.array(ets, np.int64),
        "cts": np.array(cts, np.int64),
        "values": values.reshape(n) if n else np.empty(0, dtype),
        "valid": np.array(
            draw(st.lists(st.sampled_from([True, True, True, False]), min_size=n, max_size=n)),
            bool,
        ),
    }


def _permuted(ev: dict[str, Any], perm: list[int]) -> dict[str, Any]:
    return {k: v[np.array(perm, np.int64)] if len(v) else v for k, v in ev.items()}


@st.composite
def window_specs(draw: st.DrawFn, kind: str) -> WindowSpec:
    allowed = [f for f in AGG_FUNCTIONS if kind in "fib" or f not in NUMERIC_ONLY]
    function = draw(st.sampled_from(allowed))
    window = draw(st.sampled_from([None, HOP, 2 * HOP, 3 * HOP, 7]))
    hop = draw(st.sampled_from([None, HOP])) if window is None or window % HOP == 0 else None
    return WindowSpec(function, window, hop)


def _online(
    ev: dict[str, Any], spec: WindowSpec, t: int, count_only: bool, *, r: int | None = None
) -> tuple[Any, Any]:
    """Records built as of ``t``, evaluated at the request time ``r`` (default ``t``)."""
    slots = build_slots(
        spec,
        at_us=t,
        entities=ev["keys"],
        n_entities=KEYS,
        event_ts=ev["ets"],
        created_ts=ev["cts"],
        values=None if count_only else ev["values"],
        valid=ev["valid"],
    )
    records = encode_records(at_us=t, slots=[slots], n_entities=KEYS)
    decoded = [decode_record(r, functions=[spec.function]) for r in records]
    slots_read = [d[1][0] for d in decoded]
    at = [d[0] for d in decoded]
    return evaluate(spec, slots_read, at_us=at, request_us=t if r is None else r)


def _same(function: str, a: Any, b: Any, scale: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        a, b = float(a), float(b)
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        if function in ROUNDING:
            return abs(a - b) <= 1e-9 * max(abs(a), abs(b), scale)
    return bool(a == b)


def _py(values: Any, valid: Any) -> list[Any]:
    return [
        (v.item() if hasattr(v, "item") else v) if ok else None
        for v, ok in zip(list(values), list(valid), strict=True)
    ]


@settings(
    max_examples=250,
    deadline=None,  # the first example compiles the Numba kernels
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data(), ev=streams())
def test_training_online_and_reference_agree(data: st.DataObject, ev: dict[str, Any]) -> None:
    kind = ev["values"].dtype.kind if ev["values"].dtype.kind != "O" else "s"
    specs = data.draw(st.lists(window_specs(kind), min_size=1, max_size=3))
    count_only = data.draw(st.booleans()) and all(s.function == "count" for s in specs)
    times = data.draw(
        st.lists(
            st.one_of(st.integers(-3, 7).map(lambda k: k * HOP), st.integers(-40, 75)),
            min_size=1,
            max_size=4,
        )
    )
    strategy = data.draw(st.sampled_from(["scan", "sorted"]))
    q_keys = np.repeat(np.arange(KEYS, dtype=np.int64), len(times))
    q_ts = np.tile(np.array(times, np.int64), KEYS)
    values = None if count_only else ev["values"]
    common = {
        "event_keys": ev["keys"],
        "event_ts": ev["ets"],
        "created_ts": ev["cts"],
        "values": values,
        "valid": ev["valid"],
        "query_keys": q_keys,
        "query_ts": q_ts,
        "specs": specs,
    }
    training = aggregate_asof(**common, strategy=strategy)
    reference = reference_aggregate(**common)
    # The same log in another order (another file layout, another arrival order).
    perm = data.draw(st.permutations(range(len(ev["keys"]))))
    shuffled = _permuted(ev, perm)
    moved = {
        **common,
        "event_keys": shuffled["keys"],
        "event_ts": shuffled["ets"],
        "created_ts": shuffled["cts"],
        "values": None if count_only else shuffled["values"],
        "valid": shuffled["valid"],
    }
    training_moved = aggregate_asof(**moved, strategy=strategy)
    finite = [abs(float(v)) for v in ev["values"] if kind in "fib" and not math.isnan(float(v))]
    scale = max(finite, default=0.0)
    for spec, (t_vals, t_ok), (m_vals, m_ok), (r_vals, r_ok) in zip(
        specs, training, training_moved, reference, strict=True
    ):
        batch = _py(t_vals, t_ok)
        batch_moved = _py(m_vals, m_ok)
        brute = [v if ok else None for v, ok in zip(r_vals, r_ok, strict=True)]
        online: list[Any] = [None] * len(q_ts)
        online_moved: list[Any] = [None] * len(q_ts)
        for j, t in enumerate(times):
            for out, log in ((online, ev), (online_moved, shuffled)):
                o_vals, o_ok = _online(log, spec, t, count_only)
                for k in range(KEYS):
                    out[k * len(times) + j] = _py(o_vals[k : k + 1], o_ok[k : k + 1])[0]
        for i in range(len(q_ts)):
            where = f"{spec} key={q_keys[i]} t={q_ts[i]}"
            for got in (batch[i], batch_moved[i], online[i], online_moved[i]):
                assert _same(spec.function, got, brute[i], scale), (where, got, brute[i])
            CASES["compared"] += 1
    # A record built at T answers later requests exactly for the events known at T:
    # the windows' lower edges move past stored events and tiles.
    later = data.draw(st.sampled_from([1, HOP - 1, HOP, 2 * HOP + 3, 45]))
    t = times[0]
    known = ev["ets"] <= t
    ref_later = reference_aggregate(
        event_keys=ev["keys"][known],
        event_ts=ev["ets"][known],
        created_ts=ev["cts"][known],
        values=None if values is None else values[known],
        valid=ev["valid"][known],
        query_keys=np.arange(KEYS),
        query_ts=np.full(KEYS, t + later),
        specs=specs,
    )
    for spec, (r_vals, r_ok) in zip(specs, ref_later, strict=True):
        o_vals, o_ok = _online(ev, spec, t, count_only, r=t + later)
        for k, got in enumerate(_py(o_vals, o_ok)):
            want = r_vals[k] if r_ok[k] else None
            assert _same(spec.function, got, want, scale), (spec, k, t, later, got, want)
            CASES["compared"] += 1
    CASES["n"] += 1


def test_the_harness_ran_enough_cases() -> None:
    # Runs after the property test in file order: at least 200 generated streams.
    if CASES["n"]:
        assert CASES["n"] >= 200, CASES
        assert CASES["compared"] >= 1000, CASES
