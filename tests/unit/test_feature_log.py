"""FeatureLogger: typed rows in Delta, a bounded queue that drops and counts, sampling
that is a pure function of the request id, flush and close."""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime

import polars as pl
import pytest

from featurestore.api.feature_log import (
    FeatureLogger,
    log_table_name,
    sampled,
)
from featurestore.api.online import OnlineResponse, build_lookup_plan
from featurestore.compile import PlanIndex, compile_repo
from featurestore.errors import DefinitionError
from featurestore.stores.offline.delta import DeltaOfflineStore
from tests.helpers import write_repo

FEATURES = """
    from featurestore import BatchSource, Entity, FeatureService, FeatureView, Field

    user = Entity(name="user", join_keys={"user_id": "uint64"})
    shop = Entity(name="shop", join_keys={"shop": "string"})
    typed = FeatureView(
        name="typed", entities=[user], ttl="1d",
        source=BatchSource(name="s", path="data/s.parquet", timestamp_field="ts"),
        fields=[Field(name="i8", dtype="int8"), Field(name="u32", dtype="uint32"),
                Field(name="f32", dtype="float32"), Field(name="b", dtype="bool"),
                Field(name="s", dtype="string"), Field(name="d", dtype="date"),
                Field(name="dt", dtype="datetime"), Field(name="li", dtype="list[int64]")])
    shops = FeatureView(
        name="shops", entities=[shop], ttl=None,
        source=BatchSource(name="s2", path="data/s2.parquet", timestamp_field="ts"),
        fields=[Field(name="score", dtype="float64")])
    svc = FeatureService(name="svc", features=[typed, shops])
    """
R_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
T1 = datetime(2025, 12, 31, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = write_repo(tmp_path_factory.mktemp("repo"), {"features.py": FEATURES})
    return PlanIndex(compile_repo(root, project="t").plan)


def _response(n: int = 3, *, version: int = 1, r_us: int = R_US) -> OnlineResponse:
    """What ``lookup`` returns for ``n`` entities: typed Python values, nulls where a
    row is missing or expired."""
    base = [
        (2**64 - 1, "north", "PRESENT", 5, 7, 1.5, True, "a", date(2025, 1, 2), T1, [1, None]),
        (7, "south", "EXPIRED", None, None, None, None, None, None, None, None),
        (8, "west", "MISSING", None, None, None, None, None, None, None, None),
    ]
    rows = [base[i % 3] for i in range(n)]
    col = list(zip(*rows, strict=True))
    status = list(col[2])
    stamps = [R_US - 1000 if s == "PRESENT" else (R_US - 10**12 if s == "EXPIRED" else None)
              for s in status]  # fmt: skip
    names = ["i8", "u32", "f32", "b", "s", "d", "dt", "li"]
    values = {name: list(col[3 + i]) for i, name in enumerate(names)}
    values["score"] = [0.25 if i % 2 == 0 else None for i in range(n)]
    statuses = {name: status for name in names}
    statuses["score"] = ["PRESENT" if i % 2 == 0 else "MISSING" for i in range(n)]
    event_ts = {name: stamps for name in names}
    event_ts["score"] = [R_US - 5 if i % 2 == 0 else None for i in range(n)]
    return OnlineResponse(
        {"user_id": list(col[0]), "shop": list(col[1])}, values, statuses, event_ts, version, r_us
    )


class SlowOffline:
    """Fault injection: a real offline store whose writes wait for a gate."""

    def __init__(self, inner: DeltaOfflineStore) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.failures = 0  # the next this-many writes raise

    def write_table(self, name, frame, *, mode, partition_by=None):
        self.entered.set()
        self.gate.wait(30)
        if self.failures:
            self.failures -= 1
            raise OSError("injected: storage unavailable")
        return self.inner.write_table(name, frame, mode=mode, partition_by=partition_by)


def test_rows_land_in_delta_with_exact_dtypes(tmp_path, index):
    offline = DeltaOfflineStore(str(tmp_path / "offline"))
    with FeatureLogger(offline, project="t", index=lambda v: index) as logger:
        logger.log(_response(), feature_service="svc", request_id="req-1")
    assert logger.stats()["written_rows"] == 3
    frame = offline.read_table("_feature_logs/svc").collect().sort("entity_index")
    utc = pl.Datetime("us", "UTC")
    expected = {
        "log_format": pl.Int16, "request_id": pl.String, "entity_index": pl.Int32,
        "request_time": utc, "request_date": pl.Date, "registry_version": pl.Int64,
        "feature_service": pl.String, "features": pl.String,
        "user_id": pl.UInt64, "shop": pl.String,
        "typed__i8": pl.Int8, "typed__u32": pl.UInt32, "typed__f32": pl.Float32,
        "typed__b": pl.Boolean, "typed__s": pl.String, "typed__d": pl.Date,
        "typed__dt": utc, "typed__li": pl.List(pl.Int64), "shops__score": pl.Float64,
    }  # fmt: skip
    for name, dtype in expected.items():
        assert frame.schema[name] == dtype, name
        if name.count("__") == 1:
            assert frame.schema[f"{name}__status"] == pl.String
            assert frame.schema[f"{name}__event_ts"] == utc
    first = frame.row(0, named=True)
    assert first["user_id"] == 2**64 - 1  # uint64 beyond int64 survives the round trip
    assert first["typed__li"] == [1, None]
    assert first["typed__dt"] == T1
    assert first["typed__d"] == date(2025, 1, 2)
    assert first["request_time"] == datetime(2026, 1, 1, tzinfo=UTC)
    assert first["request_date"] == date(2026, 1, 1)
    assert frame["typed__i8__status"].to_list() == ["PRESENT", "EXPIRED", "MISSING"]
    assert frame["typed__i8"].to_list() == [5, None, None]
    assert frame["typed__i8__event_ts"].dt.epoch("us").to_list() == [
        R_US - 1000,
        R_US - 10**12,
        None,
    ]
    assert frame["shops__score"].to_list() == [0.25, None, 0.25]
    assert set(frame["features"]) == {
        '["typed:i8", "typed:u32", "typed:f32", "typed:b", "typed:s", "typed:d", "typed:dt", '
        '"typed:li", "shops:score"]'
    }
    assert set(frame["log_format"]) == {1}
    assert frame["request_id"].to_list() == ["req-1"] * 3


def test_plan_or_index_give_the_same_rows_and_adhoc_lists_get_their_own_table(tmp_path, index):
    offline = DeltaOfflineStore(str(tmp_path / "offline"))
    refs = ["typed:i8", "shops:score"]
    plan = build_lookup_plan(
        index, project="t", registry_version=1, features=refs, full_feature_names=True
    )
    resp = _response()
    resp.values = {"typed__i8": resp.values["i8"], "shops__score": resp.values["score"]}
    resp.statuses = {"typed__i8": resp.statuses["i8"], "shops__score": resp.statuses["score"]}
    resp.event_ts = {"typed__i8": resp.event_ts["i8"], "shops__score": resp.event_ts["score"]}
    with FeatureLogger(offline, project="t", index=lambda v: index) as logger:
        logger.log(resp, features=refs, full_feature_names=True, request_id="a")
        logger.log(resp, features=refs, full_feature_names=True, request_id="b", plan=plan)
    table = log_table_name(features=refs)
    assert table.startswith("_feature_logs/_adhoc_")
    frame = offline.read_table(table).collect().sort("request_id", "entity_index")
    a, b = frame.filter(pl.col("request_id") == "a"), frame.filter(pl.col("request_id") == "b")
    assert a.drop("request_id").equals(b.drop("request_id"))
    assert a["feature_service"].null_count() == 3
    assert a["typed__i8"].to_list() == [5, None, None]


def test_overload_drops_and_counts_without_blocking(tmp_path, index):
    slow = SlowOffline(DeltaOfflineStore(str(tmp_path / "offline")))
    logger = FeatureLogger(slow, project="t", index=lambda v: index, queue_size=100, batch_rows=10)
    try:
        logger.log(_response(10), feature_service="svc", request_id="first")
        assert slow.entered.wait(10), "the writer never started"
        # The writer is stuck in a write: the queue (100 rows) fills, the rest is dropped.
        started = time.perf_counter()
        for i in range(15):
            logger.log(_response(10), feature_service="svc", request_id=f"r{i}")
        took = time.perf_counter() - started
        stats = logger.stats()
        assert (stats["logged"], stats["dropped"], stats["queued"]) == (110, 50, 100)
        assert took < 1.0, f"log() blocked for {took:.2f} s"
        slow.gate.set()
        assert logger.flush(timeout=30)
    finally:
        slow.gate.set()
        logger.close()
    assert logger.stats()["written_rows"] == 110
    frame = slow.inner.read_table("_feature_logs/svc").collect()
    assert frame.height == 110
    assert frame["request_id"].n_unique() == 11  # "first" and r0..r9: whole requests only


def test_failed_writes_are_retried_then_counted(tmp_path, index):
    slow = SlowOffline(DeltaOfflineStore(str(tmp_path / "offline")))
    slow.gate.set()
    slow.failures = 1
    with FeatureLogger(slow, project="t", index=lambda v: index, write_attempts=2) as logger:
        logger.log(_response(), feature_service="svc", request_id="x")
        assert logger.flush(timeout=30)
        assert (logger.write_errors, logger.written_rows, logger.failed_rows) == (1, 3, 0)
        slow.failures = 2
        logger.log(_response(), feature_service="svc", request_id="y")
        assert logger.flush(timeout=30)
    assert (logger.write_errors, logger.written_rows, logger.failed_rows) == (3, 3, 3)
    assert slow.inner.read_table("_feature_logs/svc").collect()["request_id"].to_list() == ["x"] * 3


def test_sampling_is_a_pure_function_of_the_request_id(tmp_path, index):
    ids = [f"req-{i}" for i in range(20_000)]
    kept = [i for i in ids if sampled(i, 0.3)]
    assert kept == [i for i in ids if sampled(i, 0.3)]  # same answer every time
    assert abs(len(kept) / len(ids) - 0.3) < 0.02
    assert set(kept) <= {i for i in ids if sampled(i, 0.6)}  # a higher rate keeps a superset
    assert all(sampled(i, 1.0) for i in ids[:100])
    assert not any(sampled(i, 0.0) for i in ids[:100])

    offline = DeltaOfflineStore(str(tmp_path / "offline"))
    with FeatureLogger(
        offline, project="t", index=lambda v: index, sample_rates={"svc": 0.3}
    ) as logger:
        for rid in ids[:200]:
            logger.log(_response(), feature_service="svc", request_id=rid)
    frame = offline.read_table("_feature_logs/svc").collect()
    expected = {i for i in ids[:200] if sampled(i, 0.3)}
    assert set(frame["request_id"]) == expected
    per_request = frame.group_by("request_id").agg(pl.col("entity_index").sort())
    assert all(v == [0, 1, 2] for v in per_request["entity_index"].to_list())
    assert logger.sampled_out == 3 * (200 - len(expected))


def test_close_flushes_and_later_rows_are_dropped(tmp_path, index):
    offline = DeltaOfflineStore(str(tmp_path / "offline"))
    logger = FeatureLogger(
        offline, project="t", index=lambda v: index, batch_rows=10_000, flush_seconds=3600
    )
    for i in range(4):
        logger.log(_response(), feature_service="svc", request_id=f"r{i}")
    time.sleep(0.2)
    assert logger.stats()["written_rows"] == 0  # neither full nor old enough yet
    logger.close()
    assert offline.read_table("_feature_logs/svc").collect().height == 12
    logger.log(_response(), feature_service="svc", request_id="late")
    assert logger.stats()["dropped"] == 3


def test_a_batch_is_written_once_old_enough(tmp_path, index):
    offline = DeltaOfflineStore(str(tmp_path / "offline"))
    with FeatureLogger(offline, project="t", index=lambda v: index, flush_seconds=0.2) as logger:
        logger.log(_response(), feature_service="svc", request_id="r")
        deadline = time.monotonic() + 10
        while logger.written_rows == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert logger.written_rows == 3


def test_log_never_raises(tmp_path, index, caplog):
    offline = DeltaOfflineStore(str(tmp_path / "offline"))
    with FeatureLogger(offline, project="t", index=lambda v: index) as logger:
        logger.log(object(), feature_service="svc")  # type: ignore[arg-type]
        broken = _response()
        del broken.values["i8"]  # the writer cannot build its rows
        logger.log(broken, feature_service="svc", request_id="broken")
        logger.log(_response(), feature_service="nope", request_id="unknown-service")
        assert logger.flush(timeout=30)
    assert logger.failed_rows == 6
    assert logger.written_rows == 0
    assert any("rows lost" in r.message for r in caplog.records)


def test_table_names_and_settings_are_checked():
    assert log_table_name(feature_service="driver_ranking") == "_feature_logs/driver_ranking"
    odd = log_table_name(feature_service="a b/c=d")
    assert odd.startswith("_feature_logs/service_") and "=" not in odd
    assert log_table_name(features=["v:a", "v:b"]) == log_table_name(features=["v:b", "v:a"])
    with pytest.raises(DefinitionError, match="not both or neither"):
        log_table_name()
    with pytest.raises(DefinitionError, match="sample rate"):
        FeatureLogger(None, project="t", sample_rates={"svc": 1.5})  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="at least 1"):
        FeatureLogger(None, project="t", queue_size=0)  # type: ignore[arg-type]


def test_adhoc_lists_over_the_same_views_share_one_table_with_a_stable_schema(tmp_path, index):
    """Issue 15: one Delta table per distinct ad-hoc list (127 requests -> 127 tables).
    Lists over the same views now share a table whose columns cover every feature."""
    offline = DeltaOfflineStore(str(tmp_path / "offline"))
    lists = [["typed:i8"], ["typed:s", "typed:i8"], ["typed:b"], ["typed:u32", "typed:f32"]]
    with FeatureLogger(offline, project="t", index=lambda v: index) as logger:
        for i, refs in enumerate(lists):
            resp = _response()
            names = [r.partition(":")[2] for r in refs]
            resp.values = {n: resp.values[n] for n in names}
            resp.statuses = {n: resp.statuses[n] for n in names}
            resp.event_ts = {n: resp.event_ts[n] for n in names}
            logger.log(resp, features=refs, request_id=f"r{i}")
            if i == 0:  # the table exists after the first list
                assert logger.flush(timeout=30)
                first_schema = offline.read_table(log_table_name(features=refs)).collect().schema
    assert logger.stats()["failed_rows"] == 0
    tables = {log_table_name(features=refs) for refs in lists}
    assert len(tables) == 1
    assert sorted(p.name for p in (tmp_path / "offline" / "_feature_logs").iterdir()) == [
        tables.pop().rpartition("/")[2]
    ]
    frame = offline.read_table(log_table_name(features=["typed:i8"])).collect()
    assert frame.schema == first_schema  # every feature of the view from the first write
    assert frame.height == 12
    by_request = {r["request_id"]: r for r in frame.filter(pl.col("entity_index") == 0).to_dicts()}
    assert by_request["r0"]["features"] == '["typed:i8"]'
    assert by_request["r0"]["typed__i8"] == 5 and by_request["r0"]["typed__s"] is None
    assert by_request["r0"]["typed__s__status"] is None  # not asked for
    assert by_request["r1"]["typed__s"] == "a" and by_request["r1"]["typed__s__status"] == "PRESENT"
    assert log_table_name(features=["typed:i8", "shops:score"]) != log_table_name(
        features=["typed:i8"]
    )


def test_drops_and_write_failures_reach_the_metrics(tmp_path, index):
    """Issue 15 (deploy/README.md promised it): the logger's counters in /metrics."""
    from featurestore.server.metrics import ServerMetrics

    slow = SlowOffline(DeltaOfflineStore(str(tmp_path / "offline")))
    slow.gate.set()
    slow.failures = 1
    metrics = ServerMetrics()
    with FeatureLogger(
        slow, project="t", index=lambda v: index, queue_size=5, write_attempts=1
    ) as logger:
        metrics.watch_feature_log(logger.stats)
        logger.log(_response(), feature_service="svc", request_id="fails")
        assert logger.flush(timeout=30)
        logger.log(_response(), feature_service="svc", request_id="ok")
        logger.log(_response(), feature_service="svc", request_id="dropped")  # 6 > 5 rows
        assert logger.flush(timeout=30)
        text = metrics.render()
    assert 'featurestore_feature_log_rows_total{outcome="dropped"} 3' in text
    assert 'featurestore_feature_log_rows_total{outcome="failed"} 3' in text
    assert 'featurestore_feature_log_rows_total{outcome="written"} 3' in text
    assert 'featurestore_feature_log_rows_total{outcome="logged"} 6' in text
    assert "featurestore_feature_log_write_errors_total 1" in text
    assert "featurestore_feature_log_queued_rows 0" in text
