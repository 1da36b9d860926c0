"""The stream worker's metric registry and its Prometheus text, and its settings."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from pydantic import ValidationError

from featurestore.engines.stream.metrics import StreamMetrics, serve_metrics
from featurestore.engines.stream.settings import StreamSettings


def test_prometheus_text_has_help_type_and_labelled_samples():
    m = StreamMetrics()
    m.records.inc(5, topic="trips")
    m.records.inc(2, topic="trips")
    m.dead_letters.inc(topic="trips", reason="wrong_type")
    m.lag.set(42, topic="trips", partition=3)
    m.flush_seconds.observe(0.02)
    text = m.to_prometheus()
    assert "# TYPE featurestore_stream_records_total counter" in text
    assert 'featurestore_stream_records_total{topic="trips"} 7' in text
    assert 'featurestore_stream_dead_letters_total{reason="wrong_type",topic="trips"} 1' in text
    assert 'featurestore_stream_lag_records{partition="3",topic="trips"} 42' in text
    assert 'featurestore_stream_flush_seconds_bucket{le="0.025"} 1' in text
    assert 'featurestore_stream_flush_seconds_bucket{le="+Inf"} 1' in text
    assert "featurestore_stream_flush_seconds_count 1" in text
    # every sample line is "name{labels} value"
    for line in text.splitlines():
        if not line.startswith("#"):
            assert re.fullmatch(r"[a-z_]+(\{[^}]*\})? [-+0-9.eInf]+", line), line


def test_label_values_are_escaped():
    m = StreamMetrics()
    m.records.inc(topic='we"ird\\topic\n')
    assert r'topic="we\"ird\\topic\n"' in m.to_prometheus()


def test_histogram_buckets_are_cumulative_and_quantiles_interpolate():
    m = StreamMetrics()
    h = m.freshness_seconds
    h.observe_many([0.004] * 50 + [0.04] * 49 + [0.6])
    assert h.count == 100
    assert h.quantile(0.5) is not None and h.quantile(0.5) <= 0.005
    p99 = h.quantile(0.99)
    assert p99 is not None and 0.03 <= p99 <= 0.05
    assert h.quantile(1.0) == pytest.approx(0.75)
    lines = [ln for ln in m.to_prometheus().splitlines() if "freshness_seconds_bucket" in ln]
    counts = [int(ln.rsplit(" ", 1)[1]) for ln in lines]
    assert counts == sorted(counts) and counts[-1] == 100
    assert StreamMetrics().freshness_seconds.quantile(0.5) is None


def test_gauges_can_be_removed_and_summary_is_plain_data():
    m = StreamMetrics()
    m.lag.set(3, topic="t", partition=0)
    m.lag.set(4, topic="t", partition=1)
    m.lag.remove(topic="t", partition=0)
    m.rows.inc(9, view="v")
    summary = m.summary()
    assert summary["lag"] == {"t[1]": 4}
    assert summary["rows"] == 9
    assert summary["freshness_p99_s"] is None


def test_settings_forbid_unknown_fields_and_check_ranges():
    s = StreamSettings()
    assert s.dead_letter_topic_for("trips") == "trips.dlq"
    assert StreamSettings(dead_letter_topic="all.dlq").dead_letter_topic_for("x") == "all.dlq"
    with pytest.raises(ValidationError, match="flush_row"):
        StreamSettings(flush_row=5)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        StreamSettings(batch_size=0)
    with pytest.raises(ValidationError):
        StreamSettings(epoch_unit="s")  # type: ignore[arg-type]


def test_metrics_are_served_over_http():
    m = StreamMetrics()
    m.batches.inc(3)
    server = serve_metrics(m, port=0)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert "featurestore_stream_batches_total 3" in resp.read().decode()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{url}/other", timeout=5)
        assert err.value.code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_importing_the_stream_engine_does_not_load_kafka():
    code = (
        "import sys, featurestore.engines.stream, featurestore.engines.stream.metrics; "
        "print('confluent_kafka' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
