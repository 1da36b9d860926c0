"""Canonical dtypes <-> what Delta Lake can store.

Delta has no unsigned integers. ``uint8``..``uint32`` are stored in the next wider
signed type; ``uint64`` is stored as the ``int64`` with the same 64 bits. (Not as
``decimal(20,0)``: deltalake 1.6 writes wrong min/max statistics for decimals beyond
int64, and readers then skip files that hold the wanted key.) Equality, the only
comparison the stores push down on such columns, is preserved by both encodings.
The canonical dtype is kept in the Delta field metadata under :data:`DTYPE_KEY`, and
reads decode it, so every canonical dtype round-trips exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

from featurestore._dtypes import is_list, list_inner, normalize_dtype, to_polars
from featurestore.errors import DataError

if TYPE_CHECKING:
    from deltalake import DeltaTable

DTYPE_KEY = "featurestore.dtype"

_WIDER: dict[str, pl.DataType] = {"uint8": pl.Int16(), "uint16": pl.Int32(), "uint32": pl.Int64()}


def _has_unsigned(dtype: str) -> bool:
    return "uint" in dtype


def encode(expr: pl.Expr, dtype: str) -> pl.Expr:
    """``expr`` (already of canonical ``dtype``) in the form it is stored in."""
    if not _has_unsigned(dtype):
        return expr.cast(to_polars(dtype))
    if is_list(dtype):
        return expr.list.eval(encode(pl.element(), list_inner(dtype)))
    if dtype == "uint64":
        return expr.cast(pl.UInt64).reinterpret(signed=True)
    return expr.cast(_WIDER[dtype])


def decode(expr: pl.Expr, dtype: str) -> pl.Expr:
    """The stored form of canonical ``dtype`` back in that dtype."""
    if not _has_unsigned(dtype):
        return expr.cast(to_polars(dtype))
    if is_list(dtype):
        return expr.list.eval(decode(pl.element(), list_inner(dtype)))
    if dtype == "uint64":
        return expr.reinterpret(signed=False)
    return expr.cast(to_polars(dtype))


def check_no_naive(frame_schema: Mapping[str, pl.DataType], *, obj: str) -> None:
    """Reject naive datetimes anywhere in the schema, lists included (SEMANTICS: Time).

    A tz-aware column only needs a cast: Polars keeps UTC instants whatever the zone.
    """
    for name, dtype in frame_schema.items():
        inner: Any = dtype
        while isinstance(inner, pl.List):
            inner = inner.inner
        if isinstance(inner, pl.Datetime) and inner.time_zone is None:
            raise DataError(
                "datetime column is naive (no time zone)",
                obj=obj,
                field=name,
                hint="featurestore only stores UTC instants: use "
                f"pl.col({name!r}).dt.replace_time_zone('UTC') if the values are UTC",
            )


def canonical_or_none(dtype: pl.DataType) -> str | None:
    """The canonical name of a Polars dtype, or None when it has none (struct, decimal...)."""
    try:
        return normalize_dtype(dtype)
    except ValueError:
        return None


def to_storage_arrow(frame: pl.DataFrame, dtypes: Mapping[str, str]) -> pa.Table:
    """``frame`` encoded for storage, as Arrow, each column tagged with its canonical dtype.

    ``dtypes`` maps column -> canonical dtype; columns not in it are written as they are.
    """
    encoded = frame.with_columns(
        encode(pl.col(c), d).alias(c)
        for c, d in dtypes.items()
        if c in frame.columns and _has_unsigned(d)
    )
    table = encoded.to_arrow()
    fields = [
        f.with_metadata({DTYPE_KEY: dtypes[f.name]}) if f.name in dtypes else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields))


def stored_dtypes(table: DeltaTable) -> dict[str, str]:
    """Column -> canonical dtype as tagged in the table's field metadata."""
    out: dict[str, str] = {}
    for field in table.schema().fields:
        tag = (field.metadata or {}).get(DTYPE_KEY)
        if isinstance(tag, str):
            out[field.name] = tag
    return out


def restore_exprs(schema: Mapping[str, pl.DataType], dtypes: Mapping[str, str]) -> list[pl.Expr]:
    """Expressions decoding stored columns to their tagged canonical dtypes, where needed."""
    return [
        decode(pl.col(name), dtype).alias(name)
        for name, dtype in dtypes.items()
        if name in schema and schema[name] != to_polars(dtype)
    ]
