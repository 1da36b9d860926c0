"""``POST /v1/push`` under a ``[policy]``: a real server on the quickstart allows a
push only to a principal with the ``push`` action and the view's strictest class,
and answers 403 naming the missing grant otherwise (nothing is written)."""

from __future__ import annotations

import http.client
import json
from typing import Any

from featurestore.api.store import FeatureStore
from featurestore.scaffold.sample_data import SAMPLE_END
from tests.helpers import quickstart
from tests.integration.served import running_server

PLAIN = 'Field(name="conv_rate", dtype=pl.Float64)'
PII = 'Field(name="conv_rate", dtype=pl.Float64, classification="pii")'
POLICY = """
[server]
api_keys = ["k-reader", "k-writer", "k-pii-writer"]
push_keys = ["k-reader", "k-writer", "k-pii-writer"]

[policy.principals.reader]
api_keys = ["k-reader"]
actions = ["online"]
classes = ["internal", "pii"]

[policy.principals.writer]
api_keys = ["k-writer"]
actions = ["push"]
classes = ["public", "internal"]

[policy.principals.pii_writer]
api_keys = ["k-pii-writer"]
actions = ["push"]
classes = ["internal", "pii"]
"""


def _post(port: int, body: Any, key: str) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    conn.request("POST", "/v1/push", body=json.dumps(body), headers=headers)
    response = conn.getresponse()
    doc = json.loads(response.read())
    conn.close()
    return response.status, doc


def test_push_needs_the_push_grant_and_the_views_strictest_class(tmp_path):
    repo = quickstart(tmp_path / "qs")
    path = repo / "features.py"
    path.write_text(path.read_text().replace(PLAIN, PII))
    with (repo / "featurestore.toml").open("a") as f:
        f.write(POLICY)
    store = FeatureStore(repo)
    store.apply()
    at = SAMPLE_END.isoformat()
    row = {
        "driver_id": 1001,
        "event_timestamp": at,
        "created": at,
        "conv_rate": 0.5,
        "acc_rate": 0.25,
        "avg_daily_trips": 7,
    }
    body = {"view": "driver_hourly_stats", "push_id": "p-1", "rows": [row]}
    try:
        with running_server(repo, tmp_path / "server.log") as port:
            status, doc = _post(port, body, "k-reader")
            assert (status, doc["field"], doc["value"]) == (
                403,
                "driver_hourly_stats",
                "\"action 'push'\"",
            ), doc
            status, doc = _post(port, body, "k-writer")  # conv_rate is pii
            assert (status, doc["value"]) == (403, "\"class 'pii'\""), doc
            assert "writer" in doc["message"]
            assert not store.offline.exists("driver_hourly_stats")  # nothing written
            status, doc = _post(port, body, "k-pii-writer")
            assert status == 200 and doc["offline_written"] == 1, doc
        assert store.offline.read_table("driver_hourly_stats").collect().height == 1
    finally:
        store.close()
