"""Mergeable partial states of windowed aggregations, many at once.

Batch training, materialization, online lookups and the stream worker all need the
same answer for a set of events, computed from pieces: a tile of events per hop, a
micro-batch from Kafka, a state read back from Redis. A ``States`` holds one partial
state per group (entity, tile, query...) as a struct of fixed-dtype numpy arrays, so
a million states cost a few arrays, not a million objects, and store compactly
(``to_arrow``). Three operations define it:

``from_events``  one state per group from raw events (nulls skipped),
``combine``      fold many states into one per group, in array order,
``finalize``     the value SEMANTICS defines, as ``(values, valid)``.

``merge(a, b)`` is ``combine`` of two aligned state sets: associative, and ``a`` is
taken to come before ``b``. Order matters in one place only: float
``sum``/``mean``/``stddev`` follow array order, so two ways of cutting the same
events into states can differ in the last bits. The difference stays within 1e-9
relative unless the window's own values cancel (a sum much smaller than the sum of
magnitudes). Integer sums are exact (wrapping at int64).
``first``/``last`` ties on (event_ts, created_ts) go to the smallest value for
``first`` and the largest for ``last`` (``_ties``), whatever the order or the cut
of the states.

State fields per function (``n`` always counts the non-null values):

==============  =============================================================
count           n
sum, mean       total (int64 for integer/bool input, float64 for floats), n
stddev          n, mean, m2 (Chan et al.: sum of squared deviations)
min, max        best, n (best in the input dtype: for floats NaN until a non-NaN
                value arrives, so all-NaN gives NaN; else the dtype's extreme)
first, last     event_ts, created_ts, value (input dtype), n
count_distinct  offsets (CSR, len + 1), items (sorted distinct values per state)
==============  =============================================================

Floats: NaN and -0.0 are canonicalised in ``count_distinct`` items (every NaN is
one distinct value; -0.0 equals 0.0). ``min``/``max`` skip NaN unless all values
are NaN. ``sum``/``mean`` follow IEEE (NaN in, NaN out; inf - inf is NaN), and
``stddev`` is NaN as soon as a NaN or an infinity is among the values, whatever the
merge order. For ``count()`` over events pass ``values=None``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from featurestore.engines.aggregate._ties import break_ties, tied_runs, value_order
from featurestore.engines.aggregate.spec import AGG_FUNCTIONS, NUMERIC_ONLY, AggFunction
from featurestore.errors import DataError, DefinitionError

if TYPE_CHECKING:
    import pyarrow as pa

STATE_VERSION = 1
_META_KEY = b"featurestore.aggregate_state"


@dataclass(frozen=True)
class States:
    """Partial states of one aggregation function, one per group (see module doc)."""

    function: AggFunction
    dtype: np.dtype[Any]
    fields: Mapping[str, np.ndarray]

    def __len__(self) -> int:
        if self.function == "count_distinct":
            return len(self.fields["offsets"]) - 1
        return len(self.fields["n"])

    def take(self, index: np.ndarray) -> States:
        """The states at ``index`` (positions), in that order."""
        return _select(self, np.asarray(index, dtype=np.int64))


def _is_intlike(dtype: np.dtype[Any]) -> bool:
    return dtype.kind in "iub"


def _check_values(function: str, dtype: np.dtype[Any]) -> None:
    if function not in AGG_FUNCTIONS:
        raise DefinitionError("unknown aggregation function", obj="States", value=function)
    if dtype.kind not in "iubfO":
        raise DataError(
            f"values of dtype {dtype} are not supported",
            obj=f"aggregation {function}",
            field="values",
            value=str(dtype),
            hint="Pass numbers or bools; temporal values as int64 physical units, "
            "strings as an object array",
        )
    if function in NUMERIC_ONLY and dtype.kind not in "iubf":
        raise DefinitionError(
            f"cannot compute {function} of values with dtype {dtype}",
            obj=f"aggregation {function}",
            field="values",
            value=str(dtype),
            hint="Use numeric or bool values",
        )


def _neutral(function: str, dtype: np.dtype[Any]) -> Any:
    """The value of ``best`` while a min/max state has no values (never returned)."""
    if dtype.kind == "f":
        return np.nan  # fmin/fmax skip NaN, so NaN is neutral and also "all NaN"
    if dtype.kind == "b":
        return function == "min"
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return info.max if function == "min" else info.min
    return None


def empty(function: AggFunction, *, dtype: Any = np.float64, n: int = 0) -> States:
    """``n`` states of no events (the identity of ``merge``)."""
    dt = np.dtype(dtype)
    _check_values(function, dt)
    z = np.zeros(n, np.int64)
    if function == "count":
        return States(function, dt, {"n": z})
    if function in ("sum", "mean"):
        total_dt = np.int64 if _is_intlike(dt) else np.float64
        return States(function, dt, {"total": np.zeros(n, total_dt), "n": z})
    if function == "stddev":
        return States(function, dt, {"n": z, "mean": np.zeros(n), "m2": np.zeros(n)})
    if function in ("min", "max"):
        return States(function, dt, {"best": np.full(n, _neutral(function, dt), dt), "n": z})
    if function in ("first", "last"):
        value = np.empty(n, dt) if dt.kind == "O" else np.zeros(n, dt)
        return States(
            function,
            dt,
            {"event_ts": z.copy(), "created_ts": z.copy(), "value": value, "n": z.copy()},
        )
    return States(function, dt, {"offsets": np.zeros(n + 1, np.int64), "items": np.empty(0, dt)})


def from_events(
    function: AggFunction,
    *,
    groups: np.ndarray,
    n_groups: int,
    values: np.ndarray | None = None,
    valid: np.ndarray | None = None,
    event_ts: np.ndarray | None = None,
    created_ts: np.ndarray | None = None,
) -> States:
    """One state per group from events given in input order.

    ``groups[i]`` is the state (0..n_groups-1) event ``i`` belongs to. ``valid``
    marks non-null values (default: all). ``event_ts``/``created_ts`` (int64 us) are
    needed by ``first``/``last`` only. ``values=None`` means ``count()`` of events.
    """
    n = len(groups)
    if values is None:
        if function != "count":
            raise DefinitionError(
                "needs values; only count() may go without", obj=f"aggregation {function}"
            )
        values = np.zeros(n, np.int8)
    vals = np.asarray(values)
    ok = np.ones(n, bool) if valid is None else np.asarray(valid, dtype=bool)
    if len(vals) != n or len(ok) != n:
        raise DataError(
            "values, valid and groups must have the same length",
            obj=f"aggregation {function}",
            value=(len(vals), len(ok), n),
        )
    if function in ("first", "last") and (event_ts is None or created_ts is None):
        raise DataError("first/last need event_ts and created_ts", obj=f"aggregation {function}")
    single = _singletons(function, vals, ok, event_ts, created_ts)
    return combine(single, groups=np.asarray(groups, np.int64), n_groups=n_groups)


def _singletons(
    function: AggFunction,
    vals: np.ndarray,
    ok: np.ndarray,
    event_ts: np.ndarray | None,
    created_ts: np.ndarray | None,
) -> States:
    """One state per event."""
    dt = vals.dtype
    _check_values(function, dt)
    n = ok.astype(np.int64)
    if function == "count":
        return States(function, dt, {"n": n})
    if function in ("sum", "mean"):
        total_dt = np.int64 if _is_intlike(dt) else np.float64
        return States(function, dt, {"total": np.where(ok, vals, 0).astype(total_dt), "n": n})
    if function == "stddev":
        mean = np.where(ok, vals, 0).astype(np.float64)
        return States(function, dt, {"n": n, "mean": mean, "m2": np.zeros(len(n))})
    if function in ("min", "max"):
        best = vals.copy()
        best[~ok] = _neutral(function, dt)
        return States(function, dt, {"best": best, "n": n})
    if function in ("first", "last"):
        if event_ts is None or created_ts is None:
            raise DataError(
                "first/last need event_ts and created_ts", obj=f"aggregation {function}"
            )
        return States(
            function,
            dt,
            {
                "event_ts": np.asarray(event_ts, np.int64),
                "created_ts": np.asarray(created_ts, np.int64),
                "value": vals,
                "n": n,
            },
        )
    items = _canonical(vals[ok])
    return States(function, dt, {"offsets": np.concatenate(([0], np.cumsum(n))), "items": items})


def _canonical(items: np.ndarray) -> np.ndarray:
    if items.dtype.kind != "f":
        return items
    # -0.0 + 0.0 == +0.0, and one bit pattern for NaN, so equal values compare equal.
    out = items + items.dtype.type(0.0)
    out[np.isnan(out)] = np.nan
    return out


def concat(parts: Sequence[States]) -> States:
    """The states of ``parts`` one after the other (same function and dtype)."""
    first = parts[0]
    for p in parts[1:]:
        if p.function != first.function or p.dtype != first.dtype:
            raise DataError(
                "cannot concatenate states of different aggregations",
                obj="States",
                value=(first.function, str(first.dtype), p.function, str(p.dtype)),
            )
    if first.function != "count_distinct":
        return States(
            first.function,
            first.dtype,
            {k: np.concatenate([p.fields[k] for p in parts]) for k in first.fields},
        )
    offsets, items, base = [np.zeros(1, np.int64)], [], 0
    for p in parts:
        offsets.append(p.fields["offsets"][1:] + base)
        items.append(p.fields["items"])
        base += len(p.fields["items"])
    return States(
        first.function,
        first.dtype,
        {"offsets": np.concatenate(offsets), "items": np.concatenate(items)},
    )


def merge(a: States, b: States) -> States:
    """Elementwise ``a[i] ⊕ b[i]``; ``b``'s events are taken to come after ``a``'s."""
    if len(a) != len(b):
        raise DataError("merge needs aligned states", obj="States", value=(len(a), len(b)))
    ids = np.arange(len(a), dtype=np.int64)
    return combine(concat([a, b]), groups=np.concatenate([ids, ids]), n_groups=len(a))


def combine(states: States, *, groups: np.ndarray, n_groups: int) -> States:
    """Fold ``states`` into ``n_groups`` states: state ``i`` goes into ``groups[i]``,
    in array order (so a state earlier in the array counts as earlier in time)."""
    s = states
    g = np.asarray(groups, np.int64)
    if len(g) != len(s):
        raise DataError("groups must give one group per state", obj="States", value=len(g))
    if len(g) and (g.min() < 0 or g.max() >= n_groups):
        raise DataError("group ids must be in 0..n_groups-1", obj="States", value=n_groups)
    f, dt = s.function, s.dtype
    out = empty(f, dtype=dt, n=n_groups)
    fields = {k: v.copy() for k, v in out.fields.items()}
    if f == "count_distinct":
        return _combine_distinct(s, g, n_groups)
    np.add.at(fields["n"], g, s.fields["n"])
    if f in ("sum", "mean"):
        # inf + -inf is NaN, as SEMANTICS asks (numpy would warn "invalid value").
        with np.errstate(invalid="ignore"):
            np.add.at(fields["total"], g, s.fields["total"])
    elif f == "stddev":
        _combine_moments(s.fields, g, fields)
    elif f in ("min", "max"):
        _combine_best(f, s.fields, g, fields)
    elif f in ("first", "last"):
        _combine_edge(f, s.fields, g, fields)
    return States(f, dt, fields)


def _select(states: States, rows: np.ndarray) -> States:
    if states.function != "count_distinct":
        return States(states.function, states.dtype, {k: v[rows] for k, v in states.fields.items()})
    off = states.fields["offsets"]
    lengths = off[rows + 1] - off[rows]
    starts = np.repeat(off[rows], lengths)
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    items = states.fields["items"][starts + within]
    return States(
        states.function,
        states.dtype,
        {"offsets": np.concatenate(([0], np.cumsum(lengths))), "items": items},
    )


def _combine_moments(
    src: Mapping[str, np.ndarray], g: np.ndarray, out: dict[str, np.ndarray]
) -> None:
    # Multi-way form of Chan's update: with the pooled mean M, the pooled M2 is
    # sum(m2_i) + sum(n_i * (mean_i - M)^2). Deviations from the final mean keep it
    # as stable as the two-pass formula (and equal to it for single events).
    n_i, mean_i = src["n"], src["mean"]
    has = n_i > 0
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf give NaN, as SEMANTICS asks
        weighted = np.zeros(len(out["n"]))
        np.add.at(weighted, g[has], n_i[has] * mean_i[has])
        pooled = np.divide(weighted, out["n"], out=np.zeros(len(out["n"])), where=out["n"] > 0)
        dev = mean_i[has] - pooled[g[has]]
        m2 = np.zeros(len(out["n"]))
        np.add.at(m2, g[has], src["m2"][has])
        np.add.at(m2, g[has], n_i[has] * dev * dev)
    out["mean"], out["m2"] = pooled, m2


def _combine_best(
    f: str, src: Mapping[str, np.ndarray], g: np.ndarray, out: dict[str, np.ndarray]
) -> None:
    best, has = src["best"], src["n"] > 0
    if best.dtype.kind == "O":
        # No numeric sentinel for strings: rank them, fold the ranks, map back.
        uniq, codes = np.unique(best[has], return_inverse=True)
        folded = np.full(len(out["n"]), -1 if f == "max" else len(uniq), np.int64)
        (np.maximum if f == "max" else np.minimum).at(folded, g[has], codes)
        filled = out["n"] > 0
        out["best"][filled] = uniq[folded[filled]]
        return
    ufunc: Any
    if best.dtype.kind == "f":
        ufunc = np.fmax if f == "max" else np.fmin
    else:
        ufunc = np.maximum if f == "max" else np.minimum
    ufunc.at(out["best"], g[has], best[has])


def _combine_edge(
    f: str, src: Mapping[str, np.ndarray], g: np.ndarray, out: dict[str, np.ndarray]
) -> None:
    rows = np.flatnonzero(src["n"] > 0)
    if not len(rows):
        return
    ets, cts, gr = src["event_ts"][rows], src["created_ts"][rows], g[rows]
    # Sorted by (group, event_ts, created_ts, value): a group's first row is its
    # first event and its last row its last. Ties on (event_ts, created_ts) go to
    # the smallest value for first and the largest for last (``_ties``), so the
    # answer does not depend on the order states arrive in.
    order = np.lexsort((rows, cts, ets, gr))
    same = tied_runs(gr[order], ets[order], cts[order])
    if same is not None:
        values = src["value"]
        order = order[break_ties(same, lambda at: value_order(values[rows[order[at]]]))]
    gs = gr[order]
    edge = np.empty(len(gs), bool)
    if f == "first":
        edge[0] = True
        edge[1:] = gs[1:] != gs[:-1]
    else:
        edge[-1] = True
        edge[:-1] = gs[1:] != gs[:-1]
    pick = rows[order[edge]]
    dest = gs[edge]
    out["event_ts"][dest] = src["event_ts"][pick]
    out["created_ts"][dest] = src["created_ts"][pick]
    out["value"][dest] = src["value"][pick]


def _combine_distinct(s: States, g: np.ndarray, n_groups: int) -> States:
    off, items = s.fields["offsets"], s.fields["items"]
    item_group = np.repeat(g, np.diff(off))
    order = np.lexsort((items, item_group))
    ig, it = item_group[order], items[order]
    keep = np.ones(len(it), bool)
    if len(it) > 1:
        same = it[1:] == it[:-1]
        if it.dtype.kind == "f":
            same |= np.isnan(it[1:]) & np.isnan(it[:-1])
        keep[1:] = (ig[1:] != ig[:-1]) | ~same
    counts = np.bincount(ig[keep], minlength=n_groups)
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    return States(s.function, s.dtype, {"offsets": offsets, "items": it[keep]})


def finalize(states: States) -> tuple[np.ndarray, np.ndarray]:
    """The SEMANTICS value of each state as ``(values, valid)``; ``valid`` False = null.

    count and count_distinct are never null; stddev is null below 2 values; every
    other function is null without values. Null slots hold 0 (or NaN/None).
    """
    f, fl = states.function, states.fields
    if f == "count_distinct":
        counts = np.diff(fl["offsets"])
        return counts, np.ones(len(counts), bool)
    n = fl["n"]
    if f == "count":
        return n.copy(), np.ones(len(n), bool)
    if f == "sum":
        return fl["total"].copy(), n > 0
    if f == "mean":
        total = fl["total"].astype(np.float64)
        return np.divide(total, n, out=np.zeros(len(n)), where=n > 0), n > 0
    if f == "stddev":
        var = np.divide(fl["m2"], n - 1, out=np.zeros(len(n)), where=n > 1)
        # A NaN or an infinity among the values makes the mean non-finite; the
        # two-pass formula then gives NaN, and so must every merge order.
        return np.where(np.isfinite(fl["mean"]), np.sqrt(var), np.nan), n > 1
    if f in ("min", "max"):
        return fl["best"].copy(), n > 0
    return fl["value"].copy(), n > 0


def to_arrow(states: States) -> pa.Table:
    """A compact, versioned Arrow table of the states (one row per state)."""
    import pyarrow as pa

    meta = {"version": STATE_VERSION, "function": states.function, "dtype": states.dtype.str}
    if states.function == "count_distinct":
        col = pa.LargeListArray.from_arrays(
            pa.array(states.fields["offsets"], pa.int64()), pa.array(states.fields["items"])
        )
        table = pa.table({"items": col})
    else:
        table = pa.table({k: pa.array(v) for k, v in states.fields.items()})
    return table.replace_schema_metadata({_META_KEY: json.dumps(meta)})


def from_arrow(table: pa.Table) -> States:
    """Read back a table written by ``to_arrow`` (checks the encoding version)."""
    raw = (table.schema.metadata or {}).get(_META_KEY)
    if raw is None:
        raise DataError("not an aggregation state table (no metadata)", obj="States")
    meta = json.loads(raw)
    if meta.get("version") != STATE_VERSION:
        raise DataError(
            "unsupported aggregation state encoding version",
            obj="States",
            value=meta.get("version"),
            hint=f"This featurestore reads version {STATE_VERSION}; rebuild the states",
        )
    dt = np.dtype(meta["dtype"])
    function = meta["function"]
    if function == "count_distinct":
        col = table.column("items").combine_chunks()
        offsets = np.asarray(col.offsets, dtype=np.int64) - int(col.offsets[0].as_py())
        items = col.flatten().to_numpy(zero_copy_only=False).astype(dt, copy=False)
        return States(function, dt, {"offsets": offsets, "items": items})
    fields = {}
    for name in table.column_names:
        arr = table.column(name).to_numpy()
        fields[name] = arr.astype(dt if name in ("best", "value") else arr.dtype, copy=False)
    return States(function, dt, fields)
