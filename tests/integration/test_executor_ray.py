"""Batch jobs on a real local Ray cluster (issue 17, part 1): training datasets equal
the local executor's row for row, the Ray engine is chosen by config, and the write
protocol keeps a Delta table at its old version or the complete new one when a task
fails or a worker process is killed with SIGKILL.

One cluster for the module (``ray.init(num_cpus=2)`` costs ~4 s). Under CI=true a
missing ``ray`` fails the run.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from featurestore import FeatureStore
from featurestore.engines.executor import LocalExecutor
from featurestore.engines.executor.commit import TableTarget, run_write_job
from featurestore.errors import DataError
from tests.fixtures.ray_cluster import ray_executor_on_private_cluster
from tests.helpers import quickstart, write_repo
from tests.integration.test_aggregations import DEFS as AGG_DEFS
from tests.integration.test_aggregations import T0, _events
from tests.integration.test_training import _reference, _spine

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ray_executor() -> Iterator[object]:
    with ray_executor_on_private_cluster() as executor:
        yield executor


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = quickstart(tmp_path_factory.mktemp("ray") / "repo")
    store = FeatureStore(root)
    store.apply()
    store.backfill(["driver_hourly_stats"])
    store.close()
    return root


@pytest.mark.parametrize("as_of_known", [False, True])
def test_training_on_ray_equals_local_row_for_row(repo, ray_executor, as_of_known):
    spine = _spine(n=600, seed=11)
    kwargs = {"feature_service": "driver_ranking", "as_of_known_time": as_of_known}
    local = FeatureStore(repo).get_training_dataset(spine, **kwargs)
    on_ray = FeatureStore(repo, executor=ray_executor).get_training_dataset(spine, **kwargs)
    assert on_ray.frame.equals(local.frame)
    assert on_ray.lineage.content_hash == local.lineage.content_hash
    assert on_ray.lineage.table_versions == local.lineage.table_versions
    source = pl.read_parquet(repo / "data/driver_stats.parquet")
    assert on_ray.frame.equals(_reference(source, spine, as_of_known=as_of_known))
    assert on_ray.frame["conv_rate"].null_count() < spine.height


def test_a_rebuild_on_ray_reproduces_a_dataset_saved_locally(repo, ray_executor):
    spine = _spine(n=200, seed=12)
    local = FeatureStore(repo)
    ds = local.get_training_dataset(spine, feature_service="driver_ranking")
    local.save_dataset(ds, "ray_rebuild", entity_df=spine)
    rebuilt, lineage = FeatureStore(repo, executor=ray_executor).rebuild_dataset("ray_rebuild")
    assert rebuilt.lineage.content_hash == lineage.content_hash
    assert rebuilt.frame.equals(ds.frame)


def test_windowed_aggregations_on_ray_equal_local(tmp_path, ray_executor):
    root = write_repo(tmp_path / "agg", {"features.py": AGG_DEFS})
    (root / "data").mkdir()
    _events().write_parquet(root / "data" / "trips.parquet")
    store = FeatureStore(root)
    store.apply()
    store.backfill()
    rng = np.random.default_rng(4)
    spine = pl.DataFrame(
        {
            "driver_id": rng.integers(0, 32, 400),
            "event_timestamp": [
                T0 + np.timedelta64(int(m), "m").item() for m in rng.integers(-60, 5760, 400)
            ],
        }
    ).with_columns(pl.col("event_timestamp").dt.cast_time_unit("us"))
    features = [
        "driver_trips:trips_1h",
        "driver_trips:fare_sum_1d",
        "driver_trips:fare_per_km_mean_1d",
        "driver_trips:max_fare",
    ]
    local = store.get_training_dataset(spine, features=features)
    on_ray = FeatureStore(root, executor=ray_executor).get_training_dataset(
        spine, features=features
    )
    assert on_ray.frame.equals(local.frame)
    assert on_ray.frame["trips_1h"].sum() > 0
    # The same cut on the local executor gives the same rows too.
    parted = FeatureStore(root, executor=LocalExecutor(3)).get_training_dataset(
        spine, features=features
    )
    assert parted.frame.equals(local.frame)
    store.close()


def test_engine_ray_in_the_config_runs_training_on_ray(repo, ray_executor, tmp_path):
    toml = (repo / "featurestore.toml").read_text()
    (repo / "featurestore.toml").write_text(toml + '\n[engine]\ntype = "ray"\npartitions = 3\n')
    try:
        store = FeatureStore(repo)
        assert type(store.executor).__name__ == "RayExecutor"
        assert store.executor.partitions == 3
        spine = _spine(n=100, seed=13)
        ds = store.get_training_dataset(spine, feature_service="driver_ranking")
        assert ds.frame.equals(
            FeatureStore(repo, executor=LocalExecutor())
            .get_training_dataset(spine, feature_service="driver_ranking")
            .frame
        )
        store.close()  # the cluster was running before: it is left running
        import ray

        assert ray.is_initialized()
    finally:
        (repo / "featurestore.toml").write_text(toml)


MULTI_DEFS = """
import polars as pl
from featurestore import BatchSource, Entity, FeatureView, Field

driver = Entity(name="driver", join_keys={"driver_id": "int64"})
zone = Entity(name="zone", join_keys={"city": "string", "zone_id": "int64"})
drivers = FeatureView(
    name="drivers", entities=[driver], ttl="3d",
    source=BatchSource(name="d", path="data/d.parquet", timestamp_field="ts"),
    fields=[Field(name="rating", dtype=pl.Float64)],
)
zones = FeatureView(
    name="zones", entities=[zone], ttl="1d",
    source=BatchSource(name="z", path="data/z.parquet", timestamp_field="ts"),
    fields=[Field(name="demand", dtype=pl.Int64)],
)
"""


class ShuffleCounting(LocalExecutor):
    """The local executor, counting the map slices of each shuffle it runs."""

    def __init__(self, partitions: int) -> None:
        super().__init__(partitions)
        self.slices: list[int] = []

    def shuffle(self, map_fn, map_items, reduce_fn, reduce_items):
        self.slices.append(len(map_items))
        return super().shuffle(map_fn, map_items, reduce_fn, reduce_items)


def test_views_with_different_keys_join_the_same_on_every_executor(tmp_path, ray_executor):
    root = write_repo(tmp_path / "multi", {"features.py": MULTI_DEFS})
    (root / "data").mkdir()
    rng = np.random.default_rng(21)
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    minutes = partial(_minutes, t0)
    cities = ["Köln", "Lyon", "Oslo", ""]
    pl.DataFrame(
        {
            "driver_id": rng.integers(0, 50, 4000),
            "ts": minutes(rng.integers(0, 20 * 1440, 4000)),
            "rating": rng.random(4000),
        }
    ).write_parquet(root / "data/d.parquet")
    pl.DataFrame(
        {
            "city": [cities[i] for i in rng.integers(0, 4, 3000)],
            "zone_id": rng.integers(0, 6, 3000),
            "ts": minutes(rng.integers(0, 20 * 1440, 3000)),
            "demand": rng.integers(0, 100, 3000),
        }
    ).write_parquet(root / "data/z.parquet")
    store = FeatureStore(root)
    store.apply()
    store.backfill()
    spine = pl.DataFrame(
        {
            "driver_id": rng.integers(0, 60, 700),
            "city": [cities[i] for i in rng.integers(0, 4, 700)],
            "zone_id": rng.integers(0, 7, 700),
            "event_timestamp": minutes(rng.integers(0, 21 * 1440, 700)),
        }
    )
    features = ["drivers:rating", "zones:demand"]
    local = store.get_training_dataset(spine, features=features)
    assert local.frame["rating"].null_count() < 700 and local.frame["demand"].null_count() < 700
    counting = ShuffleCounting(5)
    parted = FeatureStore(root, executor=counting).get_training_dataset(spine, features=features)
    assert parted.frame.equals(local.frame)
    assert counting.slices and counting.slices[0] > 1  # the map side read in date slices
    on_ray = FeatureStore(root, executor=ray_executor).get_training_dataset(
        spine, features=features
    )
    assert on_ray.frame.equals(local.frame)
    store.close()


def _minutes(t0: datetime, offsets: np.ndarray) -> pl.Series:
    return pl.Series([t0 + timedelta(minutes=int(m)) for m in offsets]).dt.cast_time_unit("us")


# -- the write protocol under failures --------------------------------------------

SCHEMA = pa.schema([("id", pa.int64()), ("day", pa.date32()), ("x", pa.float64())])


def _rows(
    day: int, *, kill_dir: str | None = None, kill_day: int = 2, every: bool = False
) -> pa.Table:
    """A task's rows; on ``kill_day`` the task SIGKILLs its own Ray worker process
    (kill -9), on the first attempt only unless ``every``."""
    if kill_dir is not None and day == kill_day:
        marker = Path(kill_dir) / f"killed-{day}"
        if every or not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
    if day == -1:
        raise DataError("bad partition", field="day", value=day)
    return pa.table(
        {
            "id": pa.array(range(day * 100, day * 100 + 100), pa.int64()),
            "day": pa.array([date(2025, 1, day)] * 100, pa.date32()),
            "x": pa.array([float(day)] * 100),
        },
        schema=SCHEMA,
    )


@pytest.fixture
def target(tmp_path: Path) -> TableTarget:
    uri = str(tmp_path / "table")
    write_deltalake(uri, SCHEMA.empty_table(), partition_by=["day"])
    return TableTarget(uri, partition_by=("day",), schema=SCHEMA)


def _files(uri: str) -> set[str]:
    return {str(p.relative_to(uri)) for p in Path(uri).rglob("*.parquet")}


def _ids(uri: str) -> list[int]:
    return sorted(pa.table(DeltaTable(uri).to_pyarrow_table())["id"].to_pylist())


def test_a_worker_killed_mid_job_is_retried_and_the_job_commits_once(
    ray_executor, target, tmp_path
):
    produce = partial(_rows, kill_dir=str(tmp_path))
    version = run_write_job(ray_executor, target, produce, [1, 2, 3, 4], job_id="kill-once")
    assert (tmp_path / "killed-2").exists()  # the worker really died
    assert version == DeltaTable(target.uri).version() == 1
    assert _ids(target.uri) == sorted(
        i for d in (1, 2, 3, 4) for i in range(d * 100, d * 100 + 100)
    )
    assert len(_files(target.uri)) == 4  # the killed attempt left no file behind
    # A re-run of the same job commits nothing and leaves no file of its own.
    assert run_write_job(ray_executor, target, _rows, [1, 2, 3, 4], job_id="kill-once") is None
    assert DeltaTable(target.uri).version() == 1 and len(_files(target.uri)) == 4


def test_a_worker_killed_on_every_attempt_fails_the_job_and_leaves_the_table(
    ray_executor, target, tmp_path
):
    import ray

    run_write_job(ray_executor, target, _rows, [1], job_id="first")
    before, files = _ids(target.uri), _files(target.uri)
    produce = partial(_rows, kill_dir=str(tmp_path), every=True)
    with pytest.raises(ray.exceptions.RayError):
        run_write_job(ray_executor, target, produce, [3, 2, 4], job_id="doomed")
    assert DeltaTable(target.uri).version() == 1
    assert _ids(target.uri) == before
    assert _files(target.uri) == files  # tasks 3 and 4 wrote files; they were removed


def test_an_error_in_a_task_reaches_the_driver_as_itself(ray_executor, target):
    with pytest.raises(DataError, match="bad partition"):
        run_write_job(ray_executor, target, _rows, [1, -1], job_id="err")
    assert DeltaTable(target.uri).version() == 0 and not _files(target.uri)


def test_cli_dataset_create_with_engine_ray_equals_local(repo, ray_executor, tmp_path):
    from typer.testing import CliRunner

    from featurestore.cli.main import app

    spine = _spine(n=150, seed=14)
    spine.write_parquet(tmp_path / "spine.parquet")
    base = ["dataset", "create", "--entities", str(tmp_path / "spine.parquet")]
    base += ["-s", "driver_ranking", "--repo", str(repo)]
    ray_opts = ["--engine", "ray", "--ray-address", "auto", "--partitions", "3"]
    runner = CliRunner()
    local = runner.invoke(app, [*base, "--out", str(tmp_path / "local.parquet")])
    on_ray = runner.invoke(
        app,
        [*base, "--out", str(tmp_path / "ray.parquet"), *ray_opts],
    )
    assert local.exit_code == 0, local.output
    assert on_ray.exit_code == 0, on_ray.output
    assert pl.read_parquet(tmp_path / "ray.parquet").equals(
        pl.read_parquet(tmp_path / "local.parquet")
    )
    bad = runner.invoke(app, [*base, "--engine", "spark"])
    assert bad.exit_code != 0 and "spark" in bad.output and "'local' or 'ray'" in bad.output


def test_the_kuberay_example_runs_a_command_the_cli_accepts_in_valid_pods():
    import shlex

    import yaml

    from tests.integration.deploy_checks import parse_cli

    job = yaml.safe_load((ROOT / "deploy/k8s/rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "featurestore"
    parsed = parse_cli(argv[1:])
    assert parsed["engine"] == "ray" and parsed["ray_address"] == "auto"
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    cluster = job["spec"]["rayClusterSpec"]
    templates = [cluster["headGroupSpec"]["template"]]
    templates += [g["template"] for g in cluster["workerGroupSpecs"]]
    for template in templates:  # each pod template is a valid Pod
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, **template}
        kubernetes_validate.validate(pod, "1.31", strict=True)
