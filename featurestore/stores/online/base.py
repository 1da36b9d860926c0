"""The online store contract: a small protocol and the frozen values it trades in.

An online store keeps, per (project, view, entity key), ONE record: the view's
feature values plus ``event_ts`` and ``created_ts`` (int64 microseconds, UTC).
Writes are compare-and-set on ``(event_ts, created_ts)``: a record replaces the
stored one only when it is strictly newer, so replays and backfills never
regress a value (SEMANTICS.md, "Online"). Whether a value is PRESENT, MISSING or
EXPIRED is decided by the caller from ``event_ts``; the store returns the record
or nothing.

Retention: a record stops being returned ``schema.retention_us`` after its
``event_ts`` (None: kept until a newer record replaces it), in every backend, so
the in-memory twin behaves as Redis does once its keys expire. The caller decides
the retention (``featurestore.config.OnlineRetention``). By default it is
``2 * ttl``: between ``ttl`` and ``2 * ttl`` the record is still returned and the
caller reports EXPIRED; after that it reports MISSING.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from featurestore._dtypes import FLOATS, is_list, normalize_dtype
from featurestore.errors import DataError, DefinitionError

# What a backend can promise. A caller checks these instead of catching
# NotImplementedError at run time.
CAP_CAS = "cas"  # writes are compare-and-set on (event_ts, created_ts)
CAP_TTL = "ttl"  # records are dropped retention_us after their event_ts
CAP_MULTI_VIEW_READ = "multi_view_read"  # one read() call serves many views
CAP_PERSISTENT = "persistent"  # records survive the process
CAP_MULTI_PROCESS = "multi_process"  # several processes may write at once, safely
# one unreachable node fails only the requests that need it (Redis Cluster): a reader
# must not treat one failed read as the whole store being down
CAP_PARTIAL = "partial_availability"

# A column of values: a list or tuple, a numpy array, a Polars Series or an Arrow
# array. Typed as Any because Polars and Arrow are optional at import time.
Column = Any

_NAME = re.compile(r"[^\s:{}]+")
_SCHEMA_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class OnlineViewSchema:
    """How one view's records are keyed and encoded; built by the caller from the plan.

    ``schema_id`` must change whenever keys, features or dtypes change: records
    written under one id are never decoded with another (they simply are not
    found). :meth:`build` derives it for you. Neither the TTL nor the retention
    is part of it: they decide how long records live, not which ones a view reads.

    ``retention_us``: how long after its ``event_ts`` a record written with this
    schema is kept; None keeps it until a newer record replaces it. Only writes
    use it (the deadline is stored with each record).
    """

    project: str
    view: str
    join_keys: tuple[str, ...]
    key_dtypes: tuple[str, ...]
    features: tuple[str, ...]
    feature_dtypes: tuple[str, ...]
    ttl_us: int | None
    schema_id: str
    retention_us: int | None = None

    def __post_init__(self) -> None:
        where = f"online view {self.project!r}/{self.view!r}"
        for what, name in (("project", self.project), ("view", self.view)):
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise DefinitionError(
                    f"{what} name is not usable as an online store key",
                    obj=where,
                    field=what,
                    value=name,
                    hint="Use a non-empty name without spaces, ':', '{' or '}'",
                )
        if not _SCHEMA_ID.fullmatch(self.schema_id):
            raise DefinitionError(
                "schema_id must be 1-64 characters of [A-Za-z0-9_-]",
                obj=where,
                field="schema_id",
                value=self.schema_id,
                hint="Use OnlineViewSchema.build(...) or make_schema_id(...)",
            )
        if not self.join_keys:
            raise DefinitionError("needs at least one join key", obj=where, field="join_keys")
        for names, dtypes, what in (
            (self.join_keys, self.key_dtypes, "key"),
            (self.features, self.feature_dtypes, "feature"),
        ):
            if len(names) != len(dtypes):
                raise DefinitionError(
                    f"{len(names)} {what} names but {len(dtypes)} {what} dtypes",
                    obj=where,
                    field=f"{what}_dtypes",
                    value=dtypes,
                    hint=f"Give one dtype per {what}, in the same order",
                )
            for name, dtype in zip(names, dtypes, strict=True):
                _check_dtype(where, name, dtype, key=what == "key")
        every = self.join_keys + self.features
        dupes = sorted({n for n in every if every.count(n) > 1})
        if dupes:
            raise DefinitionError(
                "names must be unique across join keys and features",
                obj=where,
                value=dupes,
                hint="Rename the clashing feature",
            )
        for name in ("ttl_us", "retention_us"):
            us = getattr(self, name)
            if us is not None and (type(us) is not int or us <= 0):
                raise DefinitionError(
                    f"{name} must be a positive number of microseconds or None",
                    obj=where,
                    field=name,
                    value=us,
                )

    @classmethod
    def build(
        cls,
        *,
        project: str,
        view: str,
        keys: Mapping[str, str],
        features: Mapping[str, str],
        ttl_us: int | None = None,
        retention_us: int | Literal["2x ttl"] | None = "2x ttl",
    ) -> OnlineViewSchema:
        """A schema whose ``schema_id`` is derived from keys, features and dtypes.
        ``retention_us`` defaults to ``2 * ttl_us`` (None without a TTL: kept).

        >>> s = OnlineViewSchema.build(project="p", view="v", keys={"user": "int64"},
        ...                            features={"score": "float64"})
        >>> len(s.schema_id)
        12
        """
        key_names, key_dtypes = tuple(keys), tuple(keys.values())
        names, dtypes = tuple(features), tuple(features.values())
        return cls(
            project=project,
            view=view,
            join_keys=key_names,
            key_dtypes=key_dtypes,
            features=names,
            feature_dtypes=dtypes,
            ttl_us=ttl_us,
            schema_id=make_schema_id(
                join_keys=key_names, key_dtypes=key_dtypes, features=names, feature_dtypes=dtypes
            ),
            retention_us=(
                (None if ttl_us is None else 2 * ttl_us)
                if retention_us == "2x ttl"
                else retention_us
            ),
        )

    @property
    def scope(self) -> str:
        """``project:view:schema_id``: the namespace of this schema's records."""
        return f"{self.project}:{self.view}:{self.schema_id}"


def make_schema_id(
    *,
    join_keys: Sequence[str],
    key_dtypes: Sequence[str],
    features: Sequence[str],
    feature_dtypes: Sequence[str],
) -> str:
    """A 12-character hash of what decides the record encoding (not the TTL)."""
    doc = json.dumps(
        [list(join_keys), list(key_dtypes), list(features), list(feature_dtypes)],
        separators=(",", ":"),
    )
    return hashlib.sha256(doc.encode()).hexdigest()[:12]


def _check_dtype(where: str, name: str, dtype: str, *, key: bool) -> None:
    try:
        canonical = normalize_dtype(dtype)
    except ValueError as exc:
        raise DefinitionError(str(exc), obj=where, field=name, value=dtype) from None
    if canonical != dtype:
        raise DefinitionError(
            "dtype is not in canonical form",
            obj=where,
            field=name,
            value=dtype,
            hint=f"Use {canonical!r} (featurestore._dtypes.normalize_dtype)",
        )
    if key and (is_list(dtype) or dtype in FLOATS):
        raise DefinitionError(
            f"a join key cannot have dtype {dtype}",
            obj=where,
            field=name,
            value=dtype,
            hint="Use an integer, string, bool, date or datetime key",
        )


@dataclass(frozen=True)
class WriteBatch:
    """Rows to write, column by column (the fast path is numpy arrays or Polars Series).

    ``keys`` and ``features`` map names to columns; every join key and every
    feature of the schema must be given. ``event_ts`` and ``created_ts`` are int64
    microseconds since the epoch (UTC), without nulls. A null inside a feature
    column is stored as null; a null key is a ``DataError``.
    """

    keys: Mapping[str, Column]
    event_ts: Column
    created_ts: Column
    features: Mapping[str, Column] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.event_ts)
        columns = {"event_ts": self.event_ts, "created_ts": self.created_ts}
        columns.update(self.keys)
        columns.update(self.features)
        wrong = {name: len(col) for name, col in columns.items() if len(col) != n}
        if wrong:
            raise DataError(
                f"every column must have {n} rows (the length of event_ts)",
                obj="WriteBatch",
                value=wrong,
            )

    def __len__(self) -> int:
        return len(self.event_ts)

    @classmethod
    def from_frame(
        cls,
        frame: Any,
        *,
        schema: OnlineViewSchema,
        event_ts: str = "event_ts",
        created_ts: str = "created_ts",
    ) -> WriteBatch:
        """A batch from a Polars DataFrame or an Arrow table holding the schema's columns.

        Timestamp columns may be tz-aware datetimes (converted to UTC microseconds)
        or int64 microseconds; naive datetimes are rejected.
        """
        import polars as pl

        from featurestore._time import utc_column

        df = frame if isinstance(frame, pl.DataFrame) else pl.DataFrame(pl.from_arrow(frame))
        obj = f"online write to {schema.project}/{schema.view}"
        missing = [c for c in (*schema.join_keys, *schema.features) if c not in df.columns]
        if missing:
            raise DataError(
                "columns are missing from the frame",
                obj=obj,
                value=missing,
                hint=f"Columns present: {', '.join(df.columns)}",
            )
        stamps = []
        for name in (event_ts, created_ts):
            if name in df.columns and df.schema[name].is_integer():
                stamps.append(df[name].cast(pl.Int64).to_numpy())
            else:
                expr = utc_column(df, name, obj=obj).dt.epoch("us")
                stamps.append(df.select(expr).to_series().to_numpy())
        return cls(
            keys={k: df[k] for k in schema.join_keys},
            event_ts=stamps[0],
            created_ts=stamps[1],
            features={f: df[f] for f in schema.features},
        )


@dataclass(frozen=True)
class WriteStats:
    """What a write did: rows stored, rows not newer than the stored record, and rows
    already past retention (``event_ts + schema.retention_us`` not after now) that
    were dropped."""

    written: int = 0
    skipped_stale: int = 0
    skipped_expired: int = 0

    def __add__(self, other: WriteStats) -> WriteStats:
        return WriteStats(
            written=self.written + other.written,
            skipped_stale=self.skipped_stale + other.skipped_stale,
            skipped_expired=self.skipped_expired + other.skipped_expired,
        )


@dataclass(frozen=True)
class ReadRequest:
    """Look up ``features`` (all of them when None) of one view for many entities.

    ``entity_keys`` maps each join key to a column of values; row ``i`` of every
    column forms entity ``i``. A null in any key column reads as missing.
    """

    schema: OnlineViewSchema
    entity_keys: Mapping[str, Sequence[Any]]
    features: Sequence[str] | None = None


@dataclass(frozen=True)
class ReadResult:
    """One request's answer, column by column, in the request's entity order.

    Where no record was found, ``event_ts``/``created_ts`` are None and so is
    every feature value (a stored null is also None; ``event_ts`` tells them apart).
    """

    schema: OnlineViewSchema
    features: dict[str, list[Any]]
    event_ts: list[int | None]
    created_ts: list[int | None]

    def __len__(self) -> int:
        return len(self.event_ts)


@runtime_checkable
class OnlineStore(Protocol):
    """What every online backend offers (memory, SQLite, Redis)."""

    capabilities: frozenset[str]

    def write(self, schema: OnlineViewSchema, rows: WriteBatch) -> WriteStats:
        """Compare-and-set every row; returns how many were stored or skipped."""
        ...

    def read(self, requests: Sequence[ReadRequest]) -> list[ReadResult]:
        """All views x entities in one round trip; one result per request, in order."""
        ...

    def delete_view(self, schema: OnlineViewSchema) -> int:
        """Remove every record of this schema (this schema_id only); returns the count."""
        ...

    def delete_entities(
        self, schema: OnlineViewSchema, entity_keys: Mapping[str, Sequence[Any]]
    ) -> int:
        """Remove the records of these entities (``entity_keys``: a column per join
        key, as in ``ReadRequest``) under this schema only; returns how many existed.
        Entities without a record count nothing, so a repeated call deletes 0."""
        ...

    def ping(self) -> None:
        """Raise ``OnlineStoreUnavailable`` when the store cannot be reached."""
        ...

    def close(self) -> None:
        """Release connections and files; the store is not used afterwards."""
        ...
