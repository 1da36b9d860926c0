"""One tree of typed errors.

Every error names the culprit (the object, the field, the value) and says what to
do. ``retryable`` tells a caller whether trying again can help (a server that was
down) or not (a definition that is wrong).

::

    FeatureStoreError
    ├── DefinitionError          a definition is invalid (one problem)
    │   └── DefinitionErrors     several problems, collected by the compiler
    ├── DataError                input data breaks a rule (naive timestamp, bad key)
    ├── RequestError             a lookup or dataset request is malformed
    │   ├── UnknownFeatureError  a feature reference names nothing registered
    │   └── UnknownServiceError  a feature service name is not registered
    ├── RegistryError            the registry cannot do what was asked
    │   ├── RegistryConflictError    another apply won the race (retryable)
    │   ├── RegistryUnavailable      the registry database cannot be reached (retryable)
    │   └── VersionNotFoundError     no such registry version
    ├── StoreError               a store failed
    │   ├── OfflineStoreError
    │   │   └── OfflineStoreConflictError  a concurrent commit won (retryable)
    │   └── OnlineStoreError
    │       └── OnlineStoreUnavailable   the online store cannot be reached (retryable)
    └── StreamError              the stream worker cannot go on

The mapping of these errors to HTTP status codes lives in ``featurestore.server``;
to CLI exit codes in ``featurestore.cli._errors``. Every text an error renders has
its URLs' passwords masked (``featurestore._redact``): errors reach terminals, JSON
output, HTTP responses and logs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from featurestore._redact import redact_text


def _short(value: Any, limit: int = 80) -> str:
    text = redact_text(repr(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _clean(text: str | None) -> str | None:
    return None if text is None else redact_text(text)


class FeatureStoreError(Exception):
    """Base of every error raised by featurestore."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        obj: str | None = None,
        field: str | None = None,
        value: Any = None,
        hint: str | None = None,
        file: str | None = None,
    ) -> None:
        self.message = message
        self.obj = obj
        self.field = field
        self.value = value
        self.hint = hint
        self.file = file
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.obj:
            where.append(self.obj)
        if self.field:
            where.append(f"field {self.field}")
        text = ": ".join([", ".join(where), self.message]) if where else self.message
        if self.value is not None:
            text += f" (got {_short(self.value)})"
        if self.hint:
            text += f". {self.hint}"
        return redact_text(text)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description, used by ``--json`` output and the server."""
        return {
            "error": type(self).__name__,
            "message": _clean(self.message),
            "object": _clean(self.obj),
            "field": self.field,
            "value": None if self.value is None else _short(self.value, 200),
            "hint": _clean(self.hint),
            "file": _clean(self.file),
            "retryable": self.retryable,
        }


class DefinitionError(FeatureStoreError):
    """A feature definition is invalid."""


class DefinitionErrors(DefinitionError):
    """Several definition problems, collected so the user sees them all at once."""

    def __init__(self, errors: Sequence[DefinitionError]) -> None:
        self.errors = list(errors)
        lines = [f"{len(self.errors)} problem(s) in the feature definitions:"]
        lines += [f"  - {e}" for e in self.errors]
        super().__init__("\n".join(lines))

    def _render(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "errors": [e.to_dict() for e in self.errors]}


class DataError(FeatureStoreError):
    """Input data breaks a rule of SEMANTICS (naive timestamps, wrong columns...)."""


class RequestError(FeatureStoreError):
    """A request for features is malformed."""


class UnknownFeatureError(RequestError):
    """A feature reference names a view or feature that is not registered."""


class UnknownServiceError(RequestError):
    """A feature service is not registered."""


class RegistryError(FeatureStoreError):
    """The registry cannot do what was asked."""


class RegistryConflictError(RegistryError):
    """Another ``apply`` changed the registry first; re-run ``plan`` and ``apply``."""

    retryable = True


class RegistryUnavailable(RegistryError):
    """The registry database cannot be reached now (refused, timed out, went away)."""

    retryable = True


class VersionNotFoundError(RegistryError):
    """No such registry version."""


class StoreError(FeatureStoreError):
    """A store failed."""


class OfflineStoreError(StoreError):
    """The offline (Delta Lake) store failed."""


class OfflineStoreConflictError(OfflineStoreError):
    """A concurrent Delta commit won the race, even after retries; try again."""

    retryable = True


class OnlineStoreError(StoreError):
    """The online store failed."""


class OnlineStoreUnavailable(OnlineStoreError):
    """The online store cannot be reached; it may come back."""

    retryable = True


class StreamError(FeatureStoreError):
    """The stream worker cannot go on."""


__all__ = [
    "DataError",
    "DefinitionError",
    "DefinitionErrors",
    "FeatureStoreError",
    "OfflineStoreConflictError",
    "OfflineStoreError",
    "OnlineStoreError",
    "OnlineStoreUnavailable",
    "RegistryConflictError",
    "RegistryError",
    "RegistryUnavailable",
    "RequestError",
    "StoreError",
    "StreamError",
    "UnknownFeatureError",
    "UnknownServiceError",
    "VersionNotFoundError",
]
