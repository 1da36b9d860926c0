"""Small helpers shared by tests (not fixtures)."""

from __future__ import annotations

import textwrap
from datetime import datetime
from pathlib import Path

from featurestore.scaffold import init_repo
from featurestore.scaffold.sample_data import SAMPLE_END


def write_repo(root: Path, files: dict[str, str], *, project: str = "t") -> Path:
    """A feature repo with the given Python files (dedented) and a config."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "featurestore.toml").write_text(f'[project]\nname = "{project}"\n')
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def quickstart(root: Path, *, project: str = "quickstart", data_end: datetime = SAMPLE_END) -> Path:
    """The quickstart repo with sample data at fixed dates (ending at SAMPLE_END),
    unless ``data_end`` says otherwise. Kernels are not warmed here (``init`` does
    that for users; tests share one cache and compile on first use)."""
    return init_repo(root, project=project, data_end=data_end, warm=False)
