"""examples/fraud end to end at CI size (50k transactions): real Delta tables, the
embedded online store, a scikit-learn model. The windowed features must beat the
baseline without them by a clear margin on held-out weeks, the online scores must
put the fraud burst above the rest, and the skew audit of the logged lookups must
find nothing."""

from __future__ import annotations

import polars as pl
import pytest

from examples.fraud.datagen import generate
from examples.fraud.pipeline import run_all

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

    scored = result.scored
    assert scored.height == 20
    fraud = scored.filter(pl.col("is_fraud"))["fraud_probability"]
    legit = scored.filter(~pl.col("is_fraud"))["fraud_probability"]
    assert fraud.len() >= 1
    assert legit.len() >= 1
    assert fraud.median() > legit.median()
    assert scored.filter(pl.col("is_fraud"))["card_txn_1h"].min() >= 3  # mid-burst

    audit = result.audit
    assert audit["rows"] == 20
    assert audit["compared"] > 0
    assert (audit["passed"], audit["mismatches"]) == (True, 0)
