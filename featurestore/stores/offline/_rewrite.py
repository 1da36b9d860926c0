"""Rewrite date partitions of a view table in sorted order.

A Delta MERGE and deltalake's own compaction both write rows in hash or arrival order;
the point-in-time join is fastest when every file is sorted by (keys, event_ts,
created_ts), so touched partitions are read back, sorted and replaced in one commit.
Correctness never depends on this: a rewrite that loses a race is simply skipped.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence

import polars as pl
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError

from featurestore.stores.offline._schema import decode, stored_dtypes
from featurestore.stores.offline.spec import EVENT_DATE, FORMAT_VERSION, OfflineTableSpec

# Rows read into memory per rewrite commit; bounded so compacting a large table does
# not need the whole table in RAM.
MAX_ROWS_PER_REWRITE = 5_000_000


def view_description(spec: OfflineTableSpec) -> str:
    """The Delta table description of a view table: how it is laid out, versioned."""
    return json.dumps(
        {
            "featurestore_format": FORMAT_VERSION,
            "kind": "feature_view",
            "view": spec.name,
            "partition_by": [EVENT_DATE],
            "sort_by": list(spec.sort_by),
        }
    )


def view_sort_by(table: DeltaTable) -> list[str] | None:
    """The sort columns recorded in a view table's description, None for other tables."""
    text = table.metadata().description
    if not text:
        return None
    try:
        meta = json.loads(text)
    except ValueError:
        return None
    if not isinstance(meta, dict) or meta.get("kind") != "feature_view":
        return None
    sort_by = meta.get("sort_by")
    return [str(c) for c in sort_by] if isinstance(sort_by, list) else None


def date_list_sql(dates: Iterable[dt.date]) -> str:
    return ", ".join(f"'{d.isoformat()}'" for d in sorted(set(dates)))


def partition_files(table: DeltaTable) -> pl.DataFrame:
    """One row per data file: path, event_date, num_records."""
    actions = pl.DataFrame(table.get_add_actions(flatten=True))
    if actions.is_empty():
        return pl.DataFrame(
            schema={"path": pl.String, EVENT_DATE: pl.Date, "num_records": pl.Int64}
        )
    return actions.select(
        "path",
        pl.col(f"partition.{EVENT_DATE}").cast(pl.Date).alias(EVENT_DATE),
        pl.col("num_records").cast(pl.Int64),
    )


def sort_exprs(sort_by: Sequence[str], tags: dict[str, str]) -> list[pl.Expr]:
    """Sort keys for rows in storage form. Sorting is on decoded values: a uint64 key is
    stored as int64 bits, whose signed order differs from the key's own above 2**63."""
    return [decode(pl.col(c), tags[c]) if c in tags else pl.col(c) for c in sort_by]


def rewrite_sorted(
    table: DeltaTable,
    *,
    dates: Sequence[dt.date],
    sort_by: Sequence[str],
    storage_options: dict[str, str] | None,
) -> bool:
    """Replace the partitions ``dates`` with their rows sorted by ``sort_by``.

    ``table`` is the snapshot the rows are read from; the commit fails (and False is
    returned) if another writer touched those partitions since, so nothing is lost.
    """
    if not dates:
        return True
    wanted = sorted(set(dates))
    order = sort_exprs(sort_by, stored_dtypes(table))
    rows = (
        pl.scan_delta(table)
        .filter(pl.col(EVENT_DATE).is_in(pl.lit(pl.Series(wanted, dtype=pl.Date)).implode()))
        .collect()
        .sort(order)
    )
    try:
        write_deltalake(
            table,
            rows.to_arrow(),
            mode="overwrite",
            predicate=f"{EVENT_DATE} IN ({date_list_sql(wanted)})",
            partition_by=[EVENT_DATE],
            storage_options=storage_options,
        )
    except CommitFailedError:
        return False
    return True


def batches_of_dates(files: pl.DataFrame, *, only_multi_file: bool) -> list[list[dt.date]]:
    """Group partitions into rewrite batches of at most MAX_ROWS_PER_REWRITE rows each."""
    per_date = files.group_by(EVENT_DATE).agg(
        pl.len().alias("files"), pl.col("num_records").sum().alias("rows")
    )
    if only_multi_file:
        per_date = per_date.filter(pl.col("files") > 1)
    batches: list[list[dt.date]] = []
    current: list[dt.date] = []
    size = 0
    for day, rows in per_date.sort(EVENT_DATE).select(EVENT_DATE, "rows").iter_rows():
        if current and size + rows > MAX_ROWS_PER_REWRITE:
            batches.append(current)
            current, size = [], 0
        current.append(day)
        size += rows
    if current:
        batches.append(current)
    return batches
