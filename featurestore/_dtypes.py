"""Canonical dtype names, shared by plans, stores and engines.

A plan stores dtypes as short strings so it stays JSON and stable across Polars
versions: ``bool``, ``int8`` ... ``int64``, ``uint8`` ... ``uint64``, ``float32``,
``float64``, ``string``, ``date``, ``datetime`` (UTC, microseconds) and
``list[<inner>]``. Users may pass Polars dtypes (``pl.Int64``,
``pl.List(pl.Float64)``) or these strings; this module converts without importing
Polars until a conversion *to* Polars is asked for.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa

SCALARS = (
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float32",
    "float64",
    "string",
    "date",
    "datetime",
)
INTEGERS = frozenset(SCALARS[1:9])
FLOATS = frozenset({"float32", "float64"})
NUMERIC = INTEGERS | FLOATS

_POLARS_NAMES = {
    "boolean": "bool",
    "bool": "bool",
    "int8": "int8",
    "int16": "int16",
    "int32": "int32",
    "int64": "int64",
    "uint8": "uint8",
    "uint16": "uint16",
    "uint32": "uint32",
    "uint64": "uint64",
    "float32": "float32",
    "float64": "float64",
    "string": "string",
    "str": "string",
    "utf8": "string",
    "date": "date",
    "datetime": "datetime",
    "int": "int64",
    "float": "float64",
}


def normalize_dtype(dtype: Any) -> str:
    """Return the canonical name of ``dtype`` (a Polars dtype, a Python type or a name).

    Raises ``ValueError`` naming the value when it is not supported.
    """
    if isinstance(dtype, type) and dtype in (int, float, str, bool):
        return {int: "int64", float: "float64", str: "string", bool: "bool"}[dtype]
    text = str(dtype).strip()
    low = text.lower()
    m = re.fullmatch(r"(?:list)\s*[\[(](.*)[\])]", low)
    if m:
        return f"list[{normalize_dtype(m.group(1))}]"
    if low.startswith("datetime"):
        # Polars renders Datetime(time_unit='us', time_zone='UTC'); every datetime is
        # stored as UTC microseconds, so the unit and zone are normalised away here.
        return "datetime"
    if low in _POLARS_NAMES:
        return _POLARS_NAMES[low]
    raise ValueError(
        f"unsupported dtype {text!r}; use one of {', '.join(SCALARS)} or list[<dtype>]"
    )


def is_list(dtype: str) -> bool:
    return dtype.startswith("list[")


def list_inner(dtype: str) -> str:
    if not is_list(dtype):
        raise ValueError(f"{dtype!r} is not a list dtype")
    return dtype[5:-1]


def to_polars(dtype: str) -> pl.DataType:
    """The Polars dtype for a canonical name."""
    import polars as pl

    if is_list(dtype):
        return pl.List(to_polars(list_inner(dtype)))
    table: dict[str, Any] = {
        "bool": pl.Boolean,
        "int8": pl.Int8,
        "int16": pl.Int16,
        "int32": pl.Int32,
        "int64": pl.Int64,
        "uint8": pl.UInt8,
        "uint16": pl.UInt16,
        "uint32": pl.UInt32,
        "uint64": pl.UInt64,
        "float32": pl.Float32,
        "float64": pl.Float64,
        "string": pl.String,
        "date": pl.Date,
        "datetime": pl.Datetime("us", "UTC"),
    }
    out = table[dtype]
    return out() if isinstance(out, type) else out


def to_arrow(dtype: str) -> pa.DataType:
    """The Arrow dtype for a canonical name."""
    import pyarrow as pa

    if is_list(dtype):
        return pa.list_(to_arrow(list_inner(dtype)))
    table: dict[str, Any] = {
        "bool": pa.bool_(),
        "int8": pa.int8(),
        "int16": pa.int16(),
        "int32": pa.int32(),
        "int64": pa.int64(),
        "uint8": pa.uint8(),
        "uint16": pa.uint16(),
        "uint32": pa.uint32(),
        "uint64": pa.uint64(),
        "float32": pa.float32(),
        "float64": pa.float64(),
        "string": pa.large_string(),
        "date": pa.date32(),
        "datetime": pa.timestamp("us", tz="UTC"),
    }
    return table[dtype]


def from_polars(dtype: Any) -> str:
    """Canonical name of a Polars dtype found in data (raises ``ValueError`` if unsupported)."""
    return normalize_dtype(dtype)


def compatible(declared: str, found: str) -> bool:
    """Whether data of dtype ``found`` can be stored in a field declared ``declared``.

    Exact matches pass, and so do lossless widenings (int32 data in an int64 field,
    float32 data in a float64 field, integers in a float64 field).
    """
    if declared == found:
        return True
    if is_list(declared) and is_list(found):
        return compatible(list_inner(declared), list_inner(found))
    if declared in INTEGERS and found in INTEGERS:
        fb, db = _int_bits(found), _int_bits(declared)
        if declared.startswith("int"):
            return fb < db if found.startswith("uint") else fb <= db
        return found.startswith("uint") and fb <= db
    if declared == "float64" and found in NUMERIC:
        return True
    return declared == "float32" and found in {"int8", "int16", "uint8", "uint16"}


def _int_bits(dtype: str) -> int:
    return int(dtype.removeprefix("u").removeprefix("int"))
