"""The skew page: the audit runs kept in the offline store, the feature logs, and
how to audit them.

``featurestore skew audit`` saves each report (``audit/saved.py``) with its HTML
fragment, made by the one renderer the CLI's ``--html`` uses; a run's page shows it.
The feature-log tables an audit would read are listed with the command for each.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from featurestore.api.catalog import offline_table
from featurestore.api.feature_log import LOGS_PREFIX
from featurestore.audit.saved import list_reports, load_report
from featurestore.server.errors import HttpProblem
from featurestore.ui.access import Visibility
from featurestore.ui.catalog_data import head_plan

if TYPE_CHECKING:
    from featurestore.api.store import FeatureStore
    from featurestore.audit.report import AuditReport


def _to_second(stamp: datetime) -> str:
    """A UTC time to the second: microseconds only clutter the tables."""
    return f"{stamp.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def skew(store: FeatureStore, vis: Visibility) -> dict[str, Any]:
    head, plan = head_plan(store)
    services = {o.name for o in plan.of_kind("feature_service")}
    logs = []
    for table in store.offline.tables_under(LOGS_PREFIX):
        name = table.removeprefix(f"{LOGS_PREFIX}/")
        if name in services and not vis.sees("feature_service", name):
            continue
        if name in services:
            command = f"featurestore skew audit -s {name} --html skew-{name}.html"
        else:
            command = f"featurestore skew audit --log-table {table} --html skew.html"
        stats = offline_table(store.offline, table)
        if stats.get("last_commit"):
            stats["last_commit"] = _to_second(datetime.fromisoformat(stats["last_commit"]))
        logs.append(
            {
                "table": table,
                "service": name if name in services else None,
                "stats": stats,
                "command": command,
            }
        )
    example = next((s for s in sorted(services) if vis.sees("feature_service", s)), "SERVICE")
    runs = [r for r in list_reports(store.offline) if _visible(r["table"], services, vis)]
    for r in runs:
        r["run_at"] = _to_second(r["run_at"])
    return {"registry_version": head, "logs": logs, "example_service": example, "runs": runs}


def _visible(table: str, services: set[str], vis: Visibility) -> bool:
    """A run of a service's log is shown to keys that may see the service; a run of an
    ad-hoc log only when everything is visible."""
    name = table.removeprefix(f"{LOGS_PREFIX}/")
    return vis.sees("feature_service", name) if name in services else vis.sees_everything


def saved_run(store: FeatureStore, vis: Visibility, run_id: str) -> dict[str, Any]:
    """One saved run: its summary and its HTML report (trusted: our renderer escapes)."""
    run = load_report(store.offline, run_id)
    _, plan = head_plan(store)
    services = {o.name for o in plan.of_kind("feature_service")}
    if run is None or not _visible(run["table"], services, vis):
        raise HttpProblem(
            404, "no such audit run", field="run_id", value=run_id, hint="see /ui/skew"
        )
    return {k: v for k, v in run.items() if k != "json"}


def report_fragment(report: AuditReport) -> tuple[str, str]:
    """The report's HTML body and its CSS, to embed in a page."""
    from featurestore.audit.html import REPORT_CSS, render_fragment

    return render_fragment(report), REPORT_CSS
