"""Fixtures shared by every tier: a clean real database per test (SQLite always, PostgreSQL when
configured), the API application on it, a space with a key, and a real ``crmhooks serve``
process. What they do lives in ``tests/support``; import helpers from there, never from here."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from crmhooks.settings import Settings
from crmhooks.store.keys import IssuedKey
from crmhooks.store.migrate import upgrade
from tests.support import live, targets
from tests.support.api import Api, api_settings, asgi_client
from tests.support.dashboard import dashboard_settings
from tests.support.databases import (
    ENGINES,
    PG_URL,
    clear,
    migrated_sqlite,
    new_space,
    pg_schema,
)
from tests.support.servers import Server, start_server, stop_server


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_sqlite(tmp_path_factory.mktemp("template") / "template.db")


@pytest.fixture(scope="session")
def pg_schema_url() -> Iterator[str | None]:
    """A schema of its own in the test database, migrated once; dropped at the end."""
    if not PG_URL:
        yield None
        return
    with pg_schema("crmhooks_test") as url:
        upgrade(url)
        yield url


@pytest.fixture(params=ENGINES)
def db_url(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    sqlite_template: Path,
    pg_schema_url: str | None,
) -> str:
    """A clean, migrated database for this test."""
    if request.param == "sqlite":
        path = tmp_path / "crmhooks.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    assert pg_schema_url is not None
    clear(pg_schema_url)
    return pg_schema_url


@pytest.fixture
def empty_pg_url() -> Iterator[str]:
    """A schema of its own with nothing in it, in the PostgreSQL test database."""
    if not PG_URL:
        pytest.skip("CRMHOOKS_TEST_POSTGRES_URL is not set")
    with pg_schema("crmhooks_migrations") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with nothing in it, of each engine (PostgreSQL: skipped when not configured)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.db'}"
    url: str = request.getfixturevalue("empty_pg_url")
    return url


@pytest.fixture
def settings(db_url: str) -> Settings:
    return api_settings(db_url)


@pytest.fixture
async def app_http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(settings) as client:
        yield client


@pytest.fixture
async def space(db_url: str) -> IssuedKey:
    return await new_space(db_url, "acme")


@pytest.fixture
def api(app_http: httpx.AsyncClient, space: IssuedKey) -> Api:
    app_http.auth = httpx.BasicAuth(space.api_key, space.api_secret)
    return Api(app_http, space)


@pytest.fixture
def empty_db_url(tmp_path: Path) -> str:
    """A database with nothing in it, not even tables (SQLite)."""
    return f"sqlite:///{tmp_path / 'fresh.db'}"


@pytest.fixture
def server(empty_db_url: str) -> Iterator[Server]:
    srv = start_server(empty_db_url)
    yield srv
    stop_server(srv)


@pytest.fixture
async def app_client(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The API and dashboard in process, without delivery (``dashboard_settings``)."""
    async with asgi_client(dashboard_settings(db_url)) as client:
        yield client


@pytest.fixture
async def spaces(db_url: str) -> tuple[IssuedKey, IssuedKey]:
    """Two spaces, "mine" and "theirs"."""
    return await new_space(db_url, "mine"), await new_space(db_url, "theirs")


@pytest.fixture
async def target() -> AsyncIterator[targets.Target]:
    """A receiver on loopback that counts what reaches it (the sender's guard tests)."""
    t = targets.Target()
    runner = await t.start()
    yield t
    await runner.cleanup()


@pytest.fixture
async def inbox() -> AsyncIterator[live.Inbox]:
    """A receiver on loopback keeping every request, for the dispatcher in process."""
    async with live.inbox() as box:
        yield box
