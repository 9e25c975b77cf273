"""Replay, ``POST /entities/Webhooks/{id}/replay`` (CONTRACT section 11): the window's stored
events that match the webhook's current options, planned again as requests with the same
element ids and ``webhook-replay: true``; dry run; 410 past retention; the order of a record's
live events after its replayed ones; bad input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from crmhooks.delivery.queue import SqlQueue
from crmhooks.delivery.router import ROUTER
from crmhooks.schema.values import format_datetime
from crmhooks.services import replay as replay_module
from crmhooks.store.engine import open_database
from crmhooks.store.keys import IssuedKey
from crmhooks.store.tables import deliveries, dispatch_state
from tests.support.api import Api
from tests.support.databases import new_space
from tests.support.live import Inbox, live_client


@pytest.fixture
async def live(db_url: str, space: IssuedKey) -> AsyncIterator[Api]:
    async with live_client(db_url, space, "0.2,0.2,0.2") as client:
        yield Api(client, space)


def _at(t: datetime) -> str:
    return format_datetime(t)


async def _hook(api: Api, inbox: Inbox, events: list[str], **options: Any) -> str:
    body = {"url": inbox.url, "events": events, "insecure_ssl": False, "options": options}
    return str((await api.create("Webhooks", body))["id"])


async def _replay(api: Api, hook: str, **body: Any) -> httpx.Response:
    return await api.http.post(api.path("Webhooks", hook, "replay"), json=body)


async def _replayed(api: Api, hook: str, **body: Any) -> dict[str, int]:
    r = await _replay(api, hook, **body)
    assert r.status_code == 200, r.text
    data: dict[str, int] = r.json()["data"]
    return data


async def _now() -> datetime:
    """A moment strictly between the writes before and after it (times are to the ms)."""
    await asyncio.sleep(0.01)
    t = datetime.now(UTC)
    await asyncio.sleep(0.01)
    return t


def _elements(inbox: Inbox, *, replay: bool) -> list[dict[str, Any]]:
    return [
        e
        for _, headers, body in inbox.requests
        if (headers.get("webhook-replay") == "true") == replay
        for e in body
    ]


async def test_a_replay_sends_the_same_element_ids_with_the_replay_header(
    live: Api, inbox: Inbox
) -> None:
    since = await _now()
    await _hook(live, inbox, ["Account.*"], chunk_size=1)
    a = await live.create("Accounts", {"name": "a"})
    r = await live.http.patch(live.path("Accounts", a["id"]), json={"name": "a2"})
    assert r.status_code == 200, r.text
    first = await inbox.wait_for(2)
    assert _elements(inbox, replay=True) == []  # live requests carry no replay header
    hook = first[0]["webhook"]["id"]

    assert await _replayed(live, hook, since=_at(since)) == {"events": 2, "requests": 2}
    await inbox.wait_for(4)
    again = _elements(inbox, replay=True)
    assert [e["id"] for e in again] == [e["id"] for e in first]  # receivers deduplicate
    assert [e["event"] for e in again] == ["Account.Create", "Account.Update"]
    live_ids = {h["webhook-id"] for _, h, _ in inbox.requests if "webhook-replay" not in h}
    replay_ids = {h["webhook-id"] for _, h, _ in inbox.requests if "webhook-replay" in h}
    assert len(replay_ids) == 2
    assert not live_ids & replay_ids
    log = (await live.get("Webhooks", hook, "deliveries")).json()["data"]
    assert sorted(d["replay"] for d in log) == [False, False, True, True]


async def test_the_window_and_current_options_decide_not_the_registration_time(
    live: Api, inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No margin around the window's seq range: its binary search alone finds the window's ends.
    monkeypatch.setattr(replay_module, "DISORDER", timedelta(0))
    await live.create("Accounts", {"name": "keep before"})
    since = await _now()
    kept = await live.create("Accounts", {"name": "keep 1"})
    await live.create("Accounts", {"name": "other"})  # fails the filter
    r = await live.http.patch(live.path("Accounts", kept["id"]), json={"name": "keep 2"})
    assert r.status_code == 200, r.text
    until = await _now()
    await live.create("Accounts", {"name": "keep after"})
    # Registered after every event: live, it fires for none of them.
    filt = {"Account": {"filter": {"name": "keep"}, "filter-op": {"name": "starts"}}}
    hook = await _hook(live, inbox, ["Account.*"], entity=filt, chunk_size=10)
    await asyncio.sleep(0.3)
    assert inbox.requests == []

    got = await _replayed(live, hook, since=_at(since), until=_at(until))
    assert got == {"events": 2, "requests": 1}
    (create, update) = await inbox.wait_for(2)
    assert (create["event"], create["entity"]["name"]) == ("Account.Create", "keep 1")
    assert (update["event"], update["entity"]["name"]) == ("Account.Update", "keep 2")
    assert update["changes"] is not None
    assert [h.get("webhook-replay") for _, h, _ in inbox.requests] == ["true"]


async def test_a_dry_run_counts_and_plans_nothing(live: Api, inbox: Inbox, db_url: str) -> None:
    since = await _now()
    hook = await _hook(live, inbox, ["Account.Create"], chunk_size=2)
    for i in range(5):
        await live.create("Accounts", {"name": f"n{i}"})
    await inbox.wait_for(5)
    before = await _count_deliveries(db_url)
    assert await _replayed(live, hook, since=_at(since), dry_run=True) == {
        "events": 5,
        "requests": 3,
    }
    await asyncio.sleep(0.3)
    assert await _count_deliveries(db_url) == before
    assert _elements(inbox, replay=True) == []


async def _count_deliveries(db_url: str) -> int:
    db = open_database(db_url)
    try:
        async with db.read() as conn:
            return int(await conn.scalar(select(func.count()).select_from(deliveries)) or 0)
    finally:
        await db.dispose()


async def test_a_large_window_is_planned_in_pages_chunked_as_one(
    live: Api, inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replay_module, "PAGE", 7)  # pages end inside chunks and bursts
    since = await _now()
    owner = live.space.client_id
    batch = [{"name": f"b{i}", "owner_id": owner} for i in range(20)]
    r = await live.http.post(live.path("Accounts", "batch-modify"), json=batch)
    assert r.status_code == 200, r.text
    for i in range(4):
        await live.create("Accounts", {"name": f"s{i}"})
    hook = await _hook(live, inbox, ["Account.Create"], chunk_size=3)
    assert await _replayed(live, hook, since=_at(since), dry_run=True) == {
        "events": 24,
        "requests": 8,
    }
    assert await _replayed(live, hook, since=_at(since)) == {"events": 24, "requests": 8}
    await inbox.wait_for(24)
    # Requests of different records may arrive in any order; each holds 3 consecutive events.
    expected = [f"b{i}" for i in range(20)] + [f"s{i}" for i in range(4)]
    chunks = sorted(
        ([e["entity"]["name"] for e in body] for _, _, body in inbox.requests),
        key=lambda names: expected.index(names[0]),
    )
    assert [n for names in chunks for n in names] == expected
    assert [len(names) for names in chunks] == [3] * 8


async def test_chunk_delay_bursts_stay_whole_across_pages(
    live: Api, inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replay_module, "PAGE", 4)
    since = await _now()
    for size in (5, 3):
        batch = [{"name": f"{size}-{i}", "owner_id": live.space.client_id} for i in range(size)]
        r = await live.http.post(live.path("Accounts", "batch-modify"), json=batch)
        assert r.status_code == 200, r.text
    hook = await _hook(live, inbox, ["Account.Create"], chunk_size=2, chunk_delay=0.01)
    # Bursts of 5 and 3 events: chunks of 2, 2, 1 and 2, 1, as routing would make them.
    assert await _replayed(live, hook, since=_at(since)) == {"events": 8, "requests": 5}
    await inbox.wait_for(8)
    assert sorted(len(body) for _, _, body in inbox.requests) == [1, 1, 2, 2, 2]


async def test_live_events_of_a_record_wait_for_its_replayed_ones(live: Api, inbox: Inbox) -> None:
    since = await _now()
    account = await live.create("Accounts", {"name": "before"})
    hook = await _hook(live, inbox, ["Account.*"], chunk_size=1)
    inbox.fail_next = 1  # the replayed Create fails once and is retried 0.2 s later
    assert await _replayed(live, hook, since=_at(since)) == {"events": 1, "requests": 1}
    r = await live.http.patch(live.path("Accounts", account["id"]), json={"name": "after"})
    assert r.status_code == 200, r.text
    await inbox.wait_for(3)
    seen = [
        (body[0]["event"], status)
        for (_, _, body), status in zip(inbox.requests, inbox.answered, strict=True)
    ]
    assert seen == [
        ("Account.Create", 500),
        ("Account.Create", 200),
        ("Account.Update", 200),
    ]
    assert [h.get("webhook-replay") for _, h, _ in inbox.requests] == ["true", "true", None]


async def test_a_window_past_retention_is_a_410(live: Api, inbox: Inbox, db_url: str) -> None:
    hook = await _hook(live, inbox, ["Account.Create"])
    await live.create("Accounts", {"name": "old"})
    await live.create("Accounts", {"name": "old too"})
    await inbox.wait_for(2)
    cutoff = datetime.now(UTC) + timedelta(minutes=1)
    db = open_database(db_url)
    try:
        async with db.read() as conn:
            cursor = await conn.scalar(
                select(dispatch_state.c.last_seq).where(dispatch_state.c.name == ROUTER)
            )
        pruned = await SqlQueue(db).prune(cutoff, int(cursor or 0))
    finally:
        await db.dispose()
    assert pruned.events >= 1
    r = await _replay(live, hook, since=_at(cutoff - timedelta(hours=1)))
    assert r.status_code == 410, r.text
    body = r.json()
    assert body["name"] == "ERROR_CURSOR_EXPIRED"
    assert "since" in body["message"]
    assert _at(cutoff)[:16] in body["message"]
    later = cutoff + timedelta(seconds=1)
    got = await _replayed(live, hook, since=_at(later), until=_at(later + timedelta(hours=1)))
    assert got == {"events": 0, "requests": 0}


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({}, "since"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-01-01T00:00:00Z", "until": 5}, "until"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"since": "2026-01-01T00:00:00Z", "dry_run": "yes"}, "dry_run"),
        ({"since": "2026-01-01T00:00:00Z", "first": 3}, "first"),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(
    live: Api, inbox: Inbox, db_url: str, body: dict[str, Any], names: str
) -> None:
    hook = await _hook(live, inbox, ["Account.Create"])
    await live.create("Accounts", {"name": "x"})
    await inbox.wait_for(1)
    before = await _count_deliveries(db_url)
    r = await live.http.post(live.path("Webhooks", hook, "replay"), json=body)
    assert r.status_code == 400, r.text
    assert names in r.json()["message"]
    assert await _count_deliveries(db_url) == before


async def test_another_spaces_webhook_is_not_found(live: Api, inbox: Inbox, db_url: str) -> None:
    other = await new_space(db_url, "other")
    async with live_client(db_url, other) as client:
        theirs = await _hook(Api(client, other), inbox, ["Account.Create"])
    r = await _replay(live, theirs, since="2026-01-01T00:00:00Z")
    assert r.status_code == 404, r.text


async def test_one_replay_per_space_at_a_time_and_none_to_an_inactive_webhook(
    live: Api, inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replay_module, "PAGE", 1)  # a page per event: the replay takes a while
    since = await _now()
    batch = [{"name": f"n{i}", "owner_id": live.space.client_id} for i in range(100)]
    r = await live.http.post(live.path("Accounts", "batch-modify"), json=batch)
    assert r.status_code == 200, r.text
    hook = await _hook(live, inbox, ["Account.Create"])
    first = asyncio.create_task(_replay(live, hook, since=_at(since), dry_run=True))
    await asyncio.sleep(0.02)  # 100 pages, each followed by a pause as long: it still runs
    second = await _replay(live, hook, since=_at(since), dry_run=True)
    assert second.status_code == 429, second.text
    assert "a replay of this space is running" in second.json()["message"]
    assert second.headers["Retry-After"]
    assert (await first).json()["data"] == {"events": 100, "requests": 1}
    assert await _replayed(live, hook, since=_at(since), dry_run=True) == {
        "events": 100,
        "requests": 1,
    }  # the first one ended: the next is accepted
    r = await live.http.patch(live.path("Webhooks", hook), json={"is_active": False})
    assert r.status_code == 200, r.text
    r = await _replay(live, hook, since=_at(since))
    assert r.status_code == 400, r.text
    assert "is_active" in r.json()["message"]
