"""Audit reports kept in the offline store, so that people (the web UI's skew page)
can list past runs and read them without re-running anything.

One generic Delta table, ``_audits/reports``, one row per run: when, which log, the
verdict and rates, and the report twice: as JSON (machines) and as the HTML fragment
of the one renderer (``audit.html.render_fragment``), so a page shows exactly what
``--html`` writes.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from featurestore.audit.html import render_fragment

if TYPE_CHECKING:
    from featurestore.audit.report import AuditReport
    from featurestore.stores.offline.delta import DeltaOfflineStore

AUDITS_TABLE = "_audits/reports"
SUMMARY = ["run_id", "run_at", "table", "passed", "exit_code", "compared", "mismatched"]


def save_report(
    offline: DeltaOfflineStore, report: AuditReport, *, max_examples: int = 50
) -> str:
    """Append ``report`` to the audits table; returns its run id."""
    run_at = datetime.now(UTC)
    run_id = f"{run_at:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    row = pl.DataFrame(
        {
            "run_id": [run_id],
            "run_at": [run_at],
            "table": [report.table],
            "passed": [report.passed],
            "exit_code": [report.exit_code],
            "compared": [report.compared],
            "mismatched": [report.mismatched],
            "mismatch_rate": [report.mismatch_rate],
            "json": [report.to_json(max_examples=max_examples, indent=None)],
            "html": [render_fragment(report, max_examples=max_examples)],
        }
    ).with_columns(pl.col("run_at").dt.cast_time_unit("us"))
    offline.write_table(AUDITS_TABLE, row, mode="append")
    return run_id


def list_reports(offline: DeltaOfflineStore, *, limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` runs, newest first, without their bodies."""
    if not offline.exists(AUDITS_TABLE):
        return []
    frame = (
        offline.read_table(AUDITS_TABLE)
        .select([*SUMMARY, "mismatch_rate"])
        .sort("run_at", descending=True)
        .head(limit)
        .collect()
    )
    return frame.to_dicts()


def load_report(offline: DeltaOfflineStore, run_id: str) -> dict[str, Any] | None:
    """One run with its JSON and HTML bodies, or None."""
    if not offline.exists(AUDITS_TABLE):
        return None
    found = offline.read_table(AUDITS_TABLE).filter(pl.col("run_id") == run_id).collect()
    return found.row(0, named=True) if found.height else None
