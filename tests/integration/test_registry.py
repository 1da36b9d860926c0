"""The registry suite, run against SQLite and the real PostgreSQL alike."""

import multiprocessing as mp
import uuid

import pytest

from featurestore.compile import ObjectPlan, RepoPlan
from featurestore.errors import RegistryConflictError, VersionNotFoundError
from featurestore.registry import Registry


@pytest.fixture(params=["sqlite", "postgres"])
def registry_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def project():
    return f"test_{uuid.uuid4().hex[:12]}"


def view(name: str, ttl: int = 3_600_000_000, dtype: str = "float64") -> ObjectPlan:
    return ObjectPlan(
        kind="feature_view",
        name=name,
        spec={
            "entities": ["driver"],
            "join_keys": [{"name": "driver_id", "dtype": "int64"}],
            "source": {
                "type": "batch",
                "name": "s",
                "path": "p",
                "format": "parquet",
                "timestamp_field": "ts",
                "created_timestamp_field": None,
                "storage_options": {},
            },
            "ttl_us": ttl,
            "features": [{"name": "x", "dtype": dtype}],
            "transform": [],
            "aggregations": [],
            "online": True,
            "metadata": {},
        },
    )


def plan(project: str, *objs: ObjectPlan) -> RepoPlan:
    return RepoPlan(project=project, objects=objs)


def test_apply_creates_versions_and_no_change_is_a_no_op(registry_url, project):
    reg = Registry(registry_url, project=project)
    assert reg.head() == 0
    r1 = reg.apply(plan(project, view("a")))
    assert (r1.version, r1.created) == (1, True)
    r2 = reg.apply(plan(project, view("a")))
    assert (r2.version, r2.created) == (1, False)
    assert reg.head(fresh=True) == 1
    r3 = reg.apply(plan(project, view("a"), view("b")))
    assert r3.version == 2
    assert [o.action for o in r3.diff.objects] == ["added"]
    assert [o.name for o in reg.snapshot(1).plan] == ["a"]
    assert [o.name for o in reg.snapshot(2).plan] == ["a", "b"]
    assert [h.version for h in reg.history()] == [1, 2]


def test_diff_flags_changes_that_invalidate_stored_data(registry_url, project):
    reg = Registry(registry_url, project=project)
    reg.apply(plan(project, view("a")))
    diff = reg.diff(plan(project, view("a", ttl=60_000_000, dtype="int64")))
    (change,) = diff.objects
    paths = {c.path: (c.old, c.new) for c in change.changes}
    assert paths == {
        "features.x.dtype": ("float64", "int64"),
        "ttl_us": (3_600_000_000, 60_000_000),
    }
    assert any("dtype change" in i for i in change.impacts)
    assert any("TTL shrink" in i for i in change.impacts)
    assert not reg.diff(plan(project, view("a", ttl=7_200_000_000))).objects[0].impacts


def test_removal_and_rollback_are_new_versions(registry_url, project):
    reg = Registry(registry_url, project=project)
    reg.apply(plan(project, view("a"), view("b")))
    reg.apply(plan(project, view("a", dtype="int64")))  # b removed, a changed
    assert [o.name for o in reg.snapshot(2).plan] == ["a"]
    result = reg.rollback(to_version=1, expected_version=2)
    assert (result.version, result.created) == (3, True)
    assert reg.snapshot(3).plan == reg.snapshot(1).plan
    assert reg.history()[-1].operation == "rollback"
    revs = reg.object_history("feature_view", "b")
    assert [(r["registry_version"], r["removed"]) for r in revs] == [
        (1, False),
        (2, True),
        (3, False),
    ]
    with pytest.raises(VersionNotFoundError):
        reg.snapshot(99)


def test_stale_expected_version_is_a_conflict_and_writes_nothing(registry_url, project):
    reg = Registry(registry_url, project=project)
    reg.apply(plan(project, view("a")))
    reg.apply(plan(project, view("a"), view("b")))
    with pytest.raises(RegistryConflictError) as info:
        reg.apply(plan(project, view("c")), expected_version=1)
    assert info.value.retryable
    assert reg.head(fresh=True) == 2
    assert [o.name for o in reg.snapshot(2).plan] == ["a", "b"]


def test_watermarks(registry_url, project):
    reg = Registry(registry_url, project=project)
    assert reg.get_watermark("v") is None
    reg.set_watermark("v", 10)
    reg.set_watermark("v", 20)
    assert reg.get_watermark("v") == 20


def _racer(url: str, project: str, name: str, base: int, barrier, results) -> None:
    reg = Registry(url, project=project)
    barrier.wait()
    try:
        r = reg.apply(plan(project, view("a"), view(name)), expected_version=base)
        results.put(("won", name, r.version))
    except RegistryConflictError:
        results.put(("conflict", name, None))


def test_racing_applies_from_processes_exactly_one_wins(registry_url, project):
    reg = Registry(registry_url, project=project)
    reg.apply(plan(project, view("a")))
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_racer, args=(registry_url, project, f"p{i}", 1, barrier, results))
        for i in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    outcomes = [results.get(timeout=5) for _ in procs]
    winners = [o for o in outcomes if o[0] == "won"]
    assert len(winners) == 1, outcomes
    assert sum(o[0] == "conflict" for o in outcomes) == 3
    assert reg.head(fresh=True) == 2
    names = [o.name for o in reg.snapshot(2).plan]
    assert names == sorted(["a", winners[0][1]])
    assert len(reg.history()) == 2
