"""Where rows come from: a batch table, a Kafka topic, or the request itself."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from featurestore.definitions._base import Metadata, Problems
from featurestore.definitions.field import Field, as_fields


@dataclass(frozen=True, kw_only=True)
class BatchSource(Metadata):
    """A Delta table or Parquet file/directory of events.

    ``path`` may be relative to the feature repo, or any URI deltalake/Polars read
    (``s3://...``). ``timestamp_field`` is the event time; ``created_timestamp_field``
    (optional) is when the row was written, used to break ties and for
    ``as_of_known_time``.

    >>> BatchSource(name="trips", path="data/trips.parquet", timestamp_field="ts").format
    'parquet'
    """

    name: str
    path: str
    timestamp_field: str = "event_ts"
    created_timestamp_field: str | None = None
    format: Literal["delta", "parquet"] | None = None
    storage_options: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = Problems("BatchSource", self.name)
        problems.name(self.name)
        if not isinstance(self.path, str) or not self.path:
            problems.add("must be a non-empty path or URI", field="path", value=self.path)
        fmt = self.format
        if fmt is None:
            fmt = "parquet" if str(self.path).rstrip("/").endswith(".parquet") else "delta"
        if fmt not in ("delta", "parquet"):
            problems.add("must be 'delta' or 'parquet'", field="format", value=fmt)
        object.__setattr__(self, "format", fmt)
        problems.name(self.timestamp_field, what="timestamp_field")
        if self.created_timestamp_field is not None:
            problems.name(self.created_timestamp_field, what="created_timestamp_field")
        object.__setattr__(
            self, "storage_options", problems.mapping(self.storage_options, what="storage_options")
        )
        self._finish(problems)


@dataclass(frozen=True, kw_only=True)
class KafkaSource(Metadata):
    """A Kafka topic of JSON events, backfilled from a ``BatchSource``.

    ``schema`` declares the event fields and their dtypes (what the stream worker
    decodes); ``timestamp_field`` names the event-time field inside each event
    (ISO-8601 string with zone, or epoch microseconds). ``batch_source`` holds the
    history the stream continues, so training and backfills see the same events.
    """

    name: str
    topic: str
    bootstrap_servers: str
    schema: Any
    timestamp_field: str
    batch_source: BatchSource
    created_timestamp_field: str | None = None
    value_format: Literal["json"] = "json"
    consumer_options: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = Problems("KafkaSource", self.name)
        problems.name(self.name)
        if not isinstance(self.topic, str) or not self.topic:
            problems.add("must be a topic name", field="topic", value=self.topic)
        if not isinstance(self.bootstrap_servers, str) or not self.bootstrap_servers:
            problems.add(
                "must be 'host:port[,host:port]'",
                field="bootstrap_servers",
                value=self.bootstrap_servers,
            )
        if self.value_format != "json":
            problems.add("only 'json' is supported", field="value_format", value=self.value_format)
        if not isinstance(self.batch_source, BatchSource):
            problems.add("must be a BatchSource", field="batch_source", value=self.batch_source)
        fields = as_fields(self.schema, problems, what="schema")
        names = {f.name for f in fields}
        if fields and self.timestamp_field not in names:
            problems.add(
                "timestamp field is not in the schema",
                field="timestamp_field",
                value=self.timestamp_field,
                hint=f"schema fields: {', '.join(sorted(names))}",
            )
        object.__setattr__(self, "schema", fields)
        object.__setattr__(
            self,
            "consumer_options",
            problems.mapping(self.consumer_options, what="consumer_options"),
        )
        self._finish(problems)

    @property
    def fields(self) -> tuple[Field, ...]:
        return tuple(self.schema)


@dataclass(frozen=True, kw_only=True)
class RequestSource(Metadata):
    """Fields that arrive with the request (for on-demand features)."""

    name: str
    schema: Any

    def __post_init__(self) -> None:
        problems = Problems("RequestSource", self.name)
        problems.name(self.name)
        fields = as_fields(self.schema, problems, what="schema")
        if not fields:
            problems.add("needs at least one field", field="schema")
        object.__setattr__(self, "schema", fields)
        self._finish(problems)

    @property
    def fields(self) -> tuple[Field, ...]:
        return tuple(self.schema)


Source = BatchSource | KafkaSource
