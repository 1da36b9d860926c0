"""Turn a caller's frame into the rows a view table stores: checked, cast, deduplicated, sorted."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from featurestore._dtypes import compatible, to_polars
from featurestore._time import utc_column
from featurestore.errors import DataError
from featurestore.stores.offline._schema import canonical_or_none, check_no_naive
from featurestore.stores.offline.spec import (
    CREATED_TS,
    EVENT_DATE,
    EVENT_TS,
    RECORD_ID,
    OfflineTableSpec,
)


@dataclass(frozen=True)
class Prepared:
    # table_dtypes plus event_date, sorted by (event_date, *sort_by)
    frame: pl.DataFrame
    duplicates_dropped: int
    null_keys_dropped: int


def prepare_view_frame(spec: OfflineTableSpec, frame: pl.DataFrame) -> Prepared:
    """Check ``frame`` against ``spec`` and return the rows to store.

    Extra columns are ignored. Rows with a null join key are dropped and counted. In a
    plain view's table, rows that tie on (keys, event_ts, created_ts) keep the last one
    in source order (SEMANTICS: point-in-time join) and are counted; an event-log table
    (an aggregated view's) keeps them all, since two equal events are two events, and
    carries ``RECORD_ID`` (null where the frame has none).
    """
    obj = f"view {spec.name!r}"
    if not isinstance(frame, pl.DataFrame):
        raise DataError(
            f"expected a polars DataFrame, got {type(frame).__name__}",
            obj=obj,
            hint="Collect a LazyFrame first, or build the frame with pl.DataFrame(...)",
        )
    missing = [c for c in spec.dtypes if c not in frame.columns]
    if missing:
        raise DataError(
            f"frame lacks column(s) {', '.join(map(repr, missing))}",
            obj=obj,
            field=missing[0],
            hint=f"The offline table needs {', '.join(spec.dtypes)}; "
            f"the frame has {', '.join(frame.columns) or 'no columns'}",
        )
    exprs = [
        utc_column(frame, EVENT_TS, obj=obj).alias(EVENT_TS),
        utc_column(frame, CREATED_TS, obj=obj).alias(CREATED_TS),
    ]
    value_cols = {c: d for c, d in spec.dtypes.items() if c not in (EVENT_TS, CREATED_TS)}
    check_no_naive({c: frame.schema[c] for c in value_cols}, obj=obj)
    for col, declared in value_cols.items():
        check_dtype(obj, col, declared, frame.schema[col])
        exprs.append(pl.col(col).cast(to_polars(declared)))
    if spec.event_log:
        has_ids = RECORD_ID in frame.columns
        record = pl.col(RECORD_ID).cast(pl.String) if has_ids else pl.lit(None, pl.String)
        exprs.append(record.alias(RECORD_ID))
    out = frame.select(exprs).select(list(spec.table_dtypes))

    for ts in (EVENT_TS, CREATED_TS):
        nulls = out[ts].null_count()
        if nulls:
            raise DataError(
                f"{nulls} row(s) have a null timestamp",
                obj=obj,
                field=ts,
                hint="Every stored row needs both event_ts and created_ts; "
                "fill created_ts with the load time if the source has none",
            )

    null_keys = 0
    if any(out[c].null_count() for c in spec.join_keys):
        before = out.height
        out = out.drop_nulls(list(spec.join_keys))
        null_keys = before - out.height

    # Sorting each date on its own measured 2-4x faster than one sort on (date, keys,
    # ts), and leaves one chunk per date: deltalake's partitioned writer then gets each
    # partition's rows contiguous instead of slicing every batch 300 ways.
    out = out.with_columns(pl.col(EVENT_TS).dt.date().alias(EVENT_DATE))
    order = [EVENT_DATE, *spec.sort_by]
    parts = out.partition_by(EVENT_DATE, as_dict=True)
    ordered = (
        pl.concat([parts[d].sort(spec.sort_by) for d in sorted(parts)], rechunk=False)
        if parts
        else out
    )
    if spec.event_log:
        return Prepared(frame=ordered, duplicates_dropped=0, null_keys_dropped=null_keys)
    tie_with_next = pl.all_horizontal(
        [pl.col(c).eq_missing(pl.col(c).shift(-1)) for c in spec.sort_by]
    )
    duplicates = int(ordered.select(tie_with_next.sum()).item())
    if duplicates:
        # Ties are a data error and rare, so only then pay for a stable sort: it keeps
        # tied rows in source order, and the last of each run is the one to keep.
        ordered = out.sort(order, maintain_order=True).filter(~tie_with_next)
    return Prepared(frame=ordered, duplicates_dropped=duplicates, null_keys_dropped=null_keys)


def check_dtype(obj: str, col: str, declared: str, found_pl: pl.DataType) -> None:
    if isinstance(found_pl, pl.Null):
        return  # an all-null column fits any declared dtype
    found = canonical_or_none(found_pl)
    if found is None or not compatible(declared, found):
        shown = found or str(found_pl)
        raise DataError(
            f"column has dtype {shown} but the view declares {declared}",
            obj=obj,
            field=col,
            hint=f"Cast it, e.g. pl.col({col!r}).cast({to_polars(declared)!r}), "
            "or change the declared dtype and re-apply",
        )


def prepare_generic_frame(name: str, frame: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, str]]:
    """A generic table's frame with datetimes in UTC microseconds, and its canonical dtypes.

    Columns of dtypes with no canonical name (structs, decimals...) are passed through.
    """
    obj = f"table {name!r}"
    if not isinstance(frame, pl.DataFrame):
        raise DataError(
            f"expected a polars DataFrame, got {type(frame).__name__}",
            obj=obj,
            hint="Collect a LazyFrame first",
        )
    check_no_naive(frame.schema, obj=obj)
    dtypes: dict[str, str] = {}
    for col, dtype in frame.schema.items():
        canon = canonical_or_none(dtype)
        if canon is not None:
            dtypes[col] = canon
    # The canonical datetime is UTC microseconds; a tz-aware cast keeps the instant.
    casts = {c: to_polars(d) for c, d in dtypes.items() if "datetime" in d}
    return frame.cast(casts), dtypes  # type: ignore[arg-type]
