"""One space's hanging receivers cannot delay another space's deliveries (docs/webhooks.md,
Isolation): each space holds at most its share of the requests in flight, and the spaces with
work take turns in each claim."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from aiohttp import web

from crmhooks.app import create_app
from crmhooks.delivery.fairness import space_share, take_turns
from crmhooks.settings import Settings
from crmhooks.store.keys import IssuedKey
from tests.support.api import Api
from tests.support.databases import new_space
from tests.support.live import Inbox
from tests.support.servers import free_port

# Small beside what the hostile space wants (100 webhooks, two requests each until one fails):
# without a share per space its hanging requests take all of it, as 300 webhooks did of 256.
MAX_IN_FLIGHT = 64


def test_a_space_may_hold_half_the_room_by_default() -> None:
    assert space_share(256) == 128
    assert space_share(20) == 16  # enough for one healthy webhook
    assert space_share(8) == 8  # never more than the whole
    assert space_share(256, 40) == 40
    assert space_share(256, 1000) == 256


def test_spaces_take_turns_in_a_claim() -> None:
    space_of = {f"a{i:02}": "big" for i in range(5)} | {"b0": "small", "c0": "other"}
    order = take_turns(space_of, space_of, 0)
    assert order[:3] == ["a00", "c0", "b0"]  # one of each space before a second of any
    assert sorted(order) == sorted(space_of)
    rotated = take_turns(space_of, space_of, 1)
    assert rotated[:3] == ["c0", "b0", "a01"]  # the next claim starts with another space
    assert take_turns([], {}, 3) == []


@pytest.mark.slow
async def test_hanging_receivers_of_one_space_do_not_delay_another(
    db_url: str,
    space: IssuedKey,
    inbox: Inbox,
) -> None:
    share = space_share(MAX_IN_FLIGHT)
    release, full = asyncio.Event(), asyncio.Event()
    held = 0

    async def hang(request: web.Request) -> web.Response:
        nonlocal held
        held += 1
        if held >= share:
            full.set()
        await release.wait()  # accepts and never answers, until the test ends
        return web.Response()

    port = free_port()
    hanging = web.Application()
    hanging.router.add_post("/dead/{n}", hang)
    runner = web.AppRunner(hanging)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    calm_space = await new_space(db_url, "calm")
    settings = Settings(
        database_url=db_url,
        public_url="http://testserver",
        allowed_targets="127.0.0.0/8",
        request_timeout=30.0,  # the hanging requests stay out for the whole test
        max_in_flight=MAX_IN_FLIGHT,
    )
    app = create_app(settings, migrate=False)
    transport = httpx.ASGITransport(app=app)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        ):
            hostile = Api(client, space)
            calm = Api(client, calm_space)
            hostile_auth = httpx.BasicAuth(space.api_key, space.api_secret)
            calm_auth = httpx.BasicAuth(calm_space.api_key, calm_space.api_secret)
            one = {"chunk_size": 1}
            hook = {"url": inbox.url, "events": ["Account.Create"], "options": one}
            hook["insecure_ssl"] = False
            r = await client.post(calm.path("Webhooks"), json=hook, auth=calm_auth)
            assert r.status_code == 201, r.text
            # The hostile space: as many webhooks as it may have, each with a backlog.
            dead = [
                {"url": f"http://127.0.0.1:{port}/dead/{n}", "events": ["Account.Create"]}
                | {"options": one, "insecure_ssl": False}
                for n in range(settings.max_webhooks_per_space)
            ]
            r = await client.post(
                hostile.path("Webhooks", "batch-modify"), json=dead, auth=hostile_auth
            )
            assert r.status_code == 200, r.text
            accounts = [{"name": f"a{i}", "owner_id": space.client_id} for i in range(5)]
            r = await client.post(
                hostile.path("Accounts", "batch-modify"), json=accounts, auth=hostile_auth
            )
            assert r.status_code == 200, r.text
            # The hostile space's receivers hang with all it may hold.
            await asyncio.wait_for(full.wait(), 10)

            latencies = []
            for i in range(5):
                started = time.monotonic()
                await calm.create("Accounts", {"name": f"calm{i}"}, auth=calm_auth)
                await inbox.wait_for(i + 1, within=5)
                latencies.append(inbox.requests[i][0] - started)
            assert max(latencies) < 1.0, latencies
            assert held == share  # never more than its share, however long it waits
            release.set()  # answer now, so that the dispatcher stops at once
    finally:
        release.set()
        await runner.cleanup()
