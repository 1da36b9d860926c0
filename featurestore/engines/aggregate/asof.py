"""Windowed aggregates for the rows of a spine: the Polars-level driver of the kernels.

``aggregate_spine`` maps keys to dense codes (a hash join against the spine's
distinct keys, so events of other entities drop out before the kernel), turns
timestamps into int64 microseconds, and hands each distinct value column to the
Numba kernels once, whatever the number of windows and functions on it. Output
rows keep the spine's order and its other columns.

Dtypes: strings (and categoricals) are ranked in Polars' sort order, so ``min``
and ``max`` are lexical; temporal columns aggregate on their physical integers and
come back in their own dtype; ``first``/``last`` gather the chosen rows from the
original column, so they keep any dtype (lists included), and break ties on
(event_ts, created_ts) by the values' Polars sort order (``_ties``).

>>> from datetime import datetime, UTC
>>> ts = [datetime(2024, 1, 1, h, tzinfo=UTC) for h in (0, 1, 2)]
>>> events = pl.DataFrame({"user": [1, 1, 2], "event_ts": ts, "amount": [5.0, 7.0, 1.0]})
>>> spine = pl.DataFrame({"user": [1, 2, 3], "timestamp": [ts[1], ts[2], ts[2]]})
>>> out = aggregate_spine(events=events, spine=spine, keys=["user"], created_ts=None,
...     aggregations=[("amount_sum_2h", "amount", WindowSpec("sum", 7_200_000_000)),
...                   ("n_events", None, WindowSpec("count", None))])
>>> out["amount_sum_2h"].to_list(), out["n_events"].to_list()
([12.0, 1.0, None], [2, 1, 0])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from featurestore._dtypes import from_polars
from featurestore._time import utc_column
from featurestore.engines import _memory
from featurestore.engines.aggregate._keys import code_int_keys
from featurestore.engines.aggregate._ties import value_order
from featurestore.engines.aggregate.kernels import Strategy, Workload, aggregate_column
from featurestore.engines.aggregate.spec import WindowSpec, output_dtype
from featurestore.errors import DataError, DefinitionError, RequestError

# (output column name, value column or expression or None for count(), window)
Aggregation = tuple[str, str | pl.Expr | None, WindowSpec]
Decode = Callable[[pl.Series], pl.Series]
_CODE = "__fs_code"


def aggregate_spine(
    *,
    events: pl.DataFrame | pl.LazyFrame,
    spine: pl.DataFrame,
    keys: Sequence[str],
    aggregations: Sequence[Aggregation],
    event_ts: str = "event_ts",
    created_ts: str | None = "created_ts",
    spine_ts: str = "timestamp",
    spine_keys: Sequence[str] | None = None,
    as_of_known_time: bool = False,
    obj: str = "aggregation",
    strategy: Strategy = "auto",
) -> pl.DataFrame:
    """The spine with one column per ``(output_name, column, WindowSpec)`` added.

    ``column`` is a column name or expression over ``events``, or ``None`` for
    ``count()`` of events. ``keys`` name the entity columns of ``events``;
    ``spine_keys`` the matching spine columns (default: the same names). Timestamps
    must be tz-aware datetimes; ``created_ts=None`` uses the event time. ``obj``
    names the caller (a feature view) in errors. ``strategy`` forces a kernel path
    (see ``kernels``); the default picks by cost.
    """
    keys = list(keys)
    skeys = list(spine_keys) if spine_keys is not None else keys
    _check_request(spine=spine, keys=keys, skeys=skeys, aggregations=aggregations, obj=obj)
    lazy = events.lazy()
    present = lazy.collect_schema().names()
    wanted = keys + [c for _, c, _ in aggregations if isinstance(c, str)]
    for needed in wanted:
        if needed not in present:
            raise DataError(
                "events have no such column",
                obj=obj,
                field=needed,
                hint=f"Columns present: {', '.join(present)}",
            )
    # Without created_ts the event times serve as both: one column, one array.
    times = {"__fs_ets": (utc_column(lazy, event_ts, obj=obj), event_ts)}
    if created_ts is not None:
        times["__fs_cts"] = (utc_column(lazy, created_ts, obj=obj), created_ts)
    sources: dict[str, pl.Expr] = {}
    for _, column, _ in aggregations:
        if column is not None:
            expr = pl.col(column) if isinstance(column, str) else column
            sources.setdefault(_source_id(column), expr)
    names = {sid: f"__fs_v{i}" for i, sid in enumerate(sources)}
    columns = [
        *keys,
        *[expr.to_physical().alias(col) for col, (expr, _) in times.items()],
        *[expr.alias(names[sid]) for sid, expr in sources.items()],
    ]
    try:
        # A DataFrame is selected eagerly: its columns stay single chunks that numpy
        # views without a copy (a lazy query hands back ~10 chunks per column, and
        # to_numpy then copies each column).
        ev = (
            events.select(columns)
            if isinstance(events, pl.DataFrame)
            else lazy.select(columns).collect()
        )
    except pl.exceptions.PolarsError as exc:  # an expression that does not fit the events
        raise DataError(
            f"cannot evaluate the aggregated expressions: {exc}",
            obj=obj,
            hint="Check the column expressions against the events' schema",
        ) from exc
    for col, (_, what) in times.items():
        if (nulls := ev[col].null_count()) > 0:
            raise DataError(
                f"{nulls} event(s) have a null timestamp",
                obj=obj,
                field=what,
                hint="Drop or fill them: an event without a time cannot be placed in a window",
            )
    event_codes, query_codes, n_keys = _key_codes(ev, spine, keys=keys, skeys=skeys, obj=obj)
    q_ts = spine.select(utc_column(spine, spine_ts, obj=obj).to_physical())
    q_ts_series = q_ts.to_series()
    if q_ts_series.has_nulls():
        query_codes[q_ts_series.is_null().to_numpy()] = -1  # no time, no window
    ets = ev["__fs_ets"].to_numpy()
    work = Workload(
        event_keys=event_codes,
        event_ts=ets,
        created_ts=ev["__fs_cts"].to_numpy() if created_ts is not None else ets,
        query_keys=query_codes,
        query_ts=_filled(q_ts_series).to_numpy(),
        n_keys=n_keys,
        as_of_known_time=as_of_known_time,
        strategy=strategy,
    )
    out: dict[str, pl.Series] = {}
    by_source: dict[str | None, list[tuple[str, WindowSpec]]] = {}
    for name, column, spec in aggregations:
        sid = None if column is None else _source_id(column)
        by_source.setdefault(sid, []).append((name, spec))
    for sid, items in by_source.items():
        series = None if sid is None else ev[names[sid]]
        out.update(_aggregate_source(work, series, items, obj=obj))
    return spine.with_columns([out[name] for name, _, _ in aggregations])


def _source_id(column: str | pl.Expr) -> str:
    # Identical expressions share one kernel column (and its prefix sums and trees).
    return (
        column if isinstance(column, str) else "expr:" + str(column.meta.serialize(format="json"))
    )


def _check_request(
    *,
    spine: pl.DataFrame,
    keys: list[str],
    skeys: list[str],
    aggregations: Sequence[Aggregation],
    obj: str,
) -> None:
    if not keys or len(keys) != len(skeys):
        raise RequestError(
            "needs the same number (>= 1) of event and spine key columns",
            obj=obj,
            field="keys",
            value={"keys": keys, "spine_keys": skeys},
        )
    for sk in skeys:
        if sk not in spine.columns:
            raise DataError(
                "spine key column is missing",
                obj=obj,
                field=sk,
                hint=f"Spine columns: {', '.join(spine.columns)}",
            )
    seen: set[str] = set()
    for name, _, spec in aggregations:
        if not isinstance(spec, WindowSpec):
            raise RequestError("needs a WindowSpec", obj=obj, field=name, value=spec)
        if name in seen or name in spine.columns:
            raise RequestError(
                "output column name is used twice (or is already a spine column)",
                obj=obj,
                field=name,
                hint="Give every aggregate a distinct name that is not a spine column",
            )
        seen.add(name)


def _key_codes(
    ev: pl.DataFrame, spine: pl.DataFrame, *, keys: list[str], skeys: list[str], obj: str
) -> tuple[np.ndarray, np.ndarray, int]:
    ev_keys = ev.select(keys)
    spine_k = spine.select(pl.col(sk).alias(k) for k, sk in zip(keys, skeys, strict=True))
    for k, sk in zip(keys, skeys, strict=True):
        # An all-null column has dtype Null: it matches nothing, whatever the other side.
        if ev_keys.schema[k] == pl.Null:
            ev_keys = ev_keys.with_columns(pl.col(k).cast(spine_k.schema[k]))
        elif spine_k.schema[k] == pl.Null:
            spine_k = spine_k.with_columns(pl.col(k).cast(ev_keys.schema[k]))
        if ev_keys.schema[k] != spine_k.schema[k]:
            raise DataError(
                f"key dtypes differ: events {ev.schema[k]}, spine {spine.schema[sk]}",
                obj=obj,
                field=k,
                hint=f"Cast the spine column: pl.col({sk!r}).cast(pl.{ev.schema[k]})",
            )
    if len(keys) == 1 and ev_keys.schema[keys[0]].is_integer():
        sk_s, ev_s = spine_k.to_series(), ev_keys.to_series()
        return _swap(
            code_int_keys(
                spine_keys=_int_array(sk_s),
                spine_valid=_not_null(sk_s),
                event_keys=_int_array(ev_s),
                event_valid=_not_null(ev_s),
            )
        )
    # Any other key: a hash join on the spine's distinct keys, numbered in key order
    # (see _keys). Nulls never match in Polars joins: such rows keep the code -1.
    uniq = spine_k.unique().sort(keys).with_row_index(_CODE)
    codes = []
    for frame in (ev_keys, spine_k):
        found = frame.with_row_index("__fs_row").join(uniq, on=keys, how="inner")
        code = np.full(frame.height, -1, np.int64)
        code[found["__fs_row"].to_numpy()] = found[_CODE].to_numpy()
        codes.append(code)
    return codes[0], codes[1], uniq.height


def _filled(s: pl.Series, value: Any = 0) -> pl.Series:
    """``s`` with nulls replaced by ``value``; ``s`` itself (no copy) without nulls."""
    return s.fill_null(value) if s.has_nulls() else s


def _int_array(s: pl.Series) -> np.ndarray:
    # uint64 keys above 2**63 wrap to negative int64: still one code per key.
    return _filled(s).to_numpy().astype(np.int64, copy=False)


def _not_null(s: pl.Series) -> np.ndarray:
    """Validity of ``s``, or an empty array when nothing is null (``_keys``)."""
    return s.is_not_null().to_numpy() if s.has_nulls() else np.zeros(0, bool)


def _swap(coded: tuple[np.ndarray, np.ndarray, int]) -> tuple[np.ndarray, np.ndarray, int]:
    spine_codes, event_codes, n = coded
    return event_codes, spine_codes, n


def _aggregate_source(
    work: Workload, series: pl.Series | None, items: list[tuple[str, WindowSpec]], *, obj: str
) -> dict[str, pl.Series]:
    to_series = _SeriesMaker()
    if series is None:
        results = aggregate_column(work, values=None, valid=None, specs=[s for _, s in items])
        return {name: to_series(name, *res) for (name, _), res in zip(items, results, strict=True)}
    try:
        dtype = from_polars(series.dtype)
    except ValueError:
        dtype = str(series.dtype)
    for name, spec in items:
        output_dtype(function=spec.function, input_dtype=dtype, obj=f"{obj} aggregate {name!r}")
    valid = series.is_not_null().to_numpy() if series.null_count() else None
    edge = [(n, s) for n, s in items if s.function in ("first", "last")]
    other = [(n, s) for n, s in items if s.function not in ("first", "last")]
    counts = []
    if all(s.function == "count" for _, s in other):
        # count(column) alone only needs to know which values are null: no
        # conversion, so it works for any dtype (lists, structs...).
        counts, other = other, []
    out: dict[str, pl.Series] = {}
    if counts:
        results = aggregate_column(work, values=None, valid=valid, specs=[s for _, s in counts])
        out.update(
            (name, to_series(name, *res)) for (name, _), res in zip(counts, results, strict=True)
        )
    if edge:
        # Pick rows, then gather them from the column itself: any dtype works. Ties
        # on (event_ts, created_ts) go by the values' order (``_ties``).
        rows = _memory.empty(len(series), np.int64)
        rows[:] = np.arange(len(series), dtype=np.int64)
        picked = aggregate_column(
            work,
            values=rows,
            valid=valid,
            specs=[s for _, s in edge],
            value_rank=_ranker(series, obj=obj),
        )
        for (name, _), (idx, ok) in zip(edge, picked, strict=True):
            out[name] = series.gather(to_series("idx", idx, ok)).alias(name)
    if not other:
        return out
    values, decode = _numeric(series, obj=obj)
    results = aggregate_column(work, values=values, valid=valid, specs=[s for _, s in other])
    for (name, spec), (vals, ok) in zip(other, results, strict=True):
        s = to_series(name, vals, ok)
        if spec.function in ("min", "max") and decode is not None:
            s = decode(s).alias(name)
        out[name] = s
    return out


def _orderable(dt: pl.DataType) -> bool:
    """Whether ``_numeric`` takes the dtype (its codes then order the values)."""
    scalar = (dt.is_numeric() and not dt.is_decimal()) or dt == pl.Boolean or dt.is_temporal()
    return scalar or dt in (pl.String, pl.Binary) or isinstance(dt, pl.Categorical | pl.Enum)


def _ranker(series: pl.Series, *, obj: str) -> Callable[[np.ndarray], np.ndarray]:
    """Ranks the values at some rows among themselves, in Polars' sort order; the
    kernels call it for tied events only (``_ties``)."""

    def rank(rows: np.ndarray) -> np.ndarray:
        part = series.gather(rows)
        if _orderable(part.dtype):
            return value_order(_numeric(part, obj=obj)[0])
        order = part.arg_sort(nulls_last=True).to_numpy()  # lists, structs, decimals...
        out = np.empty(len(order), np.int64)
        out[order] = np.arange(len(order), dtype=np.int64)
        return out

    return rank


def _numeric(series: pl.Series, *, obj: str) -> tuple[np.ndarray, Decode | None]:
    """Numpy values for the kernel, and how to turn a min/max result back."""
    dt = series.dtype
    if dt.is_numeric() or dt == pl.Boolean:
        if dt.is_decimal():
            raise DefinitionError(
                "decimal columns are not supported",
                obj=obj,
                field=series.name,
                hint="Cast to pl.Float64 or an integer type",
            )
        return _filled(series, False if dt == pl.Boolean else 0).to_numpy(), None
    if dt.is_temporal():
        phys = _filled(series.to_physical()).to_numpy()
        return phys, lambda s: s.cast(dt)
    if dt == pl.String or dt == pl.Binary or isinstance(dt, pl.Categorical | pl.Enum):
        text = series.cast(pl.String) if dt != pl.Binary else series
        uniq = text.drop_nulls().unique().sort()
        coded = text.to_frame("v").join(
            uniq.to_frame("v").with_row_index("c"), on="v", how="left", maintain_order="left"
        )["c"]
        return coded.fill_null(0).cast(pl.Int64).to_numpy(), lambda s: uniq.gather(s)
    raise DefinitionError(
        f"cannot aggregate a column of dtype {dt} with this function",
        obj=obj,
        field=series.name,
        hint="Only first/last take nested columns; use numbers, strings, bools or datetimes",
    )


class _SeriesMaker:
    """Polars columns from the kernels' ``(values, valid)`` results.

    Numbers are wrapped without a copy (the kernels' arrays are this call's own),
    with an Arrow validity bitmap built once per ``valid`` array: every function
    over one window shares the window's validity (count > 0), so twelve features
    over three windows pack three bitmaps, not twelve masks.
    """

    def __init__(self) -> None:
        # id(valid) -> (valid, null count, bitmap); valid is kept so its id stays unique.
        self._bitmaps: dict[int, tuple[np.ndarray, int, pa.Buffer | None]] = {}

    def __call__(self, name: str, values: np.ndarray, valid: np.ndarray) -> pl.Series:
        if values.dtype.kind == "O":
            return pl.Series(name, [v if ok else None for v, ok in zip(values, valid, strict=True)])
        if values.dtype.kind not in "iuf" or not values.flags.c_contiguous:
            return pl.Series(name, pa.array(values, mask=~valid))
        if id(valid) not in self._bitmaps:
            nulls = len(valid) - int(np.count_nonzero(valid))
            bits = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
            self._bitmaps[id(valid)] = (valid, nulls, bits)
        _, nulls, bits = self._bitmaps[id(valid)]
        arrow = pa.Array.from_buffers(
            pa.from_numpy_dtype(values.dtype),
            len(values),
            [bits, pa.py_buffer(values)],
            null_count=nulls,
        )
        return pl.Series(name, arrow)
