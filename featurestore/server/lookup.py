"""``POST /v1/features/online``: JSON bytes in, JSON bytes out.

The body is parsed with orjson and checked by hand. Not for speed (measured:
4 us by hand against 3 us for pydantic at 1 entity, 9 against 8 at 100) but so
that every rejection is a ``RequestError`` naming the field, value and fix, like
every other error here; the pydantic models in ``models.py`` document the same
shape for ``/docs``, and a test checks they accept whatever this accepts. The
answer is ``OnlineResponse.to_dict()`` dumped by orjson, which MEASURED.md found
2-3 ms faster than FastAPI's encoder at 100 entities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from featurestore._time import to_us
from featurestore.api.online import LookupPlan, lookup
from featurestore.errors import DataError, RequestError
from featurestore.server.auth import Authenticator
from featurestore.server.errors import PayloadTooLarge
from featurestore.server.metrics import ServerMetrics
from featurestore.server.state import GuardedStore, Serving

if TYPE_CHECKING:
    from featurestore.api.feature_log import FeatureLogger

KEYS = (
    "entities",
    "features",
    "feature_service",
    "full_feature_names",
    "request_time",
    "request_data",
)
_EXAMPLE = '{"entities": {"driver_id": [1001]}, "features": ["driver_hourly_stats:conv_rate"]}'
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# request_time as microseconds: years 1 to 9999, what a datetime (and the log) can hold
REQUEST_TIME_MIN_US, REQUEST_TIME_MAX_US = -62_135_596_800_000_000, 253_402_300_799_999_999
DEFAULT_MAX_FEATURES = 1000
_SCALARS = (int, float, str, bool)


@dataclass(frozen=True)
class LookupRequest:
    entities: dict[str, list[Any]]
    features: tuple[str, ...] | None
    feature_service: str | None
    full_feature_names: bool
    request_time_us: int | None
    size: int
    request_data: dict[str, list[Any]] | None = None


def json_object(body: bytes, *, example: str, obj: str | None = None) -> dict[str, Any]:
    """The body parsed as one JSON object, or a ``RequestError`` (naming ``obj``, with
    ``example`` in its hint): the first check of every JSON route."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(
            "the request body is not valid JSON",
            obj=obj,
            field="body",
            value=str(exc),
            hint=f"send a JSON object such as {example}",
        ) from None
    if not isinstance(doc, dict):
        raise RequestError(
            "the request body must be a JSON object",
            obj=obj,
            field="body",
            value=type(doc).__name__,
            hint=f"send a JSON object such as {example}",
        )
    return doc


def parse_request(
    body: bytes, *, max_entities: int, max_features: int = DEFAULT_MAX_FEATURES
) -> LookupRequest:
    """A checked lookup request, or a ``RequestError`` naming what is wrong.

    Every value is checked to be a scalar here, before any work: a nested list
    would otherwise reach the store or an on-demand transform (issue 15: depth
    1000 cost a minute of CPU on the event loop). Error values name the type, never
    echo a nested value (its repr alone may recurse too deep)."""
    doc = json_object(body, example=_EXAMPLE)
    for key in doc:
        if key not in KEYS:
            raise RequestError(
                "unknown key in the request body",
                field=key,
                hint=f"allowed keys: {', '.join(KEYS)}",
            )
    entities, size = _entities(doc.get("entities"), max_entities)
    features = doc.get("features")
    service = doc.get("feature_service")
    if (features is None) == (service is None):
        raise RequestError(
            "give exactly one of 'features' and 'feature_service'",
            field="features" if features is not None else "feature_service",
            hint='e.g. "features": ["view:feature"] or "feature_service": "name"',
        )
    refs = None if features is None else _features(features, max_features)
    if service is not None and (not isinstance(service, str) or not service):
        raise RequestError(
            "must be the name of a feature service", field="feature_service", value=_kind(service)
        )
    full = doc.get("full_feature_names", False)
    if not isinstance(full, bool):
        raise RequestError("must be true or false", field="full_feature_names", value=_kind(full))
    when = doc.get("request_time")
    request_time_us = None
    if when is not None:
        if isinstance(when, bool) or not isinstance(when, int | str):
            raise RequestError(
                "must be microseconds since the epoch or an ISO 8601 time with a zone",
                field="request_time",
                value=_kind(when),
            )
        try:
            request_time_us = to_us(when, what="request_time")
        except ValueError:
            raise RequestError(
                "is not an ISO 8601 time",
                field="request_time",
                value=when,
                hint="e.g. 2026-01-08T12:00:00Z",
            ) from None
        if not REQUEST_TIME_MIN_US <= request_time_us <= REQUEST_TIME_MAX_US:
            raise RequestError(
                "is out of range: years 1 to 9999 only",
                field="request_time",
                value=when,
                hint="give microseconds since the epoch, e.g. 1767873600000000",
            )
    data = _request_data(doc.get("request_data"))
    return LookupRequest(entities, refs, service, full, request_time_us, size, data)


def _kind(value: Any) -> str:
    """What a rejected value is, without echoing it (it may be nested 1000 deep)."""
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return f"an object of {len(value)} keys"
    return repr(value)[:100]


def _request_data(data: Any) -> dict[str, list[Any]] | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise RequestError(
            "must be an object mapping each request field to a list of values, one per entity",
            field="request_data",
            value=_kind(data),
            hint='e.g. "request_data": {"val_to_add": [1, 2]}',
        )
    for name, column in data.items():
        if not isinstance(column, list):
            raise RequestError(
                "must be a list of values, one per entity",
                field=f"request_data.{name}",
                value=_kind(column),
                hint=f'e.g. "{name}": [1.5, 2.0]',
            )
        for i, v in enumerate(column):
            if isinstance(v, list):  # a list-typed request field: one level of scalars
                for j, item in enumerate(v):
                    _request_scalar(item, f"request_data.{name}[{i}][{j}]")
            else:
                _request_scalar(v, f"request_data.{name}[{i}]")
    return data


def _request_scalar(v: Any, field: str) -> None:
    if v is not None and not isinstance(v, _SCALARS):
        raise RequestError(
            "must be a number, a string, true/false or null",
            field=field,
            value=_kind(v),
            hint="request fields are scalars of their declared dtype, one per entity",
        )
    if type(v) is int and not INT64_MIN <= v <= INT64_MAX:
        raise RequestError(
            "is out of the int64 range",
            field=field,
            value=v,
            hint=f"integers must lie within {INT64_MIN} and {INT64_MAX}",
        )


def _key_column(key: str, column: list[Any]) -> None:
    """Join key values are integers within int64, strings, booleans or null."""
    for i, v in enumerate(column):
        t = type(v)
        if t is int:
            if INT64_MIN <= v <= INT64_MAX:
                continue
            raise RequestError(
                "is out of the int64 range",
                field=f"entities.{key}[{i}]",
                value=v,
                hint=f"join keys must lie within {INT64_MIN} and {INT64_MAX}",
            )
        if t is str or t is bool or v is None:
            continue
        raise RequestError(
            "must be an integer, a string or null",
            field=f"entities.{key}[{i}]",
            value=_kind(v),
            hint=f'e.g. "{key}": [1001, 1002]',
        )


def _entities(value: Any, max_entities: int) -> tuple[dict[str, list[Any]], int]:
    if value is None:
        raise RequestError(
            "is required", field="entities", hint='e.g. "entities": {"driver_id": [1001, 1002]}'
        )
    if not isinstance(value, dict) or not value:
        raise RequestError(
            "must be a non-empty object mapping each join key to a list of values",
            field="entities",
            value=_kind(value),
            hint='e.g. "entities": {"driver_id": [1001, 1002]}',
        )
    size = -1
    for key, column in value.items():
        if not isinstance(column, list):
            raise RequestError(
                "must be a list of key values",
                field=f"entities.{key}",
                value=_kind(column),
                hint=f'e.g. "{key}": [1001, 1002]',
            )
        if not column:
            raise RequestError(
                "no entities given", field=f"entities.{key}", hint="give at least one key value"
            )
        if size == -1:
            size = len(column)
        elif len(column) != size:
            raise RequestError(
                "entity key columns have different lengths",
                field="entities",
                value={k: len(v) if isinstance(v, list) else _kind(v) for k, v in value.items()},
                hint="give one value per entity in every key column",
            )
    if size > max_entities:
        raise PayloadTooLarge(
            f"too many entities: at most {max_entities} per request",
            field="entities",
            value=size,
            hint=f"split the request into batches of at most {max_entities} entities",
        )
    for key, column in value.items():
        _key_column(key, column)
    return value, size


def _features(value: Any, max_features: int) -> tuple[str, ...]:
    """The references, checked, in first-seen order without duplicates."""
    if not isinstance(value, list) or not value:
        raise RequestError(
            "must be a non-empty list of 'view:feature' references",
            field="features",
            value=_kind(value),
        )
    if len(value) > max_features:
        # before any per-reference work: the plan cache keys on the whole list
        raise PayloadTooLarge(
            f"too many feature references: at most {max_features} per request",
            field="features",
            value=len(value),
            hint="name a feature service instead, or raise server.max_features",
        )
    for i, ref in enumerate(value):
        if (
            not isinstance(ref, str)
            or ref.count(":") != 1
            or ref.startswith(":")
            or ref.endswith(":")
        ):
            raise RequestError(
                "is not a feature reference",
                field=f"features[{i}]",
                value=_kind(ref),
                hint="use 'view_name:feature_name'",
            )
    return tuple(dict.fromkeys(value))


class LookupHandler:
    """Everything one lookup request does after the bytes have arrived."""

    def __init__(
        self,
        *,
        serving: Serving,
        store: GuardedStore,
        auth: Authenticator,
        metrics: ServerMetrics,
        max_entities: int,
        max_features: int = DEFAULT_MAX_FEATURES,
        feature_logger: FeatureLogger | None = None,
    ) -> None:
        self.serving = serving
        self.store = store
        self.auth = auth
        self.metrics = metrics
        self.max_entities = max_entities
        self.max_features = max_features
        self.feature_logger = feature_logger

    def __call__(
        self, body: bytes, authorization: bytes | None, request_id: str | None = None
    ) -> tuple[bytes, LookupRequest]:
        key = self.auth.check(authorization)
        req = parse_request(body, max_entities=self.max_entities, max_features=self.max_features)
        self.auth.check_service(key, req.feature_service)
        plan = self.serving.plan(req.features, req.feature_service, req.full_feature_names)
        extra = [k for k in req.entities if k not in plan.join_keys]
        if extra:
            raise DataError(
                "entity column is not a join key of the requested features",
                field=f"entities.{extra[0]}",
                hint=f"these features are keyed by {', '.join(plan.join_keys)}",
            )
        response = lookup(
            plan,
            self.store,
            req.entities,
            request_time_us=req.request_time_us,
            request_data=req.request_data,
        )
        self._observe_freshness(plan, response.event_ts, response.request_time_us)
        if self.feature_logger is not None:
            # queues a reference for a background writer; never blocks or raises
            self.feature_logger.log(
                response,
                feature_service=req.feature_service,
                features=req.features,
                full_feature_names=req.full_feature_names,
                request_id=request_id,
                plan=plan,
            )
        return orjson.dumps(response.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY), req

    def _observe_freshness(
        self, plan: LookupPlan, stamps: dict[str, list[int | None]], now_us: int
    ) -> None:
        observe = self.metrics.freshness.observe_many
        for view in plan.views:
            # every feature of a view shares one event_ts list: look at it once (a view
            # read only as an input of an on-demand feature has no output of its own)
            out = next((o for o in view.outputs if o is not None), None)
            if out is not None:
                ets = stamps[out]
                observe([now_us - t for t in ets if t is not None], (view.schema.view,))
