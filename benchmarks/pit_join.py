"""Point-in-time join, end to end: two Delta tables read -> joined DataFrame.

Three engines on the same data (``benchmarks/datagen.py``):

- ``ours``: ``pl.scan_delta`` of each view, pruned to the date partitions the spine
  can reach (``event_time_bounds``), handed to ``point_in_time_join`` (Numba).
- ``polars``: the same scans and partition filter, each view sorted explicitly by
  (driver_id, event_ts), then ``join_asof`` (by key, backward, tolerance = TTL - 1us,
  since a row exactly TTL old is out) on the spine sorted by time; spine order
  restored at the end.
- ``duckdb``: the same scans and partition filter, handed to DuckDB as Arrow (zero-copy; DuckDB's
  Delta extension is not installable offline), then ``ASOF LEFT JOIN`` in SQL with
  the TTL applied to the match, ``ORDER BY`` the spine's row number.
- ``polars_ts`` (issue 18's strongest peer): each view sorted by (event_ts,
  created_ts) only, so that ``join_asof`` (which takes the last of equal times)
  also settles same-time corrections by created_ts, with no separate dedup pass.
- ``duckdb_maxby``: each view first reduced to one row per (key, event_ts) with
  ``max_by`` of the features' struct by created_ts, then the same ASOF join.
- ``--corrections 0.02`` adds same-time corrections to 2% of the rows (issue 18's
  workload); ``polars`` and ``duckdb`` order by event time alone, so they are then
  timed but neither compared nor counted as peers.

Ratios are given against each peer and against the fastest of them in the run.

Each engine runs in its own subprocess, so that its peak RSS is its own. The
engines take turns, round after round, in an order rotated each round, so that
noise from other work on the machine falls on all of them alike: one warm-up round
(it also loads Numba's cache), then ``--repeats`` timed rounds; best and median are
reported. All three results are checked to agree row for row.

    python benchmarks/pit_join.py --scale 1
    python benchmarks/pit_join.py --scale 0.1 1 10 --write-results
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import datagen  # noqa: E402
from _results import append_section, cpu_model  # noqa: E402

ENGINES = ("ours", "polars", "duckdb", "polars_ts", "duckdb_maxby")
# Formulations that order each view by event time alone: undefined on same-time ties.
TIME_ONLY = {"polars", "duckdb"}
RESULTS = HERE / "RESULTS.md"
SECTION = "## Point-in-time join (benchmarks/pit_join.py)"


# --- the three engines ---------------------------------------------------------------


def _scan(paths, spine, spec):
    """A view's Delta table, pruned to the date partitions holding event times the
    spine can reach: a partition filter skips whole files at no cost, while a row
    filter on event_ts would copy every row that passes."""
    import polars as pl

    from featurestore.engines.pit import event_time_bounds

    scan = pl.scan_delta(str(paths.views[spec.name]))
    bounds = event_time_bounds(spine, timestamp="ts", ttl_us=spec.ttl_us)
    if bounds is None:
        return scan.head(0)
    after, up_to = bounds
    keep = pl.col("event_date") <= up_to.date()
    if after is not None:
        keep &= pl.col("event_date") >= after.date()
    return scan.filter(keep)


def run_ours(paths):
    import polars as pl

    from featurestore.engines.pit import FeatureFrame, point_in_time_join

    spine = pl.read_parquet(paths.spine)
    views = [
        FeatureFrame(
            name=spec.name,
            frame=_scan(paths, spine, spec),
            join_keys=("driver_id",),
            spine_keys=("driver_id",),
            features=tuple(spec.features),
            output_names=tuple(spec.features),
            ttl_us=spec.ttl_us,
        )
        for spec in datagen.VIEWS
    ]
    return point_in_time_join(spine, timestamp="ts", views=views)


def run_polars(paths):
    import polars as pl

    spine = pl.read_parquet(paths.spine)
    columns = ["driver_id", "event_ts"]
    frames = pl.collect_all(
        [_scan(paths, spine, s).select(*columns, *s.features).sort(columns) for s in datagen.VIEWS]
    )
    out = spine.with_row_index("__row").sort("ts")
    for spec, frame in zip(datagen.VIEWS, frames, strict=True):
        out = out.join_asof(
            frame,
            left_on="ts",
            right_on="event_ts",
            by="driver_id",
            strategy="backward",
            tolerance=f"{spec.ttl_us - 1}us",
            check_sortedness=False,  # sorted just above, by key then time
        ).drop("event_ts")
    return out.sort("__row").drop("__row")


def run_polars_ts(paths):
    import polars as pl

    spine = pl.read_parquet(paths.spine)
    frames = pl.collect_all(
        [
            _scan(paths, spine, s)
            .select("driver_id", "event_ts", "created_ts", *s.features)
            .sort("event_ts", "created_ts")
            for s in datagen.VIEWS
        ]
    )
    out = spine.with_row_index("__row").sort("ts")
    for spec, frame in zip(datagen.VIEWS, frames, strict=True):
        out = out.join_asof(
            frame,
            left_on="ts",
            right_on="event_ts",
            by="driver_id",
            strategy="backward",
            tolerance=f"{spec.ttl_us - 1}us",
            check_sortedness=False,  # sorted just above by time (then created time)
        ).drop("event_ts", "created_ts")
    return out.sort("__row").drop("__row")


def run_duckdb(paths, *, dedup: bool = False):
    import duckdb
    import polars as pl

    spine = pl.read_parquet(paths.spine)
    extra = ["created_ts"] if dedup else []
    frames = pl.collect_all(
        [
            _scan(paths, spine, s).select("driver_id", "event_ts", *extra, *s.features)
            for s in datagen.VIEWS
        ]
    )
    con = duckdb.connect()
    con.register("spine", spine.with_row_index("__row").to_arrow())
    selects, joins = [], []
    for n, (spec, frame) in enumerate(zip(datagen.VIEWS, frames, strict=True)):
        if dedup:
            con.register(f"raw{n}", frame.to_arrow())
            # One max_by of a struct, not one per feature: max_by skips null values,
            # and a correction that nulls a feature must win with its null.
            fields = ", ".join(spec.features)
            con.execute(
                f"CREATE TEMP VIEW v{n} AS SELECT driver_id, event_ts, "
                f"unnest(max_by(struct_pack({fields}), created_ts)) "
                f"FROM raw{n} GROUP BY driver_id, event_ts"
            )
        else:
            con.register(f"v{n}", frame.to_arrow())
        fresh = f"epoch_us(v{n}.event_ts) > epoch_us(s.ts) - {spec.ttl_us}"
        selects += [f"CASE WHEN {fresh} THEN v{n}.{f} END AS {f}" for f in spec.features]
        joins.append(
            f"ASOF LEFT JOIN v{n} ON s.driver_id = v{n}.driver_id AND s.ts >= v{n}.event_ts"
        )
    sql = (
        f"SELECT s.driver_id, s.ts, s.label, {', '.join(selects)} "
        f"FROM spine s {' '.join(joins)} ORDER BY s.__row"
    )
    return pl.from_arrow(con.sql(sql).to_arrow_table())


def run_duckdb_maxby(paths):
    return run_duckdb(paths, dedup=True)


RUNNERS = {
    "ours": run_ours,
    "polars": run_polars,
    "duckdb": run_duckdb,
    "polars_ts": run_polars_ts,
    "duckdb_maxby": run_duckdb_maxby,
}


# --- one engine, in its own process ------------------------------------------------------


def _rss_mb() -> float:
    """Peak RSS of this process so far, in MB.

    VmHWM belongs to the address space, which exec replaces; ru_maxrss would also
    count the parent's peak from before the fork, and so every engine's.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: KiB


def worker(engine: str, scale: float, out_path: str, corrections: float) -> None:
    """Run ``engine`` once per "run" line on stdin, printing the seconds taken; on
    "done", save the last result and print a JSON report."""
    import polars as pl  # imported before timing, as every engine needs it

    if engine == "ours":
        import featurestore.engines.pit  # noqa: F401
    elif engine.startswith("duckdb"):
        import duckdb  # noqa: F401
    paths = datagen.ensure_data(scale, corrections=corrections)
    rss_imports = _rss_mb()
    result = None
    for line in sys.stdin:
        if line.strip() == "done":
            break
        t0 = time.perf_counter()
        result = RUNNERS[engine](paths)
        print(time.perf_counter() - t0, flush=True)
    peak = _rss_mb()
    assert isinstance(result, pl.DataFrame)
    result.write_parquet(out_path)
    print(json.dumps({"peak_rss_mb": peak, "rss_after_imports_mb": rss_imports}), flush=True)


# --- the driver -----------------------------------------------------------------------------


class _Worker:
    """One engine in its own process, run on demand."""

    def __init__(self, engine: str, scale: float, out_path: str, corrections: float) -> None:
        env = dict(os.environ)
        env.setdefault("NUMBA_CACHE_DIR", os.path.join(tempfile.gettempdir(), "featurestore-numba"))
        cmd = [sys.executable, __file__, "--worker", engine, "--scale", str(scale)]
        cmd += ["--corrections", str(corrections)]
        self.engine = engine
        self.proc = subprocess.Popen(
            [*cmd, "--out", out_path],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _ask(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise SystemExit(f"{self.engine} failed (exit code {self.proc.wait()})")
        return answer

    def run(self) -> float:
        return float(self._ask("run"))

    def finish(self) -> dict:
        report = json.loads(self._ask("done"))
        self.proc.wait()
        return report


def _check_agreement(outputs: dict[str, str]) -> str:
    """Every engine's output equals ours, cell for cell."""
    import polars as pl

    frames = {engine: pl.read_parquet(path) for engine, path in outputs.items()}
    reference = frames["ours"]
    for engine, frame in frames.items():
        if frame.columns != reference.columns:
            raise SystemExit(f"{engine} columns differ: {frame.columns} vs {reference.columns}")
        for col in reference.columns:
            if not frame[col].cast(reference[col].dtype).equals(reference[col]):
                bad = (frame[col].cast(reference[col].dtype) != reference[col]).arg_true()
                raise SystemExit(f"{engine} differs from ours in {col!r} at rows {bad[:5]}")
    nulls = reference.select(pl.exclude("driver_id", "ts", "label").null_count()).row(0)
    return f"all {len(frames)} engines agree on {reference.height} rows (nulls by feature {nulls})"


def bench_scale(scale: float, repeats: int, engines: list[str], corrections: float) -> dict:
    t0 = time.perf_counter()
    paths = datagen.ensure_data(scale, corrections=corrections)
    sizes = datagen.sizes(scale)
    extra = f", {corrections:.0%} same-time corrections" if corrections else ""
    print(
        f"\nscale {scale:g}: spine {sizes.spine_rows:,} rows, 2 views x {sizes.rows_per_view:,}"
        f"{extra}"
    )
    print(f"  data ready in {time.perf_counter() - t0:.1f}s under {paths.root}")
    reports: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        outputs = {engine: os.path.join(tmp, f"{engine}.parquet") for engine in engines}
        workers = [_Worker(engine, scale, outputs[engine], corrections) for engine in engines]
        times: dict[str, list[float]] = {engine: [] for engine in engines}
        # Round robin, the order rotated each round, so that noise from other work
        # on the machine falls on every engine alike. Round 0 is the warm-up.
        for round_ in range(repeats + 1):
            shift = round_ % len(workers)
            for w in workers[shift:] + workers[:shift]:
                times[w.engine].append(w.run())
        for w in workers:
            timed = sorted(times[w.engine][1:])
            reports[w.engine] = {
                "first_s": times[w.engine][0],
                "best_s": timed[0],
                "median_s": timed[len(timed) // 2],
                **w.finish(),
            }
            r = reports[w.engine]
            print(
                f"  {w.engine:12s} best {r['best_s']:.3f}s  median {r['median_s']:.3f}s  "
                f"first {r['first_s']:.3f}s  peak RSS {r['peak_rss_mb']:.0f} MB "
                f"(after imports {r['rss_after_imports_mb']:.0f} MB)"
            )
        # With same-time corrections, engines that order by event time alone pick any
        # of the tied rows: they are timed, but neither compared nor counted as peers.
        wrong = TIME_ONLY if corrections else set()
        checked = {e: path for e, path in outputs.items() if e not in wrong}
        agreement = _check_agreement(checked) if "ours" in outputs else "not checked"
        if skipped := sorted(wrong & set(engines)):
            agreement += f"; not correct on this data, so not peers: {', '.join(skipped)}"
    print(f"  {agreement}")
    if "ours" in reports:
        for engine in engines:
            if engine != "ours":
                best = reports[engine]["best_s"] / reports["ours"]["best_s"]
                median = reports[engine]["median_s"] / reports["ours"]["median_s"]
                print(f"  ours is {best:.2f}x faster than {engine} (medians: {median:.2f}x)")
        peers = [e for e in engines if e != "ours" and e not in wrong]
        if peers:
            fastest = min(peers, key=lambda e: reports[e]["median_s"])
            median = reports[fastest]["median_s"] / reports["ours"]["median_s"]
            print(f"  fastest peer: {fastest}; ours is {median:.2f}x faster (medians)")
    return {
        "scale": scale,
        "reports": reports,
        "agreement": agreement,
        "sizes": sizes,
        "not_peers": sorted(wrong),
        "corrections": corrections,
    }


def _machine() -> dict[str, str]:
    model = cpu_model()
    import duckdb
    import numba
    import polars as pl

    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "versions": (
            f"polars {pl.__version__}, duckdb {duckdb.__version__}, numba {numba.__version__}"
        ),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _scaling_lines(results: list[dict]) -> list[str]:
    """Time growth between consecutive scales, next to n and n log n growth."""
    lines = []
    for small, big in itertools.pairwise(results):
        n_small = small["sizes"].rows_per_view + small["sizes"].spine_rows
        n_big = big["sizes"].rows_per_view + big["sizes"].spine_rows
        nlogn = (n_big * math.log(n_big)) / (n_small * math.log(n_small))
        for engine in small["reports"]:
            growth = big["reports"][engine]["best_s"] / small["reports"][engine]["best_s"]
            lines.append(
                f"{engine}: scale {small['scale']:g} -> {big['scale']:g}: time x{growth:.1f} "
                f"(rows x{n_big / n_small:.0f}, n log n x{nlogn:.1f})"
            )
    return lines


def _markdown(results: list[dict], machine: dict[str, str], command: str) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    scales = ", ".join(f"{r['scale']:g}" for r in results)
    corr = results[0].get("corrections", 0)
    out = [
        f"### {now}: scale {scales}" + (f", {corr:.0%} same-time corrections" if corr else ""),
        "",
        f"- Command: `{command}`",
        f"- Machine: {machine['nproc']} cores, {machine['cpu']}; Python {machine['python']}; "
        f"{machine['versions']}; load average at start {machine['load']}",
        "- Wall time end to end (Delta tables read -> joined DataFrame), best of the timed "
        "runs after one warm-up; peak RSS of the engine's own process.",
        "",
        "| scale | engine | best (s) | median (s) | first run (s) | peak RSS (MB) | vs ours |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ours = r["reports"].get("ours")
        for engine, rep in r["reports"].items():
            ratio = f"{rep['best_s'] / ours['best_s']:.2f}x slower" if ours else "-"
            if engine == "ours":
                ratio = "-"
            out.append(
                f"| {r['scale']:g} | {engine} | {rep['best_s']:.3f} | {rep['median_s']:.3f} | "
                f"{rep['first_s']:.3f} | {rep['peak_rss_mb']:.0f} | {ratio} |"
            )
    out.append("")
    out += [f"- {r['agreement'].capitalize()} (scale {r['scale']:g})." for r in results]
    for r in results:
        peers = {
            e: rep for e, rep in r["reports"].items() if e != "ours" and e not in r["not_peers"]
        }
        if "ours" in r["reports"] and peers:
            fastest = min(peers, key=lambda e: peers[e]["median_s"])
            ratio = peers[fastest]["median_s"] / r["reports"]["ours"]["median_s"]
            out.append(
                f"- Scale {r['scale']:g}: fastest peer {fastest}; "
                f"ours {ratio:.2f}x faster (medians)."
            )
    out += [f"- Scaling, {line}." for line in _scaling_lines(results)]
    return "\n".join(out) + "\n"


def write_results(text: str) -> None:
    """Append ``text`` to this benchmark's section of RESULTS.md (created if missing)."""
    append_section(SECTION, text, RESULTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, nargs="+", default=[1.0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after the warm-up")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--write-results", action="store_true", help=f"append to {RESULTS}")
    parser.add_argument(
        "--corrections",
        type=float,
        default=0.0,
        help="share of rows with a same-time correction (issue 18's workload: 0.02)",
    )
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.scale[0], args.out, args.corrections)
        return
    engines = [e for e in args.engines.split(",") if e]
    machine = _machine()
    print(f"{machine['nproc']} cores, {machine['cpu']}, load {machine['load']}")
    results = [bench_scale(s, args.repeats, engines, args.corrections) for s in args.scale]
    for line in _scaling_lines(results):
        print(f"  scaling, {line}")
    if args.write_results:
        command = "python benchmarks/pit_join.py " + " ".join(sys.argv[1:])
        write_results(_markdown(results, machine, command))
        print(f"results written to {RESULTS}")


if __name__ == "__main__":
    main()
