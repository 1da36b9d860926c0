"""Blue/green definition changes, live: a server under load through an apply of a
transform change answers PRESENT for every entity at every moment, with the old values
until the new records are materialized, and the new values after the switch
(issue 16: the apply used to blank the view until someone re-materialized)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from featurestore.api.store import FeatureStore
from featurestore.stores.view_specs import online_schema
from tests.integration.served import running_server, served_repo

VIEW = "driver_hourly_stats"
FEATURE = f"{VIEW}:acceptance_gap"
OLD = 'transform={"acceptance_gap": pl.col("conv_rate") - pl.col("acc_rate")}'
NEW = 'transform={"acceptance_gap": pl.col("conv_rate") + 10 * pl.col("acc_rate")}'


def lookup(port: int, ids: list[int]) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = json.dumps({"entities": {"driver_id": ids}, "features": [FEATURE]})
    conn.request(
        "POST", "/v1/features/online", body=body, headers={"Content-Type": "application/json"}
    )
    resp = conn.getresponse()
    doc = json.loads(resp.read())
    conn.close()
    assert resp.status == 200, doc
    return doc["features"]["acceptance_gap"]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return served_repo(tmp_path / "repo")


def test_a_transform_change_is_served_from_the_old_records_until_the_new_ones_exist(
    repo: Path, tmp_path: Path
):
    store = FeatureStore(repo)
    ids = sorted(
        pl.read_parquet(repo / "data" / "driver_stats.parquet")["driver_id"].unique().to_list()
    )
    now = datetime.now(UTC)
    with running_server(repo, tmp_path / "server.log") as port:
        old_values = lookup(port, ids)["values"]
        seen: list[tuple[float, list[str], list[float]]] = []
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                got = lookup(port, ids)
                seen.append((time.monotonic(), got["statuses"], got["values"]))

        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        try:
            features = repo / "features.py"
            features.write_text(features.read_text().replace(OLD, NEW))
            first = store.registry.head()
            applied = store.apply()
            assert applied.created
            assert store.registry.serving_pins() == {VIEW: first}
            pinned_at = time.monotonic()
            time.sleep(5)  # the server adopts the new head (refresh every 2 s), still old values
            assert lookup(port, ids)["values"] == old_values

            store.backfill([VIEW])
            [report] = store.materialize([VIEW], end=now)
            assert report.written == len(ids)
            assert store.registry.serving_pins() == {}  # a full materialize promotes
            switched_at = time.monotonic()
            deadline = switched_at + 20
            while time.monotonic() < deadline and seen[-1][2] == old_values:
                time.sleep(0.1)
        finally:
            stop.set()
            worker.join(timeout=30)
        new_values = lookup(port, ids)["values"]

    assert new_values != old_values
    expected = store.get_online_features({"driver_id": ids}, features=[FEATURE])
    assert expected.values["acceptance_gap"] == new_values
    # Every answer under load: every entity PRESENT, the old values, then the new ones.
    assert len(seen) > 20
    assert all(all(s == "PRESENT" for s in statuses) for _, statuses, _ in seen)
    kinds = ["old" if v == old_values else "new" if v == new_values else "?" for _, _, v in seen]
    assert "?" not in kinds
    assert kinds == sorted(kinds, key=lambda k: k == "new"), "flipped back to old values"
    assert all(k == "old" for (t, _, _), k in zip(seen, kinds, strict=True) if t < switched_at)
    assert kinds[-1] == "new" and any(t > pinned_at for t, _, _ in seen)

    # The old derivation's records are garbage now; gc removes them, serving goes on.
    index = store.index(first)
    old_schema = online_schema(store.project, index.view(VIEW)).schema_id
    assert store.gc(older_than="1h", dry_run=True) == {}  # replaced just now: kept
    assert store.gc(older_than=0, dry_run=True) == {old_schema: None}
    assert store.gc(older_than=0) == {old_schema: len(ids)}
    assert store.gc(older_than=0) == {old_schema: 0}  # nothing left; served records stay
    again = store.get_online_features({"driver_id": ids}, features=[FEATURE])
    assert again.values["acceptance_gap"] == new_values
    assert set(again.statuses["acceptance_gap"]) == {"PRESENT"}
    store.close()


def test_promote_switches_at_once_and_a_schema_change_is_not_pinned(repo: Path):
    store = FeatureStore(repo)
    features = repo / "features.py"
    features.write_text(features.read_text().replace(OLD, NEW))
    head = store.registry.head()
    store.apply()
    assert store.serving_pins() == {VIEW: head}
    assert store.promote(VIEW) == head
    assert store.registry.serving_pins() == {}
    assert store.promote(VIEW) is None
    # A new feature changes what the view serves: no pin, the head serves at once.
    text = (
        features.read_text()
        .replace(
            'Field(name="acceptance_gap", dtype=pl.Float64),',
            'Field(name="acceptance_gap", dtype=pl.Float64),\n'
            '        Field(name="gap_x2", dtype=pl.Float64),',
        )
        .replace(NEW, NEW[:-1] + ', "gap_x2": pl.col("conv_rate") * 2}')
    )
    features.write_text(text)
    store.apply()
    assert store.registry.serving_pins() == {}
    store.close()
