"""A feature view's aggregations over a frame of its events: the inputs each
aggregation reads, and the online records of many entities (shared by batch
materialization and the stream worker; layout in ``online.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from featurestore.compile.expr import expr_from_spec
from featurestore.compile.views import FeatureViewPlan
from featurestore.engines.aggregate.online import Slots, build_slots, check_spec, encode_records
from featurestore.engines.aggregate.spec import WindowSpec
from featurestore.errors import DefinitionError

_ENTITY = "__fs_entity"


def window_specs(view: FeatureViewPlan) -> list[WindowSpec]:
    """The ``WindowSpec`` of each aggregation of ``view``, in declaration order."""
    specs = [WindowSpec(a["function"], a["window_us"], a["hop_us"]) for a in view.aggregations]
    for a, spec in zip(view.aggregations, specs, strict=True):
        check_spec(spec, obj=f"feature view {view.name!r} aggregation {a['name']!r}")
    return specs


def events_start(specs: list[WindowSpec], *, end_us: int) -> int | None:
    """The first ``event_ts`` any window can need at a request time ``>= end_us``."""
    starts = []
    for s in specs:
        if s.window_us is None:
            return None
        starts.append(s.query_time(end_us) - s.window_us + 1)
    return min(starts) if starts else end_us


def _values(series: pl.Series, *, obj: str) -> tuple[np.ndarray, np.ndarray]:
    """Numpy values for ``state.from_events`` and the not-null mask."""
    valid = series.is_not_null().to_numpy()
    dt = series.dtype
    if dt == pl.Boolean:
        return series.fill_null(False).to_numpy(), valid
    if dt.is_numeric() and not dt.is_decimal():
        return series.fill_null(0).to_numpy(), valid
    if dt.is_temporal():
        # Physical units (days, microseconds); the lookup converts min/max/first/last back.
        return series.to_physical().fill_null(0).cast(pl.Int64).to_numpy(), valid
    if dt == pl.String or isinstance(dt, pl.Categorical | pl.Enum):
        return np.array(series.cast(pl.String).fill_null("").to_list(), dtype=object), valid
    raise DefinitionError(
        f"cannot serve an aggregation of a {dt} column online",
        obj=obj,
        field=series.name,
        hint="Online aggregations take numbers, bools, strings, dates and datetimes",
    )


Inputs = list[tuple[np.ndarray | None, np.ndarray | None]]


def aggregation_inputs(view: FeatureViewPlan, events: pl.DataFrame) -> Inputs:
    """Per aggregation of ``view``, ``(values, valid)`` for ``state.from_events``
    from the rows of ``events`` (``(None, None)`` for ``count()``). Aggregations of
    the same column or expression share one array."""
    obj = f"feature view {view.name!r}"
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    out: Inputs = []
    for agg in view.aggregations:
        column: Any = agg["column"]
        if column is None:
            out.append((None, None))
            continue
        sid = column if isinstance(column, str) else repr(column)
        if sid not in cache:
            expr = pl.col(column) if isinstance(column, str) else expr_from_spec(column["expr"])
            series = events.select(expr.alias(agg["name"])).to_series()
            cache[sid] = _values(series, obj=f"{obj} aggregation {agg['name']!r}")
        out.append(cache[sid])
    return out


def entity_codes(events: pl.DataFrame, keys: list[str]) -> tuple[pl.DataFrame, np.ndarray]:
    """(the distinct keys of ``events`` in first-seen order, each row's index into them)."""
    uniq = events.select(keys).unique(maintain_order=True).with_row_index(_ENTITY)
    coded = events.select(keys).join(uniq, on=keys, how="left", maintain_order="left")
    return uniq.drop(_ENTITY), coded[_ENTITY].cast(pl.Int64).to_numpy()


def build_records(
    view: FeatureViewPlan, events: pl.DataFrame, *, end_us: int
) -> tuple[pl.DataFrame, list[str]]:
    """(the entities' keys, one encoded record each) as of ``end_us`` from ``events``
    (keys, ``event_ts``/``created_ts`` as UTC datetimes, the aggregated columns)."""
    keys = list(view.join_keys)
    specs = window_specs(view)
    events = events.drop_nulls(keys)
    uniq, entities = entity_codes(events, keys)
    ets = events["event_ts"].dt.epoch("us").to_numpy()
    cts = events["created_ts"].dt.epoch("us").to_numpy()
    slots: list[Slots] = []
    for spec, (values, valid) in zip(specs, aggregation_inputs(view, events), strict=True):
        slots.append(
            build_slots(
                spec,
                at_us=end_us,
                entities=entities,
                n_entities=uniq.height,
                event_ts=ets,
                created_ts=cts,
                values=values,
                valid=valid,
            )
        )
    records = encode_records(at_us=end_us, slots=slots, n_entities=uniq.height)
    return uniq, records
