"""Raw ASGI pieces: the lookup endpoint, and metrics for the routes FastAPI serves.

``POST /v1/features/online`` is answered by ``LookupEndpoint`` before FastAPI
sees the request (``app.FeatureServer.__call__``): no routing, dependency
solving, response classes or per-request telemetry checks. Measured here: the
FastAPI route costs about 0.1 ms of CPU more per request (MEASURED.md: a third of
the throughput on 2 cores). Every other route (health, readiness, metrics, docs)
is FastAPI's, which also documents the lookup route.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from featurestore.server.accesslog import AccessLog
from featurestore.server.errors import (
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
    error_response,
)
from featurestore.server.lookup import LookupHandler
from featurestore.server.metrics import ServerMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOKUP_PATH = "/v1/features/online"
# Routes get their own metric label; anything else is "other", so that scanners
# requesting random paths cannot grow the label set without bound.
ROUTES = frozenset(
    {
        LOOKUP_PATH,
        "/get-online-features",  # the Feast-compatible lookup (server/feast_compat.py)
        "/v1/push",
        "/health",
        "/ready",
        "/metrics",
        "/docs",
        "/openapi.json",
    }
)
_JSON_HEADER = (b"content-type", b"application/json")
DRAIN_FACTOR = 16

log = logging.getLogger("featurestore.server")


def count(
    metrics: ServerMetrics, route: str, status: int, seconds: float, error: str | None
) -> None:
    metrics.requests.inc((route, str(status)))
    metrics.latency.observe(seconds, (route,))
    if status >= 400 and error is not None:
        metrics.errors.inc((route, error))


class LookupEndpoint:
    """``POST /v1/features/online`` as a bare ASGI callable: bytes in, bytes out."""

    def __init__(
        self,
        *,
        handler: LookupHandler,
        metrics: ServerMetrics,
        access_log: AccessLog,
        max_body_bytes: int,
        body_timeout_seconds: float = 10.0,
        route: str = LOOKUP_PATH,
    ) -> None:
        self.handler = handler
        self.route = route  # the path its metrics and access log name
        self.metrics = metrics
        self.access_log = access_log
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        authorization: bytes | None = None
        length: bytes | None = None
        request_id: str | None = None
        content_type = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"content-length":
                length = value
            elif name == b"content-type":
                content_type = value
            elif name == b"x-request-id":
                # the feature log keys rows by it, so a caller can find its request
                request_id = value[:128].decode("latin-1")
        error = None
        extra: list[tuple[bytes, bytes]] = []
        entities = 0
        try:
            # JSON only: a browser page may POST text/plain or a form cross-origin
            # without a preflight; application/json needs one (CORS)
            if content_type != b"application/json" and not _is_json(content_type):
                raise UnsupportedMediaType(content_type[:100].decode("latin-1") or "(none)")
            received = [0]  # bytes so far, for the 408 message
            try:
                # a client that stalls mid-body must not hold the connection
                async with asyncio.timeout(self.body_timeout):
                    body = await self._body(receive, length, received)
            except TimeoutError:
                raise RequestTimeout(self.body_timeout, received[0]) from None
            if body is None:
                return  # the client went away; nobody to answer
            out, req = self.handler(body, authorization, request_id)
            status = 200
            entities = req.size
        except Exception as exc:
            status, out, extra = error_response(exc)
            error = type(exc).__name__
            if status == 500:
                log.exception("lookup failed unexpectedly")
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [_JSON_HEADER, (b"content-length", str(len(out)).encode()), *extra],
            }
        )
        await send({"type": "http.response.body", "body": out})
        elapsed = time.perf_counter() - started
        count(self.metrics, self.route, status, elapsed, error)
        if self.access_log.wants(status):
            self.access_log.write(
                status,
                {
                    "method": "POST",
                    "path": self.route,
                    "ms": round(elapsed * 1000, 3),
                    "entities": entities,
                    "registry_version": self.handler.serving.state.version,
                    "request_id": request_id,
                    "error": error,
                },
            )

    async def _body(
        self, receive: Receive, length: bytes | None, received: list[int]
    ) -> bytes | None:
        """The whole body, or None when the client left. Too large: read and drop up
        to DRAIN_FACTOR times the limit first, so that a simple client that sends
        everything before reading gets the 413 instead of a reset connection."""
        limit = self.max_body_bytes
        if length is not None and length.isdigit() and int(length) > limit * DRAIN_FACTOR:
            raise self._too_large(int(length))
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            size += len(chunk)
            received[0] = size
            if size <= limit:
                chunks.append(chunk)
            elif size > limit * DRAIN_FACTOR:
                break
        if size > limit:
            raise self._too_large(size)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _too_large(self, size: int) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"the request body is larger than {self.max_body_bytes} bytes",
            field="body",
            value=size,
            hint="send fewer entities per request (server.max_body_bytes sets the limit)",
        )


def _is_json(content_type: bytes) -> bool:
    """``application/json``, with parameters (``; charset=utf-8``) or in other case."""
    return content_type.split(b";", 1)[0].strip().lower() == b"application/json"


class RouteMetricsMiddleware:
    """Times and counts every route that FastAPI serves (all but the lookup)."""

    def __init__(self, app: ASGIApp, *, metrics: ServerMetrics, access_log: AccessLog) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # the lookup route counts itself (LookupEndpoint), also when routed here
        if scope["type"] != "http" or scope["path"].endswith(LOOKUP_PATH):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = scope["path"]
            route = path if path in ROUTES else "other"
            count(self.metrics, route, status, time.perf_counter() - started, f"HTTP{status}")
            if status >= 400:
                self.access_log.record(
                    status, {"method": scope["method"], "path": path[:200], "route": route}
                )
