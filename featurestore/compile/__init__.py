"""Discover definitions, validate them, and compile them into a ``RepoPlan``."""

from featurestore.compile.compiler import CompileResult, compile_definitions, compile_repo
from featurestore.compile.plan import KINDS, ObjectPlan, RepoPlan, canonical_json, content_hash
from featurestore.compile.views import FeatureRef, FeatureViewPlan, PlanIndex

__all__ = [
    "KINDS",
    "CompileResult",
    "FeatureRef",
    "FeatureViewPlan",
    "ObjectPlan",
    "PlanIndex",
    "RepoPlan",
    "canonical_json",
    "compile_definitions",
    "compile_repo",
    "content_hash",
]
