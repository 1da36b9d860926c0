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

Every outcome other than ``match`` gets exactly one cause, the first that holds:

1. ``definition_changed``: the view's plan hash differs between the serving and the
   current registry version, and the serving definition explains the value: its
   recompute equals the served value where today's does not (as of known time, or
   in full). Also when the serving definition cannot be recomputed (its source is
   gone, or no recompute supports it): the change is then the best explanation.
2. ``late_data``: the row ``full`` chose was created after ``r``, and ``known``
   equals the served value: serving could not have known better.
3. ``stale_online``: the row that could be known at ``r`` is newer than the row
   served (or the status was MISSING): materialization or the stream was behind.
4. ``ttl_edge``: the served row's ``event_ts + ttl`` lies within the tolerance of
   ``r``, and one side has a value where the other has none: the value expired
   between the two reads (clocks of the serving and logging paths differ).
5. ``window_edge``: the recompute flags an event within one hop or one microsecond
   of a window's edge (aggregated views; see ``recompute.py``).
6. ``unexplained``: none of the above: a real logic difference. This is the alarm.

Definition changes go first because they are deliberate, and late data before
stale online because a late row is no fault of serving. A cause further down may
also hold; the report names the first.
"""

from __future__ import annotations

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
    def edge(self) -> str:
        return f"__edge|{self.view}"

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


def cause(
    c: Columns,
    outcome_column: str,
    *,
    ttl_us: int | None,
    tolerance_us: int,
    is_float: bool = False,
) -> pl.Expr:
    """The first cause that holds (module docstring), as its index in :data:`CAUSES`;
    null for matches and for rows without the feature."""
    served = pl.col(c.served)
    full, known = pl.col(c.full), pl.col(c.known)
    served_ts = pl.col(c.served_ts).dt.epoch("us")
    r = pl.col(T_US)

    def is_served(other: pl.Expr) -> pl.Expr:
        return same(other, served, is_float=is_float).fill_null(False)

    definition = pl.col(c.changed) & (
        ~pl.col(c.old_ok)
        | (is_served(pl.col(c.old_known)) & ~is_served(known))
        | (is_served(pl.col(c.old_full)) & ~is_served(full))
    )
    late = (pl.col(c.full_created) > r) & is_served(known)
    known_ts = pl.col(c.known_event)
    stale = known_ts.is_not_null() & ((pl.col(c.status) == "MISSING") | (served_ts < known_ts))
    if ttl_us is None:
        ttl_edge = pl.lit(False)
    else:
        ttl_edge = (
            served_ts.is_not_null()
            & ((served_ts + ttl_us - r).abs() <= tolerance_us)
            & (served.is_null() != known.is_null())
        )
    # Any: Polars types the first link (Then) and the later ones (ChainedThen) apart.
    chain: Any = pl.when(
        pl.col(outcome_column).is_null() | (pl.col(outcome_column) == OUTCOMES.index(MATCH))
    ).then(pl.lit(None, pl.UInt8))
    for name, holds in (
        (DEFINITION_CHANGED, definition),
        (LATE_DATA, late),
        (STALE_ONLINE, stale),
        (TTL_EDGE, ttl_edge),
        (WINDOW_EDGE, pl.col(c.edge)),
    ):
        chain = chain.when(holds.fill_null(False)).then(pl.lit(CAUSES.index(name), pl.UInt8))
    return chain.otherwise(pl.lit(CAUSES.index(UNEXPLAINED), pl.UInt8))
