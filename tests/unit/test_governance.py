"""Classification in the plan, its inheritance and diff, and the policy's answers."""

from __future__ import annotations

import polars as pl
import pytest

from featurestore._policy import AccessDenied, Policy, PolicyConfig
from featurestore.api.access import AccessGate
from featurestore.api.access_log import AccessLogger, read_access_log
from featurestore.compile import PlanIndex, compile_repo
from featurestore.definitions import Aggregation, Field
from featurestore.errors import DefinitionErrors
from featurestore.registry.diff import diff_plans
from tests.helpers import quickstart

QS = "featurestore/scaffold/quickstart/features.py"
PII = 'Field(name="conv_rate", dtype=pl.Float64, classification="pii")'


def _repo(tmp_path, old: str = 'Field(name="conv_rate", dtype=pl.Float64)', new: str = PII):
    repo = quickstart(tmp_path / "qs")
    path = repo / "features.py"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return repo


def _classes(plan, kind, name):
    spec = plan.get(kind, name).spec
    return spec["classification"]["features"]


def test_bad_classification_names_field_value_and_fix():
    f = Field(name="email", dtype="string", classification="secret")
    [p] = f.problems
    assert p.field == "classification" and p.value == "secret" and "pii" in p.hint
    assert Aggregation(
        name="a", column="x", function="sum", window="1h", classification="x"
    ).problems


def test_derived_features_inherit_the_strictest_class(tmp_path):
    plan = compile_repo(_repo(tmp_path), project="q").plan
    view = _classes(plan, "feature_view", "driver_hourly_stats")
    assert view["conv_rate"] == {"class": "pii", "origin": "declared"}
    assert view["acc_rate"] == {"class": "internal", "origin": "default"}
    # transform conv_rate - acc_rate: the strictest of what it reads
    assert view["acceptance_gap"] == {
        "class": "pii",
        "origin": "inherited",
        "inputs": ["acc_rate", "conv_rate"],
    }
    # the on-demand output reads avg_daily_trips only
    assert _classes(plan, "on_demand_feature_view", "trip_fit")["trips_per_km"]["class"] == (
        "internal"
    )


def test_lowering_a_derived_class_needs_a_reason_which_is_recorded(tmp_path):
    gap = 'Field(name="acceptance_gap", dtype=pl.Float64)'
    repo = _repo(tmp_path)
    path = repo / "features.py"
    text = path.read_text()
    path.write_text(text.replace(gap, gap[:-1] + ', classification="internal")'))
    with pytest.raises(DefinitionErrors) as info:
        compile_repo(repo, project="q")
    [err] = info.value.errors
    assert err.field == "fields['acceptance_gap'].classification"
    assert "lower than 'pii'" in err.message and "classification_reason" in err.hint
    path.write_text(
        text.replace(
            gap,
            gap[:-1] + ', classification="internal", classification_reason="a difference")',
        )
    )
    plan = compile_repo(repo, project="q").plan
    entry = _classes(plan, "feature_view", "driver_hourly_stats")["acceptance_gap"]
    assert entry["class"] == "internal" and entry["inherited"] == "pii"
    assert entry["reason"] == "a difference"


def test_classification_is_in_the_hash_and_a_lowering_is_high_impact(tmp_path):
    before = compile_repo(_repo(tmp_path / "a"), project="q").plan
    after = compile_repo(quickstart(tmp_path / "b"), project="q").plan
    old_view = before.get("feature_view", "driver_hourly_stats")
    new_view = after.get("feature_view", "driver_hourly_stats")
    assert old_view.hash != new_view.hash
    diff = diff_plans(before, after, base_version=1)
    assert any("classification lowered (conv_rate: pii -> internal)" in h for h in diff.high_impact)
    assert diff.to_dict()["high_impact"] == list(diff.high_impact)
    # raising it back is not high-impact
    assert not diff_plans(after, before, base_version=2).high_impact


def test_a_served_feature_removed_is_high_impact(tmp_path):
    before = compile_repo(quickstart(tmp_path / "a"), project="q").plan
    repo = _repo(tmp_path / "b", 'Field(name="acc_rate", dtype=pl.Float64),', "")
    text = (repo / "features.py").read_text()
    (repo / "features.py").write_text(text.replace('- pl.col("acc_rate")', ""))
    after = compile_repo(repo, project="q").plan
    high = diff_plans(before, after, base_version=1).high_impact
    assert any("driver_hourly_stats:acc_rate removed while a feature service" in h for h in high)


POLICY = PolicyConfig.model_validate(
    {
        "anonymous": "guest",
        "approvers": ["alice"],
        "principals": {
            "guest": {"classes": ["public"]},
            "analyst": {"api_keys": ["k1"], "actions": ["training"]},
            "ranker": {
                "api_keys": ["k2"],
                "actions": ["online"],
                "classes": ["internal", "pii"],
                "services": ["driver_ranking"],
            },
        },
    }
)


@pytest.mark.parametrize(
    ("principal", "action", "service", "grant"),
    [
        ("analyst", "training", None, "class 'pii'"),
        ("analyst", "online", None, "action 'online'"),
        ("ranker", "online", "other", "service 'other'"),
        (None, "online", None, "class 'internal'"),  # anonymous -> guest
        ("mallory", "online", None, "a principal"),
    ],
)
def test_policy_denies_naming_the_feature_and_the_missing_grant(principal, action, service, grant):
    policy = Policy(POLICY)
    features = [("v:ok", "internal"), ("v:email", "pii")]
    with pytest.raises(AccessDenied) as info:
        policy.check(principal, action, features, service=service)
    assert info.value.grant.startswith(grant)
    assert info.value.feature in ("v:ok", "v:email", service)


def test_policy_allows_what_it_grants_and_checks_approvers():
    policy = Policy(POLICY)
    policy.check("ranker", "online", [("v:email", "pii")], service="driver_ranking")
    policy.check("analyst", "training", [("v:ok", "internal")])
    assert policy.principal_of_key("k2") == "ranker" and policy.principal_of_key(None) == "guest"
    policy.check_approver("alice", reasons=["x"])
    with pytest.raises(AccessDenied, match="not an approver"):
        policy.check_approver("bob", reasons=["x"])
    with pytest.raises(AccessDenied, match="needs an approval: x"):
        policy.check_approver(None, reasons=["x"])


def test_gate_checks_python_reads_and_logs_pii_to_delta(tmp_path):
    from featurestore.stores.offline.delta import DeltaOfflineStore

    plan = compile_repo(_repo(tmp_path), project="q").plan
    index = PlanIndex(plan)
    offline = DeltaOfflineStore(str(tmp_path / "offline"))
    logger = AccessLogger(offline, flush_seconds=60)
    gate = AccessGate(Policy(POLICY), logger)
    with pytest.raises(AccessDenied) as info:
        gate.check("analyst", "training", index, features=None, feature_service="driver_ranking")
    assert info.value.feature == "driver_hourly_stats:conv_rate"
    classes = gate.check("ranker", "online", index, features=None, feature_service="driver_ranking")
    gate.record("ranker", "online", classes, entities=3, origin="test", registry_version=1)
    gate.record(
        "ranker", "online", (("v:x", "internal"),), entities=9, origin="t", registry_version=1
    )
    assert logger.flush(10)
    logger.close()
    rows = read_access_log(offline)
    assert rows.height == 1  # internal-only reads are not logged
    row = rows.row(0, named=True)
    assert row["principal"] == "ranker" and row["entities"] == 3 and row["origin"] == "test"
    assert row["features"] == [
        "driver_hourly_stats:conv_rate",
        "driver_hourly_stats:acceptance_gap",
    ]
    assert read_access_log(offline, feature="driver_hourly_stats").height == 1
    assert read_access_log(offline, principal="analyst").height == 0
    assert rows.schema["accessed_at"] == pl.Datetime("us", "UTC")
