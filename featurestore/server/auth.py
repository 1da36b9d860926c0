"""Bearer-token auth for the lookup routes, and per-service key restrictions.

With no API keys configured the server is open. With keys, every ``/v1/`` request
needs ``Authorization: Bearer <key>``; ``/health``, ``/ready``, ``/metrics`` and the
docs stay open so that probes and scrapers need no secret.

A feature service listed in ``service_keys`` may only be requested by the keys
listed for it. This restricts the *service name*: a key may still list the same
features one by one, so use it to keep a model's contract private, not to hide data.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence

from featurestore.errors import DefinitionError
from featurestore.server.errors import Forbidden, Unauthorized


class Authenticator:
    """Checks a raw ``Authorization`` header value against the configured keys."""

    def __init__(
        self, api_keys: Sequence[str], service_keys: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        self.keys = tuple(k.encode() for k in api_keys)
        known = set(api_keys)
        self.service_keys: dict[str, tuple[bytes, ...]] = {}
        for service, keys in (service_keys or {}).items():
            unknown = [k for k in keys if k not in known]
            if unknown or not keys:
                raise DefinitionError(
                    "service keys must be a non-empty subset of the API keys",
                    obj=f"feature service {service!r}",
                    field="server.service_keys",
                    value=f"{len(unknown)} key(s) not in server.api_keys" if unknown else [],
                    hint="add the keys to server.api_keys (or FEATURESTORE_API_KEYS) too",
                )
            self.service_keys[service] = tuple(k.encode() for k in keys)

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def check(self, header: bytes | None) -> bytes | None:
        """The key the request presents, once it is known to be valid.

        Raises ``Unauthorized`` when it is missing or wrong. Returns None when auth
        is off.
        """
        if not self.keys:
            return None
        if header is None:
            raise Unauthorized(
                "an API key is required",
                hint="send the header 'Authorization: Bearer <key>'",
            )
        scheme, _, token = header.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            raise Unauthorized(
                "the Authorization header is not a bearer token",
                hint="send the header 'Authorization: Bearer <key>'",
            )
        if not _any_equal(token, self.keys):
            raise Unauthorized(
                "the API key is not valid", hint="use one of the keys in server.api_keys"
            )
        return token

    def check_service(self, key: bytes | None, service: str | None) -> None:
        """Raise ``Forbidden`` when ``service`` is restricted and ``key`` is not allowed."""
        if service is None or key is None:
            return
        allowed = self.service_keys.get(service)
        if allowed is not None and not _any_equal(key, allowed):
            raise Forbidden(
                "this API key may not use this feature service",
                field="feature_service",
                value=service,
                hint="ask for a key listed under server.service_keys for this service",
            )


def _any_equal(token: bytes, keys: Sequence[bytes]) -> bool:
    # compare with every key, without stopping at the first match, so that the
    # time taken does not tell which key (or how much of one) matched
    found = False
    for key in keys:
        found |= hmac.compare_digest(token, key)
    return found
