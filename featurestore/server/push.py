"""``POST /v1/push``: rows from an application, through ``FeatureStore.push``.

Served by FastAPI (not the lookup's raw endpoint): a push writes to Redis and Delta,
so the framework's ~0.1 ms per request is noise here, and the lookup hot path stays
as it is. The body::

    {"view": "driver_stats", "push_id": "orders-17",
     "rows": {"driver_id": [1, 2], "event_ts": ["2024-05-01T12:00:00Z", ...], ...}}

``rows`` may also be a list of objects. Errors are the server's (``errors.py``):
401/403 for keys (with a ``[policy]``, 403 too unless the key's principal has the
``push`` action and the view's strictest class), 413 past ``push_max_rows`` or
``push_max_body_bytes``, 422 naming
the field of a bad row (nothing is written then), 503 when a store is down (push
again with the same ``push_id``: nothing is written twice).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import orjson
from fastapi import Request, Response
from pydantic import BaseModel, ConfigDict, Field

from featurestore._classification import strictest
from featurestore._policy import AccessDenied
from featurestore.api.store import FeatureStore
from featurestore.compile.classification import classes_of, default_of
from featurestore.errors import RequestError
from featurestore.server.auth import Authenticator, PushPermissions, forbidden, principal_of
from featurestore.server.errors import (
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
    error_response,
)
from featurestore.server.lookup import json_object

PUSH_PATH = "/v1/push"
PUSH_KEYS_ENV = "FEATURESTORE_PUSH_KEYS"
_FIELDS = frozenset({"view", "rows", "push_id"})


class PushRequest(BaseModel):
    """A push: the view, its source rows, and the id that makes a retry safe."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "view": "driver_stats",
                    "push_id": "orders-2024-05-01-17",
                    "rows": {
                        "driver_id": [1001, 1002],
                        "event_timestamp": ["2024-05-01T12:00:00Z", "2024-05-01T12:00:05Z"],
                        "trips": [3, 7],
                    },
                }
            ]
        },
    )

    view: str = Field(description="The feature view to write.")
    rows: dict[str, list[Any]] | list[dict[str, Any]] = Field(
        description="The view's source columns: an object of equal-length lists, or a "
        "list of objects. Timestamps are ISO-8601 strings with a time zone."
    )
    push_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._:/-]{1,128}$",
        description="Names this batch of rows: pushing it again writes nothing twice. "
        "Without it the server makes one up, and a retry may count the rows twice.",
    )


class PushResponse(BaseModel):
    """What the push wrote."""

    view: str
    push_id: str
    rows: int = Field(description="Rows received.")
    online_written: int = Field(description="Online records replaced.")
    online_skipped: int = Field(
        description="Rows or records that changed nothing: older than the stored value, "
        "or already written by an earlier push with this push_id."
    )
    offline_written: int = Field(description="Rows added to the offline table.")
    seconds: float


class PushHandler:
    """Reads, checks and runs one push request; blocking work runs on a thread."""

    def __init__(
        self,
        store: FeatureStore,
        *,
        auth: Authenticator,
        body_timeout_seconds: float,
    ) -> None:
        server = store.settings.config.server
        env = os.environ.get(PUSH_KEYS_ENV)
        push_keys = [k for k in env.split(",") if k] if env else list(server.push_keys)
        self.store = store
        self.auth = auth
        self.permissions = PushPermissions(
            [k.decode() for k in auth.keys], push_keys, server.push_view_keys
        )
        self.max_rows = server.push_max_rows
        self.max_body_bytes = server.push_max_body_bytes
        self.body_timeout = body_timeout_seconds

    async def __call__(self, request: Request) -> Response:
        try:
            key = self.auth.check(request.headers.get("authorization", "").encode() or None)
            content_type = request.headers.get("content-type", "")
            if content_type.split(";", 1)[0].strip().lower() != "application/json":
                raise UnsupportedMediaType(content_type[:100] or "(none)")
            body = await self._body(request)
            view, rows, push_id = self._parse(body)
            self.permissions.check(key, view)
            report = await asyncio.to_thread(self._push, key, view, rows, push_id)
            return Response(orjson.dumps(report.to_dict()), media_type="application/json")
        except Exception as exc:
            status, out, headers = error_response(exc)
            return Response(
                out,
                status_code=status,
                media_type="application/json",
                headers={k.decode(): v.decode() for k, v in headers},
            )

    def _push(self, key: bytes | None, view: str, rows: Any, push_id: str | None) -> Any:
        self.check_policy(key, view)
        return self.store.push(view, rows, push_id=push_id)

    def check_policy(self, key: bytes | None, view: str) -> None:
        """With a ``[policy]``: raise ``Forbidden`` (403) unless the key's principal
        may ``push`` to ``view`` at the view's strictest class (writing a feature is
        checked like reading its most protected one)."""
        policy = self.store.settings.policy
        if policy is None:
            return
        spec = self.store.index().view(view).spec
        cls = strictest(classes_of(spec).values(), default_of(spec)) or default_of(spec)
        try:
            policy.check(principal_of(policy, key), "push", [(view, cls)])
        except AccessDenied as exc:
            raise forbidden(exc) from None

    async def _body(self, request: Request) -> bytes:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            raise self._too_large(int(length))
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        raise self._too_large(size)
                    chunks.append(chunk)
        except TimeoutError:
            raise RequestTimeout(self.body_timeout, size) from None
        return b"".join(chunks)

    def _too_large(self, size: int) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"the push body is larger than {self.max_body_bytes} bytes",
            field="body",
            value=size,
            hint="push fewer rows per request (server.push_max_body_bytes sets the limit)",
        )

    def _parse(self, body: bytes) -> tuple[str, Any, str | None]:
        doc = json_object(
            body, example='{"view": "...", "rows": {...}, "push_id": "..."}', obj="push request"
        )
        extra = sorted(set(doc) - _FIELDS)
        if extra:
            raise RequestError(
                "unknown field",
                obj="push request",
                field=extra[0],
                hint=f"the fields are {sorted(_FIELDS)}",
            )
        view = doc.get("view")
        if not isinstance(view, str) or not view:
            raise RequestError(
                "must name a feature view", obj="push request", field="view", value=view
            )
        if "rows" not in doc:
            raise RequestError("is required", obj="push request", field="rows")
        rows = doc["rows"]
        n = _row_count(rows)
        if n > self.max_rows:
            raise PayloadTooLarge(
                f"more than {self.max_rows} rows in one push",
                field="rows",
                value=n,
                hint="split the rows over several pushes (server.push_max_rows sets the limit)",
            )
        push_id = doc.get("push_id")
        if push_id is not None and not isinstance(push_id, str):
            raise RequestError(
                "must be a string", obj="push request", field="push_id", value=push_id
            )
        return view, rows, push_id


def _row_count(rows: Any) -> int:
    if isinstance(rows, list):
        return len(rows)
    if isinstance(rows, dict):
        return max((len(v) for v in rows.values() if isinstance(v, list)), default=0)
    return 0
