"""Polars expressions in plans: serialise, restore, and check against a schema."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl


def expr_to_spec(expr: Any) -> dict[str, Any]:
    """``{"repr": readable text, "json": Polars' JSON form}`` for a ``pl.Expr``."""
    return {"repr": str(expr), "json": json.loads(expr.meta.serialize(format="json"))}


def expr_from_spec(spec: Mapping[str, Any]) -> pl.Expr:
    import polars as pl

    return pl.Expr.deserialize(io.StringIO(json.dumps(spec["json"])), format="json")


def output_schema(
    input_schema: Mapping[str, Any], exprs: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Apply ``{name: expr}`` to an empty frame of ``input_schema`` (Polars dtypes).

    Returns (the resulting schema, {name: error text} for expressions that fail).
    Each expression is checked on its own so every bad one is reported.
    """
    import polars as pl

    errors: dict[str, str] = {}
    schema = dict(input_schema)
    for name, expr in exprs.items():
        try:
            out = pl.LazyFrame(schema=schema).with_columns(expr.alias(name)).collect_schema()
            schema[name] = out[name]
        except Exception as exc:  # Polars raises several error types; all mean "invalid"
            errors[name] = str(exc).strip().splitlines()[0]
    return schema, errors
