"""The versioned registry: plans in SQL, with diff, history and rollback."""

from featurestore.registry.diff import FieldChange, ObjectChange, PlanDiff, diff_plans
from featurestore.registry.sql import ApplyResult, Registry, Snapshot, VersionInfo

__all__ = [
    "ApplyResult",
    "FieldChange",
    "ObjectChange",
    "PlanDiff",
    "Registry",
    "Snapshot",
    "VersionInfo",
    "diff_plans",
]
