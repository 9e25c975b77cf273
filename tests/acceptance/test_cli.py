"""The command line (docs/api.md#command-line), run as real processes on real databases."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select

from crmhooks.store.engine import sync_url
from crmhooks.store.tables import TABLES, api_keys, spaces
from tests.support.api import Api
from tests.support.servers import Server, spawn_serve, start_server, stop_server

# Every test runs the command line or a server as processes.
pytestmark = pytest.mark.slow


def crmhooks(*args: str, database: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("CRMHOOKS_DATABASE_URL", None)
    if database is not None:
        env["CRMHOOKS_DATABASE_URL"] = database
    return subprocess.run(
        [sys.executable, "-m", "crmhooks", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def serve_without_key(db_url: str) -> tuple[Server, str]:
    """``crmhooks serve --database URL`` until it listens; its server and what it printed."""
    env = {k: v for k, v in os.environ.items() if k != "CRMHOOKS_DATABASE_URL"}
    return spawn_serve(["--database", db_url], env)


def stop_and_read(server: Server) -> str:
    """Stop the server; everything else it printed."""
    stop_server(server)
    return server.printed()


def accounts(server_url: str, space_id: str) -> str:
    return f"{server_url}/api/v100/rest/spaces/{space_id}/entities/Accounts"


def key_rows(db_url: str) -> list[dict[str, Any]]:
    engine = create_engine(sync_url(db_url))
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(api_keys)).mappings()]
    finally:
        engine.dispose()


def space_ids(db_url: str) -> list[str]:
    engine = create_engine(sync_url(db_url))
    try:
        with engine.connect() as conn:
            return sorted(r[0] for r in conn.execute(select(spaces.c.id)))
    finally:
        engine.dispose()


def client_rows(db_url: str) -> list[tuple[str, str]]:
    clients = TABLES["clients"]
    engine = create_engine(sync_url(db_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(clients.c.id, clients.c.space_id))
            return sorted((r[0], r[1]) for r in rows)
    finally:
        engine.dispose()


def sqlite_bytes(db_url: str) -> bytes:
    """The SQLite file and its journal files, as stored."""
    path = Path(db_url.removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))


def create_space_json(space_id: str, db_url: str) -> dict[str, str]:
    done = crmhooks("spaces", "create", space_id, "--json", "--database", db_url)
    assert done.returncode == 0, done.stderr
    issued: dict[str, str] = json.loads(done.stdout)
    return issued


def test_spaces_create_json_prints_a_key_whose_secret_is_stored_hashed(db_url: str) -> None:
    issued = create_space_json("acme", db_url)
    assert set(issued) == {"space_id", "api_key", "api_secret", "client_id"}
    assert issued["space_id"] == "acme"
    # The space's API user, for an integration to write as owner_id.
    assert client_rows(db_url) == [(issued["client_id"], "acme")]
    assert issued["api_key"]
    assert len(issued["api_secret"]) >= 32
    assert space_ids(db_url) == ["acme"]
    (row,) = key_rows(db_url)
    assert (row["space_id"], row["key"]) == ("acme", issued["api_key"])
    # The secret is kept only as a hash: it is in no column, nor anywhere in an SQLite file.
    assert all(issued["api_secret"] not in str(v) for v in row.values())
    if db_url.startswith("sqlite"):
        assert issued["api_secret"].encode() not in sqlite_bytes(db_url)
    # Without --json it prints the same things for a person to read.
    done = crmhooks("spaces", "create", "beta", database=db_url)
    assert done.returncode == 0, done.stderr
    assert "beta" in done.stdout
    assert "api key" in done.stdout
    assert "api secret" in done.stdout
    assert "client id" in done.stdout
    assert space_ids(db_url) == ["acme", "beta"]


def test_creating_a_space_again_fails_with_a_clear_message(db_url: str) -> None:
    first = create_space_json("acme", db_url)
    again = crmhooks("spaces", "create", "acme", "--json", "--database", db_url)
    assert again.returncode != 0
    said = " ".join(again.stderr.split())
    assert "space 'acme' exists already" in said
    assert again.stdout.strip() == ""
    (row,) = key_rows(db_url)
    assert row["key"] == first["api_key"]


@pytest.mark.parametrize("space_id", ["bad id!", "x" * 65, "acme\n"])
def test_space_id_outside_the_contract_is_refused(space_id: str, empty_db_url: str) -> None:
    done = crmhooks("spaces", "create", space_id, "--json", "--database", empty_db_url)
    assert done.returncode != 0
    assert "is not a space id" in " ".join(done.stderr.split())
    assert done.stdout.strip() == ""


def test_key_from_spaces_create_works_against_a_server_on_the_same_file(
    empty_db_url: str,
) -> None:
    server = start_server(empty_db_url)
    try:
        issued = create_space_json("acme", empty_db_url)
        mine = httpx.BasicAuth(issued["api_key"], issued["api_secret"])
        default = httpx.BasicAuth(server.api_key, server.api_secret)
        with httpx.Client(timeout=10) as client:
            body = {"name": "Acme", "owner_id": issued["client_id"]}
            r = client.post(accounts(server.url, "acme"), json=body, auth=mine)
            assert r.status_code == 201, r.text
            r = client.get(accounts(server.url, "acme"), auth=mine)
            assert r.status_code == 200, r.text
            assert [a["name"] for a in r.json()["data"]] == ["Acme"]
            # Each key opens its own space only.
            assert client.get(accounts(server.url, "default"), auth=mine).status_code == 401
            assert client.get(accounts(server.url, "acme"), auth=default).status_code == 401
            r = client.get(accounts(server.url, "default"), auth=default)
            assert r.json()["total"] == 0
            wrong = httpx.BasicAuth(issued["api_key"], issued["api_secret"] + "x")
            r = client.get(accounts(server.url, "acme"), auth=wrong)
            assert r.status_code == 401
            assert r.headers["www-authenticate"] == 'Basic realm="restapi"'
    finally:
        stop_server(server)


def test_serve_prints_the_default_key_once_and_stores_only_its_hash(
    empty_db_url: str,
) -> None:
    assert not Path(empty_db_url.removeprefix("sqlite:///")).exists()
    first = start_server(empty_db_url)
    first_rest = stop_and_read(first)
    assert "api secret" not in first_rest
    assert space_ids(empty_db_url) == ["default"]

    second, printed = serve_without_key(empty_db_url)
    try:
        assert "listening on" in printed
        assert "api key" not in printed
        assert "api secret" not in printed
        assert first.api_secret not in printed
        # The key printed the first time still opens the default space, and the Client
        # printed with it is the space's API user.
        auth = httpx.BasicAuth(first.api_key, first.api_secret)
        body = {"name": "Acme", "owner_id": first.client_id}
        r = httpx.post(accounts(second.url, "default"), json=body, auth=auth)
        assert r.status_code == 201, r.text
        assert r.json()["data"]["owner_id"] == first.client_id
    finally:
        rest = stop_and_read(second)
    assert "api secret" not in rest
    assert first.api_secret not in rest
    assert space_ids(empty_db_url) == ["default"]

    (row,) = key_rows(empty_db_url)
    assert row["key"] == first.api_key
    assert first.api_secret not in [str(v) for v in row.values()]
    assert first.api_secret.encode() not in sqlite_bytes(empty_db_url)


def test_sigterm_stops_serve_cleanly_within_a_bound(tmp_path: Path) -> None:
    server = start_server(f"sqlite:///{tmp_path / 'term.db'}")
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    code = server.process.wait(timeout=20)
    assert code == 0
    assert time.monotonic() - started < 15


async def test_events_prints_the_feed_and_follows_it(api: Api, db_url: str) -> None:
    hook = {"url": "http://93.184.216.34/hook", "events": ["Contact.Create"]}
    await api.create("Webhooks", {**hook, "insecure_ssl": False})  # records rendered in writes
    for name in ("first", "second"):
        await api.create("Accounts", {"name": name})
    space = api.space.space_id
    done = await asyncio.to_thread(crmhooks, "events", space, "--database", db_url)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if "Account.Create" in line]
    assert [line.split()[-1] for line in lines] == ["first", "second"]
    cursor = done.stderr.split("--after", 1)[1].split()[0]
    await api.create("Accounts", {"name": "third"})
    later = await asyncio.to_thread(
        crmhooks, "events", space, "--after", cursor, "--event", "Account.*", "--database", db_url
    )
    assert [line.split()[-1] for line in later.stdout.splitlines()] == ["third"]
    bad = await asyncio.to_thread(
        crmhooks, "events", space, "--event", "Nope.Create", "--database", db_url
    )
    assert bad.returncode == 1
    assert "--event: unknown event 'Nope.Create'" in bad.stderr
    unknown = await asyncio.to_thread(crmhooks, "events", "nowhere", "--database", db_url)
    assert unknown.returncode == 1
    assert "there is no space 'nowhere'" in unknown.stderr
    # --follow prints what is written while it runs.
    env = {k: v for k, v in os.environ.items() if k != "CRMHOOKS_DATABASE_URL"}
    follow = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "crmhooks", "events", space, "--after", cursor, "-f"],
        env={**env, "CRMHOOKS_DATABASE_URL": db_url},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follow.stdout is not None
        first = await asyncio.wait_for(asyncio.to_thread(follow.stdout.readline), 30)
        assert first.split()[-1] == "third"
        await api.create("Accounts", {"name": "fourth"})
        line = await asyncio.wait_for(asyncio.to_thread(follow.stdout.readline), 10)
        assert line.split()[-1] == "fourth"
        follow.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(follow.wait, 10) == 0
    finally:
        if follow.poll() is None:
            follow.kill()
            await asyncio.to_thread(follow.wait)
