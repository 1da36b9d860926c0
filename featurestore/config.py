"""Project configuration: ``featurestore.toml`` at the root of a feature repo.

Every field has a sensible embedded default, so a repo with just
``[project] name = "demo"`` runs with no servers: a SQLite registry, a local Delta
directory and an embedded SQLite online store, all under ``.featurestore/``.
Environment variables override the file: ``FEATURESTORE_REGISTRY_URL``,
``FEATURESTORE_OFFLINE_ROOT``, ``FEATURESTORE_ONLINE_URL``,
``FEATURESTORE_ONLINE_RETENTION``, ``FEATURESTORE_API_KEYS`` (comma-separated).

::

    [project]
    name = "driver_ranking"

    [registry]
    url = "postgresql+psycopg://user@db:5432/features"   # default: SQLite in the repo

    [offline_store]
    root = "s3://bucket/featurestore"                    # default: .featurestore/offline
    storage_options = { AWS_REGION = "eu-west-1" }

    [online_store]
    url = "redis://redis:6379/0"                         # default: sqlite:///.featurestore/online.db
    retention = "2x ttl"                                 # or "none", or a duration like "30d"

    [online_store.retention_per_view]
    driver_hourly_stats = "none"

    [server]
    max_entities = 1000

    [engine]
    type = "ray"                                         # default: "local"
    ray_address = "auto"                                 # default: start a local cluster
    partitions = 64                                      # default: 2x the cluster's CPUs
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from featurestore._classification import Classification
from featurestore._policy import Policy, PolicyConfig
from featurestore._time import format_duration_us, parse_duration_us
from featurestore.errors import DefinitionError

CONFIG_FILE = "featurestore.toml"
STATE_DIR = ".featurestore"
RETENTION_ENV = "FEATURESTORE_ONLINE_RETENTION"


# How long the online store keeps a record: the ``[online_store] retention`` setting.
#
# SEMANTICS ("Online"): the online store may purge a record once it is older than
# the retention, and a lookup then reads MISSING. A setting is one of
#
# - ``"2x ttl"``, the default: 2 x the TTL for a plain view (never, without a TTL);
#   for an aggregated view, the largest window plus its hop (the last request time
#   at which the record still counts an event), and never when a window is a
#   lifetime. A plain view keeps an expired value for one more TTL, so a lookup
#   says EXPIRED rather than MISSING for that long;
# - ``"none"``: keep every record until a newer one replaces it, so materializing
#   historical data (a backtest, a demo on last year's data) works;
# - a duration such as ``"30d"``, applied as given to every view it covers.
# ``stores.view_specs.online_schema`` applies it to a view.

DEFAULT = "2x ttl"
KEEP = "none"
GLOBAL_KEY = "[online_store] retention"
PER_VIEW_TABLE = "online_store.retention_per_view"

# (window_us, hop_us) of each aggregation of a view; None window = lifetime, None hop = none
Windows = Sequence[tuple[int | None, int | None]]


@dataclass(frozen=True)
class Retention:
    """One parsed setting: ``"2x ttl"``, ``"none"`` or a duration (``duration_us``)."""

    text: str = DEFAULT
    duration_us: int | None = None

    @classmethod
    def parse(cls, value: object) -> Retention:
        """Read a setting; ``ValueError`` (which config turns into an error naming the
        field and value) for anything else.

        >>> Retention.parse("2 x TTL"), Retention.parse("36h").duration_us
        (Retention(text='2x ttl', duration_us=None), 129600000000)
        """
        if isinstance(value, Retention):
            return value
        if isinstance(value, str):
            text = value.strip().lower()
            if text.replace(" ", "") == DEFAULT.replace(" ", ""):
                return cls(DEFAULT)
            if text == KEEP:
                return cls(KEEP)
            try:
                us = parse_duration_us(text)
            except ValueError:
                pass
            else:
                if us > 0:
                    return cls(text.replace(" ", ""), us)
        raise ValueError(
            f'online retention must be "{DEFAULT}", "{KEEP}" or a positive duration '
            f'like "30d" or "36h"; got {value!r}'
        )

    def resolve(self, *, ttl_us: int | None, windows: Windows) -> int | None:
        """Microseconds a view's record is kept past its ``event_ts``; None: until a
        newer record replaces it. ``windows`` is empty for a plain view."""
        if self.text == KEEP:
            return None
        if self.duration_us is not None:
            return self.duration_us
        if windows:
            return _window_reach(windows)
        return None if ttl_us is None else 2 * ttl_us

    def describe(self, *, ttl_us: int | None, windows: Windows) -> str:
        """The setting and what it gives for one view, for reports: ``2 x ttl = 2d``."""
        if self.text == KEEP:
            return "none: kept until replaced"
        if self.duration_us is not None:
            return self.text
        if windows:
            kept = _window_reach(windows)
            if kept is None:
                return "a lifetime window: never purged"
            return f"longest window plus its hop = {format_duration_us(kept)}"
        if ttl_us is None:
            return "2 x ttl, and the view has no ttl: never purged"
        return f"2 x ttl = {format_duration_us(2 * ttl_us)}"


def _window_reach(windows: Windows) -> int | None:
    """The largest window + hop: a record of events up to ``T`` still counts one
    of them at a request time ``r`` while ``floor(r, hop) - window < T``, so it can
    go at ``T + window + hop``. A lifetime window always counts: None."""
    reach = 0
    for window_us, hop_us in windows:
        if window_us is None:
            return None
        reach = max(reach, window_us + (hop_us or 0))
    return reach


@dataclass(frozen=True)
class OnlineRetention:
    """The project's retention: a default and per-view overrides (by view name).

    >>> OnlineRetention().for_view("v").resolve(ttl_us=3_600_000_000, windows=())
    7200000000
    """

    default: Retention = field(default_factory=Retention)
    per_view: tuple[tuple[str, Retention], ...] = ()

    @classmethod
    def of(
        cls, default: object = DEFAULT, per_view: Mapping[str, object] | None = None
    ) -> OnlineRetention:
        """From setting strings.

        >>> OnlineRetention.of("none", {"clicks": "7d"}).for_view("clicks").text
        '7d'
        """
        views = tuple(sorted((k, Retention.parse(v)) for k, v in (per_view or {}).items()))
        return cls(Retention.parse(default), views)

    def for_view(self, view: str) -> Retention:
        return dict(self.per_view).get(view, self.default)

    def key_for(self, view: str) -> str:
        """Where the setting of ``view`` is written in featurestore.toml."""
        if view in dict(self.per_view):
            return f"[{PER_VIEW_TABLE}] {view}"
        return GLOBAL_KEY

    def check_views(self, views: Collection[str]) -> None:
        """Raise ``DefinitionError`` when a per-view setting names no view in ``views``
        (a typo would otherwise silently fall back to the default)."""
        unknown = sorted(name for name, _ in self.per_view if name not in views)
        if unknown:
            raise DefinitionError(
                "names no registered feature view",
                obj=f"[{PER_VIEW_TABLE}]",
                field=unknown[0],
                value=unknown,
                hint=f"Views: {', '.join(sorted(views)) or 'none'}; fix or remove the entry",
            )


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProjectConfig(_Section):
    name: str = Field(description="Project name; namespaces the registry and the online keys.")
    classification: Classification = Field(
        default="internal",
        description="Class of a feature that declares none (its view's, else this one).",
    )


class RegistryConfig(_Section):
    url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in the repo.")
    head_cache_seconds: float = Field(
        default=1.0, ge=0, description="How long readers trust a cached head version."
    )


class OfflineStoreConfig(_Section):
    root: str | None = Field(
        default=None, description="Directory or URI (s3://...) holding the Delta tables."
    )
    storage_options: dict[str, str] = Field(
        default_factory=dict, description="Passed to deltalake for object stores."
    )


# A retention setting, checked and normalised ("2 X TTL" -> "2x ttl", "30 D" -> "30d").
RetentionText = Annotated[str, AfterValidator(lambda v: Retention.parse(v).text)]


class OnlineStoreConfig(_Section):
    url: str | None = Field(
        default=None, description="redis://host:port/db, sqlite:///path or memory://"
    )
    timeout_seconds: float = Field(
        default=0.5, gt=0, description="Socket and connect timeout for the online store."
    )
    retention: RetentionText = Field(
        default=DEFAULT,
        description='How long a record is kept past its event time: "2x ttl" (plain views: '
        "2 x ttl; aggregated views: the longest window plus its hop, never for a lifetime "
        'window), "none" (until a newer record replaces it: materializing historical '
        'data) or a duration like "30d".',
    )
    retention_per_view: dict[str, RetentionText] = Field(
        default_factory=dict,
        description="View name -> retention, overriding `retention` for that view.",
    )


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = 6566
    workers: int = Field(default=1, ge=1)
    max_entities: int = Field(
        default=1000, ge=1, description="Largest number of entities in one lookup request."
    )
    api_keys: list[str] = Field(
        default_factory=list, description="Bearer tokens accepted; empty = no auth."
    )
    registry_refresh_seconds: float = Field(default=2.0, gt=0)
    service_keys: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Feature service -> API keys allowed to request it by name.",
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest request body accepted."
    )
    access_log_sample: float = Field(
        default=0.01, ge=0, le=1, description="Fraction of successful requests logged."
    )
    feature_logging: bool = Field(
        default=False, description="Log served features for the skew audit."
    )
    feature_log_sample: float = Field(
        default=1.0, ge=0, le=1, description="Fraction of requests whose features are logged."
    )
    max_features: int = Field(
        default=1000, ge=1, description="Most feature references in one lookup (413 past it)."
    )
    body_timeout_seconds: float = Field(
        default=10.0, gt=0, description="The whole request body must arrive within it (408)."
    )
    header_timeout_seconds: float = Field(
        default=10.0, gt=0, description="The request line and headers must arrive within it."
    )
    keep_alive_seconds: float = Field(
        default=5.0, gt=0, description="An idle keep-alive connection is closed after it."
    )
    access_log_error_lines_per_second: float = Field(
        default=10.0, gt=0, description="Error lines logged per status per second; rest counted."
    )
    push_keys: list[str] = Field(
        default_factory=list,
        description="API keys allowed to POST /v1/push (a subset of api_keys); with api_keys "
        "set and this empty, nobody may push.",
    )
    push_view_keys: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Feature view -> the push keys allowed to push to it (others: 403).",
    )
    push_max_rows: int = Field(
        default=10_000, ge=1, description="Most rows in one push request (413 past it)."
    )
    push_max_body_bytes: int = Field(
        default=16_777_216, ge=1024, description="Largest push request body accepted (413)."
    )
    push_store_retry_seconds: float = Field(
        default=2.0,
        ge=0,
        description="How long a push retries a store that is down before answering 503.",
    )
    push_replay_window_seconds: float = Field(
        default=7 * 86_400.0,
        gt=0,
        description="An aggregated view ignores a push replayed (same push_id) within it.",
    )


class EngineConfig(_Section):
    type: Literal["local", "ray"] = Field(
        default="local",
        description="Where batch jobs (training datasets) run: this process, or Ray Core "
        "tasks (pip install 'featurestore[ray]'); docs/scaling.md.",
    )
    ray_address: str | None = Field(
        default=None,
        description="'auto' (a running cluster), 'ray://host:10001' (Ray Client), or unset "
        "to start a local cluster; only with type = 'ray'.",
    )
    partitions: int | None = Field(
        default=None,
        ge=1,
        description="How many key partitions a job is cut into; default: 1 locally, twice "
        "the cluster's CPUs on Ray.",
    )


class RepoConfig(_Section):
    project: ProjectConfig
    registry: RegistryConfig = RegistryConfig()
    offline_store: OfflineStoreConfig = OfflineStoreConfig()
    online_store: OnlineStoreConfig = OnlineStoreConfig()
    server: ServerConfig = ServerConfig()
    policy: PolicyConfig | None = Field(
        default=None, description="Access policy (docs/governance.md); none: all allowed."
    )
    engine: EngineConfig = EngineConfig()


class Settings:
    """The resolved configuration of one repo: paths made absolute, env applied."""

    def __init__(self, repo: Path, config: RepoConfig) -> None:
        self.repo = repo
        self.config = config
        state = repo / STATE_DIR
        self.project = config.project.name
        self.registry_url = (
            os.environ.get("FEATURESTORE_REGISTRY_URL")
            or config.registry.url
            or f"sqlite:///{state / 'registry.db'}"
        )
        self.offline_root = (
            os.environ.get("FEATURESTORE_OFFLINE_ROOT")
            or _resolve(repo, config.offline_store.root)
            or str(state / "offline")
        )
        online = (
            os.environ.get("FEATURESTORE_ONLINE_URL")
            or config.online_store.url
            or f"sqlite:///{state / 'online.db'}"
        )
        if online.startswith("sqlite:///") and not online.startswith("sqlite:////"):
            online = f"sqlite:///{_resolve(repo, online[len('sqlite:///') :])}"
        self.online_url = online
        self.online_retention = _online_retention(config.online_store)
        keys = os.environ.get("FEATURESTORE_API_KEYS")
        self.api_keys = [k for k in keys.split(",") if k] if keys else list(config.server.api_keys)
        self.policy = Policy(config.policy) if config.policy is not None else None


def _online_retention(online: OnlineStoreConfig) -> OnlineRetention:
    """The configured retention, ``FEATURESTORE_ONLINE_RETENTION`` overriding the
    file's default (not the per-view settings)."""
    default = os.environ.get(RETENTION_ENV) or online.retention
    try:
        return OnlineRetention.of(default, online.retention_per_view)
    except ValueError as exc:  # only the variable can be bad: the file was validated
        raise DefinitionError(
            str(exc),
            obj=f"environment variable {RETENTION_ENV}",
            field=GLOBAL_KEY,
            value=default,
            hint=f'unset it, or give "{DEFAULT}", "none" or a duration like "30d"',
        ) from None


def _resolve(repo: Path, value: str | None) -> str | None:
    if value is None or "://" in value or Path(value).is_absolute():
        return value
    return str(repo / value)


def find_repo(start: str | Path = ".") -> Path:
    """The nearest directory at or above ``start`` holding a featurestore.toml."""
    path = Path(start).resolve()
    for candidate in (path, *path.parents):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise DefinitionError(
        f"no {CONFIG_FILE} here or in any parent directory",
        obj=str(path),
        hint="run this inside a feature repo, or create one with `featurestore init DIR`",
    )


def load_settings(repo: str | Path = ".") -> Settings:
    root = find_repo(repo)
    path = root / CONFIG_FILE
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise DefinitionError(f"is not valid TOML: {exc}", file=str(path)) from None
    try:
        config = RepoConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise DefinitionError(
            f"{first['msg']} ({len(exc.errors())} problem(s) in all)",
            file=str(path),
            field=loc,
            value=first.get("input"),
            hint="see the configuration reference in docs/configuration.md",
        ) from None
    return Settings(root, config)
