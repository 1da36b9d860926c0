"""The executor seam: the stable key hash, the local executor, and the write protocol
(tasks write files, the driver commits once) on real Delta tables in a temp dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError

from featurestore.engines.executor import LocalExecutor, make_executor, partition_ids, split_by_key
from featurestore.engines.executor.commit import TableTarget, run_write_job
from featurestore.engines.executor.partition import ROW, fnv1a64, key_hash, splitmix64
from featurestore.errors import DataError, DefinitionError, OfflineStoreError, RequestError


def test_fnv1a64_matches_the_published_test_vectors():
    got = fnv1a64(pa.array(["", "a", "foobar"]))
    assert [int(h) for h in got] == [0xCBF29CE484222325, 0xAF63DC4C8601EC8C, 0x85944171F73967E8]


def test_splitmix64_matches_the_reference_generator():
    # splitmix64 seeded with 0: its state advances by the golden gamma each step.
    states = np.array([0, 0x9E3779B97F4A7C15], dtype=np.uint64)
    assert [int(h) for h in splitmix64(states)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]


def test_partitions_are_pinned_and_do_not_depend_on_the_process_hash_seed(tmp_path):
    frame = pl.DataFrame({"s": ["driver-1", "driver-2", "ü", None], "n": [1, -1, 2**40, None]})
    pinned = [int(p) for p in partition_ids(frame, ["s", "n"], 7)]
    script = (
        "import polars as pl\n"
        "from featurestore.engines.executor import partition_ids\n"
        "f = pl.DataFrame({'s': ['driver-1', 'driver-2', 'ü', None],"
        " 'n': [1, -1, 2**40, None]})\n"
        "print([int(p) for p in partition_ids(f, ['s', 'n'], 7)])\n"
    )
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(out.stdout) == pinned
    # Golden: a change of the hash re-partitions every stored job; it must be deliberate.
    assert pinned == [int(p) for p in partition_ids(frame, ["s", "n"], 7)]
    assert key_hash(frame.head(1), ["s", "n"]).tolist() == key_hash(frame, ["s", "n"])[:1].tolist()


def test_every_row_of_a_key_lands_in_one_partition_and_keys_spread():
    rng = np.random.default_rng(1)
    frame = pl.DataFrame(
        {
            "id": rng.integers(0, 5_000, 50_000),
            "day": [date(2025, 1, 1 + int(d)) for d in rng.integers(0, 28, 50_000)],
            "name": [f"k{int(i)}" for i in rng.integers(0, 5_000, 50_000)],
        }
    )
    for keys in (["id"], ["name"], ["id", "day"]):
        ids = partition_ids(frame, keys, 8)
        per_key = frame.with_columns(p=pl.Series(ids)).group_by(keys).agg(pl.col("p").n_unique())
        assert per_key["p"].max() == 1
        counts = np.bincount(ids, minlength=8)
        assert counts.min() > 0.8 * counts.mean(), (keys, counts)


def test_dates_and_datetimes_hash_as_their_physical_integers():
    ts = pl.DataFrame({"t": [datetime(2025, 1, 1, tzinfo=UTC)]}).with_columns(
        pl.col("t").dt.cast_time_unit("us")
    )
    ints = pl.DataFrame({"t": ts["t"].dt.epoch("us")})
    assert key_hash(ts, ["t"]).tolist() == key_hash(ints, ["t"]).tolist()


def test_a_float_key_is_an_error_naming_the_column():
    with pytest.raises(DataError, match="float_key") as err:
        partition_ids(pl.DataFrame({"float_key": [1.5]}), ["float_key"], 2, obj="entity_df")
    assert "Float64" in str(err.value) and "entity_df" in str(err.value)
    with pytest.raises(DataError, match="partitions"):
        partition_ids(pl.DataFrame({"a": [1]}), ["a"], 0)


def test_split_by_key_puts_rows_back_in_order():
    frame = pl.DataFrame({"k": [5, 1, 5, 2, 9, 1, 3], "v": list("abcdefg")})
    pieces = split_by_key(frame, ["k"], 3)
    assert all(p.height for p in pieces) and len(pieces) <= 3
    back = pl.concat(pieces).sort(ROW).drop(ROW)
    assert back.equals(frame)


def test_make_executor_names_the_bad_value():
    assert isinstance(make_executor("local", partitions=4), LocalExecutor)
    with pytest.raises(RequestError, match="engine") as err:
        make_executor("spark")
    assert "spark" in str(err.value)
    with pytest.raises(RequestError, match="partitions"):
        make_executor("local", partitions=0)


# -- the write protocol ---------------------------------------------------------------

SCHEMA = pa.schema([("id", pa.int64()), ("day", pa.date32()), ("x", pa.float64())])


def _rows(day: int, *, fail_on: int | None = None) -> pa.Table:
    if day == fail_on:
        raise DataError("task failed on purpose", field="day", value=day)
    return pa.table(
        {
            "id": pa.array(range(day * 10, day * 10 + 10), pa.int64()),
            "day": pa.array([date(2025, 1, day)] * 10, pa.date32()),
            "x": pa.array([float(day)] * 10),
        },
        schema=SCHEMA,
    )


@pytest.fixture
def target(tmp_path: Path) -> TableTarget:
    uri = str(tmp_path / "t")
    write_deltalake(uri, SCHEMA.empty_table(), partition_by=["day"])  # version 0, empty
    return TableTarget(uri, partition_by=("day",), schema=SCHEMA)


def _parquet_files(uri: str) -> set[str]:
    return {str(p.relative_to(uri)) for p in Path(uri).rglob("*.parquet")}


def test_a_job_is_one_commit_with_its_id_and_a_rerun_commits_nothing(target):
    version = run_write_job(LocalExecutor(), target, _rows, [1, 2, 3], job_id="job-a")
    table = DeltaTable(target.uri)
    assert version == table.version() == 1
    assert table.history(1)[0]["featurestore.job_id"] == "job-a"
    got = pl.from_arrow(table.to_pyarrow_table()).sort("id")
    assert got["id"].to_list() == list(range(10, 40))
    assert set(got["day"].to_list()) == {date(2025, 1, d) for d in (1, 2, 3)}
    # One file per date partition, with the statistics readers skip files by.
    adds = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    assert sorted(a["path"].split("/")[0] for a in adds) == [f"day=2025-01-0{d}" for d in (1, 2, 3)]
    assert {(a["num_records"], a["min.id"] % 10, a["max.id"] % 10) for a in adds} == {(10, 0, 9)}
    files = _parquet_files(target.uri)
    assert run_write_job(LocalExecutor(), target, _rows, [1, 2, 3], job_id="job-a") is None
    assert DeltaTable(target.uri).version() == 1 and _parquet_files(target.uri) == files


def test_a_failed_task_leaves_the_table_unchanged_and_no_files(target):
    before = _parquet_files(target.uri)
    with pytest.raises(DataError, match="on purpose"):
        run_write_job(
            LocalExecutor(),
            target,
            partial(_rows, fail_on=3),
            [1, 2, 3],
            job_id="job-b",
        )
    assert DeltaTable(target.uri).version() == 0
    assert _parquet_files(target.uri) == before  # days 1 and 2 were written, then removed
    assert run_write_job(LocalExecutor(), target, _rows, [1, 2, 3], job_id="job-b") == 1


def test_a_task_with_the_wrong_schema_fails_before_writing(target):
    bad = TableTarget(target.uri, partition_by=("day",), schema=pa.schema([("id", pa.string())]))
    with pytest.raises(OfflineStoreError, match="schema"):
        run_write_job(LocalExecutor(), bad, _rows, [1], job_id="job-s")
    assert DeltaTable(target.uri).version() == 0 and not _parquet_files(target.uri)


def test_a_failed_commit_is_an_offline_store_error_and_removes_the_files(target, monkeypatch):
    def lose_the_race(self, *args, **kwargs):  # fault injection: the commit is refused
        raise CommitFailedError("a concurrent transaction won")

    monkeypatch.setattr(DeltaTable, "create_write_transaction", lose_the_race)
    with pytest.raises(OfflineStoreError, match="table is unchanged") as err:
        run_write_job(LocalExecutor(), target, _rows, [1, 2], job_id="job-c")
    assert "job-c" in str(err.value)
    assert DeltaTable(target.uri).version() == 0
    assert not _parquet_files(target.uri)


def test_the_ray_engine_without_ray_installed_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # fault injection: `import ray` fails
    with pytest.raises(DefinitionError, match="ray package") as err:
        make_executor("ray")
    assert "featurestore[ray]" in str(err.value)


def test_local_executor_shuffle_hands_each_reduce_its_pieces_in_map_order():
    executor = LocalExecutor(3)
    out = executor.shuffle(
        lambda m: [f"{m}->{j}" for j in range(3)], ["a", "b"], lambda r, ps: (r, ps), [0, 1, 2]
    )
    assert out == [(j, [f"a->{j}", f"b->{j}"]) for j in range(3)]
