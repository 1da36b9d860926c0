"""Read a Feast repo with the real ``feast`` package (imported here, lazily)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featurestore.errors import DefinitionError, FeatureStoreError

INSTALL_HINT = "install the extra: pip install 'featurestore[feast]' (Feast 0.60 or newer)"


@dataclass
class FeastRepo:
    """The objects of one Feast project, as Feast's own classes."""

    root: Path
    project: str
    config: Any
    entities: list[Any] = field(default_factory=list)
    data_sources: list[Any] = field(default_factory=list)
    feature_views: list[Any] = field(default_factory=list)
    on_demand_views: list[Any] = field(default_factory=list)
    stream_views: list[Any] = field(default_factory=list)
    feature_services: list[Any] = field(default_factory=list)
    others: list[Any] = field(default_factory=list)  # label views and what else Feast adds
    applied: bool = False  # read from the registry (feast apply ran) or from the code


def feast_module() -> Any:
    try:
        import feast
    except ImportError as exc:
        raise FeatureStoreError(
            "the feast package is not installed", obj="import-feast", hint=INSTALL_HINT
        ) from exc
    return feast


def load_feast_repo(path: str | Path) -> FeastRepo:
    """The Feast repo at ``path`` (the directory of ``feature_store.yaml``): from its
    registry when ``feast apply`` ran there, else from its Python files."""
    feast = feast_module()
    root = Path(path).resolve()
    if not (root / "feature_store.yaml").is_file():
        raise DefinitionError(
            "is not a Feast repo: no feature_store.yaml",
            obj=f"Feast repo {str(root)!r}",
            field="path",
            hint="give the directory that holds feature_store.yaml (`feast init` makes one)",
        )
    try:
        store = feast.FeatureStore(repo_path=str(root))
        project = store.project
        repo = FeastRepo(root=root, project=project, config=store.config)
        views = store.list_feature_views(allow_cache=False)
        odfvs = store.list_on_demand_feature_views(allow_cache=False)
        stream = store.list_stream_feature_views(allow_cache=False)
        if views or odfvs or stream:
            repo.applied = True
            repo.entities = store.list_entities(allow_cache=False)
            repo.data_sources = store.list_data_sources(allow_cache=False)
            repo.feature_views = views
            repo.on_demand_views = odfvs
            repo.stream_views = stream
            repo.feature_services = store.list_feature_services()
            names = {v.name for v in [*views, *odfvs, *stream]}
            repo.others = [
                v for v in store.list_all_feature_views(allow_cache=False) if v.name not in names
            ]
            return repo
        return _from_code(feast, repo)
    except FeatureStoreError:
        raise
    except Exception as exc:  # Feast raises many kinds; say which repo and why
        raise DefinitionError(
            f"Feast could not load the repo: {type(exc).__name__}: {exc}",
            obj=f"Feast repo {str(root)!r}",
            hint="check that `feast plan` works in that directory",
        ) from exc


def _from_code(feast: Any, repo: FeastRepo) -> FeastRepo:
    from contextlib import chdir

    from feast.repo_operations import parse_repo

    # Feast imports the repo's modules by their path relative to the working
    # directory, as `feast apply` run there would
    sys.path.insert(0, str(repo.root))
    try:
        with chdir(repo.root):
            contents = parse_repo(repo.root)
    finally:
        sys.path.remove(str(repo.root))
    repo.entities = list(contents.entities)
    repo.data_sources = list(contents.data_sources)
    repo.feature_views = list(contents.feature_views)
    repo.on_demand_views = list(contents.on_demand_feature_views)
    repo.stream_views = list(contents.stream_feature_views)
    repo.feature_services = list(contents.feature_services)
    repo.others = list(getattr(contents, "label_views", []) or [])
    return repo
