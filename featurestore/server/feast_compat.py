"""``POST /get-online-features``: Feast's feature-server request and response shapes.

A service that calls Feast's feature server (Feast's Python SDK with
``online_store: {type: remote, path: http://host:port}`` in ``feature_store.yaml``,
or raw JSON from any language) can point at ``featurestore serve`` unchanged.
Nothing here imports Feast: the shapes were read off Feast 0.67's server
(``feature_server.py``, ``feature_server_utils.convert_response_to_dict``) and its
remote client (``infra/online_stores/remote.py``), and the tests run that client.

Request::

    {"features": ["view:feature", ...] | "feature_service": "name",
     "entities": {"driver_id": [1001, 1002], "val_to_add": [1, 2]},
     "full_feature_names": false, "include_feature_view_version_metadata": false}

Feast passes request-time fields of on-demand views inside ``entities``: columns
that are not join keys of the requested features become ``request_data`` here.

Response: ``metadata.feature_names`` lists the join keys first, then the features;
``results[i]`` holds ``values``, ``statuses`` and ``event_timestamps`` of name ``i``,
one entry per entity. Join keys are ``PRESENT`` at the epoch, as Feast answers them.
Statuses: PRESENT -> ``PRESENT``, MISSING -> ``NOT_FOUND``, EXPIRED ->
``OUTSIDE_MAX_AGE`` (with a null value; Feast 0.67's own server reports expired
rows as PRESENT with their value: see docs/feast.md).

The work is the native route's (``lookup.py``): the same parser, the same cached
``LookupPlan``, one store round trip, the same feature log; only the response shape
differs. It is served ahead of FastAPI's routing like the native route.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from featurestore.api.online import EXPIRED, MISSING, PRESENT, LookupPlan, OnlineResponse, lookup
from featurestore.errors import DataError, RequestError
from featurestore.server.asgi import LookupEndpoint
from featurestore.server.lookup import (
    LookupHandler,
    LookupRequest,
    _features,
    _kind,
    parse_request,
)

FEAST_PATH = "/get-online-features"
FEAST_KEYS = (
    "entities",
    "features",
    "feature_service",
    "full_feature_names",
    "include_feature_view_version_metadata",
)
FEAST_STATUS = {PRESENT: "PRESENT", MISSING: "NOT_FOUND", EXPIRED: "OUTSIDE_MAX_AGE"}
EPOCH_TEXT = "1970-01-01T00:00:00Z"  # what Feast gives join keys and missing rows
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SCALAR = {"type": ["integer", "number", "string", "boolean", "null"]}
# What /docs and /openapi.json publish; the parser above is the one that decides.
REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "features": {"type": "array", "items": {"type": "string"}},
        "feature_service": {"type": "string"},
        "entities": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": _SCALAR},
            "description": "join key -> values; request fields of on-demand views too",
        },
        "full_feature_names": {"type": "boolean"},
        "include_feature_view_version_metadata": {"type": "boolean"},
    },
    "required": ["entities"],
    "additionalProperties": False,
}
RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "metadata": {
            "type": "object",
            "properties": {"feature_names": {"type": "array", "items": {"type": "string"}}},
        },
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "values": {"type": "array"},
                    "statuses": {"type": "array", "items": {"type": "string"}},
                    "event_timestamps": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
    "required": ["metadata", "results"],
}
_EXAMPLE = '{"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1001]}}'


def timestamp_text(us: int | None) -> str:
    """Microseconds since the epoch as protobuf JSON prints a Timestamp: UTC, ``Z``,
    and 0, 3 or 6 fractional digits."""
    if us is None:
        return EPOCH_TEXT
    moment = _EPOCH + timedelta(microseconds=us)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    micros = moment.microsecond
    if micros == 0:
        return text + "Z"
    if micros % 1000 == 0:
        return f"{text}.{micros // 1000:03d}Z"
    return f"{text}.{micros:06d}Z"


def feast_response(response: OnlineResponse) -> dict[str, Any]:
    """Feast's ``GetOnlineFeaturesResponse`` JSON for one of our lookups."""
    n = len(next(iter(response.entities.values()), []))
    stamps: dict[int | None, str] = {}  # a view's rows share few distinct times
    names: list[str] = []
    results: list[dict[str, Any]] = []
    for key, column in response.entities.items():
        names.append(key)
        results.append(
            {"values": column, "statuses": ["PRESENT"] * n, "event_timestamps": [EPOCH_TEXT] * n}
        )
    for name, values in response.values.items():
        names.append(name)
        texts = []
        for us in response.event_ts[name]:
            text = stamps.get(us)
            if text is None:
                text = stamps[us] = timestamp_text(us)
            texts.append(text)
        results.append(
            {
                "values": values,
                "statuses": [FEAST_STATUS[s] for s in response.statuses[name]],
                "event_timestamps": texts,
            }
        )
    return {"metadata": {"feature_names": names}, "results": results}


class FeastLookupHandler(LookupHandler):
    """The native handler's work with Feast's request and response shapes."""

    @classmethod
    def like(cls, native: LookupHandler) -> FeastLookupHandler:
        """A handler sharing the native one's serving state, store, keys and limits."""
        return cls(
            serving=native.serving,
            store=native.store,
            auth=native.auth,
            metrics=native.metrics,
            max_entities=native.max_entities,
            max_features=native.max_features,
            feature_logger=native.feature_logger,
        )

    def __call__(
        self, body: bytes, authorization: bytes | None, request_id: str | None = None
    ) -> tuple[bytes, LookupRequest]:
        key = self.auth.check(authorization)
        doc = _feast_doc(body)
        features = doc.get("features")
        service = doc.get("feature_service")
        if service is not None and features == []:
            features = None  # Feast's own request model defaults "features" to []
        if (features is None) == (service is None):
            raise RequestError(
                "give exactly one of 'features' and 'feature_service'",
                field="features" if features is not None else "feature_service",
                hint='e.g. "features": ["view:feature"] or "feature_service": "name"',
            )
        if service is not None and (not isinstance(service, str) or not service):
            raise RequestError(
                "must be the name of a feature service",
                field="feature_service",
                value=_kind(service),
            )
        self.auth.check_service(key, service)
        refs = None if features is None else _features(features, self.max_features)
        full = doc.get("full_feature_names", False)
        if not isinstance(full, bool):
            raise RequestError("must be true or false", field="full_feature_names", value=full)
        plan = self.serving.plan(refs, service, full)
        native = _native_doc(doc, refs, service, full, plan.join_keys, bool(plan.on_demand))
        # the native parser checks entities, sizes and request data, with its messages
        req = parse_request(
            orjson.dumps(native), max_entities=self.max_entities, max_features=self.max_features
        )
        response = self._lookup(plan, req, request_id)
        return orjson.dumps(feast_response(response), option=orjson.OPT_SERIALIZE_NUMPY), req

    def _lookup(
        self, plan: LookupPlan, req: LookupRequest, request_id: str | None
    ) -> OnlineResponse:
        extra = [k for k in req.entities if k not in plan.join_keys]
        if extra:
            raise DataError(
                "entity column is not a join key of the requested features",
                field=f"entities.{extra[0]}",
                hint=f"these features are keyed by {', '.join(plan.join_keys)}",
            )
        response = lookup(plan, self.store, req.entities, request_data=req.request_data)
        self._observe_freshness(plan, response.event_ts, response.request_time_us)
        if self.feature_logger is not None:
            self.feature_logger.log(
                response,
                feature_service=req.feature_service,
                features=req.features,
                full_feature_names=req.full_feature_names,
                request_id=request_id,
                plan=plan,
            )
        return response


def _feast_doc(body: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(
            "the request body is not valid JSON",
            field="body",
            value=str(exc),
            hint=f"send a JSON object such as {_EXAMPLE}",
        ) from None
    if not isinstance(doc, dict):
        raise RequestError(
            "the request body must be a JSON object",
            field="body",
            value=type(doc).__name__,
            hint=f"send a JSON object such as {_EXAMPLE}",
        )
    for name in doc:
        if name not in FEAST_KEYS:
            raise RequestError(
                "unknown key in a Feast get-online-features request",
                field=name,
                hint=f"allowed keys: {', '.join(FEAST_KEYS)}",
            )
    flag = doc.get("include_feature_view_version_metadata", False)
    if not isinstance(flag, bool):
        raise RequestError(
            "must be true or false",
            field="include_feature_view_version_metadata",
            value=_kind(flag),
        )
    return doc  # type: ignore[no-any-return]


def _native_doc(
    doc: dict[str, Any],
    refs: tuple[str, ...] | None,
    service: str | None,
    full: bool,
    join_keys: tuple[str, ...],
    on_demand: bool,
) -> dict[str, Any]:
    """The native request: columns that are not join keys go to ``request_data``
    when the features include on-demand views (Feast sends them with the keys)."""
    entities = doc.get("entities")
    native: dict[str, Any] = {"full_feature_names": full}
    if refs is not None:
        native["features"] = list(refs)
    else:
        native["feature_service"] = service
    if on_demand and isinstance(entities, dict):
        keys = {k: v for k, v in entities.items() if k in join_keys}
        data = {k: v for k, v in entities.items() if k not in join_keys}
        native["entities"] = keys or entities
        if data and keys:
            native["request_data"] = data
    else:
        native["entities"] = entities
    return native


def feast_endpoint(native: LookupEndpoint) -> LookupEndpoint:
    """``POST /get-online-features`` as a raw ASGI endpoint, configured like ``native``
    (same body limits, timeouts, metrics and access log)."""
    return LookupEndpoint(
        handler=FeastLookupHandler.like(native.handler),
        metrics=native.metrics,
        access_log=native.access_log,
        max_body_bytes=native.max_body_bytes,
        body_timeout_seconds=native.body_timeout,
        route=FEAST_PATH,
    )
