"""Online aggregate records: encoding, slot sizes, dtypes, and the edges a lookup
must get right (SEMANTICS: Windowed aggregations; engines/aggregate/online.py)."""

from __future__ import annotations

import base64
import math
from datetime import UTC, date, datetime

import numpy as np
import pytest

from featurestore.engines.aggregate.online import (
    AggregateReader,
    build_slots,
    decode_record,
    encode_records,
    evaluate,
)
from featurestore.engines.aggregate.spec import WindowSpec
from featurestore.errors import DataError, DefinitionError
from featurestore.stores.online.base import ReadRequest, WriteBatch
from featurestore.stores.online.memory import MemoryOnlineStore
from featurestore.stores.online.sqlite import SqliteOnlineStore

H = 10


def _array(values) -> np.ndarray:
    # Strings are object arrays in state.py (numpy's fixed-width "U" is refused).
    is_text = len(values) and isinstance(values[0], str)
    return np.array(values, dtype=object if is_text else None)


def _record(spec: WindowSpec, ets: list[int], values: list, *, at: int, valid=None) -> str:
    n = len(ets)
    slots = build_slots(
        spec,
        at_us=at,
        entities=np.zeros(n, np.int64),
        n_entities=1,
        event_ts=np.array(ets, np.int64),
        created_ts=np.array(ets, np.int64),
        values=None if values is None else _array(values),
        valid=valid,
    )
    (text,) = encode_records(at_us=at, slots=[slots], n_entities=1)
    return text


def _value(spec: WindowSpec, text: str | None, r: int):
    reader = AggregateReader((spec.function,), {"f": (0, spec, "float64")})
    at = None if text is None else decode_record(text, functions=[spec.function])[0]
    return reader.values([text], at_us=[at], request_us=r)["f"][0]


def test_tiles_keep_only_what_a_later_window_can_reach() -> None:
    spec = WindowSpec("sum", 3 * H, H)
    ets = list(range(1, 100))  # one event per microsecond
    text = _record(spec, ets, [1.0] * len(ets), at=95)
    _, ((pos, states),) = decode_record(text, functions=["sum"])
    # floor(95) = 90: windows ending at >= 90 reach tiles 6 (60, 70] .. 9 (90, 95]
    assert pos.tolist() == [6, 7, 8, 9]
    assert states.fields["n"].tolist() == [10, 10, 10, 5]
    assert _value(spec, text, 95) == 30.0  # (60, 90]
    assert _value(spec, text, 100) == 25.0  # (70, 100], events up to 95 only
    assert _value(spec, text, 130) is None  # (100, 130]: no known events


def test_lifetime_with_hop_folds_the_past_into_one_base_tile() -> None:
    spec = WindowSpec("count", None, H)
    text = _record(spec, [1, 5, 30, 50, 91, 93], [1, 1, 1, 1, 1, 1], at=93)
    _, ((pos, _),) = decode_record(text, functions=["count"])
    assert pos.tolist() == [8, 9]  # base (everything <= 90) and the open tile (90, 93]
    assert _value(spec, text, 93) == 4  # floored to 90
    assert _value(spec, text, 100) == 6


def test_window_without_hop_keeps_raw_events_and_edges_are_exclusive() -> None:
    spec = WindowSpec("count", 20, None)
    text = _record(spec, [0, 10, 11, 30], [1, 1, 1, 1], at=30)
    _, ((pos, _),) = decode_record(text, functions=["count"])
    assert pos.tolist() == [11, 30]  # (10, 30]
    assert _value(spec, text, 30) == 2
    assert _value(spec, text, 31) == 1  # (11, 31]: the event at 11 is out
    assert _value(spec, text, 10) == 2  # before T: answered as of T


def test_missing_record_counts_zero_and_others_are_null() -> None:
    assert _value(WindowSpec("count", 20), None, 5) == 0
    assert _value(WindowSpec("count_distinct", 20), None, 5) == 0
    assert _value(WindowSpec("max", 20), None, 5) is None


def test_strings_dates_nan_and_nulls_round_trip() -> None:
    spec = WindowSpec("max", None)
    text = _record(spec, [1, 2, 3], ["b", "zz", "ä"], at=3)
    assert _value(spec, text, 3) == "ä"
    first = WindowSpec("first", None)
    text = _record(first, [1, 2], ["x", "y"], at=3, valid=np.array([False, True]))
    assert _value(first, text, 3) == "y"
    text = _record(WindowSpec("mean", None), [1, 2], [1.0, math.nan], at=3)
    assert math.isnan(_value(WindowSpec("mean", None), text, 3))
    # dates come back as dates (states hold their physical days)
    days = np.array([date(2024, 1, 2).toordinal() - date(1970, 1, 1).toordinal()] * 2)
    text = _record(WindowSpec("min", None), [1, 2], days, at=3)
    reader = AggregateReader(("min",), {"d": (0, WindowSpec("min", None), "date")})
    assert reader.values([text], at_us=[3], request_us=3)["d"] == [date(2024, 1, 2)]
    reader = AggregateReader(("max",), {"d": (0, WindowSpec("max", None), "datetime")})
    text = _record(WindowSpec("max", None), [1], np.array([1_000_000]), at=3)
    assert reader.values([text], at_us=[3], request_us=3)["d"] == [
        datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
    ]


def test_many_entities_are_evaluated_in_one_fold() -> None:
    spec = WindowSpec("mean", 2 * H, H)
    ent = np.array([0, 1, 1, 2, 0])
    ets = np.array([5, 15, 18, 25, 19])
    slots = build_slots(
        spec,
        at_us=20,
        entities=ent,
        n_entities=4,
        event_ts=ets,
        created_ts=ets,
        values=np.array([1.0, 2.0, 4.0, 8.0, 3.0]),
    )
    records = encode_records(at_us=20, slots=[slots], n_entities=4)
    dec = [decode_record(t, functions=["mean"]) for t in records]
    vals, ok = evaluate(spec, [d[1][0] for d in dec], at_us=[20] * 4, request_us=20)
    assert ok.tolist() == [True, True, False, False]  # entity 2's event is after T
    assert vals[:2].tolist() == [2.0, 3.0]


def test_bad_records_and_specs_are_refused() -> None:
    text = _record(WindowSpec("sum", None), [1], [1.0], at=1)
    raw = bytearray(base64.b64decode(text))
    raw[2] = 99  # the version byte
    with pytest.raises(DataError, match="unsupported online aggregate record"):
        decode_record(base64.b64encode(bytes(raw)).decode(), functions=["sum"])
    with pytest.raises(DataError, match="aggregations"):
        decode_record(text, functions=["sum", "count"])
    with pytest.raises(DataError, match="truncated"):
        decode_record(base64.b64encode(base64.b64decode(text)[:-3]).decode(), functions=["sum"])
    with pytest.raises(DefinitionError, match="hop must divide"):
        build_slots(
            WindowSpec("sum", 25, H),
            at_us=1,
            entities=np.zeros(0, np.int64),
            n_entities=0,
            event_ts=np.zeros(0, np.int64),
            created_ts=np.zeros(0, np.int64),
            values=np.zeros(0),
        )


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_records_survive_the_online_stores(tmp_path, backend: str) -> None:
    from featurestore.stores.online.base import OnlineViewSchema

    schema = OnlineViewSchema.build(
        project="p", view="v", keys={"id": "int64"}, features={"_aggregates": "string"}
    )
    store = (
        MemoryOnlineStore()
        if backend == "memory"
        else SqliteOnlineStore(str(tmp_path / "online.db"))
    )
    spec = WindowSpec("last", None)
    text = _record(spec, [1, 2], ["a", "b"], at=2)
    store.write(
        schema,
        WriteBatch(
            keys={"id": [7]}, event_ts=[2], created_ts=[2], features={"_aggregates": [text]}
        ),
    )
    (res,) = store.read([ReadRequest(schema, {"id": [7]}, ["_aggregates"])])
    assert res.features["_aggregates"] == [text] and _value(spec, text, 2) == "b"
    store.close()
