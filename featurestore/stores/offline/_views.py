"""Writing and reading a view's table: the logic behind ``DeltaOfflineStore``'s view API."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable, Field, Schema, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError

from featurestore._dtypes import INTEGERS, compatible, to_polars
from featurestore._time import from_us
from featurestore.errors import DataError, OfflineStoreError, RequestError
from featurestore.stores.offline import _rewrite
from featurestore.stores.offline._prepare import check_dtype, prepare_view_frame
from featurestore.stores.offline._schema import (
    canonical_or_none,
    decode,
    encode,
    stored_dtypes,
    to_storage_arrow,
)
from featurestore.stores.offline.spec import (
    EVENT_DATE,
    EVENT_TS,
    RECORD_ID,
    OfflineTableSpec,
)


@dataclass(frozen=True)
class Counts:
    """What one committed write changed, and the table version after it."""

    inserted: int
    updated: int
    version: int
    replaced: int = 0


@dataclass(frozen=True)
class Outcome:
    counts: Counts
    duplicates_dropped: int
    null_keys_dropped: int


def write_view_rows(
    spec: OfflineTableSpec,
    frame: pl.DataFrame,
    *,
    uri: str,
    mode: Literal["append", "merge", "replace"],
    time_range: tuple[int, int] | None,
    storage_options: dict[str, str] | None,
    open_table: Callable[[], DeltaTable | None],
    before_create: Callable[[], None],
    retry: Callable[[Callable[[], Counts]], Counts],
) -> Outcome:
    """Check, cast, dedupe (plain views) and sort ``frame``, then append, merge or
    replace a time range with it (with retries on lost commit races)."""
    prepared = prepare_view_frame(spec, frame)
    rows = prepared.frame
    if mode == "replace":
        if time_range is None:
            raise OfflineStoreError(
                "a replace needs the time range it rewrites",
                obj=f"view {spec.name!r}",
                field="time_range",
                hint="Pass time_range=(start_us, end_us)",
            )
        _check_within(spec, rows, time_range)
    elif mode == "merge" and spec.event_log:
        _check_record_ids(spec, rows)
    data = to_storage_arrow(rows, spec.table_dtypes)

    def attempt() -> Counts:
        table = open_table()
        if table is None:
            before_create()
            table = _create_table(spec, uri, data.schema, storage_options, open_table)
        if mode == "replace":
            assert time_range is not None  # checked above
            return _replace(spec, table, rows, data, time_range, storage_options)
        if rows.is_empty():
            return Counts(0, 0, table.version())
        # An append must carry every column of the table; a merge only sets the ones
        # it names, so features the spec no longer has keep their stored values.
        batch = _align_to_table(spec, table, data, fill_missing=mode == "append")
        if mode == "append":
            write_deltalake(table, batch, mode="append", storage_options=storage_options)
            return Counts(rows.height, 0, table.version())
        return _merge(spec, table, batch, rows, storage_options)

    return Outcome(
        counts=retry(attempt),
        duplicates_dropped=prepared.duplicates_dropped,
        null_keys_dropped=prepared.null_keys_dropped,
    )


def _create_table(
    spec: OfflineTableSpec,
    uri: str,
    schema: pa.Schema,
    storage_options: dict[str, str] | None,
    open_table: Callable[[], DeltaTable | None],
) -> DeltaTable:
    """Create the view's table empty, as its own commit, then open it.

    Creating it with the first rows (an append to a new path) let two racing writers
    both append their rows: the loser's version-0 commit was retried as an append, and
    a later merge matched both copies. An empty create commits version 0 or fails, so
    exactly one creator wins and every writer then takes the ordinary, conflict-checked
    path (merges and replaces detect a concurrent append to the partitions they read).
    """
    # Losing the race raises; anything worse shows when opening the table.
    with contextlib.suppress(DeltaError, CommitFailedError):
        DeltaTable.create(
            uri,
            schema=schema,
            mode="error",
            partition_by=[EVENT_DATE],
            description=_rewrite.view_description(spec),
            storage_options=storage_options,
        )
    table = open_table()
    if table is None:
        raise OfflineStoreError(
            "could not be created",
            obj=f"view {spec.name!r}",
            value=uri,
            hint="Check that the offline store root is writable",
        )
    return table


def _check_within(spec: OfflineTableSpec, rows: pl.DataFrame, time_range: tuple[int, int]) -> None:
    start_us, end_us = time_range
    if start_us >= end_us:
        raise OfflineStoreError(
            "replace range is empty",
            obj=f"view {spec.name!r}",
            field="time_range",
            value=time_range,
            hint="Give start_us < end_us",
        )
    us = rows[EVENT_TS].dt.epoch("us")
    outside = int(((us < start_us) | (us >= end_us)).sum())
    if outside:
        raise DataError(
            f"{outside} row(s) fall outside the range being replaced "
            f"[{from_us(start_us).isoformat()}, {from_us(end_us).isoformat()})",
            obj=f"view {spec.name!r}",
            field=EVENT_TS,
            hint="Pass only rows with start <= event_ts < end, or widen the range",
        )


def _check_record_ids(spec: OfflineTableSpec, rows: pl.DataFrame) -> None:
    missing = rows[RECORD_ID].null_count()
    if missing:
        raise DataError(
            f"{missing} row(s) have no {RECORD_ID}; an aggregated view's table keeps every "
            "event, so a merge can only recognise rows by their record id",
            obj=f"view {spec.name!r}",
            field=RECORD_ID,
            hint="Use mode='replace' with the batch's time range (what backfill does), "
            "or mode='append' for new events",
        )


def _replace(
    spec: OfflineTableSpec,
    table: DeltaTable,
    rows: pl.DataFrame,
    data: pa.Table,
    time_range: tuple[int, int],
    storage_options: dict[str, str] | None,
) -> Counts:
    """Make the table's rows with ``start <= event_ts < end`` exactly ``rows``, in one
    commit that rewrites the date partitions involved (sorted).

    Rows of those dates outside the range are read back and written again with them.
    A re-run that would write the same rows commits nothing. A concurrent write to the
    same partitions makes the commit fail, and the caller retries on the new snapshot.
    """
    start_us, end_us = time_range
    first, last = from_us(start_us).date(), from_us(end_us - 1).date()
    files = _rewrite.partition_files(table)
    stored = files.filter(pl.col(EVENT_DATE).is_between(first, last))
    touched = sorted(set(stored[EVENT_DATE].to_list()) | set(rows[EVENT_DATE].to_list()))
    if not touched:
        return Counts(0, 0, table.version())
    in_dates = pl.col(EVENT_DATE).is_in(pl.lit(pl.Series(touched, dtype=pl.Date)).implode())
    in_range = pl.col(EVENT_TS).is_between(from_us(start_us), from_us(end_us), closed="left")
    old = pl.scan_delta(table).filter(in_dates).collect()
    kept, old_in_range = old.filter(~in_range), old.filter(in_range)
    new = pl.from_arrow(_align_to_table(spec, table, data, fill_missing=True))
    assert isinstance(new, pl.DataFrame)
    if _same_rows(old_in_range, new):
        return Counts(0, 0, table.version())
    tags = stored_dtypes(table)
    combined = pl.concat([kept, new.select(kept.columns)], how="vertical_relaxed")
    write_deltalake(
        table,
        combined.sort(_rewrite.sort_exprs(spec.sort_by, tags)).to_arrow(),
        mode="overwrite",
        predicate=f"{EVENT_DATE} IN ({_rewrite.date_list_sql(touched)})",
        partition_by=[EVENT_DATE],
        storage_options=storage_options,
    )
    return Counts(rows.height, 0, table.version(), replaced=old_in_range.height)


def _same_rows(old: pl.DataFrame, new: pl.DataFrame) -> bool:
    """Whether two frames in storage form hold the same rows, in any order."""
    if old.height != new.height or set(old.columns) != set(new.columns):
        return False
    if old.is_empty():
        return True
    cols = sorted(old.columns)
    try:
        both = pl.concat([old.select(cols), new.select(cols)], how="vertical_relaxed")
    except pl.exceptions.PolarsError:
        return False
    a, b = both.head(old.height), both.tail(new.height)
    # Sorting on every column puts equal multisets in equal order; nulls and NaN
    # compare equal to themselves in DataFrame.equals.
    return a.sort(cols, nulls_last=True).equals(b.sort(cols, nulls_last=True))


def _merge(
    spec: OfflineTableSpec,
    table: DeltaTable,
    batch: pa.Table,
    rows: pl.DataFrame,
    storage_options: dict[str, str] | None,
) -> Counts:
    dates = rows[EVENT_DATE].unique().to_list()
    before = set(_rewrite.partition_files(table)["path"].to_list())
    # A plain view's row is its (keys, event_ts, created_ts); an event-log row is the
    # Kafka record it came from, so equal events from two records both stay.
    identity = (RECORD_ID,) if spec.event_log else spec.sort_by
    match = " AND ".join(f"t.{_q(c)} = s.{_q(c)}" for c in identity)
    # Naming the batch's dates lets the merge skip every other partition's files: an
    # unpartitioned merge measured 3x slower here, and 35x after a big one (MEASURED).
    match += f" AND t.{EVENT_DATE} IN ({_rewrite.date_list_sql(dates)})"
    merger = table.merge(batch, predicate=match, source_alias="s", target_alias="t")
    values = [] if spec.event_log else list(spec.features)
    if values:
        # Only rows whose values differ are rewritten, so an identical re-run commits
        # nothing. IS DISTINCT FROM treats null = null (and NaN = NaN) as equal.
        changed = " OR ".join(f"(t.{_q(c)} IS DISTINCT FROM s.{_q(c)})" for c in values)
        merger = merger.when_matched_update_all(predicate=changed)
    metrics = merger.when_not_matched_insert_all().execute()
    inserted = int(metrics.get("num_target_rows_inserted", 0))
    updated = int(metrics.get("num_target_rows_updated", 0))
    after = _rewrite.partition_files(table)
    old = pl.Series(sorted(before), dtype=pl.String)
    touched = set(after.filter(~pl.col("path").is_in(old.implode()))[EVENT_DATE].to_list())
    # Also the batch's partitions left in several files, e.g. by a writer killed
    # between its merge commit and this rewrite: a re-run that merges nothing new
    # still puts them back in order (self-healing; `compact` does the whole table).
    split = after.filter(pl.col(EVENT_DATE).is_in(pl.Series(dates, dtype=pl.Date).implode()))
    touched |= set(split.group_by(EVENT_DATE).len().filter(pl.col("len") > 1)[EVENT_DATE].to_list())
    if touched:
        _rewrite.rewrite_sorted(
            table, dates=sorted(touched), sort_by=spec.sort_by, storage_options=storage_options
        )
    return Counts(inserted, updated, table.version())


def _q(column: str) -> str:
    return f"`{column}`"


def _align_to_table(
    spec: OfflineTableSpec, table: DeltaTable, data: pa.Table, *, fill_missing: bool
) -> pa.Table:
    """Make the batch fit the existing table: check layout and dtypes, add new feature
    columns to the table, and (``fill_missing``) give the batch typed nulls for columns
    the spec no longer has."""
    obj = f"view {spec.name!r}"
    if list(table.metadata().partition_columns) != [EVENT_DATE]:
        raise OfflineStoreError(
            f"table is partitioned by {list(table.metadata().partition_columns)}, "
            f"not [{EVENT_DATE!r}]",
            obj=obj,
            value=table.table_uri,
            hint="It was not written by featurestore; move it away or pick another root",
        )
    stored = stored_dtypes(table)
    schema = pa.schema(table.schema().to_arrow())
    for col, declared in spec.dtypes.items():
        found = stored.get(col)
        if col in schema.names and found is not None and not compatible(found, declared):
            raise OfflineStoreError(
                f"table stores this column as {found} but the view now declares {declared}",
                obj=obj,
                field=col,
                hint="A dtype change needs a fresh table: give the view a new name, or "
                "drop its offline table and backfill",
            )
    new_fields = [f for f in data.schema if f.name not in schema.names]
    if new_fields:
        table.alter.add_columns([_delta_field(f) for f in new_fields])
        schema = pa.schema(table.schema().to_arrow())
    if not fill_missing:
        return data
    # Table order, batch dtypes: deltalake casts each column to the stored type itself.
    for field in schema:
        if field.name not in data.column_names:
            data = data.append_column(field, pa.nulls(data.num_rows, field.type))
    return data.select(schema.names)


def _delta_field(field: pa.Field) -> Field:
    return Schema.from_arrow(pa.schema([field])).fields[0]


def read_view_frame(
    spec: OfflineTableSpec,
    table: DeltaTable,
    *,
    start_us: int | None,
    end_us: int | None,
    keys: pl.DataFrame | None,
    columns: Sequence[str] | None,
) -> pl.LazyFrame:
    obj = f"view {spec.name!r}"
    wanted = list(columns) if columns is not None else list(spec.dtypes)
    dtypes = {**spec.table_dtypes, EVENT_DATE: "date"}
    for col in wanted:
        if col not in dtypes:
            raise RequestError(
                "is not a column of the view's offline table",
                obj=obj,
                field=col,
                hint=f"Choose from {', '.join(dtypes)}",
            )
    lf = pl.scan_delta(table)
    schema = lf.collect_schema()
    preds: list[pl.Expr] = []
    # Both the partition column and event_ts: the first prunes whole directories, the
    # second trims the edge days via file statistics and then row by row.
    if start_us is not None:
        start = from_us(start_us)
        preds += [pl.col(EVENT_DATE) >= start.date(), pl.col(EVENT_TS) >= start]
    if end_us is not None:
        last_day = from_us(end_us - 1).date()
        preds += [pl.col(EVENT_DATE) <= last_day, pl.col(EVENT_TS) < from_us(end_us)]
    stored = stored_dtypes(table)
    if keys is not None:
        wanted_keys = _key_frame(spec, keys, schema, stored)
        # is_in per column is what file and row-group statistics can skip on; for a
        # compound key the semi-join then keeps exactly the wanted combinations.
        for col in spec.join_keys:
            # A literal imploded in the expression: Polars 2.1 only prunes files with
            # statistics for that form, not for an already-imploded Series.
            preds.append(pl.col(col).is_in(pl.lit(wanted_keys[col].unique()).implode()))
        if len(spec.join_keys) > 1:
            lf = lf.filter(preds).join(wanted_keys.lazy(), on=list(spec.join_keys), how="semi")
            preds = []
    if preds:
        lf = lf.filter(preds)
    out = []
    for col in wanted:
        want = to_polars(dtypes[col])
        if col not in schema:
            out.append(pl.lit(None, dtype=want).alias(col))  # feature added after the data
            continue
        expr = pl.col(col)
        tag = stored.get(col)
        if tag is not None and schema[col] != to_polars(tag):
            expr = decode(expr, tag)
        out.append(expr.cast(want).alias(col))
    return lf.select(out)


def _key_frame(
    spec: OfflineTableSpec, keys: pl.DataFrame, schema: pl.Schema, stored: dict[str, str]
) -> pl.DataFrame:
    """The distinct non-null wanted keys, in the form the table stores them."""
    obj = f"view {spec.name!r}"
    missing = [c for c in spec.join_keys if c not in keys.columns]
    if missing:
        raise RequestError(
            f"keys frame lacks join key column(s) {', '.join(map(repr, missing))}",
            obj=obj,
            field=missing[0],
            hint=f"Pass a frame with columns {', '.join(spec.join_keys)}",
        )
    exprs = []
    for col, declared in zip(spec.join_keys, spec.key_dtypes, strict=True):
        found = canonical_or_none(keys.schema[col])
        if declared in INTEGERS and found in INTEGERS:
            # Spines often hold int64 ids for an int32 key: a value out of the key's
            # range cannot match any stored row, so it becomes null and is dropped.
            expr = pl.col(col).cast(to_polars(declared), strict=False)
        else:
            check_dtype(f"{obj} keys", col, declared, keys.schema[col])
            expr = pl.col(col).cast(to_polars(declared))
        tag = stored.get(col)
        expr = encode(expr.cast(to_polars(tag)), tag) if tag else expr.cast(schema[col])
        exprs.append(expr.alias(col))
    return keys.select(exprs).drop_nulls().unique()
