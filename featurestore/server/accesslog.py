"""Structured access log, kept off the hot path.

Errors (status >= 400) are logged up to ``error_lines_per_second`` per status
code, and one in ``1 / sample`` successful requests. During an outage every
request fails alike (issue 15: 23k lines, 4.6 MB in 5 s): past the limit a line is
left out, counted in ``featurestore_access_log_suppressed_total``, and the next
line written for that status says how many were left out (``"suppressed": n``).
Every request, logged or not, is counted in ``featurestore_http_requests_total``.
A request only puts a small record on a queue; a background thread
formats it as one JSON line and writes it (logger ``featurestore.server.access``,
stderr unless the application configures that logger itself).
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
import time
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from featurestore.server.metrics import ServerMetrics

LOGGER = "featurestore.server.access"
DEFAULT_ERROR_LINES_PER_SECOND = 10.0


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
    def __init__(
        self,
        *,
        sample: float,
        error_lines_per_second: float = DEFAULT_ERROR_LINES_PER_SECOND,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.every = 0 if sample <= 0 else max(1, round(1 / sample))
        self._seen = 0
        self.error_limit = error_lines_per_second
        self.metrics = metrics
        # status -> [start of the current second, lines written in it, lines left out
        # since the last line written]
        self._errors: dict[int, list[float]] = {}
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
        """Whether this request is logged: errors up to the rate limit, one success
        in ``every``."""
        if status >= 400:
            return self._error_wanted(status)
        if not self.every:
            return False
        self._seen += 1
        return self._seen % self.every == 0

    def _error_wanted(self, status: int) -> bool:
        now = time.monotonic()
        window = self._errors.get(status)
        if window is None:
            window = self._errors[status] = [now, 0.0, 0.0]
        elif now - window[0] >= 1.0:
            window[0], window[1] = now, 0.0
        if window[1] < self.error_limit:
            window[1] += 1
            return True
        window[2] += 1
        if self.metrics is not None:
            self.metrics.log_suppressed.inc((str(status),))
        return False

    def write(self, status: int, fields: dict[str, Any]) -> None:
        window = self._errors.get(status)
        if window is not None and window[2]:
            fields = {**fields, "suppressed": int(window[2])}
            window[2] = 0.0
        level = logging.WARNING if status >= 500 else logging.INFO
        if self.logger.isEnabledFor(level):
            self.logger.log(level, "request", extra={"access": {"status": status, **fields}})

    def record(self, status: int, fields: dict[str, Any]) -> None:
        if self.wants(status):
            self.write(status, fields)
