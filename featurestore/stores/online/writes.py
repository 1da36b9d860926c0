"""Encoding a ``WriteBatch``: check and convert every column once, then emit records.

``prepare`` does all the validation up front, so a ``DataError`` is raised before
anything is stored. ``PreparedRows.records`` then builds keys and values for any
slice of rows with numpy (headers, fixed-width slots and fixed-width keys are
filled column-wise), which lets the Redis store encode the next slice while the
server works on the last one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from featurestore.errors import DataError
from featurestore.stores.online.base import OnlineViewSchema, WriteBatch
from featurestore.stores.online.columns import fixed_column, object_column, string_column
from featurestore.stores.online.encoding import (
    TS_OFFSET,
    VERSION,
    Codec,
    naming,
)
from featurestore.stores.online.keys import join_keys, key_block, key_part, rows_of

_SIGN = np.uint64(TS_OFFSET)


@dataclass(frozen=True)
class PreparedRows:
    """The rows of one batch that are still within retention, checked and converted."""

    head: np.dtype
    keys: list[np.ndarray | list[bytes]]  # per join key: an (n, width) matrix or bytes
    event_ts: np.ndarray
    created_ts: np.ndarray
    deadline_us: np.ndarray | None  # None when the view never expires
    fields: dict[str, np.ndarray]  # header field -> one value per row
    payloads: list[list[bytes]]  # string and list payloads, in schema order
    skipped_expired: int

    def __len__(self) -> int:
        return len(self.event_ts)

    def records(
        self, start: int = 0, stop: int | None = None, *, prefix: bytes = b"", suffix: bytes = b""
    ) -> tuple[list[bytes], list[bytes]]:
        """Keys (entity bytes between ``prefix`` and ``suffix``) and values of rows
        ``start:stop``."""
        stop = len(self) if stop is None else min(stop, len(self))
        n = max(stop - start, 0)
        rec = np.zeros(n, dtype=self.head)
        rec["v"] = VERSION
        for name, column in self.fields.items():
            rec[name] = column[start:stop]
        heads = rows_of(rec.view(np.uint8).reshape(n, rec.itemsize))
        if len(self.payloads) == 1:
            values = [h + p for h, p in zip(heads, self.payloads[0][start:stop], strict=True)]
        elif self.payloads:
            tails = [p[start:stop] for p in self.payloads]
            values = list(map(b"".join, zip(heads, *tails, strict=True)))
        else:
            values = heads
        return join_keys(self.keys, start, stop, prefix, suffix), values


def prepare(codec: Codec, batch: WriteBatch, *, now_us: int) -> PreparedRows:
    """Check ``batch`` against the codec's schema and convert it; rows whose retention
    (``event_ts + schema.retention_us``) is not after ``now_us`` are left out and
    counted."""
    schema = codec.schema
    obj = f"online write to {schema.project}/{schema.view}"
    with naming(obj):
        _same_names(obj, "join keys", schema.join_keys, batch.keys)
        _same_names(obj, "features", schema.features, batch.features)
        ev = _timestamps(batch.event_ts, "event_ts", obj)
        cr = _timestamps(batch.created_ts, "created_ts", obj)
        keep: np.ndarray | None = None
        deadline = None
        if schema.retention_us is not None:
            deadline = ev + schema.retention_us
            alive = deadline > now_us
            if not alive.all():
                keep = np.flatnonzero(alive)
                ev, cr, deadline = ev[keep], cr[keep], deadline[keep]
        n = len(ev)
        keys = _key_columns(schema, batch, keep)
        bitmap = np.zeros((n, codec.bitmap_size), dtype=np.uint8)
        fields: dict[str, np.ndarray] = {
            "e": ev.view(np.uint64) ^ _SIGN,
            "c": cr.view(np.uint64) ^ _SIGN,
            "m": bitmap,
        }
        payloads = []
        for i, (name, dtype) in enumerate(zip(schema.features, schema.feature_dtypes, strict=True)):
            column = batch.features[name]
            mask: np.ndarray | None
            if i in codec.var_decoders:
                values = object_column(column)
                if keep is not None:
                    values = [values[j] for j in keep]
                encode = codec.list_encoders.get(i)
                if encode is None:
                    raw, mask = string_column(values, what=name)
                else:
                    raw = [b"" if v is None else encode(v, name) for v in values]
                    mask = np.fromiter((v is None for v in values), dtype=np.bool_, count=n)
                fields[f"f{i}"] = np.fromiter(map(len, raw), dtype=np.uint32, count=n)
                payloads.append(raw)
            else:
                arr, mask = fixed_column(column, dtype, what=name)
                if keep is not None:
                    arr = arr[keep]
                    mask = None if mask is None else mask[keep]
                fields[f"f{i}"] = arr
            if mask is not None:
                bitmap[:, i >> 3] |= mask.astype(np.uint8) << (i & 7)
        return PreparedRows(
            head=codec.np_head,
            keys=keys,
            event_ts=ev,
            created_ts=cr,
            deadline_us=deadline,
            fields=fields,
            payloads=payloads,
            skipped_expired=len(batch) - n,
        )


def _key_columns(
    schema: OnlineViewSchema, batch: WriteBatch, keep: np.ndarray | None
) -> list[np.ndarray | list[bytes]]:
    parts: list[np.ndarray | list[bytes]] = []
    for name, dtype in zip(schema.join_keys, schema.key_dtypes, strict=True):
        column = batch.keys[name]
        if dtype == "string":
            values = object_column(column)
            if keep is not None:
                values = [values[j] for j in keep]
            if None in values:
                raise _null_key(name)
            parts.append([key_part("string", v, what=name) for v in values])
            continue
        arr, mask = fixed_column(column, dtype, what=name)
        if mask is not None:
            raise _null_key(name)
        parts.append(key_block(dtype, arr if keep is None else arr[keep]))
    return parts


def _same_names(obj: str, what: str, expected: tuple[str, ...], given: Mapping[str, Any]) -> None:
    names = sorted(given)
    if set(names) != set(expected):
        raise DataError(
            f"the batch's {what} do not match the schema",
            obj=obj,
            value=names,
            hint=f"Expected exactly: {', '.join(expected)}",
        )


def _timestamps(column: object, what: str, obj: str) -> np.ndarray:
    arr, mask = fixed_column(column, "int64", what=what)
    if mask is not None:
        raise DataError("timestamps cannot be null", obj=obj, field=what)
    return arr


def _null_key(name: str) -> DataError:
    return DataError(
        "join key column holds nulls",
        field=name,
        hint="Null keys never match (SEMANTICS): drop those rows before writing",
    )
