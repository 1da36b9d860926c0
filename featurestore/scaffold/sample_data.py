"""Deterministic sample data for the quickstart repo (no downloads)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

SAMPLE_END = datetime(2026, 1, 8, tzinfo=UTC)


def current_hour() -> datetime:
    now = datetime.now(UTC)
    return now.replace(minute=0, second=0, microsecond=0)


def driver_stats(
    *, drivers: int = 20, days: int = 7, seed: int = 7, end: datetime = SAMPLE_END
) -> pl.DataFrame:
    """Hourly stats for ``drivers`` drivers over ``days`` days ending at ``end``."""
    rng = np.random.default_rng(seed)
    hours = days * 24
    start = end - timedelta(hours=hours)
    ids = np.repeat(np.arange(1001, 1001 + drivers, dtype=np.int64), hours)
    offsets = np.tile(np.arange(hours, dtype=np.int64), drivers)
    event = pl.Series([start]).dt.cast_time_unit("us")[0]
    ts = pl.datetime_range(
        event, event + timedelta(hours=hours - 1), "1h", time_unit="us", time_zone="UTC", eager=True
    )
    frame = pl.DataFrame(
        {
            "driver_id": ids,
            "event_timestamp": ts.gather(offsets),
            "conv_rate": rng.random(ids.size).round(4),
            "acc_rate": rng.random(ids.size).round(4),
            "avg_daily_trips": rng.integers(0, 1000, ids.size),
        }
    )
    # rows land a few minutes after the hour they describe
    return frame.with_columns(
        created=pl.col("event_timestamp")
        + pl.duration(minutes=pl.lit(rng.integers(1, 30, ids.size)))
    )


def spine(*, drivers: int = 5, end: datetime = SAMPLE_END) -> pl.DataFrame:
    """A training spine over the sample data: each of ``drivers`` drivers at four
    times inside the sampled week, half past an hour, so that each row falls
    between two source events and takes the earlier one."""
    ago = [timedelta(hours=h, minutes=-30) for h in (2, 20, 50, 100)]
    times = [end - a for a in ago]
    ids = [1001 + d for d in range(drivers) for _ in times]
    return pl.DataFrame(
        {
            "driver_id": pl.Series(ids, dtype=pl.Int64),
            "event_timestamp": pl.Series(times * drivers, dtype=pl.Datetime("us", "UTC")),
        }
    )


def write_sample_data(repo: Path, *, end: datetime | None = None) -> list[Path]:
    """Write the sample source and a spine for ``featurestore dataset create``;
    ``end`` defaults to the current hour, so that a fresh demo has values that are
    neither expired nor in the future."""
    end = end or current_hour()
    data = repo / "data"
    data.mkdir(parents=True, exist_ok=True)
    path = data / "driver_stats.parquet"
    driver_stats(end=end).write_parquet(path)
    spine_path = data / "spine.parquet"
    spine(end=end).write_parquet(spine_path)
    return [path, spine_path]
