"""Governance end to end on a real repo: the server allows and denies as the
policy says and logs every allowed pii read to the Delta access log; an apply that
lowers a class needs an approver and records it."""

from __future__ import annotations

import http.client
from datetime import timedelta

import orjson
from typer.testing import CliRunner

from featurestore.api.access_log import read_access_log
from featurestore.api.store import FeatureStore
from featurestore.cli.main import app as cli
from featurestore.scaffold.sample_data import SAMPLE_END
from tests.helpers import quickstart
from tests.integration.served import running_server

PLAIN = 'Field(name="conv_rate", dtype=pl.Float64)'
PII = 'Field(name="conv_rate", dtype=pl.Float64, classification="pii")'
POLICY = """
[server]
api_keys = ["k-analyst", "k-ranker"]

[policy]
approvers = ["alice"]

[policy.principals.analyst]
api_keys = ["k-analyst"]
classes = ["public", "internal"]

[policy.principals.ranker]
api_keys = ["k-ranker"]
actions = ["online"]
classes = ["internal", "pii"]
"""


def _repo(tmp_path):
    repo = quickstart(tmp_path / "qs")
    path = repo / "features.py"
    path.write_text(path.read_text().replace(PLAIN, PII))
    with (repo / "featurestore.toml").open("a") as f:
        f.write(POLICY)
    return repo


def _lookup(port, key, features):
    body = {"entities": {"driver_id": [1001, 1002]}, "features": features}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(
        "POST",
        "/v1/features/online",
        body=orjson.dumps(body),
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    res = conn.getresponse()
    out = (res.status, orjson.loads(res.read()))
    conn.close()
    return out


def test_server_enforces_the_policy_and_logs_pii_reads(tmp_path):
    repo = _repo(tmp_path)
    store = FeatureStore(repo)
    store.apply()
    store.backfill()
    store.materialize(end=SAMPLE_END + timedelta(hours=1))
    store.close()
    with running_server(repo, tmp_path / "server.log") as port:
        status, doc = _lookup(port, "k-analyst", ["driver_hourly_stats:conv_rate"])
        assert status == 403
        assert doc["field"] == "driver_hourly_stats:conv_rate"
        assert doc["value"] == "\"class 'pii'\"" and "analyst" in doc["message"]
        # the inherited class is enforced too
        status, doc = _lookup(port, "k-analyst", ["driver_hourly_stats:acceptance_gap"])
        assert status == 403 and doc["field"] == "driver_hourly_stats:acceptance_gap"
        status, doc = _lookup(port, "k-analyst", ["driver_hourly_stats:acc_rate"])
        assert status == 200, doc
        for _ in range(2):
            status, doc = _lookup(port, "k-ranker", ["driver_hourly_stats:conv_rate"])
            assert status == 200, doc
            assert len(doc["features"]["conv_rate"]["values"]) == 2
    rows = read_access_log(FeatureStore(repo).offline)  # SIGTERM's shutdown flushed it
    assert rows.height == 2  # the two pii reads; internal and refused reads are not logged
    assert set(rows["principal"]) == {"ranker"} and rows["entities"].to_list() == [2, 2]
    assert rows["features"].to_list() == [["driver_hourly_stats:conv_rate"]] * 2
    assert rows["action"].to_list() == ["online"] * 2
    result = CliRunner().invoke(cli, ["access-log", "--repo", str(repo), "--json"])
    assert result.exit_code == 0, result.output
    assert len(orjson.loads(result.stdout)) == 2


def test_lowering_a_class_needs_an_approver_and_history_shows_it(tmp_path):
    repo = _repo(tmp_path)
    runner = CliRunner()
    first = runner.invoke(cli, ["apply", "--repo", str(repo)])
    assert first.exit_code == 0, first.output
    path = repo / "features.py"
    path.write_text(path.read_text().replace(PII, PLAIN))
    plan = runner.invoke(cli, ["plan", "--repo", str(repo)])
    assert "needs an approver" in plan.output and "pii -> internal" in plan.output
    refused = runner.invoke(cli, ["apply", "--repo", str(repo)])
    assert refused.exit_code == 1 and "approv" in refused.output
    assert FeatureStore(repo).registry.head(fresh=True) == 1  # nothing written
    wrong = runner.invoke(cli, ["apply", "--repo", str(repo), "--approved-by", "mallory"])
    assert wrong.exit_code == 1 and "not an approver" in wrong.output
    done = runner.invoke(
        cli, ["apply", "--repo", str(repo), "-m", "declassify", "--approved-by", "alice"]
    )
    assert done.exit_code == 0, done.output
    history = FeatureStore(repo).registry.history()
    assert len(history) == 2
    assert history[-1].message == "declassify [approved by alice]" and history[-1].author


def test_the_python_api_enforces_the_policy_and_logs_pii_reads(tmp_path, monkeypatch):
    """FeatureStore.get_online_features / get_training_dataset take ``principal=``: a
    principal without the pii grant is refused (training is not among the ranker's
    actions either), an allowed online read is logged with its entity count."""
    import polars as pl
    import pytest

    from featurestore._policy import AccessDenied

    monkeypatch.setenv("FEATURESTORE_ONLINE_RETENTION", "none")  # the sample data is old
    repo = _repo(tmp_path)
    store = FeatureStore(repo)
    at = SAMPLE_END + timedelta(hours=1)
    try:
        store.apply()
        store.backfill()
        store.materialize(end=at)
        pii = ["driver_hourly_stats:conv_rate"]
        with pytest.raises(AccessDenied) as denied:
            store.get_online_features({"driver_id": [1001]}, features=pii, principal="analyst")
        assert denied.value.field == pii[0]
        spine = pl.read_parquet(repo / "data" / "spine.parquet")
        with pytest.raises(AccessDenied):
            store.get_training_dataset(spine, features=pii, principal="ranker")
        got = store.get_online_features(
            {"driver_id": [1001, 1002, 1003]}, features=pii, principal="ranker", request_time=at
        )
        assert got.statuses["conv_rate"] == ["PRESENT"] * 3
        internal = store.get_online_features(
            {"driver_id": [1001]},
            features=["driver_hourly_stats:acc_rate"],
            principal="analyst",
            request_time=at,
        )
        assert internal.statuses["acc_rate"] == ["PRESENT"]
    finally:
        store.close()  # flushes the access log
    rows = read_access_log(FeatureStore(repo).offline)
    assert rows.height == 1
    row = rows.row(0, named=True)
    assert row["principal"] == "ranker" and row["entities"] == 3 and row["action"] == "online"


def test_dataset_create_checks_the_principal(tmp_path):
    repo = _repo(tmp_path)
    store = FeatureStore(repo)
    store.apply()
    store.backfill()
    store.close()
    spine = str(repo / "data" / "spine.parquet")
    base = ["dataset", "create", "--repo", str(repo), "--entities", spine]
    pii = ["--feature", "driver_hourly_stats:conv_rate"]
    denied = CliRunner().invoke(cli, [*base, *pii, "--principal", "analyst", "--json"])
    assert denied.exit_code == 1, denied.output
    assert "driver_hourly_stats:conv_rate" in denied.output and "pii" in denied.output
    ok = CliRunner().invoke(
        cli, [*base, "--feature", "driver_hourly_stats:acc_rate", "--principal", "analyst"]
    )
    assert ok.exit_code == 0, ok.output
