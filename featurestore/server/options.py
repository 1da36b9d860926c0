"""The server's knobs, resolved once from ``[server]`` in featurestore.toml and the env.

``[server]`` fields (``featurestore.config.ServerConfig``): ``max_entities``,
``api_keys``, ``registry_refresh_seconds``; and, read when the config defines
them, ``service_keys`` (service name -> keys allowed to use it), ``max_body_bytes``,
``access_log_sample``, ``feature_logging`` and ``feature_log_sample``. The
environment overrides: ``FEATURESTORE_API_KEYS`` (comma-separated),
``FEATURESTORE_SERVICE_KEYS`` (JSON, e.g. ``{"driver_ranking": ["key1"]}``),
``FEATURESTORE_MAX_BODY_BYTES``, ``FEATURESTORE_FEATURE_LOGGING`` (1/true) and
``FEATURESTORE_FEATURE_LOG_SAMPLE``.

Limits and timeouts (docs/operations.md lists them all): ``max_features``
(references per request), ``body_timeout_seconds`` (the whole body must arrive
within it), ``header_timeout_seconds`` (the request line and headers must arrive
within it), ``keep_alive_seconds`` (an idle keep-alive connection is closed after
it) and ``access_log_error_lines_per_second``; each also read from the
environment as ``FEATURESTORE_<NAME>`` in upper case.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from featurestore.config import Settings
from featurestore.errors import DefinitionError

DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_ACCESS_LOG_SAMPLE = 0.01


@dataclass(frozen=True)
class ServerOptions:
    max_entities: int = 1000
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    api_keys: tuple[str, ...] = ()
    service_keys: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    registry_refresh_seconds: float = 2.0
    # fraction of successful requests written to the access log (errors: all)
    access_log_sample: float = DEFAULT_ACCESS_LOG_SAMPLE
    # while the online store is down, how often a background thread pings it
    store_probe_seconds: float = 0.25
    # log served rows to the offline store for the skew audit (api/feature_log.py)
    feature_logging: bool = False
    feature_log_sample: float = 1.0
    # feature references in one request (after removing duplicates: 413 past it)
    max_features: int = 1000
    # seconds: the whole request body must arrive within body_timeout (408 after),
    # the request line and headers within header_timeout (closed after), and an idle
    # keep-alive connection is closed after keep_alive
    body_timeout_seconds: float = 10.0
    header_timeout_seconds: float = 10.0
    keep_alive_seconds: float = 5.0
    # error lines per status code and second in the access log (the rest: counted)
    access_log_error_lines_per_second: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerOptions:
        server = settings.config.server
        service_keys = _service_keys_env() or getattr(server, "service_keys", None) or {}
        return cls(
            max_entities=server.max_entities,
            max_body_bytes=_int_env("FEATURESTORE_MAX_BODY_BYTES")
            or getattr(server, "max_body_bytes", None)
            or DEFAULT_MAX_BODY_BYTES,
            api_keys=tuple(settings.api_keys),
            service_keys={k: tuple(v) for k, v in service_keys.items()},
            registry_refresh_seconds=server.registry_refresh_seconds,
            access_log_sample=float(
                getattr(server, "access_log_sample", DEFAULT_ACCESS_LOG_SAMPLE)
            ),
            feature_logging=_bool_env("FEATURESTORE_FEATURE_LOGGING")
            if "FEATURESTORE_FEATURE_LOGGING" in os.environ
            else bool(getattr(server, "feature_logging", False)),
            feature_log_sample=_float_env("FEATURESTORE_FEATURE_LOG_SAMPLE")
            if "FEATURESTORE_FEATURE_LOG_SAMPLE" in os.environ
            else float(getattr(server, "feature_log_sample", 1.0)),
            max_features=_int_env("FEATURESTORE_MAX_FEATURES")
            or int(getattr(server, "max_features", cls.max_features)),
            body_timeout_seconds=_seconds(server, "body_timeout_seconds"),
            header_timeout_seconds=_seconds(server, "header_timeout_seconds"),
            keep_alive_seconds=_seconds(server, "keep_alive_seconds"),
            access_log_error_lines_per_second=_seconds(server, "access_log_error_lines_per_second"),
        )


def _seconds(server: Any, name: str) -> float:
    """A positive number from FEATURESTORE_<NAME>, else ``[server] name``, else the default."""
    env = f"FEATURESTORE_{name.upper()}"
    if env in os.environ:
        value = _float_env(env)
    else:
        value = float(getattr(server, name, getattr(ServerOptions, name)))
    if not value > 0:
        raise DefinitionError(
            "must be a positive number", obj="server options", field=name, value=value
        )
    return value


def _int_env(name: str) -> int | None:
    raw = os.environ.get(name)
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise DefinitionError(
            "must be a positive integer", obj="environment", field=name, value=raw
        )
    return value


def _bool_env(name: str) -> bool:
    raw = os.environ[name].strip().lower()
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"", "0", "false", "no", "off"}:
        return False
    raise DefinitionError("must be true or false", obj="environment", field=name, value=raw)


def _float_env(name: str) -> float:
    raw = os.environ[name]
    try:
        return float(raw)
    except ValueError:
        raise DefinitionError(
            "must be a number", obj="environment", field=name, value=raw
        ) from None


def _service_keys_env() -> dict[str, list[str]] | None:
    raw = os.environ.get("FEATURESTORE_SERVICE_KEYS")
    if not raw:
        return None
    try:
        data: Any = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(x, str) for x in v)
        for k, v in data.items()
    ):
        raise DefinitionError(
            "must be a JSON object mapping service names to lists of keys",
            obj="environment",
            field="FEATURESTORE_SERVICE_KEYS",
            value="(not shown: it holds keys)",
            hint='e.g. FEATURESTORE_SERVICE_KEYS=\'{"driver_ranking": ["key1"]}\'',
        )
    return data
