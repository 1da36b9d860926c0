"""Crashes and rebalances: the final online + offline state equals an uninterrupted run.

- a worker process SIGKILLed mid-stream and restarted;
- a crash injected between the Delta commit and the offset commit (the replay must
  not append rows twice);
- a second worker joining the group mid-stream (nothing lost or applied twice).

Run as a script, this file is the worker process of the kill test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from polars.testing import assert_frame_equal

from featurestore.compile.plan import ObjectPlan
from featurestore.compile.views import FeatureViewPlan
from featurestore.engines.stream import StreamMetrics, run_worker
from featurestore.engines.stream.offsets import OffsetBook
from featurestore.errors import StreamError
from featurestore.stores.offline import DeltaOfflineStore
from featurestore.stores.online import open_online_store
from tests.integration.test_stream_worker import (
    expected_online,
    expected_rows,
    make_log,
    offline_rows,
    online_rows,
    produce,
    settings,
    stream_views,
)

pytestmark = pytest.mark.kafka
REPO = Path(__file__).resolve().parents[2]


def run(view: FeatureViewPlan, root: Path, bootstrap: str, group: str, **kw: Any) -> Any:
    """A worker run to the end of the topic, with stores under ``root``."""
    online = open_online_store(f"sqlite:///{root / 'online.db'}")
    try:
        return run_worker(
            project="it",
            views=[view],
            offline=DeltaOfflineStore(str(root / "offline")),
            online=online,
            group_id=group,
            settings=kw.pop("stream_settings", settings()),
            until_end=kw.pop("until_end", True),
            idle_timeout_s=kw.pop("idle_timeout_s", 60),
            handle_signals=kw.pop("handle_signals", False),
            **kw,
        )
    finally:
        online.close()


def state(view: FeatureViewPlan, root: Path) -> tuple[Any, Any]:
    online = open_online_store(f"sqlite:///{root / 'online.db'}")
    try:
        return offline_rows(DeltaOfflineStore(str(root / "offline")), view), online_rows(
            online, view
        )
    finally:
        online.close()


def test_a_worker_killed_mid_stream_resumes_to_the_same_state(tmp_path, kafka_broker, kafka_topics):
    topic = kafka_topics(4)
    [view, _] = stream_views(tmp_path, topic=topic, bootstrap=kafka_broker.bootstrap)
    log = make_log(12_000, seed=3, bad_every=97)
    produce(kafka_broker.bootstrap, topic, log)
    ref, victim = tmp_path / "ref", tmp_path / "victim"
    run(view, ref, kafka_broker.bootstrap, "g-ref")

    child = start_child(view, victim, kafka_broker.bootstrap, "g-victim", mode="kill")
    offline = DeltaOfflineStore(str(victim / "offline"))
    wait_for_flushes(child, offline, 3)
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=10) == -signal.SIGKILL
    partial = offline_rows(offline, view).height
    assert 0 < partial < expected_rows(view, log).height

    resumed = run(view, victim, kafka_broker.bootstrap, "g-victim")
    assert resumed.records < len(log)  # it resumed from the last commit, not from zero
    ref_offline, ref_online = state(view, ref)
    got_offline, got_online = state(view, victim)
    assert_frame_equal(ref_offline, expected_rows(view, log))
    assert_frame_equal(got_offline, ref_offline)
    assert_frame_equal(got_online, ref_online)
    assert_frame_equal(got_online, expected_online(view, log), check_column_order=False)


def test_sigterm_checkpoints_and_exits_and_the_next_run_replays_nothing(
    tmp_path, kafka_broker, kafka_topics
):
    topic = kafka_topics(2)
    [view, _] = stream_views(tmp_path, topic=topic, bootstrap=kafka_broker.bootstrap)
    log = make_log(12_000, seed=4, bad_every=0)
    produce(kafka_broker.bootstrap, topic, log)
    child = start_child(view, tmp_path, kafka_broker.bootstrap, "g-term", mode="term")
    wait_for_flushes(child, DeltaOfflineStore(str(tmp_path / "offline")), 2)
    child.send_signal(signal.SIGTERM)
    out, _ = child.communicate(timeout=30)
    assert child.returncode == 0
    stopped = json.loads(out.decode().strip().splitlines()[-1])
    assert stopped["stopped_by"] == "signal"
    assert 0 < stopped["records"] < len(log)

    metrics = StreamMetrics()
    rest = run(view, tmp_path, kafka_broker.bootstrap, "g-term", metrics=metrics)
    assert rest.records == len(log) - stopped["records"]  # it committed all it had read
    assert metrics.replayed.total() == 0
    got_offline, got_online = state(view, tmp_path)
    assert_frame_equal(got_offline, expected_rows(view, log))
    assert_frame_equal(got_online, expected_online(view, log), check_column_order=False)


def test_a_missing_dead_letter_topic_stops_the_worker_before_it_consumes(tmp_path, kafka_broker):
    kafka_broker.create_topics(["lonely"], partitions=1)
    [view, _] = stream_views(tmp_path, topic="lonely", bootstrap=kafka_broker.bootstrap)
    with pytest.raises(StreamError, match=r"lonely\.dlq"):
        run(view, tmp_path, kafka_broker.bootstrap, "g-lonely")


def test_a_crash_between_the_delta_commit_and_the_offset_commit_is_replayed_once(
    tmp_path, kafka_broker, kafka_topics, monkeypatch
):
    topic = kafka_topics(2)
    [view, _] = stream_views(tmp_path, topic=topic, bootstrap=kafka_broker.bootstrap)
    log = make_log(3000, seed=5, bad_every=0)
    produce(kafka_broker.bootstrap, topic, log)
    real_commit = OffsetBook.commit
    calls = []

    def crash_on_third(self: OffsetBook, positions: dict[tuple[str, int], int]) -> None:
        calls.append(positions)
        if len(calls) == 3:  # the sinks of this checkpoint have flushed: Delta has the rows
            raise StreamError("injected crash before the offset commit", obj="test")
        real_commit(self, positions)

    monkeypatch.setattr(OffsetBook, "commit", crash_on_third)
    small = settings(batch_size=200, flush_rows=400, flush_interval_s=30)
    with pytest.raises(StreamError, match="injected crash"):
        run(view, tmp_path, kafka_broker.bootstrap, "g-crash", stream_settings=small)
    monkeypatch.setattr(OffsetBook, "commit", real_commit)
    offline = DeltaOfflineStore(str(tmp_path / "offline"))
    written = offline_rows(offline, view).height
    assert written > 0

    metrics = StreamMetrics()
    run(view, tmp_path, kafka_broker.bootstrap, "g-crash", stream_settings=small, metrics=metrics)
    got_offline, got_online = state(view, tmp_path)
    assert_frame_equal(got_offline, expected_rows(view, log))  # every record stored once...
    assert_frame_equal(got_online, expected_online(view, log), check_column_order=False)
    assert metrics.replayed.total() > 0  # ...though some were read twice


def test_a_worker_joining_mid_stream_takes_over_partitions_without_loss_or_repeats(
    tmp_path, kafka_broker, kafka_topics
):
    topic = kafka_topics(4)
    [view, _] = stream_views(tmp_path, topic=topic, bootstrap=kafka_broker.bootstrap)
    log = make_log(4800, seed=11, bad_every=0)
    reports: dict[str, Any] = {}
    metrics = {"a": StreamMetrics(), "b": StreamMetrics()}
    lags: list[float] = []

    def worker(name: str) -> None:
        reports[name] = run(
            view,
            tmp_path,
            kafka_broker.bootstrap,
            "g-shared",
            metrics=metrics[name],
            stream_settings=settings(batch_size=200, flush_interval_s=0.3, lag_interval_s=0.1),
            until_end=False,
            idle_timeout_s=3,
        )

    def sample_lag() -> None:
        lags.extend(v for _, v in metrics["a"].lag.items())

    second_worker_joins(
        kafka_broker.bootstrap,
        topic,
        log,
        worker,
        metrics,
        chunk=300,
        first=600,
        while_feeding=sample_lag,
    )
    assert set(reports) == {"a", "b"}
    assert metrics["a"].rebalances.value(kind="revoke") >= 1
    assert reports["b"].records > 0 and reports["a"].records > 0
    # every record consumed by exactly one of the two workers
    assert reports["a"].records + reports["b"].records == len(log)
    assert lags, "partition lag was never reported"
    got_offline, got_online = state(view, tmp_path)
    assert_frame_equal(got_offline, expected_rows(view, log))
    assert_frame_equal(got_online, expected_online(view, log), check_column_order=False)


def second_worker_joins(
    bootstrap: str,
    topic: str,
    log: list[Any],
    worker: Callable[[str], None],
    metrics: dict[str, StreamMetrics],
    *,
    chunk: int,
    first: int,
    while_feeding: Callable[[], None] = lambda: None,
) -> None:
    """``worker("a")`` starts with a feed of ``log``, ``chunk`` records every 0.15 s;
    ``worker("b")`` joins once a consumed ``first`` records (a then owns every
    partition and is mid-stream). The last two thirds of the log wait until b owns
    partitions, so both workers see records after the rebalance. ``while_feeding``
    runs every 50 ms while the feed lasts. Returns when the feed and both workers end."""

    def feed() -> None:
        for start in range(0, len(log), chunk):
            if start >= len(log) // 3:
                wait_until(lambda: metrics["b"].rebalances.value(kind="assign") >= 1)
            produce(bootstrap, topic, log[start : start + chunk])
            time.sleep(0.15)

    a = threading.Thread(target=worker, args=("a",))
    b = threading.Thread(target=worker, args=("b",))
    feeder = threading.Thread(target=feed)
    a.start()
    feeder.start()
    wait_until(lambda: metrics["a"].records.total() >= first, what="worker a consuming")
    b.start()
    while feeder.is_alive():
        while_feeding()
        time.sleep(0.05)
    for t in (feeder, a, b):
        t.join(timeout=60)


def wait_until(holds: Any, *, timeout_s: float = 30.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not holds():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout_s:.0f} s")
        time.sleep(0.02)


def start_child(view: FeatureViewPlan, root: Path, bootstrap: str, group: str, *, mode: str) -> Any:
    """This file as a worker process; ``mode`` "kill" runs to the end, "term" until
    SIGTERM. It prints its report as JSON."""
    job = {"plan": view.plan.to_dict(), "bootstrap": bootstrap, "root": str(root)}
    job |= {"group": group, "mode": mode}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, __file__, json.dumps(job)], env=env, cwd=REPO, stdout=subprocess.PIPE
    )


def wait_for_flushes(child: Any, offline: DeltaOfflineStore, versions: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        if (offline.version("driver_fares") or 0) >= versions:
            return
        time.sleep(0.01)
    assert child.poll() is None, "the worker finished before the test could stop it"


def _child(job_json: str) -> None:
    """A worker process with small batches and frequent checkpoints."""
    job = json.loads(job_json)
    view = FeatureViewPlan(ObjectPlan.from_dict(job["plan"]))
    report = run(
        view,
        Path(job["root"]),
        job["bootstrap"],
        job["group"],
        stream_settings=settings(batch_size=100, flush_rows=300, flush_interval_s=0.1),
        until_end=job["mode"] == "kill",
        idle_timeout_s=30 if job["mode"] == "kill" else 300,
        handle_signals=True,
    )
    print(json.dumps({"records": report.records, "stopped_by": report.stopped_by}))


if __name__ == "__main__":
    _child(sys.argv[1])
