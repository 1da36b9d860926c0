"""Hostile input against a real server process on a real socket (issue 15).

Every answer must be a 4xx naming what is wrong, fast, with the server still
healthy after: nesting, huge lists, wrong types, NaN/Infinity literals, unicode
and NUL in keys, overflowing integers, wrong content types, slow headers and
slow bodies. Runs against the embedded online store: no services needed.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.served import running_server, served_repo

LOOKUP = "/v1/features/online"
SERVICE = '"feature_service": "driver_ranking"'


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    root = tmp_path_factory.mktemp("hostile")
    with running_server(served_repo(root / "repo"), root / "server.log") as port:
        yield port


def post(port: int, body: bytes, ctype: str | None = "application/json") -> tuple[int, Any, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    started = time.perf_counter()
    conn.request("POST", LOOKUP, body=body, headers={"Content-Type": ctype} if ctype else {})
    resp = conn.getresponse()
    raw = resp.read()
    took = time.perf_counter() - started
    conn.close()
    return resp.status, json.loads(raw), took


def health(port: int, method: str = "GET") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request(method, "/health")
    status = conn.getresponse().status
    conn.close()
    return status


CASES = [
    # (name, body, status, field)
    ("deep request_data", b'{"entities": {"driver_id": [1001]}, "features": '
     b'["trip_fit:trips_per_km"], "request_data": {"distance_km": ['
     + b"[" * 1000 + b"1" + b"]" * 1000 + b"]}}", 422, "request_data.distance_km[0][0]"),
    ("nested key", b'{"entities": {"driver_id": [[1]]}, ' + SERVICE.encode() + b"}", 422,
     "entities.driver_id[0]"),
    ("deep key", b'{"entities": {"driver_id": [' + b"[" * 1000 + b"]" * 1000 + b"]}, "
     + SERVICE.encode() + b"}", 422, "entities.driver_id[0]"),
    ("object key", b'{"entities": {"driver_id": [{"a": 1}]}, ' + SERVICE.encode() + b"}", 422,
     "entities.driver_id[0]"),
    ("wrong dtype", b'{"entities": {"driver_id": [1001]}, "features": ["trip_fit:trips_per_km"],'
     b' "request_data": {"distance_km": ["far"]}}', 422, "request_data.distance_km[0]"),
    ("entities a string", b'{"entities": "1001", ' + SERVICE.encode() + b"}", 422, "entities"),
    ("features a number", b'{"entities": {"driver_id": [1]}, "features": 5}', 422, "features"),
    ("both", b'{"entities": {"driver_id": [1]}, "features": ["a:b"], ' + SERVICE.encode() + b"}",
     422, "features"),
    ("NaN", b'{"entities": {"driver_id": [NaN]}, ' + SERVICE.encode() + b"}", 422, "body"),
    ("Infinity", b'{"entities": {"driver_id": [1]}, "features": ["trip_fit:trips_per_km"], '
     b'"request_data": {"distance_km": [Infinity]}}', 422, "body"),
    ("NUL and unicode key", '{"entities": {"driver_id": ["\\u0000\u00e9\U0001f600"]}, '
     f"{SERVICE}}}".encode(), 422, "driver_id"),
    ("NUL in key name", b'{"entities": {"driver\\u0000_id": [1]}, ' + SERVICE.encode() + b"}",
     422, "entities.driver\x00_id"),
    ("key 2^63", b'{"entities": {"driver_id": [9223372036854775808]}, ' + SERVICE.encode() + b"}",
     422, "entities.driver_id[0]"),
    ("key 2^64", b'{"entities": {"driver_id": [18446744073709551616]}, ' + SERVICE.encode()
     + b"}", 422, "entities.driver_id[0]"),
    ("key -2^63-1", b'{"entities": {"driver_id": [-9223372036854775809]}, ' + SERVICE.encode()
     + b"}", 422, "entities.driver_id[0]"),
    ("request_time 2^63", b'{"entities": {"driver_id": [1]}, "request_time": '
     b"9223372036854775808, " + SERVICE.encode() + b"}", 422, "request_time"),
    ("600k entities", b'{"entities": {"driver_id": [' + b",".join([b"1"] * 600_000) + b"]}, "
     + SERVICE.encode() + b"}", 413, "body"),
    ("5k entities", b'{"entities": {"driver_id": [' + b",".join([b"1"] * 5000) + b"]}, "
     + SERVICE.encode() + b"}", 413, "entities"),
    ("5k references", json.dumps({"entities": {"driver_id": [1]}, "features": [
        f"driver_hourly_stats:f{i}" for i in range(5000)]}).encode(), 413, "features"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "body", "status", "field"), CASES, ids=[c[0] for c in CASES])
def test_hostile_bodies_get_a_fast_4xx_naming_the_field(port, name, body, status, field):
    got, doc, took = post(port, body)
    assert got == status, doc
    assert field in (doc.get("field") or "") + (doc.get("message") or ""), doc
    assert took < 2.0, f"{name}: {took:.2f} s"
    assert health(port) == 200


def test_wrong_content_types_get_415_and_head_health_200(port):
    body = b'{"entities": {"driver_id": [1001]}, ' + SERVICE.encode() + b"}"
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None):
        status, doc, _ = post(port, body, ctype)
        assert status == 415 and doc["field"] == "Content-Type", ctype
    status, doc, _ = post(port, body, "application/json; charset=utf-8")
    assert status == 200 and doc["features"]["conv_rate"]["statuses"] == ["PRESENT"]
    assert health(port, "HEAD") == 200


def _until_closed(sock: socket.socket) -> tuple[bytes, float]:
    started = time.perf_counter()
    reply = b""
    while chunk := sock.recv(4096):
        reply += chunk
    return reply, time.perf_counter() - started


def test_slow_bodies_and_slow_headers_are_cut(port):
    # the server runs with 1 s body and header timeouts (served.TIMEOUT_ENV)
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(
            b"POST /v1/features/online HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n" + b'{"entities": '
        )
        reply, took = _until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 408") and took < 4.0, (reply, took)
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(b"POST /v1/features/online HTTP/1.1\r\nHost: x\r\nContent-")
        reply, took = _until_closed(sock)
    assert reply == b"" and took < 4.0, took  # closed without an answer
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        reply, took = _until_closed(sock)  # connected, sent nothing
    assert reply == b"" and took < 4.0, took
    assert health(port) == 200


def test_no_request_ended_in_a_server_error(port, tmp_path: Path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    assert 'status="5' not in text, text
