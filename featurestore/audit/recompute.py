"""Recompute, offline, the value a logged request should have been served.

For a spine of (join keys, request time ``r``) the recompute answers what the
offline path gives at ``r`` (SEMANTICS "Point-in-time join", with the view's TTL),
and, besides the values, the facts the cause attribution needs:

    __event_ts    int64 us: the chosen row's event time (null: no eligible row)
    __created_ts  int64 us: the chosen row's created time
    __edge        bool: the answer sits on a window or hop edge (aggregations only)

both in full (today's data) and as of known time (``Recomputed``).

The plug point is :class:`ViewRecompute`: plain views are :class:`PlainRecompute`
(the point-in-time join), aggregated views
:class:`~featurestore.audit.recompute_aggregates.AggregateRecompute`, whose
``__event_ts`` is the newest event in the window, ``__created_ts`` the newest
created time among the events counted (so late data shows as ``> r``) and
``__edge`` marks an event within one hop or one microsecond of the window's edges.
:data:`RECOMPUTES` lists the implementations in the order :func:`recompute_for`
tries them. Views no implementation supports are skipped and named in the report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl

from featurestore.compile.views import FeatureViewPlan
from featurestore.stores.offline.delta import DeltaOfflineStore
from featurestore.stores.offline.spec import CREATED_TS, EVENT_TS
from featurestore.stores.view_specs import offline_spec

# The spine the audit hands over: the view's join keys and the request time.
SPINE_TIME = "__fs_audit_t"
OUT_EVENT = "__event_ts"
OUT_CREATED = "__created_ts"
OUT_EDGE = "__edge"


@dataclass(frozen=True)
class Recomputed:
    """Both answers for every spine row, in spine order: ``full`` (today's data) and
    ``known`` (as of known time: only rows created by ``r``)."""

    full: pl.DataFrame
    known: pl.DataFrame


class ViewRecompute(Protocol):
    """Recomputes one kind of view at the spine's request times."""

    def supports(self, view: FeatureViewPlan) -> bool: ...

    def from_offline(
        self,
        view: FeatureViewPlan,
        spine: pl.DataFrame,
        *,
        features: Sequence[str],
        offline: DeltaOfflineStore,
        table_version: int | None,
    ) -> Recomputed:
        """From the view's offline table (the current definition's rows)."""
        ...

    def from_source(
        self,
        view: FeatureViewPlan,
        spine: pl.DataFrame,
        *,
        features: Sequence[str],
        repo: Path,
    ) -> Recomputed:
        """From the batch source, through ``view``'s own transforms: how an older
        definition would answer today."""
        ...


class PlainRecompute:
    """Plain (non-aggregated) views: the point-in-time join, as training does it."""

    def supports(self, view: FeatureViewPlan) -> bool:
        return not view.aggregations

    def from_offline(
        self,
        view: FeatureViewPlan,
        spine: pl.DataFrame,
        *,
        features: Sequence[str],
        offline: DeltaOfflineStore,
        table_version: int | None,
    ) -> Recomputed:
        if table_version is None or spine.height == 0:
            empty = empty_result(view, spine.height, features)
            return Recomputed(empty, empty)
        lo, hi = _time_range(view, spine)
        rows = offline.read_view(
            offline_spec(view),
            start_us=lo,
            end_us=hi,
            version=table_version,
            columns=[*view.join_keys, EVENT_TS, CREATED_TS, *features],
        )
        return _both(view, spine, rows.collect(), features)

    def from_source(
        self,
        view: FeatureViewPlan,
        spine: pl.DataFrame,
        *,
        features: Sequence[str],
        repo: Path,
    ) -> Recomputed:
        # Imported here: the batch engine is only needed when a definition changed.
        from featurestore.engines.batch import read_view_rows

        if spine.height == 0:
            empty = empty_result(view, 0, features)
            return Recomputed(empty, empty)
        lo, hi = _time_range(view, spine)
        rows = read_view_rows(view, repo=repo, start_us=lo, end_us=hi).collect()
        return _both(view, spine, rows, features)


@cache
def _recomputes() -> list[ViewRecompute]:
    # Built on first use: the aggregate implementation imports this module's names.
    from featurestore.audit.recompute_aggregates import AggregateRecompute

    return [PlainRecompute(), AggregateRecompute()]


def __getattr__(name: str) -> list[ViewRecompute]:
    # ``RECOMPUTES``: every implementation, in the order recompute_for tries them (one
    # list, built on first access; append to it to plug in another kind of view).
    if name == "RECOMPUTES":
        return _recomputes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def recompute_for(view: FeatureViewPlan) -> ViewRecompute | None:
    return next((r for r in _recomputes() if r.supports(view)), None)


Answer = Callable[[pl.DataFrame, bool], pl.DataFrame]


def both_answers(
    spine: pl.DataFrame,
    answer: Answer,
    *,
    late: Callable[[pl.DataFrame], pl.Series] | None = None,
) -> Recomputed:
    """``answer(rows, as_of_known_time)`` for every spine row, in full and as of known
    time. The latter differs only where the full answer used a row created after its
    known-time cut-off: ``late(full)`` says where (default: ``__created_ts > r``), and
    only those rows are computed again."""
    full = answer(spine, False)
    if late is None:
        mask = full[OUT_CREATED] > spine[SPINE_TIME].dt.epoch("us")
    else:
        mask = late(full)
    rows = np.flatnonzero(mask.fill_null(False).to_numpy())
    if not rows.size:
        return Recomputed(full, full)
    part = answer(spine[rows], True)
    known = full.with_columns(full[c].scatter(rows, part[c]) for c in full.columns)
    return Recomputed(full, known)


def _both(
    view: FeatureViewPlan, spine: pl.DataFrame, rows: pl.DataFrame, features: Sequence[str]
) -> Recomputed:
    """The point-in-time join, in full and as of known time."""
    return both_answers(
        spine, lambda part, known: _join(view, part, rows, features, as_of_known_time=known)
    )


def empty_result(view: FeatureViewPlan, height: int, features: Sequence[str]) -> pl.DataFrame:
    """The answer when the view has no rows at all: nothing chosen, every value null."""
    from featurestore._dtypes import to_polars

    dtypes = dict(zip(view.features, view.feature_dtypes, strict=True))
    return pl.DataFrame(
        [pl.Series(f, [None] * height, to_polars(dtypes[f])) for f in features]
        + [
            pl.Series(OUT_EVENT, [None] * height, pl.Int64),
            pl.Series(OUT_CREATED, [None] * height, pl.Int64),
            pl.Series(OUT_EDGE, [False] * height, pl.Boolean),
        ]
    )


def _time_range(view: FeatureViewPlan, spine: pl.DataFrame) -> tuple[int | None, int]:
    """The half-open event-time range [lo, hi) any spine row can reach."""
    t = spine[SPINE_TIME].dt.epoch("us")
    lo, hi = int(t.min()), int(t.max())  # type: ignore[arg-type]
    return (None if view.ttl_us is None else lo - view.ttl_us), hi + 1


def _join(
    view: FeatureViewPlan,
    spine: pl.DataFrame,
    rows: pl.DataFrame,
    features: Sequence[str],
    as_of_known_time: bool,
) -> pl.DataFrame:
    from featurestore.engines.pit import FeatureFrame, point_in_time_join

    # The chosen row's event and created times ride along as two more "features";
    # output names are prefixed so they cannot clash with the spine's columns.
    wanted = (*features, EVENT_TS, CREATED_TS)
    outs = tuple(f"__out{i}" for i in range(len(wanted)))
    frame = FeatureFrame(
        name=view.name,
        frame=rows,
        join_keys=view.join_keys,
        spine_keys=view.join_keys,
        features=wanted,
        output_names=outs,
        ttl_us=view.ttl_us,
    )
    joined = point_in_time_join(
        spine.select(*view.join_keys, SPINE_TIME),
        timestamp=SPINE_TIME,
        views=[frame],
        as_of_known_time=as_of_known_time,
    )
    names = [*features, OUT_EVENT, OUT_CREATED]
    result = joined.select(pl.col(o).alias(n) for o, n in zip(outs, names, strict=True))
    return result.with_columns(
        pl.col(OUT_EVENT).dt.epoch("us"),
        pl.col(OUT_CREATED).dt.epoch("us"),
        pl.lit(False).alias(OUT_EDGE),
    )
