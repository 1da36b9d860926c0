"""Who may read what, and the record of it: the policy applied to feature
references, for the Python API, training datasets and the CLI (the server applies
the same check per cached lookup plan, ``server/governance.py``).

``feature_classes`` gives each reference its class from the plan; ``AccessGate``
checks a principal against the policy (none configured: everything allowed) and
queues an access-log row for every read that includes a ``pii`` or ``sensitive``
feature.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from featurestore._classification import LOGGED
from featurestore.compile.classification import classes_of, default_of
from featurestore.compile.views import FeatureRef, PlanIndex

if TYPE_CHECKING:
    from featurestore._policy import Policy
    from featurestore.api.access_log import AccessLogger

Classes = tuple[tuple[str, str], ...]  # ("view:feature", class) per reference


def feature_classes(index: PlanIndex, refs: Iterable[FeatureRef]) -> Classes:
    """The class of each reference, from the compiled plan (a plan compiled before
    classes existed: the default, ``internal``)."""
    out = []
    for ref in refs:
        obj = index.on_demand.get(ref.view)
        spec = obj.spec if obj is not None else index.view(ref.view).spec
        out.append((str(ref), classes_of(spec).get(ref.feature, default_of(spec))))
    return tuple(out)


def logged(classes: Classes) -> Classes:
    """The references whose reads go to the access log."""
    return tuple(pair for pair in classes if pair[1] in LOGGED)


class AccessGate:
    """The policy (or none) and the access logger (or none) of one store."""

    def __init__(self, policy: Policy | None, logger: AccessLogger | None = None) -> None:
        self.policy = policy
        self.logger = logger

    def check(
        self,
        principal: str | None,
        action: str,
        index: PlanIndex,
        *,
        features: Sequence[str] | None,
        feature_service: str | None,
    ) -> Classes:
        """Raise ``AccessDenied`` unless ``principal`` may do ``action`` over these
        features; their classes otherwise."""
        refs = index.resolve(list(features) if features is not None else None, feature_service)
        classes = feature_classes(index, refs)
        if self.policy is not None:
            self.policy.check(principal, action, classes, service=feature_service)
        return classes

    def record(
        self,
        principal: str | None,
        action: str,
        classes: Classes,
        *,
        entities: int,
        origin: str,
        registry_version: int,
        request_id: str | None = None,
    ) -> None:
        sensitive = logged(classes)
        if sensitive and self.logger is not None:
            self.logger.record(
                principal=principal,
                action=action,
                features=sensitive,
                entities=entities,
                origin=origin,
                request_id=request_id,
                registry_version=registry_version,
            )
