"""Turn the columns a caller hands us into numpy arrays or Python lists, strictly.

Fixed-width dtypes (bool, ints, floats, date, datetime) become a numpy array of
the physical type (date: int32 days, datetime: int64 microseconds, both UTC)
with nulls as 0, plus a null mask. Strings and lists stay Python objects. Values
that do not fit the declared dtype raise ``DataError`` naming the column rather
than being wrapped or truncated silently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any

import numpy as np

from featurestore._dtypes import INTEGERS, compatible, from_polars
from featurestore._time import to_us
from featurestore.errors import DataError

NP_TYPES: dict[str, type[np.generic]] = {
    "bool": np.bool_,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "uint32": np.uint32,
    "uint64": np.uint64,
    "float32": np.float32,
    "float64": np.float64,
    "date": np.int32,
    "datetime": np.int64,
}
# The integer type that holds a date or datetime; other dtypes are their own.
PHYSICAL = {"date": "int32", "datetime": "int64"}
# struct format codes of the fixed-width dtypes (big-endian in every record)
STRUCT_CODES = {
    "bool": "?",
    "int8": "b",
    "int16": "h",
    "int32": "i",
    "int64": "q",
    "uint8": "B",
    "uint16": "H",
    "uint32": "I",
    "uint64": "Q",
    "float32": "f",
    "float64": "d",
    "date": "i",
    "datetime": "q",
}
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Mask = np.ndarray | None


def _library(col: Any) -> str:
    return type(col).__module__.partition(".")[0]


def _bad(what: str, message: str, value: Any = None, hint: str | None = None) -> DataError:
    return DataError(message, field=what, value=value, hint=hint)


def fixed_column(col: Any, dtype: str, *, what: str) -> tuple[np.ndarray, Mask]:
    """``(values, null_mask)`` for a fixed-width dtype; the mask is None without nulls."""
    lib = _library(col)
    if lib == "pyarrow":
        import polars as pl

        col = pl.Series(what, col)
        lib = "polars"
    if lib == "polars":
        return _from_polars(col, dtype, what)
    if isinstance(col, np.ndarray) and col.dtype != object:
        return _from_numpy(col, dtype, what)
    return _from_python(list(col), dtype, what)


def object_column(col: Any) -> list[Any]:
    """The values of a string or list column as a Python list (None for null)."""
    lib = _library(col)
    if lib == "polars":
        return list(col.to_list())
    if lib == "pyarrow":
        return list(col.to_pylist())
    if isinstance(col, np.ndarray):
        return list(col.tolist())
    return list(col)


def _coerce(arr: np.ndarray, found: str, declared: str, *, what: str) -> np.ndarray:
    """``arr`` (holding canonical dtype ``found``) as the physical numpy type of ``declared``."""
    physical = PHYSICAL.get(declared, declared)
    target = NP_TYPES[declared]
    if found == physical:
        return np.ascontiguousarray(arr, dtype=target)
    if found in INTEGERS and physical in INTEGERS:
        info = np.iinfo(np.dtype(target))
        if arr.size and (int(arr.min()) < info.min or int(arr.max()) > info.max):
            raise _bad(
                what,
                f"holds {found} values outside the range of {declared}",
                value=[int(arr.min()), int(arr.max())],
                hint=f"Declare a wider dtype or fix the data ({declared}: {info.min}..{info.max})",
            )
        return arr.astype(target)
    if physical == "float32" and (found == "float64" or found in INTEGERS):
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below
            out = arr.astype(np.float32)
            overflow = np.isinf(out) & np.isfinite(arr)
        if found == "float64" and overflow.any():
            raise _bad(
                what,
                "holds values too large for float32",
                value=float(arr[overflow][0]),
                hint="Declare float64",
            )
        return out
    if compatible(physical, found):
        return arr.astype(target)
    raise _bad(
        what,
        f"holds {found} values, which do not fit a {declared} column",
        hint=f"Cast the column to {declared} before writing",
    )


def _from_numpy(arr: np.ndarray, dtype: str, what: str) -> tuple[np.ndarray, Mask]:
    if arr.ndim != 1:
        raise _bad(what, f"must be one-dimensional, got shape {arr.shape}")
    if arr.dtype.kind == "M":
        if dtype not in PHYSICAL:
            raise _bad(what, f"holds datetime64 values but is declared {dtype}")
        nat = np.isnat(arr)
        unit = "D" if dtype == "date" else "us"
        raw = arr.astype(f"datetime64[{unit}]").view(np.int64)
        mask = nat if nat.any() else None
        if mask is not None:
            raw = np.where(nat, 0, raw)
        return _coerce(raw, "int64", dtype, what=what), mask
    if arr.dtype.kind in "biuf" and arr.dtype.name in NP_TYPES:
        return _coerce(arr, arr.dtype.name, dtype, what=what), None
    raise _bad(what, f"has numpy dtype {arr.dtype}, which cannot hold {dtype} values")


def _from_polars(s: Any, dtype: str, what: str) -> tuple[np.ndarray, Mask]:
    import polars as pl

    mask = s.is_null().to_numpy() if s.null_count() else None
    sdt = s.dtype
    if isinstance(sdt, pl.Datetime):
        if sdt.time_zone is None:
            raise _bad(
                what,
                "is a naive datetime column",
                hint="Use .dt.replace_time_zone('UTC') if the values are UTC",
            )
        s = s.dt.cast_time_unit("us")
        found = "datetime"
    else:
        try:
            found = from_polars(sdt)
        except ValueError as exc:
            raise _bad(what, str(exc)) from None
    if found in PHYSICAL:
        if dtype != found:
            raise _bad(what, f"holds {found} values but is declared {dtype}")
        found = PHYSICAL[found]
    raw = s.to_physical().fill_null(0).to_numpy()
    return _coerce(raw, found, dtype, what=what), mask


def _from_python(values: list[Any], dtype: str, what: str) -> tuple[np.ndarray, Mask]:
    nulls = [v is None for v in values]
    mask = np.array(nulls, dtype=np.bool_) if any(nulls) else None
    check = PY_CHECKS[dtype]
    if dtype == "datetime":
        check = partial(datetime_us, what=what)
    try:
        filled = [0 if v is None else check(v) for v in values]
    except TypeError as exc:
        raise _bad(what, f"holds a value that is not a {dtype}", value=exc.args[0]) from None
    if dtype in ("float32", "float64"):
        return _coerce(np.array(filled, dtype=np.float64), "float64", dtype, what=what), mask
    try:
        arr = np.array(filled, dtype=NP_TYPES[dtype])
    except OverflowError:
        low, high = min(filled), max(filled)
        raise _bad(what, f"holds values outside the range of {dtype}", value=[low, high]) from None
    return arr, mask


def check_int(v: Any) -> int:
    if type(v) is int or isinstance(v, np.integer):
        return int(v)
    raise TypeError(v)


def _check_float(v: Any) -> float:
    if isinstance(v, float | int | np.floating | np.integer) and not isinstance(v, bool | np.bool_):
        return float(v)
    raise TypeError(v)


def _check_bool(v: Any) -> bool:
    if isinstance(v, bool | np.bool_):
        return bool(v)
    raise TypeError(v)


def date_days(v: Any) -> int:
    """Days since 1970-01-01 for a ``date`` (not a datetime) or an int."""
    if isinstance(v, date) and not isinstance(v, datetime):
        return v.toordinal() - EPOCH_ORDINAL
    return check_int(v)


def datetime_us(v: Any, what: str = "value") -> int:
    """Microseconds since the epoch for a tz-aware datetime or an int (naive: DataError)."""
    if isinstance(v, datetime):
        return to_us(v, what=what)
    return check_int(v)


PY_CHECKS: dict[str, Any] = {
    **{name: check_int for name in INTEGERS},
    "float32": _check_float,
    "float64": _check_float,
    "bool": _check_bool,
    "date": date_days,
    "datetime": datetime_us,
}


def string_column(values: Sequence[Any], *, what: str) -> tuple[list[bytes], Mask]:
    """UTF-8 bytes of each string (b"" for None) and the null mask (None without nulls)."""
    try:
        return [v.encode() for v in values], None  # the common case: no nulls
    except AttributeError:
        pass
    out = []
    for v in values:
        if v is None:
            out.append(b"")
        elif isinstance(v, str):
            out.append(v.encode())
        else:
            raise _bad(what, "holds a value that is not a string", value=v)
    return out, np.fromiter((v is None for v in values), dtype=np.bool_, count=len(values))


def to_date(days: int) -> date:
    return date.fromordinal(days + EPOCH_ORDINAL)


def to_datetime(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


# physical value -> the Python value a reader gets back, where they differ
FROM_PHYSICAL: dict[str, Callable[[Any], Any]] = {"date": to_date, "datetime": to_datetime}
