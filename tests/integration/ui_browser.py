"""Browser helpers for the UI tests: Debian's chromium driven by Playwright, a watch on
console errors and on every host a page asks for, and the screenshot folder.

Screenshots go to ``ui-screenshots/`` at the repo root (ignored by git), or to
``$FEATURESTORE_UI_SCREENSHOTS``; each test writes into a sub-folder of its own.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tests.fixtures.services import service_unavailable

ROOT = Path(__file__).resolve().parents[2]
SIZES = {"laptop": (1280, 800), "phone": (390, 844)}


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless chromium (``apt-get install -y chromium``, ``pip install playwright``)."""
    executable = shutil.which("chromium")
    if executable is None:
        service_unavailable("no chromium binary (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        service_unavailable("playwright is not installed (pip install playwright)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


class Watch:
    """Console errors, failed requests and every host a page asked for."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        self.hosts: set[str] = set()
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("requestfailed", lambda r: self.errors.append(f"failed: {r.url}"))
        page.on("request", lambda r: self.hosts.add(urlparse(r.url).hostname or r.url))

    def check(self) -> None:
        assert self.errors == []
        assert self.hosts <= {"127.0.0.1"}, self.hosts


def new_page(browser: Any, size: str = "laptop") -> tuple[Any, Watch]:
    width, height = SIZES[size]
    page = browser.new_page(viewport={"width": width, "height": height})
    return page, Watch(page)


def screenshot_dir(name: str) -> Path:
    """A fresh folder for one test's screenshots."""
    base = Path(os.environ.get("FEATURESTORE_UI_SCREENSHOTS") or ROOT / "ui-screenshots")
    folder = base / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def shot(page: Any, folder: Path, path: str) -> Path:
    """A full-page screenshot named after the page's path (``/ui/views/x`` -> ``views_x``)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.removeprefix("/ui").strip("/")) or "catalog"
    target = folder / f"{name}.png"
    page.screenshot(path=str(target), full_page=True)
    return target
