"""What every offline recompute of the skew audit shares: the spine it is handed,
the columns it answers with, the ``ViewRecompute`` protocol, and two helpers.

For a spine of (join keys, request time ``r`` in ``SPINE_TIME``) a recompute answers
what the offline path gives at ``r`` and, besides the values, the facts the cause
attribution needs:

    __event_ts    int64 us: the chosen row's event time (null: no eligible row)
    __created_ts  int64 us: the chosen row's created time

both in full (today's data) and as of known time (``Recomputed``, which also keeps
the rows it read). A cause is named only when recomputing under its hypothesis
reproduces the served value (``causes.py``), so a recompute also answers
``hypothesis``: the values at each spine row's ``SPINE_TIME`` (a shifted request
time, or the online record's watermark) as of known time, from the rows read, only
those with ``event_ts <= SPINE_CAP`` (per spine row; null: no cap). The audit asks
it only for the rows that mismatch. The implementations (``recompute.PlainRecompute``,
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
# A hypothesis' spine adds the newest event time it may use (int64 us; null: any).
SPINE_CAP = "__fs_audit_cap"
OUT_EVENT = "__event_ts"
OUT_CREATED = "__created_ts"


@dataclass(frozen=True)
class Recomputed:
    """Both answers for every spine row, in spine order: ``full`` (today's data) and
    ``known`` (as of known time: only rows created by ``r``); ``rows`` are the rows or
    events they were computed from (what ``hypothesis`` is handed again)."""

    full: pl.DataFrame
    known: pl.DataFrame
    rows: pl.DataFrame | None = None


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
        margin_us: int = 0,
    ) -> Recomputed:
        """From the view's offline table (the current definition's rows); the rows
        read reach ``margin_us`` beyond what the spine needs, so that hypotheses
        can shift the request time by that much."""
        ...

    def hypothesis(
        self,
        view: FeatureViewPlan,
        spine: pl.DataFrame,
        rows: pl.DataFrame,
        *,
        features: Sequence[str],
    ) -> pl.DataFrame:
        """The values of ``features`` at each spine row's ``SPINE_TIME``, as of known
        time, from ``rows`` (``Recomputed.rows``) with ``event_ts <= SPINE_CAP``."""
        ...

    def from_source(
        self,
        view: FeatureViewPlan,
        spine: pl.DataFrame,
        *,
        features: Sequence[str],
        repo: Path,
        margin_us: int = 0,
    ) -> Recomputed:
        """From the batch source, through ``view``'s own transforms: how an older
        definition would answer today (rows read as ``from_offline`` reads them)."""
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


ROW_KEY = "__fs_audit_row"


def capped(
    spine: pl.DataFrame, rows: pl.DataFrame, keys: Sequence[str], event_ts: str
) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """Spine and rows for a hypothesis with per-row caps: each spine row becomes an
    entity of its own (``ROW_KEY``) holding only its entity's rows with
    ``event_ts <= SPINE_CAP``. Without any cap, both are returned as they are."""
    if SPINE_CAP not in spine.columns or spine[SPINE_CAP].null_count() == spine.height:
        return spine.select(*keys, SPINE_TIME), rows, list(keys)
    numbered = spine.with_row_index(ROW_KEY)
    cap = pl.col(SPINE_CAP)
    mine = rows.join(numbered.select(*keys, ROW_KEY, SPINE_CAP), on=list(keys), how="inner")
    mine = mine.filter(cap.is_null() | (pl.col(event_ts).dt.epoch("us") <= cap)).drop(SPINE_CAP)
    return numbered.select(ROW_KEY, SPINE_TIME), mine.drop(keys), [ROW_KEY]


def empty_result(view: FeatureViewPlan, height: int, features: Sequence[str]) -> pl.DataFrame:
    """The answer when the view has no rows at all: nothing chosen, every value null."""
    dtypes = dict(zip(view.features, view.feature_dtypes, strict=True))
    return pl.DataFrame(
        [pl.Series(f, [None] * height, to_polars(dtypes[f])) for f in features]
        + [
            pl.Series(OUT_EVENT, [None] * height, pl.Int64),
            pl.Series(OUT_CREATED, [None] * height, pl.Int64),
        ]
    )
