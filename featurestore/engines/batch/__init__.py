"""The batch engine: Polars plans over batch sources."""

from featurestore.engines.batch.rows import (
    CREATED_TS,
    EVENT_TS,
    latest_per_entity,
    read_view_rows,
    scan_source,
    transform_rows,
    view_columns,
)

__all__ = [
    "CREATED_TS",
    "EVENT_TS",
    "latest_per_entity",
    "read_view_rows",
    "scan_source",
    "transform_rows",
    "view_columns",
]
