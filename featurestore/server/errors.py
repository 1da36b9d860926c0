"""Errors -> HTTP: the one place that maps the error tree to status codes.

=========================================  ======  ==========================
error                                      status  extra
=========================================  ======  ==========================
``UnknownFeatureError``, ``UnknownServiceError``  404
``RequestError``, ``DataError``            422
``StoreError`` / ``RegistryError`` that is retryable  503  ``Retry-After``
an ``HttpProblem`` (auth, limits, media)  its own  401, 403, 408, 413, 415
anything else                              500
=========================================  ======  ==========================

Every error body is the JSON of ``FeatureStoreError.to_dict()``: the error type,
message, object, field, value and hint, and whether a retry can help.
"""

from __future__ import annotations

from typing import Any

import orjson

from featurestore.errors import (
    DataError,
    FeatureStoreError,
    RegistryError,
    RequestError,
    StoreError,
    UnknownFeatureError,
    UnknownServiceError,
)

RETRY_AFTER_SECONDS = 1
JSON = b"application/json"


class HttpProblem(FeatureStoreError):
    """A failure that only exists over HTTP (credentials, size limits)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        field: str | None = None,
        value: Any = None,
        hint: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.headers = headers or {}
        super().__init__(message, field=field, value=value, hint=hint)


class Unauthorized(HttpProblem):
    def __init__(self, message: str, *, hint: str) -> None:
        super().__init__(
            401, message, field="Authorization", hint=hint, headers={"www-authenticate": "Bearer"}
        )


class Forbidden(HttpProblem):
    def __init__(self, message: str, *, field: str, value: Any, hint: str) -> None:
        super().__init__(403, message, field=field, value=value, hint=hint)


class PayloadTooLarge(HttpProblem):
    def __init__(self, message: str, *, field: str, value: Any, hint: str) -> None:
        # the unread rest of the body would be taken for the next request: close
        super().__init__(
            413, message, field=field, value=value, hint=hint, headers={"connection": "close"}
        )


class UnsupportedMediaType(HttpProblem):
    def __init__(self, value: str) -> None:
        # the body was not read: it would be taken for the next request, so close
        super().__init__(
            415,
            "the request body must be JSON",
            field="Content-Type",
            value=value,
            hint="send the header 'Content-Type: application/json'",
            headers={"connection": "close"},
        )


class RequestTimeout(HttpProblem):
    def __init__(self, seconds: float, received: int) -> None:
        super().__init__(
            408,
            f"the request body did not arrive within {seconds:g} s",
            field="body",
            value=f"{received} bytes received",
            hint="send the whole body at once (server.body_timeout_seconds sets the limit)",
            headers={"connection": "close"},
        )


def status_for(exc: BaseException) -> int:
    if isinstance(exc, HttpProblem):
        return exc.status
    if isinstance(exc, UnknownFeatureError | UnknownServiceError):
        return 404
    if isinstance(exc, RequestError | DataError):
        return 422
    if isinstance(exc, StoreError | RegistryError) and exc.retryable:
        return 503
    return 500


def error_response(exc: BaseException) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """Status, JSON body and extra headers for ``exc``."""
    status = status_for(exc)
    if isinstance(exc, FeatureStoreError):
        doc = exc.to_dict()
    else:
        # an unexpected bug: say so without leaking internals beyond the type
        doc = {
            "error": "InternalError",
            "message": f"unexpected {type(exc).__name__}; see the server log",
            "retryable": False,
        }
    headers: list[tuple[bytes, bytes]] = []
    if isinstance(exc, HttpProblem):
        headers += [(k.encode(), v.encode()) for k, v in exc.headers.items()]
    if status == 503:
        headers.append((b"retry-after", str(RETRY_AFTER_SECONDS).encode()))
    return status, orjson.dumps(doc), headers
