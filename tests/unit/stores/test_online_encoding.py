"""The version-1 record encoding: exact round trips, key layout, header order."""

from __future__ import annotations

import struct
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.errors import DataError, DefinitionError
from featurestore.stores.online import OnlineViewSchema, ReadRequest, WriteBatch
from featurestore.stores.online.encoding import codec_for
from featurestore.stores.online.keys import key_part
from featurestore.stores.online.writes import prepare
from tests.unit.stores.online_contract import same, schema_for

I64 = st.integers(-(2**63), 2**63 - 1)
_INT_RANGES = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint8": (0, 2**8 - 1),
    "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}
DATES = st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31))
DATETIMES = st.datetimes(timezones=st.just(UTC))


def scalar(dtype: str) -> st.SearchStrategy[Any]:
    if dtype in _INT_RANGES:
        return st.integers(*_INT_RANGES[dtype])
    return {
        "bool": st.booleans(),
        "float32": st.floats(width=32),
        "float64": st.floats(),
        "string": st.text(),
        "date": DATES,
        "datetime": DATETIMES,
    }[dtype]


def values_of(dtype: str) -> st.SearchStrategy[Any]:
    if dtype.startswith("list["):
        return st.lists(st.none() | values_of(dtype[5:-1]), max_size=5)
    return scalar(dtype)


def encode(schema: OnlineViewSchema, batch: WriteBatch, *, full_keys: bool = False) -> Any:
    """(keys, values) of a batch; keys are full Redis keys when ``full_keys``."""
    codec = codec_for(schema)
    pre, suf = (codec.key_prefix, codec.key_suffix) if full_keys else (b"", b"")
    return prepare(codec, batch, now_us=0).records(prefix=pre, suffix=suf)


def round_trip(schema: OnlineViewSchema, columns: dict[str, list[Any]], ev: list[int]) -> Any:
    n = len(ev)
    keys = {k: list(range(n)) for k in schema.join_keys}
    _, values = encode(
        schema, WriteBatch(keys=keys, event_ts=ev, created_ts=ev[::-1], features=columns)
    )
    return codec_for(schema).result(ReadRequest(schema, keys), values)


DTYPES = [*_INT_RANGES, "bool", "float32", "float64", "string", "date", "datetime"]
LIST_DTYPES = [f"list[{d}]" for d in DTYPES] + ["list[list[string]]", "list[list[float64]]"]


@pytest.mark.parametrize("dtype", DTYPES + LIST_DTYPES)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_every_dtype_round_trips_exactly(dtype: str, data: st.DataObject) -> None:
    values = data.draw(st.lists(st.none() | values_of(dtype), max_size=8), label="values")
    ev = data.draw(st.lists(I64, min_size=len(values), max_size=len(values)), label="ev")
    schema = schema_for({"a": dtype, "b": "string"})
    other = [f"#{i}" for i in range(len(values))]  # a neighbour payload, to catch offset slips
    got = round_trip(schema, {"a": values, "b": other}, ev)
    assert got.event_ts == ev and got.created_ts == ev[::-1]
    assert got.features["b"] == other
    for want, have in zip(values, got.features["a"], strict=True):
        assert same(have, want), (want, have)


@settings(max_examples=100, deadline=None)
@given(a=st.tuples(I64, I64), b=st.tuples(I64, I64))
def test_header_bytes_order_like_event_then_created(a: tuple[int, int], b: tuple[int, int]) -> None:
    schema = schema_for({"x": "int8"})
    _, values = encode(
        schema,
        WriteBatch(
            keys={"id": [1, 2]},
            event_ts=[a[0], b[0]],
            created_ts=[a[1], b[1]],
            features={"x": [0, 0]},
        ),
    )
    ha, hb = values[0][1:17], values[1][1:17]
    assert (ha < hb) == (a < b) and (ha == hb) == (a == b)
    # and the four big-endian uint32 the Lua script compares say the same
    assert (struct.unpack(">4I", ha) < struct.unpack(">4I", hb)) == (a < b)


KEY_SCALARS = {
    "int64": st.integers(-(2**63), 2**63 - 1),
    "uint64": st.integers(0, 2**64 - 1),
    "int16": st.integers(-(2**15), 2**15 - 1),
    "string": st.text(max_size=12),
    "bool": st.booleans(),
    "date": DATES,
    "datetime": DATETIMES,
}


@settings(max_examples=60, deadline=None)
@given(
    dtypes=st.lists(st.sampled_from(sorted(KEY_SCALARS)), min_size=1, max_size=3),
    data=st.data(),
)
def test_batch_keys_equal_lookup_keys(dtypes: list[str], data: st.DataObject) -> None:
    """Writes encode keys vectorised, reads one by one: both must give the same bytes."""
    keys = {f"k{i}": d for i, d in enumerate(dtypes)}
    schema = OnlineViewSchema.build(project="p", view="v", keys=keys, features={})
    n = data.draw(st.integers(1, 6))
    cols = {k: data.draw(st.lists(KEY_SCALARS[d], min_size=n, max_size=n)) for k, d in keys.items()}
    codec = codec_for(schema)
    written, _ = encode(
        schema, WriteBatch(keys=cols, event_ts=[0] * n, created_ts=[0] * n), full_keys=True
    )
    request = ReadRequest(schema, cols)
    assert written == codec.entities_for(request, prefix=codec.key_prefix, suffix=codec.key_suffix)
    lookups = codec.entities_for(request)
    # numpy columns take the vectorised path too
    wide = {k: v for k, v in cols.items() if keys[k] in ("int64", "uint64")}
    as_numpy = {k: np.array(v, dtype=keys[k]) for k, v in wide.items()}
    if len(as_numpy) == len(cols):
        again, _ = encode(schema, WriteBatch(keys=as_numpy, event_ts=[0] * n, created_ts=[0] * n))
        assert again == lookups


def test_typed_keys_are_unambiguous() -> None:
    assert key_part("int64", 1, what="k") != key_part("string", "1", what="k")
    assert key_part("int8", 1, what="k") == key_part("uint64", 1, what="k")  # width-free
    assert key_part("uint64", 2**63, what="k")[:1] == b"u"
    two = OnlineViewSchema.build(
        project="p", view="v", keys={"a": "string", "b": "string"}, features={}
    )
    codec = codec_for(two)
    pairs = [("ab", "c"), ("a", "bc"), ("", "abc"), ("abc", "")]
    encoded = codec.entities_for(
        ReadRequest(two, {"a": [p[0] for p in pairs], "b": [p[1] for p in pairs]})
    )
    assert len(set(encoded)) == len(pairs)
    with pytest.raises(DataError, match="not a valid int64"):
        key_part("int64", 2**64, what="k")
    with pytest.raises(DataError, match="not a valid bool"):
        key_part("bool", 1, what="k")


def test_golden_bytes_pin_version_one() -> None:
    """If this fails, the format changed: bump VERSION / KEY_PREFIX instead."""
    schema = OnlineViewSchema(
        project="p",
        view="v",
        join_keys=("id",),
        key_dtypes=("int64",),
        features=("a", "s", "n"),
        feature_dtypes=("int16", "string", "float64"),
        ttl_us=None,
        schema_id="abc",
    )
    keys, values = encode(
        schema,
        WriteBatch(
            keys={"id": [-2]},
            event_ts=[1],
            created_ts=[-1],
            features={"a": [258], "s": ["hé"], "n": [None]},
        ),
        full_keys=True,
    )
    assert keys == [b"fs1:{p:i\xff\xff\xff\xff\xff\xff\xff\xfe}:v:abc"]
    assert values == [
        b"\x01"
        + b"\x80\x00\x00\x00\x00\x00\x00\x01"  # event_ts 1 + 2**63
        + b"\x7f\xff\xff\xff\xff\xff\xff\xff"  # created_ts -1 + 2**63
        + b"\x04"  # null bitmap: feature 2 (n) is null
        + b"\x01\x02"  # a = 258
        + b"\x00\x00\x00\x03"  # s: 3 payload bytes
        + b"\x00" * 8  # n: null slot
        + "hé".encode()
    ]


def test_numpy_and_polars_columns_are_checked_not_wrapped() -> None:
    import polars as pl

    schema = schema_for({"x": "int8", "f": "float32", "d": "date"})

    def values(**cols: Any) -> Any:
        base: dict[str, Any] = {"x": [1], "f": [1.0], "d": [date(2024, 1, 1)]}
        batch = WriteBatch(keys={"id": [1]}, event_ts=[0], created_ts=[0], features=base | cols)
        return encode(schema, batch)[1]

    assert values(x=np.array([127], dtype=np.int64))
    with pytest.raises(DataError, match="range of int8"):
        values(x=np.array([128], dtype=np.int64))
    with pytest.raises(DataError, match="float64 values, which do not fit"):
        values(x=np.array([1.0]))
    with pytest.raises(DataError, match="too large for float32"):
        values(f=[1e300])
    with pytest.raises(DataError, match="declared date"):
        values(d=pl.Series([datetime(2024, 1, 1, tzinfo=UTC)]))
    assert values(d=np.array(["2024-01-02"], dtype="datetime64[D]"))
    with pytest.raises(DataError, match="not a date"):
        values(d=[datetime(2024, 1, 1, tzinfo=UTC)])


def test_reads_decode_fast_enough() -> None:
    """100 entities x 2 views x 3 features decode in well under 0.2 ms."""
    import time

    views = [
        schema_for({"a": "float64", "b": "int64", "c": "float64"}, view="one"),
        schema_for({"d": "float64", "e": "int32", "f": "string"}, view="two"),
    ]
    ids = list(range(100))
    requests, blobs = [], []
    for schema in views:
        cols = {
            f: (
                [f"v{i}" for i in ids]
                if dt == "string"
                else [i * 1.0 if dt == "float64" else i for i in ids]
            )
            for f, dt in zip(schema.features, schema.feature_dtypes, strict=True)
        }
        batch = WriteBatch(keys={"id": ids}, event_ts=ids, created_ts=ids, features=cols)
        requests.append(ReadRequest(schema, {"id": ids}))
        blobs.append(encode(schema, batch)[1])
    best = float("inf")
    for _ in range(200):
        started = time.perf_counter()
        for request, values in zip(requests, blobs, strict=True):
            codec = codec_for(request.schema)
            codec.entities_for(request)
            codec.result(request, values)
        best = min(best, time.perf_counter() - started)
    assert best < 0.4e-3, f"keys + decode took {best * 1e3:.3f} ms"


def test_schema_validation_names_the_problem() -> None:
    with pytest.raises(DefinitionError, match="view name"):
        schema_for({"x": "int64"}, view="a:b")
    with pytest.raises(DefinitionError, match="canonical"):
        schema_for({"x": "Int64"})
    with pytest.raises(DefinitionError, match="join key cannot have dtype float64"):
        schema_for({"x": "int64"}, keys={"k": "float64"})
    with pytest.raises(DefinitionError, match="unique"):
        schema_for({"id": "int64"})
    with pytest.raises(DefinitionError, match="ttl_us"):
        schema_for({"x": "int64"}, ttl_us=0)
    assert schema_for({"x": "int64"}).schema_id != schema_for({"x": "int32"}).schema_id
    assert schema_for({"x": "int64"}, ttl_us=5).schema_id == schema_for({"x": "int64"}).schema_id


def test_datetime_round_trip_keeps_microseconds() -> None:
    when = datetime(2024, 3, 1, tzinfo=UTC) + timedelta(microseconds=1)
    got = round_trip(schema_for({"t": "datetime"}), {"t": [when]}, [0])
    assert got.features["t"] == [when]
