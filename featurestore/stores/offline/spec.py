"""What the offline store is told about a view's table, and what a write reports."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from featurestore._dtypes import normalize_dtype
from featurestore.errors import DefinitionError

if TYPE_CHECKING:
    import polars as pl

EVENT_TS = "event_ts"
CREATED_TS = "created_ts"
EVENT_DATE = "event_date"
# The identity of a row that came from a Kafka record ("topic/partition/offset"), kept in
# event-log tables so a replayed record is recognised; null for rows from a batch source.
RECORD_ID = "_record_id"
RESERVED = frozenset({EVENT_TS, CREATED_TS, EVENT_DATE, RECORD_ID})

# Written into each view table's Delta description so a later release can tell
# how the table was laid out (sort order, partitioning) without guessing.
FORMAT_VERSION = 1

# Column names end up quoted with backticks inside merge predicates (DataFusion SQL),
# so a backtick or a control character in a name would break the quoting.
_BAD_NAME = re.compile(r"[`\x00-\x1f]")


@dataclass(frozen=True)
class OfflineTableSpec:
    """The layout of one feature view's offline table, built by the caller from the plan.

    The table holds ``join_keys``, ``event_ts``, ``created_ts`` (UTC microseconds),
    ``features`` and the partition column ``event_date`` (the UTC date of ``event_ts``).
    Dtypes are canonical names from :mod:`featurestore._dtypes`.

    ``event_log`` marks the table of an aggregated view (SEMANTICS: events are a log):
    it keeps every source row, ties on (keys, event_ts, created_ts) included, plus the
    ``RECORD_ID`` column; a plain view's table keeps one row per tie (the last).
    """

    name: str
    join_keys: tuple[str, ...]
    key_dtypes: tuple[str, ...]
    features: tuple[str, ...]
    feature_dtypes: tuple[str, ...]
    event_log: bool = False

    def __post_init__(self) -> None:
        obj = f"view {self.name!r}"
        if not self.join_keys:
            raise DefinitionError("has no join keys", obj=obj, hint="A view needs an entity key")
        if len(self.join_keys) != len(self.key_dtypes):
            raise DefinitionError(
                f"has {len(self.join_keys)} join keys but {len(self.key_dtypes)} key dtypes",
                obj=obj,
                hint="Give one dtype per join key",
            )
        if len(self.features) != len(self.feature_dtypes):
            raise DefinitionError(
                f"has {len(self.features)} features but {len(self.feature_dtypes)} dtypes",
                obj=obj,
                hint="Give one dtype per feature",
            )
        seen: set[str] = set()
        for col in (*self.join_keys, *self.features):
            if col in RESERVED:
                raise DefinitionError(
                    "uses a column name the offline store reserves",
                    obj=obj,
                    field=col,
                    hint=f"Rename it; {', '.join(sorted(RESERVED))} are taken",
                )
            if col in seen:
                raise DefinitionError("names a column twice", obj=obj, field=col)
            if not col or _BAD_NAME.search(col):
                raise DefinitionError(
                    "is not a usable column name",
                    obj=obj,
                    field=col,
                    hint="Use a name without backticks or control characters",
                )
            seen.add(col)
        # Canonicalise, so pl.Int64 and "int64" give equal specs (frozen: via object.__setattr__).
        for attr in ("key_dtypes", "feature_dtypes"):
            try:
                canon = tuple(normalize_dtype(d) for d in getattr(self, attr))
            except ValueError as exc:
                raise DefinitionError(str(exc), obj=obj, field=attr) from None
            object.__setattr__(self, attr, canon)

    @property
    def sort_by(self) -> tuple[str, ...]:
        """The order every data file of the table is written in."""
        return (*self.join_keys, EVENT_TS, CREATED_TS)

    @property
    def dtypes(self) -> dict[str, str]:
        """Canonical dtype of every stored column except ``event_date``."""
        out = dict(zip(self.join_keys, self.key_dtypes, strict=True))
        out[EVENT_TS] = "datetime"
        out[CREATED_TS] = "datetime"
        out.update(zip(self.features, self.feature_dtypes, strict=True))
        return out

    @property
    def table_dtypes(self) -> dict[str, str]:
        """Every stored column except ``event_date``: ``dtypes`` plus, in an event-log
        table, ``RECORD_ID``."""
        return {**self.dtypes, RECORD_ID: "string"} if self.event_log else self.dtypes

    def empty_rows(self) -> pl.DataFrame:
        """No rows, the table's columns and dtypes (``event_date`` aside): what a view
        without a table yet holds."""
        import polars as pl

        from featurestore._dtypes import to_polars

        return pl.DataFrame(schema={c: to_polars(d) for c, d in self.dtypes.items()})


@dataclass(frozen=True)
class WriteReport:
    """What one write did.

    ``rows_written`` counts new rows; ``rows_updated`` counts existing rows whose values
    a merge replaced (a merge that finds identical values updates nothing);
    ``rows_replaced`` counts the rows a range replace removed (and wrote anew or not).
    ``duplicates_dropped`` counts rows that tied with a later row of the same batch on
    (join keys, event_ts, created_ts), in plain views only; ``null_keys_dropped`` counts
    rows with a null join key, which no lookup or join can ever match. ``version`` is
    the table version after the write (unchanged when nothing changed).
    """

    rows_written: int
    rows_updated: int
    duplicates_dropped: int
    version: int
    seconds: float
    null_keys_dropped: int = 0
    rows_replaced: int = 0
