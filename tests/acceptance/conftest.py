"""End-to-end fixtures for the webhook engine: a real ``crmhooks serve`` process and receiver
process per engine, kept for the module, and a fresh space per test (``tests/support/stack.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.databases import ENGINES
from tests.support.servers import Server, start_server, stop_server
from tests.support.stack import Space, Stack, Stacks


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stacks]:
    pool = Stacks(tmp_path_factory)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(params=ENGINES)
def stack(request: pytest.FixtureRequest, stacks: Stacks) -> Stack:
    """The shared server and receiver of one engine (each engine in turn)."""
    return stacks.get(str(request.param))


@pytest.fixture
def sqlite_stack(stacks: Stacks) -> Stack:
    """The shared SQLite server and receiver, for what does not depend on the engine."""
    return stacks.get("sqlite")


@pytest.fixture
def tenant(stack: Stack) -> Iterator[Space]:
    """A fresh space on the shared server of each engine."""
    sp = stack.new_space()
    yield sp
    sp.http.close()


@pytest.fixture
def sqlite_tenant(sqlite_stack: Stack) -> Iterator[Space]:
    """A fresh space on the shared SQLite server."""
    sp = sqlite_stack.new_space()
    yield sp
    sp.http.close()


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server WITHOUT an allow list: private and loopback targets are refused."""
    path = tmp_path_factory.mktemp("e2e-plain") / "crmhooks.db"
    srv = start_server(f"sqlite:///{path}", extra_env={"CRMHOOKS_LOG_LEVEL": "warning"})
    yield srv
    stop_server(srv)
