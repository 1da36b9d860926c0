"""The stream engine: Kafka consumer groups -> row transforms -> online + offline stores.

``run_worker`` is what ``featurestore stream`` calls. Importing this package does not
import confluent-kafka; constructing a ``StreamWorker`` does.
"""

from featurestore.engines.stream.decode import Decoded, EventDecoder, RecordBatch, Reject
from featurestore.engines.stream.metrics import StreamMetrics, serve_metrics
from featurestore.engines.stream.settings import StreamSettings
from featurestore.engines.stream.sinks import OfflineSink, OnlineLatestSink, Sink, ViewBatch
from featurestore.engines.stream.worker import StreamWorker, WorkerReport, run_worker

__all__ = [
    "Decoded",
    "EventDecoder",
    "OfflineSink",
    "OnlineLatestSink",
    "RecordBatch",
    "Reject",
    "Sink",
    "StreamMetrics",
    "StreamSettings",
    "StreamWorker",
    "ViewBatch",
    "WorkerReport",
    "run_worker",
    "serve_metrics",
]
