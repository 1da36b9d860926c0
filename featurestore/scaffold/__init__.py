"""``featurestore init``: a runnable example repo with generated sample data."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

from featurestore.errors import DefinitionError

TEMPLATE = Path(__file__).parent / "quickstart"


def init_repo(
    target: str | Path,
    *,
    project: str | None = None,
    force: bool = False,
    data_end: datetime | None = None,
    warm: bool = True,
) -> Path:
    """Create a feature repo at ``target`` from the quickstart template, with a week of
    hourly sample data ending at ``data_end`` (default: the current hour).

    ``warm`` compiles the Numba kernels into the on-disk cache now (see
    ``featurestore.engines.warm``; ``FEATURESTORE_NO_WARM=1`` skips it), so that the
    first training call or materialization does not wait for the compiler."""
    from featurestore.scaffold.sample_data import write_sample_data

    root = Path(target).resolve()
    if root.exists() and any(root.iterdir()) and not force:
        raise DefinitionError(
            "directory exists and is not empty",
            obj=str(root),
            hint="choose a new directory or pass --force",
        )
    root.mkdir(parents=True, exist_ok=True)
    for item in TEMPLATE.iterdir():
        if item.name == "__pycache__":
            continue
        shutil.copy(item, root / item.name)
    name = project or root.name.replace("-", "_")
    toml = root / "featurestore.toml"
    toml.write_text(toml.read_text().replace('name = "quickstart"', f'name = "{name}"'))
    write_sample_data(root, end=data_end)
    (root / ".gitignore").write_text(".featurestore/\n__pycache__/\n")
    if warm:
        from featurestore.engines.warm import warm_kernels

        warm_kernels()
    return root
