"""A fuller example: a Kafka-fed trip stream with windowed aggregations, a batch
view, an on-demand feature computed at request time, and two feature services."""

import polars as pl

from featurestore import (
    Aggregation,
    BatchSource,
    Entity,
    FeatureService,
    FeatureView,
    Field,
    KafkaSource,
    OnDemandFeatureView,
    RequestSource,
)

driver = Entity(name="driver", join_keys={"driver_id": "int64"})
rider = Entity(name="rider", join_keys={"rider_id": "string"})

trips_history = BatchSource(
    name="trips_history",
    path="data/trips",
    format="delta",
    timestamp_field="event_ts",
    created_timestamp_field="created_ts",
)

trips_stream = KafkaSource(
    name="trips_stream",
    topic="trips",
    bootstrap_servers="localhost:9092",
    schema={
        "driver_id": "int64",
        "rider_id": "string",
        "fare": "float64",
        "distance_km": "float64",
        "event_ts": "datetime",
    },
    timestamp_field="event_ts",
    batch_source=trips_history,
)

driver_trips = FeatureView(
    name="driver_trips",
    entities=[driver],
    source=trips_stream,
    ttl=None,  # windows say which events count; a TTL does not apply to aggregations
    transform={"fare_per_km": pl.col("fare") / pl.col("distance_km")},
    aggregations=[
        Aggregation(name="trips_1h", column=None, function="count", window="1h"),
        Aggregation(name="fare_sum_1d", column="fare", function="sum", window="1d"),
        Aggregation(
            name="fare_per_km_mean_7d", column="fare_per_km", function="mean", window="7d", hop="1h"
        ),
        Aggregation(name="max_fare_lifetime", column="fare", function="max", window="lifetime"),
    ],
    description="Trip activity of each driver, from the trips stream",
)

rider_profile = FeatureView(
    name="rider_profile",
    entities=[rider],
    source=BatchSource(
        name="rider_profiles", path="data/riders.parquet", timestamp_field="updated_at"
    ),
    ttl=None,
    fields=[Field(name="rating", dtype="float64"), Field(name="home_city", dtype="string")],
)

trip_request = RequestSource(name="trip_request", schema={"quoted_fare": "float64"})

fare_vs_history = OnDemandFeatureView(
    name="fare_vs_history",
    inputs=[trip_request, driver_trips],
    outputs=[Field(name="fare_ratio_7d", dtype="float64")],
    transform={"fare_ratio_7d": pl.col("quoted_fare") / pl.col("fare_per_km_mean_7d")},
)

driver_model = FeatureService(
    name="driver_model",
    features=["driver_trips:trips_1h", "driver_trips:fare_sum_1d", fare_vs_history],
)

rider_model = FeatureService(name="rider_model", features=[rider_profile])
