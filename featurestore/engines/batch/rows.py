"""Row-level execution of a compiled feature view: source rows -> view rows.

The batch engine and the stream engine both call ``transform_rows``: one code path
for row transforms, whatever the rows came from.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from featurestore._dtypes import to_polars
from featurestore._time import utc_column
from featurestore.compile.views import FeatureViewPlan
from featurestore.errors import DataError
from featurestore.stores.offline.spec import CREATED_TS, EVENT_TS
from featurestore.stores.view_specs import stored_features


def view_columns(view: FeatureViewPlan) -> dict[str, str]:
    """The columns a view stores offline, with canonical dtypes: keys, then features."""
    cols = dict(zip(view.join_keys, view.key_dtypes, strict=True))
    cols.update(stored_features(view))
    return cols


def transform_rows(
    view: FeatureViewPlan,
    rows: pl.LazyFrame,
    *,
    timestamp_field: str,
    created_timestamp_field: str | None,
) -> pl.LazyFrame:
    """Validate timestamps, apply the row transforms, select and cast the view's columns.

    Output columns: join keys, ``event_ts``, ``created_ts`` (Datetime us UTC; equal
    to ``event_ts`` when the source has no created column), then the features.
    """
    obj = f"source of feature view {view.name!r}"
    event = utc_column(rows, timestamp_field, obj=obj).alias(EVENT_TS)
    if created_timestamp_field is not None:
        created = utc_column(rows, created_timestamp_field, obj=obj).alias(CREATED_TS)
    else:
        created = event.alias(CREATED_TS)
    exprs = view.transform_exprs
    if exprs:
        rows = rows.with_columns(**exprs)
    columns = view_columns(view)
    schema = rows.collect_schema()
    missing = [c for c in columns if c not in schema]
    if missing:
        raise DataError(
            f"columns {missing} are missing from the source rows",
            obj=obj,
            hint=f"columns present: {', '.join(schema.names())}; re-run `featurestore plan`",
        )
    return rows.select(
        *[pl.col(c).cast(to_polars(d)) for c, d in columns.items() if c in view.join_keys],
        event,
        created,
        *[pl.col(c).cast(to_polars(d)) for c, d in columns.items() if c not in view.join_keys],
    )


def scan_source(view: FeatureViewPlan, *, repo: Path) -> pl.LazyFrame:
    """A lazy scan of the view's batch source (Delta or Parquet)."""
    src = view.source.batch
    path = view.source.resolved_path(repo)
    options = dict(src.get("storage_options") or {}) or None
    try:
        if src["format"] == "parquet":
            scan = pl.scan_parquet(path, storage_options=options)
        else:
            scan = pl.scan_delta(path, storage_options=options)
        scan.collect_schema()  # the scan is lazy: open the file now, inside the try
        return scan
    except Exception as exc:  # missing file, bad credentials, not a table, corrupt
        raise DataError(
            f"cannot read the batch source: {exc}",
            obj=f"BatchSource {src['name']!r}",
            field="path",
            value=path,
            hint="check the path in the definition and that the data exists",
        ) from exc


def read_view_rows(
    view: FeatureViewPlan,
    *,
    repo: Path,
    start_us: int | None = None,
    end_us: int | None = None,
) -> pl.LazyFrame:
    """Source rows of ``view`` with ``start <= event_ts < end``, transformed.

    The time filter is applied on the source column before the transform so that
    Parquet statistics and Delta partitions can skip files.
    """
    rows = scan_source(view, repo=repo)
    ts = view.source.timestamp_field
    obj = f"source of feature view {view.name!r}"
    if start_us is not None or end_us is not None:
        col = utc_column(rows, ts, obj=obj)
        if start_us is not None:
            rows = rows.filter(col >= pl.lit(start_us).cast(pl.Datetime("us", "UTC")))
        if end_us is not None:
            rows = rows.filter(col < pl.lit(end_us).cast(pl.Datetime("us", "UTC")))
    return transform_rows(
        view, rows, timestamp_field=ts, created_timestamp_field=view.source.created_timestamp_field
    )


def latest_per_entity(rows: pl.LazyFrame, keys: tuple[str, ...]) -> pl.LazyFrame:
    """Per entity, the row the point-in-time join picks (SEMANTICS: Online): the
    largest event_ts, then created_ts, then the last in input order. Materialization
    and the stream worker both use this one definition."""
    return (
        rows.with_row_index("_pos")
        .sort([EVENT_TS, CREATED_TS, "_pos"])
        .group_by(list(keys))
        .last()
        .drop("_pos")
    )
