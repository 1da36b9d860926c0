"""Offline retention: ``featurestore retention apply``.

Per view, a duration (``{"driver_hourly_stats": "400d"}``): rows whose
``event_ts`` is older than now minus it are deleted from the view's offline table,
one Delta DELETE (one commit) per view, then optionally vacuumed. Idempotent: a
second run at the same time deletes nothing. The settings come from
``[policy.offline_retention]`` in featurestore.toml (see ``configured``).

An aggregated view's table holds raw events: deleting old ones also drops them
from its ``lifetime`` aggregations at the next backfill. Training datasets whose
spine reaches before the cutoff read no rows there (their features are MISSING).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import polars as pl

from featurestore._time import now_us, parse_duration_us
from featurestore.errors import DefinitionError
from featurestore.stores.view_specs import offline_spec

if TYPE_CHECKING:
    from featurestore._policy import Policy
    from featurestore.api.store import FeatureStore


@dataclass
class RetentionReport:
    cutoffs: dict[str, str] = field(default_factory=dict)  # view -> ISO cutoff
    deleted: dict[str, int] = field(default_factory=dict)  # view -> rows (or would be)
    vacuumed: dict[str, int] = field(default_factory=dict)  # view -> files removed
    dry_run: bool = False


def configured(policy: Policy | None) -> dict[str, str]:
    """``[policy.offline_retention]`` (view -> duration) when the policy declares it."""
    if policy is None:
        return {}
    return dict(getattr(policy.config, "offline_retention", None) or {})


def apply_retention(
    store: FeatureStore,
    retention: Mapping[str, str],
    *,
    at_us: int | None = None,
    dry_run: bool = False,
    vacuum_hours: int | None = None,
) -> RetentionReport:
    """Delete each view's rows older than its retention before ``at_us`` (now)."""
    index = store.index()
    now = now_us() if at_us is None else at_us
    report = RetentionReport(dry_run=dry_run)
    for view_name, text in sorted(retention.items()):
        view = index.view(view_name)  # an unknown view names the registered ones
        try:
            keep_us = parse_duration_us(text)
        except ValueError as exc:
            raise DefinitionError(
                str(exc),
                obj="[policy.offline_retention]",
                field=view_name,
                value=text,
                hint='give a duration like "400d" or "12h"',
            ) from None
        cutoff = datetime.fromtimestamp((now - keep_us) / 1_000_000, tz=UTC)
        report.cutoffs[view_name] = cutoff.isoformat()
        name = offline_spec(view).name
        if not store.offline.exists(name):
            report.deleted[view_name] = 0
            continue
        if dry_run:
            lf = store.offline.read_table(name)
            old = lf.filter(pl.col("event_ts") < cutoff).select(pl.len()).collect().item()
            report.deleted[view_name] = int(old)
            continue
        stamp = cutoff.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        report.deleted[view_name] = store.offline.delete_rows(name, f"\"event_ts\" < '{stamp}'")
        if vacuum_hours is not None:
            report.vacuumed[view_name] = len(
                store.offline.vacuum(name, retention_hours=vacuum_hours)
            )
    return report
