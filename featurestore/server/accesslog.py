"""Structured access log, kept off the hot path.

Every error (status >= 400) is logged and one in ``1 / sample`` successful
requests. A request only puts a small record on a queue; a background thread
formats it as one JSON line and writes it (logger ``featurestore.server.access``,
stderr unless the application configures that logger itself).
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
import time
from typing import Any

import orjson

LOGGER = "featurestore.server.access"


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
        }
        doc.update(getattr(record, "access", {}))
        return orjson.dumps(doc).decode()


class AccessLog:
    def __init__(self, *, sample: float) -> None:
        self.every = 0 if sample <= 0 else max(1, round(1 / sample))
        self._seen = 0
        self.logger = logging.getLogger(LOGGER)
        self._listener: logging.handlers.QueueListener | None = None
        self._handler: logging.Handler | None = None

    def start(self) -> None:
        if self._listener is not None or self.logger.handlers:
            return  # the application configured this logger: leave it alone
        q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        out = logging.StreamHandler(sys.stderr)
        out.setFormatter(JsonLineFormatter())
        self._listener = logging.handlers.QueueListener(q, out)
        self._handler = logging.handlers.QueueHandler(q)
        self.logger.addHandler(self._handler)
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False
        self._listener.start()

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        if self._handler is not None:
            self.logger.removeHandler(self._handler)
            self._handler = None

    def wants(self, status: int) -> bool:
        """Whether this request is logged: every error, one success in ``every``."""
        if status >= 400:
            return True
        if not self.every:
            return False
        self._seen += 1
        return self._seen % self.every == 0

    def write(self, status: int, fields: dict[str, Any]) -> None:
        level = logging.WARNING if status >= 500 else logging.INFO
        if self.logger.isEnabledFor(level):
            self.logger.log(level, "request", extra={"access": {"status": status, **fields}})

    def record(self, status: int, fields: dict[str, Any]) -> None:
        if self.wants(status):
            self.write(status, fields)
