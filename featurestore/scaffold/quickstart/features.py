"""Feature definitions of the quickstart repo: drivers of a ride-hailing service."""

import polars as pl

from featurestore import (
    Aggregation,
    BatchSource,
    Entity,
    FeatureService,
    FeatureView,
    Field,
    OnDemandFeatureView,
    RequestSource,
)

driver = Entity(name="driver", join_keys={"driver_id": "int64"}, description="A driver")

driver_stats_source = BatchSource(
    name="driver_stats_source",
    path="data/driver_stats.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_field="created",
    description="Hourly driver statistics exported by the trips service",
)

driver_hourly_stats = FeatureView(
    name="driver_hourly_stats",
    entities=[driver],
    source=driver_stats_source,
    ttl="2d",
    transform={"acceptance_gap": pl.col("conv_rate") - pl.col("acc_rate")},
    fields=[
        Field(name="conv_rate", dtype=pl.Float64),
        Field(name="acc_rate", dtype=pl.Float64),
        Field(name="avg_daily_trips", dtype=pl.Int64),
        Field(name="acceptance_gap", dtype=pl.Float64),
    ],
    owner="ml-platform@example.com",
    tags={"team": "driver-ranking"},
)

driver_ranking = FeatureService(
    name="driver_ranking",
    features=[driver_hourly_stats],
    description="Features of the driver ranking model",
)

# Request-time features: computed from data that arrives with the request and
# looked-up features, by the same code online and in training.
trip_request = RequestSource(name="trip_request", schema={"distance_km": "float64"})

trip_fit = OnDemandFeatureView(
    name="trip_fit",
    inputs=[trip_request, driver_hourly_stats],
    outputs={"trips_per_km": "float64"},
    transform={"trips_per_km": pl.col("avg_daily_trips") / pl.col("distance_km")},
    description="How the requested trip length compares with the driver's usual volume",
)

driver_ranking_with_request = FeatureService(
    name="driver_ranking_with_request",
    features=[driver_hourly_stats, trip_fit],
    description="driver_ranking plus request-time features (send distance_km)",
)

# Windowed aggregations over the same rows: computed as of each training row's time,
# and online as of the request time from records that `featurestore materialize`
# writes. The hop floors the time to the hour, so that value changes once an hour.
driver_windows = FeatureView(
    name="driver_windows",
    entities=[driver],
    source=driver_stats_source,
    ttl=None,  # windows say which events count; a TTL does not apply to aggregations
    aggregations=[
        Aggregation(name="stats_rows_1d", column=None, function="count", window="1d"),
        Aggregation(
            name="conv_rate_mean_7d", column="conv_rate", function="mean", window="7d", hop="1h"
        ),
        Aggregation(
            name="max_daily_trips", column="avg_daily_trips", function="max", window="lifetime"
        ),
    ],
    description="How active each driver has been, over sliding windows",
)

driver_windows_service = FeatureService(
    name="driver_windows_service",
    features=[driver_windows],
    description="Windowed activity aggregates of each driver",
)
