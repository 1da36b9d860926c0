"""Decoded events -> a view's rows, through the batch engine's ``transform_rows``.

One code path for row transforms: the stream calls the very function the backfill
calls, on each micro-batch. A transform that fails on some rows (a strict cast of
an odd value) is retried on halves of the batch until the failing rows are found;
only they are dead-lettered.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from featurestore.compile.views import FeatureViewPlan
from featurestore.engines.batch.rows import transform_rows
from featurestore.engines.stream.decode import (
    INDEX,
    META_COLUMNS,
    NULL_KEY,
    RECORD_TS,
    TRANSFORM_ERROR,
    Reject,
)
from featurestore.errors import DataError
from featurestore.stores.offline.spec import EVENT_TS

# What happens to each transformed row (a temporary column).
_STATUS = "_fs_status"
_KEEP, _NULL_KEY, _EARLY = 0, 1, 2


@dataclass(frozen=True)
class ViewRows:
    """A view's rows from one micro-batch (view columns + the ``_fs_*`` meta columns),
    the records it refused, and how many rows fell before the handover watermark."""

    frame: pl.DataFrame
    rejects: list[Reject]
    before_watermark: int


class ViewTransform:
    """Applies one view's row transforms to decoded events of its Kafka source.

    Without a created-timestamp field in the events, ``created_ts`` is the Kafka
    record timestamp: deterministic, so a replay produces identical rows.
    """

    def __init__(
        self,
        view: FeatureViewPlan,
        *,
        timestamp_field: str,
        created_timestamp_field: str | None,
        watermark_us: int | None = None,
    ) -> None:
        self.view = view
        self.timestamp_field = timestamp_field
        self.created_field = created_timestamp_field or RECORD_TS
        self.watermark_us = watermark_us

    def check(self, empty: pl.DataFrame) -> None:
        """Run the transforms on an empty frame of the decoded schema: a definition that
        cannot work (a column the events lack) fails here, at start-up, not per event."""
        self._run(empty)

    def apply(self, decoded: pl.DataFrame) -> ViewRows:
        rejects: list[Reject] = []
        frame = self._bisect(decoded, rejects)
        status = frame.get_column(_STATUS)
        early = 0
        if status.max():  # some row has a null key, or falls before the watermark
            keys = list(self.view.join_keys)
            for i in frame.filter(pl.col(_STATUS) == _NULL_KEY).get_column(INDEX).to_list():
                rejects.append(
                    Reject(i, NULL_KEY, f"view {self.view.name!r}: a join key of {keys} is null")
                )
            early = int((status == _EARLY).sum())
            frame = frame.filter(pl.col(_STATUS) == _KEEP)
        return ViewRows(frame=frame.drop(_STATUS), rejects=rejects, before_watermark=early)

    def _run(self, decoded: pl.DataFrame) -> pl.DataFrame:
        """The view's rows, the meta columns and each row's fate, in one query (small
        micro-batches are dominated by the cost per query)."""
        rows = transform_rows(
            self.view,
            decoded.lazy(),
            timestamp_field=self.timestamp_field,
            created_timestamp_field=self.created_field,
        )
        # transform_rows keeps the row order, so the meta columns line up.
        both = pl.concat([rows, decoded.lazy().select(META_COLUMNS)], how="horizontal")
        null_key = pl.any_horizontal(pl.col(k).is_null() for k in self.view.join_keys)
        keep, refuse = pl.lit(_KEEP, pl.Int8), pl.lit(_NULL_KEY, pl.Int8)
        if self.watermark_us is None:
            fate = pl.when(null_key).then(refuse).otherwise(keep)
        else:
            # The batch backfill owns event_ts < watermark (docs: watermark handover).
            early = pl.col(EVENT_TS) < pl.lit(self.watermark_us).cast(pl.Datetime("us", "UTC"))
            fate = (
                pl.when(null_key)
                .then(refuse)
                .when(early)
                .then(pl.lit(_EARLY, pl.Int8))
                .otherwise(keep)
            )
        return both.with_columns(fate.alias(_STATUS)).collect()

    def _bisect(self, decoded: pl.DataFrame, rejects: list[Reject]) -> pl.DataFrame:
        try:
            return self._run(decoded)
        except (pl.exceptions.PolarsError, DataError) as exc:
            if decoded.height == 0:
                raise  # not caused by any row: check() should have caught it
            if decoded.height == 1:
                rejects.append(
                    Reject(
                        int(decoded[INDEX][0]),
                        TRANSFORM_ERROR,
                        f"view {self.view.name!r}: {str(exc).splitlines()[0]}",
                    )
                )
                return self._run(decoded.clear())
            half = decoded.height // 2
            return pl.concat(
                [
                    self._bisect(decoded.slice(0, half), rejects),
                    self._bisect(decoded.slice(half), rejects),
                ]
            )
