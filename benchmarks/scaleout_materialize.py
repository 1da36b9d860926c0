"""Scale-out of materialization: local vs Ray, in one run.

The repos of ``scaleout.py`` (datagen's views, backfilled once under
``benchmarks/.data/scaleout/``): scale 1 = 1M rows over 100k drivers, scale 10 = 10M
rows over 1M drivers, per view. ``driver_stats`` is materialized (every entity's
latest row, retention "none") into a fresh embedded SQLite online store per run:

- ``local``: one process, unpartitioned (the default);
- ``local xP``: the key shuffle of ``materialize/partitioned.py`` run task after task
  in this process (the price of the seam);
- ``ray xP``: the same tasks on a local Ray cluster, each opening the SQLite store
  from its URL (writes from several processes share SQLite's one write lock).

Every run's records are checked equal to the local run's on a sample of entities.

    python benchmarks/scaleout_materialize.py --scale 1 10 --partitions 4 8
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _results import append_section, cpu_model  # noqa: E402
from scaleout import ensure_repo  # noqa: E402

SECTION = "## Scale-out of materialize: local vs Ray (benchmarks/scaleout_materialize.py)"
HEADER = (
    "| scale | engine | partitions | entities | best (s) | vs local |\n|---|---|---|---|---|---|"
)
VIEW = "driver_stats"


def run_once(store, view, executor, url: str) -> tuple[float, int]:
    from featurestore.config import OnlineRetention
    from featurestore.materialize import materialize_view
    from featurestore.stores.online import open_online_store

    online = open_online_store(url)
    end_us = 4_102_444_800_000_000  # 2100-01-01: every row
    started = time.perf_counter()
    report = materialize_view(
        view,
        project=store.project,
        offline=store.offline,
        online=online,
        end_us=end_us,
        retention=OnlineRetention.of("none", {}),
        executor=executor,
        online_url=url,
    )
    seconds = time.perf_counter() - started
    online.close()
    assert report.written == report.entities, report
    return seconds, report.entities


def sample(url: str, store, view, ids: list[int]) -> list[tuple]:
    from featurestore.config import OnlineRetention
    from featurestore.stores.online import open_online_store
    from featurestore.stores.online.base import ReadRequest
    from featurestore.stores.view_specs import online_schema

    schema = online_schema(store.project, view, retention=OnlineRetention.of("none", {}))
    online = open_online_store(url)
    (res,) = online.read([ReadRequest(schema, {"driver_id": ids})])
    online.close()
    return list(zip(res.event_ts, res.created_ts, *res.features.values(), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, nargs="+", default=[1.0])
    parser.add_argument("--partitions", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()

    import ray

    from featurestore import FeatureStore
    from featurestore.engines.executor import LocalExecutor
    from featurestore.engines.executor.ray import RayExecutor

    cpus = os.cpu_count() or 2
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    lines: list[str] = []
    print(HEADER)
    try:
        for scale in args.scale:
            store = FeatureStore(ensure_repo(scale))
            view = store.index().view(VIEW)
            engines: list[tuple[str, int, object]] = [("local", 1, None)]
            for p in args.partitions:
                engines += [("local", p, LocalExecutor(p)), ("ray", p, RayExecutor(partitions=p))]
            base = 0.0
            ids = list(range(0, int(100_000 * scale), 997))
            want: list[tuple] | None = None
            with tempfile.TemporaryDirectory() as tmp:
                for i, (name, parts, executor) in enumerate(engines):
                    best, entities = float("inf"), 0
                    for r in range(args.repeats):
                        url = f"sqlite:///{tmp}/{i}-{r}.db"
                        seconds, entities = run_once(store, view, executor, url)
                        best = min(best, seconds)
                    got = sample(url, store, view, ids)
                    if want is None:
                        want, base = got, best
                    # created_ts comes from the offline rows for a plain view: all equal.
                    assert got == want, f"{name} x{parts} differs from local"
                    line = (
                        f"| {scale:g} | {name} | {parts} | {entities:,} | {best:.3f} | "
                        f"{best / base:.2f}x |"
                    )
                    print(line, flush=True)
                    lines.append(line)
            store.close()
    finally:
        ray.shutdown()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = (
        f"### {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: scale "
        f"{', '.join(f'{s:g}' for s in args.scale)}\n\n"
        f"- Command: `python benchmarks/scaleout_materialize.py {' '.join(sys.argv[1:])}`\n"
        f"- Machine: {cpus} cores, {cpu_model()}; Python {sys.version.split()[0]}; "
        f"ray {ray.__version__}; load average at the end {load}\n"
        f"- `materialize_view` of `{VIEW}` (all rows, retention none) into a fresh SQLite "
        f"online store per run, best of {args.repeats}; records checked equal to the local "
        "run's on a sample of entities.\n\n"
        f"{HEADER}\n" + "\n".join(lines) + "\n"
    )
    print(text)
    if args.write_results:
        append_section(SECTION, text)


if __name__ == "__main__":
    main()
