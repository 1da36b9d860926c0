"""The Delta offline store's view API, on real Delta tables in tmp_path."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

from featurestore.errors import DataError, DefinitionError, OfflineStoreError, RequestError
from featurestore.stores.offline import DeltaOfflineStore, OfflineTableSpec

T0 = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
US = 1_000_000
DAY_US = 86_400 * US


def us(t: dt.datetime) -> int:
    return int((t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) / dt.timedelta(microseconds=1))


def spec_of(name: str = "driver_stats", **features: str) -> OfflineTableSpec:
    feats = features or {"trips": "int64", "rating": "float64"}
    return OfflineTableSpec(
        name=name,
        join_keys=("driver_id",),
        key_dtypes=("int64",),
        features=tuple(feats),
        feature_dtypes=tuple(feats.values()),
    )


def rows(n: int, *, days: int = 5, keys: int = 10, seed: int = 0, created_shift: int = 1):
    """n rows spread over ``days`` UTC days, unique on (key, event_ts, created_ts)."""
    step = days * DAY_US // max(n, 1)
    ev = [us(T0) + i * step + seed for i in range(n)]
    return pl.DataFrame(
        {
            "driver_id": [(i * 7 + seed) % keys for i in range(n)],
            "event_ts": pl.Series(ev).cast(pl.Datetime("us", "UTC")),
            "created_ts": pl.Series([e + created_shift for e in ev]).cast(pl.Datetime("us", "UTC")),
            "trips": [i * 3 for i in range(n)],
            "rating": [i / 7 for i in range(n)],
        }
    )


def sort_view(frame: pl.DataFrame, spec: OfflineTableSpec) -> pl.DataFrame:
    return frame.select(list(spec.dtypes)).sort(list(spec.sort_by))


def scanned_files(lf: pl.LazyFrame) -> int:
    """How many data files the optimised plan still reads (after partition and
    statistics pruning), from Polars' plan text."""
    plan = lf.explain()
    scans = re.findall(r"SCAN \[(.*?)\]\n", plan)
    assert scans, plan
    total = 0
    for listed in scans:
        total += listed.count(".parquet")
        more = re.search(r"(\d+) other sources", listed)
        total += int(more.group(1)) if more else 0
    return total


def data_files(table_dir: Path) -> list[Path]:
    return sorted(p for p in table_dir.rglob("*.parquet") if "_delta_log" not in p.parts)


def is_sorted_by(frame: pl.DataFrame, cols: list[str]) -> bool:
    return frame.equals(frame.sort(cols, maintain_order=True))


@pytest.fixture
def store(tmp_path: Path) -> DeltaOfflineStore:
    return DeltaOfflineStore(str(tmp_path / "offline"))


# --------------------------------------------------------------------------- round trips

EVERY_DTYPE = {
    "b": ("bool", pl.Series([True, None, False], dtype=pl.Boolean)),
    "i8": ("int8", pl.Series([-128, 127, None], dtype=pl.Int8)),
    "i16": ("int16", pl.Series([-(2**15), 2**15 - 1, None], dtype=pl.Int16)),
    "i32": ("int32", pl.Series([-(2**31), 2**31 - 1, None], dtype=pl.Int32)),
    "i64": ("int64", pl.Series([-(2**63), 2**63 - 1, None], dtype=pl.Int64)),
    "u8": ("uint8", pl.Series([0, 255, None], dtype=pl.UInt8)),
    "u16": ("uint16", pl.Series([0, 2**16 - 1, None], dtype=pl.UInt16)),
    "u32": ("uint32", pl.Series([0, 2**32 - 1, None], dtype=pl.UInt32)),
    "u64": ("uint64", pl.Series([0, 2**64 - 1, None], dtype=pl.UInt64)),
    "f32": ("float32", pl.Series([1.5, float("nan"), None], dtype=pl.Float32)),
    "f64": ("float64", pl.Series([-0.0, float("inf"), float("nan")], dtype=pl.Float64)),
    "s": ("string", pl.Series(["", "ünï €", None], dtype=pl.String)),
    "d": ("date", pl.Series([dt.date(1970, 1, 1), dt.date(2262, 4, 11), None])),
    "ts": ("datetime", pl.Series([T0, None, T0 + dt.timedelta(microseconds=1)])),
    "lu64": ("list[uint64]", pl.Series([[2**64 - 1, 0], [], None], dtype=pl.List(pl.UInt64))),
    "ls": ("list[string]", pl.Series([["a", None], None, ["b"]], dtype=pl.List(pl.String))),
    "lf": ("list[float64]", pl.Series([[1.0, float("nan")], [None], []])),
    "lts": ("list[datetime]", pl.Series([[T0], [], None], dtype=pl.List(pl.Datetime("us", "UTC")))),
    "ll": (
        "list[list[int8]]",
        pl.Series([[[1], []], None, [[None]]], dtype=pl.List(pl.List(pl.Int8))),
    ),
}


def test_every_dtype_round_trips_through_a_view_table(store: DeltaOfflineStore) -> None:
    spec = spec_of("all_types", **{c: d for c, (d, _) in EVERY_DTYPE.items()})
    frame = pl.DataFrame(
        {
            "driver_id": [1, 2, 3],
            "event_ts": [T0, T0 + dt.timedelta(days=1), T0 + dt.timedelta(days=2)],
            "created_ts": [T0, T0, T0],
            **{c: s for c, (_, s) in EVERY_DTYPE.items()},
        }
    )
    report = store.write_view(spec, frame, mode="append")
    # Version 0 is the empty table the first writer creates; version 1 holds the rows.
    assert (report.rows_written, report.duplicates_dropped, report.version) == (3, 0, 1)
    back = store.read_view(spec).collect()
    assert back.columns == list(spec.dtypes)
    assert_frame_equal(sort_view(back, spec), sort_view(frame, spec))
    # Merging the same rows back finds every value identical (NaN, -0.0, nulls, lists).
    again = store.write_view(spec, frame, mode="merge")
    assert (again.rows_written, again.rows_updated, again.version) == (0, 0, 1)
    # A real update rewrites (and re-sorts) the files: dtypes still round-trip.
    changed = frame.with_columns(pl.col("u64").reverse(), pl.col("lu64").reverse())
    update = store.write_view(spec, changed, mode="merge")
    assert (update.rows_written, update.rows_updated) == (0, 2)
    assert_frame_equal(sort_view(store.read_view(spec).collect(), spec), sort_view(changed, spec))


def test_uint64_keys_above_int64_filter_exactly(store: DeltaOfflineStore) -> None:
    spec = OfflineTableSpec(
        name="big_keys",
        join_keys=("id",),
        key_dtypes=("uint64",),
        features=("x",),
        feature_dtypes=("int64",),
    )
    ids = [2**64 - 1, 2**63, 2**63 - 1, 2**53 + 1, 0]
    for i, key in enumerate(ids):  # one file each, so statistics decide the skipping
        frame = pl.DataFrame(
            {
                "id": pl.Series([key], dtype=pl.UInt64),
                "event_ts": [T0],
                "created_ts": [T0],
                "x": [i],
            }
        )
        store.write_view(spec, frame, mode="append")
    for i, key in enumerate(ids):
        lf = store.read_view(spec, keys=pl.DataFrame({"id": pl.Series([key], dtype=pl.UInt64)}))
        got = lf.collect()
        assert got["id"].to_list() == [key]
        assert got["x"].to_list() == [i]
        assert scanned_files(lf) == 1
    # A merge rewrites the partition into one file, re-sorted in unsigned key order.
    current = store.read_view(spec).collect()
    merged = store.write_view(spec, current.with_columns(x=-pl.col("x") - 1), mode="merge")
    assert merged.rows_updated == 5
    (resorted,) = DeltaTable(store.table_uri(spec.name)).file_uris()
    assert pl.read_parquet(resorted)["id"].reinterpret(signed=False).to_list() == sorted(ids)
    got = store.read_view(spec, keys=pl.DataFrame({"id": pl.Series(ids[:2], dtype=pl.UInt64)}))
    assert sorted(got.collect()["x"].to_list()) == [-2, -1]


# --------------------------------------------------------------------------- layout


def test_partitioned_by_event_date_and_every_file_sorted(
    store: DeltaOfflineStore, tmp_path: Path
) -> None:
    spec = spec_of()
    frame = rows(3_000, days=4).sample(fraction=1.0, shuffle=True, seed=1)
    store.write_view(spec, frame, mode="append")
    table = DeltaTable(store.table_uri(spec.name))
    assert table.metadata().partition_columns == ["event_date"]
    files = data_files(tmp_path / "offline" / spec.name)
    assert len(files) == 4
    for path in files:
        day = dt.date.fromisoformat(re.search(r"event_date=([\d-]+)", str(path)).group(1))
        part = pl.read_parquet(path)
        assert set(part["event_ts"].dt.date().to_list()) == {day}
        assert is_sorted_by(part, list(spec.sort_by))


def test_utc_conversion_of_other_zones_and_units(store: DeltaOfflineStore) -> None:
    spec = spec_of()
    frame = rows(4, days=1)
    paris = frame.with_columns(
        pl.col("event_ts").dt.convert_time_zone("Europe/Paris").dt.cast_time_unit("ns"),
        pl.col("created_ts").dt.convert_time_zone("America/New_York").dt.cast_time_unit("ms"),
    )
    store.write_view(spec, paris, mode="append")
    back = store.read_view(spec).collect()
    assert back.schema["event_ts"] == pl.Datetime("us", "UTC")
    expected = frame.with_columns(pl.col("created_ts").dt.truncate("1ms"))
    assert_frame_equal(sort_view(back, spec), sort_view(expected, spec))


# --------------------------------------------------------------------------- semantics


def test_ties_keep_the_last_row_in_source_order_and_are_counted(store: DeltaOfflineStore) -> None:
    spec = spec_of()
    base = rows(6, days=1)
    tie_a = base[2].with_columns(trips=pl.lit(1000, pl.Int64))
    tie_b = base[2].with_columns(trips=pl.lit(2000, pl.Int64))
    frame = pl.concat([base, tie_a, base[4], tie_b])  # 3 extra rows: 2 ties of row 2, 1 of row 4
    report = store.write_view(spec, frame, mode="append")
    assert report.duplicates_dropped == 3
    assert report.rows_written == 6
    back = store.read_view(spec).collect()
    key = base[2].select("driver_id", "event_ts", "created_ts")
    assert back.join(key, on=key.columns)["trips"].to_list() == [2000]


def test_same_event_ts_with_other_created_ts_is_not_a_tie(store: DeltaOfflineStore) -> None:
    spec = spec_of()
    one = rows(1, days=1)
    later = one.with_columns(
        pl.col("created_ts") + dt.timedelta(seconds=1), trips=pl.lit(9, pl.Int64)
    )
    report = store.write_view(spec, pl.concat([one, later]), mode="merge")
    assert (report.rows_written, report.duplicates_dropped) == (2, 0)


def test_null_keys_are_dropped_and_counted(store: DeltaOfflineStore) -> None:
    spec = spec_of()
    frame = rows(5, days=1).with_columns(
        pl.when(pl.int_range(pl.len()) < 2)
        .then(None)
        .otherwise(pl.col("driver_id"))
        .alias("driver_id")
    )
    report = store.write_view(spec, frame, mode="merge")
    assert (report.rows_written, report.null_keys_dropped) == (3, 2)
    assert store.read_view(spec).collect()["driver_id"].null_count() == 0


def test_merge_is_idempotent_and_upserts(store: DeltaOfflineStore) -> None:
    spec = spec_of()
    source = rows(2_000, days=10)
    first = store.write_view(spec, source, mode="merge")
    assert (first.rows_written, first.rows_updated) == (2_000, 0)
    before = sort_view(store.read_view(spec).collect(), spec)

    again = store.write_view(spec, source, mode="merge")
    assert (again.rows_written, again.rows_updated, again.version) == (0, 0, first.version)
    assert_frame_equal(sort_view(store.read_view(spec).collect(), spec), before)

    # Correct 100 rows and add 50 new ones: 100 updates, 50 inserts, nothing else moves.
    fixed = source[:100].with_columns(pl.col("rating") + 1)
    new = rows(50, days=1, seed=13)
    third = store.write_view(spec, pl.concat([fixed, new]), mode="merge")
    assert (third.rows_written, third.rows_updated) == (50, 100)
    after = sort_view(store.read_view(spec).collect(), spec)
    expected = sort_view(pl.concat([fixed, source[100:], new]), spec)
    assert_frame_equal(after, expected)
    assert after.height == 2_050


def test_merge_rewrites_only_the_batch_dates_and_keeps_files_sorted(
    store: DeltaOfflineStore, tmp_path: Path
) -> None:
    spec = spec_of()
    source = rows(5_000, days=10, keys=50)
    store.write_view(spec, source, mode="append")
    table_dir = tmp_path / "offline" / spec.name
    files_before = set(data_files(table_dir))

    day3 = source.filter(pl.col("event_ts").dt.date() == dt.date(2024, 3, 4))
    batch = pl.concat(
        [day3.sample(50, seed=2).with_columns(trips=pl.lit(-1, pl.Int64)), rows(30, days=1, seed=5)]
    )
    batch = batch.filter(pl.col("event_ts").dt.date() == dt.date(2024, 3, 4))
    report = store.write_view(spec, batch, mode="merge")
    assert report.rows_updated == 50

    live = {Path(p) for p in DeltaTable(str(table_dir)).file_uris()}
    replaced = files_before - live
    assert len(replaced) == 1
    assert "event_date=2024-03-04" in str(next(iter(replaced)))
    for path in live:
        assert is_sorted_by(pl.read_parquet(path), list(spec.sort_by)), path
    merge_ops = [h for h in store.history(spec.name) if h["operation"] == "MERGE"]
    metrics = merge_ops[0]["operationMetrics"]
    assert metrics["num_target_files_skipped_during_scan"] == 9


def test_a_merge_killed_before_its_sort_rewrite_is_healed_by_the_rerun(
    store: DeltaOfflineStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer dying between the MERGE commit and the sorted rewrite leaves a date in
    several unsorted files; re-running the same merge (which inserts nothing) sorts it."""
    from featurestore.stores.offline import _rewrite

    spec = spec_of()
    store.write_view(spec, rows(2_000, days=4, keys=50), mode="append")
    batch = rows(300, days=1, keys=50, seed=7)

    def killed(*args, **kwargs):  # fault injection: the process dies right here
        raise KeyboardInterrupt

    real = _rewrite.rewrite_sorted
    monkeypatch.setattr(_rewrite, "rewrite_sorted", killed)
    with pytest.raises(KeyboardInterrupt):
        store.write_view(spec, batch, mode="merge")
    table_dir = tmp_path / "offline" / spec.name
    day = table_dir / "event_date=2024-03-01"
    assert len([p for p in DeltaTable(str(table_dir)).file_uris() if str(day) in p]) > 1

    monkeypatch.setattr(_rewrite, "rewrite_sorted", real)
    again = store.write_view(spec, batch, mode="merge")
    assert (again.rows_written, again.rows_updated) == (0, 0)
    live = [p for p in DeltaTable(str(table_dir)).file_uris() if str(day) in p]
    assert len(live) == 1
    assert is_sorted_by(pl.read_parquet(live[0]), list(spec.sort_by))


# --------------------------------------------------------------------------- reads


def test_version_pinning_reads_older_versions(store: DeltaOfflineStore) -> None:
    spec = spec_of()
    batches = [rows(100, days=2, seed=s) for s in (0, 1, 2)]
    for b in batches:
        store.write_view(spec, b, mode="append")
    assert store.version(spec.name) == 3  # version 0: the table created empty
    assert store.read_view(spec, version=0).collect().height == 0
    for v in range(1, 4):
        got = store.read_view(spec, version=v).collect()
        assert_frame_equal(sort_view(got, spec), sort_view(pl.concat(batches[:v]), spec))
    with pytest.raises(OfflineStoreError, match=r"has no version 4.*Versions run from 0 to 3"):
        store.read_view(spec, version=4)


def test_read_pins_the_version_current_at_call_time(store: DeltaOfflineStore) -> None:
    spec = spec_of()
    store.write_view(spec, rows(10), mode="append")
    lf = store.read_view(spec)
    store.write_view(spec, rows(10, seed=3), mode="append")
    assert lf.collect().height == 10


def test_time_range_returns_exact_rows_and_skips_files(store: DeltaOfflineStore) -> None:
    spec = spec_of()
    source = rows(10_000, days=20)
    store.write_view(spec, source, mode="append")
    total = scanned_files(store.read_view(spec))
    assert total == 20

    start = us(T0) + 5 * DAY_US + 3_600 * US
    end = us(T0) + 8 * DAY_US  # midnight: day 8 must not be opened
    lf = store.read_view(spec, start_us=start, end_us=end)
    got = lf.collect()
    ev = pl.col("event_ts").dt.epoch("us")
    expected = source.filter(ev >= start, ev < end)
    assert_frame_equal(sort_view(got, spec), sort_view(expected, spec))
    assert got.height > 0
    assert scanned_files(lf) == 3  # days 5, 6 and 7 of 20

    edge = store.read_view(
        spec, start_us=us(source["event_ts"][0]), end_us=us(source["event_ts"][0]) + 1
    )
    assert edge.collect().height == 1


def test_key_filter_returns_exact_rows_and_skips_files(store: DeltaOfflineStore) -> None:
    spec = spec_of()
    for part in range(4):  # four appends with disjoint key ranges on the same dates
        batch = rows(400, days=2, keys=100).with_columns(pl.col("driver_id") + part * 1_000)
        store.write_view(spec, batch, mode="append")
    everything = store.read_view(spec).collect()
    wanted = pl.DataFrame({"driver_id": pl.Series([1_003, 1_010, 1_010, None], dtype=pl.Int32)})
    lf = store.read_view(spec, keys=wanted)
    got = lf.collect()
    expected = everything.filter(pl.col("driver_id").is_in([1_003, 1_010]))
    assert_frame_equal(sort_view(got, spec), sort_view(expected, spec))
    assert got.height > 0
    assert scanned_files(store.read_view(spec)) == 8
    assert scanned_files(lf) == 2  # one append's files, two dates


def test_compound_keys_match_exact_combinations(store: DeltaOfflineStore) -> None:
    spec = OfflineTableSpec(
        name="pairs",
        join_keys=("a", "b"),
        key_dtypes=("string", "int32"),
        features=("v",),
        feature_dtypes=("float64",),
    )
    frame = pl.DataFrame(
        {
            "a": ["x", "x", "y", "y"],
            "b": [1, 2, 1, 2],
            "event_ts": [T0] * 4,
            "created_ts": [T0] * 4,
            "v": [1.0, 2.0, 3.0, 4.0],
        },
        schema_overrides={"b": pl.Int32},
    )
    store.write_view(spec, frame, mode="append")
    got = store.read_view(spec, keys=pl.DataFrame({"a": ["x", "y"], "b": [2, 1]}), columns=["v"])
    assert sorted(got.collect()["v"].to_list()) == [2.0, 3.0]


def test_columns_selection_and_unknown_column(store: DeltaOfflineStore) -> None:
    spec = spec_of()
    store.write_view(spec, rows(10), mode="append")
    got = store.read_view(spec, columns=["rating", "event_date"]).collect()
    assert got.columns == ["rating", "event_date"]
    assert got.schema["event_date"] == pl.Date
    with pytest.raises(RequestError, match=r"field nope.*Choose from driver_id"):
        store.read_view(spec, columns=["nope"])


def test_reading_a_missing_table_says_what_to_do(store: DeltaOfflineStore) -> None:
    assert store.version("ghost") is None
    assert store.history("ghost") == []
    assert not store.exists("ghost")
    with pytest.raises(OfflineStoreError, match=r"'ghost'.*no offline table.*Materialize"):
        store.read_view(spec_of("ghost"))


# --------------------------------------------------------------------------- rejected input


def test_naive_timestamp_rejected_naming_view_and_column(store: DeltaOfflineStore) -> None:
    spec = spec_of()
    frame = rows(3).with_columns(pl.col("created_ts").dt.replace_time_zone(None))
    with pytest.raises(DataError) as info:
        store.write_view(spec, frame, mode="append")
    text = str(info.value)
    assert "driver_stats" in text and "created_ts" in text and "naive" in text
    assert "replace_time_zone('UTC')" in text
    assert not store.exists(spec.name)


def test_naive_datetime_feature_rejected(store: DeltaOfflineStore) -> None:
    spec = spec_of(seen="datetime", hist="list[datetime]")
    base = rows(2).select("driver_id", "event_ts", "created_ts")
    aware = base.with_columns(seen=pl.col("event_ts"), hist=pl.concat_list("event_ts"))
    store.write_view(spec, aware, mode="append")
    for col in ("seen", "hist"):
        naive = aware.with_columns(
            pl.col(col).dt.replace_time_zone(None)
            if col == "seen"
            else pl.col(col).list.eval(pl.element().dt.replace_time_zone(None))
        )
        with pytest.raises(DataError, match=f"field {col}.*naive"):
            store.write_view(spec, naive, mode="append")


def test_wrong_dtype_rejected_naming_found_and_expected(store: DeltaOfflineStore) -> None:
    spec = spec_of()
    frame = rows(3).with_columns(pl.col("trips").cast(pl.String))
    with pytest.raises(DataError) as info:
        store.write_view(spec, frame, mode="append")
    text = str(info.value)
    for part in ("driver_stats", "field trips", "string", "int64", "cast"):
        assert part in text, text
    narrowing = rows(3).with_columns(pl.col("trips").cast(pl.UInt64))
    with pytest.raises(DataError, match="dtype uint64 but the view declares int64"):
        store.write_view(spec, narrowing, mode="append")


def test_lossless_widening_and_all_null_columns_are_cast(store: DeltaOfflineStore) -> None:
    spec = spec_of()
    frame = rows(3).with_columns(pl.col("trips").cast(pl.Int16), rating=pl.lit(None))
    store.write_view(spec, frame, mode="append")
    back = store.read_view(spec).collect()
    assert back.schema["trips"] == pl.Int64 and back.schema["rating"] == pl.Float64
    assert back["rating"].null_count() == 3


def test_missing_column_and_null_timestamps_rejected(store: DeltaOfflineStore) -> None:
    spec = spec_of()
    with pytest.raises(DataError, match=r"lacks column.*'rating'.*the frame has"):
        store.write_view(spec, rows(3).drop("rating"), mode="append")
    nulls = rows(3).with_columns(event_ts=pl.lit(None, pl.Datetime("us", "UTC")))
    with pytest.raises(DataError, match=r"field event_ts.*3 row.*null timestamp"):
        store.write_view(spec, nulls, mode="merge")
    with pytest.raises(DataError, match="timestamp column has dtype"):
        store.write_view(
            spec, rows(3).with_columns(pl.col("event_ts").cast(pl.Int64)), mode="append"
        )


def test_invalid_specs_and_names_rejected(store: DeltaOfflineStore) -> None:
    with pytest.raises(DefinitionError, match="reserves"):
        spec_of(event_date="date")
    with pytest.raises(DefinitionError, match="unsupported dtype"):
        spec_of(x="complex")
    with pytest.raises(OfflineStoreError, match="not a valid table name"):
        store.table_uri("../escape")
    with pytest.raises(OfflineStoreError, match="unknown write mode"):
        store.write_view(spec_of(), rows(1), mode="upsert")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- schema changes


def test_new_feature_is_added_and_old_rows_read_null(store: DeltaOfflineStore) -> None:
    old = spec_of()
    store.write_view(old, rows(10), mode="append")
    new = spec_of(trips="int64", rating="float64", tips="float32")
    assert store.read_view(new).collect()["tips"].null_count() == 10
    more = rows(5, seed=9).with_columns(tips=pl.lit(1.5, pl.Float32))
    store.write_view(new, more, mode="append")
    store.write_view(new, more.with_columns(tips=pl.lit(2.5, pl.Float32)), mode="merge")
    back = store.read_view(new).collect()
    assert back["tips"].null_count() == 10
    assert back["tips"].drop_nulls().to_list() == [2.5] * 5
    # Dropping the feature again: the stored column stays, new rows get null there.
    store.write_view(old, rows(3, seed=20), mode="append")
    assert store.read_view(new).collect().height == 18


def test_changed_dtype_needs_a_new_table(store: DeltaOfflineStore) -> None:
    store.write_view(spec_of(), rows(3), mode="append")
    changed = spec_of(trips="string", rating="float64")
    with pytest.raises(
        OfflineStoreError, match=r"stores this column as int64.*declares string.*new name"
    ):
        store.write_view(
            changed, rows(3).with_columns(pl.col("trips").cast(pl.String)), mode="merge"
        )


def test_empty_batch_creates_table_then_commits_nothing(store: DeltaOfflineStore) -> None:
    spec = spec_of()
    first = store.write_view(spec, rows(0), mode="merge")
    assert first.version == 0 and store.read_view(spec).collect().height == 0
    assert store.write_view(spec, rows(0), mode="append").version == 0


# --------------------------------------------------------------------------- maintenance


def test_compact_merges_small_files_sorted_and_vacuum_frees_them(
    store: DeltaOfflineStore, tmp_path: Path
) -> None:
    spec = spec_of()
    batches = [rows(200, days=2, seed=s, keys=30) for s in range(5)]
    for b in batches:
        store.write_view(spec, b, mode="append")
    table_dir = tmp_path / "offline" / spec.name
    assert len(DeltaTable(str(table_dir)).file_uris()) == 10
    before = sort_view(store.read_view(spec).collect(), spec)

    result = store.compact(spec.name)
    assert result["partitions_rewritten"] == 2
    live = DeltaTable(str(table_dir)).file_uris()
    assert len(live) == 2
    for path in live:
        assert is_sorted_by(pl.read_parquet(path), list(spec.sort_by))
    assert_frame_equal(sort_view(store.read_view(spec).collect(), spec), before)

    assert len(data_files(table_dir)) == 12
    removed = store.vacuum(spec.name, retention_hours=0)
    assert len(removed) == 10
    assert len(data_files(table_dir)) == 2
    assert_frame_equal(sort_view(store.read_view(spec).collect(), spec), before)


def test_commit_conflicts_are_retried_then_reported_retryable(
    store: DeltaOfflineStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deltalake.exceptions import CommitFailedError

    from featurestore.stores.offline import _views, delta

    spec = spec_of()
    store.write_view(spec, rows(5), mode="append")
    calls = 0
    real = _views.write_deltalake

    def flaky(*args, **kwargs):  # fault injection: lose the first two commit races
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise CommitFailedError("simulated concurrent commit")
        return real(*args, **kwargs)

    monkeypatch.setattr(_views, "write_deltalake", flaky)
    monkeypatch.setattr(delta.time, "sleep", lambda _s: None)
    report = store.write_view(spec, rows(5, seed=1), mode="append")
    assert calls == 3 and report.rows_written == 5 and report.version == 2

    def always(*args, **kwargs):
        raise CommitFailedError("simulated concurrent commit")

    monkeypatch.setattr(_views, "write_deltalake", always)
    with pytest.raises(OfflineStoreError, match="lost 6 commit races") as info:
        store.write_view(spec, rows(5, seed=2), mode="append")
    assert info.value.retryable and info.value.to_dict()["retryable"] is True
    assert store.version(spec.name) == 2


def test_tables_cannot_nest(store: DeltaOfflineStore) -> None:
    store.write_view(spec_of("datasets"), rows(2), mode="append")
    with pytest.raises(OfflineStoreError, match="inside the table 'datasets'"):
        store.write_table("datasets/train", rows(2), mode="overwrite")
    store.write_table("logs/served", rows(2), mode="overwrite")
    with pytest.raises(OfflineStoreError, match="would contain the existing table"):
        store.write_view(spec_of("logs"), rows(2), mode="append")


def test_remote_uri_layout() -> None:
    remote = DeltaOfflineStore("s3://bucket/prefix/", storage_options={"AWS_REGION": "x"})
    assert remote.table_uri("driver_stats") == "s3://bucket/prefix/driver_stats"
    assert remote.table_uri("datasets/train") == "s3://bucket/prefix/datasets/train"
    assert remote.storage_options == {"AWS_REGION": "x"}
    assert os.path.isabs(DeltaOfflineStore("rel/dir").table_uri("v"))
