"""Imports point down only, and no two modules import each other (ARCHITECTURE.md
"Layers"; STYLE.md "Where our code drifted").

Every module of ``featurestore/`` is parsed with ``ast``; every import counts:
module level, inside functions, and under ``if TYPE_CHECKING`` (a reader follows
those too). Relative imports are resolved. ``import featurestore`` staying light
(no numba, redis, confluent_kafka, fastapi) is pinned in ``test_package.py``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import featurestore

PKG = Path(featurestore.__file__).parent
ROOT = "featurestore"

# ARCHITECTURE.md "Layers (imports point down only)", top first. A module may import
# its own row and the rows below it. ``scaffold`` (the quickstart template and its
# sample data) is used by ``featurestore init`` only, so it sits with the CLI.
LAYERS: list[tuple[str, ...]] = [
    ("cli", "__main__", "scaffold", "integrations"),
    ("server", "audit", "ui"),
    ("api",),
    ("materialize",),
    ("engines",),
    ("stores",),
    ("registry",),
    ("compile",),
    ("definitions",),
    ("errors", "config", "_typing"),  # leaves; so is every private ``featurestore/_x.py``
]
RANK = {name: i for i, row in enumerate(LAYERS) for name in row}
LEAVES = len(LAYERS) - 1
# ``import featurestore`` (the facade) re-exports definitions and loads
# ``api.store`` lazily: it ranks with api, so nothing below api may import it.
FACADE_RANK = RANK["api"]

# Cycles allowed for now, each a named pair or ring in a package owned by others, to
# be untangled there. An entry must still be a cycle (a stale one fails), so the fix
# removes it. Empty: the last one (materialize/aggregates.py <-> materialize/online.py)
# was untangled by moving ``MaterializeReport`` into ``materialize/report.py``.
KNOWN_CYCLES: set[frozenset[str]] = set()


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} (line {self.line})"


def modules(pkg: Path = PKG) -> dict[str, Path]:
    """Dotted name -> file, for every module and package of ``pkg``."""
    out = {}
    for path in sorted(pkg.rglob("*.py")):
        parts = [ROOT, *path.relative_to(pkg).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(name: str, source: str, *, is_package: bool, known: Iterable[str]) -> list[Edge]:
    """The featurestore modules ``source`` (module ``name``) imports, anywhere in it.
    ``from a.b import c`` targets ``a.b.c`` when that is a module, else ``a.b``."""
    known = set(known)

    def nearest(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    edges = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base = name.split(".")[: None if is_package else -1]
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            targets = [
                f"{module}.{a.name}" if f"{module}.{a.name}" in known else module
                for a in node.names
            ]
        for target in targets:
            found = nearest(target)
            if found is not None and found != name:
                edges.append(Edge(name, found, node.lineno))
    return edges


def import_graph() -> list[Edge]:
    mods = modules()
    return [
        edge
        for name, path in mods.items()
        for edge in imports_of(
            name, path.read_text(), is_package=path.name == "__init__.py", known=mods
        )
    ]


def rank(module: str) -> int | None:
    """The module's row in LAYERS (None: no row)."""
    parts = module.split(".")
    if len(parts) == 1:
        return FACADE_RANK
    top = parts[1]
    if top in RANK:
        return RANK[top]
    if top.startswith("_") and len(parts) == 2 and (PKG / f"{top}.py").is_file():
        return LEAVES
    return None


def cycles(edges: Iterable[Edge]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
        graph.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _describe(component: frozenset[str], edges: list[Edge]) -> str:
    inside = [str(e) for e in edges if e.source in component and e.target in component]
    return "cycle among " + ", ".join(sorted(component)) + ":\n    " + "\n    ".join(inside)


def test_every_module_has_a_layer() -> None:
    missing = sorted(m for m in modules() if rank(m) is None)
    assert not missing, f"add these packages to LAYERS (and ARCHITECTURE.md): {missing}"


def test_imports_point_down_only() -> None:
    up = []
    for edge in import_graph():
        src, dst = rank(edge.source), rank(edge.target)
        if src is not None and dst is not None and dst < src:
            up.append(f"{edge}: row {LAYERS[dst]} is above row {LAYERS[src]}")
    assert not up, "imports pointing up:\n" + "\n".join(up)


def test_no_import_cycles() -> None:
    edges = import_graph()
    found = cycles(edges)
    new = [_describe(c, edges) for c in found if c not in KNOWN_CYCLES]
    assert not new, "import cycles (a folder should read top-down):\n" + "\n".join(new)
    stale = [sorted(c) for c in KNOWN_CYCLES if c not in found]
    assert not stale, f"fixed cycles still allowed in KNOWN_CYCLES, remove them: {stale}"


def test_the_checks_see_every_kind_of_import() -> None:
    known = {
        "featurestore",
        "featurestore.api",
        "featurestore.api.store",
        "featurestore.engines",
        "featurestore.engines.aggregate",
        "featurestore.engines.aggregate.spec",
        "featurestore.engines.aggregate.state",
        "featurestore.errors",
    }
    source = """
from typing import TYPE_CHECKING
import numpy
from . import spec
from .state import States
from .. import aggregate
from ...errors import DataError
if TYPE_CHECKING:
    from featurestore.api.store import FeatureStore
def f():
    import featurestore.api.store as s
    from featurestore import errors
"""
    edges = imports_of(
        "featurestore.engines.aggregate.kernels", source, is_package=False, known=known
    )
    assert [(e.target, e.line) for e in edges] == [
        ("featurestore.engines.aggregate.spec", 4),
        ("featurestore.engines.aggregate.state", 5),
        ("featurestore.engines.aggregate", 6),
        ("featurestore.errors", 7),
        ("featurestore.api.store", 9),
        ("featurestore.api.store", 11),
        ("featurestore.errors", 12),
    ]
    # In a package's __init__, "." is the package itself.
    init = imports_of(
        "featurestore.engines.aggregate",
        "from .spec import WindowSpec\n",
        is_package=True,
        known=known,
    )
    assert [e.target for e in init] == ["featurestore.engines.aggregate.spec"]
    assert rank("featurestore.api.store") == RANK["api"]
    assert rank("featurestore.errors") == rank("featurestore._dtypes") == LEAVES
    assert rank("featurestore.nowhere") is None
    assert rank("featurestore") == FACADE_RANK


def test_cycle_finder_reports_each_component_once() -> None:
    edges = [
        Edge("a", "b", 1),
        Edge("b", "c", 1),
        Edge("c", "a", 1),
        Edge("c", "d", 1),
        Edge("d", "e", 1),
        Edge("e", "d", 1),
        Edge("e", "f", 1),
    ]
    assert sorted(map(sorted, cycles(edges))) == [["a", "b", "c"], ["d", "e"]]
    assert cycles([Edge("a", "b", 1), Edge("b", "c", 1)]) == []


def _map_rows(docstring: str) -> list[str]:
    """The first column of the rST table in a package docstring."""
    lines = docstring.splitlines()
    rules = [i for i, ln in enumerate(lines) if ln.startswith("====")]
    body = lines[rules[0] + 1 : rules[1]]
    return [ln.split()[0] for ln in body if ln and not ln[0].isspace()]


def test_aggregate_map_is_whole_and_top_down() -> None:
    """``engines/aggregate/__init__.py`` names every module of the folder, each
    importing only modules named below it (STYLE.md: keep such maps whole)."""
    folder = PKG / "engines" / "aggregate"
    package = "featurestore.engines.aggregate"
    doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or ""
    rows = _map_rows(doc)
    on_disk = sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")
    assert sorted(rows) == on_disk, "the map in engines/aggregate/__init__.py is not whole"
    below: Mapping[str, set[str]] = {
        name: {f"{package}.{r}" for r in rows[i + 1 :]} for i, name in enumerate(rows)
    }
    wrong = [
        f"{edge} (listed above it in the map)"
        for edge in import_graph()
        if edge.source.startswith(package + ".")
        and edge.target.startswith(package + ".")
        and edge.target not in below[edge.source.rsplit(".", 1)[1]]
    ]
    assert not wrong, "\n".join(wrong)
