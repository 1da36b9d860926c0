"""Who sees what in the UI: the server's API keys, read-only.

With keys configured, a page needs one: the ``Authorization: Bearer <key>`` header
(scripts) or the cookie the login form sets (browsers, which cannot add a header
to a link). A feature service restricted by ``server.service_keys`` is hidden from a
key not listed for it, and so is every view and on-demand view it reads: a key that
may not use a service sees none of its features. This is stricter than the lookup
route (which lets such a key list the same features one by one), because a catalog
that shows them would tell what the restriction is meant to keep private.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from featurestore.compile.plan import ObjectPlan, RepoPlan
from featurestore.server.auth import Authenticator
from featurestore.server.errors import Forbidden

COOKIE = "featurestore_ui_key"


@dataclass(frozen=True)
class Visibility:
    """The objects one key may not see (``kind``, ``name`` pairs)."""

    hidden: frozenset[tuple[str, str]] = frozenset()

    def sees(self, kind: str, name: str) -> bool:
        return (kind, name) not in self.hidden

    @property
    def sees_everything(self) -> bool:
        return not self.hidden

    def sees_view(self, name: str) -> bool:
        return self.sees("feature_view", name) and self.sees("on_demand_feature_view", name)

    def sees_ref(self, ref: str) -> bool:
        """A ``view:feature`` reference."""
        return self.sees_view(ref.split(":")[0])

    def filter(self, objects: Iterable[ObjectPlan]) -> list[ObjectPlan]:
        return [o for o in objects if self.sees(o.kind, o.name)]


EVERYTHING = Visibility()


def visibility(auth: Authenticator | None, key: bytes | None, plan: RepoPlan) -> Visibility:
    """What ``key`` (None: auth is off) may not see in ``plan``."""
    if auth is None or key is None or not auth.service_keys:
        return EVERYTHING
    hidden: set[tuple[str, str]] = set()
    for service in plan.of_kind("feature_service"):
        try:
            auth.check_service(key, service.name)
        except Forbidden:
            hidden.add(("feature_service", service.name))
            for ref in service.spec["features"]:
                view = ref.split(":")[0]
                hidden.add(("feature_view", view))
                hidden.add(("on_demand_feature_view", view))
    return Visibility(frozenset(hidden))
