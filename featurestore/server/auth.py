"""Bearer-token auth for the lookup routes, per-service key restrictions, and who
may push (``PushPermissions``).

With no API keys configured the server is open. With keys, every ``/v1/`` request
needs ``Authorization: Bearer <key>``; ``/health``, ``/ready``, ``/metrics`` and the
docs stay open so that probes and scrapers need no secret.

A feature service listed in ``service_keys`` may only be requested by the keys
listed for it. This restricts the *service name*: a key may still list the same
features one by one, so use it to keep a model's contract private, not to hide data.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

from featurestore._policy import AccessDenied, Policy
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


class PushPermissions:
    """Who may write through ``POST /v1/push``.

    With no API keys the server is open, for pushes as for lookups. With keys, only
    the keys in ``push_keys`` may push (an ordinary API key reads only), and a view
    listed in ``view_keys`` only takes pushes from the keys listed for it.
    """

    def __init__(
        self,
        api_keys: Sequence[str],
        push_keys: Sequence[str],
        view_keys: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        known = set(api_keys)
        unknown = [k for k in push_keys if k not in known]
        if unknown:
            raise DefinitionError(
                "push keys must be API keys too",
                obj="server config",
                field="server.push_keys",
                value=f"{len(unknown)} key(s) not in server.api_keys",
                hint="add the keys to server.api_keys (or FEATURESTORE_API_KEYS) too",
            )
        self.keys = tuple(k.encode() for k in push_keys)
        self.view_keys: dict[str, tuple[bytes, ...]] = {}
        for view, keys in (view_keys or {}).items():
            stray = [k for k in keys if k not in set(push_keys)]
            if stray or not keys:
                raise DefinitionError(
                    "a view's push keys must be a non-empty subset of the push keys",
                    obj=f"feature view {view!r}",
                    field="server.push_view_keys",
                    value=f"{len(stray)} key(s) not in server.push_keys" if stray else [],
                    hint="add the keys to server.push_keys too",
                )
            self.view_keys[view] = tuple(k.encode() for k in keys)

    def check(self, key: bytes | None, view: str) -> None:
        """Raise ``Forbidden`` unless ``key`` (None: auth is off) may push to ``view``."""
        if key is None:
            return
        if not _any_equal(key, self.keys):
            raise Forbidden(
                "this API key may not push",
                field="Authorization",
                value="(key not shown)",
                hint="push with a key listed in server.push_keys",
            )
        allowed = self.view_keys.get(view)
        if allowed is not None and not _any_equal(key, allowed):
            raise Forbidden(
                "this API key may not push to this feature view",
                field="view",
                value=view,
                hint="ask for a key listed under server.push_view_keys for this view",
            )


def forbidden(exc: AccessDenied) -> Forbidden:
    """The policy's refusal as a 403 naming the feature and the missing grant."""
    return Forbidden(
        f"{exc.obj}: {exc.message}", field=exc.feature, value=exc.grant, hint=exc.hint or ""
    )


def principal_of(policy: Policy | None, key: bytes | None) -> str | None:
    """Who a request is: the policy's principal of its key; with no policy, a short
    digest of the key (the access log never holds a key)."""
    if policy is not None:
        if key is None:
            return policy.anonymous
        return policy.principal_of_key(key.decode()) or "(key of no principal)"
    if key is None:
        return None
    return "key:" + hashlib.sha256(key).hexdigest()[:8]
