"""Real servers for the UI tests (test_ui.py, test_ui_browser.py).

The quickstart repo (applied, backfilled, materialized, with one saved dataset) is
served twice: by ``featurestore serve`` with API keys (the UI mounted at /ui) and by
``featurestore ui`` (laptop mode, no keys). Keys: ``k-all`` may use every service,
``k-other`` every one but ``driver_windows_service``. ``rideshare_repo`` is
examples/rideshare (a Kafka source with a Delta history, aggregations, on-demand)
with generated data ending now, applied, backfilled and materialized.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
from deltalake import write_deltalake

from featurestore.api.store import FeatureStore
from tests.fixtures.services import free_port
from tests.integration.served import running_process, running_server, served_repo

KEYS = {
    "FEATURESTORE_API_KEYS": "k-all,k-other",
    "FEATURESTORE_SERVICE_KEYS": json.dumps({"driver_windows_service": ["k-all"]}),
}
DATASET = "ranking_train"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> object:
        return json.loads(self.body)


def get(port: int, path: str, *, headers: dict[str, str] | None = None) -> Response:
    return request(port, "GET", path, headers=headers)


def request(
    port: int,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def ui_repo(root: Path) -> Path:
    """The served quickstart repo plus a saved training dataset."""
    repo = served_repo(root)
    store = FeatureStore(repo)
    try:
        spine = pl.read_parquet(repo / "data" / "spine.parquet")
        dataset = store.get_training_dataset(spine, feature_service="driver_ranking")
        store.save_dataset(dataset, DATASET, entity_df=spine)
    finally:
        store.close()
    return repo


def rideshare_repo(root: Path) -> Path:
    """examples/rideshare with a trips history (Delta) and rider profiles ending now."""
    repo = root / "rideshare"
    shutil.copytree(EXAMPLES / "rideshare", repo, ignore=shutil.ignore_patterns("__pycache__"))
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    n = 300
    stamps = [now - timedelta(minutes=37 * i) for i in range(n)]
    trips = pl.DataFrame(
        {
            "driver_id": [1001 + i % 5 for i in range(n)],
            "rider_id": [f"r{i % 7}" for i in range(n)],
            "fare": [5.0 + i % 11 for i in range(n)],
            "distance_km": [1.0 + i % 4 for i in range(n)],
            "event_ts": stamps,
            "created_ts": stamps,
        }
    )
    (repo / "data").mkdir()
    write_deltalake(str(repo / "data" / "trips"), trips.to_arrow())
    pl.DataFrame(
        {
            "rider_id": [f"r{i}" for i in range(7)],
            "rating": [4.0 + i / 10 for i in range(7)],
            "home_city": ["Lyon", "Porto", "Turin", "Ghent", "Graz", "Brno", "Cork"],
            "updated_at": [now - timedelta(days=1)] * 7,
        }
    ).write_parquet(repo / "data" / "riders.parquet")
    store = FeatureStore(repo)
    try:
        store.apply()
        store.backfill()
        store.materialize(end=now)
    finally:
        store.close()
    return repo


@contextmanager
def keyed_server(repo: Path, log: Path) -> Iterator[int]:
    """``featurestore serve`` (its module) with API keys; the UI is at /ui."""
    saved = {k: os.environ.get(k) for k in KEYS}
    os.environ.update(KEYS)
    try:
        with running_server(repo, log) as port:
            yield port
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def laptop_ui(repo: Path, log: Path) -> Iterator[int]:
    """``featurestore ui --repo REPO --port PORT`` as a user runs it."""
    port = free_port()
    cli = Path(sys.executable).parent / "featurestore"
    argv = [str(cli), "ui", "--repo", str(repo), "--port", str(port)]
    with running_process(argv, log, port=port, ready="/ui/static/ui.css"):
        yield port
