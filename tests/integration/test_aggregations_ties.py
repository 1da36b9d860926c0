"""Events are a log: tied events count on every batch path (SEMANTICS: Windowed
aggregations).

A differential harness over real Delta tables and the embedded online store. Its logs
tie on purpose: a share of events duplicated exactly, a share sharing (key, event_ts,
created_ts) with other values, same-minute bursts of one key, and ties sitting on
window edges and hop boundaries. For every aggregation function, training, a
brute-force reading of SEMANTICS and online lookups after materialization agree with 0
mismatches. (Against the prepare step that merged ties, the same harness reports
hundreds of mismatches in count, sum, mean and stddev.) The stream path over the same
kind of log is checked in ``test_stream_aggregates.py``.
"""

from __future__ import annotations

import math
import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest

from featurestore import FeatureStore
from tests.helpers import write_repo

DEFS = """
import polars as pl
from featurestore import Aggregation, BatchSource, Entity, FeatureView

shop = Entity(name="shop", join_keys={"shop_id": "int64"})
sales = BatchSource(name="sales", path="data/sales.parquet", timestamp_field="ts",
                    created_timestamp_field="created")
shop_sales = FeatureView(
    name="shop_sales", entities=[shop], source=sales, ttl=None,
    aggregations=[
        Aggregation(name="n_1h", column=None, function="count", window="1h"),
        Aggregation(name="n_amount_1d", column="amount", function="count", window="1d",
                    hop="1h"),
        Aggregation(name="sum_1d", column="amount", function="sum", window="1d", hop="1h"),
        Aggregation(name="mean_2h", column="amount", function="mean", window="2h"),
        Aggregation(name="std_1d", column="amount", function="stddev", window="1d"),
        Aggregation(name="min_1d", column="amount", function="min", window="1d", hop="1h"),
        Aggregation(name="max_life", column="amount", function="max", window="lifetime"),
        Aggregation(name="cities_1d", column="city", function="count_distinct", window="1d"),
        Aggregation(name="first_1d", column="amount", function="first", window="1d"),
        Aggregation(name="last_life", column="amount", function="last", window="lifetime"),
        Aggregation(name="last_city_2h", column="city", function="last", window="2h",
                    hop="10m"),
    ],
)
"""
H_US = 3_600_000_000
MIN_US = 60_000_000
# (name, column, function, window_us or None for lifetime, hop_us or None)
AGGS: list[tuple[str, str | None, str, int | None, int | None]] = [
    ("n_1h", None, "count", H_US, None),
    ("n_amount_1d", "amount", "count", 24 * H_US, H_US),
    ("sum_1d", "amount", "sum", 24 * H_US, H_US),
    ("mean_2h", "amount", "mean", 2 * H_US, None),
    ("std_1d", "amount", "stddev", 24 * H_US, None),
    ("min_1d", "amount", "min", 24 * H_US, H_US),
    ("max_life", "amount", "max", None, None),
    ("cities_1d", "city", "count_distinct", 24 * H_US, None),
    ("first_1d", "amount", "first", 24 * H_US, None),
    ("last_life", "amount", "last", None, None),
    ("last_city_2h", "city", "last", 2 * H_US, 10 * MIN_US),
]
FEATURES = [a[0] for a in AGGS]
SHOPS = 12
# Recent, so online records are within any retention.
T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=3)
T0_US = int(T0.timestamp()) * 1_000_000


def tied_log(seed: int, n: int = 1500) -> pl.DataFrame:
    """Events over two days, then ties made on purpose: 15% exact duplicates, 10%
    sharing (key, event_ts, created_ts) with other values, bursts in one minute, and
    tied pairs exactly on hour (hop) edges, which are also the edges of the windows of
    a spine row on such an edge."""
    rng = np.random.default_rng(seed)
    minute = rng.integers(0, 2 * 24 * 60, n)
    ts = T0_US + minute * MIN_US + rng.choice([0, 0, 1, 30_000_000], n)
    amount = rng.gamma(2.0, 10.0, n).round(2)
    amount[rng.random(n) < 0.04] = np.nan
    base = pl.DataFrame(
        {
            "shop_id": rng.integers(0, SHOPS, n),
            "ts": ts,
            "created": ts + rng.choice([0, 0, 5_000_000], n),
            "amount": amount,
            "city": rng.choice(["lyon", "oslo", "nice", "rome"], n),
        }
    ).with_columns(
        pl.when(pl.int_range(pl.len()) % 13 == 0).then(None).otherwise("amount").alias("amount"),
        pl.when(pl.int_range(pl.len()) % 11 == 0).then(None).otherwise("city").alias("city"),
    )
    pick = rng.random(n)
    exact = base.filter(pl.Series(pick < 0.15))
    same_instant = base.filter(pl.Series((pick >= 0.15) & (pick < 0.25))).with_columns(
        (pl.col("amount") + 1.5).alias("amount"),
        pl.col("city").reverse().alias("city"),
    )
    edges = T0_US + rng.integers(1, 47, 40) * H_US  # on an hour boundary
    on_edge = pl.DataFrame(
        {
            "shop_id": rng.integers(0, SHOPS, 40),
            "ts": edges,
            "created": edges,
            "amount": rng.gamma(2.0, 10.0, 40).round(2),
            "city": rng.choice(["lyon", "bern"], 40),
        }
    )
    burst = on_edge.with_columns(pl.col("amount") * 2)  # ties on the edge, new values
    log = pl.concat([base, exact, same_instant, on_edge, on_edge, burst])
    log = log.sample(fraction=1.0, shuffle=True, seed=seed)  # ties far apart in the file
    return log.with_columns(
        pl.col("ts", "created").cast(pl.Datetime("us", "UTC")),
    )


def spine_times(log: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Random times, the events' own times, and hour and 10-minute edges +-1us."""
    rng = np.random.default_rng(seed + 100)
    ev = log["ts"].dt.epoch("us").to_numpy()
    own = rng.choice(ev, 150)
    edges = T0_US + rng.integers(1, 50, 60) * H_US + rng.choice([-1, 0, 1], 60)
    tens = T0_US + rng.integers(1, 300, 40) * 10 * MIN_US
    random = T0_US + rng.integers(0, 2 * 24 * 3600, 150) * 1_000_000
    t = np.concatenate([own, edges, tens, random])
    return pl.DataFrame(
        {"shop_id": rng.integers(0, SHOPS + 1, t.size), "event_timestamp": t}
    ).with_columns(pl.col("event_timestamp").cast(pl.Datetime("us", "UTC")))


# ------------------------------------------------------------ the brute force


def _order_value(v: Any) -> tuple[int, Any]:
    """Values ordered as Polars sorts them: NaN after every number."""
    if isinstance(v, float) and math.isnan(v):
        return (1, 0.0)
    return (0, v)


def brute(function: str, events: list[tuple[int, int, Any]]) -> Any:
    """One window's value, read literally off SEMANTICS. ``events`` are (event_ts,
    created_ts, value) of the events in the window (value None for ``count()``)."""
    values = [v for _, _, v in events if v is not None]
    if function == "count":  # count() events carry _EVENT, never None
        return len(values)
    if function == "count_distinct":
        return len({_order_value(v) for v in values})
    if not values:
        return None
    nan = any(isinstance(v, float) and math.isnan(v) for v in values)
    if function == "sum":
        return math.nan if nan else math.fsum(values)
    if function == "mean":
        return math.nan if nan else math.fsum(values) / len(values)
    if function == "stddev":
        if len(values) < 2:
            return None
        return math.nan if nan else statistics.stdev(values)
    if function in ("min", "max"):
        numbers = [v for v in values if not math.isnan(v)]
        if not numbers:
            return math.nan
        return min(numbers) if function == "min" else max(numbers)
    ranked = sorted(((e, c, _order_value(v)), v) for e, c, v in events if v is not None)
    # Ties on (event_ts, created_ts): first takes the smallest value, last the largest
    # (SEMANTICS), so every engine picks the same one whatever order rows come in.
    return ranked[0][1] if function == "first" else ranked[-1][1]


_EVENT = object()  # the "value" of count() events


def expected(log: pl.DataFrame, spine: pl.DataFrame) -> dict[str, list[Any]]:
    rows = log.with_columns(pl.col("ts", "created").dt.epoch("us")).to_dicts()
    by_key: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_key.setdefault(r["shop_id"], []).append(r)
    out: dict[str, list[Any]] = {name: [] for name in FEATURES}
    for shop, ts in spine.with_columns(pl.col("event_timestamp").dt.epoch("us")).iter_rows():
        mine = by_key.get(shop, [])
        for name, column, function, window, hop in AGGS:
            t = ts if hop is None else ts // hop * hop
            inside = [
                (r["ts"], r["created"], _EVENT if column is None else r[column])
                for r in mine
                if r["ts"] <= t and (window is None or r["ts"] > t - window)
            ]
            out[name].append(brute(function, inside))
    return out


def close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, float) or isinstance(b, float):
        return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))
    return a == b


def mismatches(got: dict[str, list[Any]], want: dict[str, list[Any]]) -> list[tuple]:
    return [
        (name, i, g, w)
        for name in FEATURES
        for i, (g, w) in enumerate(zip(got[name], want[name], strict=True))
        if not close(g, w)
    ]


# ------------------------------------------------------------ the paths


@pytest.fixture(params=[3, 17])
def tied(tmp_path, request):
    log = tied_log(request.param)
    repo = write_repo(tmp_path / "repo", {"features.py": DEFS})
    (repo / "data").mkdir()
    log.write_parquet(repo / "data" / "sales.parquet")
    store = FeatureStore(repo)
    store.apply()
    yield store, log, request.param
    store.close()


def test_training_counts_every_tied_event(tied):
    store, log, seed = tied
    [report] = store.backfill()
    assert report.rows_written == log.height and report.duplicates_dropped == 0
    distinct = log.unique(["shop_id", "ts", "created"]).height
    assert distinct < log.height - 300  # the harness really ties events
    spine = spine_times(log, seed)
    ds = store.get_training_dataset(spine, features=[f"shop_sales:{f}" for f in FEATURES])
    got = {name: ds.frame[name].to_list() for name in FEATURES}
    bad = mismatches(got, expected(log, spine))
    assert not bad, f"{len(bad)} mismatches, e.g. {bad[:6]}"


def test_online_after_materialize_counts_every_tied_event(tied):
    from featurestore._time import to_us
    from featurestore.materialize import materialize_view

    store, log, _ = tied
    store.backfill()
    end_us = T0_US + 47 * H_US  # an hour edge, with tied events on it
    materialize_view(
        store.index().view("shop_sales"),
        project=store.project,
        offline=store.offline,
        online=store.online,
        end_us=end_us,
    )
    known = log.filter(pl.col("ts").dt.epoch("us") <= end_us)
    ids = list(range(SHOPS + 1))
    for delta_us in (0, 1, 7 * MIN_US, H_US, 3 * H_US, 30 * H_US):
        r = end_us + delta_us
        resp = store.get_online_features(
            {"shop_id": ids},
            features=[f"shop_sales:{f}" for f in FEATURES],
            request_time=datetime.fromtimestamp(r / 1e6, UTC),
        )
        spine = pl.DataFrame({"shop_id": ids, "event_timestamp": [r] * len(ids)}).with_columns(
            pl.col("event_timestamp").cast(pl.Datetime("us", "UTC"))
        )
        got = {name: list(resp.values[name]) for name in FEATURES}
        bad = mismatches(got, expected(known, spine))
        assert not bad, f"at +{delta_us}us: {len(bad)} mismatches, e.g. {bad[:6]}"
    assert to_us(T0) == T0_US


def test_a_rerun_backfill_is_idempotent_and_a_corrected_source_replaces_its_range(tied):
    store, log, _ = tied
    first = store.backfill()[0]
    again = store.backfill()[0]
    assert again.rows_written == 0 and again.table_version == first.table_version
    spec_rows = store.offline.read_view(_spec(store)).collect()
    assert spec_rows.height == log.height

    # The source gains late rows and loses some: the table follows it, each row once.
    late = log.head(50).with_columns(pl.col("amount") + 1000)
    fixed = pl.concat([log.slice(100), late])
    fixed.write_parquet(store.repo / "data" / "sales.parquet")
    report = store.backfill()[0]
    assert report.rows_replaced == log.height and report.rows_written == fixed.height
    stored = store.offline.read_view(_spec(store)).collect()
    cols = ["shop_id", "event_ts", "created_ts", "amount", "city"]
    want = fixed.rename({"ts": "event_ts", "created": "created_ts"}).select(cols)
    assert stored.select(cols).sort(cols, nulls_last=True).equals(want.sort(cols, nulls_last=True))


def _spec(store):
    from featurestore.stores.view_specs import offline_spec

    return offline_spec(store.index().view("shop_sales"))
