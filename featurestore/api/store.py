"""``FeatureStore``: the entry point users type. It delegates; it does not compute.

>>> store = FeatureStore("path/to/repo")          # doctest: +SKIP
>>> store.plan().diff.empty                        # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from featurestore.compile import CompileResult, PlanIndex, RepoPlan, compile_repo
from featurestore.config import Settings, load_settings
from featurestore.registry import ApplyResult, PlanDiff, Registry

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class PlanResult:
    """What ``apply`` would do: the compiled plan, its diff and any warnings."""

    plan: RepoPlan
    diff: PlanDiff
    warnings: list[str]


class FeatureStore:
    """A feature repo: its definitions, registry and stores."""

    def __init__(self, repo: str | Path = ".", *, registry_version: int | None = None) -> None:
        self.settings: Settings = load_settings(repo)
        self.repo = self.settings.repo
        self.project = self.settings.project
        self.pinned_version = registry_version

    @cached_property
    def registry(self) -> Registry:
        return Registry(
            self.settings.registry_url,
            project=self.project,
            head_cache_seconds=self.settings.config.registry.head_cache_seconds,
        )

    # -- definitions -> registry ----------------------------------------------
    def compile(self) -> CompileResult:
        return compile_repo(self.repo, project=self.project)

    def plan(self) -> PlanResult:
        """Compile the repo and diff it against the registry head."""
        result = self.compile()
        return PlanResult(result.plan, self.registry.diff(result.plan), result.warnings)

    def apply(self, *, expected_version: int | None = None, message: str = "") -> ApplyResult:
        """Compile and apply; ``expected_version`` guards against racing applies."""
        result = self.compile()
        return self.registry.apply(result.plan, expected_version=expected_version, message=message)

    def index(self, version: int | None = None) -> PlanIndex:
        """A lookup index over the registry at ``version`` (default: pinned, else head)."""
        snap = self.registry.snapshot(version if version is not None else self.pinned_version)
        return PlanIndex(snap.plan)

    def close(self) -> None:
        if "registry" in self.__dict__:
            self.registry.close()
