"""JSON events -> typed columns: every schema dtype, and a reason for every refusal."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.engines.stream import decode as d
from featurestore.engines.stream.decode import EventDecoder, RecordBatch

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
T0_US = int(T0.timestamp()) * 1_000_000
T0_MS = T0_US // 1000

ALL_TYPES = [
    ("i8", "int8"),
    ("i16", "int16"),
    ("i32", "int32"),
    ("i64", "int64"),
    ("u8", "uint8"),
    ("u16", "uint16"),
    ("u32", "uint32"),
    ("u64", "uint64"),
    ("f32", "float32"),
    ("f64", "float64"),
    ("s", "string"),
    ("b", "bool"),
    ("d", "date"),
    ("ts", "datetime"),
    ("li", "list[int64]"),
    ("lf", "list[float64]"),
    ("ls", "list[string]"),
    ("lts", "list[datetime]"),
]
GOOD = {
    "i8": -128,
    "i16": 32767,
    "i32": -(2**31),
    "i64": 2**63 - 1,
    "u8": 255,
    "u16": 0,
    "u32": 2**32 - 1,
    "u64": 2**64 - 1,
    "f32": 1.5,
    "f64": 7,  # a JSON integer is a number too
    "s": "héllo",
    "b": False,
    "d": "2024-02-29",
    "ts": "2024-05-01T14:00:00+02:00",
    "li": [1, None, -3],
    "lf": [0.5, 2],
    "ls": ["a", ""],
    "lts": ["2024-05-01T12:00:00Z", T0_MS],
}


def decoder(fields: list[tuple[str, str]] = ALL_TYPES, **kw: Any) -> EventDecoder:
    return EventDecoder(source="src", fields=fields, timestamp_field="ts", **kw)


def batch(values: list[Any], *, ts_ms: int | list[int] = T0_MS + 1000) -> RecordBatch:
    raw = [v if isinstance(v, bytes) or v is None else orjson.dumps(v) for v in values]
    stamps = ts_ms if isinstance(ts_ms, list) else [ts_ms] * len(raw)
    return RecordBatch("t", raw, stamps, [3] * len(raw), list(range(100, 100 + len(raw))))


def test_every_dtype_decodes_to_its_polars_type_and_value():
    out = decoder().decode(batch([GOOD]))
    assert out.rejects == []
    row = out.frame.row(0, named=True)
    expected = {**GOOD, "f64": 7.0, "d": dt.date(2024, 2, 29), "lf": [0.5, 2.0]}
    expected["ts"] = T0
    expected["lts"] = [T0, T0]
    for name, value in expected.items():
        assert row[name] == value, name
    schema = out.frame.schema
    assert schema["u64"] == pl.UInt64
    assert schema["f32"] == pl.Float32
    assert schema["ts"] == pl.Datetime("us", "UTC")
    assert schema["lts"] == pl.List(pl.Datetime("us", "UTC"))
    assert row[d.PARTITION] == 3
    assert row[d.OFFSET] == 100
    assert row[d.RECORD_TS] == T0 + dt.timedelta(seconds=1)


def test_nulls_are_values_except_for_the_timestamp():
    event = {name: None for name, _ in ALL_TYPES} | {"ts": "2024-05-01T12:00:00Z"}
    out = decoder().decode(batch([event]))
    assert out.rejects == []
    assert all(
        v is None for k, v in out.frame.row(0, named=True).items() if k in GOOD and k != "ts"
    )


BAD_CASES = [
    ({"i64": True}, d.WRONG_TYPE, "i64"),
    ({"i64": 1.0}, d.WRONG_TYPE, "i64"),
    ({"i64": "5"}, d.WRONG_TYPE, "i64"),
    ({"i8": 128}, d.OUT_OF_RANGE, "i8"),
    ({"u8": -1}, d.OUT_OF_RANGE, "u8"),
    ({"u32": 2**32}, d.OUT_OF_RANGE, "u32"),
    ({"f32": 1e39}, d.OUT_OF_RANGE, "f32"),
    ({"f64": "1.5"}, d.WRONG_TYPE, "f64"),
    ({"f64": False}, d.WRONG_TYPE, "f64"),
    ({"s": 5}, d.WRONG_TYPE, "s"),
    ({"s": {"a": 1}}, d.WRONG_TYPE, "s"),
    ({"b": 1}, d.WRONG_TYPE, "b"),
    ({"d": "2024-02-30"}, d.WRONG_TYPE, "d"),
    ({"d": 20240101}, d.WRONG_TYPE, "d"),
    ({"ts": "2024-05-01T12:00:00"}, d.NAIVE_TIMESTAMP, "ts"),
    ({"ts": "yesterday"}, d.BAD_TIMESTAMP, "ts"),
    ({"ts": 1.5}, d.WRONG_TYPE, "ts"),
    ({"ts": None}, d.NULL_TIMESTAMP, "ts"),
    ({"ts": "2024-05-01T12:10:00Z"}, d.FUTURE_TIMESTAMP, "ts"),
    ({"li": [1, True]}, d.WRONG_TYPE, "li"),
    ({"li": 5}, d.WRONG_TYPE, "li"),
    ({"ls": ["a", 1]}, d.WRONG_TYPE, "ls"),
    ({"lts": ["2024-05-01T12:00:00"]}, d.NAIVE_TIMESTAMP, "lts"),
]


@pytest.mark.parametrize(("patch", "reason", "field"), BAD_CASES)
def test_a_bad_value_refuses_only_its_record_and_names_the_field(patch, reason, field):
    events = [GOOD, {**GOOD, **patch}, GOOD]
    out = decoder().decode(batch(events))
    assert [r.index for r in out.rejects] == [1]
    assert out.rejects[0].reason == reason
    assert repr(field) in out.rejects[0].detail
    assert out.frame[d.INDEX].to_list() == [0, 2]
    assert out.frame[d.OFFSET].to_list() == [100, 102]


def test_a_missing_field_is_not_a_null():
    event = {k: v for k, v in GOOD.items() if k != "s"}
    out = decoder().decode(batch([event]))
    assert [(r.reason, "'s'" in r.detail) for r in out.rejects] == [(d.MISSING_FIELD, True)]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", d.UNDECODABLE),
        (b"", d.UNDECODABLE),
        (None, d.UNDECODABLE),
        (b"[1, 2]", d.NOT_AN_OBJECT),
        (b'"a string"', d.NOT_AN_OBJECT),
        (b"\xff\xfe", d.UNDECODABLE),
    ],
)
def test_undecodable_records(raw, reason):
    out = decoder().decode(batch([GOOD, raw]))
    assert [(r.index, r.reason) for r in out.rejects] == [(1, reason)]
    assert out.frame.height == 1


def test_every_record_of_a_bad_batch_gets_its_own_reason():
    events = [b"nope", {**GOOD, "i8": 999}, {**GOOD, "ts": "2024-05-01T12:00:00"}, GOOD]
    out = decoder().decode(batch(events))
    assert [(r.index, r.reason) for r in out.rejects] == [
        (0, d.UNDECODABLE),
        (1, d.OUT_OF_RANGE),
        (2, d.NAIVE_TIMESTAMP),
    ]


def test_extra_fields_are_ignored():
    out = decoder().decode(batch([{**GOOD, "unknown": [1, {"x": 2}]}]))
    assert out.rejects == []
    assert "unknown" not in out.frame.columns


ISO_FORMS = [
    "2024-05-01T12:00:00Z",
    "2024-05-01T12:00:00.000000Z",
    "2024-05-01T12:00:00+00:00",
    "2024-05-01T14:00:00+02:00",
    "2024-05-01T07:30:00-04:30",
    "2024-05-01 12:00:00Z",
    "2024-05-01T12:00:00.000+00:00",
]


@pytest.mark.parametrize("text", ISO_FORMS)
def test_iso_timestamps_with_a_zone_are_converted_to_utc(text):
    fields = [("ts", "datetime")]
    out = decoder(fields).decode(batch([{"ts": text}]))
    assert out.rejects == []
    assert out.frame["ts"][0] == T0


def test_iso_fractions_keep_microseconds():
    fields = [("ts", "datetime")]
    out = decoder(fields).decode(batch([{"ts": "2024-05-01T12:00:00.123456Z"}]))
    assert out.frame["ts"][0] == T0 + dt.timedelta(microseconds=123456)


@pytest.mark.parametrize(
    ("unit", "value", "expected_us"),
    [
        ("auto", T0_MS, T0_US),
        ("auto", T0_US, T0_US),
        ("us", T0_US, T0_US),
        ("ms", T0_MS, T0_US),
        ("auto", 0, 0),
    ],
)
def test_epoch_integers(unit, value, expected_us):
    fields = [("ts", "datetime")]
    out = decoder(fields, epoch_unit=unit).decode(batch([{"ts": value}], ts_ms=T0_MS))
    assert out.rejects == []
    assert out.frame["ts"].dt.epoch("us")[0] == expected_us


def test_future_skew_is_measured_against_the_record_timestamp():
    fields = [("ts", "datetime")]
    dec = decoder(fields, max_future_skew_us=60_000_000)
    events = [{"ts": T0_US + 60_000_000}, {"ts": T0_US + 60_000_001}, {"ts": T0_US - 10**12}]
    out = dec.decode(batch(events, ts_ms=T0_MS))
    assert [(r.index, r.reason) for r in out.rejects] == [(1, d.FUTURE_TIMESTAMP)]


def test_a_record_without_timestamp_stamps_its_event_time():
    fields = [("ts", "datetime")]
    out = decoder(fields).decode(batch([{"ts": T0_US}, {"ts": T0_US}], ts_ms=[-1, T0_MS + 5]))
    assert out.frame[d.RECORD_TS].dt.epoch("us").to_list() == [T0_US, T0_US + 5000]


def test_created_timestamp_field_must_not_be_null():
    fields = [("ts", "datetime"), ("created", "datetime")]
    dec = EventDecoder(
        source="s", fields=fields, timestamp_field="ts", created_timestamp_field="created"
    )
    out = dec.decode(batch([{"ts": T0_US, "created": None}, {"ts": T0_US, "created": T0_US}]))
    assert [(r.index, r.reason) for r in out.rejects] == [(0, d.NULL_TIMESTAMP)]


def test_reserved_and_unknown_fields_are_refused_up_front():
    with pytest.raises(ValueError, match="reserved prefix"):
        EventDecoder(source="s", fields=[("_fs_offset", "int64")], timestamp_field="x")
    with pytest.raises(ValueError, match="not in the schema"):
        EventDecoder(source="s", fields=[("a", "int64")], timestamp_field="ts")


def test_an_empty_batch_has_the_full_schema():
    out = decoder().decode(batch([]))
    assert out.frame.height == 0
    assert dict(out.frame.schema) == decoder().schema


# ---------------------------------------------------------------- property

SCALARS: dict[str, st.SearchStrategy[Any]] = {
    "int16": st.integers(-(2**15), 2**15 - 1),
    "uint32": st.integers(0, 2**32 - 1),
    "int64": st.integers(-(2**63), 2**63 - 1),
    "float64": st.floats(allow_nan=False, allow_infinity=False),
    "string": st.text(max_size=8),
    "bool": st.booleans(),
}
FIELDS = [("ts", "datetime"), *((f"c_{k}", k) for k in SCALARS), ("c_list", "list[int16]")]


INVALID: dict[str, list[Any]] = {
    "int16": [2**15, "1", 1.5, True],
    "uint32": [-1, 2**32],
    "int64": [1.5, False],
    "float64": ["1.0", True],
    "string": [5, ["a"]],
    "bool": [0, "true"],
    "list[int16]": ["x", [True], [2**16]],
}


@st.composite
def events(draw: st.DrawFn) -> tuple[dict[str, Any], bool]:
    """An event and whether it is valid; an invalid one has one broken or missing field."""
    event: dict[str, Any] = {"ts": draw(st.integers(T0_US - 10**12, T0_US))}
    for name, dtype in FIELDS[1:]:
        if dtype.startswith("list"):
            strategy: st.SearchStrategy[Any] = st.lists(
                st.one_of(st.none(), SCALARS["int16"]), max_size=3
            )
        else:
            strategy = SCALARS[dtype]
        event[name] = draw(st.one_of(st.none(), strategy))
    if draw(st.integers(0, 3)):
        return event, True
    name, dtype = draw(st.sampled_from(FIELDS[1:]))
    if draw(st.booleans()):
        del event[name]
    else:
        event[name] = draw(st.sampled_from(INVALID[dtype]))
    return event, False


@settings(max_examples=60, deadline=None)
@given(st.lists(events(), max_size=25))
def test_valid_events_round_trip_and_invalid_ones_are_refused(cases):
    out = decoder(FIELDS).decode(batch([e for e, _ in cases], ts_ms=T0_MS))
    refused = {r.index for r in out.rejects}
    assert refused == {i for i, (_, valid) in enumerate(cases) if not valid}
    kept = [e for e, valid in cases if valid]
    assert out.frame.height == len(kept)
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    for row, event in zip(out.frame.iter_rows(named=True), kept, strict=True):
        assert row["ts"] == epoch + dt.timedelta(microseconds=event["ts"])
        for name, _ in FIELDS[1:]:
            assert row[name] == event[name], name
