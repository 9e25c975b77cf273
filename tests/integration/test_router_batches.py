"""Routing in batches: a batch that ends inside a burst (the events of one write) reads on to
the burst's end, so its chunks are planned whole, and no further."""

from __future__ import annotations

from sqlalchemy import select

from crmhooks.delivery.router import Router
from crmhooks.store.engine import open_database
from crmhooks.store.tables import deliveries
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
