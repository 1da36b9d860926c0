"""Recompute, offline, the value a logged request should have been served.

For a spine of (join keys, request time ``r``) the recompute answers what the
offline path gives at ``r`` (SEMANTICS "Point-in-time join", with the view's TTL),
with the facts the cause attribution needs and the values under a cause's
hypothesis (``recompute_base`` has the columns and
the :class:`~featurestore.audit.recompute_base.ViewRecompute` protocol, the plug
point).

Plain views are :class:`PlainRecompute` (the point-in-time join, below), aggregated
views :class:`~featurestore.audit.recompute_aggregates.AggregateRecompute`, whose
``__event_ts`` is the newest event in the window and ``__created_ts`` the newest
created time among the events counted (so late data shows as ``> r``).
:data:`RECOMPUTES` lists the implementations in the order :func:`recompute_for`
tries them (append to it to plug in another kind of view). Views no implementation
supports are skipped and named in the report.

Modules, top-down: ``recompute`` (this one: the list, the plain views) imports
``recompute_aggregates``; both import ``recompute_base``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from featurestore.audit.recompute_aggregates import AggregateRecompute
from featurestore.audit.recompute_base import (
    OUT_CREATED,
    OUT_EVENT,
    SPINE_CAP,
    SPINE_TIME,
    Answer,
    Recomputed,
    ViewRecompute,
    both_answers,
    capped,
    empty_result,
)
from featurestore.compile.views import FeatureViewPlan
from featurestore.stores.offline.delta import DeltaOfflineStore
from featurestore.stores.offline.spec import CREATED_TS, EVENT_TS
from featurestore.stores.view_specs import offline_spec

# The shared names are imported from here too (the audit's run, tests, benchmarks).
__all__ = [
    "OUT_CREATED",
    "OUT_EVENT",
    "RECOMPUTES",
    "SPINE_CAP",
    "SPINE_TIME",
    "AggregateRecompute",
    "Answer",
    "PlainRecompute",
    "Recomputed",
    "ViewRecompute",
    "both_answers",
    "empty_result",
    "recompute_for",
]


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
        margin_us: int = 0,
    ) -> Recomputed:
        if table_version is None or spine.height == 0:
            empty = empty_result(view, spine.height, features)
            return Recomputed(empty, empty, offline_spec(view).empty_rows())
        lo, hi = _time_range(view, spine, margin_us)
        rows = offline.read_view(
            offline_spec(view),
            start_us=lo,
            end_us=hi,
            version=table_version,
            columns=[*view.join_keys, EVENT_TS, CREATED_TS, *features],
        )
        return _both(view, spine, rows.collect(), features)

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
        part, mine, keys = capped(spine, rows, view.join_keys, EVENT_TS)
        joined = _join(view, part, mine, features, as_of_known_time=True, keys=keys)
        return joined.select(features)

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
        lo, hi = _time_range(view, spine, margin_us)
        rows = read_view_rows(view, repo=repo, start_us=lo, end_us=hi).collect()
        return _both(view, spine, rows, features)


RECOMPUTES: list[ViewRecompute] = [PlainRecompute(), AggregateRecompute()]


def _recomputes() -> list[ViewRecompute]:
    # The list recompute_for tries; tests replace this to drop an implementation.
    return RECOMPUTES


def recompute_for(view: FeatureViewPlan) -> ViewRecompute | None:
    """The first implementation of ``RECOMPUTES`` that supports ``view``, if any."""
    return next((r for r in _recomputes() if r.supports(view)), None)


def _both(
    view: FeatureViewPlan, spine: pl.DataFrame, rows: pl.DataFrame, features: Sequence[str]
) -> Recomputed:
    """The point-in-time join, in full and as of known time."""
    both = both_answers(
        spine, lambda part, known: _join(view, part, rows, features, as_of_known_time=known)
    )
    return Recomputed(both.full, both.known, rows)


def _time_range(
    view: FeatureViewPlan, spine: pl.DataFrame, margin_us: int = 0
) -> tuple[int | None, int]:
    """The half-open event-time range [lo, hi) any spine row can reach, widened by
    ``margin_us`` on both sides."""
    t = spine[SPINE_TIME].dt.epoch("us")
    lo, hi = int(t.min()) - margin_us, int(t.max()) + margin_us  # type: ignore[arg-type]
    return (None if view.ttl_us is None else lo - view.ttl_us), hi + 1


def _join(
    view: FeatureViewPlan,
    spine: pl.DataFrame,
    rows: pl.DataFrame,
    features: Sequence[str],
    as_of_known_time: bool,
    keys: Sequence[str] | None = None,
) -> pl.DataFrame:
    from featurestore.engines.pit import FeatureFrame, point_in_time_join

    keys = tuple(view.join_keys if keys is None else keys)
    # The chosen row's event and created times ride along as two more "features";
    # output names are prefixed so they cannot clash with the spine's columns.
    wanted = (*features, EVENT_TS, CREATED_TS)
    outs = tuple(f"__out{i}" for i in range(len(wanted)))
    frame = FeatureFrame(
        name=view.name,
        frame=rows,
        join_keys=keys,
        spine_keys=keys,
        features=wanted,
        output_names=outs,
        ttl_us=view.ttl_us,
    )
    joined = point_in_time_join(
        spine.select(*keys, SPINE_TIME),
        timestamp=SPINE_TIME,
        views=[frame],
        as_of_known_time=as_of_known_time,
    )
    names = [*features, OUT_EVENT, OUT_CREATED]
    result = joined.select(pl.col(o).alias(n) for o, n in zip(outs, names, strict=True))
    return result.with_columns(pl.col(OUT_EVENT).dt.epoch("us"), pl.col(OUT_CREATED).dt.epoch("us"))
