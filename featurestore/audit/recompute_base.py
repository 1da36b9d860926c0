"""What every offline recompute of the skew audit shares: the spine it is handed,
the columns it answers with, the ``ViewRecompute`` protocol, and two helpers.

For a spine of (join keys, request time ``r`` in ``SPINE_TIME``) a recompute answers
what the offline path gives at ``r`` and, besides the values, the facts the cause
attribution needs:

    __event_ts    int64 us: the chosen row's event time (null: no eligible row)
    __created_ts  int64 us: the chosen row's created time
    __edge        bool: the answer sits on a window or hop edge (aggregations only)

both in full (today's data) and as of known time (``Recomputed``). The
implementations (``recompute.PlainRecompute``,
``recompute_aggregates.AggregateRecompute``) import this module; ``recompute``
lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl

from featurestore._dtypes import to_polars
from featurestore.compile.views import FeatureViewPlan
from featurestore.stores.offline.delta import DeltaOfflineStore

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


def empty_result(view: FeatureViewPlan, height: int, features: Sequence[str]) -> pl.DataFrame:
    """The answer when the view has no rows at all: nothing chosen, every value null."""
    dtypes = dict(zip(view.features, view.feature_dtypes, strict=True))
    return pl.DataFrame(
        [pl.Series(f, [None] * height, to_polars(dtypes[f])) for f in features]
        + [
            pl.Series(OUT_EVENT, [None] * height, pl.Int64),
            pl.Series(OUT_CREATED, [None] * height, pl.Int64),
            pl.Series(OUT_EDGE, [False] * height, pl.Boolean),
        ]
    )
