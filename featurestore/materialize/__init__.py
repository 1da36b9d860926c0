"""Batch engine -> offline store (backfill) -> online store (materialization).

Modules, lowest first: ``report`` (``MaterializeReport``), ``partitioned`` (the work
cut by key for an executor: Ray tasks that write their own entities), ``aggregates``
(aggregated views), ``online`` (``materialize_view``, which hands aggregated views to
``aggregates``), ``backfill`` (source -> Delta, on its own).
"""

from featurestore.materialize.backfill import BackfillReport, backfill_view
from featurestore.materialize.online import latest_per_entity, materialize_view
from featurestore.materialize.report import MaterializeReport

__all__ = [
    "BackfillReport",
    "MaterializeReport",
    "backfill_view",
    "latest_per_entity",
    "materialize_view",
]
