"""The example's serving step, for real: two processes on free loopback ports.

``serving`` starts ``featurestore serve`` on the example repo with feature logging
on, and the scoring app (``serve.py``) pointed at it; ``score_over_http`` sends
transactions through ``POST /score``. Leaving ``serving`` stops both (SIGTERM: the
feature server flushes its log on the way out), so the skew audit can read it.
Each process's output goes to ``<repo>/logs/``.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # where `examples` is importable
STARTUP_SECONDS = 90.0


@dataclass(frozen=True)
class Served:
    feature_port: int
    score_port: int

    @property
    def feature_url(self) -> str:
        return f"http://127.0.0.1:{self.feature_port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


@contextmanager
def _process(
    argv: list[str], *, log: Path, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` running, its output in ``log``; stopped (SIGTERM, then SIGKILL) on exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _wait_healthy(procs: dict[str, tuple[subprocess.Popen[bytes], int, Path]]) -> None:
    """Both started in parallel: wait for each to answer ``/health``."""
    deadline = time.monotonic() + STARTUP_SECONDS
    waiting = dict(procs)
    while waiting:
        for name, (proc, port, log) in list(waiting.items()):
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}): {log.read_text()[-2000:]}")
            try:
                if _get(port, "/health") == 200:
                    del waiting[name]
            except OSError:
                pass
        if waiting and time.monotonic() > deadline:
            raise RuntimeError(
                f"{', '.join(waiting)} did not answer /health in {STARTUP_SECONDS:.0f} s: "
                f"see {', '.join(str(v[2]) for v in waiting.values())}"
            )
        if waiting:
            time.sleep(0.1)


@contextmanager
def serving(repo: Path, model: Path) -> Iterator[Served]:
    """The feature server (logging on) and the scoring app, up and healthy."""
    repo, model = repo.resolve(), model.resolve()
    served = Served(feature_port=free_port(), score_port=free_port())
    env = {**os.environ, "FEATURESTORE_FEATURE_LOGGING": "true"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    features_argv = [sys.executable, "-m", "featurestore", "serve", "--repo", str(repo)]
    features_argv += ["--host", "127.0.0.1", "--port", str(served.feature_port)]
    score_argv = [sys.executable, "-m", "examples.fraud.serve", "--model", str(model)]
    score_argv += ["--feature-server", served.feature_url, "--port", str(served.score_port)]
    logs = repo / "logs"
    with ExitStack() as stack:
        # the scoring app stops first: it is the feature server's only client
        fs_log, score_log = logs / "feature-server.log", logs / "scoring-app.log"
        fs = stack.enter_context(_process(features_argv, log=fs_log, env=env))
        app = stack.enter_context(_process(score_argv, log=score_log, env=env))
        _wait_healthy(
            {
                "feature server": (fs, served.feature_port, fs_log),
                "scoring app": (app, served.score_port, score_log),
            }
        )
        yield served


def score_over_http(port: int, incoming: pl.DataFrame, *, request_time: datetime) -> pl.DataFrame:
    """``incoming`` (transaction_id, card_id, merchant_id, amount, ...) scored one by
    one through ``POST /score``; adds ``fraud_probability`` and the served
    ``card_txn_1h``. Any answer but 200 is an error naming the transaction."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    probabilities, txn_1h = [], []
    try:
        for tx in incoming.iter_rows(named=True):
            body: dict[str, Any] = {
                "transaction_id": tx["transaction_id"],
                "card_id": tx["card_id"],
                "merchant_id": tx["merchant_id"],
                "amount": tx["amount"],
                "request_time": request_time.isoformat(),
            }
            conn.request(
                "POST", "/score", json.dumps(body), headers={"Content-Type": "application/json"}
            )
            response = conn.getresponse()
            answer = json.loads(response.read())
            if response.status != 200:
                raise RuntimeError(
                    f"POST /score for transaction {tx['transaction_id']} answered "
                    f"{response.status}: {answer}"
                )
            probabilities.append(answer["fraud_probability"])
            txn_1h.append(answer["features"].get("card_txn_1h"))
    finally:
        conn.close()
    return incoming.with_columns(
        pl.Series("fraud_probability", probabilities, dtype=pl.Float64),
        pl.Series("card_txn_1h", txn_1h, dtype=pl.Int64),
    )
