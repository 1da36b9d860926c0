"""The web UI over HTTP: every page and JSON route on the quickstart repo, served by
``featurestore ui`` (laptop) and by the lookup server under /ui with API keys."""

from __future__ import annotations

import re
import statistics
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest

from featurestore.api.catalog import describe
from featurestore.api.store import FeatureStore
from tests.integration.ui_servers import (
    DATASET,
    get,
    keyed_server,
    laptop_ui,
    request,
    ui_repo,
)

PAGES = {
    "/ui/": ["driver_hourly_stats", "Feature services", "team=driver-ranking", "float64"],
    "/ui/views/driver_hourly_stats": [
        "acceptance_gap",
        "(col(&#34;conv_rate&#34;))",
        "Offline table",
    ],
    "/ui/views/driver_windows": ["conv_rate_mean_7d", "lifetime", "1w"],
    "/ui/views/trip_fit": ["trips_per_km", "trip_request"],
    "/ui/objects/entity/driver": ["driver_id", "driver_hourly_stats"],
    "/ui/objects/batch_source/driver_stats_source": ["data/driver_stats.parquet"],
    "/ui/objects/request_source/trip_request": ["distance_km"],
    "/ui/objects/feature_service/driver_ranking": ["driver_hourly_stats:conv_rate"],
    f"/ui/datasets/{DATASET}": ["featurestore dataset rebuild", "driver_hourly_stats"],
    "/ui/lineage": ["<svg", "driver_ranking_with_request", DATASET],
    "/ui/history": ["Version 2", "ttl_us", "featurestore registry rollback --to 1"],
    "/ui/freshness": ["driver_hourly_stats", "badge green", "no TTL"],
    "/ui/skew": ["featurestore skew audit -s"],
}
JSON_ROUTES = [
    "/ui/api/catalog",
    "/ui/api/views/driver_hourly_stats",
    "/ui/api/objects/entity/driver",
    f"/ui/api/datasets/{DATASET}",
    "/ui/api/lineage",
    "/ui/api/history",
    "/ui/api/freshness",
    "/ui/api/skew",
]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = ui_repo(tmp_path_factory.mktemp("ui"))
    # a second version, so that history has a field-by-field diff to show
    features = repo / "features.py"
    features.write_text(features.read_text().replace('ttl="2d"', 'ttl="3d"', 1))
    store = FeatureStore(repo)
    try:
        assert store.apply(message="keep driver stats 3 days").version == 2
    finally:
        store.close()
    return repo


@pytest.fixture(scope="module")
def laptop(repo, tmp_path_factory):
    with laptop_ui(repo, tmp_path_factory.mktemp("log") / "ui.log") as port:
        yield port


@pytest.fixture(scope="module")
def keyed(repo, tmp_path_factory):
    with keyed_server(repo, tmp_path_factory.mktemp("log") / "server.log") as port:
        yield port


def test_every_page_answers_with_its_content_and_loads_nothing_from_elsewhere(laptop):
    assert get(laptop, "/").status == 307  # / -> /ui/
    for path, expected in PAGES.items():
        r = get(laptop, path)
        assert r.status == 200, (path, r.text[:500])
        assert r.headers["content-type"].startswith("text/html")
        for text in expected:
            assert text in r.text, (path, text)
        assert "default-src 'self'" in r.headers["content-security-policy"]
        # every src/href is a path of this server (or a fragment/data URL)
        for url in re.findall(r'(?:src|href)="([^"]*)"', r.text):
            assert url.startswith(("/", "#", "?", "data:")), (path, url)
    for asset in ("/ui/static/ui.css", "/ui/static/ui.js"):
        assert get(laptop, asset).status == 200


def test_every_json_route_answers(laptop):
    for path in JSON_ROUTES:
        r = get(laptop, path)
        assert r.status == 200, (path, r.text[:300])
        assert r.headers["content-type"] == "application/json"
        assert r.json()


def test_catalog_lists_every_object_with_dtypes_and_searches(laptop):
    doc = get(laptop, "/ui/api/catalog").json()
    assert doc["registry_version"] == 2
    names = {g: [o["name"] for o in items] for g, items in doc["groups"].items()}
    assert names == {
        "entities": ["driver"],
        "sources": ["driver_stats_source", "trip_request"],
        "views": ["driver_hourly_stats", "driver_windows", "trip_fit"],
        "services": ["driver_ranking", "driver_ranking_with_request", "driver_windows_service"],
    }
    stats = doc["groups"]["views"][0]
    assert stats["owner"] == "ml-platform@example.com"
    assert {"name": "avg_daily_trips", "dtype": "int64"} in stats["columns"]
    hits = get(laptop, "/ui/api/catalog?q=driver-ranking").json()["hits"]
    assert [(h["name"], h["matched"]) for h in hits] == [("driver_hourly_stats", ["tags"])]
    page = get(laptop, "/ui/?" + urlencode({"q": "windows"})).text
    assert "result" in page and "driver_windows_service" in page and "trip_fit" not in page


def test_view_page_shows_definition_table_online_state_and_a_chart(repo, laptop):
    doc = get(laptop, "/ui/api/views/driver_hourly_stats").json()
    store = FeatureStore(repo)
    try:
        expected = describe(store, "driver_hourly_stats")
    finally:
        store.close()
    assert doc["offline"] == expected["offline"]  # the CLI's describe, not a second reading
    assert doc["ttl"] == "3d"
    assert doc["transforms"] == [
        {"name": "acceptance_gap", "expr": '[(col("conv_rate")) - (col("acc_rate"))]'}
    ]
    assert doc["freshness"]["state"] == "green"
    assert doc["online"]["served_from_version"] == 2
    chart = doc["chart"]
    assert chart["column"] == "conv_rate" and chart["rows"] == expected["offline"]["rows"]
    assert len(chart["points"].split()) > 10
    other = get(laptop, "/ui/api/views/driver_hourly_stats?feature=avg_daily_trips").json()
    assert other["chart"]["column"] == "avg_daily_trips"
    windows = get(laptop, "/ui/api/views/driver_windows").json()
    assert [a["window"] for a in windows["aggregations"]] == ["1d", "1w", "lifetime"]
    assert windows["freshness"]["state"] == "none"  # no TTL: age shown, not judged


def test_lineage_json_runs_from_sources_to_saved_datasets(laptop):
    doc = get(laptop, "/ui/api/lineage").json()
    edges = {(e["from"], e["to"]) for e in doc["edges"]}
    assert {
        ("batch_source:driver_stats_source", "feature_view:driver_hourly_stats"),
        ("request_source:trip_request", "on_demand_feature_view:trip_fit"),
        ("feature_view:driver_hourly_stats", "on_demand_feature_view:trip_fit"),
        ("on_demand_feature_view:trip_fit", "feature_service:driver_ranking_with_request"),
        ("feature_service:driver_ranking", f"dataset:{DATASET}"),
    } <= edges
    nodes = {n["id"]: n for n in doc["nodes"]}
    assert nodes[f"dataset:{DATASET}"]["detail"].startswith("registry v1")
    assert nodes["feature_view:driver_windows"]["url"] == "/ui/views/driver_windows"
    for a, b in edges:
        assert a in nodes and b in nodes


def test_history_shows_each_version_with_its_field_diff(laptop):
    doc = get(laptop, "/ui/api/history").json()
    newest, first = doc["versions"]
    assert newest["version"] == 2 and newest["message"] == "keep driver stats 3 days"
    assert newest["rollback"] == ""  # the head
    [change] = newest["changes"]
    assert change["name"] == "driver_hourly_stats" and change["action"] == "changed"
    assert change["changes"] == [{"path": "ttl_us", "old": "172800000000", "new": "259200000000"}]
    assert first["rollback"] == "featurestore registry rollback --to 1"
    assert {c["action"] for c in first["changes"]} == {"added"}


def test_unknown_names_are_404_with_a_hint(laptop):
    page = get(laptop, "/ui/views/driver_hourly_stat")
    assert page.status == 404 and "did you mean" in page.text
    doc = get(laptop, "/ui/api/views/nope")
    assert doc.status == 404
    assert doc.json()["error"] == "UnknownFeatureError" and doc.json()["object"] == "name 'nope'"
    assert get(laptop, "/ui/objects/bogus/driver").status == 404
    assert get(laptop, "/ui/api/datasets/nope").status == 404


def test_pages_answer_in_under_200_ms(laptop):
    slowest = {}
    for path in PAGES:
        get(laptop, path)  # warm
        times = []
        for _ in range(5):
            started = time.perf_counter()
            assert get(laptop, path).status == 200
            times.append(time.perf_counter() - started)
        slowest[path] = statistics.median(times)
    assert max(slowest.values()) < 0.2, slowest


# -- API keys (the lookup server, UI mounted at /ui) ------------------------------


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_the_ui_needs_a_key_when_the_server_has_keys(keyed):
    r = get(keyed, "/ui/views/driver_hourly_stats")
    assert r.status == 303
    assert r.headers["location"] == "/ui/login?next=/ui/views/driver_hourly_stats"
    assert get(keyed, "/ui/api/catalog").status == 401
    assert get(keyed, "/ui/api/catalog", headers=_bearer("wrong")).status == 401
    assert get(keyed, "/ui/login").status == 200
    assert get(keyed, "/ui/static/ui.css").status == 200  # assets are not secret
    assert request(keyed, "POST", "/ui/", headers=_bearer("k-all")).status == 405  # read-only


def test_a_key_that_may_not_use_a_service_sees_none_of_its_features(keyed):
    def catalog(key: str) -> set[str]:
        doc = get(keyed, "/ui/api/catalog", headers=_bearer(key)).json()
        return {o["name"] for items in doc["groups"].values() for o in items}

    assert {"driver_windows", "driver_windows_service"} <= catalog("k-all")
    limited = catalog("k-other")
    assert "driver_windows" not in limited and "driver_windows_service" not in limited
    assert "driver_hourly_stats" in limited
    other = _bearer("k-other")
    assert get(keyed, "/ui/api/views/driver_windows", headers=other).status == 404
    assert get(keyed, "/ui/views/driver_windows", headers=other).status == 404
    assert get(keyed, "/ui/api/views/driver_windows", headers=_bearer("k-all")).status == 200
    hits = get(keyed, "/ui/api/catalog?q=windows", headers=other).json()["hits"]
    assert hits == []
    lineage = get(keyed, "/ui/api/lineage", headers=other).json()
    assert not [n for n in lineage["nodes"] if "windows" in n["name"]]
    fresh = get(keyed, "/ui/api/freshness", headers=other).json()
    assert [v["view"] for v in fresh["views"]] == ["driver_hourly_stats"]
    page = get(keyed, "/ui/", headers=other).text
    assert "driver_windows" not in page


def test_login_sets_a_cookie_that_the_pages_accept(keyed):
    body = urlencode({"key": "k-other", "next": "/ui/freshness"}).encode()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    r = request(keyed, "POST", "/ui/login", body=body, headers=form)
    assert r.status == 303 and r.headers["location"] == "/ui/freshness"
    cookie = r.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    jar = {"Cookie": cookie.split(";")[0]}
    page = get(keyed, "/ui/freshness", headers=jar)
    assert page.status == 200 and "driver_hourly_stats" in page.text
    assert "driver_windows" not in page.text
    bad = urlencode({"key": "nope", "next": "/ui/"}).encode()
    r = request(keyed, "POST", "/ui/login", body=bad, headers=form)
    assert r.status == 401 and "not valid" in r.text
    evil = urlencode({"key": "k-all", "next": "//evil.example/"}).encode()
    r = request(keyed, "POST", "/ui/login", body=evil, headers=form)
    assert r.headers["location"] == "/ui/"  # never redirected off the UI


# -- 500 views ------------------------------------------------------------------

MANY = """
for _i in range(500):
    globals()[f"gen_{_i}"] = FeatureView(
        name=f"gen_{_i:03d}",
        entities=[driver],
        source=driver_stats_source,
        ttl="1d",
        fields=[Field(name="conv_rate", dtype=pl.Float64)],
        description=f"generated view {_i}",
        tags={"batch": str(_i % 7)},
    )
"""


@pytest.mark.slow
def test_pages_stay_fast_with_500_views(tmp_path):
    from tests.helpers import quickstart

    repo = quickstart(tmp_path / "many")
    (repo / "features.py").write_text((repo / "features.py").read_text() + MANY)
    store = FeatureStore(repo)
    try:
        store.apply()
    finally:
        store.close()
    took = {}
    with laptop_ui(repo, tmp_path / "ui.log") as port:
        for path in ("/ui/", "/ui/?q=generated", "/ui/lineage", "/ui/history", "/ui/freshness"):
            assert get(port, path).status == 200  # warm
            started = time.perf_counter()
            r = get(port, path)
            took[path] = time.perf_counter() - started
            assert r.status == 200 and "gen_499" in r.text, path
    print(took)
    assert took["/ui/"] < 0.5 and took["/ui/lineage"] < 0.5, took
    assert max(took.values()) < 2.0, took


def test_saved_audit_runs_are_listed_and_shown_with_the_one_renderer(repo, laptop, keyed):
    """`featurestore skew audit` keeps its report (audit/saved.py); the skew page lists
    the run and its page embeds the HTML the CLI's --html writes."""
    import re

    from typer.testing import CliRunner

    from featurestore.cli.main import app

    store = FeatureStore(repo)
    try:
        logger = store.enable_feature_logging()
        store.get_online_features({"driver_id": [1001, 1002]}, feature_service="driver_ranking")
        logger.flush()
    finally:
        store.close()
    result = CliRunner().invoke(
        app, ["skew", "audit", "-s", "driver_ranking", "--repo", str(repo)]
    )
    assert result.exit_code == 0, result.output
    run_id = re.search(r"saved as audit run (\S+)", result.output).group(1)

    listing = get(laptop, "/ui/skew")
    assert listing.status == 200 and f"/ui/skew/runs/{run_id}" in listing.text
    assert "PASS" in listing.text
    # the run's time, to the second in UTC, named in the row that links to it
    row = re.search(rf'href="/ui/skew/runs/{run_id}">([^<]+)<', listing.text).group(1)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", row), row
    page = get(laptop, f"/ui/skew/runs/{run_id}")
    assert page.status == 200
    assert "_feature_logs/driver_ranking" in page.text and "/ui/skew-report.css" in page.text
    css = get(laptop, "/ui/skew-report.css")
    assert css.status == 200 and css.headers["content-type"].startswith("text/css")
    assert get(laptop, "/ui/skew/runs/nope").status == 404
    # behind keys: a key that may use driver_ranking sees the run
    assert get(keyed, f"/ui/api/skew/runs/{run_id}", headers=_bearer("k-other")).status == 200
