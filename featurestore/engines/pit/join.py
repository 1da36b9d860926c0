"""Point-in-time join of a spine with feature frames (SEMANTICS: "Point-in-time join").

Polars in, Polars out; the per-row work happens in the Numba kernel of
``kernel.py``. For each distinct tuple of spine key columns, the spine's distinct
keys get dense codes once; each view's rows get the code of their key (-1 for
keys the spine never asks for), the kernel picks a row per spine row, and Polars
gathers the chosen rows' features. No feature table is sorted: see ``kernel.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from featurestore._time import from_us, utc_column
from featurestore.engines import _parallel
from featurestore.engines.pit import kernel
from featurestore.engines.pit.keys import KeyTable, key_table, lookup
from featurestore.errors import DataError

_CODE = "__fs_pit_code"
_EVENT = "__fs_pit_event_ts"
_CREATED = "__fs_pit_created_ts"
# Spine keys per block when feature rows come sorted by key (see _ViewRows.batches):
# enough for the work per block to dwarf Python's per-slice cost, few enough for the
# block's spine rows and tree nodes (about 100 bytes per key) to stay in cache.
_BLOCK_KEYS = 16_384
_MAX_BLOCKS = 256
# Below this many feature rows one thread does the join: starting a second costs
# more than it saves (measured: benchmarks/pit_join.py, scale 0.1).
_PARALLEL_ROWS = 200_000


@dataclass(frozen=True)
class FeatureFrame:
    """One view's rows, ready to be joined.

    ``frame`` holds the join-key columns, the event-time and created-time columns
    (tz-aware datetimes; converted to UTC microseconds) and the features.
    ``spine_keys[i]`` is the spine column matched against ``join_keys[i]``.
    ``ttl_us=None`` means no TTL. ``created_ts=None`` treats every row as created
    at the same time (ties on event_ts then go to the last row in input order).
    Rows may come in any order. A LazyFrame is collected once, as given: push
    partition filters into it (see ``event_time_bounds``).
    """

    name: str
    frame: pl.DataFrame | pl.LazyFrame
    join_keys: tuple[str, ...]
    spine_keys: tuple[str, ...]
    features: tuple[str, ...]
    output_names: tuple[str, ...]
    ttl_us: int | None
    event_ts: str = "event_ts"
    created_ts: str | None = "created_ts"


def point_in_time_join(
    spine: pl.DataFrame,
    *,
    timestamp: str,
    views: Sequence[FeatureFrame],
    as_of_known_time: bool = False,
    chunk_rows: int = 2_000_000,
) -> pl.DataFrame:
    """The spine with each view's features as of each spine row's ``timestamp``.

    Output rows are the spine's rows in the spine's order, every spine column
    unchanged, followed by each view's ``output_names`` (with the frame's dtypes).
    A spine row with a null key or a null timestamp, or with no eligible row,
    gets nulls. ``chunk_rows`` bounds how many spine rows are searched and
    gathered at once.

    >>> from datetime import datetime, UTC
    >>> spine = pl.DataFrame({"id": [1, 1], "ts": [datetime(2024, 1, 2, tzinfo=UTC),
    ...                                              datetime(2024, 1, 9, tzinfo=UTC)]})
    >>> rows = pl.DataFrame({"id": [1], "event_ts": [datetime(2024, 1, 1, tzinfo=UTC)],
    ...                      "created_ts": [datetime(2024, 1, 1, tzinfo=UTC)], "x": [7]})
    >>> view = FeatureFrame(name="v", frame=rows, join_keys=("id",), spine_keys=("id",),
    ...                     features=("x",), output_names=("x",), ttl_us=3 * 86_400_000_000)
    >>> point_in_time_join(spine, timestamp="ts", views=[view])["x"].to_list()
    [7, None]
    """
    if chunk_rows < 1:
        raise DataError("must be at least 1", field="chunk_rows", value=chunk_rows)
    spine_ts_expr = utc_column(spine, timestamp, obj="spine")
    _check_views(spine, views)
    spine_ts = spine.select(spine_ts_expr.cast(pl.Int64)).to_series()
    ts_np = spine_ts.fill_null(0).to_numpy()
    ts_null = spine_ts.is_null().to_numpy() if spine_ts.null_count() else None

    dictionaries: dict[tuple[str, ...], _KeyCodes] = {}
    spine_index: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}
    outputs: list[pl.Series] = []
    # One view at a time: its rows are read, joined and gathered, then dropped
    # before the next view is read, so peak memory holds one view, not all.
    for view in views:
        codes = dictionaries.get(view.spine_keys)
        if codes is None:
            codes = _KeyCodes(spine, view.spine_keys, chunk_rows, ts_null)
            dictionaries[view.spine_keys] = codes
        frame = _collect(spine, view)
        rows = _ViewRows(view, frame, codes)
        ttl = -1 if view.ttl_us is None else view.ttl_us
        # Without a created_ts column every row counts as known in time.
        known = as_of_known_time and view.created_ts is not None
        features = frame.select(view.features)
        del frame
        parts = []
        for start in range(0, max(spine.height, 1), chunk_rows):
            stop = min(start + chunk_rows, spine.height)
            index = spine_index.get(view.spine_keys) if stop - start == spine.height else None
            if index is None:
                index = kernel.prepare_spine(
                    codes.spine[start:stop], spine_ts=ts_np[start:stop], n_codes=codes.n_codes
                )
                # Kept for the next view only when the spine is one chunk: each index
                # holds a start per distinct key of the whole spine.
                if stop - start == spine.height:
                    spine_index[view.spine_keys] = index
            key_lanes, row_lanes = rows.lanes(_threads(rows.frame.height))
            chosen = kernel.point_in_time(
                key_lanes,
                row_lanes=row_lanes,
                spine_index=index,
                n_spine=stop - start,
                ttl_us=ttl,
                as_of_known_time=known,
                table=codes.table,
            )
            # -1 (no row) becomes a null index, and gathering a null index gives null.
            take = pl.Series(chosen).set(pl.Series(chosen < 0), None)
            parts.append(features.select(pl.all().gather(take)))
        del rows, features
        taken = parts[0] if len(parts) == 1 else pl.concat(parts, rechunk=False)
        names = dict(zip(view.features, view.output_names, strict=True))
        outputs.extend(taken.rename(names).get_columns())
    return spine.hstack(outputs)


class _ViewRows:
    """A view's rows as the kernel takes them: key codes and int64 microseconds,
    one batch per chunk of the frame.

    A frame read from many files has one chunk per file; turning a whole column
    into one numpy array would copy it, while a single chunk converts in place.
    """

    def __init__(self, view: FeatureFrame, frame: pl.DataFrame, codes: _KeyCodes) -> None:
        obj = f"view {view.name!r}"
        times = {_EVENT: view.event_ts}
        if view.created_ts is not None:
            times[_CREATED] = view.created_ts
        # Physical int64 microseconds, UTC (a no-op for columns already so); keys
        # take the spine's names.
        self.frame = frame.select(
            *(utc_column(frame, c, obj=obj).to_physical().alias(n) for n, c in times.items()),
            *(pl.col(j).alias(s) for j, s in zip(view.join_keys, view.spine_keys, strict=True)),
        )
        for name, column in times.items():
            nulls = self.frame[name].null_count()
            if nulls:
                raise DataError(
                    f"timestamp column has {nulls} null value(s)",
                    obj=obj,
                    field=column,
                    hint="Every feature row needs its event and created time; drop or fill them",
                )
        self.view = view
        self.codes = codes
        # Integer keys are looked up batch by batch; other keys need a Polars join,
        # done once for the whole frame.
        self.all_codes = None if codes.integer else codes.for_frame(self.frame, view.spine_keys)

    def _chunks(self) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray, bool, bool]]:
        """(offset, keys or codes, event_ts, created_ts, keyed, sorted) per chunk of
        the frame: int64 keys (keyed) where the kernel can look them up itself, codes
        otherwise; ``sorted`` for keyed chunks in key order, which ``lanes`` cuts by
        block of spine keys."""
        view, key = self.view, self.view.spine_keys[0]
        out = []
        offset = 0
        for length in self.frame[_EVENT].chunk_lengths():
            part = self.frame.slice(offset, length)
            event_ts = part[_EVENT].to_numpy()
            if view.created_ts is None:
                created_ts = np.zeros(length, dtype=np.int64)
            else:
                created_ts = part[_CREATED].to_numpy()
            if self.all_codes is not None:
                codes = self.all_codes[offset : offset + length]
                out.append((offset, codes, event_ts, created_ts, False, False))
            elif part[key].null_count():
                codes = self.codes.for_frame(part, view.spine_keys)
                out.append((offset, codes, event_ts, created_ts, False, False))
            else:
                keys = _as_int64(part[key])
                ordered = self.codes.blocks.size > 1 and kernel.is_sorted(keys)
                out.append((offset, keys, event_ts, created_ts, True, ordered))
            offset += length
        return out

    def lanes(self, count: int) -> tuple[list[kernel.Lane], list[list[kernel.Batch]]]:
        """The rows as lanes for up to ``count`` kernel threads: key lanes (each
        owning a contiguous range of key codes) for chunks sorted by key, row lanes
        (an equal share of rows each) for the others; see ``kernel.point_in_time``.

        A chunk sorted by key (the offline store writes each partition so) is cut
        into one slice per block of spine keys, and a key lane walks its blocks one
        by one: the part of the spine and of the segment tree a block touches then
        stays in cache while every chunk's rows for that block stream past, where
        chunk after chunk would otherwise sweep the whole spine once each.
        """
        chunks = self._chunks()
        ordered = [c for c in chunks if c[5]]
        others = [c[:5] for c in chunks if not c[5]]
        key_lanes = self._key_lanes(ordered, count) if ordered else []
        rows = sum(len(c[1]) for c in others)
        return key_lanes, _split_rows(others, max(1, min(count, rows)))

    def _key_lanes(
        self, ordered: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, bool, bool]], count: int
    ) -> list[kernel.Lane]:
        edges, step, n_codes = self.codes.blocks, self.codes.block_codes, self.codes.n_codes
        # No more lanes than blocks; lanes end on block edges, so that a block never
        # straddles two lanes.
        count = max(1, min(count, edges.size))
        cuts = [edges.size * i // count for i in range(count + 1)]
        bounds = [(cuts[i] * step, cuts[i + 1] * step) for i in range(count)]
        bounds[0] = (0, bounds[0][1])
        bounds[-1] = (bounds[-1][0], kernel.INT64_MAX if count == 1 else n_codes)
        return [
            kernel.Lane(first, end, _block_batches(ordered, edges, range(cuts[i], cuts[i + 1])))
            for i, (first, end) in enumerate(bounds)
        ]


def _block_batches(
    ordered: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, bool, bool]],
    edges: np.ndarray,
    blocks: range,
) -> Iterator[kernel.Batch]:
    """The slices of key-sorted chunks for ``blocks`` (of spine keys starting at
    ``edges``), block after block."""
    cursors = [
        int(np.searchsorted(c[1], edges[blocks.start])) if blocks.start else 0 for c in ordered
    ]
    for b in blocks:
        for k, (start, keys, event_ts, created_ts, _, _) in enumerate(ordered):
            lo = cursors[k]
            hi = int(np.searchsorted(keys, edges[b + 1])) if b + 1 < edges.size else keys.size
            if hi > lo:
                yield start + lo, keys[lo:hi], event_ts[lo:hi], created_ts[lo:hi], True
            cursors[k] = hi


def _split_rows(batches: list[kernel.Batch], count: int) -> list[list[kernel.Batch]]:
    """``batches`` cut into ``count`` lanes of (nearly) equal row counts."""
    per = -(-sum(len(b[1]) for b in batches) // count)
    lanes: list[list[kernel.Batch]] = [[] for _ in range(count)]
    lane, room = 0, per
    for offset, values, event_ts, created_ts, keyed in batches:
        i = 0
        while i < len(values):
            if room == 0:
                lane, room = lane + 1, per
            # The last lane takes whatever is left (count * per >= all rows).
            j = len(values) if lane == count - 1 else min(len(values), i + room)
            lanes[lane].append((offset + i, values[i:j], event_ts[i:j], created_ts[i:j], keyed))
            room -= j - i
            i = j
    return [lane_batches for lane_batches in lanes if lane_batches]


class _KeyCodes:
    """Dense codes 0..n-1 for the spine's distinct non-null values of ``keys``.

    A single integer key uses a Numba lookup table; anything else (strings,
    composite keys) a Polars hash join. Codes follow key order, so that feature
    rows stored sorted by key look codes up in order.
    """

    def __init__(
        self,
        spine: pl.DataFrame,
        keys: tuple[str, ...],
        chunk_rows: int,
        ts_null: np.ndarray | None,
    ) -> None:
        self.keys = keys
        self.table: KeyTable | None = None
        key_df = spine.select(keys)
        self.integer = len(keys) == 1 and key_df.schema[keys[0]].is_integer()
        if self.integer:
            column = key_df.to_series()
            # Sorted after the conversion (UInt64 keys above 2**63 turn negative), by
            # Polars: a parallel sort, several times faster than numpy's here.
            distinct = _int64_series(column.drop_nulls().unique()).sort().to_numpy()
            self.table = key_table(distinct)
            self.spine = self._lookup(column)
            self.n_codes = int(distinct.size)
            # The first key of each block of spine keys that _ViewRows.batches walks.
            self.block_codes = max(_BLOCK_KEYS, -(-distinct.size // _MAX_BLOCKS))
            self.blocks = distinct[:: self.block_codes]
        else:
            self.uniq = key_df.drop_nulls().unique().sort(keys).with_row_index(_CODE)
            parts = [
                self._join(key_df.slice(start, chunk_rows))
                for start in range(0, spine.height, chunk_rows)
            ]
            self.spine = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
            self.n_codes = self.uniq.height
            self.blocks = np.empty(0, dtype=np.int64)
            self.block_codes = 0
        if ts_null is not None:
            # A spine row without a time matches nothing, like one without a key.
            self.spine[ts_null] = -1

    def for_frame(self, frame: pl.DataFrame, keys: tuple[str, ...]) -> np.ndarray:
        """Each row's code, -1 where the spine never asks for its key. ``keys`` are
        the frame's key columns, named as in the spine."""
        if self.integer:
            return self._lookup(frame[keys[0]])
        return self._join(frame.select(keys))

    def _lookup(self, column: pl.Series) -> np.ndarray:
        table = self.table
        if table is None:
            raise TypeError("_lookup is for integer keys, which have a key table")
        if not column.null_count():
            return lookup(_as_int64(column), valid=np.empty(0, dtype=np.uint8), table=table)
        valid = column.is_not_null().to_numpy().view(np.uint8)
        return lookup(_as_int64(column.fill_null(0)), valid=valid, table=table)

    def _join(self, key_df: pl.DataFrame) -> np.ndarray:
        joined = key_df.join(
            self.uniq, on=list(self.keys), how="left", maintain_order="left", nulls_equal=False
        )
        return joined[_CODE].cast(pl.Int64).fill_null(-1).to_numpy()


def _threads(n_rows: int) -> int:
    """Kernel threads for a view of ``n_rows`` rows: as many as Polars uses
    (``POLARS_MAX_THREADS``), one for small views."""
    return 1 if n_rows < _PARALLEL_ROWS else _parallel.threads()


def _int64_series(column: pl.Series) -> pl.Series:
    # UInt64 keys keep their bits (only equality matters); other integers widen.
    if column.dtype == pl.UInt64:
        return column.reinterpret(signed=True)
    return column.cast(pl.Int64)


def _as_int64(column: pl.Series) -> np.ndarray:
    return _int64_series(column).to_numpy()


def event_time_bounds(
    spine: pl.DataFrame, *, timestamp: str, ttl_us: int | None
) -> tuple[datetime | None, datetime] | None:
    """The event times a view's rows can be chosen from for this spine: after the
    first bound (None: no TTL, no bound) and up to the second, inclusive. None when
    no spine row has a time, so no row can be chosen.

    ``point_in_time_join`` reads a LazyFrame as it is given and skips rows outside
    these bounds at no cost. A row filter on the scan would cost more than it saves
    unless it prunes much, so callers that know how a table is partitioned (by event
    date, say) should turn these bounds into a partition filter instead.
    """
    values = spine.select(utc_column(spine, timestamp, obj="spine").cast(pl.Int64)).to_series()
    if values.null_count() == spine.height:
        return None
    lo, hi = int(values.min()), int(values.max())  # type: ignore[arg-type]
    after = None
    if ttl_us is not None:
        try:
            after = from_us(lo - ttl_us)
        except OverflowError:  # before year 1: no bound in practice
            after = None
    return after, from_us(hi)


def _collect(spine: pl.DataFrame, view: FeatureFrame) -> pl.DataFrame:
    """The columns the join needs, as a DataFrame, checked against the spine.

    The schema is checked on what was read: resolving a lazy scan's schema first
    (a Delta table's log, say) would cost as much again as planning the read. A
    missing column fails the read, and is then named from the scan's schema.
    """
    columns = list(dict.fromkeys([*view.join_keys, view.event_ts, *view.features]))
    if view.created_ts is not None and view.created_ts not in columns:
        columns.append(view.created_ts)
    try:
        frame = view.frame.lazy().select(columns).collect()
    except pl.exceptions.ColumnNotFoundError:
        schema = (
            view.frame.collect_schema()
            if isinstance(view.frame, pl.LazyFrame)
            else view.frame.schema
        )
        _check_schema(spine, view, schema)
        raise
    _check_schema(spine, view, frame.schema)
    return frame


def _check_views(spine: pl.DataFrame, views: Sequence[FeatureFrame]) -> None:
    """What can be checked before reading anything: shapes and output names."""
    taken = {name: "the spine" for name in spine.columns}
    for view in views:
        obj = f"view {view.name!r}"
        if not view.join_keys or len(view.join_keys) != len(view.spine_keys):
            raise DataError(
                "join_keys and spine_keys must be non-empty and of the same length",
                obj=obj,
                value=(view.join_keys, view.spine_keys),
            )
        if len(view.features) != len(view.output_names):
            raise DataError(
                "features and output_names must have the same length",
                obj=obj,
                value=(view.features, view.output_names),
            )
        if view.ttl_us is not None and view.ttl_us < 0:
            raise DataError("ttl must not be negative", obj=obj, field="ttl_us", value=view.ttl_us)
        for skey in view.spine_keys:
            if skey not in spine.schema:
                raise DataError(
                    "join key column is missing from the spine",
                    obj=obj,
                    field=skey,
                    hint=f"Spine columns: {', '.join(spine.columns)}",
                )
        for name in view.output_names:
            if name in taken:
                raise DataError(
                    f"output column name clashes with a column of {taken[name]}",
                    obj=obj,
                    field=name,
                    hint="Rename the output (full_feature_names=True gives view__feature)",
                )
            taken[name] = obj


def _check_schema(spine: pl.DataFrame, view: FeatureFrame, schema: pl.Schema) -> None:
    """The view's columns are there, and its keys have the spine keys' dtypes."""
    obj = f"view {view.name!r}"
    needed = [*view.join_keys, view.event_ts, *view.features]
    if view.created_ts is not None:
        needed.append(view.created_ts)
    for column in needed:
        if column not in schema:
            raise DataError(
                "column is missing from the feature frame",
                obj=obj,
                field=column,
                hint=f"Columns present: {', '.join(schema.names())}",
            )
    for fkey, skey in zip(view.join_keys, view.spine_keys, strict=True):
        if spine.schema[skey] != schema[fkey]:
            raise DataError(
                f"join key dtype {schema[fkey]} does not match the spine column "
                f"{skey!r} of dtype {spine.schema[skey]}",
                obj=obj,
                field=fkey,
                hint=f"Cast one side, e.g. pl.col({skey!r}).cast(pl.{schema[fkey]})",
            )
