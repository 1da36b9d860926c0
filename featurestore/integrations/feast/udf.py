"""Carry a Feast on-demand transformation over as a featurestore Python transform.

Feast runs a ``pandas`` mode function on a pandas DataFrame of the inputs and a
``python`` mode function on a dict of lists; our on-demand views run a function on a
Polars DataFrame with one column per input feature and request field (the same
column names). So the original function is kept verbatim, nested in a wrapper that
converts in and out. The whole wrapper is one top-level function: the registry
hashes its source, so an edit to the carried code is a change ``featurestore plan``
sees.

A function is carried only when every name it reads is its own, a builtin, ``pd``
or ``np``: anything else lived in the Feast repo's module and is not here.
"""

from __future__ import annotations

import ast
import builtins
import textwrap
from typing import Any

RESERVED = frozenset({"pd", "pl", "np", "timedelta"})
_MODES = ("pandas", "python")


def function_source(udf_string: str) -> tuple[ast.FunctionDef, str] | None:
    """The first function in ``udf_string`` without its decorators, and its text."""
    try:
        tree = ast.parse(textwrap.dedent(udf_string))
    except SyntaxError:
        return None
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef)), None)
    if fn is None or fn.end_lineno is None:
        return None
    lines = textwrap.dedent(udf_string).splitlines()
    return fn, "\n".join(lines[fn.lineno - 1 : fn.end_lineno])


def _annotations(fn: ast.FunctionDef) -> set[int]:
    """The ids of every node inside a type annotation of ``fn`` (its arguments, its
    return, annotated assignments): the file we write never evaluates them."""
    roots: list[ast.AST] = [fn.returns] if fn.returns else []
    for node in ast.walk(fn):
        if isinstance(node, ast.arg | ast.AnnAssign) and node.annotation is not None:
            roots.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node is not fn:
            roots.extend([node.returns] if node.returns else [])
    return {id(n) for root in roots for n in ast.walk(root)}


def free_names(fn: ast.FunctionDef) -> set[str]:
    """Names read by ``fn`` (not its decorators, not its type annotations) that it
    neither binds nor gets from builtins.

    Annotations are left out because the generated ``features.py`` starts with
    ``from __future__ import annotations``: a Feast python-mode function annotated
    ``dict[str, Any]`` runs there without ``typing`` in scope."""
    bound = {a.arg for a in [*fn.args.args, *fn.args.kwonlyargs, *fn.args.posonlyargs]}
    loads: set[str] = set()
    skip = _annotations(fn)
    parts: list[ast.AST] = [*fn.body, fn.args]
    for node in (n for part in parts for n in ast.walk(part) if id(n) not in skip):
        if isinstance(node, ast.Name):
            (loads if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.FunctionDef):
            bound.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
    return loads - bound - set(dir(builtins))


def carry_over(odfv: Any) -> tuple[str, str] | None:
    """``(wrapper name, wrapper source)`` for a Feast on-demand view, or None when its
    transformation cannot be carried over as it is."""
    mode = str(getattr(odfv, "mode", ""))
    udf_string = getattr(getattr(odfv, "feature_transformation", None), "udf_string", None)
    if mode not in _MODES or not udf_string:
        return None
    found = function_source(udf_string)
    if found is None:
        return None
    fn, text = found
    free = free_names(fn)
    if free - {"pd", "np"}:
        return None
    wrapper = f"{odfv.name}_transform"
    inner = textwrap.indent(text, "    ")
    imports = "    import numpy as np\n\n" if "np" in free else ""
    if mode == "pandas":
        call = f"pl.from_pandas({fn.name}(df.to_pandas()))"
        what = "pandas"
    else:
        call = f"pl.DataFrame({fn.name}(df.to_dict(as_series=False)))"
        what = "dict of lists"
    source = (
        f"def {wrapper}(df: pl.DataFrame) -> pl.DataFrame:\n"
        f'    """Feast\'s {mode} transformation of {odfv.name}, run on a {what} copy."""\n'
        f"{imports}\n"
        f"{inner}\n\n"
        f"    return {call}\n"
    )
    return wrapper, source
