"""MkDocs hooks for the docs site (``mkdocs.yml`` -> ``hooks:``).

- The CLI reference page is generated from the Typer app (``gen_cli_docs.py``).
- Pages that live outside ``docs/`` (``deploy/*.md``, ``benchmarks/*.md``,
  ``examples/fraud/README.md``) are added to the site at build time. Their relative
  links are rewritten for their place in the site; a link to another repository
  file (a Dockerfile, a YAML manifest) ships that file with the site, and a link to
  a kustomize directory points at its ``kustomization.yaml``. So ``--strict`` still
  checks every link.
- A nav entry may name a page by any of its known names (a renamed page keeps
  building): ``ALIASES``.
"""

from __future__ import annotations

import os
import posixpath
import re
import sys
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent

# repository path -> site path of pages that live outside docs/
EXTERNAL_PAGES = {
    "deploy/README.md": "deploy/index.md",
    "deploy/kafka.md": "deploy/kafka.md",
    "benchmarks/README.md": "benchmarks/index.md",
    "benchmarks/RESULTS.md": "benchmarks/results.md",
    "examples/fraud/README.md": "examples/fraud.md",
}
CLI_PAGE = "reference/cli.md"
# a page under docs/ known by more than one name (renames): each name -> the others
ALIASES = {
    "feast.md": ["migrating-from-feast.md"],
    "migrating-from-feast.md": ["feast.md"],
}
_LINK = re.compile(r"(\]\()([^)\s]+)(\))")


def _site_path_of(repo_path: str) -> str | None:
    """Where a repository file appears in the site (None: not part of it)."""
    if repo_path in EXTERNAL_PAGES:
        return EXTERNAL_PAGES[repo_path]
    if repo_path.startswith("docs/"):
        return repo_path[len("docs/") :]
    return None


def rewrite_links(text: str, *, repo_path: str, site_path: str) -> tuple[str, set[str]]:
    """``text`` of the page ``repo_path`` with its relative links fixed for
    ``site_path``, and the repository files (not pages) it links to."""
    assets: set[str] = set()
    repo_dir = posixpath.dirname(repo_path)
    site_dir = posixpath.dirname(site_path)

    def fix(match: re.Match[str]) -> str:
        target = match.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = posixpath.normpath(posixpath.join(repo_dir, path))
        site = _site_path_of(resolved)
        absolute = ROOT / resolved
        if site is None and absolute.is_dir():
            if (absolute / "kustomization.yaml").is_file():
                resolved = f"{resolved}/kustomization.yaml"
            else:
                raise ValueError(f"{repo_path}: a link to the directory {path!r} has no page")
        if site is None:
            if not (ROOT / resolved).is_file():
                raise ValueError(f"{repo_path}: a link to {path!r}, which does not exist")
            assets.add(resolved)
            site = resolved  # shipped at its repository path
        new = posixpath.relpath(site, site_dir or ".")
        return f"{match.group(1)}{new}{'#' + anchor if anchor else ''}{match.group(3)}"

    return _LINK.sub(fix, text), assets


def _nav_files(nav: Any) -> list[Any]:
    """The lists and dicts of ``nav`` holding a page path, for in-place fixing."""
    found = []
    if isinstance(nav, list):
        for item in nav:
            found += _nav_files(item)
    elif isinstance(nav, dict):
        for key, value in nav.items():
            if isinstance(value, str):
                found.append((nav, key))
            else:
                found += _nav_files(value)
    return found


def on_config(config: Any) -> Any:
    """Follow renamed pages (``ALIASES``), and list any page of ``docs/`` that the
    nav does not name under "More guides" (a new page shows up without a nav edit)."""
    docs = Path(config["docs_dir"])
    generated = {CLI_PAGE, *EXTERNAL_PAGES.values()}
    nav = config["nav"] or []
    for holder, key in _nav_files(nav):
        page = holder[key]
        if "://" in page or page in generated or (docs / page).is_file():
            continue
        for alias in ALIASES.get(page, []):
            if (docs / alias).is_file():
                holder[key] = alias
                break
    named = {holder[key] for holder, key in _nav_files(nav)}
    unlisted = sorted(
        p.relative_to(docs).as_posix()
        for p in docs.rglob("*.md")
        if p.relative_to(docs).as_posix() not in named
    )
    if unlisted and config["nav"] is not None:
        nav.append({"More guides": unlisted})
    return config


def on_files(files: Files, config: Any) -> Files:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gen_cli_docs
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    files.append(File.generated(config, CLI_PAGE, content=gen_cli_docs.render()))
    assets: set[str] = set()
    for repo_path, site_path in EXTERNAL_PAGES.items():
        source = ROOT / repo_path
        if not source.is_file():
            raise FileNotFoundError(f"docs site: {repo_path} is missing (EXTERNAL_PAGES)")
        text, linked = rewrite_links(
            source.read_text(encoding="utf-8"), repo_path=repo_path, site_path=site_path
        )
        files.append(File.generated(config, site_path, content=text))
        assets |= linked
    for repo_path in sorted(assets):
        files.append(File.generated(config, repo_path, abs_src_path=os.fspath(ROOT / repo_path)))
    return files
