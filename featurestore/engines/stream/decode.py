"""JSON event bytes -> typed Polars columns, with a reason for every event refused.

The contract for a ``KafkaSource`` with ``value_format="json"``:

- a record value is one JSON object; fields the schema does not declare are ignored;
- every declared field must be present; ``null`` is allowed except for the event
  (and created) timestamp fields, and a view's join keys are checked after its
  row transforms;
- values must have the declared type exactly: a JSON integer for ``int*``/``uint*``
  (no ``true``, no ``1.0``) within the type's range, a number for ``float*``, a
  string for ``string``, ``true``/``false`` for ``bool``, ``"YYYY-MM-DD"`` for
  ``date``, an array of such values for ``list[...]``;
- ``datetime`` values are ISO-8601 strings WITH a zone (``2024-05-01T12:00:00Z``,
  ``...+02:00``; converted to UTC) or integers since the Unix epoch, read as
  milliseconds or microseconds (``StreamSettings.epoch_unit``). A naive string is
  refused, as everywhere else (SEMANTICS: Time).

The fast path checks a whole column at once (Python types, then a strict Polars
constructor); only a column that fails falls back to a per-value check, which is
what names the culprit. Nothing here imports confluent-kafka.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from operator import itemgetter
from typing import Any, Literal, cast

import orjson
import polars as pl

from featurestore._dtypes import FLOATS, INTEGERS, is_list, list_inner, to_polars
from featurestore._time import EPOCH, US_PER_SECOND
from featurestore.engines.stream._gc import gc_paused

# Columns the decoder adds to each row; schema fields may not use the prefix.
META_PREFIX = "_fs_"
RECORD_TS = "_fs_record_ts"  # Kafka record timestamp (or the event time when absent)
PARTITION = "_fs_partition"
OFFSET = "_fs_offset"
INDEX = "_fs_index"  # position of the record in its micro-batch
META_COLUMNS = (RECORD_TS, PARTITION, OFFSET, INDEX)

# Reasons a record is dead-lettered (the value of the ``fs.reason`` header).
UNDECODABLE = "undecodable"
NOT_AN_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
OUT_OF_RANGE = "out_of_range"
BAD_TIMESTAMP = "bad_timestamp"
NAIVE_TIMESTAMP = "naive_timestamp"
NULL_TIMESTAMP = "null_timestamp"
FUTURE_TIMESTAMP = "future_timestamp"
NULL_KEY = "null_key"
TRANSFORM_ERROR = "transform_error"

_MS_US_CUTOFF = 10**14  # |v| below: milliseconds (before year 5138); above: microseconds
_FLOAT32_MAX = 3.4028234663852886e38
_INT_RANGES = {
    f"{'u' if signed == 'u' else ''}int{bits}": (
        (0, 2**bits - 1) if signed == "u" else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    )
    for signed in ("", "u")
    for bits in (8, 16, 32, 64)
}


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class RecordBatch:
    """The records of one topic in one micro-batch, as parallel columns.

    ``timestamps_ms`` holds the Kafka record timestamps (-1 when the record has none).
    """

    topic: str
    values: Sequence[bytes | None]
    timestamps_ms: Sequence[int]
    partitions: Sequence[int]
    offsets: Sequence[int]

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Reject:
    """Record ``index`` of the batch is refused: ``reason`` is a short code, ``detail``
    names the field and the value."""

    index: int
    reason: str
    detail: str


@dataclass(frozen=True)
class Decoded:
    """Valid rows (declared fields, typed, plus the ``_fs_*`` meta columns) and rejects."""

    frame: pl.DataFrame
    rejects: list[Reject]


class _Bad(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class EventDecoder:
    """Decodes the JSON events of one ``KafkaSource``.

    ``fields`` are (name, canonical dtype) pairs; ``max_future_skew_us`` bounds how far
    an event time may run ahead of its record timestamp. Both checks depend only on
    the record, so a replay decodes exactly as the first run did.
    """

    def __init__(
        self,
        *,
        source: str,
        fields: Sequence[tuple[str, str]],
        timestamp_field: str,
        created_timestamp_field: str | None = None,
        max_future_skew_us: int = 300 * US_PER_SECOND,
        epoch_unit: Literal["auto", "us", "ms"] = "auto",
    ) -> None:
        names = [name for name, _ in fields]
        for name in names:
            if name.startswith(META_PREFIX):
                raise ValueError(
                    f"source {source!r}: field {name!r} uses the reserved prefix {META_PREFIX!r}"
                )
        for ts in (timestamp_field, created_timestamp_field):
            if ts is not None and ts not in names:
                raise ValueError(f"source {source!r}: timestamp field {ts!r} is not in the schema")
        self.source = source
        self.fields = tuple(fields)
        self.timestamp_field = timestamp_field
        self.created_timestamp_field = created_timestamp_field
        self.max_future_skew_us = max_future_skew_us
        self.epoch_unit = epoch_unit
        self._dtypes = dict(fields)

    @property
    def schema(self) -> dict[str, pl.DataType]:
        """Polars schema of the decoded frame (fields, then meta columns)."""
        out = {name: to_polars(dtype) for name, dtype in self.fields}
        out[RECORD_TS] = pl.Datetime("us", "UTC")
        out[PARTITION] = pl.Int32()
        out[OFFSET] = pl.Int64()
        out[INDEX] = pl.Int32()
        return out

    def _columns(self, objs: list[dict[str, Any]]) -> list[list[Any]]:
        """One list of raw values per declared field, ``MISSING`` where absent."""
        names = [name for name, _ in self.fields]
        if objs:
            getter = itemgetter(*names)
            try:
                # Every field present (the common case): pick and transpose in C.
                if len(names) == 1:
                    return [list(map(getter, objs))]
                return [list(col) for col in zip(*map(getter, objs), strict=True)]
            except KeyError:
                pass
        return [[o.get(name, MISSING) for o in objs] for name in names]

    def decode(self, batch: RecordBatch) -> Decoded:
        bad: dict[int, Reject] = {}
        columns: dict[str, pl.Series] = {}
        with gc_paused():  # one dict per event: see _gc.py
            objs, positions = _parse(batch.values, bad)
            for (name, dtype), raw_col in zip(self.fields, self._columns(objs), strict=True):
                series, errors = _convert(name, dtype, raw_col, self.epoch_unit)
                for j, (reason, detail) in errors.items():
                    i = positions[j]
                    bad.setdefault(i, Reject(i, reason, detail))
                columns[name] = series
            del objs

        if len(positions) == len(batch):
            stamps, parts, offsets = batch.timestamps_ms, batch.partitions, batch.offsets
        else:
            stamps = [batch.timestamps_ms[i] for i in positions]
            parts = [batch.partitions[i] for i in positions]
            offsets = [batch.offsets[i] for i in positions]
        columns[RECORD_TS] = pl.Series(RECORD_TS, stamps, dtype=pl.Int64)  # ms for now
        columns[PARTITION] = pl.Series(PARTITION, parts, dtype=pl.Int32)
        columns[OFFSET] = pl.Series(OFFSET, offsets, dtype=pl.Int64)
        columns[INDEX] = pl.Series(INDEX, positions, dtype=pl.Int32)
        frame = pl.DataFrame(columns)

        # One query for every time check: small batches are dominated by per-query cost.
        ts = pl.col(self.timestamp_field)
        record_us = pl.when(pl.col(RECORD_TS) >= 0).then(pl.col(RECORD_TS) * 1000)
        checks = [(NULL_TIMESTAMP, f"field {self.timestamp_field!r} is null", ts.is_null())]
        if self.created_timestamp_field is not None:
            created = self.created_timestamp_field
            checks.append((NULL_TIMESTAMP, f"field {created!r} is null", pl.col(created).is_null()))
        checks.append(
            (
                FUTURE_TIMESTAMP,
                f"field {self.timestamp_field!r} is more than "
                f"{self.max_future_skew_us / US_PER_SECOND:g}s ahead of the record timestamp",
                (ts.dt.epoch("us") - record_us).fill_null(0) > self.max_future_skew_us,
            )
        )
        masks = frame.select(*(expr.alias(f"c{k}") for k, (_, _, expr) in enumerate(checks)))
        for (reason, detail, _), mask in zip(checks, masks.iter_columns(), strict=True):
            if mask.any():
                for j in mask.arg_true().to_list():
                    i = positions[j]
                    bad.setdefault(i, Reject(i, reason, detail))

        # Without a record timestamp (-1), the event time stands in as created time.
        stamp = pl.coalesce(record_us, ts.dt.epoch("us")).cast(pl.Datetime("us", "UTC"))
        query = frame.lazy()
        if bad:
            keep = pl.Series([i not in bad for i in positions], dtype=pl.Boolean)
            query = query.filter(keep)
        frame = query.with_columns(stamp.alias(RECORD_TS)).collect()
        return Decoded(frame=frame, rejects=sorted(bad.values(), key=lambda r: r.index))


def _parse(values: Sequence[bytes | None], bad: dict[int, Reject]) -> tuple[list[Any], list[int]]:
    """JSON objects and their positions in the batch; the rest go to ``bad``."""
    loads = orjson.loads
    try:
        # The common case, a batch of good objects, stays in C: map, then one type check.
        # None values raise TypeError here and are named one by one below.
        objs = list(map(loads, cast(Sequence[bytes], values)))
        if set(map(type, objs)) <= {dict}:
            return objs, list(range(len(objs)))
    except (orjson.JSONDecodeError, TypeError):
        pass
    objs, positions = [], []
    for i, raw in enumerate(values):
        if not raw:
            bad[i] = Reject(i, UNDECODABLE, "the record has no value")
            continue
        try:
            obj = loads(raw)
        except orjson.JSONDecodeError as exc:
            bad[i] = Reject(i, UNDECODABLE, f"not valid JSON: {exc}")
            continue
        if type(obj) is not dict:
            bad[i] = Reject(i, NOT_AN_OBJECT, f"a JSON {type(obj).__name__}, not an object")
            continue
        objs.append(obj)
        positions.append(i)
    return objs, positions


# ---------------------------------------------------------------- columns


def _convert(
    name: str, dtype: str, col: list[Any], epoch_unit: str
) -> tuple[pl.Series, dict[int, tuple[str, str]]]:
    """A typed Series for one field and the errors of the rows it could not take
    (those rows hold null in the Series)."""
    pl_dtype = to_polars(dtype)
    types = set(map(type, col))
    if _Missing in types:
        errors = {
            j: (MISSING_FIELD, f"field {name!r} is missing")
            for j, v in enumerate(col)
            if v is MISSING
        }
        col = [None if v is MISSING else v for v in col]
        types.discard(_Missing)
        series, more = _convert(name, dtype, col, epoch_unit)
        for j, err in more.items():
            errors.setdefault(j, err)
        return series, errors
    types.discard(type(None))
    if dtype == "datetime":
        return _datetimes(name, col, types, epoch_unit)
    allowed = _FAST_TYPES.get(dtype)
    if allowed is not None and types <= allowed:
        try:
            if dtype == "date":
                series = pl.Series(name, col, dtype=pl.String).str.to_date("%Y-%m-%d", strict=False)
                if series.null_count() != col.count(None):
                    raise ValueError("a date did not parse")
            elif dtype == "float32":
                series = _float32(pl.Series(name, col, dtype=pl.Float64))
            else:
                series = pl.Series(name, col, dtype=pl_dtype)
            return series, {}
        except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError):
            pass  # some value is out of range: find which, one by one
    return _slow(name, dtype, col, epoch_unit)


_FAST_TYPES: dict[str, set[type]] = {
    **{d: {int} for d in INTEGERS},
    **{d: {int, float} for d in FLOATS},
    "string": {str},
    "bool": {bool},
    "date": {str},
}


def _float32(series: pl.Series) -> pl.Series:
    narrow = series.cast(pl.Float32)
    if (series.is_finite() & ~narrow.is_finite()).any():
        raise OverflowError("a value does not fit float32")
    return narrow


def _slow(
    name: str, dtype: str, col: list[Any], epoch_unit: str
) -> tuple[pl.Series, dict[int, tuple[str, str]]]:
    check = _checker(dtype, epoch_unit)
    values: list[Any] = []
    errors: dict[int, tuple[str, str]] = {}
    for j, v in enumerate(col):
        if v is None:
            values.append(None)
            continue
        try:
            values.append(check(v))
        except _Bad as exc:
            errors[j] = (exc.reason, f"field {name!r}: {exc.detail}")
            values.append(None)
    # Checked datetimes are epoch microseconds: build them as int64, then cast.
    built = pl.Series(name, values, dtype=to_polars(_as_storage(dtype)))
    return built.cast(to_polars(dtype)), errors


def _as_storage(dtype: str) -> str:
    return dtype.replace("datetime", "int64")


def _datetimes(
    name: str, col: list[Any], types: set[type], epoch_unit: str
) -> tuple[pl.Series, dict[int, tuple[str, str]]]:
    """Datetime columns: ISO strings parsed by Polars in bulk, epoch integers scaled in
    bulk; whatever Polars cannot parse is checked one by one for the reason."""
    if types <= {str}:
        parsed = pl.Series(name, col, dtype=pl.String).str.to_datetime(
            format="%+", time_unit="us", time_zone="UTC", strict=False
        )
        if parsed.null_count() == col.count(None):
            return parsed, {}  # every string parsed
        given = pl.Series([v is not None for v in col], dtype=pl.Boolean)
        failed = (parsed.is_null() & given).arg_true()
        fixed, errors = _slow(name, "datetime", [col[j] for j in failed.to_list()], epoch_unit)
        parsed = parsed.scatter(failed, fixed)
        return parsed, {int(failed[k]): e for k, e in errors.items()}
    if types <= {int}:
        try:
            ints = pl.Series(name, col, dtype=pl.Int64)
        except (TypeError, ValueError, OverflowError):
            return _slow(name, "datetime", col, epoch_unit)
        if epoch_unit != "ms" or (ints.abs() < 2**63 // 1000).all():
            return _scale_epoch(ints, epoch_unit).cast(pl.Datetime("us", "UTC")), {}
    return _slow(name, "datetime", col, epoch_unit)


def _scale_epoch(ints: pl.Series, epoch_unit: str) -> pl.Series:
    if epoch_unit == "us":
        return ints
    if epoch_unit == "ms":
        return ints * 1000
    return pl.select(
        pl.when(ints.abs() < _MS_US_CUTOFF).then(ints * 1000).otherwise(ints)
    ).to_series()


# ---------------------------------------------------------------- values


def _checker(dtype: str, epoch_unit: str) -> Callable[[Any], Any]:
    if is_list(dtype):
        inner = _checker(list_inner(dtype), epoch_unit)

        def check_list(v: Any) -> Any:
            if type(v) is not list:
                raise _Bad(WRONG_TYPE, f"expected a JSON array, got {_short(v)}")
            return [None if x is None else inner(x) for x in v]

        return check_list
    if dtype in INTEGERS:
        lo, hi = _INT_RANGES[dtype]

        def check_int(v: Any) -> Any:
            if type(v) is not int:
                raise _Bad(WRONG_TYPE, f"expected an integer ({dtype}), got {_short(v)}")
            if not lo <= v <= hi:
                raise _Bad(OUT_OF_RANGE, f"{v} does not fit {dtype}")
            return v

        return check_int
    if dtype in FLOATS:

        def check_float(v: Any) -> Any:
            if type(v) not in (int, float):
                raise _Bad(WRONG_TYPE, f"expected a number ({dtype}), got {_short(v)}")
            f = float(v)
            if dtype == "float32" and abs(f) > _FLOAT32_MAX and abs(f) != float("inf"):
                raise _Bad(OUT_OF_RANGE, f"{v} does not fit float32")
            return f

        return check_float
    return _SCALAR_CHECKS[dtype] if dtype != "datetime" else _datetime_checker(epoch_unit)


def _check_string(v: Any) -> Any:
    if type(v) is not str:
        raise _Bad(WRONG_TYPE, f"expected a string, got {_short(v)}")
    return v


def _check_bool(v: Any) -> Any:
    if type(v) is not bool:
        raise _Bad(WRONG_TYPE, f"expected true or false, got {_short(v)}")
    return v


def _check_date(v: Any) -> Any:
    if type(v) is not str:
        raise _Bad(WRONG_TYPE, f"expected a 'YYYY-MM-DD' string, got {_short(v)}")
    try:
        return date.fromisoformat(v)
    except ValueError:
        raise _Bad(WRONG_TYPE, f"expected a 'YYYY-MM-DD' date, got {_short(v)}") from None


_SCALAR_CHECKS: dict[str, Callable[[Any], Any]] = {
    "string": _check_string,
    "bool": _check_bool,
    "date": _check_date,
}


def _datetime_checker(epoch_unit: str) -> Callable[[Any], Any]:
    def check_datetime(v: Any) -> Any:
        if type(v) is int:
            if epoch_unit == "ms" or (epoch_unit == "auto" and abs(v) < _MS_US_CUTOFF):
                v *= 1000
            if not -(2**63) <= v < 2**63:
                raise _Bad(OUT_OF_RANGE, f"epoch value {v} is out of range")
            return v
        if type(v) is not str:
            raise _Bad(WRONG_TYPE, f"expected an ISO-8601 string or epoch integer, got {_short(v)}")
        try:
            parsed = datetime.fromisoformat(v)
        except ValueError:
            raise _Bad(BAD_TIMESTAMP, f"not an ISO-8601 timestamp: {_short(v)}") from None
        if parsed.tzinfo is None:
            raise _Bad(
                NAIVE_TIMESTAMP,
                f"naive timestamp {_short(v)}; add a zone, e.g. 'Z' or '+00:00'",
            )
        delta = parsed.astimezone(UTC) - EPOCH
        return (delta.days * 86_400 + delta.seconds) * US_PER_SECOND + delta.microseconds

    return check_datetime
