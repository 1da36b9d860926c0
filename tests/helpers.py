"""Small helpers shared by tests (not fixtures)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from featurestore.scaffold import init_repo


def write_repo(root: Path, files: dict[str, str], *, project: str = "t") -> Path:
    """A feature repo with the given Python files (dedented) and a config."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "featurestore.toml").write_text(f'[project]\nname = "{project}"\n')
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def quickstart(root: Path, *, project: str = "quickstart") -> Path:
    return init_repo(root, project=project)
