import json
import os
from pathlib import Path

import polars as pl
import pytest

from featurestore.compile import ObjectPlan, RepoPlan, compile_repo
from featurestore.errors import DefinitionErrors
from tests.helpers import quickstart, write_repo

GOLDEN = Path(__file__).parents[1] / "golden"
EXAMPLES = Path(__file__).parents[2] / "examples"


def _check_golden(name: str, plan: RepoPlan) -> None:
    path = GOLDEN / f"{name}.plan.json"
    text = plan.to_json() + "\n"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"missing golden {path}; run with UPDATE_GOLDEN=1 once and review it"
    assert json.loads(text) == json.loads(path.read_text()), (
        f"compiled plan of {name} differs from {path}; if intended, regenerate with "
        "UPDATE_GOLDEN=1 and review the diff"
    )


def test_quickstart_plan_matches_golden(tmp_path):
    repo = quickstart(tmp_path / "qs")
    result = compile_repo(repo, project="quickstart")
    assert result.warnings == []
    _check_golden("quickstart", result.plan)


def test_rideshare_example_plan_matches_golden():
    result = compile_repo(EXAMPLES / "rideshare", project="rideshare")
    _check_golden("rideshare", result.plan)
    odfv = result.plan.get("on_demand_feature_view", "fare_vs_history")
    assert odfv is not None
    assert odfv.spec["transform"]["type"] == "polars"


def test_plan_round_trips_through_json_and_hash_is_content_based(tmp_path):
    repo = quickstart(tmp_path / "qs")
    plan = compile_repo(repo, project="quickstart").plan
    again = RepoPlan.from_dict(json.loads(plan.to_json()))
    assert again == plan and again.hash == plan.hash
    obj = plan.objects[0]
    tampered = {**obj.to_dict(), "spec": {**obj.spec, "metadata": {"description": "x"}}}
    with pytest.raises(ValueError, match="does not match its hash"):
        ObjectPlan.from_dict(tampered)


def test_compiled_transform_is_executable(tmp_path):
    from featurestore.compile import PlanIndex

    repo = quickstart(tmp_path / "qs")
    view = PlanIndex(compile_repo(repo, project="q").plan).view("driver_hourly_stats")
    df = pl.DataFrame({"conv_rate": [0.5], "acc_rate": [0.25]})
    out = df.with_columns(**view.transform_exprs)
    assert out["acceptance_gap"].to_list() == [0.25]


BAD_ENTITIES = """
from featurestore import Entity
driver = Entity(name="driver", join_keys={"driver_id": "int64"})
dup = Entity(name="driver", join_keys={"id": "string"})
"""

BAD_VIEWS = """
import polars as pl
from featurestore import BatchSource, FeatureService, FeatureView, Field
from entities import driver

src = BatchSource(name="src", path="data/stats.parquet", timestamp_field="ts")
no_ttl = FeatureView(name="v1", entities=[driver], source=src, ttl="-5", fields={"a": "float64"})
wrong_dtype = FeatureView(name="v2", entities=[driver], source=src, ttl="1d",
                          fields={"a": "string", "missing_col": "int64"})
bad_expr = FeatureView(name="v3", entities=[driver], source=src, ttl="1d",
                       transform={"y": pl.col("nope") * 2}, fields={"y": "float64"})
svc = FeatureService(name="svc", features=["v2:a", "ghost:x", "v2:zzz"])
"""

BROKEN = """
x = 1
raise RuntimeError("boom")
"""


def test_all_errors_are_reported_at_once_with_file_object_field(tmp_path):
    repo = write_repo(
        tmp_path / "bad", {"entities.py": BAD_ENTITIES, "views.py": BAD_VIEWS, "broken.py": BROKEN}
    )
    (repo / "data").mkdir()
    pl.DataFrame(
        {"driver_id": [1], "ts": pl.Series([0], dtype=pl.Datetime("us", "UTC")), "a": [1.0]}
    ).write_parquet(repo / "data" / "stats.parquet")
    with pytest.raises(DefinitionErrors) as info:
        compile_repo(repo, project="t")
    errors = info.value.errors
    text = str(info.value)
    by = {(e.file.split(":")[0] if e.file else None, e.obj, e.field) for e in errors}
    assert ("broken.py", None, None) in by
    assert any(e.file == "broken.py:3" and "RuntimeError: boom" in e.message for e in errors)
    assert ("entities.py", "Entity 'driver'", "name") in by  # used twice
    assert ("views.py", "FeatureView 'v1'", "ttl") in by
    assert ("views.py", "FeatureView 'v2'", "fields['a']") in by  # float64 source vs string
    assert ("views.py", "FeatureView 'v2'", "fields['missing_col']") in by
    assert ("views.py", "FeatureView 'v3'", "transform['y']") in by
    svc_errors = [e for e in errors if e.obj == "FeatureService 'svc'"]
    assert sorted(str(e.value) for e in svc_errors) == ["ghost:x", "v2:zzz"]
    assert len(errors) == 8, text
    assert "declare it as 'float64'" in text


def test_timestamp_column_missing_is_reported(tmp_path):
    repo = write_repo(
        tmp_path / "r",
        {
            "defs.py": """
        from featurestore import BatchSource, Entity, FeatureView
        e = Entity(name="e", join_keys={"k": "int64"})
        s = BatchSource(name="s", path="d.parquet", timestamp_field="when")
        v = FeatureView(name="v", entities=[e], source=s, ttl="1h", fields={"x": "int64"})
    """
        },
    )
    pl.DataFrame({"k": [1], "x": [2]}).write_parquet(repo / "d.parquet")
    with pytest.raises(DefinitionErrors) as info:
        compile_repo(repo, project="t")
    (err,) = info.value.errors
    assert (err.obj, err.field) == ("FeatureView 'v'", "source.timestamp_field")
    assert "no column 'when'" in err.message


def test_inline_entity_must_be_declared(tmp_path):
    repo = write_repo(
        tmp_path / "r",
        {
            "defs.py": """
        from featurestore import BatchSource, Entity, FeatureView
        s = BatchSource(name="s", path="d.parquet")
        v = FeatureView(name="v", entities=[Entity(name="e", join_keys={"k": "int64"})],
                        source=s, ttl="1h", fields={"x": "int64"})
    """
        },
    )
    with pytest.raises(DefinitionErrors, match="not declared at module level"):
        compile_repo(repo, project="t")


# -- plans a later step would refuse (issue 15, item 2) -------------------------


def _stats_repo(tmp_path: Path, defs: str, *, project: str = "t") -> Path:
    repo = write_repo(tmp_path / "r", {"defs.py": defs}, project=project)
    pl.DataFrame(
        {
            "driver_id": [1],
            "ts": pl.Series([0], dtype=pl.Datetime("us", "UTC")),
            "naive_ts": pl.Series([0], dtype=pl.Datetime("us")),
            "ts_text": ["2024-01-01"],
            "x": [1.0],
            "event_date": [1.0],
        }
    ).write_parquet(repo / "d.parquet")
    return repo


CLASHES = """
import polars as pl
from featurestore import Aggregation, BatchSource, Entity, FeatureView
e = Entity(name="e", join_keys={"driver_id": "int64"})
s = BatchSource(name="s", path="d.parquet", timestamp_field="ts")
key_as_field = FeatureView(name="v1", entities=[e], source=s, ttl="1h",
                           fields={"driver_id": "int64", "x": "float64"})
reserved_field = FeatureView(name="v2", entities=[e], source=s, ttl="1h",
                             fields={"event_date": "float64"})
reserved_transform = FeatureView(name="v3", entities=[e], source=s, ttl="1h",
                                 transform={"created_ts": pl.col("x") * 2},
                                 fields={"created_ts": "float64"})
agg_named_key = FeatureView(name="v4", entities=[e], source=s, ttl=None,
                            aggregations=[Aggregation(name="driver_id", column="x",
                                                      function="sum", window="1h")])
agg_of_key = FeatureView(name="v5", entities=[e], source=s, ttl=None,
                         aggregations=[Aggregation(name="n", column="driver_id",
                                                   function="count_distinct", window="1h")])
fine = FeatureView(name="v6", entities=[e], source=s, ttl="1h", fields={"x": "float64"})
"""


def test_column_clashes_are_rejected_all_at_once(tmp_path):
    repo = _stats_repo(tmp_path, CLASHES)
    with pytest.raises(DefinitionErrors) as info:
        compile_repo(repo, project="t")
    by_obj = {(e.obj, e.field): e for e in info.value.errors}
    assert set(by_obj) == {
        ("FeatureView 'v1'", "fields['driver_id']"),
        ("FeatureView 'v2'", "fields['event_date']"),
        ("FeatureView 'v3'", "fields['created_ts']"),
        ("FeatureView 'v4'", "aggregations['driver_id']"),
        ("FeatureView 'v5'", "aggregations column 'driver_id'"),
    }, str(info.value)
    assert "also the view's join key" in by_obj[("FeatureView 'v1'", "fields['driver_id']")].message
    assert all(e.file == "defs.py" and e.hint for e in info.value.errors)


def test_accepted_plans_build_their_store_layouts(tmp_path):
    """What the compiler accepts, the offline and online stores accept too; and the
    compiler's copy of the reserved names is the offline store's."""
    from featurestore.compile import PlanIndex
    from featurestore.compile.columns import RESERVED_COLUMNS
    from featurestore.stores.offline.spec import RESERVED
    from featurestore.stores.view_specs import offline_spec, online_schema, served_schema

    assert RESERVED_COLUMNS == RESERVED
    for repo, project in (
        (quickstart(tmp_path / "qs"), "quickstart"),
        (EXAMPLES / "rideshare", "r"),
    ):
        index = PlanIndex(compile_repo(repo, project=project).plan)
        for view in index.views.values():
            offline_spec(view)
            online_schema(project, view)
            served_schema(project, view)


TIMESTAMPS = """
from featurestore import BatchSource, Entity, FeatureView
e = Entity(name="e", join_keys={"driver_id": "int64"})
naive = BatchSource(name="naive", path="d.parquet", timestamp_field="naive_ts")
text = BatchSource(name="text", path="d.parquet", timestamp_field="ts",
                   created_timestamp_field="ts_text")
v1 = FeatureView(name="v1", entities=[e], source=naive, ttl="1h", fields={"x": "float64"})
v2 = FeatureView(name="v2", entities=[e], source=text, ttl="1h", fields={"x": "float64"})
"""


def test_timestamp_columns_of_the_wrong_type_are_rejected(tmp_path):
    repo = _stats_repo(tmp_path, TIMESTAMPS)
    with pytest.raises(DefinitionErrors) as info:
        compile_repo(repo, project="t")
    got = {(e.obj, e.field, e.message) for e in info.value.errors}
    assert got == {
        ("FeatureView 'v1'", "source.timestamp_field", "timestamp column is naive (no time zone)"),
        (
            "FeatureView 'v2'",
            "source.created_timestamp_field",
            "timestamp column has dtype String, not a datetime",
        ),
    }


def test_a_corrupt_source_file_is_an_error_a_missing_one_a_warning(tmp_path):
    defs = """
    from featurestore import BatchSource, Entity, FeatureView
    e = Entity(name="e", join_keys={"driver_id": "int64"})
    s = BatchSource(name="s", path="d.parquet", timestamp_field="ts")
    v = FeatureView(name="v", entities=[e], source=s, ttl="1h", fields={"x": "float64"})
    w = FeatureView(name="w", entities=[e], source=s, ttl="2h", fields={"x": "float64"})
    """
    repo = write_repo(tmp_path / "r", {"defs.py": defs})
    assert "schema not checked" in compile_repo(repo, project="t").warnings[0]
    (repo / "d.parquet").write_text("not parquet")
    with pytest.raises(DefinitionErrors) as info:
        compile_repo(repo, project="t")
    (err,) = info.value.errors  # one source, two views: reported once
    assert (err.obj, err.field, err.value) == ("BatchSource 's'", "path", "d.parquet")
    assert "cannot be read as parquet" in err.message


def test_names_with_a_colon_are_rejected(tmp_path):
    defs = """
    from featurestore import BatchSource, Entity, FeatureService, FeatureView
    e = Entity(name="e", join_keys={"driver_id": "int64"})
    s = BatchSource(name="s", path="d.parquet", timestamp_field="ts")
    v = FeatureView(name="v", entities=[e], source=s, ttl="1h", fields={"x": "float64"})
    svc = FeatureService(name="svc", features=[v])
    # Built around the constructor's checks, as a plugin or a migration might.
    object.__setattr__(v, "name", "team:v")
    object.__setattr__(svc, "name", "a:svc")
    """
    repo = _stats_repo(tmp_path, defs, project="my:project")
    with pytest.raises(DefinitionErrors) as info:
        compile_repo(repo, project="my:project")
    got = {(e.obj, e.field) for e in info.value.errors}
    assert ("project 'my:project'", "project.name") in got
    assert ("FeatureView 'team:v'", "name") in got
    assert ("FeatureService 'a:svc'", "name") in got


@pytest.mark.parametrize(
    "body",
    ["import sys\nsys.exit(0)\n", "raise SystemExit('bye')\n", "raise GeneratorExit\n"],
)
def test_a_definitions_file_that_exits_is_a_definition_error(tmp_path, body):
    repo = write_repo(tmp_path / "r", {"defs.py": "x = 1\n" + body})
    with pytest.raises(DefinitionErrors) as info:
        compile_repo(repo, project="t")
    (err,) = info.value.errors
    assert err.file is not None and err.file.startswith("defs.py:")
    assert err.hint
