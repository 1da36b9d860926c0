"""The HTTP lookup server: ``create_app(repo)`` builds it.

Routes:

- ``POST /v1/features/online``: feature values for entities (see ``lookup.py``);
- ``POST /v1/push``: rows written online and offline (see ``push.py``);
- ``POST /get-online-features``: the lookup in Feast's shape (see ``feast_compat.py``);
- ``GET|HEAD /health``: liveness, no I/O;
- ``GET /ready``: pings the online store and the registry; 503 when either is down
  or the served version has nothing to serve (it names a refused newer version);
- ``GET /metrics``: Prometheus text (see ``metrics.py``);
- ``GET /docs``, ``GET /openapi.json``: the API, documented;
- ``GET /ui/``: the web UI and its JSON under ``/ui/api/`` (see ``featurestore/ui``).

>>> app = create_app("path/to/repo")  # doctest: +SKIP
>>> # uvicorn.run(app) or featurestore.server.run(...)
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from featurestore import __version__
from featurestore.api.access import AccessGate
from featurestore.api.access_log import AccessLogger
from featurestore.api.store import FeatureStore
from featurestore.server import feast_compat
from featurestore.server.accesslog import AccessLog
from featurestore.server.asgi import LOOKUP_PATH, LookupEndpoint, RouteMetricsMiddleware
from featurestore.server.auth import Authenticator
from featurestore.server.feast_compat import FEAST_PATH, feast_endpoint
from featurestore.server.governance import PEER, GovernedHandler, GovernedServing
from featurestore.server.lookup import LookupHandler
from featurestore.server.metrics import METRICS_DIR_ENV, ServerMetrics
from featurestore.server.models import (
    ErrorResponse,
    HealthResponse,
    OnlineFeaturesResponse,
    ReadyResponse,
    request_schema,
)
from featurestore.server.options import ServerOptions
from featurestore.server.push import PUSH_PATH, PushHandler, PushRequest, PushResponse
from featurestore.server.state import GuardedStore, Serving

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        401: "No or wrong API key (when server.api_keys is set).",
        403: "The key may not use this feature service.",
        404: "A feature, view or feature service is not registered (named in the body).",
        408: "The body did not arrive within server.body_timeout_seconds.",
        413: "Too many entities or feature references, or the body is larger than the limit.",
        415: "The Content-Type is not application/json.",
        422: "The request is malformed: the body names the field, the value and the fix.",
        503: "The online store is unreachable; retry after the Retry-After seconds.",
    }.items()
}


class FeatureServer(FastAPI):
    """FastAPI, except that ``POST /v1/features/online`` goes straight to
    ``lookup_endpoint``, ahead of FastAPI's middleware, routing and telemetry."""

    lookup_endpoint: LookupEndpoint | None = None
    feast_endpoint: LookupEndpoint | None = None  # POST /get-online-features (Feast's shape)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.lookup_endpoint
        client = scope.get("client")
        if client:  # where a read came from, for the access log
            PEER.set(f"{client[0]}:{client[1]}")
        if (
            endpoint is not None
            and scope["type"] == "http"
            and scope["path"] == LOOKUP_PATH
            and scope["method"] == "POST"
        ):
            await endpoint(scope, receive, send)
            return
        feast = self.feast_endpoint
        if (
            feast is not None
            and scope["type"] == "http"
            and scope["path"] == FEAST_PATH
            and scope["method"] == "POST"
        ):
            await feast(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class _Delegate(Response):
    """A response that lets a raw ASGI endpoint answer the request itself."""

    def __init__(self, endpoint: LookupEndpoint) -> None:
        super().__init__()
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.endpoint(scope, receive, send)


def create_app(
    repo: str | Path,
    *,
    registry_version: int | None = None,
    options: ServerOptions | None = None,
) -> FeatureServer:
    """The lookup server of the feature repo at ``repo``.

    ``registry_version`` pins the served registry version (no refresh); by default
    the server follows the registry head. ``options`` default to the repo's
    ``[server]`` config and the environment (``ServerOptions.from_settings``).
    """
    store = FeatureStore(repo, registry_version=registry_version)
    opts = options or ServerOptions.from_settings(store.settings)
    metrics = ServerMetrics(directory=os.environ.get(METRICS_DIR_ENV) or None)
    serving = Serving(
        store,
        metrics=metrics,
        pinned_version=registry_version,
        refresh_seconds=opts.registry_refresh_seconds,
    )
    guard = GuardedStore(store.online, metrics=metrics, probe_seconds=opts.store_probe_seconds)
    # the logger's writer thread starts here; store.close() (lifespan end) flushes it
    feature_logger = (
        store.enable_feature_logging(default_sample_rate=opts.feature_log_sample)
        if opts.feature_logging
        else None
    )
    auth = Authenticator(opts.api_keys, opts.service_keys)
    # the policy (if any) and the access log of pii/sensitive reads (server/governance.py)
    access_logger = AccessLogger(store.offline)
    gate = AccessGate(store.settings.policy, access_logger)
    handler = LookupHandler(
        serving=cast(Serving, GovernedServing(serving, gate.policy)),
        store=guard,
        auth=auth,
        metrics=metrics,
        max_entities=opts.max_entities,
        max_features=opts.max_features,
        feature_logger=feature_logger,
    )
    handler = cast(LookupHandler, GovernedHandler(handler, gate))
    if feature_logger is not None:
        metrics.watch_feature_log(feature_logger.stats)
    access_log = AccessLog(
        sample=opts.access_log_sample,
        error_lines_per_second=opts.access_log_error_lines_per_second,
        metrics=metrics,
    )
    endpoint = LookupEndpoint(
        handler=handler,
        metrics=metrics,
        access_log=access_log,
        max_body_bytes=opts.max_body_bytes,
        body_timeout_seconds=opts.body_timeout_seconds,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        serving.start()
        metrics.start()
        access_log.start()
        try:
            yield
        finally:
            serving.stop()
            metrics.stop()
            access_log.stop()
            guard.stop()
            access_logger.close()
            store.close()  # flushes the feature log, closes the registry and the store

    app = FeatureServer(
        title="featurestore",
        version=__version__,
        summary="Online feature lookups with statuses and event times.",
        lifespan=lifespan,
    )
    app.state.serving = serving
    app.state.online = guard
    app.state.metrics = metrics
    app.state.options = opts
    app.state.access_logger = access_logger

    @app.post(
        LOOKUP_PATH,
        summary="Feature values for entities",
        description="Values, statuses (PRESENT, MISSING, EXPIRED) and event times of the "
        "requested features, one list per feature aligned with the entities. "
        "Send 'Authorization: Bearer <key>' when the server has API keys.",
        response_model=None,
        responses={200: {"model": OnlineFeaturesResponse}, **_ERRORS},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": request_schema()}},
            }
        },
        tags=["features"],
    )
    async def online_features(request: Request) -> Response:
        # Normally answered by FeatureServer.__call__ before routing. This route
        # documents it, and serves it the same way when the app is mounted under a
        # prefix: the endpoint then reads the body and answers by itself.
        return _Delegate(endpoint)

    feast = feast_endpoint(endpoint)
    feast.handler = cast(LookupHandler, GovernedHandler(feast.handler, gate))

    @app.post(
        FEAST_PATH,
        summary="Feature values in Feast's shape (Feast clients)",
        description="Feast's feature-server request ('features' or 'feature_service', "
        "'entities', 'full_feature_names') and response ('metadata.feature_names', join "
        "keys first; 'results[i].values/statuses/event_timestamps'; statuses PRESENT, "
        "NOT_FOUND, OUTSIDE_MAX_AGE). Point Feast's remote online store here. "
        "See docs/migrating-from-feast.md.",
        response_model=None,
        responses={
            200: {"content": {"application/json": {"schema": feast_compat.RESPONSE_SCHEMA}}},
            **_ERRORS,
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": feast_compat.REQUEST_SCHEMA}},
            }
        },
        tags=["feast"],
    )
    async def feast_online_features(request: Request) -> Response:
        return _Delegate(feast)  # normally answered by FeatureServer.__call__

    push_handler = PushHandler(store, auth=auth, body_timeout_seconds=opts.body_timeout_seconds)

    @app.post(
        PUSH_PATH,
        summary="Write rows of a feature view",
        description="Rows (the view's source columns, as columns or a list of objects) go "
        "through the view's row transforms to the online store (compare-and-set; "
        "aggregated views fold them into their records) and to the offline table. "
        "Pushing again with the same push_id writes nothing twice. Needs a key in "
        "server.push_keys when the server has API keys.",
        response_model=None,
        responses={200: {"model": PushResponse}, **_ERRORS},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": PushRequest.model_json_schema()}},
            }
        },
        tags=["push"],
    )
    async def push(request: Request) -> Response:
        return await push_handler(request)

    @app.get("/health", response_model=HealthResponse, tags=["operations"])
    async def health() -> dict[str, Any]:
        """Liveness: the process answers. Does no I/O. ``HEAD /health`` answers too."""
        return {"status": "ok", "registry_version": serving.state.version, "pid": os.getpid()}

    @app.head("/health", include_in_schema=False)
    async def health_head() -> Response:
        return Response(status_code=200, media_type="application/json")

    @app.get(
        "/ready",
        response_model=ReadyResponse,
        responses={503: {"model": ReadyResponse, "description": "A dependency is down."}},
        tags=["operations"],
    )
    def ready() -> JSONResponse:
        """Readiness: pings the online store and the registry (bounded by their timeouts)."""
        online = registry = "ok"
        try:
            guard.ping()
        except Exception as exc:
            online = f"unavailable: {exc}"
        try:
            if serving.pinned is None:
                serving.refresh()
            else:
                serving.store.registry.head(fresh=True)
        except Exception as exc:
            registry = f"unavailable: {exc}"
        state = serving.state
        if registry == "ok" and state.version == 0:
            registry = "no version applied yet: run `featurestore apply`"
        elif registry == "ok" and state.serves_nothing:
            registry = (
                f"version {state.version} serves nothing (no views or services): "
                "was the registry rolled back? run `featurestore apply` or roll forward"
            )
        ok = online == "ok" and registry == "ok"
        doc: dict[str, Any] = {
            "status": "ready" if ok else "not ready",
            "registry_version": state.version,
            "online_store": online,
            "registry": registry,
        }
        rejected = serving.rejected
        if rejected is not None:
            # still ready: the last good version serves; the operator fixes the head
            doc["rejected_version"] = rejected.version
            doc["rejected_reason"] = rejected.reason
        return JSONResponse(doc, status_code=200 if ok else 503)

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {PROMETHEUS_TEXT: {}}}},
        tags=["operations"],
    )
    def prometheus() -> Response:
        """Prometheus text exposition of every worker's metrics."""
        return Response(metrics.render(), media_type=PROMETHEUS_TEXT)

    from featurestore.ui import create_ui  # here: featurestore.ui imports server.auth

    # the web UI, read-only, behind the same API keys (featurestore/ui/access.py)
    app.mount("/ui", create_ui(store, auth=auth))
    app.add_middleware(RouteMetricsMiddleware, metrics=metrics, access_log=access_log)
    app.lookup_endpoint = endpoint
    app.feast_endpoint = feast
    return app
