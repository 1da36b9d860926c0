"""Cold start: what a new user waits for on the first training call and lookup.

Each measurement is a fresh ``featurestore`` CLI process on the quickstart repo (its
4-row spine), wall time of the whole call, imports included:

- ``dataset``: ``featurestore dataset create`` of ``driver_ranking`` (a
  point-in-time join) and of ``driver_windows_service`` (windowed aggregations);
- ``get``: ``featurestore get`` of one driver from the embedded online store.

Each runs with a cold Numba cache (an empty ``NUMBA_CACHE_DIR``, as after an
install that skipped warming: the first call compiles) and with the cache
``featurestore init`` warmed (the default). ``init`` itself is timed with a cold
cache, since that is where the compiling now happens. ``--repeats`` runs each,
every cold run on a new empty cache; medians are reported.

    python benchmarks/cold_start.py
    python benchmarks/cold_start.py --repeats 3 --write-results
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _results import append_section, cpu_model  # noqa: E402

RESULTS = HERE / "RESULTS.md"
SECTION = "## Cold start (benchmarks/cold_start.py)"
TARGET_S = 1.2
CALLS = {
    "dataset (PIT join)": [
        "dataset", "create", "--entities", "data/spine.parquet",
        "-s", "driver_ranking", "--out", "pit.parquet",
    ],
    "dataset (aggregations)": [
        "dataset", "create", "--entities", "data/spine.parquet",
        "-s", "driver_windows_service", "--out", "agg.parquet",
    ],
    "get (1 driver)": ["get", "-e", "driver_id=1001", "-s", "driver_ranking"],
}  # fmt: skip


def cli() -> list[str]:
    exe = Path(sys.executable).parent / "featurestore"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "featurestore"]


def run(args: list[str], *, cwd: Path, cache: Path, warm: bool = True) -> float:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    env.pop("FEATURESTORE_NO_WARM", None)
    if not warm:
        env["FEATURESTORE_NO_WARM"] = "1"
    t0 = time.perf_counter()
    subprocess.run([*cli(), *args], cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def prepare(work: Path, cache: Path) -> Path:
    """A quickstart repo, applied, backfilled and materialized, without warming."""
    run(["init", "demo"], cwd=work, cache=cache, warm=False)
    repo = work / "demo"
    for step in (["apply"], ["backfill"], ["materialize"]):
        run(step, cwd=repo, cache=cache)
    return repo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write-results", action="store_true", help=f"append to {RESULTS}")
    args = parser.parse_args()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} cores, {cpu_model()}, load {load}")
    cold: dict[str, list[float]] = {name: [] for name in [*CALLS, "init (warms)"]}
    warm: dict[str, list[float]] = {name: [] for name in CALLS}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repo = prepare(work, work / "setup-cache")
        for r in range(args.repeats):
            for name, call in CALLS.items():
                cache = work / f"cold-{r}-{len(cold[name])}"
                cold[name].append(run(call, cwd=repo, cache=cache))
                shutil.rmtree(cache, ignore_errors=True)
            cache = work / f"init-{r}"
            cold["init (warms)"].append(run(["init", f"fresh{r}"], cwd=work, cache=cache))
            for name, call in CALLS.items():
                warm[name].append(run(call, cwd=repo, cache=cache))
            shutil.rmtree(cache, ignore_errors=True)
    lines = [
        "| call (fresh process, whole CLI) | cold cache: median (s) | after `init` warmed "
        f"it: median (s) | target ≤ {TARGET_S} s |",
        "|---|---|---|---|",
    ]
    for name, times in cold.items():
        w = warm.get(name)
        warm_s = f"{statistics.median(w):.2f}" if w else "-"
        ok = "-" if not w else ("met" if statistics.median(w) <= TARGET_S else "missed")
        lines.append(f"| {name} | {statistics.median(times):.2f} | {warm_s} | {ok} |")
    table = "\n".join(lines)
    print(table)
    if args.write_results:
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        text = (
            f"### {now}\n\n- Command: `python benchmarks/cold_start.py "
            f"{' '.join(sys.argv[1:])}`\n- Machine: {os.cpu_count()} cores, {cpu_model()}; "
            f"load average at start {load}; medians of {args.repeats} runs.\n\n{table}\n"
        )
        append_section(SECTION, text, RESULTS)
        print(f"results written to {RESULTS}")


if __name__ == "__main__":
    main()
