"""Pydantic models of the HTTP API, for ``/docs`` and ``/openapi.json``.

The lookup route does not parse with these (``lookup.parse_request`` does, faster
and with errors that name the field); a unit test checks that both accept the
same documents.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
KeyValue = Int64 | str | bool | None
Scalar = Int64 | float | str | bool | None
# one value per entity: a scalar, or a flat list for a list-typed request field
RequestValue = Scalar | list[Scalar]
# what the server enforces: exactly one of the two, a null one counting as absent
ONE_OF_FEATURES: list[Any] = [
    {
        "required": ["features"],
        "properties": {"features": {"type": "array"}, "feature_service": {"type": "null"}},
    },
    {
        "required": ["feature_service"],
        "properties": {"feature_service": {"type": "string"}, "features": {"type": "null"}},
    },
]


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
            ],
            "oneOf": ONE_OF_FEATURES,
        },
    )

    entities: dict[str, Annotated[list[KeyValue], Field(min_length=1)]] = Field(
        min_length=1,
        description="Each join key -> one value per entity; every list has the same "
        "length (at least 1, at most server.max_entities). A null key reads as MISSING.",
    )
    features: list[Annotated[str, Field(pattern=r"^[^:]+:[^:]+$")]] | None = Field(
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
    request_time: (
        Annotated[int, Field(ge=-62_135_596_800_000_000, le=253_402_300_799_999_999)] | str | None
    ) = Field(
        default=None,
        description="The instant the TTL is judged at: microseconds since the epoch "
        "(years 1 to 9999) or ISO 8601 with a zone. Default: now.",
    )
    request_data: dict[str, list[RequestValue]] | None = Field(
        default=None,
        description="Request-time fields that on-demand features read: each field -> "
        "one value per entity, a scalar of the field's declared dtype.",
    )

    @model_validator(mode="after")
    def _one_of(self) -> OnlineFeaturesRequest:
        if (self.features is None) == (self.feature_service is None):
            raise ValueError("give exactly one of 'features' and 'feature_service'")
        return self


def request_schema() -> dict[str, Any]:
    """The JSON schema of the lookup request body, as ``/openapi.json`` shows it."""
    return OnlineFeaturesRequest.model_json_schema()


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
    registry_version: int = Field(description="The registry version being served.")
    online_store: str
    registry: str
    rejected_version: int | None = Field(
        default=None,
        description="A newer registry version the server refused because it cannot "
        "serve it (the server stays ready on registry_version).",
    )
    rejected_reason: str | None = None
