"""Access policy as code: the ``[policy]`` section of featurestore.toml.

::

    [policy]
    approvers = ["alice", "bob"]        # who may approve high-impact applies
    anonymous = "public_reader"         # principal of a call that names none (optional)

    [policy.principals.ranking_service]
    api_keys = ["k-rank"]               # server keys that act as this principal
    actions = ["online"]                # online | training | push | registry
    classes = ["public", "internal", "sensitive"]
    views = ["*"]                       # view names, "*" for all
    services = ["driver_ranking"]       # feature services it may name, "*" for all

A read of feature ``view:f`` of class ``c`` by principal ``P`` for action ``A`` is
allowed when ``A``, ``c`` and ``view`` (and the service, when one is named) are
all granted to ``P``. No ``[policy]`` section: everything is allowed, as before.
A leaf: the server, the Python API and the CLI all ask :meth:`Policy.check`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from featurestore._classification import Classification
from featurestore.errors import DefinitionError, RequestError

Action = Literal["online", "training", "push", "registry"]
ACTIONS: tuple[str, ...] = get_args(Action)
ANY = "*"


class AccessDenied(RequestError):
    """A principal lacks a grant; ``grant`` names the missing one (the server
    answers 403)."""

    def __init__(self, message: str, *, principal: str | None, feature: str, grant: str) -> None:
        self.principal = principal
        self.feature = feature
        self.grant = grant
        super().__init__(
            message,
            obj=f"principal {principal!r}" if principal else "an unnamed caller",
            field=feature,
            value=grant,
            hint=f"grant {grant} to this principal in [policy] of featurestore.toml, "
            "or use a principal that has it",
        )


class Grant(BaseModel):
    """What one principal may do."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_keys: list[str] = Field(
        default_factory=list, description="Server API keys that act as this principal."
    )
    actions: list[Action] = Field(
        default_factory=lambda: list[Action](["online", "training"]),
        description="online reads, training datasets, push, registry changes.",
    )
    classes: list[Classification] = Field(
        default_factory=lambda: list[Classification](["public", "internal"]),
        description="Feature classes it may read.",
    )
    views: list[str] = Field(default_factory=lambda: [ANY], description="Views, or '*'.")
    services: list[str] = Field(
        default_factory=lambda: [ANY], description="Feature services it may name, or '*'."
    )


class PolicyConfig(BaseModel):
    """The ``[policy]`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    principals: dict[str, Grant] = Field(default_factory=dict)
    approvers: list[str] = Field(
        default_factory=list, description="Names accepted by `apply --approved-by`."
    )
    anonymous: str | None = Field(
        default=None, description="Principal of a call that presents no key or name."
    )
    allowed_source_roots: list[str] = Field(
        default_factory=list,
        description="Path or URI prefixes batch sources must live under (`featurestore check`).",
    )
    offline_retention: dict[str, str] = Field(
        default_factory=dict,
        description="View -> how long its offline rows are kept (`featurestore retention apply`).",
    )


class Policy:
    """A checked policy; ``check`` raises ``AccessDenied`` naming the feature and
    the missing grant."""

    def __init__(self, config: PolicyConfig) -> None:
        self.config = config
        self.principals = dict(config.principals)
        self.approvers = tuple(config.approvers)
        self.anonymous = config.anonymous
        self.by_key: dict[str, str] = {}
        for name, grant in self.principals.items():
            for key in grant.api_keys:
                if key in self.by_key:
                    raise DefinitionError(
                        "an API key belongs to two principals",
                        obj=f"[policy.principals.{name}]",
                        field="api_keys",
                        value=f"also {self.by_key[key]!r}",
                        hint="give each principal its own keys",
                    )
                self.by_key[key] = name
        if self.anonymous is not None and self.anonymous not in self.principals:
            raise DefinitionError(
                "names no principal",
                obj="[policy]",
                field="anonymous",
                value=self.anonymous,
                hint=f"principals: {', '.join(sorted(self.principals)) or '(none)'}",
            )

    def principal_of_key(self, key: str | None) -> str | None:
        """The principal an API key acts as (``anonymous`` without a key)."""
        return self.anonymous if key is None else self.by_key.get(key)

    def check(
        self,
        principal: str | None,
        action: str,
        features: Iterable[tuple[str, str]],
        *,
        service: str | None = None,
    ) -> None:
        """Allow ``action`` over ``features`` (``("view:feature", class)`` pairs)."""
        name = principal if principal is not None else self.anonymous
        grant = self.principals.get(name) if name is not None else None
        items = list(features)
        shown = items[0][0] if items else (service or "(no feature)")
        if grant is None:
            raise AccessDenied(
                "is not a principal of the policy"
                if name is not None
                else "names no principal, and [policy] has no anonymous principal",
                principal=name,
                feature=shown,
                grant="a principal (principal= in Python, an API key listed under "
                "[policy.principals.NAME] over HTTP)",
            )
        if action not in grant.actions:
            raise AccessDenied(
                f"may not {action}", principal=name, feature=shown, grant=f"action {action!r}"
            )
        if service is not None and ANY not in grant.services and service not in grant.services:
            raise AccessDenied(
                "may not use this feature service",
                principal=name,
                feature=service,
                grant=f"service {service!r}",
            )
        for ref, cls in items:
            view = ref.split(":")[0]
            if ANY not in grant.views and view not in grant.views:
                raise AccessDenied(
                    f"may not read view {view!r}",
                    principal=name,
                    feature=ref,
                    grant=f"view {view!r}",
                )
            if cls not in grant.classes:
                raise AccessDenied(
                    f"may not read {cls} features",
                    principal=name,
                    feature=ref,
                    grant=f"class {cls!r}",
                )

    def check_approver(self, name: str | None, *, reasons: Sequence[str]) -> None:
        """Raise unless ``name`` is one of the approvers (``reasons``: what needs it)."""
        if name is not None and name in self.approvers:
            return
        raise AccessDenied(
            "this apply changes what needs an approval: " + "; ".join(reasons)
            if name is None
            else f"{name!r} is not an approver",
            principal=name,
            feature="apply",
            grant="an approver (apply --approved-by NAME, NAME in [policy] approvers)",
        )
