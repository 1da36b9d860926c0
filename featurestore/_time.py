"""Durations and instants. Every instant is UTC; the engines use int64 microseconds."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from featurestore.errors import DataError

if TYPE_CHECKING:
    import polars as pl

US_PER_SECOND = 1_000_000
_UNITS_US = {
    "us": 1,
    "ms": 1_000,
    "s": US_PER_SECOND,
    "m": 60 * US_PER_SECOND,
    "h": 3_600 * US_PER_SECOND,
    "d": 86_400 * US_PER_SECOND,
    "w": 7 * 86_400 * US_PER_SECOND,
}
_DURATION = re.compile(r"(\d+)\s*(us|ms|s|m|h|d|w)")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_duration_us(value: Any) -> int:
    """Microseconds in ``value``: a ``timedelta``, a number of seconds or a string
    such as ``"90s"``, ``"1h30m"``, ``"7d"``. Raises ``ValueError`` on anything else.
    """
    if isinstance(value, timedelta):
        return (value.days * 86_400 + value.seconds) * US_PER_SECOND + value.microseconds
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return round(value * US_PER_SECOND)
    if isinstance(value, str):
        text = value.replace(" ", "").lower()
        parts = _DURATION.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            return sum(int(n) * _UNITS_US[u] for n, u in parts)
    raise ValueError(
        f"not a duration: {value!r}; use a timedelta, seconds, "
        "or a string like '90s', '1h30m', '7d'"
    )


def format_duration_us(us: int) -> str:
    """The shortest string ``parse_duration_us`` reads back as ``us``."""
    if us == 0:
        return "0s"
    out = []
    rest = us
    for unit in ("w", "d", "h", "m", "s", "ms", "us"):
        size = _UNITS_US[unit]
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(out)


def to_utc(value: datetime | str | int, *, what: str = "timestamp") -> datetime:
    """A tz-aware UTC datetime. Naive datetimes are rejected (SEMANTICS: Time)."""
    if isinstance(value, int):
        return from_us(value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise DataError(
                "is not an ISO 8601 time",
                field=what,
                value=value,
                hint="e.g. '2024-01-01T00:00:00Z' or '2024-01-01T09:30:00+02:00'",
            ) from None
    if not isinstance(value, datetime):
        raise DataError("is not a datetime", field=what, value=value)
    if value.tzinfo is None:
        raise DataError(
            "is a naive datetime",
            field=what,
            value=value,
            hint="Give a time zone, e.g. datetime(..., tzinfo=timezone.utc) "
            "or '2024-01-01T00:00:00Z'",
        )
    return value.astimezone(UTC)


def to_us(value: datetime | str | int, *, what: str = "timestamp") -> int:
    """Microseconds since the Unix epoch (UTC)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    d = to_utc(value, what=what) - EPOCH
    return (d.days * 86_400 + d.seconds) * US_PER_SECOND + d.microseconds


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=int(us))


def now_us() -> int:
    return to_us(datetime.now(UTC))


def utc_column(df: pl.DataFrame | pl.LazyFrame, column: str, *, obj: str) -> pl.Expr:
    """An expression turning ``column`` into ``Datetime('us', 'UTC')``.

    A tz-aware column in another zone is converted; a naive one is a ``DataError``
    naming the object and the column; anything that is not a datetime too.
    """
    import polars as pl

    schema = df.collect_schema() if isinstance(df, pl.LazyFrame) else df.schema
    if column not in schema:
        raise DataError(
            "timestamp column is missing",
            obj=obj,
            field=column,
            hint=f"Columns present: {', '.join(schema.names())}",
        )
    dtype = schema[column]
    if not isinstance(dtype, pl.Datetime):
        raise DataError(
            f"timestamp column has dtype {dtype}, not a datetime",
            obj=obj,
            field=column,
            hint="Cast it to a tz-aware datetime, "
            "e.g. pl.col(c).str.to_datetime().dt.replace_time_zone('UTC')",
        )
    if dtype.time_zone is None:
        raise DataError(
            "timestamp column is naive (no time zone)",
            obj=obj,
            field=column,
            hint="featurestore only accepts UTC instants: "
            "use .dt.replace_time_zone('UTC') if the values are UTC",
        )
    expr = pl.col(column)
    if dtype.time_zone != "UTC":
        expr = expr.dt.convert_time_zone("UTC")
    if dtype.time_unit != "us":
        expr = expr.dt.cast_time_unit("us")
    return expr
