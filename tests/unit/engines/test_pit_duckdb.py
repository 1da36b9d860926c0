"""point_in_time_join row for row against DuckDB's ASOF JOIN on ~100k generated rows.

There are no ties on (key, event_ts), so DuckDB's answer is defined; the TTL is
applied to DuckDB's match afterwards (if the latest row is too old, so is every
older one).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from featurestore.engines.pit import FeatureFrame, point_in_time_join

duckdb = pytest.importorskip("duckdb")

DAY_US = 86_400 * 1_000_000
UTC_US = pl.Datetime("us", "UTC")


def _data(seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    n, keys, m = 100_000, 20_000, 20_000
    frame = (
        pl.DataFrame(
            {
                "k": rng.integers(0, keys, n),
                "event_ts": 1_700_000_000_000_000 + rng.integers(0, 30 * DAY_US, n),
                "x": rng.random(n),
                "y": rng.integers(0, 1_000, n).astype(np.int32),
            }
        )
        .unique(["k", "event_ts"], keep="first", maintain_order=True)
        .with_columns(
            created_ts=pl.col("event_ts") + 1_000_000,
            x=pl.when(pl.col("y") < 10).then(None).otherwise(pl.col("x")),
        )
    )
    spine_keys = pl.Series("k", rng.integers(0, keys + 2_000, m))
    spine = pl.DataFrame(
        {
            "k": spine_keys.set(spine_keys % 97 == 0, None),  # some null keys
            "ts": 1_700_000_000_000_000 + rng.integers(0, 31 * DAY_US, m),
            "label": rng.integers(0, 2, m),
        }
    )
    return spine, frame


def _duckdb(spine: pl.DataFrame, frame: pl.DataFrame, ttl_us: int | None) -> pl.DataFrame:
    ttl_cond = "TRUE" if ttl_us is None else f"f.event_ts > s.ts - {ttl_us}"
    con = duckdb.connect()
    con.register("spine", spine.with_row_index("i").to_arrow())
    con.register("frame", frame.to_arrow())
    sql = f"""
        SELECT s.i,
               CASE WHEN {ttl_cond} THEN f.x END AS x,
               CASE WHEN {ttl_cond} THEN f.y END AS y
        FROM spine s ASOF LEFT JOIN frame f ON s.k = f.k AND s.ts >= f.event_ts
        ORDER BY s.i
    """
    return pl.from_arrow(con.sql(sql).to_arrow_table())  # type: ignore[return-value]


@pytest.mark.parametrize("ttl_us", [None, 2 * DAY_US])
def test_matches_duckdb_asof_join_row_for_row(ttl_us):
    spine, frame = _data(seed=5)
    expected = _duckdb(spine, frame, ttl_us)
    view = FeatureFrame(
        name="v",
        frame=frame.with_columns(pl.col("event_ts", "created_ts").cast(UTC_US)),
        join_keys=("k",),
        spine_keys=("k",),
        features=("x", "y"),
        output_names=("x", "y"),
        ttl_us=ttl_us,
    )
    got = point_in_time_join(
        spine.with_columns(pl.col("ts").cast(UTC_US)), timestamp="ts", views=[view]
    )
    assert got.height == expected.height == spine.height
    assert got["x"].to_list() == expected["x"].to_list()
    assert got["y"].to_list() == expected["y"].to_list()
    matched = got["y"].is_not_null().sum()
    # Enough matches, and enough misses, for the comparison to mean something.
    assert 0.2 * spine.height < matched < 0.99 * spine.height
