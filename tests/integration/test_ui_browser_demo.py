"""The web UI in a real browser on the repos users make: the rideshare example (Kafka
source with a Delta history, aggregations, on-demand), the freshness colours turning
green after a materialize, a skew audit of an injected skew, and the demo a new user
makes with ``featurestore init`` (issue 21's done-when). Every page is opened by
following the UI's own links, with no console error and no request leaving 127.0.0.1.
Screenshots go to ``ui-screenshots/`` (see ui_browser.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from featurestore import FeatureStore
from featurestore.cli.main import app
from featurestore.stores.online.base import WriteBatch
from featurestore.stores.view_specs import online_schema
from tests.helpers import quickstart
from tests.integration.served import served_repo
from tests.integration.ui_browser import Watch, chromium, new_page, screenshot_dir, shot
from tests.integration.ui_servers import laptop_ui, rideshare_repo

SERVICE = "driver_ranking"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def fs(*args: str) -> str:
    """The CLI in-process, as a user types it; must exit 0."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def crawl(page: Any, base: str, watch: Watch, folder: Path) -> list[str]:
    """Open /ui/ and every UI page linked from a page reached so far (queries and
    fragments dropped); each must answer 200 with a heading. Returns the paths."""
    seen: list[str] = []
    todo = ["/ui/"]
    while todo:
        path = todo.pop(0)
        if path in seen:
            continue
        seen.append(path)
        response = page.goto(base + path)
        assert response is not None and response.status == 200, path
        assert page.locator("h1").first.is_visible(), path
        shot(page, folder, path)
        hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))")
        for href in hrefs:
            target = href.split("#")[0].split("?")[0]
            if target.startswith("/ui/") and not target.startswith(
                ("/ui/api/", "/ui/static/", "/ui/login", "/ui/logout")
            ):
                todo.append(target)
        assert len(seen) < 80, seen  # a link loop would not end
    watch.check()
    return seen


def test_rideshare_every_page_opens_cleanly(browser, tmp_path):
    repo = rideshare_repo(tmp_path)
    folder = screenshot_dir("rideshare")
    with laptop_ui(repo, tmp_path / "ui.log") as port:
        page, watch = new_page(browser)
        try:
            paths = crawl(page, f"http://127.0.0.1:{port}", watch, folder)
            page.goto(f"http://127.0.0.1:{port}/ui/lineage")
            kafka = page.locator('svg a[data-id="kafka_source:trips_stream"]')
            assert kafka.count() == 1
            kafka.click()
            page.wait_for_url("**/ui/objects/kafka_source/trips_stream")
            assert "trips" in page.locator("main").inner_text()
            watch.check()
        finally:
            page.close()
    expected = {
        "/ui/views/driver_trips",
        "/ui/views/rider_profile",
        "/ui/views/fare_vs_history",
        "/ui/objects/kafka_source/trips_stream",
        "/ui/objects/batch_source/trips_history",
        "/ui/objects/request_source/trip_request",
        "/ui/objects/feature_service/driver_model",
        "/ui/objects/feature_service/rider_model",
        "/ui/objects/entity/driver",
        "/ui/lineage",
        "/ui/freshness",
        "/ui/history",
        "/ui/skew",
    }
    assert expected <= set(paths), expected - set(paths)


def _freshness(page: Any) -> dict[str, str]:
    rows = page.locator("table.fresh tbody tr")
    return {
        rows.nth(i).get_attribute("data-view"): rows.nth(i).get_attribute("class")
        for i in range(rows.count())
    }


def test_freshness_turns_green_after_a_materialize(browser, tmp_path):
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    repo = quickstart(tmp_path / "repo", data_end=now)
    store = FeatureStore(repo)
    folder = screenshot_dir("freshness")
    try:
        store.apply()
        store.backfill()
        with laptop_ui(repo, tmp_path / "ui.log") as port:
            page, watch = new_page(browser)
            try:
                page.goto(f"http://127.0.0.1:{port}/ui/freshness")
                before = _freshness(page)
                assert before["driver_hourly_stats"] == "red", before
                row = page.locator('tr[data-view="driver_hourly_stats"]')
                assert "nothing online" in row.locator("td.note").inner_text()
                page.screenshot(path=str(folder / "before.png"), full_page=True)

                store.materialize(end=now)
                page.reload()
                after = _freshness(page)
                assert after["driver_hourly_stats"] == "green", after
                assert row.locator("td").nth(2).inner_text() != "-"  # the newest value's time
                page.screenshot(path=str(folder / "after.png"), full_page=True)
                watch.check()
            finally:
                page.close()
    finally:
        store.close()


def _corrupt_online_value(store: FeatureStore, driver: int) -> float:
    """Overwrite the driver's online record through the online store's write API: the
    same event time, a later created time (so compare-and-set takes it), a conv_rate
    no offline row has. Returns the wrong value."""
    table = store.offline.read_table("driver_hourly_stats")
    newest = table.filter(pl.col("driver_id") == driver).sort("event_ts").tail(1).collect()
    wrong = 0.987654
    view = store.serving_index().view("driver_hourly_stats")
    schema = online_schema(store.project, view, retention=store.settings.online_retention)
    event_us = int(newest["event_ts"].dt.epoch("us")[0])
    # later than the stored row's created time, which the sample data may put after now
    stored_created = int(newest["created_ts"].dt.epoch("us")[0])
    now_us = max(int(datetime.now(UTC).timestamp() * 1_000_000), stored_created + 1)
    features = {f: newest[f].to_list() for f in schema.features}
    features["conv_rate"] = [wrong]
    stats = store.online.write(
        schema,
        WriteBatch(
            keys={"driver_id": [driver]},
            event_ts=[event_us],
            created_ts=[now_us],
            features=features,
        ),
    )
    assert stats.written == 1, stats
    return wrong


def test_an_injected_skew_shows_as_a_failed_audit_run(browser, tmp_path):
    repo = served_repo(tmp_path / "repo")  # applied, backfilled, materialized up to now
    store = FeatureStore(repo)
    try:
        wrong = _corrupt_online_value(store, 1005)
        logger = store.enable_feature_logging()
        served = store.get_online_features(
            {"driver_id": list(range(1001, 1011))}, feature_service=SERVICE
        )
        assert served.values["conv_rate"][4] == pytest.approx(wrong)
        assert logger.flush(timeout=30)
    finally:
        store.close()
    result = CliRunner().invoke(app, ["skew", "audit", "-s", SERVICE, "--repo", str(repo)])
    assert result.exit_code == 5, result.output  # a threshold exceeded
    run_id = re.search(r"saved as audit run (\S+)", result.output).group(1)

    folder = screenshot_dir("skew")
    with laptop_ui(repo, tmp_path / "ui.log") as port:
        page, watch = new_page(browser)
        try:
            page.goto(f"http://127.0.0.1:{port}/ui/skew")
            newest = page.locator("table tbody tr").first
            assert "FAIL" in newest.inner_text()
            shot(page, folder, "/ui/skew")
            newest.locator("a").first.click()
            page.wait_for_url(f"**/ui/skew/runs/{run_id}")
            text = page.locator("main").inner_text()
            assert "FAIL" in text and "unexplained" in text, text[:2000]
            assert "1005" in text  # the corrupted entity is among the examples
            # the wide mismatch table scrolls inside its card, not the page
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, overflow
            shot(page, folder, "/ui/skew/run")
            page.screenshot(path=str(folder / "skew_run_top.png"))  # the first screen
            watch.check()
        finally:
            page.close()


def _plan_urls(repo: Path) -> set[str]:
    store = FeatureStore(repo)
    try:
        plan = store.registry.snapshot(None).plan  # what apply registered
    finally:
        store.close()
    views = ("feature_view", "on_demand_feature_view")
    return {
        f"/ui/views/{o.name}" if o.kind in views else f"/ui/objects/{o.kind}/{o.name}" for o in plan
    }


def test_a_new_user_finds_the_whole_demo_in_the_browser(browser, tmp_path, monkeypatch):
    """Issue 21's done-when: `featurestore init` + apply + backfill + materialize, one
    logged lookup and a skew audit; `featurestore ui` then shows every object the demo
    created, its lineage, its freshness and the last audit."""
    repo = tmp_path / "demo"
    fs("init", str(repo))
    for step in ("apply", "backfill", "materialize"):
        fs(step, "--repo", str(repo))
    store = FeatureStore(repo)
    try:
        logger = store.enable_feature_logging()
        store.get_online_features({"driver_id": [1001, 1002, 1003]}, feature_service=SERVICE)
        assert logger.flush(timeout=30)
    finally:
        store.close()
    run_id = re.search(
        r"saved as audit run (\S+)", fs("skew", "audit", "-s", SERVICE, "--repo", str(repo))
    ).group(1)
    objects = _plan_urls(repo)

    folder = screenshot_dir("demo")
    with laptop_ui(repo, tmp_path / "ui.log") as port:
        base = f"http://127.0.0.1:{port}"
        page, watch = new_page(browser)
        try:
            paths = crawl(page, base, watch, folder)
            assert objects <= set(paths), objects - set(paths)  # every object has its page
            page.goto(base + "/ui/")
            listed = set(
                page.eval_on_selector_all(
                    "tr.entry td:first-child a", "els => els.map(e => e.getAttribute('href'))"
                )
            )
            assert listed == objects  # the catalog lists exactly what apply registered

            page.goto(base + "/ui/lineage")
            boxes = set(
                page.eval_on_selector_all(
                    "svg a.node", "els => els.map(e => e.getAttribute('href'))"
                )
            )
            assert boxes == {u for u in objects if "/entity/" not in u}  # entities: no box
            assert page.locator("svg path.edge").count() >= 5

            page.goto(base + "/ui/freshness")
            states = _freshness(page)
            # a view with a TTL is green; one without (the aggregated view) shows its age
            assert states["driver_hourly_stats"] == "green", states
            assert set(states.values()) <= {"green", "none"}, states
            newest = page.locator("table.fresh tbody tr td:nth-child(3)").all_inner_texts()
            assert len(newest) == len(states) and "-" not in newest, newest

            page.goto(base + "/ui/skew")
            newest = page.locator("table tbody tr").first
            assert "PASS" in newest.inner_text()
            newest.locator("a").first.click()
            page.wait_for_url(f"**/ui/skew/runs/{run_id}")
            assert f"_feature_logs/{SERVICE}" in page.locator("main").inner_text()
            watch.check()
        finally:
            page.close()
