"""Scale-out: training datasets (point-in-time join) on the local executor vs Ray,
in one run, through ``FeatureStore.get_training_dataset``.

The data is ``datagen``'s (scale 1: a 100k-row spine, two views of 1M rows over 100k
keys and 30 days; scale 10: ten times that), backfilled once into a feature repo
under ``benchmarks/.data/scaleout/`` (reused when present). Three ways to build the
same dataset, each checked equal to the first row for row:

- ``local``: one process, the whole spine (the default);
- ``local xP``: the spine cut into P key partitions and the views shuffled to them
  (``api/partitioned.py``), every map and reduce task run one after another on the
  ``LocalExecutor``: the price of the seam without a cluster;
- ``ray xP``: the same tasks on a local Ray cluster with the machine's cores.

Every map task (read a date slice of one view, cut it by key) and reduce task (join
one partition) times itself; the table gives their medians and sums, the inputs of
the model in docs/scaling.md.

    python benchmarks/scaleout.py --scale 1 10 --partitions 2 4 8
    python benchmarks/scaleout.py --scale 1 10 --write-results
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import datagen  # noqa: E402
from _results import append_section, cpu_model  # noqa: E402

SECTION = "## Scale-out: local vs Ray (benchmarks/scaleout.py)"
DEFS = """
import polars as pl
from featurestore import BatchSource, Entity, FeatureView, Field

driver = Entity(name="driver", join_keys={"driver_id": "int64"})
driver_stats = FeatureView(
    name="driver_stats", entities=[driver], ttl="2d",
    source=BatchSource(name="stats", path="data/driver_stats.parquet",
                       timestamp_field="event_ts", created_timestamp_field="created_ts"),
    fields=[Field(name="conv_rate", dtype=pl.Float64), Field(name="acc_rate", dtype=pl.Float32),
            Field(name="avg_daily_trips", dtype=pl.Int64)],
)
driver_trips = FeatureView(
    name="driver_trips", entities=[driver], ttl="7d",
    source=BatchSource(name="trips", path="data/driver_trips.parquet",
                       timestamp_field="event_ts", created_timestamp_field="created_ts"),
    fields=[Field(name="trips_today", dtype=pl.Int32), Field(name="rating", dtype=pl.Float64),
            Field(name="earnings", dtype=pl.Float64)],
)
"""
FEATURES = [f"{v.name}:{f}" for v in datagen.VIEWS for f in v.features]


def ensure_repo(scale: float) -> Path:
    """A feature repo holding the scale's views, backfilled (once)."""
    import polars as pl

    from featurestore import FeatureStore

    root = datagen.DATA_ROOT / "scaleout" / f"v{datagen.FORMAT_VERSION}" / f"scale_{scale:g}"
    if (root / "COMPLETE").exists():
        return root
    if root.exists():
        shutil.rmtree(root)
    (root / "data").mkdir(parents=True)
    (root / "featurestore.toml").write_text('[project]\nname = "scaleout"\n')
    (root / "features.py").write_text(textwrap.dedent(DEFS))
    for spec in datagen.VIEWS:
        datagen.make_view(spec, scale).drop("event_date").write_parquet(
            root / "data" / f"{spec.name}.parquet"
        )
    datagen.make_spine(scale).write_parquet(root / "spine.parquet")
    store = FeatureStore(root)
    store.apply()
    started = time.perf_counter()
    store.backfill(mode="append")
    print(f"backfilled scale {scale:g} in {time.perf_counter() - started:.1f}s", flush=True)
    store.close()
    assert pl.read_parquet(root / "spine.parquet").height > 0
    (root / "COMPLETE").write_text("ok\n")
    return root


class TimedLocal:
    """The local executor, timing each task in this process: the per-task costs."""

    name = "local"

    def __init__(self, partitions: int) -> None:
        from featurestore.engines.executor import LocalExecutor

        self.inner = LocalExecutor(partitions)
        self.partitions = partitions
        self.map_s: list[float] = []
        self.reduce_s: list[float] = []

    def _time(self, fn, into: list[float]):
        def call(*args):
            started = time.perf_counter()
            out = fn(*args)
            into.append(time.perf_counter() - started)
            return out

        return call

    def map(self, fn, items):
        return self.inner.map(self._time(fn, self.reduce_s), items)

    def shuffle(self, map_fn, map_items, reduce_fn, reduce_items):
        return self.inner.shuffle(
            self._time(map_fn, self.map_s),
            map_items,
            self._time(reduce_fn, self.reduce_s),
            reduce_items,
        )

    def close(self) -> None:
        return None


def build(root: Path, spine, executor) -> tuple[Any, float]:
    """The dataset and the seconds ``get_training_dataset`` took."""
    from featurestore import FeatureStore

    store = FeatureStore(root, executor=executor)
    started = time.perf_counter()
    ds = store.get_training_dataset(spine, features=FEATURES, timestamp="ts")
    seconds = time.perf_counter() - started
    store.close()
    return ds.frame, seconds


def measure(scale: float, partitions: list[int], repeats: int, ray_executor) -> list[dict]:
    import polars as pl

    root = ensure_repo(scale)
    spine = pl.read_parquet(root / "spine.parquet")
    expected, _ = build(root, spine, None)  # warm-up: Numba cache, file cache
    rows = [
        {
            "scale": scale,
            "engine": "local",
            "p": 1,
            "best": min(build(root, spine, None)[1] for _ in range(repeats)),
            "map": [],
            "reduce": [],
        }
    ]
    print(_line(rows[0], rows[0]["best"]), flush=True)
    for p in partitions:
        timed = TimedLocal(p)
        got, _ = build(root, spine, timed)
        if not got.equals(expected):
            raise SystemExit(f"local x{p} at scale {scale:g} differs from local")
        timed.map_s.clear()
        timed.reduce_s.clear()
        best = min(build(root, spine, timed)[1] for _ in range(repeats))
        per = len(timed.map_s) // repeats, len(timed.reduce_s) // repeats
        rows.append(
            {
                "scale": scale,
                "engine": "local",
                "p": p,
                "best": best,
                "map": timed.map_s[: per[0]],
                "reduce": timed.reduce_s[: per[1]],
            }
        )
        print(_line(rows[-1], rows[0]["best"]), flush=True)
        ray_executor.partitions = p
        got, _ = build(root, spine, ray_executor)  # warm-up: the workers import and JIT-load
        if not got.equals(expected):
            raise SystemExit(f"ray x{p} at scale {scale:g} differs from local")
        best = min(build(root, spine, ray_executor)[1] for _ in range(repeats))
        rows.append(
            {"scale": scale, "engine": "ray", "p": p, "best": best, "map": [], "reduce": []}
        )
        print(_line(rows[-1], rows[0]["best"]), flush=True)
    return rows


def _stats(values: list[float]) -> str:
    if not values:
        return "- | -"
    return f"{len(values)} x {statistics.median(values):.3f} | {sum(values):.3f}"


def _line(row: dict, base: float) -> str:
    return (
        f"| {row['scale']:g} | {row['engine']} | {row['p']} | {row['best']:.3f} | "
        f"{row['best'] / base:.2f}x | {_stats(row['map'])} | {_stats(row['reduce'])} |"
    )


HEADER = (
    "| scale | engine | partitions | best (s) | vs local | map tasks x median (s) "
    "| map sum (s) | reduce tasks x median (s) | reduce sum (s) |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, nargs="+", default=[1.0])
    parser.add_argument("--partitions", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()

    import ray

    from featurestore.engines.executor.ray import RayExecutor

    cpus = os.cpu_count() or 2
    started = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - started
    executor = RayExecutor(partitions=2)
    print(HEADER)
    lines: list[str] = []
    try:
        for scale in args.scale:
            rows = measure(scale, args.partitions, args.repeats, executor)
            lines += [_line(r, rows[0]["best"]) for r in rows]
    finally:
        ray.shutdown()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    scales = ", ".join(f"{s:g}" for s in args.scale)
    text = (
        f"### {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: scale {scales}\n\n"
        f"- Command: `python benchmarks/scaleout.py {' '.join(sys.argv[1:])}`\n"
        f"- Machine: {cpus} cores, {cpu_model()}; Python {sys.version.split()[0]}; "
        f"ray {ray.__version__}; load average at the end {load}\n"
        f"- `FeatureStore.get_training_dataset` wall time, best of {args.repeats} after a "
        f"warm-up; Ray's cluster start ({ray_start:.1f} s) is paid once per process and "
        "not counted. Map/reduce columns: each task timed in-process on the local "
        "executor (tasks x median, and their sum).\n\n"
        f"{HEADER}\n" + "\n".join(lines) + "\n"
    )
    print(text)
    if args.write_results:
        append_section(SECTION, text)


if __name__ == "__main__":
    main()
