"""Reading feature-log rows back for an audit: one table, a time range, a sample."""

from __future__ import annotations

import json
from dataclasses import dataclass

import polars as pl

from featurestore.api.feature_log import (
    FEATURES,
    FORMAT,
    LOG_FORMAT,
    REQUEST_DATE,
    REQUEST_ID,
    REQUEST_TIME,
)
from featurestore.errors import DataError, RequestError
from featurestore.stores.offline.delta import DeltaOfflineStore

ROW = "__row"  # position of a log row in the audited frame
T_US = "__t"  # request time as int64 microseconds
# Fixed seed: the same sample fraction picks the same requests on every run of one
# Polars version, so an audit can be repeated.
SAMPLE_SEED = 0x5EED


@dataclass(frozen=True)
class LogRows:
    """The audited log rows and what they were read from."""

    table: str
    table_version: int | None
    frame: pl.DataFrame  # log columns plus ROW and T_US
    feature_lists: dict[str, tuple[str, ...]]  # `features` JSON -> its references

    @property
    def refs(self) -> list[str]:
        """Every feature reference logged, in first-seen order."""
        seen: dict[str, None] = {}
        for refs in self.feature_lists.values():
            seen.update(dict.fromkeys(refs))
        return list(seen)

    def has_ref(self, ref: str) -> pl.Expr:
        """Whether a row's feature list includes ``ref``."""
        lists = [text for text, refs in self.feature_lists.items() if ref in refs]
        return pl.col(FEATURES).is_in(lists)


def read_log(
    offline: DeltaOfflineStore,
    table: str,
    *,
    start_us: int | None,
    end_us: int | None,
    sample: float | None,
) -> LogRows:
    """Rows with ``start <= request_time < end``; ``sample`` keeps that fraction of
    requests, whole (every entity of a kept request)."""
    if not offline.exists(table):
        raise RequestError(
            "no feature log table",
            obj=f"table {table!r}",
            hint="attach a FeatureLogger to serving, or pass the log table's name",
        )
    if sample is not None and not 0.0 < sample <= 1.0:
        raise RequestError("must be in (0, 1]", field="sample", value=sample)
    version = offline.version(table)
    lf = offline.read_table(table, version=version)
    utc = pl.Datetime("us", "UTC")
    if start_us is not None:
        # The date filter lets the scan skip whole request_date partitions.
        lf = lf.filter(
            pl.col(REQUEST_DATE) >= pl.lit(start_us).cast(utc).dt.date(),
            pl.col(REQUEST_TIME) >= pl.lit(start_us).cast(utc),
        )
    if end_us is not None:
        lf = lf.filter(
            pl.col(REQUEST_DATE) <= pl.lit(end_us).cast(utc).dt.date(),
            pl.col(REQUEST_TIME) < pl.lit(end_us).cast(utc),
        )
    if sample is not None and sample < 1.0:
        lf = lf.filter(pl.col(REQUEST_ID).hash(SAMPLE_SEED).cast(pl.Float64) < sample * 2.0**64)
    frame = lf.collect()
    newest = frame.select(pl.col(FORMAT).max()).item()
    if newest is not None and newest > LOG_FORMAT:
        raise DataError(
            f"holds rows of log format {newest}; this featurestore reads up to {LOG_FORMAT}",
            obj=f"table {table!r}",
            hint="upgrade featurestore to audit these rows",
        )
    frame = frame.with_row_index(ROW).with_columns(pl.col(REQUEST_TIME).dt.epoch("us").alias(T_US))
    lists = {
        text: tuple(json.loads(text)) for text in frame[FEATURES].unique().drop_nulls().to_list()
    }
    return LogRows(table, version, frame, lists)
