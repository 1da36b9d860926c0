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
rows as PRESENT with their value: see docs/migrating-from-feast.md).

The work is the native route's (``lookup.py``): the same checks, the same cached
``LookupPlan``, one store round trip, the same feature log; only the response shape
differs. It is served ahead of FastAPI's routing like the native route.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import numpy as np
import orjson

from featurestore.api.online import EXPIRED, MISSING, PRESENT, LookupPlan, OnlineResponse, lookup
from featurestore.errors import DataError, RequestError
from featurestore.server.asgi import LookupEndpoint
from featurestore.server.lookup import (
    LookupHandler,
    LookupRequest,
    _entities,
    _features,
    _kind,
    _request_data,
    json_object,
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
_US_PER_DAY = 86_400_000_000
_VECTOR_FROM = 16
# numpy datetime64 as RFC 3339 in UTC with a Z, as protobuf JSON prints a Timestamp
_ORJSON_TIME = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z
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


@lru_cache(maxsize=4096)
def _day_text(day: int) -> str:
    return (_EPOCH + timedelta(days=day)).date().isoformat() + "T"  # 4-digit years


def timestamp_text(us: int | None) -> str:
    """Microseconds since the epoch as protobuf JSON prints a Timestamp: UTC, ``Z``,
    and 0, 3 or 6 fractional digits. Arithmetic, with the date cached (a strftime
    per value cost about 2 us here)."""
    if us is None:
        return EPOCH_TEXT
    day, rest = divmod(us, _US_PER_DAY)
    seconds, micros = divmod(rest, 1_000_000)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    text = f"{_day_text(day)}{hours:02d}:{minutes:02d}:{seconds:02d}"
    if micros == 0:
        return text + "Z"
    if micros % 1000 == 0:
        return f"{text}.{micros // 1000:03d}Z"
    return f"{text}.{micros:06d}Z"


def timestamp_texts(stamps: list[int | None]) -> list[str] | orjson.Fragment:
    """``timestamp_text`` of each value: a list, or from 16 values on the JSON array
    itself, formatted in C (measured, 100 values: 8 us by orjson, 28 us by numpy's
    ``datetime_as_string``, 95 us one by one; 100 entities of two views made this
    route 15% slower than the native one). orjson prints a fraction in 6 digits
    where protobuf prints 3 for whole milliseconds, so such columns take numpy."""
    if len(stamps) < _VECTOR_FROM:
        return [timestamp_text(us) for us in stamps]
    arr = np.array(stamps if None not in stamps else [us or 0 for us in stamps], np.int64)
    fractions = arr % 1_000_000
    if not ((fractions % 1000 == 0) & (fractions != 0)).any():
        try:
            return orjson.Fragment(orjson.dumps(arr.view("datetime64[us]"), option=_ORJSON_TIME))
        except TypeError:
            pass  # beyond orjson's range of years
    full = np.datetime_as_string(arr.astype("datetime64[us]"), unit="us").tolist()
    return [
        EPOCH_TEXT
        if us is None
        else text[:19] + "Z"
        if frac == 0
        else text[:23] + "Z"
        if frac % 1000 == 0
        else text + "Z"
        for us, text, frac in zip(stamps, full, fractions.tolist(), strict=True)
    ]


def feast_response(response: OnlineResponse) -> dict[str, Any]:
    """Feast's ``GetOnlineFeaturesResponse`` JSON for one of our lookups."""
    n = len(next(iter(response.entities.values()), []))
    names: list[str] = []
    results: list[dict[str, Any]] = []
    for key, column in response.entities.items():
        names.append(key)
        results.append(
            {"values": column, "statuses": ["PRESENT"] * n, "event_timestamps": [EPOCH_TEXT] * n}
        )
    # the features of one view share one list of event times and one of statuses:
    # each is turned into text once per request
    texts: dict[int, list[str] | orjson.Fragment] = {}
    statuses: dict[int, list[str]] = {}
    for name, values in response.values.items():
        names.append(name)
        stamps, codes = response.event_ts[name], response.statuses[name]
        text = texts.get(id(stamps))
        if text is None:
            text = texts[id(stamps)] = timestamp_texts(stamps)
        status = statuses.get(id(codes))
        if status is None:
            # PRESENT is spelled the same in both: an all-present list is reused
            status = statuses[id(codes)] = (
                codes
                if MISSING not in codes and EXPIRED not in codes
                else [FEAST_STATUS[c] for c in codes]
            )
        results.append({"values": values, "statuses": status, "event_timestamps": text})
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
            raise RequestError(
                "must be true or false", field="full_feature_names", value=_kind(full)
            )
        plan = self.serving.plan(refs, service, full)
        req = self._request(doc, refs, service, full, plan)
        response = self._lookup(plan, req, request_id)
        return orjson.dumps(feast_response(response), option=orjson.OPT_SERIALIZE_NUMPY), req

    def _request(
        self,
        doc: dict[str, Any],
        refs: tuple[str, ...] | None,
        service: str | None,
        full: bool,
        plan: LookupPlan,
    ) -> LookupRequest:
        """The native request from the parsed body, checked by the native parser's own
        checks (entities, sizes, request data: same messages), without writing the
        body again and parsing it a second time (measured: 12 of the 14 us this route
        cost over the native one at 1 entity)."""
        entities = doc.get("entities")
        data = None
        if plan.on_demand and isinstance(entities, dict):
            # Feast sends request fields of on-demand views with the join keys
            keys = {k: v for k, v in entities.items() if k in plan.join_keys}
            rest = {k: v for k, v in entities.items() if k not in plan.join_keys}
            if keys and rest:
                entities, data = keys, rest
        checked, size = _entities(entities, self.max_entities)
        return LookupRequest(
            entities=checked,
            features=refs,
            feature_service=service,
            full_feature_names=full,
            request_time_us=None,
            size=size,
            request_data=_request_data(data),
        )

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
    doc = json_object(body, example=_EXAMPLE)
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
