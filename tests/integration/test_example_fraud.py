"""examples/fraud end to end at CI size (50k transactions): real Delta tables, the
embedded online store, a scikit-learn model, and the model served as it would be:
``featurestore serve`` (feature logging on) and the scoring app (``serve.py``) as
processes on loopback ports, every transaction scored through ``POST /score``. The
windowed features must beat the baseline without them by a clear margin on
held-out weeks, the served scores must put the fraud burst above the rest and equal
the in-process ones, and the skew audit of the feature server's log must find
nothing unexplained."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import joblib
import numpy as np
import polars as pl
import pytest

from examples.fraud.datagen import generate
from examples.fraud.live import free_port
from examples.fraud.pipeline import run_all, score_online
from examples.fraud.serve import (
    FeatureClient,
    ModelBundle,
    ScoringError,
    Transaction,
    feature_row,
    load_model,
)
from featurestore import FeatureStore

MARGIN = 0.1  # AUC points; measured: 0.99 with windows vs 0.65 without


def test_generated_log_is_skewed_late_and_bursty():
    data = generate(20_000, seed=3)
    tx = data.transactions
    assert tx.height == 20_000
    per_card = tx.group_by("card_id").len().sort("len", descending=True)
    top = per_card.head(max(1, per_card.height // 100))["len"].sum()
    assert top / tx.height > 0.05  # the busiest 1% of cards make >5x their share
    late = (tx["created_ts"] - tx["event_ts"]).dt.total_seconds() > 60
    assert 0.01 < late.mean() < 0.05
    assert 0.003 < tx["is_fraud"].mean() < 0.03
    assert tx["event_ts"].is_sorted()
    assert data.cards.group_by("card_id").len()["len"].max() == 2  # some limits change


@pytest.mark.timeout(300)
def test_windowed_features_beat_the_baseline_and_serving_matches(tmp_path):
    result = run_all(tmp_path / "fraud", rows=50_000, log=lambda _: None)

    assert {"card_txn_10m", "card_merchants_1h", "merchant_cards_1d"} <= set(result.features)
    assert not {f for f in result.baseline_features if "_1h" in f or "_7d" in f or "_1d" in f}
    assert {"amount", "amount_to_limit", "credit_limit"} <= set(result.baseline_features)
    assert result.auc > result.baseline_auc + MARGIN, (result.auc, result.baseline_auc)
    assert result.baseline_auc > 0.55  # the baseline is a real model, not a coin

    # POST /score answered every transaction (live.score_over_http raises on any other)
    scored = result.scored
    assert scored.height == 20
    assert scored["fraud_probability"].null_count() == 0
    assert scored["fraud_probability"].is_between(0, 1).all()
    fraud = scored.filter(pl.col("is_fraud"))["fraud_probability"]
    legit = scored.filter(~pl.col("is_fraud"))["fraud_probability"]
    assert fraud.len() >= 1
    assert legit.len() >= 1
    assert fraud.mean() > legit.mean()
    assert fraud.median() > legit.median()
    assert scored.filter(pl.col("is_fraud"))["card_txn_1h"].min() >= 3  # mid-burst

    # the HTTP path (feature server -> scoring app) scores exactly as in process
    bundle = load_model(result.model_path)
    assert bundle.features == result.features
    store = FeatureStore(tmp_path / "fraud")
    try:
        local = score_online(
            store,
            bundle.model,
            bundle.features,
            scored.drop("fraud_probability", "card_txn_1h"),
            request_time=result.serve_at,
        )
    finally:
        store.close()
    np.testing.assert_allclose(
        scored["fraud_probability"].to_numpy(), local["fraud_probability"].to_numpy(), rtol=1e-12
    )

    # the feature server logged every lookup the scoring app made; the audit agrees
    audit = result.audit
    assert audit["rows"] == 20
    assert audit["compared"] > 0
    assert audit["causes"]["unexplained"] == 0
    assert (audit["passed"], audit["mismatches"]) == (True, 0)
    assert (tmp_path / "fraud/logs/feature-server.log").is_file()


def test_scoring_app_names_a_feature_server_that_is_down():
    client = FeatureClient(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(ScoringError) as err:
        client.lookup({"entities": {"card_id": [1]}, "feature_service": "fraud_model"})
    assert err.value.status == 503
    assert "did not answer" in err.value.message
    assert "featurestore serve" in err.value.hint


class _Refusing(BaseHTTPRequestHandler):
    """A stand-in feature server that answers every lookup with the server's status."""

    status = 422

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"error": "DataError", "field": "request_time"}).encode()
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args):
        pass


@pytest.mark.parametrize(("answered", "passed_on"), [(422, 422), (503, 502)])
def test_scoring_app_passes_on_the_feature_servers_refusal(answered, passed_on):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    server.status = answered  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = FeatureClient(f"http://127.0.0.1:{server.server_address[1]}")
        with pytest.raises(ScoringError) as err:
            client.lookup({"entities": {"card_id": [1]}, "feature_service": "fraud_model"})
        client.close()
    finally:
        server.shutdown()
        server.server_close()
    assert err.value.status == passed_on
    assert err.value.message == f"the feature server answered {answered}"
    assert err.value.detail == {"error": "DataError", "field": "request_time"}


def test_scoring_app_refuses_an_answer_without_a_model_feature(tmp_path):
    bundle = ModelBundle(None, ["amount", "card_txn_1h"], "fraud_model", 0.9)
    tx = Transaction(card_id=1, merchant_id=2, amount=10.0)
    answer = {"features": {"credit_limit": {"values": [500.0]}}}
    with pytest.raises(ScoringError) as err:
        feature_row(bundle, tx, answer)
    assert err.value.status == 502
    assert "'card_txn_1h'" in err.value.message
    assert "retrain" in err.value.hint

    served = {"features": {"card_txn_1h": {"values": [4]}}}
    assert feature_row(bundle, tx, served) == {"amount": 10.0, "card_txn_1h": 4}

    bad = tmp_path / "not-a-model.joblib"
    joblib.dump(["a list"], bad)
    with pytest.raises(TypeError, match=re.escape("not a fraud model saved by examples.fraud.run")):
        load_model(bad)
    with pytest.raises(
        FileNotFoundError, match=re.escape("run `python -m examples.fraud.run` first")
    ):
        load_model(tmp_path / "missing.joblib")
