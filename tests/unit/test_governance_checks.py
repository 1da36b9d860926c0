"""``featurestore check``: the governance rules over the plan, and the command's
exit code and findings."""

from __future__ import annotations

from typer.testing import CliRunner

from featurestore._policy import Policy, PolicyConfig
from featurestore.api.checks import check_plan
from featurestore.cli.main import app as cli
from featurestore.compile import compile_repo
from tests.helpers import quickstart

PLAIN = 'Field(name="conv_rate", dtype=pl.Float64)'
PII = 'Field(name="conv_rate", dtype=pl.Float64, classification="pii")'
OWNER = '    owner="ml-platform@example.com",\n'


def _repo(tmp_path, *, owner: bool = True):
    repo = quickstart(tmp_path / "qs")
    path = repo / "features.py"
    text = path.read_text().replace(PLAIN, PII)
    if not owner:
        assert OWNER in text
        text = text.replace(OWNER, "")
    path.write_text(text)
    return repo


def _policy(**grant):
    return Policy(PolicyConfig.model_validate({"principals": {"ranker": grant}}))


def test_a_clean_plan_passes(tmp_path):
    repo = _repo(tmp_path)
    plan = compile_repo(repo, project="q").plan
    reader = _policy(classes=["internal", "pii"])
    assert check_plan(plan, repo=repo, policy=reader, allowed_source_roots=["data"]) == []


def test_every_rule_reports_the_object_and_the_fix(tmp_path):
    repo = _repo(tmp_path, owner=False)
    plan = compile_repo(repo, project="q").plan
    findings = check_plan(
        plan, repo=repo, policy=_policy(classes=["internal"]), allowed_source_roots=["/srv"]
    )
    got = {(f.rule, f.obj) for f in findings}
    assert ("pii-owner", "view 'driver_hourly_stats'") in got
    assert ("source-root", "view 'driver_hourly_stats'") in got
    # the services that serve conv_rate (or what it feeds) have no pii reader
    assert ("pii-service-grant", "feature service 'driver_ranking'") in got
    owner = next(f for f in findings if f.rule == "pii-owner")
    assert "conv_rate" in owner.message and "owner=" in owner.hint
    # no policy: no grant rule; no roots: no source rule
    only = check_plan(plan, repo=repo, policy=None)
    assert {f.rule for f in only} == {"pii-owner"}


def test_check_command_exits_1_with_the_list(tmp_path):
    runner = CliRunner()
    bad = _repo(tmp_path / "bad", owner=False)
    result = runner.invoke(cli, ["check", "--repo", str(bad)])
    assert result.exit_code == 1, result.output
    assert "[pii-owner] view 'driver_hourly_stats'" in result.output
    good = _repo(tmp_path / "good")
    result = runner.invoke(cli, ["check", "--repo", str(good)])
    assert result.exit_code == 0, result.output
    assert "all governance checks pass" in result.output
