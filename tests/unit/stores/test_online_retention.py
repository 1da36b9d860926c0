"""Online retention as a setting (SEMANTICS "Online"): ``[online_store] retention``
and its per-view overrides, through the config, the schema and real stores (the
in-memory twin and SQLite here; Redis in tests/integration/test_online_retention_redis.py).

The data set is January 2024, so with the default retention every record is long
past it, and with ``"none"`` every one is kept and reads back.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from featurestore import Aggregation, BatchSource, Entity, FeatureView, Field
from featurestore._time import to_us
from featurestore.compile import PlanIndex, compile_definitions
from featurestore.compile.discover import Found
from featurestore.config import RETENTION_ENV, OnlineRetention, Retention, load_settings
from featurestore.errors import DefinitionError
from featurestore.materialize import MaterializeReport, backfill_view, materialize_view
from featurestore.stores.offline import DeltaOfflineStore
from featurestore.stores.online import (
    MemoryOnlineStore,
    OnlineStore,
    OnlineViewSchema,
    ReadRequest,
    SqliteOnlineStore,
)
from featurestore.stores.view_specs import online_schema

H = 3_600_000_000
DAY = 24 * H
START = datetime(2024, 1, 1, tzinfo=UTC)
END_US = to_us(datetime(2024, 2, 1, tzinfo=UTC))  # `materialize --end 2024-02-01`
DRIVERS = list(range(1, 21))
KEEP = OnlineRetention.of("none")


# ---------------------------------------------------------------- the config


def write_config(root: Path, online: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "featurestore.toml").write_text(f'[project]\nname = "p"\n\n[online_store]\n{online}')
    return root


def test_settings_default_none_duration_and_per_view(tmp_path: Path) -> None:
    assert load_settings(write_config(tmp_path / "a", "")).online_retention == OnlineRetention()
    root = write_config(
        tmp_path / "b",
        'retention = "none"\n'
        '[online_store.retention_per_view]\nclicks = "30 D"\nstats = "2X TTL"\n',
    )
    got = load_settings(root).online_retention
    assert got.for_view("other") == Retention("none")
    assert got.for_view("clicks") == Retention("30d", 30 * DAY)
    assert got.for_view("stats") == Retention("2x ttl")
    assert got.key_for("clicks") == "[online_store.retention_per_view] clicks"
    assert got.key_for("other") == "[online_store] retention"


@pytest.mark.parametrize(
    ("online", "field", "value"),
    [
        ('retention = "forever"', "online_store.retention", "forever"),
        ('retention = "0s"', "online_store.retention", "0s"),
        ("retention = 30", "online_store.retention", 30),
        (
            '[online_store.retention_per_view]\nclicks = "3x ttl"',
            "online_store.retention_per_view.clicks",
            "3x ttl",
        ),
    ],
)
def test_bad_settings_name_the_field_and_value(
    tmp_path: Path, online: str, field: str, value: object
) -> None:
    with pytest.raises(DefinitionError) as err:
        load_settings(write_config(tmp_path, online))
    assert err.value.field == field
    assert err.value.value == value
    assert "featurestore.toml" in (err.value.file or "")


def test_the_environment_overrides_the_default_and_is_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_config(
        tmp_path, 'retention = "2x ttl"\n[online_store.retention_per_view]\nv = "1d"'
    )
    monkeypatch.setenv(RETENTION_ENV, "none")
    got = load_settings(root).online_retention
    assert got.default == Retention("none") and got.for_view("v") == Retention("1d", DAY)
    monkeypatch.setenv(RETENTION_ENV, "a while")
    with pytest.raises(DefinitionError) as err:
        load_settings(root)
    assert err.value.obj == f"environment variable {RETENTION_ENV}"
    assert err.value.value == "a while" and "none" in (err.value.hint or "")


def test_a_per_view_setting_for_no_view_is_an_error() -> None:
    policy = OnlineRetention.of(per_view={"stats": "none", "stast": "none"})
    policy.check_views(["stats", "stast"])
    with pytest.raises(DefinitionError, match="names no registered feature view") as err:
        policy.check_views(["stats", "trips"])
    assert err.value.field == "stast" and "stats, trips" in (err.value.hint or "")


# ---------------------------------------------------------------- the rule per view


@pytest.mark.parametrize(
    ("setting", "ttl_us", "windows", "kept_us"),
    [
        ("2x ttl", DAY, (), 2 * DAY),
        ("2x ttl", None, (), None),
        ("2x ttl", 7 * DAY, ((DAY, H), (2 * H, None)), DAY + H),  # the TTL does not count
        ("2x ttl", None, ((2 * DAY, None), (DAY, 6 * H)), 2 * DAY),
        ("2x ttl", None, ((H, None), (None, H)), None),  # a lifetime window: never
        ("none", DAY, (), None),
        ("none", None, ((H, None),), None),
        ("36h", DAY, (), 36 * H),
        ("36h", None, ((None, None),), 36 * H),  # a duration applies as given
    ],
)
def test_resolve_follows_semantics(
    setting: str, ttl_us: int | None, windows: tuple, kept_us: int | None
) -> None:
    assert Retention.parse(setting).resolve(ttl_us=ttl_us, windows=windows) == kept_us


# ---------------------------------------------------------------- a 2024 repo


def _events() -> pl.DataFrame:
    rng = np.random.default_rng(3)
    n = 2000
    ts = [START + timedelta(minutes=int(m)) for m in rng.integers(0, 31 * 24 * 60, n)]
    return pl.DataFrame(
        {
            "driver_id": rng.choice(DRIVERS, n),
            "ts": ts,
            "rating": rng.uniform(1, 5, n).round(2),
        }
    ).with_columns(pl.col("ts").dt.cast_time_unit("us"))


def _plans(repo: Path) -> PlanIndex:
    driver = Entity(name="driver", join_keys={"driver_id": "int64"})
    src = BatchSource(name="trips", path="trips.parquet", timestamp_field="ts")
    fields = [Field(name="rating", dtype="float64")]
    views = [
        FeatureView(name="stats", entities=[driver], source=src, ttl="1d", fields=fields),
        FeatureView(name="stats_kept", entities=[driver], source=src, ttl="1d", fields=fields),
        FeatureView(
            name="trips_1d",
            entities=[driver],
            source=src,
            ttl=None,
            aggregations=[
                Aggregation(name="n_1d", column=None, function="count", window="1d", hop="1h"),
                Aggregation(name="rating_sum_2h", column="rating", function="sum", window="2h"),
            ],
        ),
        FeatureView(
            name="trips_ever",
            entities=[driver],
            source=src,
            ttl=None,
            aggregations=[
                Aggregation(name="best", column="rating", function="max", window="lifetime")
            ],
        ),
    ]
    found = [Found(o, "features.py") for o in (driver, src, *views)]
    return PlanIndex(compile_definitions(found, repo=repo, project="p").plan)


class Repo:
    """Plans and a backfilled offline store of the 2024 data set."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        _events().write_parquet(root / "trips.parquet")
        self.index = _plans(root)
        self.offline = DeltaOfflineStore(str(root / "offline"))
        for name in ("stats", "stats_kept", "trips_1d", "trips_ever"):
            backfill_view(self.index.view(name), repo=root, offline=self.offline)

    def materialize(
        self,
        name: str,
        online: OnlineStore,
        retention: OnlineRetention | None,
        end_us: int = END_US,
    ) -> MaterializeReport:
        return materialize_view(
            self.index.view(name),
            project="p",
            offline=self.offline,
            online=online,
            end_us=end_us,
            retention=retention,
        )

    def read(self, name: str, online: OnlineStore) -> list[int | None]:
        """Event times of every driver's record (a schema built with the default
        retention, as lookups build it: retention must not change what is read)."""
        (got,) = online.read(
            [ReadRequest(online_schema("p", self.index.view(name)), {"driver_id": DRIVERS})]
        )
        return got.event_ts


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    return Repo(tmp_path_factory.mktemp("retention"))


@pytest.fixture(params=["memory", "sqlite"])
def online(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OnlineStore]:
    store: OnlineStore
    if request.param == "memory":
        store = MemoryOnlineStore()
    else:
        store = SqliteOnlineStore(tmp_path / "online.db")
    yield store
    store.close()


def test_the_default_drops_historical_rows_and_the_report_says_how_to_keep_them(
    repo: Repo, online: OnlineStore
) -> None:
    report = repo.materialize("stats", online, None)
    assert report.entities == len(DRIVERS)
    assert report.written == 0 and report.skipped_expired == len(DRIVERS)
    assert report.all_past_retention
    assert report.retention == "2 x ttl = 2d"
    assert report.hint == (
        f"all {len(DRIVERS)} entities are past the online retention (2 x ttl = 2d) at now, "
        'so none was written; set [online_store] retention = "none" to materialize '
        "historical data"
    )
    assert repo.read("stats", online) == [None] * len(DRIVERS)


def test_retention_none_keeps_historical_rows_and_they_read_back(
    repo: Repo, online: OnlineStore
) -> None:
    report = repo.materialize("stats", online, KEEP)
    assert report.written == report.entities == len(DRIVERS)
    assert not report.all_past_retention and report.hint is None
    assert report.retention == "none: kept until replaced"
    latest = (
        pl.read_parquet(Path(repo.offline.root).parent / "trips.parquet")
        .group_by("driver_id")
        .agg(pl.col("ts").max().dt.epoch("us"))
    )
    want = dict(latest.iter_rows())
    assert repo.read("stats", online) == [want[d] for d in DRIVERS]


def test_a_per_view_setting_overrides_the_default(repo: Repo, online: OnlineStore) -> None:
    policy = OnlineRetention.of(per_view={"stats_kept": "none"})
    kept = repo.materialize("stats_kept", online, policy)
    dropped = repo.materialize("stats", online, policy)
    assert kept.written == len(DRIVERS) and kept.retention_key.endswith("stats_kept")
    assert dropped.written == 0 and dropped.retention_key == "[online_store] retention"
    assert None not in repo.read("stats_kept", online)
    assert repo.read("stats", online) == [None] * len(DRIVERS)
    # the other way round: a "none" default, and one view held to its 2 x ttl
    strict = OnlineRetention.of("none", {"stats": "2x ttl"})
    report = repo.materialize("stats", online, strict)
    assert report.written == 0
    assert (
        report.hint is not None
        and '[online_store.retention_per_view] stats = "none"' in report.hint
    )


def test_aggregated_views_keep_their_longest_window_plus_hop(
    repo: Repo, online: OnlineStore
) -> None:
    view = repo.index.view("trips_1d")
    assert online_schema("p", view).retention_us == DAY + H  # not the TTL (there is none)
    report = repo.materialize("trips_1d", online, None)
    assert report.written == 0 and report.all_past_retention
    assert report.retention == "longest window plus its hop = 1d1h"
    assert repo.read("trips_1d", online) == [None] * len(DRIVERS)
    assert repo.materialize("trips_1d", online, KEEP).written == len(DRIVERS)
    assert repo.read("trips_1d", online) == [END_US] * len(DRIVERS)


def test_a_lifetime_window_is_never_purged(repo: Repo, online: OnlineStore) -> None:
    view = repo.index.view("trips_ever")
    assert online_schema("p", view).retention_us is None
    report = repo.materialize("trips_ever", online, None)
    assert report.written == len(DRIVERS) and report.retention == "a lifetime window: never purged"
    assert repo.read("trips_ever", online) == [END_US] * len(DRIVERS)


def test_an_aggregate_record_lives_exactly_window_plus_hop(repo: Repo) -> None:
    """A record of events up to T counts one of them at every request time before
    T + 1d + 1h (the 1d window with its 1h hop), and none from then on."""
    now = [END_US]
    store = MemoryOnlineStore(clock=lambda: now[0])
    assert repo.materialize("trips_1d", store, None).written == len(DRIVERS)
    now[0] = END_US + DAY + H - 1
    assert repo.read("trips_1d", store) == [END_US] * len(DRIVERS)
    now[0] = END_US + DAY + H
    assert repo.read("trips_1d", store) == [None] * len(DRIVERS)


def test_retention_does_not_change_the_schema_id(repo: Repo) -> None:
    for name in ("stats", "trips_1d"):
        view = repo.index.view(name)
        schemas = [
            online_schema("p", view, retention=OnlineRetention.of(s))
            for s in ("2x ttl", "none", "9d")
        ]
        assert len({s.schema_id for s in schemas}) == 1
        assert len({s.retention_us for s in schemas}) == 3


def test_a_schema_rejects_a_retention_that_is_not_positive() -> None:
    with pytest.raises(DefinitionError, match="retention_us must be a positive") as err:
        OnlineViewSchema.build(
            project="p", view="v", keys={"id": "int64"}, features={}, retention_us=0
        )
    assert err.value.field == "retention_us"
    schema = OnlineViewSchema.build(
        project="p", view="v", keys={"id": "int64"}, features={}, ttl_us=H
    )
    assert schema.retention_us == 2 * H  # build's default is the SEMANTICS default
    kept = OnlineViewSchema.build(
        project="p", view="v", keys={"id": "int64"}, features={}, ttl_us=H, retention_us=None
    )
    assert kept.retention_us is None and kept.schema_id == schema.schema_id
