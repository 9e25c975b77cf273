"""Routing with a matching budget per space and step (``delivery.budget``): a space past its
budget has its events held, stored with the cursor, and routed in later steps oldest first,
before any newer event of that space; the other spaces' events go on meanwhile. A router that
starts again (another process, a restart) takes the held events from the table."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from crmhooks.delivery.router import Router
from crmhooks.store.engine import open_database
from crmhooks.store.keys import IssuedKey
from crmhooks.store.tables import deliveries, events
from tests.support.api import Api
from tests.support.databases import new_space

# A public address literal: registration needs no lookup, and nothing is sent here.
TARGET = "http://93.184.216.34/hook"
HOOK = {"url": TARGET, "events": ["Account.Create"], "insecure_ssl": False}


async def _seqs(db_url: str) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Every event's seq per space, and the first seq of every request per space."""
    db = open_database(db_url)
    try:
        async with db.read() as conn:
            written: dict[str, list[int]] = {}
            for space_id, seq in await conn.execute(
                select(events.c.space_id, events.c.seq)
                .where(events.c.name == "Account.Create")
                .order_by(events.c.seq)
            ):
                written.setdefault(space_id, []).append(int(seq))
            routed: dict[str, list[int]] = {}
            for space_id, seq in await conn.execute(
                select(deliveries.c.space_id, deliveries.c.first_seq).order_by(
                    deliveries.c.first_seq
                )
            ):
                routed.setdefault(space_id, []).append(int(seq))
            return written, routed
    finally:
        await db.dispose()


async def test_a_space_past_its_budget_is_routed_later_in_order(
    api: Api, db_url: str, app_http: httpx.AsyncClient
) -> None:
    other: IssuedKey = await new_space(db_url, "other")
    other_api = Api(app_http, other)
    other_auth = httpx.BasicAuth(other.api_key, other.api_secret)
    await api.create("Webhooks", {**HOOK, "options": {"chunk_size": 1}})
    await other_api.create("Webhooks", {**HOOK, "options": {"chunk_size": 1}}, auth=other_auth)
    for name in ["a1", "a2", "a3"]:
        await api.create("Accounts", {"name": name})
    await other_api.create("Accounts", {"name": "b1"}, auth=other_auth)
    for name in ["a4", "a5"]:
        await api.create("Accounts", {"name": name})
    await other_api.create("Accounts", {"name": "b2"}, auth=other_auth)

    db = open_database(db_url)
    router = Router(db, "http://testserver", budget=0.0)  # one event per space and step
    try:
        assert await router.step() == 2  # a1 and b1; a2-a5 and b2 held
        written, routed = await _seqs(db_url)
        a, b = written[api.space.space_id], written[other.space_id]
        assert routed == {api.space.space_id: a[:1], other.space_id: b[:1]}, (routed, written)
        assert router.behind == {api.space.space_id: a[1], other.space_id: b[1]}
        # Nothing at or after a held event counts as routed (the pruning bound).
        assert router.stored_cursor == a[1] - 1
        # A new event of a space with held events waits behind them.
        await api.create("Accounts", {"name": "a6"})
        # Another router (a restart) goes on from what is stored.
        await router.close()
        router = Router(db, "http://testserver", budget=0.0)
        for _ in range(10):
            made = await router.step()
            written, routed = await _seqs(db_url)
            for space_id, seqs in routed.items():  # each space's oldest first, none twice
                assert seqs == written[space_id][: len(seqs)]
            if not made:
                break
        assert routed == written  # every event
        assert len(routed[api.space.space_id]) == 6
        assert router.behind == {}
        assert router.stored_cursor == written[api.space.space_id][-1]
    finally:
        await router.close()
        await db.dispose()


async def test_a_space_within_its_budget_is_never_held(api: Api, db_url: str) -> None:
    await api.create("Webhooks", {**HOOK, "options": {"chunk_size": 1}})
    for name in ["a1", "a2", "a3"]:
        await api.create("Accounts", {"name": name})
    db = open_database(db_url)
    router = Router(db, "http://testserver")
    try:
        assert await router.step() == 3
        assert router.behind == {}
        written, routed = await _seqs(db_url)
        assert routed == written
    finally:
        await router.close()
        await db.dispose()


async def test_events_that_fire_nothing_store_the_cursor_at_most_once_a_second(
    api: Api, db_url: str
) -> None:
    """The budget's bookkeeping adds no write to a step with nothing held or planned."""
    await api.create("Accounts", {"name": "a1"})
    db = open_database(db_url)
    router = Router(db, "http://testserver")
    try:
        assert await router.step() == 1  # no webhook: nothing planned
        first = router.stored_cursor
        await api.create("Accounts", {"name": "a2"})
        assert await router.step() == 1
        assert router.stored_cursor == first  # moved in memory only, within the second
    finally:
        await router.close()
        await db.dispose()
