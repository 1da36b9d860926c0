"""Recompute windowed aggregations (aggregated feature views) for the skew audit.

The values are what training gives (SEMANTICS "Windowed aggregations"): the batch
engine's ``aggregate_spine`` over the view's events, in full and with
``as_of_known_time`` (which leaves out events created after the *floored* request
time; it is computed again only for the rows where some counted event was). The
events read reach back to the floored earliest request time minus the window (all
of them for a lifetime window), less one hop and the audit's margin (the edge
tolerance, so that a hypothesis can shift the request time), for the entities of
the spine. The facts the cause attribution reads (``recompute_base.py``) are taken
over the windows of the audited features, together:

- ``__event_ts``: the newest event in any of those windows (a lifetime window: every
  event up to the floored request time); null when they hold no event;
- ``__created_ts``: the newest created time among those events, so an event that
  arrived after ``r`` shows as ``> r``.

Both facts ride along as two more aggregations (``max`` of the event and created
times over each distinct window), so the kernels compute them with the values.
Whether an event on a window's edge explains a mismatch is not flagged here: the
audit recomputes the mismatching rows at the request time shifted by the edge
tolerance (``hypothesis``) and names ``window_edge`` only when that reproduces the
served value.

Floats: online records add a hopped window tile by tile, the kernels in tree order,
so a ``sum``/``mean``/``stddev`` recomputed here may differ from the served one in
the last bits (within 1e-9 relative, SEMANTICS "Windowed aggregations");
``causes.py`` compares floats within that tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from featurestore._dtypes import to_polars
from featurestore.audit.recompute_base import (
    OUT_CREATED,
    OUT_EVENT,
    SPINE_TIME,
    Recomputed,
    both_answers,
    capped,
    empty_result,
)
from featurestore.compile.expr import expr_from_spec
from featurestore.compile.views import FeatureViewPlan
from featurestore.engines.aggregate.asof import Aggregation, aggregate_spine
from featurestore.engines.aggregate.spec import WindowSpec
from featurestore.engines.aggregate.view_records import events_start, window_specs
from featurestore.stores.offline.delta import DeltaOfflineStore
from featurestore.stores.offline.spec import CREATED_TS, EVENT_TS
from featurestore.stores.view_specs import offline_spec

# A window: (window_us or None for lifetime, hop_us or None).
Window = tuple[int | None, int | None]

_LATE = "__fs_late"


class AggregateRecompute:
    """Aggregated views: windowed aggregations as of each request time, as training
    computes them."""

    def supports(self, view: FeatureViewPlan) -> bool:
        return bool(view.aggregations)

    def from_offline(
        self,
        view: FeatureViewPlan,
        spine: pl.DataFrame,
        *,
        features: Sequence[str],
        offline: DeltaOfflineStore,
        table_version: int | None,
        margin_us: int = 0,
    ) -> Recomputed:
        if spine.height == 0:
            empty = empty_result(view, 0, features)
            return Recomputed(empty, empty, offline_spec(view).empty_rows())
        if table_version is None:
            # No table: no events, which is still an answer (count 0, the rest null).
            return _recompute(view, spine, offline_spec(view).empty_rows(), features)
        lo, hi = _event_range(spine, _windows(view, features), margin_us)
        events = offline.read_view(
            offline_spec(view),
            start_us=lo,
            end_us=hi,
            keys=spine.select(view.join_keys),
            version=table_version,
        )
        return _recompute(view, spine, events.collect(), features)

    def from_source(
        self,
        view: FeatureViewPlan,
        spine: pl.DataFrame,
        *,
        features: Sequence[str],
        repo: Path,
        margin_us: int = 0,
    ) -> Recomputed:
        # Imported here: the batch engine is only needed when a definition changed.
        from featurestore.engines.batch import read_view_rows

        if spine.height == 0:
            empty = empty_result(view, 0, features)
            return Recomputed(empty, empty)
        lo, hi = _event_range(spine, _windows(view, features), margin_us)
        rows = read_view_rows(view, repo=repo, start_us=lo, end_us=hi).collect()
        return _recompute(view, spine, rows, features)

    def hypothesis(
        self,
        view: FeatureViewPlan,
        spine: pl.DataFrame,
        rows: pl.DataFrame,
        *,
        features: Sequence[str],
    ) -> pl.DataFrame:
        if spine.height == 0:
            return empty_result(view, 0, features).select(features)
        part, events, keys = capped(spine, rows, view.join_keys, EVENT_TS)
        specs = _specs(view)
        dtypes = dict(zip(view.features, view.feature_dtypes, strict=True))
        values: list[Aggregation] = [
            (f"__fs_f{i}", specs[f][1], specs[f][0]) for i, f in enumerate(features)
        ]
        out = aggregate_spine(
            events=events,
            spine=part,
            keys=keys,
            aggregations=values,
            spine_ts=SPINE_TIME,
            as_of_known_time=True,
            obj=f"feature view {view.name!r}",
        )
        return out.select(
            pl.col(name).cast(to_polars(dtypes[f])).alias(f)
            for (name, _, _), f in zip(values, features, strict=True)
        )


def _specs(view: FeatureViewPlan) -> dict[str, tuple[WindowSpec, str | pl.Expr | None]]:
    """Per aggregation name, its window and the column (or expression) it reads."""
    out: dict[str, tuple[WindowSpec, str | pl.Expr | None]] = {}
    for agg, spec in zip(view.aggregations, window_specs(view), strict=True):
        column = agg["column"]
        out[agg["name"]] = (
            spec,
            expr_from_spec(column["expr"]) if isinstance(column, dict) else column,
        )
    return out


def _windows(view: FeatureViewPlan, features: Sequence[str]) -> list[Window]:
    """The distinct windows of the audited features (of every aggregation when none
    is audited, so the facts still describe the view)."""
    specs = _specs(view)
    chosen = [specs[f][0] for f in features] or [s for s, _ in specs.values()]
    return list(dict.fromkeys((s.window_us, s.hop_us) for s in chosen))


def _event_range(
    spine: pl.DataFrame, windows: list[Window], margin_us: int = 0
) -> tuple[int | None, int]:
    """The half-open event-time range [lo, hi) the windows and their edges reach: from
    the first event a window at the earliest request time needs, less one hop (or
    microsecond) and ``margin_us``, to the latest request time plus as much."""
    t = spine[SPINE_TIME].dt.epoch("us")
    t_min, t_max = int(t.min()), int(t.max())  # type: ignore[arg-type]
    reach = max(hop or 1 for _, hop in windows) + margin_us
    first = events_start([WindowSpec("count", w, h) for w, h in windows], end_us=t_min)
    return (None if first is None else first - reach - 1), t_max + reach + 1


def _recompute(
    view: FeatureViewPlan, spine: pl.DataFrame, events: pl.DataFrame, features: Sequence[str]
) -> Recomputed:
    keys = list(view.join_keys)
    specs = _specs(view)
    dtypes = dict(zip(view.features, view.feature_dtypes, strict=True))
    windows = _windows(view, features)
    # Output names of our own: they cannot clash with the spine's columns.
    values: list[Aggregation] = [
        (f"__fs_f{i}", specs[f][1], specs[f][0]) for i, f in enumerate(features)
    ]
    facts: list[Aggregation] = []
    for j, (window, hop) in enumerate(windows):
        facts.append((f"__fs_ev{j}", EVENT_TS, WindowSpec("max", window, hop)))
        facts.append((f"__fs_cr{j}", CREATED_TS, WindowSpec("max", window, hop)))

    t = pl.col(SPINE_TIME).dt.epoch("us")
    # An event created after its window's known-time cut-off (the floored request
    # time) makes the as-of-known-time answer differ from the full one.
    late = pl.any_horizontal(
        pl.col(f"__fs_cr{j}").dt.epoch("us") > (t if hop is None else t // hop * hop)
        for j, (_, hop) in enumerate(windows)
    )

    def answer(part: pl.DataFrame, as_of_known_time: bool) -> pl.DataFrame:
        out = aggregate_spine(
            events=events,
            spine=part.select(*keys, SPINE_TIME),
            keys=keys,
            aggregations=[*values, *facts],
            spine_ts=SPINE_TIME,
            as_of_known_time=as_of_known_time,
            obj=f"feature view {view.name!r}",
        )
        return out.select(
            *[
                pl.col(name).cast(to_polars(dtypes[f])).alias(f)
                for (name, _, _), f in zip(values, features, strict=True)
            ],
            pl.max_horizontal(f"__fs_ev{j}" for j in range(len(windows)))
            .dt.epoch("us")
            .alias(OUT_EVENT),
            pl.max_horizontal(f"__fs_cr{j}" for j in range(len(windows)))
            .dt.epoch("us")
            .alias(OUT_CREATED),
            late.alias(_LATE),
        )

    both = both_answers(spine, answer, late=lambda full: full[_LATE])
    return Recomputed(both.full.drop(_LATE), both.known.drop(_LATE), events)
