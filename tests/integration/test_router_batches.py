"""Routing in batches: a batch that ends inside a burst (the events of one write) reads on to
the burst's end, so its chunks are planned whole, and no further; and what routing reads of an
event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from crmhooks.delivery.queue import SqlQueue
from crmhooks.delivery.router import Router, stored_event
from crmhooks.hooks.rendering import Catalog
from crmhooks.store.engine import open_database
from crmhooks.store.tables import deliveries, events
from tests.support.api import Api

# A public address literal: registration needs no lookup, and nothing is sent here.
TARGET = "http://93.184.216.34/hook"


async def _events_per_request(db_url: str) -> list[int]:
    """The number of events of every planned request, in the order planned."""
    db = open_database(db_url)
    try:
        async with db.read() as conn:
            rows = await conn.execute(
                select(deliveries.c.event_count).order_by(
                    deliveries.c.first_seq, deliveries.c.chunk_index
                )
            )
            return [int(r[0]) for r in rows]
    finally:
        await db.dispose()


async def _burst_then_one(api: Api, burst: int) -> None:
    """One batch-modify of ``burst`` new Accounts (one write, one burst), then one create."""
    owner = api.space.client_id
    items = [{"name": f"burst {i}", "owner_id": owner} for i in range(burst)]
    r = await api.http.post(api.path("Accounts", "batch-modify"), json=items)
    assert r.status_code == 200, r.text
    await api.create("Accounts", {"name": "after the burst"})


async def test_a_batch_cut_inside_a_burst_plans_the_whole_burst_and_stops_there(
    api: Api, db_url: str
) -> None:
    hook = {"url": TARGET, "events": ["Account.Create"], "insecure_ssl": False}
    await api.create("Webhooks", {**hook, "options": {"chunk_size": 3}})
    await _burst_then_one(api, 10)

    db = open_database(db_url)
    try:
        router = Router(db, "http://testserver", batch=4)
        assert await router.step() == 4  # the burst's 10 events: chunks of 3, 3, 3, 1
        assert await _events_per_request(db_url) == [3, 3, 3, 1]
        assert await router.step() == 1  # then the single create, on its own
        assert (await _events_per_request(db_url))[4:] == [1]
        assert await router.step() == 0
    finally:
        await router.close()
        await db.dispose()


async def test_routing_reads_event_times_as_the_column_type_does(api: Api, db_url: str) -> None:
    """The router reads ``occurred`` as stored and parses it itself (once per distinct value):
    the same aware UTC datetimes as the column's type gives."""
    await _burst_then_one(api, 3)
    db = open_database(db_url)
    try:
        router = Router(db, "http://testserver")
        async with db.read() as conn:
            rows = await router._events(conn, 0, 10**9)
            read = [stored_event(row, Catalog()) for row in rows]
            typed = [
                r[0] for r in await conn.execute(select(events.c.occurred).order_by(events.c.seq))
            ]
        assert [e.occurred for e in read if e is not None] == typed
        assert all(t.utcoffset() == timedelta(0) for t in typed)
        assert len(typed) == 4
    finally:
        await router.close()
        await db.dispose()


async def test_events_after_retention_emptied_the_outbox_are_routed(api: Api, db_url: str) -> None:
    """Pruning keeps the newest event: on SQLite seq is the rowid, and an emptied table would
    number the next event 1 again, behind the router's cursor (and every feed cursor)."""
    hook = {"url": TARGET, "events": ["Account.Create"], "insecure_ssl": False}
    await api.create("Webhooks", {**hook, "options": {"chunk_size": 1}})
    await _burst_then_one(api, 3)
    db = open_database(db_url)
    try:
        router = Router(db, "http://testserver")
        assert await router.step() == 4
        cursor = router.stored_cursor
        assert cursor is not None
        # Every event is routed and past retention (a cutoff a day ahead).
        await SqlQueue(db).prune(datetime.now(UTC) + timedelta(days=1), cursor)
        await api.create("Accounts", {"name": "after the quiet month"})
        assert await router.step() == 1
        assert (await _events_per_request(db_url))[4:] == [1]
    finally:
        await router.close()
        await db.dispose()
