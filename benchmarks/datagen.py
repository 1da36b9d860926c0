"""Deterministic generated data for the benchmarks.

At scale 1: 100k distinct ``driver_id`` keys (int64), two feature views of 1M rows
each over 30 days with three features each, ``created_ts = event_ts + a small random
delay`` and a 100k-row spine with random keys, random timestamps and a label. Every
size scales linearly with ``scale``.

The views are written as Delta tables partitioned by ``event_date``, each partition
sorted by (driver_id, event_ts, created_ts), which is how the offline store lays
rows out. They live under ``benchmarks/.data/`` (git-ignored) and are reused when
present. Within a view, no two rows share (driver_id, event_ts): the comparison
engines (Polars ``join_asof``, DuckDB ``ASOF JOIN``) order by event time only, so
their answer is only defined without such ties. ``corrections=0.02`` adds, for 2%
of the rows, a correction: the same key and event time, created up to 10 minutes
later, with other values (the workload issue 18 measured); only formulations that
order by created_ts too (or dedup with ``max_by``) are correct on that data.

Run ``python benchmarks/datagen.py --scale 1`` to build the data ahead of time.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

DATA_ROOT = Path(__file__).resolve().parent / ".data"
START = datetime(2024, 1, 1, tzinfo=UTC)
START_US = int(START.timestamp()) * 1_000_000
DAY_US = 86_400 * 1_000_000
DAYS = 30
# Bump when the generated data changes, so stale copies under .data/ are rebuilt.
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ViewSpec:
    name: str
    ttl_us: int
    features: dict[str, type[pl.DataType]]
    seed: int


# Two TTLs: a short one, so that many spine rows find their latest row expired, and
# a long one, so that most find a value.
VIEWS = (
    ViewSpec(
        "driver_stats",
        2 * DAY_US,
        {"conv_rate": pl.Float64, "acc_rate": pl.Float32, "avg_daily_trips": pl.Int64},
        seed=11,
    ),
    ViewSpec(
        "driver_trips",
        7 * DAY_US,
        {"trips_today": pl.Int32, "rating": pl.Float64, "earnings": pl.Float64},
        seed=12,
    ),
)
SPINE_SEED = 10


@dataclass(frozen=True)
class Sizes:
    keys: int
    rows_per_view: int
    spine_rows: int


def sizes(scale: float) -> Sizes:
    return Sizes(
        keys=max(10, round(100_000 * scale)),
        rows_per_view=max(100, round(1_000_000 * scale)),
        spine_rows=max(10, round(100_000 * scale)),
    )


def _utc(us: np.ndarray) -> pl.Series:
    return pl.Series(us, dtype=pl.Int64).cast(pl.Datetime("us", "UTC"))


def make_view(spec: ViewSpec, scale: float, corrections: float = 0.0) -> pl.DataFrame:
    """One view's rows, sorted by (event_date, driver_id, event_ts, created_ts), with
    ``corrections`` (a share of the rows) same-time corrections added."""
    sz = sizes(scale)
    rng = np.random.default_rng(spec.seed)
    key = rng.integers(0, sz.keys, sz.rows_per_view, dtype=np.int64)
    event = START_US + rng.integers(0, DAYS * DAY_US, sz.rows_per_view, dtype=np.int64)
    order = np.lexsort((event, key))
    key, event = key[order], event[order]
    # Drop (key, event_ts) duplicates so the comparison engines' answer is defined.
    keep = np.ones(key.size, dtype=bool)
    keep[1:] = (key[1:] != key[:-1]) | (event[1:] != event[:-1])
    key, event = key[keep], event[keep]
    n = key.size
    created = event + rng.integers(0, 300 * 1_000_000, n, dtype=np.int64)
    if corrections > 0:
        pick = rng.choice(n, round(corrections * n), replace=False)
        later = rng.integers(1_000_000, 600 * 1_000_000, pick.size, dtype=np.int64)
        key = np.concatenate([key, key[pick]])
        event = np.concatenate([event, event[pick]])
        created = np.concatenate([created, created[pick] + later])
        n = key.size
    cols: dict[str, pl.Series] = {
        "driver_id": pl.Series(key),
        "event_ts": _utc(event),
        "created_ts": _utc(created),
    }
    for fname, dtype in spec.features.items():
        values = (
            rng.random(n) * 100 if dtype in (pl.Float64, pl.Float32) else rng.integers(0, 50, n)
        )
        series = pl.Series(fname, values).cast(dtype)
        # About 1% nulls: a null feature value must come back as null, not an older value.
        nulls = pl.Series(rng.random(n) < 0.01)
        cols[fname] = pl.select(pl.when(nulls).then(None).otherwise(series)).to_series()
    df = pl.DataFrame(cols).with_columns(event_date=pl.col("event_ts").dt.date())
    return df.sort("event_date", "driver_id", "event_ts", "created_ts")


def make_spine(scale: float) -> pl.DataFrame:
    """Random keys (a few with no feature rows at all), random times, a label."""
    sz = sizes(scale)
    rng = np.random.default_rng(SPINE_SEED)
    n = sz.spine_rows
    key = rng.integers(0, sz.keys + sz.keys // 20, n, dtype=np.int64)
    ts = START_US + rng.integers(0, DAYS * DAY_US, n, dtype=np.int64)
    return pl.DataFrame(
        {
            "driver_id": pl.Series(key),
            "ts": _utc(ts),
            "label": pl.Series(rng.integers(0, 2, n, dtype=np.int8)),
        }
    )


@dataclass(frozen=True)
class Paths:
    root: Path
    spine: Path
    views: dict[str, Path]


def _scale_dir(scale: float, corrections: float = 0.0) -> Path:
    suffix = f"_corrections_{corrections:g}" if corrections > 0 else ""
    return DATA_ROOT / f"v{FORMAT_VERSION}" / f"scale_{scale:g}{suffix}"


def ensure_data(scale: float, *, rebuild: bool = False, corrections: float = 0.0) -> Paths:
    """Write the spine (Parquet) and both views (Delta) for ``scale`` unless present."""
    from deltalake import write_deltalake

    root = _scale_dir(scale, corrections)
    paths = Paths(
        root=root,
        spine=root / "spine.parquet",
        views={v.name: root / v.name for v in VIEWS},
    )
    done = root / "COMPLETE"
    if done.exists() and not rebuild:
        return paths
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    make_spine(scale).write_parquet(paths.spine)
    for spec in VIEWS:
        # Rows are already in (event_date, key, event_ts, created_ts) order, so each
        # date partition is written sorted, as the offline store writes it.
        write_deltalake(
            str(paths.views[spec.name]),
            make_view(spec, scale, corrections),
            partition_by=["event_date"],
        )
    done.write_text("ok\n")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--corrections", type=float, default=0.0, help="e.g. 0.02")
    args = parser.parse_args()
    paths = ensure_data(args.scale, rebuild=args.rebuild, corrections=args.corrections)
    print(f"data for scale {args.scale:g} in {paths.root}")


if __name__ == "__main__":
    main()
