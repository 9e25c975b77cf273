"""Shared fixtures: a clean real database per test (SQLite always, PostgreSQL when configured),
the API application on it, a space with a key, and a real ``crmhooks serve`` process."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from crmhooks.app import create_app
from crmhooks.settings import Settings
from crmhooks.store.engine import open_database
from crmhooks.store.keys import IssuedKey, create_space
from crmhooks.store.migrate import upgrade
from crmhooks.store.tables import dispatch_state, metadata
from crmhooks.store.webhook_version import WEBHOOKS_VERSION
from tests.support.required import with_required

PG_URL = os.environ.get("CRMHOOKS_TEST_POSTGRES_URL")
ENGINES = ["sqlite", *(["postgresql"] if PG_URL else [])]


def _with_schema(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_schema_url() -> Iterator[str | None]:
    """A schema of its own in the test database, migrated once; dropped at the end."""
    if not PG_URL:
        yield None
        return
    schema = f"crmhooks_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = _with_schema(PG_URL, schema)
    upgrade(url)
    yield url
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def _truncate_pg(url: str) -> None:
    # DELETE, not TRUNCATE: on tables this small it is about twenty times faster, and it runs
    # before every PostgreSQL test.
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
        # The row migration 0008 put there, as a migrated database has it.
        conn.execute(
            dispatch_state.insert().values(
                name=WEBHOOKS_VERSION, last_seq=0, updated=datetime.now(UTC)
            )
        )
    engine.dispose()


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
    _truncate_pg(pg_schema_url)
    return pg_schema_url


@pytest.fixture
def settings(db_url: str) -> Settings:
    # The API alone: tests of delivery start a dispatcher of their own (or a real server).
    # Bad-input tests send many wrong credentials from one address: a failure budget they do
    # not reach (tests/hostile tests the throttle with a small one).
    return Settings(
        database_url=db_url, public_url="http://testserver", delivery=False, auth_failure_limit=1000
    )


async def new_space(db_url: str, space_id: str) -> IssuedKey:
    db = open_database(db_url)
    try:
        async with db.write() as conn:
            return await create_space(conn, space_id)
    finally:
        await db.dispose()


@dataclass
class Api:
    """An HTTP client on the app, signed in to one space, with the API's base path."""

    http: httpx.AsyncClient
    space: IssuedKey

    def path(self, entity: str, *rest: str) -> str:
        tail = "/".join([entity, *rest])
        return f"/api/v100/rest/spaces/{self.space.space_id}/entities/{tail}"

    async def create(self, entity: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        """POST a record; what Pipeliner requires and ``body`` leaves out is filled in
        (tests/support/required.py)."""
        body = with_required(entity, body, self.space.client_id)
        r = await self.http.post(self.path(entity), json=body, **kw)
        assert r.status_code == 201, r.text
        data: dict[str, Any] = r.json()["data"]
        return data

    async def get(self, entity: str, *rest: str, **kw: Any) -> httpx.Response:
        return await self.http.get(self.path(entity, *rest), **kw)


@asynccontextmanager
async def asgi_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app of ``settings``, started, behind an in-process HTTP client."""
    app = create_app(settings, migrate=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client,
    ):
        yield client


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    api_key: str
    api_secret: str
    process: subprocess.Popen[str]
    # Everything the server printed, read as it comes so that the pipe never fills up.
    output: list[str] = field(default_factory=list)
    drainer: threading.Thread | None = None
    client_id: str = ""  # the Client of the space's API user, printed with the key

    def printed(self) -> str:
        """What the server printed after it started listening (all of it once it has exited)."""
        if self.process.poll() is not None and self.drainer is not None:
            self.drainer.join(5)
        return "".join(self.output)


def _drain(stream: IO[str], into: list[str]) -> None:
    for line in stream:
        into.append(line)


def spawn_serve(args: list[str], env: dict[str, str]) -> tuple[Server, str]:
    """``crmhooks serve ARGS`` on a free loopback port until it answers; what it printed."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "crmhooks", "serve", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "listening on" in line:
            break
    out = "".join(lines)
    url = f"http://127.0.0.1:{port}"
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/openapi.json", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise AssertionError(f"server did not start:\n{out}")
    key = re.search(r"api key\s+(\S+)", out)
    secret = re.search(r"api secret\s+(\S+)", out)
    client = re.search(r"client id\s+(\S+)", out)
    rest: list[str] = []
    drainer = threading.Thread(target=_drain, args=(proc.stdout, rest), daemon=True)
    drainer.start()
    server = Server(
        url,
        key.group(1) if key else "",
        secret.group(1) if secret else "",
        proc,
        rest,
        drainer,
        client_id=client.group(1) if client else "",
    )
    return server, out


def start_server(db_url: str, *, extra_env: dict[str, str] | None = None) -> Server:
    """``crmhooks serve`` on a new database, with the key it printed."""
    env = {**os.environ, "CRMHOOKS_DATABASE_URL": db_url, **(extra_env or {})}
    server, out = spawn_serve([], env)
    if not server.api_key or not server.api_secret:
        server.process.kill()
        raise AssertionError(f"server printed no key:\n{out}")
    return server


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with nothing in it, not even tables (SQLite)."""
    return f"sqlite:///{tmp_path / 'fresh.db'}"


@pytest.fixture
def server(empty_db_url: str) -> Iterator[Server]:
    srv = start_server(empty_db_url)
    yield srv
    stop_server(srv)
