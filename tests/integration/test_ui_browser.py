"""The web UI in a real browser: Playwright driving Debian's chromium against
``featurestore ui`` on the quickstart repo. Every page loads at a laptop and a phone
size without console errors or requests leaving 127.0.0.1; a user clicks from the
catalog to a view, its lineage, a service and a saved dataset, and searches.
Screenshots go to ``ui-screenshots/`` (see ui_browser.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.ui_browser import chromium, new_page, screenshot_dir, shot
from tests.integration.ui_servers import DATASET, laptop_ui, ui_repo

PAGES = [
    "/ui/",
    "/ui/views/driver_hourly_stats",
    "/ui/views/driver_windows",
    "/ui/views/trip_fit",
    "/ui/objects/feature_service/driver_ranking",
    f"/ui/datasets/{DATASET}",
    "/ui/lineage",
    "/ui/history",
    "/ui/freshness",
    "/ui/skew",
]
SIZES = ("laptop", "phone")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Iterator[str]:
    repo = ui_repo(tmp_path_factory.mktemp("ui"))
    with laptop_ui(repo, tmp_path_factory.mktemp("log") / "ui.log") as port:
        yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("size", SIZES)
def test_every_page_loads_cleanly_and_fits(browser, base, size):
    shots = screenshot_dir(f"quickstart-{size}")
    page, watch = new_page(browser, size)
    try:
        for path in PAGES:
            response = page.goto(base + path)
            assert response is not None and response.status == 200, path
            assert page.locator("h1").first.is_visible()
            # nothing wider than the screen but the parts meant to scroll sideways
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, (path, overflow)
            shot(page, shots, path)
        watch.check()
    finally:
        page.close()
    print(f"screenshots: {shots}")
    assert len(list(shots.glob("*.png"))) == len(PAGES)


def test_click_from_catalog_to_view_lineage_service_and_dataset(browser, base):
    page, watch = new_page(browser, "laptop")
    try:
        page.goto(base + "/ui/")
        page.get_by_role("link", name="driver_hourly_stats", exact=True).first.click()
        page.wait_for_url("**/ui/views/driver_hourly_stats")
        assert page.locator("h1").inner_text().startswith("driver_hourly_stats")
        assert page.locator("svg.chart polyline").count() == 1
        page.get_by_role("link", name="lineage", exact=True).click()
        page.wait_for_url("**/ui/lineage#feature_view:driver_hourly_stats")
        # the view's edges light up when the page opens on it
        assert page.locator("path.edge.on").count() >= 3
        page.locator('svg a[data-id="feature_service:driver_ranking"]').click()
        page.wait_for_url("**/ui/objects/feature_service/driver_ranking")
        assert "driver_hourly_stats:conv_rate" in page.content()
        page.go_back()
        page.locator(f'svg a[data-id="dataset:{DATASET}"]').click()
        page.wait_for_url(f"**/ui/datasets/{DATASET}")
        assert "featurestore dataset rebuild" in page.content()
        watch.check()
    finally:
        page.close()


def test_search_filters_as_you_type_and_searches_on_enter(browser, base):
    page, watch = new_page(browser, "phone")
    try:
        page.goto(base + "/ui/")
        box = page.locator("#search")
        box.fill("window")
        visible = page.locator("tr.entry:not(.hidden) td:first-child a")
        assert sorted(visible.all_inner_texts()) == ["driver_windows", "driver_windows_service"]
        box.press("Enter")
        page.wait_for_url("**/ui/?q=window")
        assert "2 results" in page.locator("#results h2").inner_text()
        box = page.locator("#search")
        assert box.input_value() == "window"
        watch.check()
    finally:
        page.close()
