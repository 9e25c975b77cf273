"""Routing in batches: a batch that ends inside a burst (the events of one write) reads on to
the burst's end, so its chunks are planned whole, and no further; and what routing reads of an
event."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from crmhooks.delivery.router import Router, _event
from crmhooks.hooks.rendering import Catalog
from crmhooks.store.engine import open_database
from crmhooks.store.tables import deliveries, events
from tests.support.api import Api

# A public address literal: registration needs no lookup, and nothing is sent here.
TARGET = "http://93.184.216.34/hook"


async def _requests(db_url: str) -> list[tuple[str | None, int, int]]:
    """(chunk group, chunk index, events) of every planned request, in the order planned."""
    db = open_database(db_url)
    try:
        async with db.read() as conn:
            rows = await conn.execute(
                select(
                    deliveries.c.chunk_group, deliveries.c.chunk_index, deliveries.c.event_count
                ).order_by(deliveries.c.first_seq, deliveries.c.chunk_index)
            )
            return [(r[0], int(r[1] or 0), int(r[2])) for r in rows]
    finally:
        await db.dispose()


async def test_a_batch_cut_inside_a_burst_plans_the_whole_burst_and_stops_there(
    api: Api, db_url: str
) -> None:
    hook = {"url": TARGET, "events": ["Account.Create"], "insecure_ssl": False}
    await api.create("Webhooks", {**hook, "options": {"chunk_size": 3}})
    owner = api.space.client_id
    burst = [{"name": f"burst {i}", "owner_id": owner} for i in range(10)]
    r = await api.http.post(api.path("Accounts", "batch-modify"), json=burst)
    assert r.status_code == 200, r.text
    await api.create("Accounts", {"name": "after the burst"})

    db = open_database(db_url)
    try:
        router = Router(db, "http://testserver", batch=4)
        assert await router.step() == 4  # the burst's 10 events: chunks of 3, 3, 3, 1
        assert [n for _, _, n in await _requests(db_url)] == [3, 3, 3, 1]
        assert await router.step() == 1  # then the single create, on its own
        assert [n for _, _, n in (await _requests(db_url))[4:]] == [1]
        assert await router.step() == 0
    finally:
        await router.close()
        await db.dispose()


async def test_routing_reads_event_times_as_the_column_type_does(api: Api, db_url: str) -> None:
    """The router reads ``occurred`` as stored and parses it itself (once per distinct value):
    the same aware UTC datetimes as the column's type gives."""
    owner = api.space.client_id
    burst = [{"name": f"timed {i}", "owner_id": owner} for i in range(3)]
    r = await api.http.post(api.path("Accounts", "batch-modify"), json=burst)
    assert r.status_code == 200, r.text
    await api.create("Accounts", {"name": "alone"})
    db = open_database(db_url)
    try:
        router = Router(db, "http://testserver")
        async with db.read() as conn:
            rows = await router._events(conn, 0, 10**9)
            read = [_event(row, Catalog()) for row in rows]
            typed = [
                r[0] for r in await conn.execute(select(events.c.occurred).order_by(events.c.seq))
            ]
        assert [e.occurred for e in read if e is not None] == typed
        assert all(t.utcoffset() == timedelta(0) for t in typed)
        assert len(typed) == 4
    finally:
        await router.close()
        await db.dispose()
