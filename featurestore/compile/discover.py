"""Find the definitions in a feature repo: every module-level definition object in
the repo's Python files, remembered with the file it came from."""

from __future__ import annotations

import importlib.util
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featurestore.definitions import DEFINITION_TYPES
from featurestore.errors import DefinitionError

SKIP_DIRS = {".featurestore", ".venv", "venv", "__pycache__", ".git", "data", "tests"}


@dataclass(frozen=True)
class Found:
    """A definition and where it was defined (path relative to the repo)."""

    obj: Any
    file: str


def python_files(repo: Path) -> list[Path]:
    out = []
    for path in sorted(repo.rglob("*.py")):
        rel = path.relative_to(repo)
        if any(part in SKIP_DIRS or part.startswith(".") for part in rel.parts[:-1]):
            continue
        if rel.name.startswith(("_", "test_")) or rel.name == "conftest.py":
            continue
        out.append(path)
    return out


def _import_problem(exc: BaseException, *, path: Path, rel: str) -> DefinitionError:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
    line = f":{frames[-1].lineno}" if frames else ""
    if isinstance(exc, SystemExit):
        return DefinitionError(
            f"called sys.exit({exc.code!r}) while being imported",
            file=f"{rel}{line}",
            hint="definition files are imported, not run: move script code under "
            '`if __name__ == "__main__":`',
        )
    return DefinitionError(
        f"failed to import: {type(exc).__name__}: {exc}",
        file=f"{rel}{line}",
        hint="fix the Python error in this file",
    )


def discover(repo: Path) -> tuple[list[Found], list[DefinitionError]]:
    """Import each Python file of ``repo`` and collect its definitions.

    A file that fails to import is reported as a problem naming the file and the
    line, and the other files are still read, so the user sees everything at once.
    """
    found: list[Found] = []
    problems: list[DefinitionError] = []
    repo = repo.resolve()
    seen_ids: set[int] = set()
    files = python_files(repo)
    # Files are imported under their natural module names, so that
    # `from entities import driver` in one file shares the object of entities.py.
    # Stale modules of the same names (another repo, an earlier compile) go first.
    names = {str(p.relative_to(repo))[:-3].replace("/", "."): p for p in files}
    for name in list(sys.modules):
        if name in names or name.split(".")[0] in names:
            del sys.modules[name]
    sys.path.insert(0, str(repo))
    try:
        for module_name, path in names.items():
            rel = str(path.relative_to(repo))
            try:
                module = importlib.import_module(module_name)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # user code: report it, read the other files
                # SystemExit too: a definitions file that calls sys.exit() would
                # otherwise end `apply` with its exit code and nothing applied.
                problems.append(_import_problem(exc, path=path, rel=rel))
                continue
            for value in vars(module).values():
                # A definition imported from another repo file counts once, where it
                # was first seen; files are read in sorted order so this is stable.
                if isinstance(value, DEFINITION_TYPES) and id(value) not in seen_ids:
                    seen_ids.add(id(value))
                    found.append(Found(value, rel))
    finally:
        sys.path.remove(str(repo))
    return found, problems
