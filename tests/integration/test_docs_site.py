"""The docs site builds with ``mkdocs build --strict``: every nav page exists, every
link resolves (pages from deploy/, benchmarks/ and examples/ included, with the
repository files they link to), the CLI reference lists every command of the Typer
app, and the Python reference renders the public classes from their docstrings."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import gen_cli_docs  # noqa: E402
import mkdocs_hooks  # noqa: E402

sys.path.remove(str(ROOT / "scripts"))


def _build(site: Path, *, config: Path = ROOT / "mkdocs.yml") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    result = _build(site)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "WARNING" not in result.stderr, result.stderr[-4000:]
    return site


def _text(path: Path) -> str:
    return re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8"))


def test_every_nav_page_is_built(site):
    for page in (
        "index.html",
        "quickstart/index.html",
        "semantics/index.html",
        "offline-store/index.html",
        "definition-changes/index.html",
        "configuration/index.html",
        "s3/index.html",
        "operations/index.html",
        "deploy/index.html",
        "deploy/kafka/index.html",
        "examples/fraud/index.html",
        "reference/cli/index.html",
        "reference/python/index.html",
        "benchmarks/index.html",
        "benchmarks/results/index.html",
    ):
        assert (site / page).is_file(), page
    feast = [p for p in ("feast", "migrating-from-feast") if (site / p / "index.html").is_file()]
    assert feast, "the Feast page is missing"
    assert "Point-in-time join" in _text(site / "semantics/index.html")
    assert "point-in-time join" in _text(site / "benchmarks/results/index.html")


def test_cli_reference_lists_every_command(site):
    text = _text(site / "reference/cli/index.html")
    commands = gen_cli_docs.commands()
    assert {"apply", "materialize", "skew audit", "dataset create"} <= set(commands)
    for command in commands:
        assert f"featurestore {command}" in text, command
    assert "--feature-service" in text  # options are listed with their help
    assert "Fail (exit 5) above this fraction of mismatched values." in text


def test_python_reference_renders_docstrings(site):
    text = _text(site / "reference/python/index.html")
    for name in ("get_training_dataset", "get_online_features", "materialize", "push"):
        assert name in text
    for cls in ("Entity", "FeatureView", "Aggregation", "OnDemandFeatureView", "FeatureService"):
        assert f"{cls}" in text
    assert "Point-in-time correct features for every row" in text
    html = (site / "reference/python/index.html").read_text(encoding="utf-8")
    assert "<blockquote>\n<blockquote>" not in html  # doctests are code, not quotes


def test_pages_from_outside_docs_ship_the_files_they_link(site):
    deploy = (site / "deploy/index.html").read_text(encoding="utf-8")
    assert 'href="Dockerfile"' in deploy
    assert (site / "deploy/Dockerfile").read_bytes() == (ROOT / "deploy/Dockerfile").read_bytes()
    assert (site / "deploy/k8s/base/kustomization.yaml").is_file()
    assert 'href="../operations/"' in deploy  # ../docs/operations.md, rewritten


def test_rewrite_links_maps_docs_pages_and_assets():
    text, assets = mkdocs_hooks.rewrite_links(
        "[ops](../docs/operations.md#alerts) [img](Dockerfile) [k](k8s/base) [w](https://x.y)",
        repo_path="deploy/README.md",
        site_path="deploy/index.md",
    )
    assert text == (
        "[ops](../operations.md#alerts) [img](Dockerfile) "
        "[k](k8s/base/kustomization.yaml) [w](https://x.y)"
    )
    assert assets == {"deploy/Dockerfile", "deploy/k8s/base/kustomization.yaml"}
    with pytest.raises(ValueError, match=r"deploy/README.md: a link to 'nope.yaml'"):
        mkdocs_hooks.rewrite_links("[x](nope.yaml)", repo_path="deploy/README.md",
                                   site_path="deploy/index.md")  # fmt: skip


def test_nav_follows_a_renamed_page(tmp_path):
    (tmp_path / "migrating-from-feast.md").write_text("# Feast\n")
    config = {"docs_dir": str(tmp_path), "nav": [{"Guides": [{"Feast": "feast.md"}]}]}
    mkdocs_hooks.on_config(config)
    assert config["nav"] == [{"Guides": [{"Feast": "migrating-from-feast.md"}]}]


def test_pages_missing_from_the_nav_are_listed(tmp_path):
    (tmp_path / "a.md").write_text("# A\n")
    (tmp_path / "new-guide.md").write_text("# New\n")
    config = {"docs_dir": str(tmp_path), "nav": [{"A": "a.md"}]}
    mkdocs_hooks.on_config(config)
    assert config["nav"] == [{"A": "a.md"}, {"More guides": ["new-guide.md"]}]


def test_strict_build_fails_on_a_broken_link(tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    (docs / "quickstart.md").write_text("# Quickstart\n\nSee [nothing](no-such-page.md).\n")
    config = tmp_path / "mkdocs.yml"
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    text = text.replace("docs_dir: docs", f"docs_dir: {docs}")
    text = text.replace("  - scripts/mkdocs_hooks.py", f"  - {ROOT / 'scripts/mkdocs_hooks.py'}")
    config.write_text(text)
    result = _build(tmp_path / "site", config=config)
    assert result.returncode != 0
    assert "no-such-page.md" in result.stderr
