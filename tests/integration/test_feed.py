"""The change feed, ``GET /events`` (CONTRACT section 11, docs/webhooks.md#change-feed): paging
with a cursor, the filters, the long-poll and the 410 of a cursor past retention."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from crmhooks.delivery.queue import SqlQueue
from crmhooks.settings import Settings
from crmhooks.store.engine import open_database
from crmhooks.store.keys import IssuedKey
from tests.support.api import BASE, Api, api_settings, asgi_client
from tests.support.databases import new_space

ELEMENT_KEYS = {"id", "event", "event_time", "entity_name", "entity_id", "entity", "changes"}


def _feed(api: Api) -> str:
    return f"{BASE}/{api.space.space_id}/events"


async def _get(api: Api, **params: Any) -> dict[str, Any]:
    r = await api.http.get(_feed(api), params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["success"] is True
    assert body["page_info"]["end_cursor"]  # never null: a client can always poll on
    return body


async def _accounts(api: Api, n: int) -> list[dict[str, Any]]:
    return [await api.create("Accounts", {"name": f"feed {i}"}) for i in range(n)]


@pytest.mark.parametrize("with_webhook", [False, True])
async def test_pages_follow_the_cursor_oldest_first(api: Api, with_webhook: bool) -> None:
    if with_webhook:  # events then keep the record as the write rendered it
        hook = {"url": "http://93.184.216.34/hook", "events": ["Contact.Create"]}
        await api.create("Webhooks", {**hook, "insecure_ssl": False})
    made = await _accounts(api, 5)
    seen: list[dict[str, Any]] = []
    body = await _get(api, first=2)
    pages = [body]
    while body["page_info"]["has_next_page"]:
        body = await _get(api, first=2, after=body["page_info"]["end_cursor"])
        pages.append(body)
    seen = [e for page in pages for e in page["data"]]
    assert [len(p["data"]) for p in pages] == [2, 2, 1]
    created = [e for e in seen if e["event"] == "Account.Create"]
    assert [e["entity_id"] for e in created] == [a["id"] for a in made]
    for e in seen:
        assert set(e) == ELEMENT_KEYS
    first = created[0]
    assert first["entity_name"] == "Account"
    # The record as the API shows it (a webhook's entity with the default options).
    r = await api.http.get(api.path("Accounts", made[0]["id"]))
    assert first["entity"] == r.json()["data"]
    assert first["event_time"].endswith("+00:00")
    # Past the end: nothing, and a cursor to poll on.
    end = await _get(api, after=pages[-1]["page_info"]["end_cursor"])
    assert end["data"] == []
    assert end["page_info"]["has_next_page"] is False
    await _accounts(api, 1)
    newer = await _get(api, after=end["page_info"]["end_cursor"])
    assert [e["entity"]["name"] for e in newer["data"]] == ["feed 0"]


async def test_filters_by_event_name_and_record(api: Api) -> None:
    a, b = await _accounts(api, 2)
    r = await api.http.patch(api.path("Accounts", a["id"]), json={"name": "renamed"})
    assert r.status_code == 200, r.text

    async def names(**params: Any) -> list[tuple[str, str]]:
        body = await _get(api, **params)
        return [(e["event"], e["entity_id"]) for e in body["data"]]

    assert await names(**{"filter[event]": "Account.Update"}) == [("Account.Update", a["id"])]
    update = (await _get(api, **{"filter[event]": "Account.Update"}))["data"][0]
    assert update["changes"]["name"] == {"old": "feed 0", "new": "renamed"}
    everything = [("Account.Create", a["id"]), ("Account.Create", b["id"])]
    everything.append(("Account.Update", a["id"]))
    assert await names(**{"filter[event]": "Account.*"}) == everything
    assert await names(**{"filter[event]": "*"}) == everything
    assert await names(**{"filter[event]": "Contact.Create,Account.Update"}) == everything[2:]
    assert await names(**{"filter[event]": "Contact.*"}) == []
    assert await names(**{"filter[entity_id]": a["id"]}) == [everything[0], everything[2]]
    both = {"filter[entity_id]": b["id"].upper(), "filter[event]": "Account.Create"}
    assert await names(**both) == [everything[1]]


async def test_another_space_sees_none_of_it(api: Api, db_url: str) -> None:
    await _accounts(api, 2)
    other = await new_space(db_url, "other")
    auth = httpx.BasicAuth(other.api_key, other.api_secret)
    r = await api.http.get(f"{BASE}/{other.space_id}/events", auth=auth)
    assert r.status_code == 200
    assert r.json()["data"] == []
    r = await api.http.get(_feed(api), auth=auth)  # its key on this space: refused
    assert r.status_code == 401


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"first": "0"}, "first"),
        ({"first": "101"}, "first"),
        ({"first": "ten"}, "first"),
        ({"after": "not-a-cursor"}, "after"),
        ({"after": "ZXZlbnRzOi0x"}, "after"),  # "events:-1"
        ({"filter[event]": "Account.Explode"}, "filter[event]"),
        ({"filter[entity_id]": "42"}, "filter[entity_id]"),
        ({"wait": "31"}, "wait"),
        ({"wait": "soon"}, "wait"),
        ({"filter[name]": "x"}, "filter[name]"),
    ],
)
async def test_bad_parameters_are_a_400_naming_them(
    api: Api, params: dict[str, str], named: str
) -> None:
    r = await api.http.get(_feed(api), params=params)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["success"] is False
    assert body["name"] == "ERROR_PARAMETER_INVALID"
    assert named in body["message"]


async def test_a_long_poll_answers_when_an_event_arrives(api: Api) -> None:
    await _accounts(api, 1)
    cursor = (await _get(api))["page_info"]["end_cursor"]
    started = time.monotonic()
    poll = asyncio.create_task(_get(api, after=cursor, wait=10))
    await asyncio.sleep(0.3)
    assert not poll.done()  # waiting: nothing newer yet
    await api.create("Accounts", {"name": "awaited"})
    body = await asyncio.wait_for(poll, 5)
    assert time.monotonic() - started < 3
    assert [e["entity"]["name"] for e in body["data"]] == ["awaited"]


async def test_a_long_poll_with_nothing_new_answers_empty_after_wait(api: Api) -> None:
    await _accounts(api, 1)
    cursor = (await _get(api))["page_info"]["end_cursor"]
    started = time.monotonic()
    body = await _get(api, after=cursor, wait=0.5)
    assert 0.45 <= time.monotonic() - started < 3
    assert body["data"] == []
    assert body["page_info"]["end_cursor"] == cursor


async def test_a_cursor_past_retention_is_a_410_with_the_oldest_cursor(
    api: Api, db_url: str
) -> None:
    made = await _accounts(api, 3)
    old = (await _get(api, first=1))["page_info"]["end_cursor"]
    db = open_database(db_url)
    try:  # retention prunes the routed events (here: all of them, as if routed and old)
        pruned = await SqlQueue(db).prune(datetime.now(UTC) + timedelta(days=1), 10**9)
    finally:
        await db.dispose()
    assert pruned.events >= 2  # all but the newest, which stays
    r = await api.http.get(_feed(api), params={"after": old})
    assert r.status_code == 410, r.text
    body = r.json()
    assert body["name"] == "ERROR_CURSOR_EXPIRED"
    assert body["success"] is False
    again = await _get(api, after=body["oldest_cursor"])
    assert [e["entity_id"] for e in again["data"]] == [made[-1]["id"]]
    await _accounts(api, 1)
    newer = await _get(api, after=again["page_info"]["end_cursor"])
    assert [e["entity"]["name"] for e in newer["data"]] == ["feed 0"]
    # Without a cursor the feed starts at what is kept, and never hands out an expired one.
    fresh = await _get(api)
    assert len(fresh["data"]) == 2


async def test_a_write_through_another_api_process_wakes_the_poll(
    api: Api, db_url: str, settings: Settings
) -> None:
    """PostgreSQL: the outbox's notification names the space, and every API process listens."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite's writes all go through the one API process")
    await _accounts(api, 1)
    cursor = (await _get(api))["page_info"]["end_cursor"]
    async with asgi_client(settings) as other:  # a second API process on the same database
        other.auth = api.http.auth
        writer = Api(other, api.space)
        await asyncio.sleep(1.0)  # both processes' LISTEN connections are up (a few ms)
        poll = asyncio.create_task(_get(api, after=cursor, wait=10))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await writer.create("Accounts", {"name": "elsewhere"})
        body = await asyncio.wait_for(poll, 5)
        # Well within the one-second reading a process falls back on without its LISTEN.
        assert time.monotonic() - started < 0.5
    assert [e["entity"]["name"] for e in body["data"]] == ["elsewhere"]


async def test_waiting_polls_of_a_space_are_bounded_and_others_still_wait(
    db_url: str, space: IssuedKey
) -> None:
    """A space cannot hold the process with long-polls: past its limit a poll that would wait
    is a 429 naming the limit; another space's polls still wait, and the waiting ones answer."""
    other = await new_space(db_url, "other")
    settings = api_settings(db_url).model_copy(update={"max_waiting_polls_per_space": 2})
    async with asgi_client(settings) as http:
        mine, theirs = Api(http, space), Api(http, other)
        mine_auth = httpx.BasicAuth(space.api_key, space.api_secret)
        their_auth = httpx.BasicAuth(other.api_key, other.api_secret)
        http.auth = mine_auth
        cursor = (await _get(mine))["page_info"]["end_cursor"]
        waiting = [asyncio.create_task(_get(mine, after=cursor, wait=10)) for _ in range(2)]
        await asyncio.sleep(0.3)
        r = await http.get(_feed(mine), params={"after": cursor, "wait": 10})
        assert r.status_code == 429, r.text
        assert "max_waiting_polls_per_space" in r.json()["message"]
        assert r.headers["Retry-After"] == "1"
        no_wait = await http.get(_feed(mine), params={"after": cursor})  # no wait: answered
        assert no_wait.status_code == 200
        r = await http.get(_feed(theirs), auth=their_auth)
        their_cursor = r.json()["page_info"]["end_cursor"]
        r = await http.get(
            _feed(theirs), params={"after": their_cursor, "wait": 0.2}, auth=their_auth
        )
        assert r.status_code == 200, r.text  # another space's poll waits as usual
        await mine.create("Accounts", {"name": "released"})
        for task in waiting:
            body = await asyncio.wait_for(task, 5)
            assert [e["entity"]["name"] for e in body["data"]] == ["released"]
        # The slots are free again.
        r = await http.get(_feed(mine), params={"after": cursor, "wait": 0.1})
        assert r.status_code == 200, r.text
