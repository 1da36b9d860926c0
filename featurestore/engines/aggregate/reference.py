"""Brute-force windowed aggregations in plain Python: the executable form of SEMANTICS.

Slow on purpose (every query looks at every event) and written for reading, so the
fast kernels can be tested against it. Summation runs in (event_ts, created_ts,
input position) order, the order the kernels use for small windows, so float
results match them bit for bit there. ``first``/``last`` break (event_ts,
created_ts) ties by value, never by position.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from featurestore.engines.aggregate.spec import WindowSpec

# (event_ts, created_ts, input position, value or None for null)
Row = tuple[int, int, int, Any]


def _wrap_int64(x: int) -> int:
    # Integer sums wrap at 64 bits, as numpy, Polars and the kernels do.
    return (x + 2**63) % 2**64 - 2**63


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _value_key(v: Any) -> tuple[Any, ...]:
    """Values in Polars' sort order: NaN after every number; -0.0 before 0.0 (a tie
    to Polars, broken the way the kernels break it). The value itself comes last."""
    if _is_nan(v):
        return (1, 0, 0, v)
    if isinstance(v, float):
        return (0, v, math.copysign(1.0, v), v)
    return (0, v, 0, v)


def reference_value(function: str, *, rows: Sequence[Row]) -> tuple[Any, bool]:
    """The value of ``function`` over ``rows`` as ``(value, valid)``; invalid = null."""
    ordered = sorted(rows, key=lambda r: (r[0], r[1], r[2]))
    vals = [r[3] for r in ordered if r[3] is not None]
    n = len(vals)
    if function == "count":
        return n, True
    if function == "count_distinct":
        # NaN is one distinct value; -0.0 == 0.0 already in a Python set.
        return len({"nan" if _is_nan(v) else v for v in vals}), True
    if n == 0:
        return None, False
    is_float = any(isinstance(v, float) for v in vals)
    if function in ("sum", "mean"):
        if is_float:
            total: Any = 0.0
            for v in vals:
                total = total + float(v)
        else:
            total = _wrap_int64(sum(int(v) for v in vals))
        if function == "sum":
            return total, True
        return float(total) / n, True
    if function == "stddev":
        if n < 2:
            return None, False
        xs = [float(v) for v in vals]
        s = 0.0
        for x in xs:
            s = s + x
        mean = s / n
        m2 = 0.0
        for x in xs:
            d = x - mean
            m2 = m2 + d * d
        return math.sqrt(m2 / (n - 1)), True
    if function in ("min", "max"):
        numbers = [v for v in vals if not _is_nan(v)]
        if not numbers:
            return math.nan, True
        return (min(numbers) if function == "min" else max(numbers)), True
    if function in ("first", "last"):
        # Ties on (event_ts, created_ts): first takes the smallest value, last the
        # largest, so every path agrees whatever order its rows come in.
        edge = sorted(
            ((r[0], r[1], _value_key(r[3])) for r in ordered if r[3] is not None),
            key=lambda e: (e[0], e[1], e[2]),
        )
        return edge[0 if function == "first" else -1][2][-1], True
    raise ValueError(f"unknown function {function!r}")


def reference_aggregate(
    *,
    event_keys: Sequence[int] | np.ndarray,
    event_ts: Sequence[int] | np.ndarray,
    created_ts: Sequence[int] | np.ndarray,
    values: Sequence[Any] | np.ndarray | None,
    valid: Sequence[bool] | np.ndarray | None,
    query_keys: Sequence[int] | np.ndarray,
    query_ts: Sequence[int] | np.ndarray,
    specs: Sequence[WindowSpec],
    as_of_known_time: bool = False,
) -> list[tuple[list[Any], list[bool]]]:
    """Same contract as ``kernels.aggregate_asof``, answered by brute force.

    Returns, per spec, Python lists ``(values, valid)`` in query order.
    """
    keys = [int(k) for k in np.asarray(event_keys).tolist()]
    ets = [int(t) for t in np.asarray(event_ts).tolist()]
    cts = [int(t) for t in np.asarray(created_ts).tolist()]
    n = len(keys)
    raw = [0] * n if values is None else np.asarray(values).tolist()
    ok = [True] * n if valid is None else [bool(v) for v in np.asarray(valid).tolist()]
    vals = [v if good else None for v, good in zip(raw, ok, strict=True)]
    out: list[tuple[list[Any], list[bool]]] = []
    for spec in specs:
        res_v: list[Any] = []
        res_ok: list[bool] = []
        queries = zip(np.asarray(query_keys).tolist(), np.asarray(query_ts).tolist(), strict=True)
        for qk, qt in queries:
            t = spec.query_time(int(qt))
            rows: list[Row] = []
            if qk >= 0:
                for i in range(n):
                    if keys[i] != qk or ets[i] > t:
                        continue
                    if spec.window_us is not None and ets[i] <= t - spec.window_us:
                        continue
                    if as_of_known_time and cts[i] > t:
                        continue
                    rows.append((ets[i], cts[i], i, vals[i]))
            v, good = reference_value(spec.function, rows=rows)
            res_v.append(v)
            res_ok.append(good)
        out.append((res_v, res_ok))
    return out
