"""An aggregated view's table is an event log (SEMANTICS: events are a log).

Every source row stays, ties on (keys, event_ts, created_ts) included. Backfills
replace a time range, so re-runs, overlapping ranges, corrections and appends all leave
exactly the source's rows; stream rows carry their Kafka record id, so a replayed record
adds nothing while two records with equal contents both stay.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from featurestore.errors import DataError
from featurestore.stores.offline import DeltaOfflineStore, OfflineTableSpec
from featurestore.stores.offline.spec import RECORD_ID
from tests.unit.stores.test_offline_delta import (
    DAY_US,
    T0,
    data_files,
    is_sorted_by,
    rows,
    spec_of,
    us,
)

H_US = 3_600_000_000


def log_spec(name: str = "trips_log") -> OfflineTableSpec:
    return dataclasses.replace(spec_of(name), event_log=True)


def canon(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows as a multiset: every column, sorted on all of them."""
    cols = ["driver_id", "event_ts", "created_ts", "trips", "rating"]
    return frame.select(cols).sort(cols)


def source_log(seed: int = 0) -> pl.DataFrame:
    """Ten days of events with exact duplicates, same-timestamp events of one key with
    other values, and events on the midnight edges."""
    base = rows(400, days=10, keys=7, seed=seed)
    dup = base.filter(pl.int_range(pl.len()) % 5 == 0)  # exact copies
    same_ts = base.filter(pl.int_range(pl.len()) % 7 == 0).with_columns(
        pl.col("trips") + 1000, pl.col("rating") * 2
    )
    midnight = pl.Series([us(T0) + d * DAY_US for d in range(1, 10)]).cast(pl.Datetime("us", "UTC"))
    edges = pl.DataFrame(
        {
            "driver_id": [3] * 9 * 2,
            "event_ts": pl.concat([midnight, midnight]),
            "created_ts": pl.concat([midnight, midnight]),
            "trips": [7] * 18,
            "rating": [0.5] * 18,
        }
    )
    return pl.concat([base, dup, same_ts, edges])


def in_range(frame: pl.DataFrame, lo: int, hi: int) -> pl.DataFrame:
    t = pl.col("event_ts").dt.epoch("us")
    return frame.filter((t >= lo) & (t < hi))


@pytest.fixture
def store(tmp_path: Path) -> DeltaOfflineStore:
    return DeltaOfflineStore(str(tmp_path / "offline"))


def test_ties_are_kept_in_an_event_log_and_dropped_in_a_plain_view(
    store: DeltaOfflineStore,
) -> None:
    src = source_log()
    lo, hi = us(T0), us(T0) + 11 * DAY_US
    logged = store.write_view(log_spec(), src, mode="replace", time_range=(lo, hi))
    assert (logged.rows_written, logged.duplicates_dropped) == (src.height, 0)
    assert canon(store.read_view(log_spec()).collect()).equals(canon(src))

    plain = store.write_view(spec_of(), src, mode="merge")
    distinct = src.unique(["driver_id", "event_ts", "created_ts"]).height
    assert plain.duplicates_dropped == src.height - distinct > 0
    assert store.read_view(spec_of()).collect().height == distinct


def test_replaying_the_same_range_commits_nothing(store: DeltaOfflineStore) -> None:
    spec, src = log_spec(), source_log()
    lo, hi = us(T0), us(T0) + 11 * DAY_US
    first = store.write_view(spec, src, mode="replace", time_range=(lo, hi))
    again = store.write_view(spec, src.reverse(), mode="replace", time_range=(lo, hi))
    assert (again.rows_written, again.rows_replaced, again.version) == (0, 0, first.version)
    assert canon(store.read_view(spec).collect()).equals(canon(src))


def test_overlapping_ranges_corrections_and_appends_leave_the_source_rows_once(
    store: DeltaOfflineStore,
) -> None:
    spec, src = log_spec(), source_log()
    t0 = us(T0)
    # Ranges cut mid-day, overlapping: each write replaces exactly its range.
    ranges = [(t0, t0 + 4 * DAY_US + 5 * H_US), (t0 + 2 * DAY_US + 7 * H_US, t0 + 11 * DAY_US)]
    for lo, hi in ranges:
        store.write_view(spec, in_range(src, lo, hi), mode="replace", time_range=(lo, hi))
    assert canon(store.read_view(spec).collect()).equals(canon(src))

    # A late correction: one row's value changes, one row is deleted at the source.
    fixed = src.with_columns(
        pl.when(pl.int_range(pl.len()) == 10).then(-1).otherwise(pl.col("trips")).alias("trips")
    ).filter(pl.int_range(pl.len()) != 11)
    lo, hi = t0, t0 + 11 * DAY_US
    report = store.write_view(spec, fixed, mode="replace", time_range=(lo, hi))
    assert report.rows_replaced == src.height and report.rows_written == fixed.height
    assert canon(store.read_view(spec).collect()).equals(canon(fixed))

    # An append at the source, then a backfill of just the new range.
    late = rows(50, days=1, keys=7, seed=5).with_columns(
        pl.col("event_ts") + dt.timedelta(days=12), pl.col("created_ts") + dt.timedelta(days=12)
    )
    lo, hi = t0 + 12 * DAY_US, t0 + 13 * DAY_US
    store.write_view(spec, late, mode="replace", time_range=(lo, hi))
    assert canon(store.read_view(spec).collect()).equals(canon(pl.concat([fixed, late])))


def test_replace_keeps_rows_of_the_edge_dates_outside_the_range_and_files_sorted(
    store: DeltaOfflineStore, tmp_path: Path
) -> None:
    spec, src = log_spec(), source_log()
    store.write_view(spec, src, mode="replace", time_range=(us(T0), us(T0) + 11 * DAY_US))
    lo, hi = us(T0) + 3 * DAY_US + 6 * H_US, us(T0) + 5 * DAY_US + 18 * H_US
    report = store.write_view(spec, in_range(src, lo, hi), mode="replace", time_range=(lo, hi))
    assert report.rows_written == 0  # the same rows: nothing to commit
    store.write_view(spec, in_range(src, lo, hi).head(3), mode="replace", time_range=(lo, hi))
    outside = pl.concat([in_range(src, us(T0), lo), in_range(src, hi, us(T0) + 11 * DAY_US)])
    expected = pl.concat([outside, in_range(src, lo, hi).head(3)])
    assert canon(store.read_view(spec).collect()).equals(canon(expected))
    for path in data_files(tmp_path / "offline" / spec.name):
        assert is_sorted_by(pl.read_parquet(path), list(spec.sort_by))


def test_replace_refuses_rows_outside_its_range(store: DeltaOfflineStore) -> None:
    src = source_log()
    with pytest.raises(DataError, match=r"row\(s\) fall outside the range") as info:
        store.write_view(log_spec(), src, mode="replace", time_range=(us(T0), us(T0) + DAY_US))
    assert info.value.field == "event_ts"
    assert not store.exists("trips_log")


def test_a_merge_recognises_records_by_id_and_keeps_equal_contents(
    store: DeltaOfflineStore,
) -> None:
    spec = log_spec()
    one = rows(6, days=1, keys=2).with_columns(
        pl.format("orders/0/{}", pl.int_range(pl.len())).alias(RECORD_ID)
    )
    resent = one.head(1).with_columns(pl.lit("orders/1/99").alias(RECORD_ID))  # equal contents
    store.write_view(spec, one, mode="append")
    replay = store.write_view(spec, pl.concat([one, resent]), mode="merge")
    assert replay.rows_written == 1  # only the second record of the resent event
    stored = store.read_view(spec, columns=[*spec.dtypes, RECORD_ID]).collect()
    assert stored.height == 7 and stored[RECORD_ID].n_unique() == 7
    with pytest.raises(DataError, match="no _record_id") as info:
        store.write_view(spec, rows(3, days=1), mode="merge")
    assert info.value.field == RECORD_ID


def test_plain_view_tables_do_not_get_a_record_id(store: DeltaOfflineStore) -> None:
    store.write_view(spec_of(), rows(5), mode="merge")
    table = DeltaTable(store.table_uri("driver_stats"))
    assert RECORD_ID not in table.schema().to_arrow().names


# ----------------------------------------------------------------- real processes

RACER = """
import sys, time, os
import dataclasses
import polars as pl
from featurestore.stores.offline import DeltaOfflineStore, OfflineTableSpec
root, mode, go = sys.argv[1], sys.argv[2], sys.argv[3]
spec = OfflineTableSpec(name="v", join_keys=("k",), key_dtypes=("int64",),
                        features=("x",), feature_dtypes=("float64",), event_log=mode == "replace")
t0 = 1_709_251_200_000_000
i = pl.int_range(20_000, eager=True)
ts = (t0 + (i // 2) * 17_000_000).cast(pl.Datetime("us", "UTC"))  # every event twice
frame = pl.DataFrame({"k": (i // 2) % 97, "event_ts": ts, "created_ts": ts, "x": (i // 2) * 0.5})
store = DeltaOfflineStore(root)
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.001)
if mode == "replace":
    store.write_view(spec, frame, mode="replace", time_range=(t0, t0 + 10 * 86_400_000_000))
else:
    store.write_view(spec, frame, mode="merge")
print("done", flush=True)
"""


@pytest.mark.parametrize("mode", ["replace", "merge"])
def test_two_processes_creating_the_table_at_once_store_each_row_once(
    tmp_path: Path, mode: str
) -> None:
    """Both writers find no table; exactly one creates it and both writes land as if
    in sequence (the issue's repro duplicated every row in 5 of 6 tries)."""
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    for attempt in range(3):
        root, go = tmp_path / f"offline{attempt}", tmp_path / f"go{attempt}"
        procs = [
            subprocess.Popen(
                [sys.executable, str(script), str(root), mode, str(go)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        go.touch()
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        table = DeltaOfflineStore(str(root))
        spec = OfflineTableSpec(
            name="v",
            join_keys=("k",),
            key_dtypes=("int64",),
            features=("x",),
            feature_dtypes=("float64",),
            event_log=mode == "replace",
        )
        got = table.read_view(spec).collect()
        # An event log keeps both copies of every event; a plain view one per tie.
        assert got.height == (20_000 if mode == "replace" else 10_000)


def test_a_replace_killed_while_writing_leaves_the_previous_version(tmp_path: Path) -> None:
    root = tmp_path / "offline"
    store = DeltaOfflineStore(str(root))
    spec = log_spec()
    src = source_log()
    lo, hi = us(T0), us(T0) + 11 * DAY_US
    store.write_view(spec, src, mode="replace", time_range=(lo, hi))
    version = store.version(spec.name)
    table_dir = root / spec.name
    before_files = set(data_files(table_dir))
    script = tmp_path / "big_replace.py"
    script.write_text(
        f"""
import dataclasses, polars as pl
from featurestore.stores.offline import DeltaOfflineStore, OfflineTableSpec
spec = OfflineTableSpec(name={spec.name!r}, join_keys=("driver_id",), key_dtypes=("int64",),
    features=("trips", "rating"), feature_dtypes=("int64", "float64"), event_log=True)
n = 3_000_000
i = pl.int_range(n, eager=True)
ts = ({lo} + i * ({hi - lo} // n)).cast(pl.Datetime("us", "UTC"))
frame = pl.DataFrame({{"driver_id": i % 1000, "event_ts": ts, "created_ts": ts,
                      "trips": i, "rating": i * 0.5}})
print("ready", flush=True)
DeltaOfflineStore({str(root)!r}).write_view(spec, frame, mode="replace", time_range=({lo}, {hi}))
print("committed", flush=True)
"""
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p not in before_files for p in table_dir.rglob("*.parquet*")):
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.001)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the writer finished before it could be killed"
    assert store.version(spec.name) == version
    assert canon(store.read_view(spec).collect()).equals(canon(src))
