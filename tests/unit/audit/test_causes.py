"""Outcomes and causes of single rows, each rule and the precedence, against a plain
Python reading of the rules in ``featurestore/audit/causes.py``: a cause is named only
when its recomputed hypothesis reproduces the served value."""

from __future__ import annotations

import math

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.audit.causes import CAUSES, OUTCOMES, Columns, cause, outcome
from featurestore.audit.logs import T_US

C = Columns.of("v:x")
TTL, TOL = 500, 10
DEFAULTS = {
    C.has: True,
    C.served: 1.0,
    C.status: "PRESENT",
    C.served_ts: 100,
    C.full: 1.0,
    C.known: 1.0,
    C.old_full: None,
    C.old_known: None,
    C.full_event: 100,
    C.full_created: 150,
    C.known_event: 100,
    C.changed: False,
    C.old_ok: True,
    C.stale: None,
    C.early: None,
    C.later: None,
    C.stale_ok: False,
    C.shift_ok: False,
    T_US: 1000,
}
SCHEMA = {
    C.has: pl.Boolean,
    C.served: pl.Float64,
    C.status: pl.String,
    C.served_ts: pl.Int64,
    C.full: pl.Float64,
    C.known: pl.Float64,
    C.old_full: pl.Float64,
    C.old_known: pl.Float64,
    C.full_event: pl.Int64,
    C.full_created: pl.Int64,
    C.known_event: pl.Int64,
    C.changed: pl.Boolean,
    C.old_ok: pl.Boolean,
    C.stale: pl.Float64,
    C.early: pl.Float64,
    C.later: pl.Float64,
    C.stale_ok: pl.Boolean,
    C.shift_ok: pl.Boolean,
    T_US: pl.Int64,
}


def judge(rows: list[dict]) -> list[tuple[str | None, str | None]]:
    frame = pl.DataFrame(rows, schema=SCHEMA).with_columns(
        pl.col(C.served_ts).cast(pl.Datetime("us", "UTC"))
    )
    frame = frame.with_columns(outcome(C).alias("o"))
    frame = frame.with_columns(cause(C, "o", ttl_us=TTL, tolerance_us=TOL).alias("c"))
    return [
        (None if o is None else OUTCOMES[o], None if c is None else CAUSES[c])
        for o, c in frame.select("o", "c").iter_rows()
    ]


def row(**changes) -> dict:
    names = {
        "has": C.has, "served": C.served, "status": C.status, "served_ts": C.served_ts,
        "full": C.full, "known": C.known, "old_full": C.old_full, "old_known": C.old_known,
        "full_event": C.full_event, "full_created": C.full_created,
        "known_event": C.known_event, "changed": C.changed, "old_ok": C.old_ok,
        "stale": C.stale, "early": C.early, "later": C.later, "stale_ok": C.stale_ok,
        "shift_ok": C.shift_ok, "t": T_US,
    }  # fmt: skip
    return {**DEFAULTS, **{names[k]: v for k, v in changes.items()}}


NOTHING = {"full": None, "known": None, "full_event": None, "full_created": None,
           "known_event": None}  # fmt: skip
CASES = {
    "equal": (row(), ("match", None)),
    "nan equals nan": (row(served=math.nan, full=math.nan, known=math.nan), ("match", None)),
    "null equals null": (
        row(served=None, status="MISSING", served_ts=None, **NOTHING),
        ("match", None),
    ),
    "not served with this feature": (row(has=False, full=2.0), (None, None)),
    "late row, served what was known": (
        row(full=2.0, full_event=200, full_created=1500),
        ("value_mismatch", "late_data"),
    ),
    "late row, and known newer than served: the watermark reproduces": (
        row(full=2.0, full_event=200, full_created=1500, known=3.0, known_event=150,
            stale_ok=True, stale=1.0),
        ("value_mismatch", "stale_online"),
    ),
    "newer row known in time, the watermark reproduces": (
        row(full=2.0, known=2.0, full_event=200, full_created=300, known_event=200,
            stale_ok=True, stale=1.0),
        ("value_mismatch", "stale_online"),
    ),
    "newer row known in time, the watermark does not reproduce": (
        row(full=2.0, known=2.0, full_event=200, known_event=200, stale_ok=True, stale=3.0),
        ("value_mismatch", "unexplained"),
    ),
    "a plausible cause never computed names nothing": (
        row(full=2.0, known=2.0, full_event=200, known_event=200, stale=1.0, early=1.0),
        ("value_mismatch", "unexplained"),
    ),
    "nothing served, nothing up to the watermark": (
        row(served=None, status="MISSING", served_ts=None, full=2.0, known=2.0,
            stale_ok=True, stale=None),
        ("missing_online", "stale_online"),
    ),
    "nothing served, a row up to the watermark": (
        row(served=None, status="MISSING", served_ts=None, full=2.0, known=2.0,
            stale_ok=True, stale=2.0, shift_ok=True, early=2.0, later=2.0),
        ("missing_online", "unexplained"),
    ),
    "expired online at the edge, present offline": (
        row(served=None, status="EXPIRED", served_ts=495, full=2.0, known=2.0,
            full_event=495, known_event=495, stale_ok=True, stale=2.0, shift_ok=True,
            early=2.0, later=None),
        ("missing_online", "ttl_edge"),
    ),
    "present online at the edge, expired offline": (
        row(served_ts=505, **NOTHING, stale_ok=True, shift_ok=True, early=1.0),
        ("missing_offline", "ttl_edge"),
    ),
    "present online, far from the edge, nothing offline": (
        row(served_ts=300, **NOTHING, stale_ok=True, shift_ok=True),
        ("missing_offline", "unexplained"),
    ),
    "shift reproduces far from a TTL end: an event on the edge": (
        row(full=2.0, known=2.0, stale_ok=True, stale=2.0, shift_ok=True, later=1.0),
        ("value_mismatch", "window_edge"),
    ),
    "definition changed, old definition explains": (
        row(full=2.0, known=2.0, changed=True, old_known=1.0, old_full=1.0),
        ("value_mismatch", "definition_changed"),
    ),
    "definition changed, cannot recompute the old one: no reproduction": (
        row(full=2.0, known=2.0, changed=True, old_ok=False),
        ("value_mismatch", "unexplained"),
    ),
    "definition changed, old definition does not explain": (
        row(full=2.0, known=2.0, changed=True, old_known=5.0, old_full=5.0),
        ("value_mismatch", "unexplained"),
    ),
    "definition changed and late: the change comes first": (
        row(full=2.0, full_created=1500, changed=True, old_known=1.0, old_full=4.0, known=3.0),
        ("value_mismatch", "definition_changed"),
    ),
    "same row, different value": (row(full=2.0, known=2.0), ("value_mismatch", "unexplained")),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_each_rule(name):
    values, expected = CASES[name]
    assert judge([values]) == [expected]


# --- the rules once more, row by row in plain Python --------------------------------


def same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b


def reference(r: dict) -> tuple[str | None, str | None]:
    if not r[C.has]:
        return None, None
    served, full, known = r[C.served], r[C.full], r[C.known]
    if same(served, full):
        return "match", None
    kind = (
        "missing_online" if served is None
        else "missing_offline" if full is None
        else "value_mismatch"
    )  # fmt: skip
    t, sts, kts = r[T_US], r[C.served_ts], r[C.known_event]
    if (
        r[C.changed]
        and r[C.old_ok]
        and (
            (same(r[C.old_known], served) and not same(known, served))
            or (same(r[C.old_full], served) and not same(full, served))
        )
    ):
        return kind, "definition_changed"
    if r[C.full_created] is not None and r[C.full_created] > t and same(known, served):
        return kind, "late_data"
    if r[C.stale_ok] and same(r[C.stale], served):
        return kind, "stale_online"
    if r[C.shift_ok] and (same(r[C.early], served) or same(r[C.later], served)):
        if any(ts is not None and abs(ts + TTL - t) <= TOL for ts in (sts, kts)):
            return kind, "ttl_edge"
        return kind, "window_edge"
    return kind, "unexplained"


values = st.sampled_from([None, 1.0, 2.0, math.nan])
stamps = st.sampled_from([None, 100, 495, 505, 1000, 1500])
rows = st.fixed_dictionaries(
    {
        C.has: st.booleans(),
        C.served: values,
        C.status: st.sampled_from(["PRESENT", "MISSING", "EXPIRED"]),
        C.served_ts: stamps,
        C.full: values,
        C.known: values,
        C.old_full: values,
        C.old_known: values,
        C.full_event: stamps,
        C.full_created: stamps,
        C.known_event: stamps,
        C.changed: st.booleans(),
        C.old_ok: st.booleans(),
        C.stale: values,
        C.early: values,
        C.later: values,
        C.stale_ok: st.booleans(),
        C.shift_ok: st.booleans(),
        T_US: st.sampled_from([1000]),
    }
)


@settings(max_examples=100, deadline=None)
@given(st.lists(rows, min_size=1, max_size=40))
def test_vectorised_rules_match_the_plain_reading(batch):
    assert judge(batch) == [reference(r) for r in batch]


def _float_outcomes(served: list[float | None], full: list[float | None]) -> list[str]:
    frame = pl.DataFrame(
        {**{k: [v] * len(served) for k, v in DEFAULTS.items()}, C.served: served, C.full: full},
        schema=SCHEMA,
    )
    codes = frame.select(outcome(C, is_float=True)).to_series().to_list()
    return [OUTCOMES[o] for o in codes]


def test_floats_match_within_a_relative_1e9_and_not_beyond():
    # a sum folded in another order: 0.1 + 0.2 + 0.3 vs 0.3 + 0.2 + 0.1
    a, b = 0.1 + 0.2 + 0.3, 0.3 + 0.2 + 0.1
    assert a != b
    nan = float("nan")
    got = _float_outcomes(
        [a, 1e12, 1.0, nan, nan, None, 0.0, float("inf")],
        [b, 1e12 + 1.0, 1.0 + 2e-9, nan, 1.0, None, 0.0, float("inf")],
    )
    assert got == [
        "match",  # last-bit difference
        "match",  # 1e-12 relative
        "value_mismatch",  # 2e-9 relative
        "match",  # NaN is NaN
        "value_mismatch",
        "match",
        "match",
        "match",
    ]
    # exact comparison (the default, and every non-float dtype) keeps last bits apart
    frame = pl.DataFrame({**{k: [v] for k, v in DEFAULTS.items()}, C.served: [a], C.full: [b]},
                         schema=SCHEMA)  # fmt: skip
    assert OUTCOMES[frame.select(outcome(C)).item()] == "value_mismatch"
