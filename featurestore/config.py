"""Project configuration: ``featurestore.toml`` at the root of a feature repo.

Every field has a sensible embedded default, so a repo with just
``[project] name = "demo"`` runs with no servers: a SQLite registry, a local Delta
directory and an embedded SQLite online store, all under ``.featurestore/``.
Environment variables override the file: ``FEATURESTORE_REGISTRY_URL``,
``FEATURESTORE_OFFLINE_ROOT``, ``FEATURESTORE_ONLINE_URL``,
``FEATURESTORE_API_KEYS`` (comma-separated).

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

    [server]
    max_entities = 1000
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from featurestore.errors import DefinitionError

CONFIG_FILE = "featurestore.toml"
STATE_DIR = ".featurestore"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProjectConfig(_Section):
    name: str = Field(description="Project name; namespaces the registry and the online keys.")


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


class OnlineStoreConfig(_Section):
    url: str | None = Field(
        default=None, description="redis://host:port/db, sqlite:///path or memory://"
    )
    timeout_seconds: float = Field(
        default=0.5, gt=0, description="Socket and connect timeout for the online store."
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


class RepoConfig(_Section):
    project: ProjectConfig
    registry: RegistryConfig = RegistryConfig()
    offline_store: OfflineStoreConfig = OfflineStoreConfig()
    online_store: OnlineStoreConfig = OnlineStoreConfig()
    server: ServerConfig = ServerConfig()


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
        keys = os.environ.get("FEATURESTORE_API_KEYS")
        self.api_keys = [k for k in keys.split(",") if k] if keys else list(config.server.api_keys)


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
