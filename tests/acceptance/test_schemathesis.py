"""Requests generated from the server's own OpenAPI document, valid and invalid alike, against a
real ``crmhooks serve`` process: none of them may make the server fail (no 5xx).

Each operation is one subtest, with a fixed number of positive and of negative cases drawn
deterministically, so a run is bounded and reproducible.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

from tests.support.servers import Server, start_server, stop_server

EXAMPLES_PER_MODE = 4
SEED = 20261127


@pytest.fixture(scope="module")
def crm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    path: Path = tmp_path_factory.mktemp("schemathesis") / "crmhooks.db"
    server = start_server(f"sqlite:///{path}")
    yield server
    stop_server(server)


def load_schema(server: Server) -> Any:
    config = SchemathesisConfig.from_dict(
        {
            "base-url": server.url,
            "auth": {"basic": {"username": server.api_key, "password": server.api_secret}},
            "checks": {"enabled": False, "not_a_server_error": {"enabled": True}},
            "request-timeout": 10,
        }
    )
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=config)


def run_operation(operation: Any, mode: GenerationMode, session: requests.Session) -> None:
    # The space the printed key opens: any other space is a plain 401 and tests nothing.
    strategy = operation.as_strategy(mode, path_parameters={"space_id": "default"})

    @seed(SEED)
    @settings(
        max_examples=EXAMPLES_PER_MODE,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is shown as found
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def check(case: schemathesis.Case) -> None:
        # A request that hangs is a failure too, not a stuck test run.
        case.call_and_validate(session=session, checks=[not_a_server_error], timeout=15)

    try:
        check()
    except Unsatisfiable:
        if mode is not GenerationMode.NEGATIVE:
            raise
        # An operation without parameters or body (GET /health) has nothing to make invalid.


@pytest.mark.slow
def test_no_generated_request_makes_the_server_fail(
    crm_server: Server, subtests: pytest.Subtests
) -> None:
    schema = load_schema(crm_server)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 80  # every entity's routes, custom entities, qualify, back-to-lead
    with requests.Session() as session:
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                with subtests.test(operation=operation.label, mode=mode.value):
                    run_operation(operation, mode, session)
    assert crm_server.process.poll() is None, "the server died"
