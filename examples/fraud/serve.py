"""The fraud model served next to the features: a small FastAPI app.

    .venv/bin/python -m examples.fraud.serve --model fraud-demo/fraud_model.joblib \\
        --feature-server http://127.0.0.1:6566 --port 8000

``POST /score`` takes one transaction (``card_id``, ``merchant_id``, ``amount``,
optionally ``transaction_id`` and ``request_time``), asks the running feature
server (``featurestore serve``) for the ``fraud_model`` service's features of that
card and merchant, with the amount as request data for the on-demand
``amount_to_limit``, and answers the model's fraud probability. The model and the
feature names it reads, in order, come from the file ``run.py`` saves
(``save_model``): the same names as in training, so a feature is never fed to the
wrong column. ``GET /health`` says the app is up and which model it serves.

With the feature server's logging on (``FEATURESTORE_FEATURE_LOGGING=true``) every
lookup made here is logged there, and ``featurestore skew`` audits it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import joblib
import numpy as np
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

LOOKUP_PATH = "/v1/features/online"
BUNDLE_FORMAT = 1
CONNECTION_ERRORS = (ConnectionError, http.client.HTTPException, TimeoutError, OSError)


@dataclass(frozen=True)
class ModelBundle:
    """What ``run.py`` saves: the model and the features it reads, in order."""

    model: Any
    features: list[str]  # "amount" (the request's) and the service's output names
    feature_service: str
    auc: float

    def save(self, path: Path) -> Path:
        """A plain dict on disk (a class pickled from ``__main__`` would not load)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump({**self.__dict__, "format": BUNDLE_FORMAT}, path)
        return path


def load_model(path: Path) -> ModelBundle:
    if not path.is_file():
        raise FileNotFoundError(
            f"model file {path} does not exist: run `python -m examples.fraud.run` first, "
            "it saves fraud_model.joblib in its --out folder"
        )
    saved = joblib.load(path)
    if not isinstance(saved, dict) or saved.get("format") != BUNDLE_FORMAT:
        raise TypeError(
            f"{path} is not a fraud model saved by examples.fraud.run (format "
            f"{BUNDLE_FORMAT}): run it again to save one"
        )
    return ModelBundle(
        model=saved["model"],
        features=list(saved["features"]),
        feature_service=saved["feature_service"],
        auc=float(saved["auc"]),
    )


class Transaction(BaseModel):
    card_id: int
    merchant_id: int
    amount: float = Field(ge=0, allow_inf_nan=False)
    transaction_id: int | None = None
    request_time: int | str | None = Field(
        default=None,
        description="When to look the features up (microseconds since the epoch or ISO "
        "8601 with a zone). Default: now. A replay of history passes its own time.",
    )


class ScoringError(Exception):
    """A failure to answer, as a JSON error body like the feature server's."""

    def __init__(self, status: int, message: str, *, hint: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status, self.message, self.hint, self.detail = status, message, hint, detail


class FeatureClient:
    """``POST /v1/features/online`` over one keep-alive connection per thread."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"--feature-server {base_url!r}: give http://host:port")
        self.base_url = base_url
        self.host, self.port = parts.hostname, parts.port or 80
        self.timeout = timeout
        self._local = threading.local()

    def lookup(self, body: dict[str, Any]) -> dict[str, Any]:
        payload = json.dumps(body).encode()
        conn = getattr(self._local, "conn", None)
        reused = conn is not None
        for attempt in (1, 2):
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                self._local.conn = conn
            try:
                conn.request(
                    "POST", LOOKUP_PATH, body=payload, headers={"Content-Type": "application/json"}
                )
                response = conn.getresponse()
                status, raw = response.status, response.read()
                break
            except CONNECTION_ERRORS as exc:
                conn.close()
                conn = self._local.conn = None
                # a kept-alive connection the server closed while idle: once more, fresh
                if attempt == 1 and reused:
                    continue
                raise ScoringError(
                    503,
                    f"the feature server at {self.base_url} did not answer: {exc}",
                    hint="start it with `featurestore serve --repo <repo>`, or pass "
                    "--feature-server with its address",
                ) from exc
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = {"body": raw[:200].decode(errors="replace")}
        if status != 200:
            # a 4xx is the transaction's fault (e.g. a bad request_time): passed on as is
            raise ScoringError(
                status if 400 <= status < 500 else 502,
                f"the feature server answered {status}",
                hint="see feature_server for its error and fix",
                detail=doc,
            )
        return doc

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()


def feature_row(bundle: ModelBundle, tx: Transaction, answer: dict[str, Any]) -> dict[str, Any]:
    """The model's inputs by name: the request's amount and the served features."""
    served = answer.get("features", {})
    row: dict[str, Any] = {}
    for name in bundle.features:
        if name == "amount":
            row[name] = tx.amount
        elif name in served:
            row[name] = served[name]["values"][0]
        else:
            raise ScoringError(
                502,
                f"the feature server did not serve {name!r}, which the model reads",
                hint=f"the feature service {bundle.feature_service!r} changed since the "
                "model was trained: retrain (python -m examples.fraud.run)",
            )
    return row


def create_app(bundle: ModelBundle, client: FeatureClient) -> FastAPI:
    app = FastAPI(title="fraud scoring", description=__doc__)

    @app.exception_handler(ScoringError)
    def _error(_request: Any, exc: ScoringError) -> JSONResponse:
        body = {"error": "ScoringError", "message": exc.message, "hint": exc.hint}
        if exc.detail is not None:
            body["feature_server"] = exc.detail
        return JSONResponse(body, status_code=exc.status)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "feature_service": bundle.feature_service,
            "features": len(bundle.features),
            "feature_server": client.base_url,
        }

    @app.post("/score")
    def score(tx: Transaction) -> dict[str, Any]:
        body: dict[str, Any] = {
            "entities": {"card_id": [tx.card_id], "merchant_id": [tx.merchant_id]},
            "feature_service": bundle.feature_service,
            "request_data": {"amount": [tx.amount]},
        }
        if tx.request_time is not None:
            body["request_time"] = tx.request_time
        answer = client.lookup(body)
        row = feature_row(bundle, tx, answer)
        x = np.array([[math.nan if row[c] is None else float(row[c]) for c in bundle.features]])
        probability = float(bundle.model.predict_proba(x)[0, 1])
        return {
            "transaction_id": tx.transaction_id,
            "fraud_probability": probability,
            "features": row,
            "registry_version": answer.get("registry_version"),
            "request_time_us": answer.get("request_time_us"),
        }

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Serve the fraud model: POST /score")
    parser.add_argument("--model", type=Path, required=True, help="fraud_model.joblib")
    parser.add_argument("--feature-server", default="http://127.0.0.1:6566")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    client = FeatureClient(args.feature_server)
    app = create_app(load_model(args.model), client)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        client.close()


if __name__ == "__main__":
    main()
