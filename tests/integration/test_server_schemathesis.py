"""Schemathesis against a real server process with the quickstart repo (issue 15).

Every documented operation gets generated requests, valid ones and invalid ones
(positive and negative modes), with a fixed seed and a bounded number of
examples (about a minute in all on a 2-core machine). A run fails on any 5xx, a
status code or content type the schema does not list, a response body that does
not match its schema, or an invalid request the server accepts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.served import running_server, served_repo

EXAMPLES = {GenerationMode.POSITIVE: 150, GenerationMode.NEGATIVE: 150}
LOOKUP_EXAMPLES = 6  # times more for the lookup route, where the input space is
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("schemathesis")
    with running_server(served_repo(root / "repo"), root / "server.log") as port:
        yield f"http://127.0.0.1:{port}"


def _run(operation: Any, mode: GenerationMode, examples: int, base_url: str, session: Any):
    checks = [*CHECKS, negative_data_rejection] if mode.is_negative else CHECKS

    @settings(
        max_examples=examples,
        derandomize=True,  # a fixed seed: the same cases every run
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=base_url, session=session, checks=checks)

    run()


def test_every_operation_conforms_to_the_published_schema(base_url):
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    session = requests.Session()
    ran = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode, examples in EXAMPLES.items():
            if operation.method.upper() == "POST":
                examples *= LOOKUP_EXAMPLES
            elif mode.is_negative:
                continue  # the GET routes take no input: nothing invalid to send
            _run(operation, mode, examples, base_url, session)
            ran.append((operation.method.upper(), operation.path, mode.value))
    assert ("POST", "/v1/features/online", "negative") in ran, ran
