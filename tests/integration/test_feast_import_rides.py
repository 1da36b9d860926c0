"""``import-feast`` on a Feast repo of our own, checked against Feast row by row.

The quickstart (``test_feast_import.py``) has one entity and a pandas on-demand view.
This repo has what it lacks: two entities (an int64 driver, a string customer), a
view keyed by both (a composite key) fed by a ``PushSource``, a view with no created
column, and a python-mode on-demand view reading two views and a request field,
annotated the way Feast's docs write it (``dict[str, Any]``). The data is generated
here with corrections (same event time, created later), created-time ties and gaps
longer than the TTLs.

Feast applies its repo through its own API; then we import it from Feast's registry,
apply, backfill, and both tools compute a training dataset on one spine. The spine
holds every event's exact TTL boundary, so the differences the report names all
occur. The rows that may differ are computed from the data alone, per view:

- ``dropped_spine_rows``: Feast leaves out a spine row whose key has rows in a view
  but none in ``[t - ttl, t]`` (its left join is filtered on the TTL); we keep it;
- ``ttl_boundary``: the latest event at or before ``t`` is exactly ``ttl`` old:
  Feast has its value, we have null;
- ``created_ties``: the chosen (key, event time) has several rows, tying on created
  time or not: we take the latest created (then the last in source order), Feast
  0.67's file offline store any of them (its sort on created time is undone by an
  unstable sort on event time).

Every boundary row differs; besides, only tie rows may; nothing else does.
"""

from __future__ import annotations

import itertools
import sys
from contextlib import chdir
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from featurestore.api.store import FeatureStore
from tests.integration.test_feast_import import import_feast

T0 = datetime(2026, 3, 1, tzinfo=UTC)
DRIVERS = list(range(1, 9))
CUSTOMERS = [f"c{i:02d}" for i in range(1, 7)]
# view -> (join keys, timestamp column, created column, ttl)
VIEWS: dict[str, tuple[list[str], str, str | None, timedelta]] = {
    "driver_stats": (["driver_id"], "event_timestamp", "created", timedelta(hours=2)),
    "customer_profile": (["customer_id"], "ts", None, timedelta(days=1)),
    "driver_customer": (
        ["driver_id", "customer_id"],
        "event_timestamp",
        "created",
        timedelta(hours=3),
    ),
}
REFS = [
    "driver_stats:trips",
    "driver_stats:rating",
    "customer_profile:spend",
    "customer_profile:tier",
    "driver_customer:rides_together",
    "driver_customer:avg_tip",
    "rider_value:rating_x_spend",
    "rider_value:tip_estimate",
]
FEATURES_OF = {
    "driver_stats": {"trips", "rating"},
    "customer_profile": {"spend", "tier"},
    "driver_customer": {"rides_together", "avg_tip"},
}
# the outputs each view's rows decide (an on-demand output hangs on its inputs)
DECIDES = {
    "driver_stats": ["trips", "rating", "rating_x_spend"],
    "customer_profile": ["spend", "tier", "rating_x_spend", "tip_estimate"],
    "driver_customer": ["rides_together", "avg_tip"],
}

DEFINITIONS = '''
"""Rides: drivers, customers, and the pair of them."""

from datetime import timedelta
from typing import Any

from feast import (
    Entity,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    PushSource,
    RequestSource,
)
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64, String
from feast.value_type import ValueType

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
customer = Entity(name="customer", join_keys=["customer_id"], description="a rider")

driver_stats_source = FileSource(
    name="driver_stats_source",
    path="data/driver_stats.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)
customer_source = FileSource(
    name="customer_source", path="data/customer_profile.parquet", timestamp_field="ts"
)
pair_batch = FileSource(
    name="pair_batch",
    path="data/driver_customer.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)
pair_push = PushSource(name="pair_push", batch_source=pair_batch)

driver_stats = FeatureView(
    name="driver_stats",
    entities=[driver],
    ttl=timedelta(hours=2),
    schema=[Field(name="trips", dtype=Int64), Field(name="rating", dtype=Float64)],
    source=driver_stats_source,
    tags={"team": "ops"},
    owner="ops@example.com",
)
customer_profile = FeatureView(
    name="customer_profile",
    entities=[customer],
    ttl=timedelta(days=1),
    schema=[Field(name="spend", dtype=Float64), Field(name="tier", dtype=String)],
    source=customer_source,
)
driver_customer = FeatureView(
    name="driver_customer",
    entities=[driver, customer],
    ttl=timedelta(hours=3),
    schema=[
        Field(name="rides_together", dtype=Int64),
        Field(name="avg_tip", dtype=Float64),
    ],
    source=pair_push,
    description="a driver and a rider, keyed by both",
)
tip_request = RequestSource(
    name="tip_request", schema=[Field(name="tip_pct", dtype=Float64)]
)


@on_demand_feature_view(
    sources=[driver_stats, customer_profile, tip_request],
    schema=[
        Field(name="rating_x_spend", dtype=Float64),
        Field(name="tip_estimate", dtype=Float64),
    ],
    mode="python",
)
def rider_value(inputs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, list[Any]] = {"rating_x_spend": [], "tip_estimate": []}
    rows = zip(inputs["rating"], inputs["spend"], inputs["tip_pct"])
    for rating, spend, pct in rows:
        both = rating is not None and spend is not None
        out["rating_x_spend"].append(rating * spend if both else None)
        tip = None if spend is None else round(spend * pct / 100.0, 6)
        out["tip_estimate"].append(tip)
    return out


ride_model = FeatureService(
    name="ride_model", features=[driver_stats, driver_customer, rider_value]
)
'''

FEATURE_STORE_YAML = """project: rides
registry: data/registry.db
provider: local
online_store:
  type: sqlite
  path: data/online.db
entity_key_serialization_version: 3
"""


def _times(rng: np.random.Generator, n: int, hours: int = 48) -> list[datetime]:
    return [T0 + timedelta(minutes=int(m)) for m in rng.integers(0, hours * 60, n)]


def write_data(data: Path, seed: int = 19) -> dict[str, pl.DataFrame]:
    """The three sources, shuffled on disk; returned as written (UTC, microseconds)."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[Any, ...]] = []
    for d in DRIVERS:
        for ts in _times(rng, 25):
            created = ts + timedelta(minutes=int(rng.integers(0, 10)))
            rows.append((d, ts, created, int(rng.integers(0, 50)), rng.integers(300, 500) / 100))
    drivers = pl.DataFrame(
        rows, schema=["driver_id", "event_timestamp", "created", "trips", "rating"], orient="row"
    )
    corrections = drivers.head(6).with_columns(
        pl.col("created") + timedelta(minutes=30), trips=pl.col("trips") + 100
    )
    ties = drivers.slice(10, 4).with_columns(trips=pl.col("trips") + 1000)
    drivers = pl.concat([drivers, corrections, ties])
    rows = [
        (c, ts, rng.integers(0, 10_000) / 100, str(rng.choice(["gold", "silver", "basic"])))
        for c in CUSTOMERS
        for ts in _times(rng, 6)
    ]
    customers = pl.DataFrame(rows, schema=["customer_id", "ts", "spend", "tier"], orient="row")
    customers = pl.concat([customers, customers.slice(3, 2).with_columns(tier=pl.lit("tie"))])
    rows = []
    for _ in range(120):
        ts = _times(rng, 1)[0]
        rows.append(
            (
                int(rng.choice(DRIVERS)),
                str(rng.choice(CUSTOMERS)),
                ts,
                ts + timedelta(minutes=1),
                int(rng.integers(1, 20)),
                rng.integers(0, 500) / 100,
            )
        )
    pairs = pl.DataFrame(
        rows,
        schema=[
            "driver_id",
            "customer_id",
            "event_timestamp",
            "created",
            "rides_together",
            "avg_tip",
        ],
        orient="row",
    )
    pairs = pl.concat([pairs, pairs.slice(5, 3).with_columns(avg_tip=pl.col("avg_tip") + 9)])
    out = {"driver_stats": drivers, "customer_profile": customers, "driver_customer": pairs}
    data.mkdir(parents=True, exist_ok=True)
    for name, frame in out.items():
        frame = frame.with_columns(
            pl.col(pl.Datetime).dt.cast_time_unit("us").dt.convert_time_zone("UTC")
        )
        out[name] = frame
        frame.sample(fraction=1.0, shuffle=True, seed=seed).write_parquet(data / f"{name}.parquet")
    return out


def spine(data: dict[str, pl.DataFrame], seed: int = 7) -> pl.DataFrame:
    """Random (driver, customer, time) rows, unknown keys among them, plus each event's
    own time and its exact TTL boundary, with the other key drawn at random.

    Feast 0.67's file offline store collapses spine rows that share a view's join
    keys and time (it drops duplicates on them, whatever the other columns): the
    spine keeps one row per (driver, time) and per (customer, time), so that this
    test compares rows both tools answer."""
    rng = np.random.default_rng(seed)
    n = 400
    parts = [
        pl.DataFrame(
            {
                "driver_id": rng.choice([*DRIVERS, 99], n).astype(np.int64),
                "customer_id": rng.choice([*CUSTOMERS, "zz"], n),
                "event_timestamp": [
                    T0 + timedelta(minutes=int(m)) for m in rng.integers(-120, 52 * 60, n)
                ],
            }
        )
    ]
    for name, (keys, ts, _, ttl) in VIEWS.items():
        events = data[name].select(*keys, event_timestamp=pl.col(ts))
        # the other key: drawn at random, or unknown (Feast keeps a row whose key a
        # view has never seen, so these boundary rows survive its filter)
        for shift, other in itertools.product((timedelta(0), ttl), ("unknown", "random")):
            part = events.with_columns(pl.col("event_timestamp") + shift)
            if "driver_id" not in keys:
                ids = rng.choice(DRIVERS, part.height) if other == "random" else [99] * part.height
                part = part.with_columns(driver_id=pl.Series(ids, dtype=pl.Int64))
            if "customer_id" not in keys:
                ids = (
                    rng.choice(CUSTOMERS, part.height)
                    if other == "random"
                    else ["zz"] * part.height
                )
                part = part.with_columns(customer_id=pl.Series(ids, dtype=pl.String))
            parts.append(part)
    rows = pl.concat(
        [
            p.select(
                pl.col("driver_id").cast(pl.Int64),
                pl.col("customer_id").cast(pl.String),
                pl.col("event_timestamp").cast(pl.Datetime("us", "UTC")),
            )
            for p in parts
        ]
    )
    rows = rows.unique(["driver_id", "event_timestamp"], keep="first", maintain_order=True)
    rows = rows.unique(["customer_id", "event_timestamp"], keep="first", maintain_order=True)
    n = rows.height
    return rows.with_columns(
        row_id=pl.int_range(n, dtype=pl.Int64),
        tip_pct=(pl.int_range(n, dtype=pl.Int64) % 4 * 5 + 10).cast(pl.Float64),
    )


def exceptions(
    data: dict[str, pl.DataFrame], rows: pl.DataFrame
) -> tuple[set[int], dict[str, set[int]], dict[str, set[int]]]:
    """From the data alone: the spine rows Feast drops, and per view the TTL-boundary
    rows and the rows whose chosen (key, event time) has several rows."""
    dropped: set[int] = set()
    boundary: dict[str, set[int]] = {}
    tied: dict[str, set[int]] = {}
    for name, (keys, ts, _created, ttl) in VIEWS.items():
        frame = data[name]
        # a (key, event time) of several rows: corrections (created later) or ties.
        # We take the latest created; Feast's sort by created is undone by its
        # unstable sort on event time, so it keeps any of them (measured: mostly
        # the older correction)
        tie_keys = frame.filter(pl.len().over([*keys, ts]) > 1).select(*keys, ev=pl.col(ts))
        events = frame.select(*keys, ev=pl.col(ts)).unique().sort("ev")
        latest = rows.sort("event_timestamp").join_asof(
            events,
            left_on="event_timestamp",
            right_on="ev",
            by=keys,
            strategy="backward",
            check_sortedness=False,
        )
        known = latest.join(frame.select(keys).unique(), on=keys, how="semi")
        in_window = pl.col("ev").is_not_null() & (pl.col("ev") >= pl.col("event_timestamp") - ttl)
        dropped |= set(known.filter(~in_window)["row_id"])
        boundary[name] = set(
            latest.filter(pl.col("event_timestamp") - pl.col("ev") == ttl)["row_id"]
        )
        tied[name] = set(latest.join(tie_keys.unique(), on=[*keys, "ev"], how="semi")["row_id"])
    return dropped, boundary, tied


@pytest.fixture(scope="module")
def rides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import_feast()
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    from featurestore.integrations.feast import import_feast_repo

    repo = tmp_path_factory.mktemp("feast") / "rides"
    repo.mkdir()
    (repo / "feature_store.yaml").write_text(FEATURE_STORE_YAML)
    (repo / "rides_definitions.py").write_text(DEFINITIONS)
    data = write_data(repo / "data")
    # Feast imports the definitions by module name from the working directory, as
    # `feast apply` run there would; apply_total chdirs into the repo and stays there
    sys.path.insert(0, str(repo))
    try:
        with chdir(repo):
            apply_total(
                load_repo_config(repo, repo / "feature_store.yaml"),
                repo,
                skip_source_validation=True,
            )
    finally:
        sys.path.remove(str(repo))
        sys.modules.pop("rides_definitions", None)
    out = tmp_path_factory.mktemp("ours") / "repo"
    report = import_feast_repo(repo, out)  # from Feast's registry: apply ran
    return {"repo": repo, "out": out, "report": report, "data": data}


def test_report_names_every_object_and_difference(rides: dict[str, Any]) -> None:
    report, out = rides["report"], rides["out"]
    pairs = report.item("FeatureView", "driver_customer")
    assert pairs.status == "converted with a semantic difference"
    assert {"push", "ttl_boundary", "created_ties", "dropped_spine_rows"} <= set(pairs.differences)
    assert report.item("DataSource", "pair_push").differences == ["push"]
    # no created column: a repeated (key, event time) is still a tie
    assert "created_ties" in report.item("FeatureView", "customer_profile").differences
    odfv = report.item("OnDemandFeatureView", "rider_value")
    assert odfv.status == "converted", odfv.notes
    assert report.item("FeatureService", "ride_model").status == "converted"
    assert report.item("Entity", "customer").status == "converted"
    text = (out / "features.py").read_text()
    assert 'join_keys={"customer_id": "string"}' in text
    assert "entities=[driver, customer]" in text
    assert "from __future__ import annotations" in text  # dict[str, Any] is never evaluated


def test_training_dataset_equals_feast_except_named_rows(rides: dict[str, Any]) -> None:
    feast = import_feast()
    repo, out, data = rides["repo"], rides["out"], rides["data"]
    rows = spine(data)
    fs = feast.FeatureStore(repo_path=str(repo))
    theirs = pl.from_pandas(
        fs.get_historical_features(entity_df=rows.to_pandas(), features=REFS).to_df(),
        nan_to_null=True,
    ).sort("row_id")
    store = FeatureStore(out)
    try:
        store.apply()
        store.backfill()
        ours = store.get_training_dataset(rows, features=REFS).frame.sort("row_id")
    finally:
        store.close()

    dropped, boundary, tied = exceptions(data, rows)
    assert ours.height == rows.height
    assert ours["row_id"].to_list() == sorted(rows["row_id"].to_list())
    assert dropped and all(boundary.values()), "the spine must hold every kind of row"
    assert set(rows["row_id"]) - set(theirs["row_id"]) == dropped
    assert theirs["row_id"].is_unique().all()

    kept = ours.filter(pl.col("row_id").is_in(theirs["row_id"].to_list()))
    assert kept.height >= rows.height // 2  # most rows are compared (1061 -> 640 here)
    assert kept["row_id"].to_list() == theirs["row_id"].to_list()
    differ: dict[str, set[int]] = {}
    for name in [r.split(":")[1] for r in REFS]:
        a, b = kept[name], theirs[name]
        if a.dtype.is_numeric() or b.dtype.is_numeric():
            a, b = a.cast(pl.Float64), b.cast(pl.Float64)
        else:
            a, b = a.cast(pl.String), b.cast(pl.String)
        same = ((a == b) | (a.is_null() & b.is_null())).fill_null(False)
        differ[name] = set(kept.filter(~same)["row_id"])
    kept_ids = set(theirs["row_id"])
    for view, columns in DECIDES.items():
        wanted = boundary[view] & kept_ids
        assert wanted, f"no TTL-boundary row of {view} survives Feast's filter"
        own = set().union(*(differ[c] for c in columns if c in FEATURES_OF[view]))
        # every boundary row differs on the view's own features: Feast has the row
        # exactly ttl old, we have null
        assert wanted <= own, (view, sorted(wanted - own)[:5])
        assert ours.filter(pl.col("row_id").is_in(sorted(wanted)))[columns[0]].null_count() == len(
            wanted
        )
    may = set().union(*boundary.values(), *tied.values())
    everything = set().union(*differ.values())
    assert everything <= may, sorted(everything - may)[:10]
    # the on-demand outputs: equal wherever their inputs are
    assert kept.height - len(differ["rating_x_spend"]) > kept.height // 2
