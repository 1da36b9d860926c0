"""The mismatch examples every report shows, in one shape: grouped by cause, the most
severe first, each row with the ids to find it and served next to offline.

HTML, Markdown, the terminal and JSON all read :func:`example_groups`, so they show the
same rows in the same order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from featurestore.audit.causes import HELP, SEVERITY, UNEXPLAINED, CauseHelp

# Shown per example, in this order ("entity" joins the join keys: "user_id=17").
COLUMNS = (
    "row",
    "request_id",
    "entity",
    "request_time",
    "feature",
    "served",
    "offline",
    "offline_known_time",
    "served_event_ts",
    "offline_event_ts",
)


@dataclass(frozen=True)
class Group:
    cause: str
    values: int  # mismatching values with this cause, in the whole audit
    help: CauseHelp
    examples: list[dict[str, Any]]  # up to the limit, in log order


def _entity(keys: list[str]) -> pl.Expr:
    if not keys:
        return pl.lit(None, pl.String)
    return pl.concat_str(
        [pl.format(f"{k}={{}}", pl.col(k).cast(pl.String).fill_null("null")) for k in keys],
        separator=", ",
    )


def example_groups(
    mismatches: pl.DataFrame,
    *,
    key_columns: Sequence[str],
    totals: Mapping[str, int],
    limit: int,
) -> list[Group]:
    """Per cause that occurs (``unexplained`` always), most severe first: how many
    values it explains (``totals``) and up to ``limit`` example rows of
    ``mismatches`` (``AuditReport.mismatches``; ``AuditReport.example_groups``)."""
    frame = mismatches
    keys = [k for k in key_columns if k in frame.columns]
    groups = []
    for cause in SEVERITY:
        if not totals.get(cause) and cause != UNEXPLAINED:
            continue
        rows: list[dict[str, Any]] = []
        if totals.get(cause) and "cause" in frame.columns:
            part = frame.filter(pl.col("cause") == cause).head(limit)
            shown = part.with_columns(_entity(keys).alias("entity")).select(
                c for c in COLUMNS if c in part.columns or c == "entity"
            )
            rows = list(shown.iter_rows(named=True))
        groups.append(Group(cause, totals.get(cause, 0), HELP[cause], rows))
    return groups


def text(value: object) -> str:
    """A cell as text: datetimes in UTC as "2026-01-01 10:00:00Z"."""
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat(sep=" ").replace("+00:00", "Z")
    return str(value)
