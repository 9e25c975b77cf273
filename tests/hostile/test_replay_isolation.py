"""A large replay (docs/webhooks.md#replay) does not hold up another webhook's live deliveries:
while one webhook is replayed thousands of events to a slow receiver, events written for another
webhook arrive in a small part of the time the replay takes, during the planning and during
the sending."""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import UTC, datetime

import pytest
from aiohttp import web

from crmhooks.schema.values import format_datetime
from crmhooks.store.keys import IssuedKey
from tests.support.api import Api
from tests.support.live import Inbox, live_client, receiving
from tests.support.servers import free_port

EVENTS = 2000  # replayed, one request each
SLOW = 0.02  # seconds the replayed webhook's receiver takes per request


@pytest.mark.slow
async def test_a_large_replay_does_not_delay_another_webhooks_live_events(
    db_url: str, space: IssuedKey, inbox: Inbox
) -> None:
    got = 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal got
        await request.read()
        await asyncio.sleep(SLOW)
        got += 1
        return web.Response(status=200)

    port = free_port()
    async with receiving(port, "/slow", slow), live_client(db_url, space) as client:
        api = Api(client, space)
        since = datetime.now(UTC)
        owner = space.client_id
        for i in range(0, EVENTS, 100):
            batch = [{"name": f"n{i + j}", "owner_id": owner} for j in range(100)]
            r = await client.post(api.path("Accounts", "batch-modify"), json=batch)
            assert r.status_code == 200, r.text
        replayed = await api.create(
            "Webhooks",
            {
                "url": f"http://127.0.0.1:{port}/slow",
                "events": ["Account.Create"],
                "insecure_ssl": False,
                "options": {"chunk_size": 1},
            },
        )
        await api.create(
            "Webhooks", {"url": inbox.url, "events": ["Contact.Create"], "insecure_ssl": False}
        )
        path = api.path("Webhooks", replayed["id"], "replay")

        started = time.monotonic()
        replay = asyncio.create_task(client.post(path, json={"since": format_datetime(since)}))
        latencies: list[float] = []
        while got < EVENTS:
            assert time.monotonic() - started < 120, f"{got} of {EVENTS} replayed requests"
            t0 = time.monotonic()
            await api.create("Contacts", {"first_name": "probe", "last_name": str(len(latencies))})
            await inbox.wait_for(len(latencies) + 1, within=30)
            latencies.append(time.monotonic() - t0)
            await asyncio.sleep(0.1)
        took = time.monotonic() - started
        r = await replay
        assert r.status_code == 200, r.text
        assert r.json()["data"] == {"events": EVENTS, "requests": EVENTS}

    # The replay keeps its receiver busy for seconds; each live probe (a create, then its
    # delivery to the other webhook) stays a small part of that, and probes ran throughout.
    assert took > 2.0, took
    assert len(latencies) >= 5, latencies
    assert max(latencies) < took / 4, (max(latencies), took, latencies)
    assert statistics.median(latencies) < 0.5, latencies
