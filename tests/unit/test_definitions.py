from datetime import timedelta

import polars as pl
import pytest

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
from featurestore.errors import DefinitionErrors

driver = Entity(name="driver", join_keys={"driver_id": pl.Int64})
src = BatchSource(name="stats", path="data/stats.parquet", timestamp_field="ts")


def test_entity_normalises_dtypes_and_supports_composite_keys():
    e = Entity(name="pair", join_keys={"a": pl.Int32, "b": "string"})
    assert e.key_names == ("a", "b")
    assert [k.dtype for k in e.keys] == ["int32", "string"]
    assert not e.problems


def test_field_accepts_polars_python_and_canonical_dtypes():
    assert Field(name="x", dtype=pl.List(pl.Float64)).dtype == "list[float64]"
    assert Field(name="x", dtype=float).dtype == "float64"
    assert Field(name="x", dtype=pl.Datetime("ns", "Europe/Paris")).dtype == "datetime"
    assert Field(name="x", dtype="uint64").dtype == "uint64"


def test_batch_source_infers_format():
    assert src.format == "parquet"
    assert BatchSource(name="d", path="s3://bucket/table").format == "delta"


def test_feature_view_durations_and_features():
    fv = FeatureView(
        name="v", entities=[driver], source=src, ttl=timedelta(hours=2), fields={"a": "float64"}
    )
    assert fv.ttl_us == 2 * 3600 * 1_000_000
    assert fv.feature_names == ("a",)
    assert (
        FeatureView(
            name="v", entities=[driver], source=src, ttl=None, fields={"a": "float64"}
        ).ttl_us
        is None
    )


def test_problems_are_collected_not_raised():
    fv = FeatureView(
        name="bad view",
        entities=[],
        source="nope",
        ttl=0,  # type: ignore[arg-type]
        fields={"x": "floaty"},
        aggregations=[Aggregation(name="s", column=None, function="sum", window="1h")],
    )
    fields = {p.field for p in fv.problems}
    assert {
        "name",
        "entities",
        "source",
        "ttl",
        "fields['x'].dtype",
        "aggregations['s'].column",
    } <= fields
    with pytest.raises(DefinitionErrors) as info:
        fv.check()
    assert "FeatureView 'bad view'" in str(info.value)


def test_aggregation_windows_and_hops():
    agg = Aggregation(name="a", column="fare", function="sum", window="1d", hop="1h")
    assert (agg.window_us, agg.hop_us) == (86_400_000_000, 3_600_000_000)
    assert Aggregation(name="b", column=None, function="count", window="lifetime").window_us is None
    bad = Aggregation(name="c", column="x", function="median", window="1h", hop="2h")  # type: ignore[arg-type]
    assert {p.field for p in bad.problems} == {"function", "hop"}


def test_kafka_source_requires_timestamp_in_schema():
    ks = KafkaSource(
        name="k",
        topic="t",
        bootstrap_servers="h:1",
        schema={"a": "int64"},
        timestamp_field="ts",
        batch_source=src,
    )
    assert [p.field for p in ks.problems] == ["timestamp_field"]


def test_feature_service_expands_views_and_checks_refs():
    fv = FeatureView(
        name="v", entities=[driver], source=src, ttl="1d", fields={"a": "float64", "b": "int64"}
    )
    svc = FeatureService(name="s", features=[fv, "other:x"])
    assert svc.features == ("v:a", "v:b", "other:x")
    bad = FeatureService(name="s2", features=["no_colon"])
    assert bad.problems and bad.problems[0].value == "no_colon"


def test_on_demand_outputs_need_expressions():
    req = RequestSource(name="r", schema={"q": "float64"})
    odfv = OnDemandFeatureView(
        name="o",
        inputs=[req],
        outputs={"y": "float64", "z": "int64"},
        transform={"y": pl.col("q") * 2},
    )
    assert [p.field for p in odfv.problems] == ["transform"]
    assert odfv.problems[0].value == ["z"]


def test_definitions_are_frozen():
    with pytest.raises(AttributeError):
        driver.name = "other"  # type: ignore[misc]
