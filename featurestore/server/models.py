"""Pydantic models of the HTTP API, for ``/docs`` and ``/openapi.json``.

The lookup route does not parse with these (``lookup.parse_request`` does, faster
and with errors that name the field); a unit test checks that both accept the
same documents.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

KeyValue = int | str | bool | None


class OnlineFeaturesRequest(BaseModel):
    """Which entities, and which features (a list or a feature service)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "entities": {"driver_id": [1001, 1002]},
                    "features": ["driver_hourly_stats:conv_rate", "driver_hourly_stats:acc_rate"],
                },
                {"entities": {"driver_id": [1001]}, "feature_service": "driver_ranking"},
            ]
        },
    )

    entities: dict[str, list[KeyValue]] = Field(
        min_length=1,
        description="Each join key -> one value per entity; every list has the same "
        "length (at least 1, at most server.max_entities). A null key reads as MISSING.",
    )
    features: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Feature references 'view_name:feature_name'. Give this or feature_service.",
    )
    feature_service: str | None = Field(
        default=None, min_length=1, description="A registered feature service name."
    )
    full_feature_names: bool = Field(
        default=False, description="Name outputs 'view__feature' instead of 'feature'."
    )
    request_time: int | str | None = Field(
        default=None,
        description="The instant the TTL is judged at: microseconds since the epoch or "
        "ISO 8601 with a zone. Default: now.",
    )
    request_data: dict[str, list[Any]] | None = Field(
        default=None,
        description="Request-time fields that on-demand features read: each field -> "
        "one value per entity.",
    )


class FeatureColumn(BaseModel):
    values: list[Any] = Field(description="One value per entity; null when MISSING or EXPIRED.")
    statuses: list[Literal["PRESENT", "MISSING", "EXPIRED"]]
    event_ts: list[int | None] = Field(
        description="Event time of each value in microseconds since the epoch (UTC)."
    )


class OnlineFeaturesResponse(BaseModel):
    """Columnar: every list is aligned with the request's entities."""

    entities: dict[str, list[Any]]
    features: dict[str, FeatureColumn]
    registry_version: int = Field(description="The registry version that served the request.")
    request_time_us: int


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body: what failed, where, and what to do."""

    error: str = Field(description="Error type, e.g. RequestError, UnknownFeatureError.")
    message: str
    object: str | None = None
    field: str | None = None
    value: str | None = None
    hint: str | None = None
    file: str | None = None
    retryable: bool = Field(description="True when the same request may succeed later (503).")


class HealthResponse(BaseModel):
    status: Literal["ok"]
    registry_version: int
    pid: int = Field(description="The worker process that answered.")


class ReadyResponse(BaseModel):
    status: Literal["ready", "not ready"]
    registry_version: int
    online_store: str
    registry: str
