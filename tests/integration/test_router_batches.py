"""Routing in batches: a batch that ends inside a burst (the events of one write) reads on to
the burst's end, so its chunks are planned whole, and no further. And the requests routing
stores leased, to be sent without a claim."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, update

from crmhooks.delivery.model import PlannedRequest
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


async def _leases(db_url: str) -> list[tuple[str, object]]:
    db = open_database(db_url)
    try:
        async with db.read() as conn:
            rows = await conn.execute(
                select(deliveries.c.id, deliveries.c.lease_until).order_by(deliveries.c.first_seq)
            )
            return [(str(r[0]), r[1]) for r in rows]
    finally:
        await db.dispose()


async def test_a_request_for_an_idle_webhook_is_stored_leased_and_handed_over(
    api: Api, db_url: str
) -> None:
    """Routing stores the request of a webhook with nothing unfinished leased to its caller and
    hands it over (no claim); while that request is unfinished, or when a step makes two for one
    webhook, requests are stored for a claim as before (per-record order)."""
    hook = {"url": TARGET, "events": ["Account.Create"], "insecure_ssl": False}
    await api.create("Webhooks", {**hook, "options": {"chunk_size": 1}})
    until = datetime(2030, 1, 1, tzinfo=UTC)
    asked: list[str] = []

    def lease(planned: PlannedRequest) -> datetime | None:
        asked.append(planned.id)
        return until

    db = open_database(db_url)
    try:
        router = Router(db, "http://testserver")
        await api.create("Accounts", {"name": "no room"})
        assert await router.step(lambda planned: None) == 1  # the caller would not send it now
        assert router.take_leased() == []
        (webhook_id,) = router.take_touched()  # for a claim, as before
        async with db.write() as conn:  # that request done: the webhook is idle again
            await conn.execute(update(deliveries).values(status="delivered"))

        await api.create("Accounts", {"name": "first"})
        assert await router.step(lease) == 1
        (handed,) = router.take_leased()
        assert asked == [handed.id]
        assert router.take_touched() == set()  # nothing for a claim to look at
        assert [u for _, u in await _leases(db_url)] == [None, until]

        await api.create("Accounts", {"name": "second"})  # the first is still unfinished
        assert await router.step(lease) == 1
        assert router.take_leased() == []
        assert router.take_touched() == {webhook_id}
        assert [u for _, u in await _leases(db_url)] == [None, until, None]
        assert len(asked) == 1  # the busy webhook was not even asked
    finally:
        await router.close()
        await db.dispose()
