"""Served vs recomputed, vectorised: outcome and cause columns, counts, mismatch rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from featurestore._dtypes import NUMERIC, is_list
from featurestore.api.feature_log import ENTITY_INDEX, REGISTRY_VERSION, REQUEST_ID, REQUEST_TIME
from featurestore.audit.causes import (
    CAUSES,
    MATCH,
    MISSING_OFFLINE,
    MISSING_ONLINE,
    OUTCOMES,
    SEVERITY,
    VALUE_MISMATCH,
    Columns,
    cause,
    outcome,
    same,
)
from featurestore.audit.logs import ROW
from featurestore.audit.report import FeatureResult

_OUTCOME_NAMES = dict(enumerate(OUTCOMES))
_CAUSE_NAMES = dict(enumerate(CAUSES))


def outcome_column(ref: str) -> str:
    return f"__outcome|{ref}"


def cause_column(ref: str) -> str:
    return f"__cause|{ref}"


def compares_floats(frame: pl.DataFrame, c: Columns) -> bool:
    return frame.schema[c.served].is_float() or frame.schema[c.full].is_float()


def add_outcomes(frame: pl.DataFrame, refs: Sequence[str]) -> pl.DataFrame:
    exprs = []
    for r in refs:
        c = Columns.of(r)
        exprs.append(outcome(c, is_float=compares_floats(frame, c)).alias(outcome_column(r)))
    return frame.with_columns(exprs)


def add_causes(
    frame: pl.DataFrame,
    refs: Sequence[str],
    *,
    ttls: Mapping[str, int | None],
    tolerance_us: int,
) -> pl.DataFrame:
    exprs = []
    for r in refs:
        c = Columns.of(r)
        why = cause(
            c,
            outcome_column(r),
            ttl_us=ttls.get(c.view),
            tolerance_us=tolerance_us,
            is_float=compares_floats(frame, c),
            present=frame.columns,
        )
        exprs.append(why.alias(cause_column(r)))
    return frame.with_columns(exprs)


def non_matching(ref: str) -> pl.Expr:
    """Rows whose served value differs from the full recompute."""
    out = pl.col(outcome_column(ref))
    return out.is_not_null() & (out != OUTCOMES.index(MATCH))


def _diffs(c: Columns, dtype: str) -> tuple[pl.Expr, pl.Expr]:
    """|served - offline| and that relative to |offline|; null for non-numeric dtypes."""
    if dtype not in NUMERIC:
        return pl.lit(None, pl.Float64), pl.lit(None, pl.Float64)
    served = pl.col(c.served).cast(pl.Float64)
    full = pl.col(c.full).cast(pl.Float64)
    diff = (served - full).abs()
    rel = pl.when(full != 0).then(diff / full.abs())
    return diff, rel


def _counts(codes: pl.Series, names: Sequence[str]) -> dict[str, int]:
    """How often each code occurs (nulls left out), by name."""
    values = codes.drop_nulls().to_numpy()
    counts = np.bincount(values, minlength=len(names)) if values.size else np.zeros(len(names))
    return {name: int(n) for name, n in zip(names, counts, strict=False)}


def summarize(
    frame: pl.DataFrame, refs: Sequence[str], *, dtypes: Mapping[str, str]
) -> list[FeatureResult]:
    """Per-feature counts: code histograms, plus one select for the rest."""
    exprs: list[pl.Expr] = []
    for i, ref in enumerate(refs):
        c = Columns.of(ref)
        exprs.append(pl.col(c.has).sum().alias(f"{i}|rows"))
        # floats within the documented 1e-9 relative, as the outcomes compare them
        known_differs = pl.col(c.has) & ~same(
            pl.col(c.served), pl.col(c.known), is_float=compares_floats(frame, c)
        ).fill_null(False)
        exprs.append(known_differs.sum().alias(f"{i}|known"))
        diff, rel = _diffs(c, dtypes[ref])
        mismatch = pl.col(outcome_column(ref)) == OUTCOMES.index(VALUE_MISMATCH)
        exprs.append(diff.filter(mismatch).fill_nan(None).max().alias(f"{i}|abs"))
        exprs.append(rel.filter(mismatch).fill_nan(None).max().alias(f"{i}|rel"))
    row = frame.select(exprs).row(0, named=True) if exprs else {}
    results = []
    for i, ref in enumerate(refs):
        outcomes = _counts(frame[outcome_column(ref)], OUTCOMES)
        causes = _counts(frame[cause_column(ref)], CAUSES)
        results.append(
            FeatureResult(
                feature=ref,
                dtype=dtypes[ref],
                rows=int(row[f"{i}|rows"]),
                matched=outcomes[MATCH],
                value_mismatch=outcomes[VALUE_MISMATCH],
                missing_online=outcomes[MISSING_ONLINE],
                missing_offline=outcomes[MISSING_OFFLINE],
                causes={k: causes[k] for k in SEVERITY if causes[k]},  # the alarm first
                mismatched_vs_known_time=int(row[f"{i}|known"]),
                max_abs_diff=row[f"{i}|abs"],
                max_rel_diff=row[f"{i}|rel"],
            )
        )
    return results


def _as_text(column: str, dtype: str) -> pl.Expr:
    col = pl.col(column)
    if is_list(dtype):
        inner = col.list.eval(pl.element().cast(pl.String).fill_null("null")).list.join(", ")
        return pl.when(col.is_not_null()).then(pl.format("[{}]", inner))
    return col.cast(pl.String)


def mismatch_rows(
    frame: pl.DataFrame,
    refs: Sequence[str],
    *,
    dtypes: Mapping[str, str],
    key_columns: Sequence[str],
) -> pl.DataFrame:
    """One row per non-matching (log row, feature), values shown as text, the most
    severe cause first (:data:`~featurestore.audit.causes.SEVERITY`), then in log
    order."""
    lazy_parts = []
    for ref in refs:
        c = Columns.of(ref)
        diff, rel = _diffs(c, dtypes[ref])
        part = (
            frame.lazy()
            .filter(non_matching(ref))
            .select(
                pl.col(ROW).alias("row"),
                REQUEST_ID,
                ENTITY_INDEX,
                REQUEST_TIME,
                REGISTRY_VERSION,
                *[k for k in key_columns if k in frame.columns],
                pl.lit(ref).alias("feature"),
                pl.col(outcome_column(ref)).replace_strict(_OUTCOME_NAMES).alias("outcome"),
                pl.col(cause_column(ref)).replace_strict(_CAUSE_NAMES).alias("cause"),
                _as_text(c.served, dtypes[ref]).alias("served"),
                pl.col(c.status).alias("served_status"),
                pl.col(c.served_ts).alias("served_event_ts"),
                _as_text(c.full, dtypes[ref]).alias("offline"),
                pl.col(c.full_event).cast(pl.Datetime("us", "UTC")).alias("offline_event_ts"),
                pl.col(c.full_created).cast(pl.Datetime("us", "UTC")).alias("offline_created_ts"),
                _as_text(c.known, dtypes[ref]).alias("offline_known_time"),
                diff.alias("abs_diff"),
                rel.alias("rel_diff"),
            )
        )
        lazy_parts.append(part)
    # Lazy, so each filter only touches the columns its rows are shown with.
    parts = pl.collect_all(lazy_parts)
    if not parts:
        return pl.DataFrame(schema={"row": pl.UInt32, "feature": pl.String, "cause": pl.String})
    rank = {name: i for i, name in enumerate(SEVERITY)}
    return (
        pl.concat(parts, how="diagonal_relaxed")
        .with_columns(pl.col("cause").replace_strict(rank, return_dtype=pl.UInt8).alias("_rank"))
        .sort("_rank", "row", "feature")
        .drop("_rank")
    )
