"""The contract every online store passes, whatever the backend.

A backend's test module subclasses ``OnlineStoreContract`` and provides a
``store`` fixture. ``check_concurrent_writers`` is the multi-process CAS property,
run by the SQLite and Redis modules against a URL.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import random
import struct
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import polars as pl
import pytest

from featurestore._time import now_us
from featurestore.errors import DataError
from featurestore.stores.online import (
    CAP_CAS,
    CAP_MULTI_VIEW_READ,
    CAP_TTL,
    OnlineStore,
    OnlineViewSchema,
    ReadRequest,
    WriteBatch,
    WriteStats,
    open_online_store,
)

HOUR_US = 3_600_000_000
T0 = now_us() - HOUR_US  # recent enough that a 1-day TTL keeps every record alive

ALL_DTYPES = {
    "b": "bool",
    "i8": "int8",
    "i16": "int16",
    "i32": "int32",
    "i64": "int64",
    "u8": "uint8",
    "u16": "uint16",
    "u32": "uint32",
    "u64": "uint64",
    "f32": "float32",
    "f64": "float64",
    "s": "string",
    "d": "date",
    "t": "datetime",
    "li": "list[int64]",
    "lf": "list[float64]",
    "ls": "list[string]",
    "lb": "list[bool]",
    "ld": "list[date]",
    "lt": "list[datetime]",
    "lu": "list[uint64]",
    "ll": "list[list[int32]]",
}
_F32_MAX = 3.4028234663852886e38
_F32_TINY = 1.401298464324817e-45  # smallest float32 subnormal
# Three rows per dtype: the extremes, the awkward values, and nulls.
EDGE_ROWS: list[dict[str, Any]] = [
    {
        "b": True,
        "i8": -128,
        "i16": -32768,
        "i32": -(2**31),
        "i64": -(2**63),
        "u8": 255,
        "u16": 65535,
        "u32": 2**32 - 1,
        "u64": 2**64 - 1,
        "f32": _F32_MAX,
        "f64": 5e-324,
        "s": "",
        "d": date(1, 1, 1),
        "t": datetime(1, 1, 1, tzinfo=UTC),
        "li": [-(2**63), 2**63 - 1],
        "lf": [math.nan, -0.0, math.inf, -math.inf],
        "ls": ["", "x", None],
        "lb": [True, False, None],
        "ld": [date(9999, 12, 31), None],
        "lt": [datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)],
        "lu": [2**64 - 1, 0],
        "ll": [[1, None], None, []],
    },
    {
        "b": False,
        "i8": 127,
        "i16": 32767,
        "i32": 2**31 - 1,
        "i64": 2**63 - 1,
        "u8": 0,
        "u16": 0,
        "u32": 0,
        "u64": 0,
        "f32": -0.0,
        "f64": math.nan,
        "s": "ünïcødé 🎉 \x00 end",
        "d": date(9999, 12, 31),
        "t": datetime(2024, 2, 29, 12, 0, 0, 1, tzinfo=UTC),
        "li": [],
        "lf": [],
        "ls": [],
        "lb": [],
        "ld": [],
        "lt": [],
        "lu": [],
        "ll": [],
    },
    dict.fromkeys(ALL_DTYPES) | {"f32": _F32_TINY, "f64": -math.inf, "li": [None]},
]


def schema_for(
    features: dict[str, str],
    *,
    view: str = "v",
    keys: dict[str, str] | None = None,
    ttl_us: int | None = None,
    project: str = "proj",
) -> OnlineViewSchema:
    return OnlineViewSchema.build(
        project=project, view=view, keys=keys or {"id": "int64"}, features=features, ttl_us=ttl_us
    )


def batch_of(
    schema: OnlineViewSchema,
    rows: Sequence[dict[str, Any]],
    *,
    event_ts: Sequence[int] | int = T0,
    created_ts: Sequence[int] | int = T0,
) -> WriteBatch:
    """A batch from row dicts holding every key and feature of ``schema``."""
    n = len(rows)
    ev = [event_ts] * n if isinstance(event_ts, int) else list(event_ts)
    cr = [created_ts] * n if isinstance(created_ts, int) else list(created_ts)
    return WriteBatch(
        keys={k: [r[k] for r in rows] for k in schema.join_keys},
        event_ts=ev,
        created_ts=cr,
        features={f: [r[f] for r in rows] for f in schema.features},
    )


def read_one(store: OnlineStore, schema: OnlineViewSchema, keys: dict[str, list[Any]]) -> Any:
    (result,) = store.read([ReadRequest(schema, keys)])
    return result


def same(a: Any, b: Any) -> bool:
    """Equality that tells -0.0 from 0.0 and finds NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack(">d", a) == struct.pack(">d", b) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


class OnlineStoreContract:
    """Subclass in a ``test_*.py`` module and provide a ``store`` fixture."""

    def test_declares_capabilities(self, store: OnlineStore) -> None:
        assert {CAP_CAS, CAP_TTL, CAP_MULTI_VIEW_READ} <= store.capabilities
        assert isinstance(store, OnlineStore)
        store.ping()

    def test_round_trip_every_dtype_exactly(self, store: OnlineStore) -> None:
        schema = schema_for(ALL_DTYPES)
        rows = [{"id": i, **r} for i, r in enumerate(EDGE_ROWS)]
        stats = store.write(schema, batch_of(schema, rows))
        assert stats == WriteStats(written=3)
        got = read_one(store, schema, {"id": [0, 1, 2]})
        assert got.event_ts == [T0] * 3 and got.created_ts == [T0] * 3
        for name in ALL_DTYPES:
            for i, row in enumerate(EDGE_ROWS):
                assert same(got.features[name][i], row[name]), (name, i, got.features[name][i])

    def test_missing_entities_and_null_keys_read_as_absent(self, store: OnlineStore) -> None:
        schema = schema_for({"x": "float64", "s": "string"})
        store.write(schema, batch_of(schema, [{"id": 1, "x": None, "s": "a"}]))
        got = read_one(store, schema, {"id": [2, 1, None, 3]})
        assert got.event_ts == [None, T0, None, None]
        assert got.features == {"x": [None] * 4, "s": [None, "a", None, None]}

    def test_many_views_in_one_read_keep_request_order(self, store: OnlineStore) -> None:
        a = schema_for({"x": "int64"}, view="a")
        b = schema_for({"y": "string", "z": "float32"}, view="b", keys={"user": "string"})
        store.write(a, batch_of(a, [{"id": 7, "x": 70}, {"id": 8, "x": 80}], event_ts=T0 + 1))
        store.write(b, batch_of(b, [{"user": "u", "y": "hi", "z": 0.5}], event_ts=T0 + 2))
        got = store.read(
            [
                ReadRequest(b, {"user": ["nobody", "u"]}, features=["z"]),
                ReadRequest(a, {"id": [8, 7, 9]}),
                ReadRequest(b, {"user": []}),
            ]
        )
        assert got[0].features == {"z": [None, 0.5]} and got[0].event_ts == [None, T0 + 2]
        assert got[1].features == {"x": [80, 70, None]} and got[1].schema == a
        assert got[2].features == {"y": [], "z": []} and len(got[2]) == 0
        assert store.read([]) == []

    def test_features_come_back_in_requested_order(self, store: OnlineStore) -> None:
        schema = schema_for({"p": "int32", "q": "string", "r": "bool"})
        store.write(schema, batch_of(schema, [{"id": 1, "p": 5, "q": "five", "r": True}]))
        got = store.read([ReadRequest(schema, {"id": [1]}, features=["r", "p"])])[0]
        assert list(got.features) == ["r", "p"] and got.features == {"r": [True], "p": [5]}
        with pytest.raises(DataError, match="not part of"):
            store.read([ReadRequest(schema, {"id": [1]}, features=["nope"])])

    def test_cas_older_and_equal_never_replace(self, store: OnlineStore) -> None:
        schema = schema_for({"x": "int64"})

        def put(x: int, ev: int, cr: int) -> WriteStats:
            return store.write(
                schema, batch_of(schema, [{"id": 1, "x": x}], event_ts=ev, created_ts=cr)
            )

        def stored() -> tuple[Any, Any, Any]:
            got = read_one(store, schema, {"id": [1]})
            return got.features["x"][0], got.event_ts[0], got.created_ts[0]

        assert put(1, T0 + 10, T0 + 10) == WriteStats(written=1)
        assert put(2, T0 + 9, T0 + 99) == WriteStats(skipped_stale=1)  # older event
        assert put(3, T0 + 10, T0 + 10) == WriteStats(skipped_stale=1)  # equal
        assert stored() == (1, T0 + 10, T0 + 10)
        assert put(4, T0 + 10, T0 + 11) == WriteStats(written=1)  # created_ts breaks the tie
        assert put(5, T0 + 10, T0 + 5) == WriteStats(skipped_stale=1)
        assert stored() == (4, T0 + 10, T0 + 11)
        assert put(6, T0 + 11, T0) == WriteStats(written=1)  # newer event, older created
        assert stored() == (6, T0 + 11, T0)

    def test_cas_orders_negative_and_extreme_timestamps(self, store: OnlineStore) -> None:
        schema = schema_for({"x": "int64"})
        stamps = [(-(2**63), 2**63 - 1), (-1, 0), (0, -(2**63)), (0, -1), (1, 0), (2**40, 5)]
        for want, (ev, cr) in enumerate(stamps):
            stats = store.write(
                schema, batch_of(schema, [{"id": 1, "x": want}], event_ts=ev, created_ts=cr)
            )
            assert stats.written == 1, (ev, cr)
        for ev, cr in reversed(stamps[:-1]):
            stats = store.write(
                schema, batch_of(schema, [{"id": 1, "x": -1}], event_ts=ev, created_ts=cr)
            )
            assert stats.skipped_stale == 1, (ev, cr)
        got = read_one(store, schema, {"id": [1]})
        assert (got.features["x"], got.event_ts, got.created_ts) == ([5], [2**40], [5])

    def test_duplicates_in_one_batch_keep_the_newest(self, store: OnlineStore) -> None:
        schema = schema_for({"x": "int64"})
        ev = [T0 + 5, T0 + 9, T0 + 7, T0 + 9, T0 + 1]
        cr = [T0, T0 + 1, T0, T0 + 2, T0]
        rows = [{"id": 1, "x": i} for i in range(5)]
        stats = store.write(schema, batch_of(schema, rows, event_ts=ev, created_ts=cr))
        assert stats.written + stats.skipped_stale == 5
        assert read_one(store, schema, {"id": [1]}).features["x"] == [3]

    def test_schema_id_isolates_records(self, store: OnlineStore) -> None:
        old = schema_for({"x": "int64"})
        new = schema_for({"x": "float64"})  # same view, new dtype: a new schema_id
        assert old.schema_id != new.schema_id
        store.write(old, batch_of(old, [{"id": 1, "x": 42}]))
        assert read_one(store, new, {"id": [1]}).event_ts == [None]
        store.write(new, batch_of(new, [{"id": 1, "x": 0.25}], event_ts=T0 - 5))
        assert read_one(store, new, {"id": [1]}).features["x"] == [0.25]
        assert read_one(store, old, {"id": [1]}).features["x"] == [42]

    def test_delete_view_removes_only_that_schema(self, store: OnlineStore) -> None:
        a = schema_for({"x": "int64"}, view="a")
        a2 = schema_for({"x": "int32"}, view="a")
        b = schema_for({"x": "int64"}, view="b")
        other = schema_for({"x": "int64"}, view="a", project="other")
        rows = [{"id": i, "x": i} for i in range(25)]
        for schema in (a, a2, b, other):
            store.write(schema, batch_of(schema, rows))
        assert store.delete_view(a) == 25
        assert store.delete_view(a) == 0
        assert read_one(store, a, {"id": [1, 2]}).event_ts == [None, None]
        for schema in (a2, b, other):
            assert read_one(store, schema, {"id": [1, 24]}).features["x"] == [1, 24]

    def test_delete_entities_removes_only_those_entities_of_that_schema(
        self, store: OnlineStore
    ) -> None:
        a = schema_for({"x": "int64"}, view="a")
        b = schema_for({"x": "int64"}, view="b")
        rows = [{"id": i, "x": i} for i in range(25)]
        for schema in (a, b):
            store.write(schema, batch_of(schema, rows))
        assert store.delete_entities(a, {"id": [3, 7, 7, 99]}) == 2
        assert store.delete_entities(a, {"id": [3, 7]}) == 0  # idempotent
        got = read_one(store, a, {"id": list(range(25))})
        assert [i for i, ev in enumerate(got.event_ts) if ev is None] == [3, 7]
        assert read_one(store, b, {"id": [3, 7]}).features["x"] == [3, 7]
        composite = schema_for({"x": "int64"}, view="c", keys={"u": "string", "n": "int64"})
        store.write(
            composite,
            batch_of(composite, [{"u": "a", "n": 1, "x": 1}, {"u": "a", "n": 2, "x": 2}]),
        )
        assert store.delete_entities(composite, {"u": ["a"], "n": [2]}) == 1
        assert read_one(store, composite, {"u": ["a", "a"], "n": [1, 2]}).features["x"] == [1, None]

    def test_composite_and_typed_keys_never_collide(self, store: OnlineStore) -> None:
        keys = {"a": "string", "b": "string", "n": "int64"}
        schema = schema_for({"x": "int64"}, keys=keys)
        rows = [
            {"a": "ab", "b": "c", "n": 1, "x": 1},
            {"a": "a", "b": "bc", "n": 1, "x": 2},
            {"a": "a", "b": "bc", "n": -1, "x": 3},
            {"a": "", "b": "abc", "n": 1, "x": 4},
            {"a": "}:v:", "b": "{", "n": 2**63 - 1, "x": 5},
        ]
        assert store.write(schema, batch_of(schema, rows)).written == 5
        got = read_one(
            store,
            schema,
            {
                "a": [r["a"] for r in rows] + ["abc"],
                "b": [r["b"] for r in rows] + [""],
                "n": [r["n"] for r in rows] + [1],
            },
        )
        assert got.features["x"] == [1, 2, 3, 4, 5, None]

    def test_int_string_date_bool_datetime_keys(self, store: OnlineStore) -> None:
        ints = schema_for({"x": "int64"}, view="ints", keys={"k": "uint64"})
        strs = schema_for({"x": "int64"}, view="strs", keys={"k": "string"})
        mixed = schema_for(
            {"x": "int64"}, view="mixed", keys={"d": "date", "b": "bool", "t": "datetime"}
        )
        big = [0, 1, 2**63, 2**64 - 1]
        store.write(ints, batch_of(ints, [{"k": k, "x": i} for i, k in enumerate(big)]))
        store.write(strs, batch_of(strs, [{"k": "1", "x": 10}]))
        when = datetime(2024, 1, 1, tzinfo=UTC)
        store.write(
            mixed,
            batch_of(
                mixed,
                [
                    {"d": date(2024, 1, 1), "b": True, "t": when, "x": 1},
                    {"d": date(2024, 1, 1), "b": False, "t": when, "x": 2},
                ],
            ),
        )
        assert read_one(store, ints, {"k": [2**64 - 1, 2**63, 1, 0]}).features["x"] == [3, 2, 1, 0]
        assert read_one(store, strs, {"k": ["1", "01"]}).features["x"] == [10, None]
        got = read_one(
            store, mixed, {"d": [date(2024, 1, 1)] * 2, "b": [False, True], "t": [when] * 2}
        )
        assert got.features["x"] == [2, 1]
        with pytest.raises(DataError, match="join key"):
            read_one(store, strs, {"k": [1]})  # an int is not a string key

    def test_empty_batches_and_requests(self, store: OnlineStore) -> None:
        schema = schema_for({"x": "int64", "s": "string"})
        assert store.write(schema, batch_of(schema, [])) == WriteStats()
        empty = WriteBatch(
            keys={"id": np.array([], dtype=np.int64)},
            event_ts=np.array([], dtype=np.int64),
            created_ts=np.array([], dtype=np.int64),
            features={"x": np.array([], dtype=np.int64), "s": []},
        )
        assert store.write(schema, empty) == WriteStats()
        assert len(read_one(store, schema, {"id": []})) == 0

    def test_large_numpy_batch_across_chunks(self, store: OnlineStore) -> None:
        schema = schema_for({"f": "float64", "n": "int64", "s": "string"})
        n = 12_345
        ids = np.arange(n, dtype=np.int64) * 7919 % 100_003  # unique, shuffled order
        ev = np.full(n, T0, dtype=np.int64) + ids
        batch = WriteBatch(
            keys={"id": ids},
            event_ts=ev,
            created_ts=ev,
            features={"f": ids / 3.0, "n": -ids, "s": [f"s{i}" for i in ids.tolist()]},
        )
        assert store.write(schema, batch) == WriteStats(written=n)
        # the same rows again, half of them newer: exactly that half is written
        newer = np.where(ids % 2 == 0, ev + 1, ev)
        again = WriteBatch(keys={"id": ids}, event_ts=newer, created_ts=ev, features=batch.features)
        evens = int((ids % 2 == 0).sum())
        assert store.write(schema, again) == WriteStats(written=evens, skipped_stale=n - evens)
        probe = ids[::97].tolist()
        got = read_one(store, schema, {"id": probe})
        assert got.features["n"] == [-i for i in probe]
        assert got.features["s"] == [f"s{i}" for i in probe]
        assert got.event_ts == [T0 + i + (i % 2 == 0) for i in probe]

    def test_polars_frame_input(self, store: OnlineStore) -> None:
        schema = schema_for({"f": "float32", "s": "string", "l": "list[int16]", "t": "datetime"})
        when = datetime(2024, 5, 1, 12, tzinfo=UTC)
        df = pl.DataFrame(
            {
                "id": [1, 2],
                "f": pl.Series([1.5, None], dtype=pl.Float32),
                "s": ["a", None],
                "l": pl.Series([[1, None], None], dtype=pl.List(pl.Int16)),
                "t": pl.Series([when, None]).dt.convert_time_zone("Europe/Paris"),
                "event_ts": pl.Series([when, when]).dt.cast_time_unit("ms"),
                "created_ts": [T0, T0],
            }
        )
        stats = store.write(schema, WriteBatch.from_frame(df, schema=schema))
        assert stats.written == 2
        got = read_one(store, schema, {"id": [1, 2]})
        assert got.features == {
            "f": [1.5, None],
            "s": ["a", None],
            "l": [[1, None], None],
            "t": [when, None],
        }
        assert got.event_ts == [int(when.timestamp() * 1e6)] * 2

    def test_bad_batches_name_the_column(self, store: OnlineStore) -> None:
        schema = schema_for({"x": "int8", "s": "string"})
        good = {"id": 1, "x": 1, "s": "a"}
        with pytest.raises(DataError, match=r"online write to proj/v.*field x.*range of int8"):
            store.write(schema, batch_of(schema, [good | {"x": 300}]))
        with pytest.raises(DataError, match=r"field s.*not a string"):
            store.write(schema, batch_of(schema, [good | {"s": 5}]))
        with pytest.raises(DataError, match=r"field id.*nulls"):
            store.write(schema, batch_of(schema, [good | {"id": None}]))
        with pytest.raises(DataError, match="do not match"):
            store.write(schema, WriteBatch(keys={"id": [1]}, event_ts=[T0], created_ts=[T0]))
        naive = schema_for({"t": "datetime"})
        with pytest.raises(DataError, match="naive"):
            store.write(naive, batch_of(naive, [{"id": 1, "t": datetime(2024, 1, 1)}]))
        assert read_one(store, schema, {"id": [1]}).event_ts == [None]  # nothing half-written

    def test_retention_drops_records_two_ttls_old(self, store: OnlineStore) -> None:
        ttl = HOUR_US
        schema = schema_for({"x": "int64"}, ttl_us=ttl)
        now = now_us()
        rows = [{"id": i, "x": i} for i in range(3)]
        ev = [now - 3 * ttl, now - ttl - ttl // 2, now]  # gone, expired-but-kept, fresh
        stats = store.write(schema, batch_of(schema, rows, event_ts=ev, created_ts=now))
        assert stats == WriteStats(written=2, skipped_expired=1)
        got = read_one(store, schema, {"id": [0, 1, 2]})
        assert got.features["x"] == [None, 1, 2] and got.event_ts == [None, ev[1], ev[2]]


# ---------------------------------------------------------------- concurrency

WRITERS = 4
KEYS = 24
RACE_T0 = 1_700_000_000_000_000  # fixed: each process must derive the same rows from a seed


def _writes_of(seed: int) -> list[tuple[int, int, int, int]]:
    """One writer's rows: (entity, event_ts, created_ts, value), ties on purpose."""
    rng = random.Random(seed)
    return [
        (
            rng.randrange(KEYS),
            RACE_T0 + rng.randrange(12),
            RACE_T0 + rng.randrange(4),
            rng.randrange(10**9),
        )
        for _ in range(300)
    ]


def warm_up(seconds: float) -> int:
    """Run in each pool worker first, so the racing writers start together."""
    time.sleep(seconds)
    return os.getpid()


def _writer(url: str, seed: int, start_at: float) -> int:
    schema = schema_for({"x": "int64"}, view="race")
    store = open_online_store(url)
    rows = _writes_of(seed)
    time.sleep(max(0.0, start_at - time.time()))
    written = 0
    try:
        for start in range(0, len(rows), 15):  # many small batches, so writers interleave
            part = rows[start : start + 15]
            stats = store.write(
                schema,
                WriteBatch(
                    keys={"id": [r[0] for r in part]},
                    event_ts=[r[1] for r in part],
                    created_ts=[r[2] for r in part],
                    features={"x": [r[3] for r in part]},
                ),
            )
            written += stats.written
    finally:
        store.close()
    return written


def check_concurrent_writers(url: str, seeds: Sequence[int], pool: ProcessPoolExecutor) -> None:
    """Writers in separate processes race; each key must end at its max (event, created)."""
    start_at = time.time() + 0.3
    futures = [pool.submit(_writer, url, seed, start_at) for seed in seeds]
    assert all(f.result(timeout=120) >= 0 for f in futures)
    best: dict[int, tuple[int, int]] = {}
    values: dict[tuple[int, int, int], set[int]] = {}
    for seed in seeds:
        for entity, ev, cr, x in _writes_of(seed):
            best[entity] = max(best.get(entity, (ev, cr)), (ev, cr))
            values.setdefault((entity, ev, cr), set()).add(x)
    schema = schema_for({"x": "int64"}, view="race")
    store = open_online_store(url)
    try:
        got = read_one(store, schema, {"id": sorted(best)})
        store.delete_view(schema)  # the next example starts empty
    finally:
        store.close()
    for i, entity in enumerate(sorted(best)):
        ev, cr = best[entity]
        assert (got.event_ts[i], got.created_ts[i]) == (ev, cr), entity
        # equal records never replace each other, so any writer's value at the max may stand
        assert got.features["x"][i] in values[(entity, ev, cr)], entity


def writer_pool() -> Iterator[ProcessPoolExecutor]:
    """WRITERS warm worker processes for the concurrent-writer property tests.

    forkserver: fresh workers (no inherited threads) that import these helpers once.
    """
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.unit.stores.online_contract"])
    with ProcessPoolExecutor(max_workers=WRITERS, mp_context=ctx) as executor:
        assert len(set(executor.map(warm_up, [0.5] * WRITERS))) == WRITERS
        yield executor
