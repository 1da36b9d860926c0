"""Batch engine -> offline store (backfill) -> online store (materialization)."""

from featurestore.materialize.backfill import BackfillReport, backfill_view
from featurestore.materialize.online import (
    MaterializeReport,
    latest_per_entity,
    materialize_view,
)

__all__ = [
    "BackfillReport",
    "MaterializeReport",
    "backfill_view",
    "latest_per_entity",
    "materialize_view",
]
