"""Stable partitioning of rows by their entity key.

Every row of one key must land in the same partition on every machine and in every
run, so a spine partition and the feature rows it needs meet in one task, and a
re-run splits the work identically. Python's ``hash()`` is salted per process for
strings and Polars' ``hash`` is documented as unstable across versions, so neither
will do. The hash is ours, vectorised in numpy (no new dependency):

- integers (and dates, datetimes, booleans: their physical integers): splitmix64 of
  the 64-bit two's-complement value;
- strings: FNV-1a 64 of the UTF-8 bytes, finished with splitmix64 (FNV-1a alone mixes
  its low bits poorly, and the partition is taken modulo a small number);
- a null key hashes to a fixed value;
- a compound key folds the columns in order: ``h = splitmix64(h ^ h_column)``.

Cost: integers ~10 ns a row; strings one vectorised pass per byte position of the
longest key (keys are short ids, so a few dozen passes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from featurestore.errors import DataError

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_NULL = np.uint64(0x6E756C6C6E756C6C)  # b"nullnull"
ROW = "__fs_row"


def splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def fnv1a64(values: pa.Array) -> np.ndarray:
    """FNV-1a 64 of each string's UTF-8 bytes (nulls hash as empty strings)."""
    # Imported here: pyarrow.compute costs a CLI call about 0.04 s to import, and
    # only partitioned runs with string keys need it.
    import pyarrow.compute as pc

    arr = pc.cast(values, pa.large_string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    out = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    if n == 0:
        return out
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    starts = offsets[:-1]
    lengths = offsets[1:] - starts
    with np.errstate(over="ignore"):
        for j in range(int(lengths.max(initial=0))):
            live = lengths > j
            idx = starts[live] + j
            out[live] = (out[live] ^ data[idx].astype(np.uint64)) * _FNV_PRIME
    return out


def _column_hash(series: pl.Series, *, obj: str) -> np.ndarray:
    dtype = series.dtype
    if dtype in (pl.String, pl.Categorical, pl.Enum):
        hashed = splitmix64(fnv1a64(series.cast(pl.String).to_arrow()))
    elif dtype.is_integer() or dtype in (pl.Boolean, pl.Date) or isinstance(dtype, pl.Datetime):
        ints = series.to_physical().cast(pl.Int64).fill_null(0).to_numpy()
        hashed = splitmix64(ints.view(np.uint64))
    else:
        raise DataError(
            "cannot be partitioned: a key must be an integer, string, date or datetime",
            obj=obj,
            field=series.name,
            value=str(dtype),
            hint="cast the key column to Int64 or String",
        )
    if series.null_count():
        hashed = np.where(series.is_null().to_numpy(), _NULL, hashed)
    return hashed


def key_hash(frame: pl.DataFrame, keys: Sequence[str], *, obj: str = "frame") -> np.ndarray:
    """The stable 64-bit hash of each row's key columns, in ``keys`` order."""
    h = np.zeros(frame.height, dtype=np.uint64)
    for key in keys:
        h = splitmix64(h ^ _column_hash(frame.get_column(key), obj=obj))
    return h


def partition_ids(
    frame: pl.DataFrame, keys: Sequence[str], partitions: int, *, obj: str = "frame"
) -> np.ndarray:
    """Each row's partition in ``[0, partitions)``, from :func:`key_hash`."""
    if partitions < 1:
        raise DataError("must be at least 1", field="partitions", value=partitions)
    return (key_hash(frame, keys, obj=obj) % np.uint64(partitions)).astype(np.int64)


def split_with_ids(
    frame: pl.DataFrame, keys: Sequence[str], partitions: int, *, obj: str = "frame"
) -> list[tuple[int, pl.DataFrame]]:
    """``frame`` with a ``__fs_row`` column (its original row number) cut into
    ``partitions`` frames by key, each with its partition id, in id order; empty
    partitions are left out. Concatenating the pieces and sorting by ``__fs_row``
    gives back ``frame``'s order."""
    ids = partition_ids(frame, keys, partitions, obj=obj)
    tagged = frame.with_row_index(ROW).with_columns(pl.Series("__fs_part", ids))
    groups = tagged.partition_by("__fs_part", as_dict=True, include_key=False)
    pieces = [(int(pid[0]), piece) for pid, piece in groups.items() if piece.height]
    return sorted(pieces, key=lambda item: item[0])


def split_by_key(
    frame: pl.DataFrame, keys: Sequence[str], partitions: int, *, obj: str = "frame"
) -> list[pl.DataFrame]:
    """The pieces of :func:`split_with_ids`, without their ids."""
    return [piece for _, piece in split_with_ids(frame, keys, partitions, obj=obj)]
