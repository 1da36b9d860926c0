"""The access policy and the access log on the lookup routes.

Wired in by ``create_app`` only when a policy is configured or a served feature
is ``pii`` or ``sensitive``; otherwise the lookup path is exactly as before.

The decision for a (principal, lookup plan) pair is made once and cached next to
the plan cache, so a request pays a dict lookup, not a policy walk. Plans are
cached per registry version by ``Serving``; a decision is kept only while its
plan object is the one cached (a refresh makes new plans, hence new decisions).
The handler that checks and the serving state that builds plans are reached
through the unchanged ``LookupHandler`` (and the Feast one), so the principal and
the peer address travel in context variables set for the request's call.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

from featurestore._policy import AccessDenied, Policy
from featurestore.server.auth import forbidden, principal_of

if TYPE_CHECKING:
    from featurestore.api.access import AccessGate
    from featurestore.api.online import LookupPlan
    from featurestore.server.lookup import LookupHandler, LookupRequest
    from featurestore.server.state import Serving

PRINCIPAL: contextvars.ContextVar[str | None] = contextvars.ContextVar("fs_principal")
PEER: contextvars.ContextVar[str] = contextvars.ContextVar("fs_peer", default="http")
_SERVED: contextvars.ContextVar[LookupPlan | None] = contextvars.ContextVar(
    "fs_served", default=None
)
MAX_DECISIONS = 10_000


class GovernedServing:
    """``Serving`` whose ``plan`` refuses (403) a plan the principal may not read."""

    def __init__(self, inner: Serving, policy: Policy | None) -> None:
        self._inner = inner
        self._policy = policy
        # (principal, id(plan)) -> (plan, refusal or None); the plan is kept so that
        # a recycled id can never reuse another plan's decision
        self._decisions: dict[tuple[str | None, int], tuple[Any, Exception | None]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def plan(
        self, features: tuple[str, ...] | None, service: str | None, full_names: bool
    ) -> LookupPlan:
        plan = self._inner.plan(features, service, full_names)
        if self._policy is not None:
            principal = PRINCIPAL.get(None)
            key = (principal, id(plan))
            hit = self._decisions.get(key)
            if hit is None or hit[0] is not plan:
                refusal: Exception | None = None
                try:
                    self._policy.check(principal, "online", plan.classes, service=service)
                except AccessDenied as exc:
                    refusal = forbidden(exc)
                if len(self._decisions) >= MAX_DECISIONS:
                    self._decisions.clear()
                hit = self._decisions[key] = (plan, refusal)
            if hit[1] is not None:
                raise hit[1]
        _SERVED.set(plan)
        return plan


class GovernedHandler:
    """A lookup handler that names the principal for ``GovernedServing`` and logs
    the reads of ``pii``/``sensitive`` features once they are answered."""

    def __init__(self, inner: LookupHandler, gate: AccessGate) -> None:
        self._inner = inner
        self._gate = gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __call__(
        self, body: bytes, authorization: bytes | None, request_id: str | None = None
    ) -> tuple[bytes, LookupRequest]:
        key = self._inner.auth.check(authorization)
        principal = principal_of(self._gate.policy, key)
        token = PRINCIPAL.set(principal)
        served = _SERVED.set(None)
        try:
            out, req = self._inner(body, authorization, request_id)
            plan = _SERVED.get()
        finally:
            PRINCIPAL.reset(token)
            _SERVED.reset(served)
        if plan is not None:
            self._gate.record(
                principal,
                "online",
                plan.classes,
                entities=req.size,
                origin=PEER.get(),
                registry_version=plan.registry_version,
                request_id=request_id,
            )
        return out, req
