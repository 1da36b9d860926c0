"""``featurestore check``: governance rules over the compiled plan, for CI.

Rules (each finding names the object, what is wrong and the fix):

- ``pii-owner``: a view (or on-demand view) with a ``pii`` feature has an owner;
- ``source-root``: every batch source path lies under one of the allowed roots,
  when any are given (``allowed_source_roots``);
- ``pii-service-grant``: with a ``[policy]``, every feature service holding a
  ``pii`` feature is readable (``online`` or ``training``) by at least one
  principal; a service no one may read is a dead grant or a missing one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from featurestore._policy import AccessDenied
from featurestore.api.access import feature_classes
from featurestore.compile.views import PlanIndex

if TYPE_CHECKING:
    from featurestore._policy import Policy
    from featurestore.compile.plan import RepoPlan


@dataclass(frozen=True)
class Finding:
    rule: str
    obj: str
    message: str
    hint: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.obj}: {self.message} (fix: {self.hint})"


def _pii_features(index: PlanIndex, name: str, features: Sequence[str]) -> list[str]:
    from featurestore.compile.views import FeatureRef

    refs = [FeatureRef(name, f) for f in features]
    return [ref for ref, cls in feature_classes(index, refs) if cls == "pii"]


def _owner_findings(index: PlanIndex) -> list[Finding]:
    out = []
    objects = [(v.name, v.spec, v.features) for v in index.views.values()]
    for odfv in index.on_demand.values():
        spec = odfv.spec
        outputs = [o["name"] for o in spec.get("outputs", [])]
        objects.append((odfv.name, spec, tuple(outputs)))
    for name, spec, features in sorted(objects, key=lambda o: o[0]):
        pii = _pii_features(index, name, features)
        if pii and not (spec.get("metadata") or {}).get("owner"):
            out.append(
                Finding(
                    "pii-owner",
                    f"view {name!r}",
                    f"has pii features ({', '.join(pii)}) and no owner",
                    f'set owner="team@example.com" on {name}',
                )
            )
    return out


def _under(path: str, root: str) -> bool:
    if "://" in root or "://" in path:
        return path == root or path.startswith(root.rstrip("/") + "/")
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def _source_findings(index: PlanIndex, repo: Path, roots: Sequence[str]) -> list[Finding]:
    if not roots:
        return []
    resolved = [r if "://" in r or os.path.isabs(r) else str(repo / r) for r in roots]
    out = []
    for view in sorted(index.views.values(), key=lambda v: v.name):
        if view.source.batch.get("path") is None:
            continue
        path = view.source.resolved_path(repo)
        if not any(_under(path, root) for root in resolved):
            out.append(
                Finding(
                    "source-root",
                    f"view {view.name!r}",
                    f"reads {path!r}, outside the allowed source roots",
                    f"move the source under one of {list(roots)} or add its root "
                    "to allowed_source_roots",
                )
            )
    return out


def _service_findings(index: PlanIndex, policy: Policy | None) -> list[Finding]:
    if policy is None:
        return []
    out = []
    for name in sorted(index.services):
        refs = index.resolve(None, name)
        classes = feature_classes(index, refs)
        pii = [ref for ref, cls in classes if cls == "pii"]
        if not pii:
            continue
        readers = []
        for principal in sorted(policy.principals):
            for action in ("online", "training"):
                try:
                    policy.check(principal, action, classes, service=name)
                except AccessDenied:
                    continue
                readers.append(principal)
                break
        if not readers:
            out.append(
                Finding(
                    "pii-service-grant",
                    f"feature service {name!r}",
                    f"holds pii features ({', '.join(pii)}) that no principal may read",
                    "grant class 'pii', its views and this service to the principal that "
                    "serves it, or remove the service",
                )
            )
    return out


def check_plan(
    plan: RepoPlan,
    *,
    repo: Path,
    policy: Policy | None,
    allowed_source_roots: Sequence[str] = (),
) -> list[Finding]:
    """Every finding of every rule; empty when the plan passes."""
    index = PlanIndex(plan)
    return [
        *_owner_findings(index),
        *_source_findings(index, repo, allowed_source_roots),
        *_service_findings(index, policy),
    ]


def allowed_roots(policy: Policy | None) -> list[str]:
    """``[policy] allowed_source_roots`` when the policy section declares it."""
    if policy is None:
        return []
    return list(getattr(policy.config, "allowed_source_roots", None) or [])
