"""One tenant cannot hurt another (issue 14): keys and sessions.

A revoked, expired or deleted key stops working in a running server within a second; signing
out or revoking a key ends every dashboard session of it, copies of the cookie included; a
malformed session cookie is "not signed in", never a 500; failed authentications are throttled
per address and per key, and never lock out someone whose key and secret are right.

Real ``crmhooks serve`` and ``crmhooks keys`` processes where two processes matter, else the
application in process; real databases (SQLite, and PostgreSQL when configured).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, delete, select

from crmhooks.app import create_app
from crmhooks.settings import Settings
from crmhooks.store.engine import open_database, sync_url
from crmhooks.store.keys import IssuedKey, revoke_key, rotate_key
from crmhooks.store.tables import api_keys
from crmhooks.ui.sessions import SESSION_COOKIE
from tests.support.dashboard import NOWHERE, Visitor, assert_page, webhooks_in
from tests.support.databases import engine_independent, new_space
from tests.support.servers import Server, start_server, stop_server

ACCOUNTS = "/api/v100/rest/spaces/{space}/entities/Accounts"
REVOKED_WITHIN = 1.0  # seconds: docs/api.md#command-line


def crmhooks(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CRMHOOKS_DATABASE_URL": db_url}
    return subprocess.run(
        [sys.executable, "-m", "crmhooks", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def status_with(server: Server, api_key: str, secret: str, space: str = "default") -> int:
    r = httpx.get(server.url + ACCOUNTS.format(space=space), auth=(api_key, secret), timeout=5)
    return r.status_code


def wait_for_status(check: Callable[[], int], want: int, seconds: float) -> float:
    """How long until ``check()`` answered ``want``; fails after ``seconds``."""
    start = time.monotonic()
    while True:
        got = check()
        waited = time.monotonic() - start
        if got == want:
            return waited
        assert waited < seconds, f"still {got} after {waited:.2f} s, wanted {want}"
        time.sleep(0.05)


@pytest.fixture
def server(db_url: str) -> Any:
    srv = start_server(db_url)
    yield srv
    stop_server(srv)


# --- revocation, deletion, rotation across processes -----------------------------------------


@pytest.mark.slow
def test_a_key_revoked_from_the_command_line_gets_401_in_a_running_server_within_a_second(
    server: Server, db_url: str
) -> None:
    for _ in range(3):  # the server has the key cached
        assert status_with(server, server.api_key, server.api_secret) == 200
    done = crmhooks(db_url, "keys", "revoke", "default", server.api_key)
    assert done.returncode == 0, done.stderr
    wait_for_status(
        lambda: status_with(server, server.api_key, server.api_secret), 401, REVOKED_WITHIN
    )
    r = httpx.get(
        server.url + ACCOUNTS.format(space="default"),
        auth=(server.api_key, server.api_secret),
    )
    assert r.headers["www-authenticate"] == 'Basic realm="restapi"'
    assert r.json()["name"] == "ERROR_UNAUTHORIZED"
    listed = crmhooks(db_url, "keys", "list", "default")
    assert server.api_key in listed.stdout
    assert "revoked" in listed.stdout
    assert server.api_secret not in listed.stdout


@pytest.mark.slow
def test_a_key_deleted_from_the_database_gets_401_within_a_second(
    server: Server, db_url: str
) -> None:
    assert status_with(server, server.api_key, server.api_secret) == 200
    engine = create_engine(sync_url(db_url))
    try:
        with engine.begin() as conn:
            conn.execute(delete(api_keys).where(api_keys.c.key == server.api_key))
    finally:
        engine.dispose()
    wait_for_status(
        lambda: status_with(server, server.api_key, server.api_secret), 401, REVOKED_WITHIN
    )


@pytest.mark.slow
def test_a_rotated_key_works_for_its_grace_period_then_gets_401(
    server: Server, db_url: str
) -> None:
    assert status_with(server, server.api_key, server.api_secret) == 200
    done = crmhooks(db_url, "keys", "rotate", "default", server.api_key, "--grace", "3", "--json")
    assert done.returncode == 0, done.stderr
    new = json.loads(done.stdout)
    assert new["space_id"] == "default"
    assert new["api_key"] != server.api_key
    ends = expiry_of(db_url, server.api_key)
    assert status_with(server, new["api_key"], new["api_secret"]) == 200
    if time.time() < ends - 0.5:  # (a slow machine may have spent the grace starting the CLI)
        assert status_with(server, server.api_key, server.api_secret) == 200
    wait_for_status(
        lambda: status_with(server, server.api_key, server.api_secret),
        401,
        max(0.0, ends - time.time()) + REVOKED_WITHIN,
    )
    assert time.time() >= ends  # not before the grace period ended
    assert status_with(server, new["api_key"], new["api_secret"]) == 200


def expiry_of(db_url: str, api_key: str) -> float:
    """When the key expires, in Unix seconds."""
    engine = create_engine(sync_url(db_url))
    try:
        with engine.connect() as conn:
            ends = conn.execute(
                select(api_keys.c.expires_at).where(api_keys.c.key == api_key)
            ).scalar_one()
    finally:
        engine.dispose()
    assert isinstance(ends, datetime)
    return (ends if ends.tzinfo else ends.replace(tzinfo=UTC)).timestamp()


# Lookups that find nothing: the command line on PostgreSQL is exercised by the tests above.
@pytest.mark.slow
@engine_independent
def test_key_commands_name_an_unknown_space_or_key_and_change_nothing(db_url: str) -> None:
    assert crmhooks(db_url, "spaces", "create", "acme").returncode == 0
    for args in (
        ["keys", "create", "nowhere"],
        ["keys", "list", "nowhere"],
        ["keys", "revoke", "nowhere", "ck_x"],
        ["keys", "revoke", "acme", "ck_not_a_key"],
        ["keys", "rotate", "acme", "ck_not_a_key"],
    ):
        done = crmhooks(db_url, *args)
        assert done.returncode == 1, (args, done.stdout)
        assert "nowhere" in done.stderr or "ck_not_a_key" in done.stderr, done.stderr
    listed = crmhooks(db_url, "keys", "list", "acme")
    assert listed.returncode == 0
    assert listed.stdout.count("active") == 1


# --- dashboard sessions ----------------------------------------------------------------------


@pytest.fixture
def app_settings(db_url: str) -> Settings:
    return Settings(
        database_url=db_url,
        public_url="http://testserver",
        delivery=False,
        allowed_targets="127.0.0.0/8",
        auth_failure_limit=3,
    )


Connect = Callable[[str], httpx.AsyncClient]


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Connect]:
    """The app, started; a function giving clients that come from a given address."""
    app = create_app(settings, migrate=False)
    clients: list[httpx.AsyncClient] = []

    def connect(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(address, 50000))
        client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        clients.append(client)
        return client

    async with app.router.lifespan_context(app):
        try:
            yield connect
        finally:
            for client in clients:
                await client.aclose()


@pytest.fixture
async def connect(app_settings: Settings) -> AsyncIterator[Connect]:
    async with running(app_settings) as connect:
        yield connect


@pytest.fixture
async def acme(db_url: str) -> IssuedKey:
    return await new_space(db_url, "acme")


async def a_copy_of(me: Visitor, connect: Connect) -> Visitor:
    """Another browser with the same session cookie and CSRF token (a stolen copy)."""
    thief = Visitor(connect("10.9.9.9"), me.csrf)
    thief.http.cookies.set(SESSION_COOKIE, me.http.cookies[SESSION_COOKIE], path="/ui")
    return thief


async def a_webhook(connect: Connect, key: IssuedKey) -> str:
    http = connect("127.0.0.1")
    r = await http.post(
        ACCOUNTS.format(space=key.space_id).replace("Accounts", "Webhooks"),
        json={"url": NOWHERE, "events": ["Account.Create"], "insecure_ssl": False},
        auth=(key.api_key, key.api_secret),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["data"]["id"])


async def test_a_copied_cookie_and_its_csrf_token_are_refused_after_sign_out(
    connect: Connect, acme: IssuedKey
) -> None:
    hook = await a_webhook(connect, acme)
    me = Visitor(connect("127.0.0.1"))
    await me.sign_in(acme)
    thief = await a_copy_of(me, connect)
    assert (await thief.http.get("/ui/webhooks")).status_code == 200  # the copy works ...
    await me.post("/ui/signout")
    r = await thief.http.get("/ui/webhooks")  # ... until the session is signed out of
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/signin"
    r = await thief.post(f"/ui/webhooks/{hook}/pause", {"return_to": "list"})
    assert_page(r, 401, "your session has ended")
    assert (await webhooks_in(connect("127.0.0.1"), acme))[0]["is_active"] is True
    await me.sign_in(acme)  # signing in again gives a new, working session
    assert (await me.http.get("/ui/webhooks")).status_code == 200


async def test_revoking_a_key_ends_its_dashboard_sessions(
    connect: Connect, acme: IssuedKey, db_url: str
) -> None:
    hook = await a_webhook(connect, acme)
    me = Visitor(connect("127.0.0.1"))
    await me.sign_in(acme)
    db = open_database(db_url)  # another connection, as `crmhooks keys revoke` would have
    try:
        async with db.write() as conn:
            assert await revoke_key(conn, "acme", acme.api_key)
    finally:
        await db.dispose()
    deadline = time.monotonic() + REVOKED_WITHIN
    while (await me.http.get("/ui/webhooks")).status_code != 303:
        assert time.monotonic() < deadline, "the session outlived its key"
    r = await me.post(f"/ui/webhooks/{hook}/pause", {"return_to": "list"})
    assert_page(r, 401, "your session has ended")


async def test_a_rotated_key_s_sessions_end_with_its_grace_period(
    connect: Connect, acme: IssuedKey, db_url: str
) -> None:
    me = Visitor(connect("127.0.0.1"))
    await me.sign_in(acme)
    db = open_database(db_url)
    try:
        async with db.write() as conn:
            new, _ = await rotate_key(conn, "acme", acme.api_key, 0)
    finally:
        await db.dispose()
    deadline = time.monotonic() + REVOKED_WITHIN
    while (await me.http.get("/ui/webhooks")).status_code != 303:
        assert time.monotonic() < deadline, "the session outlived its key's grace period"
    await me.sign_in(new)
    assert (await me.http.get("/ui/webhooks")).status_code == 200


@engine_independent
@pytest.mark.parametrize(
    "mangle",
    [
        lambda c: c.split(".")[0] + ".éé",  # the review's case: a non-ASCII signature
        lambda c: "éé." + c.split(".")[1],
        lambda c: c[: len(c) // 2],  # truncated
        lambda c: c[:-2] + ("AA" if not c.endswith("AA") else "BB"),  # wrong signature
        lambda c: c.replace(".", ".."),
        lambda c: "%%%." + c.split(".")[1],
        lambda c: c + "." + c,
        lambda c: "x" * 5000,
        lambda c: "\udcff." + c.split(".")[1],
    ],
    ids=[
        "nonascii-mac",
        "nonascii-payload",
        "truncated",
        "wrong-mac",
        "two-dots",
        "bad-b64",
        "doubled",
        "huge",
        "surrogate",
    ],
)
async def test_a_malformed_session_cookie_is_not_signed_in_and_never_a_500(
    connect: Connect, acme: IssuedKey, mangle: Callable[[str], str]
) -> None:
    me = Visitor(connect("127.0.0.1"))
    await me.sign_in(acme)
    bad = mangle(me.http.cookies[SESSION_COOKIE])
    raw = f"{SESSION_COOKIE}={bad}".encode(errors="surrogateescape")
    other = connect("127.0.0.1")
    r = await other.get("/ui/webhooks", headers={"cookie": raw})
    assert r.status_code == 303, r.text[:500]
    assert r.headers["location"] == "/ui/signin"
    r = await other.post("/ui/signout", headers={"cookie": raw, "x-csrf-token": me.csrf})
    assert r.status_code == 401, r.text[:500]


# --- throttling failed authentication ---------------------------------------------------------


async def test_failed_basic_auth_is_throttled_per_address_and_key_without_locking_anyone_out(
    connect: Connect, acme: IssuedKey, db_url: str
) -> None:
    other = await new_space(db_url, "other")
    hostile, elsewhere, bystander = connect("10.0.0.1"), connect("10.0.0.2"), connect("10.0.0.3")
    url = ACCOUNTS.format(space="acme")
    for _ in range(3):  # the budget of the test settings
        r = await hostile.get(url, auth=(acme.api_key, "wrong"))
        assert r.status_code == 401
    r = await hostile.get(url, auth=(acme.api_key, "wrong"))
    assert r.status_code == 429
    body = r.json()
    assert body["name"] == "ERROR_TOO_MANY_REQUESTS"
    assert body["http_status"] == 429
    assert body["success"] is False
    assert body["code"] == 429
    assert 0 < int(r.headers["retry-after"]) <= 60
    # The address is over its budget for any key, the key from any address ...
    r = await hostile.get(ACCOUNTS.format(space="other"), auth=(other.api_key, "wrong"))
    assert r.status_code == 429
    assert (await elsewhere.get(url, auth=(acme.api_key, "wrong"))).status_code == 429
    # ... but right credentials pass, from that address too, and other failures are 401.
    assert (await hostile.get(url, auth=(acme.api_key, acme.api_secret))).status_code == 200
    r = await hostile.get(ACCOUNTS.format(space="other"), auth=(other.api_key, other.api_secret))
    assert r.status_code == 200
    r = await bystander.get(ACCOUNTS.format(space="other"), auth=(other.api_key, "wrong"))
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Basic realm="restapi"'


async def test_failed_sign_ins_are_throttled_with_a_message_and_a_right_one_still_works(
    connect: Connect, acme: IssuedKey
) -> None:
    me = Visitor(connect("10.0.0.7"))
    await me.get("/ui/signin")
    wrong = {"api_key": acme.api_key, "api_secret": "wrong"}
    for _ in range(3):
        assert_page(await me.post("/ui/signin", wrong), 401, "Sign-in failed")
    r = await me.post("/ui/signin", wrong)
    assert_page(r, 429, "Too many failed sign-ins", "Please wait")
    assert int(r.headers["retry-after"]) > 0
    # The API shares the budget: the same key now gets 429 there too.
    r = await connect("10.0.0.8").get(ACCOUNTS.format(space="acme"), auth=(acme.api_key, "x"))
    assert r.status_code == 429
    await me.sign_in(acme)
    assert (await me.http.get("/ui/webhooks")).status_code == 200
