"""What each logged value is compared with, and why a mismatch happened.

For one feature of one logged row served at request time ``r``:

- ``served``: the value the model saw (null unless the status was PRESENT);
- ``full``: the offline recompute at ``r`` with today's data and definition;
- ``known``: the same, as of known time (only rows created by ``r``). When the row
  ``full`` chose was created by ``r`` both are the same row, so ``known`` is only
  computed where ``full`` chose a row created after ``r``;
- ``old_full`` / ``old_known``: both again, from the batch source through the
  definition that served, computed only for mismatches whose view's plan hash
  differs between the serving registry version and the current one.

Outcome (served vs ``full``; floats equal within a relative ``1e-9``
(:data:`FLOAT_REL_TOL`: a sum folded in another order differs in the last bits),
everything else exactly; NaN equals NaN, null equals null): ``match``,
``value_mismatch`` (both non-null), ``missing_online`` (served null, offline not) or
``missing_offline`` (the reverse).

Every outcome other than ``match`` gets exactly one cause: the first whose
hypothesis, recomputed, reproduces the served value (SEMANTICS "What the skew audit
calls a cause"). A plausible cause that does not reproduce it names nothing.

1. ``definition_changed``: the view's plan hash differs between the serving and the
   current registry version, and the serving definition's recompute (as of known
   time, or in full) equals the served value where today's does not. When the
   serving definition cannot be recomputed the audit says so in a note and the
   value stays ``unexplained``.
2. ``late_data``: the row ``full`` chose was created after ``r``, and ``known``
   equals the served value: serving could not have known better.
3. ``stale_online``: the recompute at the online record's watermark equals the
   served value: at ``r``, as of known time, from the rows (events) up to the
   served ``event_ts`` only. A record that was not found has no watermark of its
   own: the newest ``event_ts`` the view served up to ``r`` in the audited log
   stands in (none served: nothing). So a missing record is stale only when no
   row the online store had evidently reached explains a value.
4. ``ttl_edge`` (plain views with a TTL): the recompute at ``r`` shifted by the
   edge tolerance (either way) equals the served value, and the served or the
   known row's TTL ends within the tolerance of ``r``.
5. ``window_edge``: the recompute at ``r`` shifted by the edge tolerance equals the
   served value otherwise: an event crosses a window or hop edge (aggregated
   views) or the request time (plain views) between the serving and logging
   clocks.
6. ``unexplained``: none of the above: a real logic difference. This is the alarm
   (a corrupted record or another entity's values lands here).

TTL is no cause for aggregated views: their values are what training gives at
``r`` whatever the TTL (SEMANTICS, "Windowed aggregations"); the audit passes no
TTL for them.

Hypotheses 3-5 are recomputed only for the rows that mismatch and are not yet
explained by an earlier one (``run.py``); ``stale_ok``/``shift_ok`` mark the rows
they were computed for (columns made only when some row needs them). Definition
changes go first because they are deliberate, and late data before stale online
because a late row is no fault of serving.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import polars as pl

from featurestore.api.feature_log import event_ts_column, status_column, value_column
from featurestore.audit.logs import T_US

MATCH = "match"
VALUE_MISMATCH = "value_mismatch"
MISSING_ONLINE = "missing_online"
MISSING_OFFLINE = "missing_offline"
OUTCOMES = (MATCH, VALUE_MISMATCH, MISSING_ONLINE, MISSING_OFFLINE)

DEFINITION_CHANGED = "definition_changed"
LATE_DATA = "late_data"
STALE_ONLINE = "stale_online"
TTL_EDGE = "ttl_edge"
WINDOW_EDGE = "window_edge"
UNEXPLAINED = "unexplained"
CAUSES = (DEFINITION_CHANGED, LATE_DATA, STALE_ONLINE, TTL_EDGE, WINDOW_EDGE, UNEXPLAINED)
# The order reports list causes in: the alarm first, clock noise last.
SEVERITY = (UNEXPLAINED, STALE_ONLINE, LATE_DATA, DEFINITION_CHANGED, TTL_EDGE, WINDOW_EDGE)


@dataclass(frozen=True)
class CauseHelp:
    meaning: str  # one line: what reproduced the served value
    remedy: str  # one line: what to do about it


HELP = {
    UNEXPLAINED: CauseHelp(
        "No hypothesis reproduces the served value: serving computed something training "
        "does not (a corrupted record, another entity's values, a logic difference).",
        "Investigate now: look the rows up by request id, compare the online record with "
        "the offline rows; fix the serving path, then re-materialize.",
    ),
    STALE_ONLINE: CauseHelp(
        "The online record was behind: recomputed at its watermark, the served value "
        "comes out exactly.",
        "Re-materialize the view (or check the stream worker's lag) and schedule "
        "materialization more often than the data changes.",
    ),
    LATE_DATA: CauseHelp(
        "The offline row arrived after the request: as of what could be known then, the "
        "served value comes out exactly.",
        "Fix the producer's delay, or train as of known time so training sees what "
        "serving could see.",
    ),
    DEFINITION_CHANGED: CauseHelp(
        "The view changed after serving: the definition that served reproduces the value.",
        "Expected after an apply; retrain on the new definition and re-backfill and "
        "re-materialize the view if not done yet.",
    ),
    TTL_EDGE: CauseHelp(
        "The value expired between the serving and logging clocks: the request time "
        "shifted by the edge tolerance reproduces it.",
        "Nothing to fix unless frequent: then sync the clocks of serving and logging.",
    ),
    WINDOW_EDGE: CauseHelp(
        "An event crossed a window or hop edge between the serving and logging clocks: "
        "the request time shifted by the edge tolerance reproduces the value.",
        "Nothing to fix unless frequent: then sync the clocks or log the serving time.",
    ),
}


@dataclass(frozen=True)
class Columns:
    """Names of the working-frame columns that hold one feature's facts."""

    ref: str
    view: str

    @classmethod
    def of(cls, ref: str) -> Columns:
        return cls(ref, ref.partition(":")[0])

    # served, from the log
    @property
    def served(self) -> str:
        return value_column(self.ref)

    @property
    def status(self) -> str:
        return status_column(self.ref)

    @property
    def served_ts(self) -> str:
        return event_ts_column(self.ref)

    # recomputed values, one per feature
    @property
    def has(self) -> str:
        return f"__has|{self.ref}"

    @property
    def full(self) -> str:
        return f"__full|{self.ref}"

    @property
    def known(self) -> str:
        return f"__known|{self.ref}"

    @property
    def old_full(self) -> str:
        return f"__old_full|{self.ref}"

    @property
    def old_known(self) -> str:
        return f"__old_known|{self.ref}"

    # values under the hypotheses, only for the rows they were computed for
    @property
    def stale(self) -> str:
        return f"__stale|{self.ref}"

    @property
    def early(self) -> str:
        return f"__early|{self.ref}"

    @property
    def later(self) -> str:
        return f"__later|{self.ref}"

    # facts of the chosen rows, one per view
    @property
    def full_event(self) -> str:
        return f"__full_ev|{self.view}"

    @property
    def full_created(self) -> str:
        return f"__full_cr|{self.view}"

    @property
    def known_event(self) -> str:
        return f"__known_ev|{self.view}"

    @property
    def stale_ok(self) -> str:
        return f"__stale_ok|{self.view}"

    @property
    def shift_ok(self) -> str:
        return f"__shift_ok|{self.view}"

    @property
    def changed(self) -> str:
        return f"__changed|{self.view}"

    @property
    def old_ok(self) -> str:
        return f"__old_ok|{self.view}"


FLOAT_REL_TOL = 1e-9


def same(a: pl.Expr, b: pl.Expr, *, is_float: bool) -> pl.Expr:
    """Equal, null with null and NaN with NaN; floats within :data:`FLOAT_REL_TOL`."""
    exact = a.eq_missing(b)
    if not is_float:
        return exact
    a, b = a.cast(pl.Float64), b.cast(pl.Float64)
    close = (a - b).abs() <= FLOAT_REL_TOL * pl.max_horizontal(a.abs(), b.abs())
    return exact | (a.is_nan() & b.is_nan()) | close


def outcome(c: Columns, *, is_float: bool = False) -> pl.Expr:
    """The outcome of served vs the full recompute, as its index in :data:`OUTCOMES`
    (small integers: the counts and filters over a million rows stay cheap); null
    where the row lacks the feature."""
    served, full = pl.col(c.served), pl.col(c.full)
    return (
        pl.when(~pl.col(c.has))
        .then(pl.lit(None, pl.UInt8))
        .when(same(served, full, is_float=is_float).fill_null(False))
        .then(pl.lit(OUTCOMES.index(MATCH), pl.UInt8))
        .when(served.is_null())
        .then(pl.lit(OUTCOMES.index(MISSING_ONLINE), pl.UInt8))
        .when(full.is_null())
        .then(pl.lit(OUTCOMES.index(MISSING_OFFLINE), pl.UInt8))
        .otherwise(pl.lit(OUTCOMES.index(VALUE_MISMATCH), pl.UInt8))
    )


def reproduces(c: Columns, column: str, *, is_float: bool = False) -> pl.Expr:
    """``column`` equals the served value (null with null, floats within tolerance)."""
    return same(pl.col(column), pl.col(c.served), is_float=is_float).fill_null(False)


def explained_before_hypotheses(c: Columns, *, is_float: bool = False) -> pl.Expr:
    """Causes 1-2 hold: the rows the recomputed hypotheses need not look at."""
    return _definition(c, is_float) | _late(c, is_float)


def _definition(c: Columns, is_float: bool) -> pl.Expr:
    def is_served(column: str) -> pl.Expr:
        return reproduces(c, column, is_float=is_float)

    return (
        pl.col(c.changed)
        & pl.col(c.old_ok)
        & (
            (is_served(c.old_known) & ~is_served(c.known))
            | (is_served(c.old_full) & ~is_served(c.full))
        )
    ).fill_null(False)


def _late(c: Columns, is_float: bool) -> pl.Expr:
    late = (pl.col(c.full_created) > pl.col(T_US)) & reproduces(c, c.known, is_float=is_float)
    return late.fill_null(False)


def cause(
    c: Columns,
    outcome_column: str,
    *,
    ttl_us: int | None,
    tolerance_us: int,
    is_float: bool = False,
    present: Collection[str] | None = None,
) -> pl.Expr:
    """The first cause whose hypothesis reproduces the served value (module
    docstring), as its index in :data:`CAUSES`; null for matches and for rows
    without the feature. ``present`` names the frame's columns when some hypothesis
    columns may be missing (never computed: nothing reproduced)."""
    r = pl.col(T_US)

    def computed(flag: str) -> bool:
        return present is None or flag in present

    stale = pl.lit(False)
    if computed(c.stale_ok):
        stale = pl.col(c.stale_ok) & reproduces(c, c.stale, is_float=is_float)
    shifted = pl.lit(False)
    if computed(c.shift_ok):
        shifted = pl.col(c.shift_ok) & (
            reproduces(c, c.early, is_float=is_float) | reproduces(c, c.later, is_float=is_float)
        )
    if ttl_us is None:
        ttl_edge = pl.lit(False)
    else:

        def ends_near(ts: pl.Expr) -> pl.Expr:
            return ts.is_not_null() & ((ts + ttl_us - r).abs() <= tolerance_us)

        ttl_edge = shifted & (
            ends_near(pl.col(c.served_ts).dt.epoch("us")) | ends_near(pl.col(c.known_event))
        )
    # Any: Polars types the first link (Then) and the later ones (ChainedThen) apart.
    chain: Any = pl.when(
        pl.col(outcome_column).is_null() | (pl.col(outcome_column) == OUTCOMES.index(MATCH))
    ).then(pl.lit(None, pl.UInt8))
    for name, holds in (
        (DEFINITION_CHANGED, _definition(c, is_float)),
        (LATE_DATA, _late(c, is_float)),
        (STALE_ONLINE, stale),
        (TTL_EDGE, ttl_edge),
        (WINDOW_EDGE, shifted),
    ):
        chain = chain.when(holds.fill_null(False)).then(pl.lit(CAUSES.index(name), pl.UInt8))
    return chain.otherwise(pl.lit(CAUSES.index(UNEXPLAINED), pl.UInt8))
