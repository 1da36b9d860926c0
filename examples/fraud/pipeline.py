"""The fraud example's steps, each a function over a ``FeatureStore``.

``run_all`` chains them: generate data -> apply -> backfill -> training datasets
(with and without the windowed features) -> two models and their held-out AUC, the
first saved for serving -> materialize -> the feature server (logging on) and the
scoring app (``serve.py``) as processes, incoming transactions scored through
``POST /score`` -> skew audit of what the feature server logged.

``score_online`` is the same scoring in process, without HTTP: the CI test checks
that both give the same probabilities.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from examples.fraud.datagen import START, Generated, generate
from examples.fraud.live import score_over_http, serving
from examples.fraud.serve import ModelBundle
from featurestore import FeatureStore

TEMPLATE = Path(__file__).resolve().parent / "repo"
SPINE_COLUMNS = ["transaction_id", "card_id", "merchant_id", "amount", "is_fraud"]
TRAIN_DAYS = 21  # train on the first three weeks, test on the rest
MODEL_FILE = "fraud_model.joblib"  # in the repo folder (--out): what serve.py loads


@dataclass
class Result:
    rows: int
    fraud_rate: float
    auc: float
    baseline_auc: float
    features: list[str]
    baseline_features: list[str]
    scored: pl.DataFrame
    audit: dict[str, Any]
    model_path: Path
    serve_at: datetime
    seconds: dict[str, float] = field(default_factory=dict)


def prepare_repo(workdir: Path, data: Generated) -> Path:
    """A fresh copy of the feature repo in ``workdir``, with the generated data."""
    if workdir.exists():
        if not (workdir / "featurestore.toml").is_file():
            raise FileExistsError(
                f"{workdir} exists and is not a fraud example repo: pass another --out"
            )
        shutil.rmtree(workdir)
    shutil.copytree(TEMPLATE, workdir, ignore=shutil.ignore_patterns("__pycache__"))
    (workdir / "data").mkdir()
    data.transactions.write_parquet(workdir / "data/transactions.parquet")
    data.cards.write_parquet(workdir / "data/cards.parquet")
    return workdir


def spine_of(transactions: pl.DataFrame) -> pl.DataFrame:
    """One training row per transaction, as of just before it happened: the windows
    hold the card's and merchant's earlier events, not the transaction itself, as
    when the model scores it before it is recorded."""
    return transactions.select(
        *SPINE_COLUMNS,
        (pl.col("event_ts") - pl.duration(microseconds=1)).alias("event_timestamp"),
    )


def training_frames(store: FeatureStore, spine: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Point-in-time correct features for each service. ``as_of_known_time``: an
    event that arrived late counts only from when it arrived, as online."""
    frames = {}
    for service in ("fraud_model", "fraud_baseline"):
        dataset = store.get_training_dataset(spine, feature_service=service, as_of_known_time=True)
        frames[service] = dataset.frame
        if service == "fraud_model":
            store.save_dataset(dataset, "fraud_model_v1", entity_df=spine)
    return frames


def feature_columns(frame: pl.DataFrame) -> list[str]:
    """The model's inputs: the request's amount and every feature of the service."""
    return ["amount"] + [c for c in frame.columns if c not in (*SPINE_COLUMNS, "event_timestamp")]


def matrix(frame: pl.DataFrame, columns: list[str]) -> np.ndarray:
    """Features as float64 (nulls -> NaN, which the model handles natively)."""
    return frame.select(pl.col(c).cast(pl.Float64) for c in columns).to_numpy()


def fit_and_score(frame: pl.DataFrame, columns: list[str], *, seed: int = 0) -> tuple[Any, float]:
    """A gradient-boosted model on the first weeks; its AUC on the last ones."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    cut = START + timedelta(days=TRAIN_DAYS)
    train = frame.filter(pl.col("event_timestamp") < cut)
    test = frame.filter(pl.col("event_timestamp") >= cut)
    model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, random_state=seed)
    model.fit(matrix(train, columns), train["is_fraud"].to_numpy())
    scores = model.predict_proba(matrix(test, columns))[:, 1]
    return model, float(roc_auc_score(test["is_fraud"].to_numpy(), scores))


def replay_point(
    frame: pl.DataFrame, transactions: pl.DataFrame, *, score: int
) -> tuple[datetime, pl.DataFrame]:
    """A moment in the held-out weeks to serve at, in the middle of a fraud burst:
    just before a fraudulent transaction whose card already made 3 or more
    transactions in the hour. The incoming transactions are that one and the next
    ``score - 1`` of the log, scored as of that moment."""
    cut = START + timedelta(days=TRAIN_DAYS)
    burst = frame.filter(
        pl.col("is_fraud"), pl.col("event_timestamp") >= cut, pl.col("card_txn_1h") >= 3
    ).sort("event_timestamp")
    if burst.is_empty():
        burst = frame.filter(pl.col("event_timestamp") >= cut).sort("event_timestamp")
    first = burst.row(0, named=True)
    incoming = (
        transactions.filter(pl.col("transaction_id") >= first["transaction_id"])
        .head(score)
        .select("transaction_id", "card_id", "merchant_id", "amount", "is_fraud")
    )
    return first["event_timestamp"], incoming


def score_online(
    store: FeatureStore,
    model: Any,
    columns: list[str],
    incoming: pl.DataFrame,
    *,
    request_time: datetime,
) -> pl.DataFrame:
    """Score ``incoming`` transactions (card_id, merchant_id, amount) from the
    online store in this process: the model reads the same features, by name, as in
    training. ``serve.py`` does the same over HTTP."""
    response = store.get_online_features(
        {
            "card_id": incoming["card_id"].to_list(),
            "merchant_id": incoming["merchant_id"].to_list(),
        },
        feature_service="fraud_model",
        request_data={"amount": incoming["amount"].to_list()},
        request_time=request_time,
    )
    values = {**response.values, "amount": incoming["amount"].to_list()}
    features = pl.DataFrame({c: values[c] for c in columns}, strict=False)
    return incoming.with_columns(
        pl.Series("fraud_probability", model.predict_proba(matrix(features, columns))[:, 1]),
        pl.Series("card_txn_1h", response.values["card_txn_1h"]),
    )


def audit(store: FeatureStore) -> dict[str, Any]:
    """The skew audit of the logged lookups: what was served vs recomputed offline."""
    from featurestore.audit import run_audit

    report = run_audit(store, feature_service="fraud_model")
    return {
        "passed": report.passed,
        "rows": report.rows,
        "compared": report.compared,
        "mismatches": report.mismatches.height,
        "causes": report.cause_totals(),
    }


def run_all(
    workdir: Path,
    *,
    rows: int = 3_000_000,
    seed: int = 7,
    score: int = 20,
    log: Callable[[str], None] = print,
) -> Result:
    """Everything, in one call; ``log`` hears about each step."""
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def step(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 2)
        clock = now
        log(f"{name}: {seconds[name]:.1f} s")

    data = generate(rows, seed=seed)
    tx = data.transactions
    prepare_repo(workdir, data)
    fraud_rate = float(tx.select(pl.col("is_fraud").mean()).item() or 0.0)
    step(f"generated {tx.height:,} transactions ({fraud_rate:.2%} fraud)")

    store = FeatureStore(workdir)
    try:
        store.apply(message="fraud example")
        store.backfill()
        step("apply + backfill")

        frames = training_frames(store, spine_of(tx))
        step("training datasets (point in time, as of known time)")

        columns = feature_columns(frames["fraud_model"])
        baseline_columns = feature_columns(frames["fraud_baseline"])
        model, auc = fit_and_score(frames["fraud_model"], columns, seed=seed)
        _, baseline_auc = fit_and_score(frames["fraud_baseline"], baseline_columns, seed=seed)
        model_path = ModelBundle(model, columns, "fraud_model", auc).save(workdir / MODEL_FILE)
        step(f"models: AUC {auc:.4f} with windows, {baseline_auc:.4f} without; saved {model_path}")

        serve_at, incoming = replay_point(frames["fraud_model"], tx, score=score)
        store.materialize(end=serve_at)
        step(f"materialize up to {serve_at:%Y-%m-%d %H:%M}")
    finally:
        store.close()  # the feature server opens the repo next

    with serving(workdir, model_path) as served:
        step(
            f"feature server (logging on) on :{served.feature_port}, scoring app on "
            f":{served.score_port}"
        )
        scored = score_over_http(served.score_port, incoming, request_time=serve_at)
    step(f"scored {scored.height} transactions through POST /score; both servers stopped")

    store = FeatureStore(workdir)
    try:
        audited = audit(store)
        step(f"skew audit of the feature server's log: {'PASS' if audited['passed'] else 'FAIL'}")
    finally:
        store.close()
    return Result(
        rows=tx.height,
        fraud_rate=fraud_rate,
        auc=auc,
        baseline_auc=baseline_auc,
        features=columns,
        baseline_features=baseline_columns,
        scored=scored,
        audit=audited,
        model_path=model_path,
        serve_at=serve_at,
        seconds=seconds,
    )
