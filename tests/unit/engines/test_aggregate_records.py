"""The vectorized online record codec (engines/aggregate/records.py): round trips
bit for bit, reads version 1 records, and refuses records that are not whole."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst

from featurestore.engines.aggregate.online import build_slots
from featurestore.engines.aggregate.records import Marks, Slots, decode, decode_one, encode
from featurestore.engines.aggregate.spec import AGG_FUNCTIONS, NUMERIC_ONLY, WindowSpec
from featurestore.engines.aggregate.state import States, from_events
from featurestore.errors import DataError, DefinitionError

_V1_HEAD = struct.Struct("<2sBqH")
_U32 = struct.Struct("<I")


def _field_names(states: States) -> list[str]:
    return sorted(states.fields)


def _put_array(out: list[bytes], arr: np.ndarray) -> None:
    out.append(_U32.pack(len(arr)))
    if arr.dtype.kind == "O":
        raw = [("" if v is None else str(v)).encode() for v in arr]
        out.append(np.array([len(b) for b in raw], "<u4").tobytes())
        out.append(b"".join(raw))
    else:
        out.append(np.ascontiguousarray(arr, arr.dtype.newbyteorder("<")).tobytes())


def encode_records_v1(*, at_us: int, slots: Sequence[Slots], n_entities: int) -> list[str]:
    """Version 1 records, as featurestore wrote them before the stream marks (the
    historical format this module must keep reading)."""
    out: list[str] = []
    for e in range(n_entities):
        parts = [_V1_HEAD.pack(b"FA", 1, at_us, len(slots))]
        for s in slots:
            a, b = int(s.offsets[e]), int(s.offsets[e + 1])
            mine = s.states.take(np.arange(a, b))
            dt = s.states.dtype.str.encode()
            parts += [_U32.pack(b - a), bytes([len(dt)]), dt, s.pos[a:b].astype("<i8").tobytes()]
            for name in _field_names(mine):
                _put_array(parts, mine.fields[name])
        out.append(base64.b64encode(b"".join(parts)).decode("ascii"))
    return out


NUMERIC = ["<i8", "<f8", "|b1", "<i4", "<f4", "|u1"]
FLOAT_POOL = st.one_of(
    st.integers(-40, 40).map(lambda i: i / 4),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e30]),
)
TEXT = st.text(max_size=4)  # any Unicode: UTF-8 of 1 to 4 bytes per character


# -- building slots --------------------------------------------------------------


def _event_values(draw: st.DrawFn, dt: np.dtype[Any], n: int) -> np.ndarray:
    if dt.kind == "O":
        out = np.empty(n, object)
        out[:] = draw(st.lists(TEXT, min_size=n, max_size=n))
        return out
    if dt.kind == "f":
        return np.array(draw(st.lists(FLOAT_POOL, min_size=n, max_size=n)), dt)
    if dt.kind == "b":
        return np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dt)
    info = np.iinfo(dt)
    ints = st.integers(max(info.min, -(2**40)), min(info.max, 2**40))
    return np.array(draw(st.lists(ints, min_size=n, max_size=n)), dt)


def _scrambled(draw: st.DrawFn, arr: np.ndarray) -> np.ndarray:
    """Arbitrary contents of ``arr``'s dtype and length: every bit pattern must survive."""
    if arr.dtype.kind == "O":
        out = np.empty(len(arr), object)
        out[:] = draw(st.lists(st.one_of(TEXT, st.none()), min_size=len(arr), max_size=len(arr)))
        return out
    return draw(npst.arrays(arr.dtype, len(arr)))


@st.composite
def slots_of(draw: st.DrawFn, n_entities: int) -> Slots:
    """One aggregation's slots for ``n_entities``: 0..4 states each, built from events."""
    function = draw(st.sampled_from(AGG_FUNCTIONS))
    dtypes = NUMERIC if function in NUMERIC_ONLY else [*NUMERIC, "|O"]
    dt = np.dtype(draw(st.sampled_from(dtypes)))
    sizes = np.array(draw(st.lists(st.integers(0, 4), min_size=n_entities, max_size=n_entities)))
    n_states = int(sizes.sum())
    n_events = draw(st.integers(0, 12)) if n_states else 0
    groups = np.array(
        draw(st.lists(st.integers(0, max(n_states - 1, 0)), min_size=n_events, max_size=n_events)),
        np.int64,
    )
    ets = np.array(
        draw(st.lists(st.integers(-50, 50), min_size=n_events, max_size=n_events)), np.int64
    )
    states = from_events(
        function,  # type: ignore[arg-type]
        groups=groups,
        n_groups=n_states,
        values=_event_values(draw, dt, n_events),
        valid=np.array(draw(st.lists(st.booleans(), min_size=n_events, max_size=n_events)), bool),
        event_ts=ets,
        created_ts=ets + 1,
    )
    if draw(st.booleans()):
        states = States(
            states.function,
            states.dtype,
            {k: v if k == "offsets" else _scrambled(draw, v) for k, v in states.fields.items()},
        )
    pos = draw(npst.arrays(np.int64, n_states))
    offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    return Slots(offsets, pos, states)


@st.composite
def marks_of(draw: st.DrawFn, n_entities: int) -> Marks:
    counts = draw(st.lists(st.integers(0, 3), min_size=n_entities, max_size=n_entities))
    total = sum(counts)
    return Marks(
        np.concatenate(([0], np.cumsum(counts, dtype=np.int64))).astype(np.int64),
        draw(npst.arrays(np.int32, total)),
        draw(npst.arrays(np.int64, total)),
    )


@st.composite
def batches(draw: st.DrawFn) -> tuple[np.ndarray, list[Slots], Marks | None]:
    n = draw(st.integers(0, 6))
    at_us = draw(npst.arrays(np.int64, n))
    slots = draw(st.lists(slots_of(n), max_size=3))
    marks = draw(st.one_of(st.none(), marks_of(n)))
    return at_us, slots, marks


# -- comparing -------------------------------------------------------------------


def _written(arr: np.ndarray) -> list[str]:
    """Strings as the record holds them: None is written as ""."""
    return ["" if v is None else str(v) for v in arr.tolist()]


def assert_same_array(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype
    assert len(got) == len(want)
    if want.dtype.kind == "O":
        assert got.tolist() == _written(want)
    else:  # bit for bit: NaN payloads, -0.0 and inf included
        assert got.tobytes() == want.tobytes()


def assert_same_slots(got: Slots, want: Slots, *, n_entities: int) -> None:
    assert_same_array(got.offsets, want.offsets)
    assert_same_array(got.pos, want.pos)
    assert got.states.function == want.states.function
    if not n_entities:  # no record tells the dtype
        assert len(got.states) == 0
        return
    assert got.states.dtype == want.states.dtype
    assert sorted(got.states.fields) == sorted(want.states.fields)
    for name, arr in want.states.fields.items():
        assert_same_array(got.states.fields[name], arr)


def assert_same_marks(got: Marks, want: Marks) -> None:
    assert_same_array(got.offsets, want.offsets.astype(np.int64))
    assert_same_array(got.partition, want.partition.astype(np.int32))
    assert_same_array(got.next_offset, want.next_offset.astype(np.int64))


def _functions(slots: list[Slots]) -> list[str]:
    return [s.states.function for s in slots]


def _raw(text: str) -> bytes:
    return base64.b64decode(text)


def _text(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


# -- round trips -------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(batches())
def test_decode_inverts_encode(batch: tuple[np.ndarray, list[Slots], Marks | None]) -> None:
    at_us, slots, marks = batch
    n = len(at_us)
    texts = encode(at_us=at_us, slots=slots, marks=marks)
    assert len(texts) == n
    assert texts == [_text(_raw(t)) for t in texts]  # what b64encode of each record gives
    got_at, got_slots, got_marks = decode(texts, functions=_functions(slots))
    assert_same_array(got_at, at_us)
    assert len(got_slots) == len(slots)
    for got, want in zip(got_slots, slots, strict=True):
        assert_same_slots(got, want, n_entities=n)
    assert_same_marks(got_marks, Marks.none(n) if marks is None else marks)
    for e, text in enumerate(texts):  # the one-record reader of lookups agrees
        one_at, one_slots = decode_one(text, functions=_functions(slots))
        assert one_at == at_us[e]
        for (pos, states), want in zip(one_slots, slots, strict=True):
            a, b = int(want.offsets[e]), int(want.offsets[e + 1])
            one = Slots(np.array([0, b - a]), pos, states)
            mine = Slots(np.array([0, b - a]), want.pos[a:b], want.states.take(np.arange(a, b)))
            assert_same_slots(one, mine, n_entities=1)


@st.composite
def uniform_batches(draw: st.DrawFn) -> tuple[int, int, list[Slots]]:
    """(n entities, one T for all, slots): what version 1 can hold."""
    n = draw(st.integers(0, 6))
    at = draw(st.integers(-(2**63), 2**63 - 1))
    return n, at, draw(st.lists(slots_of(n), max_size=3))


@settings(max_examples=150, deadline=None)
@given(uniform_batches())
def test_reads_version_1_records(batch: tuple[int, int, list[Slots]]) -> None:
    n, at, slots = batch
    old = encode_records_v1(at_us=at, slots=slots, n_entities=n)
    got_at, got_slots, got_marks = decode(old, functions=_functions(slots))
    assert got_at.tolist() == [at] * n
    for got, want in zip(got_slots, slots, strict=True):
        assert_same_slots(got, want, n_entities=n)
    assert_same_marks(got_marks, Marks.none(n))


@settings(max_examples=150, deadline=None)
@given(uniform_batches(), st.data())
def test_version_2_is_version_1_plus_a_trailer(
    batch: tuple[int, int, list[Slots]], data: st.DataObject
) -> None:
    n, at, slots = batch
    marks = data.draw(marks_of(n))
    old = [_raw(t) for t in encode_records_v1(at_us=at, slots=slots, n_entities=n)]
    bare = [_raw(t) for t in encode(at_us=np.full(n, at, np.int64), slots=slots)]
    marked = [_raw(t) for t in encode(at_us=np.full(n, at, np.int64), slots=slots, marks=marks)]
    for e, (v1, v2, v2m) in enumerate(zip(old, bare, marked, strict=True)):
        assert v1[:3] == b"FA\x01"
        assert v2[:3] == v2m[:3] == b"FA\x02"
        assert v2[3:] == v1[3:] + b"\x00\x00"  # n_marks = 0
        a, b = int(marks.offsets[e]), int(marks.offsets[e + 1])
        trailer = struct.pack("<H", b - a) + b"".join(
            struct.pack("<iq", int(p), int(o))
            for p, o in zip(marks.partition[a:b], marks.next_offset[a:b], strict=True)
        )
        assert v2m[3:] == v1[3:] + trailer


def _events_slots(
    function: str, values: np.ndarray, *, entities: list[int], n: int, window: int | None = 100
) -> Slots:
    """Slots from events 1, 2, 3... as of 50: one state per event, or one (window None)."""
    ets = np.arange(1, len(entities) + 1, dtype=np.int64)
    return build_slots(
        WindowSpec(function, window, None),  # type: ignore[arg-type]
        at_us=50,
        entities=np.array(entities, np.int64),
        n_entities=n,
        event_ts=ets,
        created_ts=ets,
        values=values,
    )


def test_versions_1_and_2_decode_together() -> None:
    slots = _events_slots("max", np.array([3.5, 1.0, 2.0]), entities=[0, 0, 2], n=3)
    marks = Marks(np.array([0, 1, 1, 3]), np.array([0, 1, 2], np.int32), np.array([7, 8, 9]))
    v1 = encode_records_v1(at_us=50, slots=[slots], n_entities=3)
    v2 = encode(at_us=np.array([50, 60, 70]), slots=[slots], marks=marks)
    at, (got,), got_marks = decode([v1[0], v2[1], v1[2], v2[2]], functions=["max"])
    assert at.tolist() == [50, 60, 50, 70]
    assert got.offsets.tolist() == [0, 2, 2, 3, 4]
    assert got.states.fields["best"].tolist() == [3.5, 1.0, 2.0, 2.0]
    assert got_marks.offsets.tolist() == [0, 0, 0, 0, 2]
    assert got_marks.partition.tolist() == [1, 2]
    assert got_marks.next_offset.tolist() == [8, 9]


def test_records_with_different_dtypes_are_cast_to_a_common_one() -> None:
    small = _events_slots("sum", np.array([1, 2, 3], np.int32), entities=[0, 1, 1], n=2)
    wide = _events_slots("sum", np.array([0.5, 4.0]), entities=[1, 1], n=2)
    texts = encode(at_us=np.zeros(2, np.int64), slots=[small])
    texts += encode(at_us=np.zeros(2, np.int64), slots=[wide])
    _, (got,), _ = decode([texts[3], texts[0], texts[2], texts[1]], functions=["sum"])
    assert got.states.dtype == np.float64
    assert got.offsets.tolist() == [0, 2, 3, 3, 5]
    assert got.states.fields["total"].tolist() == [0.5, 4.0, 1.0, 2.0, 3.0]
    assert got.states.fields["n"].dtype == np.int64


def test_distinct_records_with_different_dtypes_keep_their_items() -> None:
    a = _events_slots("count_distinct", np.array([5, 5, 6], np.int32), entities=[0, 1, 1], n=2)
    b = _events_slots("count_distinct", np.array([7, 1, 2]), entities=[0, 0, 1], n=2)
    texts = encode(at_us=np.zeros(2, np.int64), slots=[a]) + encode(
        at_us=np.zeros(2, np.int64), slots=[b]
    )
    _, (got,), _ = decode(texts, functions=["count_distinct"])
    assert got.states.dtype == np.int64
    off, items = got.states.fields["offsets"], got.states.fields["items"]
    per_state = [items[off[i] : off[i + 1]].tolist() for i in range(len(off) - 1)]
    assert per_state == [[5], [5], [6], [7], [1], [2]]


def test_strings_and_numbers_of_one_slot_do_not_mix() -> None:
    text = _events_slots("min", np.array(["x"], object), entities=[0], n=1)
    num = _events_slots("min", np.array([1.0]), entities=[0], n=1)
    texts = encode(at_us=np.zeros(1, np.int64), slots=[text])
    texts += encode(at_us=np.zeros(1, np.int64), slots=[num])
    with pytest.raises(DataError, match="disagree"):
        decode(texts, functions=["min"])


def test_none_strings_read_back_as_empty_strings() -> None:
    states = States(
        "last",
        np.dtype(object),
        {
            "event_ts": np.array([1, 0]),
            "created_ts": np.array([1, 0]),
            "value": np.array(["é", None], object),
            "n": np.array([1, 0]),
        },
    )
    slots = Slots(np.array([0, 2]), np.array([4, 5]), states)
    _, (got,), _ = decode(encode(at_us=np.array([9]), slots=[slots]), functions=["last"])
    assert got.states.fields["value"].tolist() == ["é", ""]


def test_big_endian_dtypes_keep_their_byte_order() -> None:
    values = np.array([3, -2, 7], ">i4")
    slots = _events_slots("min", values, entities=[0, 0, 1], n=2)
    _, (got,), _ = decode(encode(at_us=np.zeros(2, np.int64), slots=[slots]), functions=["min"])
    assert got.states.dtype == np.dtype(">i4")
    assert got.states.fields["best"].dtype == np.dtype(">i4")
    assert got.states.fields["best"].tolist() == [3, -2, 7]  # one state per event


def test_base64_is_read_as_leniently_as_b64decode() -> None:
    text, _ = _one()
    wrapped = text[:5] + "\n" + text[5:] + "\n"  # not canonical: read one record at a time
    want = decode([text, text], functions=["count_distinct"])
    for texts in ([text, wrapped], [wrapped, text]):
        at, (got,), marks = decode(texts, functions=["count_distinct"])
        assert at.tolist() == [5, 5]
        assert_same_slots(got, want[1][0], n_entities=2)
        assert_same_marks(marks, want[2])


def test_no_entities() -> None:
    slots = _events_slots("count", np.zeros(0), entities=[], n=0)
    assert encode(at_us=np.zeros(0, np.int64), slots=[slots]) == []
    at, (got,), marks = decode([], functions=["count"])
    assert len(at) == 0
    assert got.offsets.tolist() == [0]
    assert len(got.pos) == len(got.states) == 0
    assert marks.offsets.tolist() == [0]


def test_entities_without_states_or_aggregations() -> None:
    slots = _events_slots("mean", np.array([1.0]), entities=[1], n=3)
    assert slots.offsets.tolist() == [0, 0, 1, 1]
    texts = encode(at_us=np.array([1, 2, 3]), slots=[slots])
    _, (got,), _ = decode(texts, functions=["mean"])
    assert_same_slots(got, slots, n_entities=3)
    at, none, _ = decode(encode(at_us=np.array([4]), slots=[]), functions=[])
    assert at.tolist() == [4]
    assert none == []


# -- refusing what is not a whole record ---------------------------------------------


def _one() -> tuple[str, Slots]:
    values = np.array(["a", "bc", "a"], object)
    slots = _events_slots("count_distinct", values, entities=[0, 0, 0], n=1, window=None)
    marks = Marks(np.array([0, 2]), np.array([3, 4], np.int32), np.array([10, 11]))
    (text,) = encode(at_us=np.array([5]), slots=[slots], marks=marks)
    return text, slots


def test_bad_magic_or_version_is_refused() -> None:
    raw = _raw(_one()[0])
    for bad in (b"XA" + raw[2:], raw[:2] + b"\x03" + raw[3:], raw[:2] + b"\x00" + raw[3:]):
        with pytest.raises(DataError, match="unsupported") as info:
            decode([_text(bad)], functions=["count_distinct"])
        assert info.value.obj == "online aggregate record"
        assert info.value.hint


def test_every_truncation_is_refused() -> None:
    raw = _raw(_one()[0])
    for cut in range(len(raw)):
        with pytest.raises(DataError, match="truncated"):
            decode([_text(raw), _text(raw[:cut])], functions=["count_distinct"])


def test_trailing_bytes_are_refused() -> None:
    raw = _raw(_one()[0])
    with pytest.raises(DataError, match="trailing"):
        decode([_text(raw + b"\x00")], functions=["count_distinct"])


def test_wrong_number_of_aggregations_is_refused() -> None:
    text = _one()[0]
    with pytest.raises(DataError, match="1 aggregations, the view 2"):
        decode([text], functions=["count_distinct", "count"])
    with pytest.raises(DataError, match="the view 0"):
        decode([text], functions=[])


def test_garbage_inside_a_record_is_refused() -> None:
    raw = _raw(_one()[0])
    dtype_at = 13 + 4  # head, m
    assert raw[dtype_at : dtype_at + 3] == b"\x02|O"
    offsets_at = dtype_at + 3 + 8 + 4 + 2 * 4 + 3  # dtype, pos, items: count, lengths, "a" "bc"
    assert raw[offsets_at : offsets_at + 20] == struct.pack("<Iqq", 2, 0, 2)

    def patched(at: int, new: bytes) -> str:
        return _text(raw[:at] + new + raw[at + len(new) :])

    cases = {
        "not base64": "A",
        "is not base64": "é",
        "bad dtype": patched(dtype_at, b"\x02|Q"),
        "one value per state": patched(offsets_at, struct.pack("<I", 3)),
        "inconsistent count_distinct offsets": patched(offsets_at + 12, struct.pack("<q", 1)),
        "not UTF-8": patched(offsets_at - 3, b"\xff"),
    }
    for message, text in cases.items():
        with pytest.raises(DataError, match=message):
            decode([text], functions=["count_distinct"])
    with pytest.raises(DataError, match="does not fit"):  # sum of strings
        decode([_text(raw)], functions=["sum"])


def test_unknown_function_is_a_definition_error() -> None:
    with pytest.raises(DefinitionError):
        decode([_one()[0]], functions=["median"])


def test_encode_refuses_slots_that_do_not_fit_the_entities() -> None:
    _, slots = _one()
    with pytest.raises(DataError, match="do not fit 2 entities"):
        encode(at_us=np.zeros(2, np.int64), slots=[slots])
    with pytest.raises(DataError, match="marks do not fit"):
        encode(at_us=np.zeros(1, np.int64), slots=[slots], marks=Marks.none(3))
