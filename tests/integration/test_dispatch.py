"""The dispatcher in the API process: wake on commit, route, send to a real loopback socket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web
from sqlalchemy import select

from crmhooks.app import create_app
from crmhooks.delivery.router import ROUTER
from crmhooks.settings import Settings
from crmhooks.store.engine import open_database
from crmhooks.store.keys import IssuedKey
from crmhooks.store.tables import deliveries, dispatch_state, events
from tests.support.api import Api
from tests.support.databases import engine_independent, new_space
from tests.support.live import Inbox, live_client
from tests.support.servers import free_port


@pytest.fixture
async def live(db_url: str, space: IssuedKey) -> AsyncIterator[Api]:
    async with _live(db_url, space, "0.2,0.2") as api:
        yield api


@asynccontextmanager
async def _live(db_url: str, space: IssuedKey, retry_schedule: str) -> AsyncIterator[Api]:
    """The app with delivery, allowed to reach loopback, behind a client signed in."""
    async with live_client(db_url, space, retry_schedule) as client:
        yield Api(client, space)


async def _hook(api: Api, inbox: Inbox, events: list[str], options: Any = None) -> dict[str, Any]:
    body = {"url": inbox.url, "events": events, "insecure_ssl": False, "options": options or {}}
    return await api.create("Webhooks", body)


async def test_a_write_reaches_the_receiver(live: Api, inbox: Inbox) -> None:
    hook = await _hook(live, inbox, ["Account.*"])
    account = await live.create("Accounts", {"name": "Acme"})
    (event,) = await inbox.wait_for(1)
    assert event["event"] == "Account.Create"
    assert event["entity"]["id"] == account["id"]
    assert event["webhook"]["id"] == hook["id"]
    assert event["team_space_id"] == "acme"


async def test_events_before_the_webhook_existed_are_not_sent(live: Api, inbox: Inbox) -> None:
    await live.create("Accounts", {"name": "early"})
    await asyncio.sleep(0.2)
    await _hook(live, inbox, ["Account.Create"])
    await live.create("Accounts", {"name": "late"})
    events = await inbox.wait_for(1)
    await asyncio.sleep(0.3)
    assert [e["entity"]["name"] for e in events] == ["late"]
    assert len(inbox.requests) == 1


@pytest.mark.slow
async def test_a_failing_receiver_is_retried_with_the_same_ids(live: Api, inbox: Inbox) -> None:
    inbox.status = 500
    await _hook(live, inbox, ["Account.Create"])
    await live.create("Accounts", {"name": "Acme"})
    await inbox.wait_for(1)
    inbox.status = 200
    events = await inbox.wait_for(2)
    assert events[0]["id"] == events[1]["id"]
    assert inbox.requests[0][1]["webhook-id"] == inbox.requests[1][1]["webhook-id"]


async def test_410_disables_the_webhook(live: Api, inbox: Inbox) -> None:
    inbox.status = 410
    hook = await _hook(live, inbox, ["Account.Create"])
    await live.create("Accounts", {"name": "Acme"})
    await inbox.wait_for(1)
    for _ in range(100):
        got = (await live.get("Webhooks", hook["id"])).json()["data"]
        if not got["is_active"]:
            break
        await asyncio.sleep(0.02)
    assert got["is_active"] is False
    assert "410" in got["disabled_reason"]
    assert got["signature"] is None


async def test_routing_state_is_stored_with_the_deliveries(
    live: Api, inbox: Inbox, db_url: str
) -> None:
    await _hook(live, inbox, ["Account.Create"])
    await live.create("Accounts", {"name": "Acme"})
    await inbox.wait_for(1)
    db = open_database(db_url)
    try:
        for _ in range(200):  # the outcome is recorded just after the receiver answered
            async with db.read() as conn:
                (cursor,) = (
                    await conn.execute(
                        select(dispatch_state.c.last_seq).where(dispatch_state.c.name == ROUTER)
                    )
                ).one()
                rows = (
                    await conn.execute(select(deliveries.c.status, deliveries.c.event_count))
                ).all()
            if rows and rows[0][0] == "delivered":
                break
            await asyncio.sleep(0.02)
    finally:
        await db.dispose()
    assert cursor >= 1
    assert [tuple(r) for r in rows] == [("delivered", 1)]


async def test_other_spaces_do_not_see_each_others_events(
    live: Api, inbox: Inbox, db_url: str
) -> None:
    await _hook(live, inbox, ["*"])
    other = await new_space(db_url, "other")
    auth = httpx.BasicAuth(other.api_key, other.api_secret)
    r = await live.http.post(
        "/api/v100/rest/spaces/other/entities/Accounts",
        json={"name": "x", "owner_id": other.client_id},
        auth=auth,
    )
    assert r.status_code == 201
    await live.create("Accounts", {"name": "mine"})
    events = await inbox.wait_for(1)
    await asyncio.sleep(0.2)
    assert [e["entity"]["name"] for e in events] == ["mine"]


async def _delivered(api: Api, hook_id: str, n: int) -> list[dict[str, Any]]:
    for _ in range(200):
        body = (await api.get("Webhooks", hook_id, "deliveries")).json()
        if len([d for d in body["data"] if d["status"] != "pending"]) >= n:
            return list(body["data"])
        await asyncio.sleep(0.02)
    raise AssertionError(body)


@pytest.mark.slow
async def test_the_delivery_log_shows_each_attempt(live: Api, inbox: Inbox) -> None:
    inbox.status = 503
    hook = await _hook(live, inbox, ["Account.Create"])
    await live.create("Accounts", {"name": "Acme"})
    await inbox.wait_for(1)
    inbox.status = 200
    await inbox.wait_for(2)
    (delivery,) = await _delivered(live, hook["id"], 1)
    assert delivery["status"] == "delivered"
    assert [a["status_code"] for a in delivery["attempt_log"]] == [503, 200]
    assert delivery["attempt_log"][0]["latency_ms"] > 0
    failed = await live.get("Webhooks", hook["id"], "deliveries", params={"status": "failed"})
    assert failed.json()["total"] == 0


@pytest.mark.slow
async def test_resend_and_recover_send_again(live: Api, inbox: Inbox) -> None:
    inbox.status = 400
    hook = await _hook(live, inbox, ["Account.Create"])
    await live.create("Accounts", {"name": "Acme"})
    (delivery,) = await _delivered(live, hook["id"], 1)
    for _ in range(200):  # two attempts with the compressed schedule, then given up
        delivery = (await live.get("Webhooks", hook["id"], "deliveries", delivery["id"])).json()[
            "data"
        ]
        if delivery["status"] == "failed":
            break
        await asyncio.sleep(0.02)
    assert delivery["status"] == "failed"
    inbox.status = 200
    r = await live.http.post(
        live.path("Webhooks", hook["id"], "deliveries", delivery["id"], "resend")
    )
    assert r.status_code == 200, r.text
    events = await inbox.wait_for(4)
    assert len({e["id"] for e in events}) == 1
    for _ in range(200):  # the log, in the order the attempts were made
        delivery = (await live.get("Webhooks", hook["id"], "deliveries", delivery["id"])).json()[
            "data"
        ]
        if delivery["status"] == "delivered":
            break
        await asyncio.sleep(0.02)
    given_up = len(delivery["attempt_log"]) - 1
    assert [a["status_code"] for a in delivery["attempt_log"]] == [400] * given_up + [200]
    assert [a["attempt"] for a in delivery["attempt_log"]] == [*range(1, given_up + 1), 1]
    r = await live.http.post(
        live.path("Webhooks", hook["id"], "recover"), json={"since": "2000-01-01"}
    )
    assert r.json()["data"]["resent"] == 0  # delivered now: nothing failed is left


@engine_independent
@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"since": "2026-02-01", "until": "2026-01-01"}, "since"),
        ({"since": "yesterday"}, "since"),
        ({}, "since"),
        ({"since": "2026-01-01", "nope": 1}, "nope"),
    ],
)
async def test_recover_refuses_bad_windows(
    live: Api, inbox: Inbox, body: dict[str, Any], named: str
) -> None:
    hook = await _hook(live, inbox, ["Account.Create"])
    r = await live.http.post(live.path("Webhooks", hook["id"], "recover"), json=body)
    assert r.status_code == 400
    assert named in r.json()["message"]


async def test_unknown_delivery_and_deleted_webhook_are_404(live: Api, inbox: Inbox) -> None:
    hook = await _hook(live, inbox, ["Account.Create"])
    missing = "00000000-0000-4000-8000-000000000000"
    r = await live.http.post(live.path("Webhooks", hook["id"], "deliveries", missing, "resend"))
    assert r.status_code == 404
    assert r.json()["name"] == "ERROR_ENTITY_NOT_FOUND"
    await live.http.delete(live.path("Webhooks", hook["id"]))
    r = await live.http.post(live.path("Webhooks", hook["id"], "test"))
    assert r.status_code == 404


async def test_send_test_returns_the_outcome(live: Api, inbox: Inbox) -> None:
    hook = await _hook(live, inbox, ["Opportunity.*"])
    r = await live.http.post(live.path("Webhooks", hook["id"], "test"))
    assert r.status_code == 200, r.text
    outcome = r.json()["data"]
    assert outcome["success"] is True
    assert outcome["status_code"] == 200
    (event,) = await inbox.wait_for(1)
    assert event["event"] == "Opportunity.Create"
    log = (await live.get("Webhooks", hook["id"], "deliveries")).json()
    assert log["data"][0]["id"] == outcome["delivery_id"]


async def test_health_and_metrics(live: Api, inbox: Inbox) -> None:
    r = await live.http.get("/health")
    assert r.status_code == 200
    assert r.json()["database"] is True
    assert r.json()["dispatcher"]["alive"] is True
    await _hook(live, inbox, ["Account.Create"])
    await live.create("Accounts", {"name": "Acme"})
    await inbox.wait_for(1)
    text = (await live.http.get("/metrics")).text
    assert "crmhooks_events_recorded_total" in text
    assert 'crmhooks_requests_sent_total{outcome="delivered"}' in text
    assert "crmhooks_queue_depth" in text


@pytest.mark.slow
async def test_failing_for_too_long_disables_and_patch_resumes(
    db_url: str, space: IssuedKey, inbox: Inbox
) -> None:
    settings = Settings(
        database_url=db_url,
        public_url="http://testserver",
        allowed_targets="127.0.0.0/8",
        retry_schedule="0.1,0.1,0.1,0.1,0.1,0.1",
        disable_after_seconds=0.3,
    )
    app = create_app(settings, migrate=False)
    auth = httpx.BasicAuth(space.api_key, space.api_secret)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t", auth=auth) as client,
    ):
        api = Api(client, space)
        inbox.status = 500
        hook = await _hook(api, inbox, ["Account.Create"])
        await api.create("Accounts", {"name": "Acme"})
        for _ in range(300):
            got = (await api.get("Webhooks", hook["id"])).json()["data"]
            if not got["is_active"]:
                break
            await asyncio.sleep(0.02)
        assert got["is_active"] is False
        assert "failed for" in got["disabled_reason"]
        await api.create("Accounts", {"name": "while disabled"})  # recorded, held
        inbox.status = 200
        r = await client.patch(api.path("Webhooks", hook["id"]), json={"is_active": True})
        assert r.json()["data"]["disabled_reason"] is None
        # The failed tries of Acme were received too: wait for the held event itself.
        for _ in range(500):
            names = {e["entity"]["name"] for _, _, body in inbox.requests for e in body}
            if "while disabled" in names:
                break
            await asyncio.sleep(0.02)
        assert names == {"Acme", "while disabled"}


async def test_retention_prunes_delivered_requests_and_routed_events(
    live: Api, inbox: Inbox, db_url: str
) -> None:
    from datetime import UTC, datetime, timedelta

    from crmhooks.delivery.queue import SqlQueue
    from crmhooks.store.tables import delivery_attempts, events

    hook = await _hook(live, inbox, ["Account.Create"])
    # One request each: the second write waits for the first's delivery, or one routing step
    # could carry both events in one request.
    await live.create("Accounts", {"name": "Acme"})
    await _delivered(live, hook["id"], 1)
    await live.create("Accounts", {"name": "Globex"})
    await _delivered(live, hook["id"], 2)
    db = open_database(db_url)
    try:
        async with db.read() as conn:
            (cursor,) = (
                await conn.execute(
                    select(dispatch_state.c.last_seq).where(dispatch_state.c.name == ROUTER)
                )
            ).one()
        kept = await SqlQueue(db).prune(datetime.now(UTC) - timedelta(days=1), cursor)
        assert (kept.deliveries, kept.events) == (0, 0)
        gone = await SqlQueue(db).prune(datetime.now(UTC) + timedelta(seconds=1), cursor)
        assert gone.deliveries == 2
        assert gone.events >= 1
        async with db.read() as conn:
            left = [
                (await conn.execute(select(t).limit(1))).first()
                for t in (deliveries, delivery_attempts)
            ]
            kept_events = (await conn.execute(select(events.c.seq))).all()
        assert left == [None, None]
        # Only the newest event stays (the next one is numbered after it on SQLite too).
        assert kept_events == [(cursor,)]
    finally:
        await db.dispose()


@engine_independent
@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:9/hook",  # a name that resolves to loopback
        "http://127.0.0.1/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/hook",
    ],
)
async def test_registration_refuses_blocked_targets_without_the_allow_list(
    api: Api, url: str
) -> None:
    body = {"url": url, "events": ["Account.Create"], "insecure_ssl": False}
    r = await api.http.post(api.path("Webhooks"), json=body)
    assert r.status_code == 422, r.text
    assert r.json()["field_errors"][0]["field_name"] == "url"
    assert (await api.get("Webhooks")).json()["total"] == 0


@pytest.mark.slow
async def test_a_records_later_event_waits_until_its_earlier_one_is_delivered(
    db_url: str, space: IssuedKey, inbox: Inbox
) -> None:
    # The retry waits 1.5 s: time enough, on a loaded machine too, for B to go past it.
    async with _live(db_url, space, "1.5,1.5") as live:
        await _records_wait_for_their_earlier_events(live, inbox)


async def _records_wait_for_their_earlier_events(live: Api, inbox: Inbox) -> None:
    await _hook(live, inbox, ["Account.*"], {"chunk_size": 1})
    inbox.fail_next = 1  # the Create of A fails once and is retried later
    a = await live.create("Accounts", {"name": "A"})
    await inbox.wait_for(1)
    r = await live.http.patch(live.path("Accounts", a["id"]), json={"city": "Oslo"})
    assert r.status_code == 200
    await live.create("Accounts", {"name": "B"})  # another record: not held back
    await inbox.wait_for(4)
    sent = [
        (body[0]["event"], body[0]["entity"]["name"], status)
        for (_, _, body), status in zip(inbox.requests, inbox.answered, strict=True)
    ]
    create_ok = sent.index(("Account.Create", "A", 200))
    update = sent.index(("Account.Update", "A", 200))
    assert sent[0] == ("Account.Create", "A", 500)
    assert update > create_ok  # never sent before the earlier event of A succeeded
    assert sent.index(("Account.Create", "B", 200)) < create_ok  # B went past the retry


@pytest.mark.slow
async def test_a_hanging_receiver_does_not_starve_a_healthy_one(
    db_url: str, space: IssuedKey, inbox: Inbox
) -> None:
    port = free_port()
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await release.wait()  # answers only when the test is over, far past the 1 s timeout
        return web.Response()

    hanging = web.Application()
    hanging.router.add_post("/hook", hang)
    runner = web.AppRunner(hanging)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    settings = Settings(
        database_url=db_url,
        public_url="http://testserver",
        allowed_targets="127.0.0.0/8",
        retry_schedule="5,5",
        request_timeout=1.0,
        max_in_flight=4,  # small, so that a hanging receiver could take all of it
    )
    app = create_app(settings, migrate=False)
    auth = httpx.BasicAuth(space.api_key, space.api_secret)
    transport = httpx.ASGITransport(app=app)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t", auth=auth) as client,
        ):
            api = Api(client, space)
            options = {"chunk_size": 1}
            dead = Inbox(f"http://127.0.0.1:{port}/hook")
            await _hook(api, dead, ["Account.Create"], options)
            await _hook(api, inbox, ["Account.Create"], options)
            started = time.monotonic()
            owner = space.client_id
            batch = [{"name": f"a{i}", "owner_id": owner} for i in range(20)]
            r = await client.post(api.path("Accounts", "batch-modify"), json=batch)
            assert r.status_code == 200
            await inbox.wait_for(20, within=10)
            # At most one round of the hanging receiver's timeout before it is held to one
            # request in flight, then the healthy one has the rest of the room.
            # (about 1.2 s here; without the allowance, 5 s or more)
            assert time.monotonic() - started < 3.0
    finally:
        release.set()
        await runner.cleanup()


async def test_the_write_renders_the_record_as_routing_would(
    live: Api, inbox: Inbox, db_url: str
) -> None:
    """The default shape is rendered in the write (``events.rendered``) and sent as it is: the
    record as the API shows it, its lists as they were when the write committed."""
    await _hook(live, inbox, ["Contact.Create"])
    account = await live.create("Accounts", {"name": "Acme"})
    relation = {"account_id": account["id"], "is_primary": True}
    body = {"last_name": "N", "account_relations": [relation]}
    contact = await live.create("Contacts", body)
    (event,) = await inbox.wait_for(1)
    shown = (await live.get("Contacts", contact["id"])).json()["data"]
    assert event["entity"] == shown
    assert len(shown["account_relations"]) == 1
    db = open_database(db_url)
    try:
        async with db.read() as conn:
            rendered = (
                await conn.execute(
                    select(events.c.rendered).where(events.c.name == "Contact.Create")
                )
            ).scalar_one()
    finally:
        await db.dispose()
    assert orjson.loads(rendered) == shown


async def test_a_batch_of_creates_renders_each_record_as_routing_would(
    live: Api, inbox: Inbox
) -> None:
    """A batch of new records of one type is checked before its write and rendered without
    asking for the records' lists (nothing points at a record the same write made): each
    event shows its record as the API does, with the time the record carries."""
    await _hook(live, inbox, ["Account.Create"])
    owner = live.space.client_id
    batch = [{"name": f"b{i}", "owner_id": owner} for i in range(3)]
    r = await live.http.post(live.path("Accounts", "batch-modify"), json=batch)
    assert r.status_code == 200, r.text
    ids = r.json()["data"]
    got = await inbox.wait_for(3)
    assert sorted(e["entity"]["id"] for e in got) == sorted(ids)
    for event in got:
        shown = (await live.get("Accounts", event["entity"]["id"])).json()["data"]
        assert event["entity"] == shown
        assert shown["modified"] == shown["created"]


async def test_a_space_without_webhooks_stores_no_rendering(
    live: Api, inbox: Inbox, db_url: str
) -> None:
    """Nobody routes the events of a space without webhooks: its writes skip the rendering
    (``store.webhook_spaces``); the process that makes the space's first webhook renders the
    very next write's records again."""
    await live.create("Accounts", {"name": "Before"})
    await _hook(live, inbox, ["Account.Create"])
    await live.create("Accounts", {"name": "After"})
    await inbox.wait_for(1)
    db = open_database(db_url)
    try:
        async with db.read() as conn:
            rows = await conn.execute(
                select(events.c.record["name"].as_string(), events.c.rendered)
                .where(events.c.name == "Account.Create")
                .order_by(events.c.seq)
            )
            stored = [(name, rendered is not None) for name, rendered in rows]
    finally:
        await db.dispose()
    assert stored == [("Before", False), ("After", True)]
