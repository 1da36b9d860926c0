"""Windowed aggregations for a training spine: featurestore vs Polars vs DuckDB.

Workload (seeded): 1M events over 30 days for 100k keys (uniform), one float
column; a 100k-row spine of random keys and times. Twelve features: sum, count,
mean and max over 1h, 1d and 7d windows, each covering ``t - window < event_ts <= t``.
Three layouts of the same events: ``offline``, as the offline store writes them
(daily partitions, each sorted by key and time); ``by-key``, one table sorted by
key and time (after a compaction); ``shuffled``, no useful order at all.

Peers, each a correct formulation end to end (DataFrames in, one row per spine
row out):

* polars-rolling: spine rows appended to the events, ``rolling(closed="right",
  group_by=key)`` over the union, spine rows picked back out;
* polars-join: equi-join spine x events on key, filter per window, group by row;
* duckdb-window: the same union with ``RANGE BETWEEN w-1 PRECEDING AND CURRENT ROW``
  frames on integer microseconds;
* duckdb-join: the equi-join with the window as a join condition, then GROUP BY.

featurestore runs with its automatic choice of kernel path, and with each path
forced (scan, sorted) for reference. All answers are checked to agree (1e-9
relative). Times are the best of ``--repeats`` runs after a warm-up run, per
engine. ``--write-results`` records them in benchmarks/RESULTS.md, with the load
average at the start (the machine is shared: compare figures of one run only).

Run: ``NUMBA_CACHE_DIR=/tmp/featurestore-numba python benchmarks/aggregations.py``;
``--scale 10`` multiplies events, keys and spine rows by 10 (``--peers polars-join``
keeps the run short: the window formulations take minutes there).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
from _results import append_section, cpu_model

from featurestore.engines.aggregate.asof import aggregate_spine
from featurestore.engines.aggregate.kernels import Strategy
from featurestore.engines.aggregate.spec import WindowSpec

HOUR = 3_600_000_000
WINDOWS = {"1h": HOUR, "1d": 24 * HOUR, "7d": 7 * 24 * HOUR}
FUNCS = ("sum", "count", "mean", "max")
START_US = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTION = "## Windowed aggregations (benchmarks/aggregations.py)"
UTC_US = pl.Datetime("us", "UTC")


def make_data(
    n_events: int, n_keys: int, n_spine: int, seed: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    span = 30 * 24 * HOUR
    events = pl.DataFrame(
        {
            "key": rng.integers(0, n_keys, n_events),
            "event_ts": START_US + rng.integers(0, span, n_events),
            "amount": rng.lognormal(3.0, 1.0, n_events),
        }
    ).with_columns(pl.col("event_ts").cast(UTC_US))
    spine = pl.DataFrame(
        {
            "key": rng.integers(0, n_keys, n_spine),
            "timestamp": START_US + rng.integers(0, span, n_spine),
            "label": rng.integers(0, 2, n_spine),
        }
    ).with_columns(pl.col("timestamp").cast(UTC_US))
    return events, spine


def names() -> list[str]:
    return [f"{f}_{w}" for w in WINDOWS for f in FUNCS]


def ours(events: pl.DataFrame, spine: pl.DataFrame, strategy: Strategy = "auto") -> pl.DataFrame:
    aggs = [
        (f"{f}_{w}", "amount", WindowSpec(f, us))  # type: ignore[arg-type]
        for w, us in WINDOWS.items()
        for f in FUNCS
    ]
    return aggregate_spine(
        events=events,
        spine=spine,
        keys=["key"],
        created_ts=None,
        aggregations=aggs,
        strategy=strategy,
    ).select(names())


def offline_layout(events: pl.DataFrame) -> pl.DataFrame:
    """The events as the offline store lays them out: by day, then key and time."""
    day = pl.col("event_ts").dt.date()
    return events.sort(day, "key", "event_ts")


LAYOUTS: dict[str, Callable[[pl.DataFrame], pl.DataFrame]] = {
    "offline": offline_layout,
    "by-key": lambda events: events.sort("key", "event_ts"),
    "shuffled": lambda events: events,  # make_data draws keys and times at random
}


def polars_rolling(events: pl.DataFrame, spine: pl.DataFrame) -> pl.DataFrame:
    sp = spine.select("key", pl.col("timestamp").alias("ts")).with_row_index("row")
    ev = events.select("key", pl.col("event_ts").alias("ts"), "amount")
    union = pl.concat(
        [
            ev.with_columns(pl.lit(None, pl.UInt32).alias("row")),
            sp.with_columns(pl.lit(None, pl.Float64).alias("amount")),
        ],
        how="diagonal",
    ).sort("key", "ts")
    parts = [union.select("row")]
    for w, us in WINDOWS.items():
        rolled = union.rolling("ts", period=f"{us}us", closed="right", group_by="key").agg(
            pl.col("amount").sum().alias(f"sum_{w}"),
            pl.col("amount").count().alias(f"count_{w}"),
            pl.col("amount").mean().alias(f"mean_{w}"),
            pl.col("amount").max().alias(f"max_{w}"),
        )
        # rolling() returns one row per input row, in the (sorted) input order.
        parts.append(rolled.drop("key", "ts"))
    return (
        pl.concat(parts, how="horizontal")
        .filter(pl.col("row").is_not_null())
        .sort("row")
        .select(names())
    )


def polars_join(events: pl.DataFrame, spine: pl.DataFrame) -> pl.DataFrame:
    sp = spine.select("key", "timestamp").with_row_index("row").lazy()
    ev = events.select("key", "event_ts", "amount").lazy()
    age = pl.col("timestamp") - pl.col("event_ts")
    aggs = []
    for w, us in WINDOWS.items():
        inside = pl.col("amount").filter(
            (age >= pl.duration(microseconds=0)) & (age < pl.duration(microseconds=us))
        )
        aggs += [
            inside.sum().alias(f"sum_{w}"),
            inside.count().alias(f"count_{w}"),
            inside.mean().alias(f"mean_{w}"),
            inside.max().alias(f"max_{w}"),
        ]
    return (
        sp.join(ev, on="key", how="left")
        .group_by("row")
        .agg(aggs)
        .sort("row")
        .select(names())
        .collect()
    )


def _duck_frames(con: duckdb.DuckDBPyConnection, events: pl.DataFrame, spine: pl.DataFrame) -> None:
    ev = events.select("key", pl.col("event_ts").to_physical().alias("ts"), "amount")
    sp = spine.select("key", pl.col("timestamp").to_physical().alias("ts")).with_row_index("row")
    con.register("ev", ev.to_arrow())
    con.register("sp", sp.to_arrow())


def duckdb_window(events: pl.DataFrame, spine: pl.DataFrame) -> pl.DataFrame:
    con = duckdb.connect()
    _duck_frames(con, events, spine)
    cols, wins = [], []
    for w, us in WINDOWS.items():
        cols += [f"{f.replace('mean', 'avg')}(amount) OVER w{w} AS {f}_{w}" for f in FUNCS]
        # Integer RANGE frames: us - 1 PRECEDING is exactly ts > t - window.
        frame = f"RANGE BETWEEN {us - 1} PRECEDING AND CURRENT ROW"
        wins.append(f"w{w} AS (PARTITION BY key ORDER BY ts {frame})")
    sql = f"""
        WITH u AS (
            SELECT key, ts, amount, NULL::BIGINT AS row FROM ev
            UNION ALL SELECT key, ts, NULL::DOUBLE, row FROM sp
        ), r AS (SELECT row, {", ".join(cols)} FROM u WINDOW {", ".join(wins)})
        SELECT {", ".join(names())} FROM r WHERE row IS NOT NULL ORDER BY row
    """
    return con.sql(sql).pl()


def duckdb_join(events: pl.DataFrame, spine: pl.DataFrame) -> pl.DataFrame:
    con = duckdb.connect()
    _duck_frames(con, events, spine)
    cols = []
    for w, us in WINDOWS.items():
        inside = f"FILTER (WHERE ev.ts > sp.ts - {us})"
        cols += [
            f"sum(amount) {inside} AS sum_{w}",
            f"count(amount) {inside} AS count_{w}",
            f"avg(amount) {inside} AS mean_{w}",
            f"max(amount) {inside} AS max_{w}",
        ]
    longest = max(WINDOWS.values())
    sql = f"""
        SELECT {", ".join(cols)} FROM sp LEFT JOIN ev
          ON ev.key = sp.key AND ev.ts <= sp.ts AND ev.ts > sp.ts - {longest}
        GROUP BY sp.row ORDER BY sp.row
    """
    return con.sql(sql).pl().select(names())


def agree(ours: pl.DataFrame, peer: pl.DataFrame, who: str) -> None:
    """Equal within 1e-9 relative. Windows without events are compared by their count
    only: we return null there, the peers 0 or, for sliding add/subtract sums
    (polars-rolling), a rounding residue such as -8.9e-16."""
    for w in WINDOWS:
        mine, theirs = ours[f"count_{w}"].to_numpy(), peer[f"count_{w}"].fill_null(0).to_numpy()
        if not np.array_equal(mine, theirs):
            raise SystemExit(f"{who}: count_{w} differs")
        some = mine > 0
        for f in ("sum", "mean", "max"):
            name = f"{f}_{w}"
            x = ours[name].cast(pl.Float64).to_numpy()[some]
            y = peer[name].cast(pl.Float64).to_numpy()[some]
            bad = ~(np.abs(x - y) <= 1e-9 * np.maximum(np.abs(x), np.abs(y)))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise SystemExit(f"{who}: {name} differs, e.g. {x[i]!r} vs {y[i]!r}")


def timed(runners: dict[str, Callable[[], pl.DataFrame]], repeats: int) -> tuple[dict, dict]:
    """Best wall time per runner: one warm-up run, then ``repeats`` timed runs."""
    times: dict[str, float] = {}
    outputs: dict[str, pl.DataFrame] = {}
    for name, fn in runners.items():
        outputs[name] = fn()  # warm-up: Numba cache load, allocator, file caches
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            outputs[name] = fn()
            best = min(best, time.perf_counter() - t0)
        times[name] = best
    return times, outputs


def machine() -> str:
    cpu = cpu_model()
    return f"{os.cpu_count()} CPUs (nproc), {cpu}, Python {platform.python_version()}"


def write_results(text: str) -> None:
    """Append ``text`` to this benchmark's section of RESULTS.md (created if missing)."""
    append_section(SECTION, text, RESULTS)


OURS = {"featurestore": "auto", "featurestore-scan": "scan", "featurestore-sorted": "sorted"}


PEERS: dict[str, Callable[[pl.DataFrame, pl.DataFrame], pl.DataFrame]] = {
    "polars-rolling": polars_rolling,
    "polars-join": polars_join,
    "duckdb-window": duckdb_window,
    "duckdb-join": duckdb_join,
}


def run_layout(
    events: pl.DataFrame, spine: pl.DataFrame, repeats: int, peers: list[str]
) -> dict[str, float]:
    runners: dict[str, Callable[[], pl.DataFrame]] = {
        name: (lambda s=strategy: ours(events, spine, s)) for name, strategy in OURS.items()
    }
    runners |= {name: (lambda f=PEERS[name]: f(events, spine)) for name in peers}
    times, outputs = timed(runners, repeats)
    for name, out in outputs.items():
        if name != "featurestore":
            agree(outputs["featurestore"], out, name)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--spine", type=int, default=100_000)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiplies --events, --keys and --spine"
    )
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help=f"comma-separated peers to run (default all: {','.join(PEERS)})",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layout", choices=[*LAYOUTS, "all"], default="all")
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    args.events, args.keys, args.spine = (
        round(n * args.scale) for n in (args.events, args.keys, args.spine)
    )
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = sorted(set(peers) - set(PEERS))
    if unknown or not peers:
        raise SystemExit(f"--peers: unknown {unknown}; choose from {', '.join(PEERS)}")

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    events, spine = make_data(args.events, args.keys, args.spine, args.seed)
    layouts = list(LAYOUTS) if args.layout == "all" else [args.layout]
    results: dict[str, dict[str, float]] = {}
    for layout in layouts:
        results[layout] = run_layout(LAYOUTS[layout](events), spine, args.repeats, peers)
        print(f"\n{layout} layout: all engines agree (1e-9 relative)")
        for name, t in results[layout].items():
            print(f"{name:>20}: {t * 1000:8.1f} ms")
    summary = []
    for layout, times in results.items():
        peers = {k: v for k, v in times.items() if k not in OURS}
        fastest = min(peers, key=peers.__getitem__)
        ratio = peers[fastest] / times["featurestore"]
        summary.append(
            f"{layout} layout: featurestore is {ratio:.1f}x faster than the fastest peer "
            f"({fastest})"
        )
    print("\n" + "\n".join(summary))
    if args.write_results:
        write_results(report(args, results, summary, load))
        print(f"wrote {RESULTS}")


def report(
    args: argparse.Namespace, results: dict[str, dict[str, float]], summary: list[str], load: str
) -> str:
    versions = f"polars {pl.__version__}, duckdb {duckdb.__version__}, numpy {np.__version__}"
    layouts = list(results)
    head = (
        "| engine | " + " | ".join(f"{lay} (ms) | {lay} vs featurestore" for lay in layouts) + " |"
    )
    rule = "|---|" + "---|---|" * len(layouts)
    rows = []
    for name in results[layouts[0]]:
        cells = []
        for lay in layouts:
            t, base = results[lay][name], results[lay]["featurestore"]
            cells.append(f"{t * 1000:.1f} | {t / base:.1f}x")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    cmd = " ".join(["python", "benchmarks/aggregations.py", *sys.argv[1:]])
    table = "\n".join([head, rule, *rows])
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"""### {stamp}: scale {args.scale:g}

- command: `{cmd}`
- machine: {machine()}; load average at start {load}
- date: {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}; {versions}
- workload (scale {args.scale:g}): {args.events:,} events, {args.keys:,} keys, 30 days;
  {args.spine:,}-row spine;
  sum/count/mean/max over 1h/1d/7d (12 features); best of {args.repeats} runs after a
  warm-up, per engine; all engines agree within 1e-9 relative

{table}

"""
        + "\n".join(f"- {line}" for line in summary)
        + "\n"
    )


if __name__ == "__main__":
    main()
