"""The request sequences of public Pipeliner clients, run against crmhooks as they are.

- easyQuote (its Pipeliner domain): registers one webhook with its events and a skip key,
  checks every request body with the rules of its webhook endpoint, and its handlers follow
  the URIs of a payload's relation lists (``account_relations``, ``opportunity_relations``)
  to the records behind them; its own writes carry ``Webhook-Skip-Key``.
- amp-labs' connector: reads a collection ``first=N`` then ``after=end_cursor`` until the
  answer has no ``end_cursor`` (it does not read ``has_next_page``), and syncs incrementally
  with ``filter[modified]`` (RFC 3339, UTC, whole seconds) + ``filter-op[modified]=gte`` +
  ``order-by=-modified``; its read of associations expects expanded relations as objects.
- ByteChef's component: lists Clients for an owner, then creates Accounts and Contacts.

The sequences were read from those projects' public sources; the code here is our own.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp import web

from crmhooks.store.keys import IssuedKey
from tests.support.api import Api
from tests.support.live import live_client, receiving
from tests.support.servers import free_port

Body = dict[str, Any]

# easyQuote's WebhookRegistrarService registers these, with a UUID signature, insecure_ssl and
# ``options: {"skip_keys": ["easyQuote-integration"]}``; its pushes send that skip key.
EASYQUOTE_EVENTS = [
    "Account.Update",
    "ContactAccountRelation.*",
    "Contact.Update",
    "Task.Create",
    "Task.Update",
    "Task.Delete",
    "Appointment.Create",
    "Appointment.Update",
    "Appointment.Delete",
    "Opportunity.DocumentLinked",
    "Account.DocumentLinked",
]
SKIP_KEY = "easyQuote-integration"


def _is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return isinstance(value, str)


def _is_date(value: object) -> bool:
    try:
        datetime.fromisoformat(str(value))
    except ValueError:
        return False
    return isinstance(value, str)


def easyquote_refusals(body: object, webhook_id: str) -> list[str]:
    """What easyQuote's webhook endpoint would refuse in a request body (its validation rules,
    one per line; an empty list: the body is accepted)."""
    if not isinstance(body, list) or not body:
        return ["the body is not a non-empty list"]
    problems = []
    for i, item in enumerate(body):
        hook = item.get("webhook") if isinstance(item, dict) else None
        if not isinstance(hook, dict):
            problems.append(f"{i}: webhook is not an object")
            continue
        checks = {
            "webhook.id": hook.get("id") == webhook_id,
            "webhook.insecure_ssl": isinstance(hook.get("insecure_ssl"), bool),
            "webhook.options": isinstance(hook.get("options"), dict | list),
            "webhook.url": isinstance(hook.get("url"), str) and bool(hook["url"]),
            "webhook.is_deleted": isinstance(hook.get("is_deleted"), bool),
            "webhook.created": _is_date(hook.get("created")),
            "webhook.modified": _is_date(hook.get("modified")),
            "webhook.application_id": _is_uuid(hook.get("application_id")),
            "webhook.client_id": "client_id" in hook
            and (hook["client_id"] is None or _is_uuid(hook["client_id"])),
            "webhook.events": isinstance(hook.get("events"), list)
            and bool(hook["events"])
            and all(isinstance(e, str) and e for e in hook["events"]),
            "event": isinstance(item.get("event"), str) and bool(item["event"]),
            "event_time": _is_date(item.get("event_time")),
            "team_space_id": isinstance(item.get("team_space_id"), str),
            "related_entity": "related_entity" in item,
            "entity": isinstance(item.get("entity"), dict) and _is_uuid(item["entity"].get("id")),
        }
        problems += [f"{i}: {name}" for name, ok in checks.items() if not ok]
    return problems


@dataclass
class Receiver:
    """easyQuote's endpoint: a body its rules refuse gets 422, an accepted one 204."""

    url: str
    webhook_id: str = ""
    elements: list[Body] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    async def wait_for(self, events: Iterable[str], within: float = 10.0) -> list[Body]:
        wanted = sorted(events)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if sorted(e["event"] for e in self.elements) == wanted:
                return self.elements
            await asyncio.sleep(0.01)
        got = sorted(e["event"] for e in self.elements)
        raise AssertionError(f"expected {wanted}, got {got}; refused: {self.refused}")

    def one(self, event: str) -> Body:
        (found,) = [e for e in self.elements if e["event"] == event]
        return found


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    box = Receiver(f"http://127.0.0.1:{port}/pipeliner/webhook")

    async def receive(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        problems = easyquote_refusals(body, box.webhook_id)
        if problems:
            box.refused += problems
            return web.Response(status=422)
        box.elements.extend(body)
        return web.Response(status=204)

    async with receiving(port, "/pipeliner/webhook", receive):
        yield box


@pytest.fixture
async def live(db_url: str, space: IssuedKey) -> AsyncIterator[Api]:
    """The API with its dispatcher delivering to loopback."""
    async with live_client(db_url, space) as client:
        yield Api(client, space)


async def _follow(api: Api, uris: list[str], name: str) -> list[str]:
    """easyQuote's handlers: GET each relation row, then the record its ``name`` URI names."""
    ids = []
    for uri in uris:
        r = await api.http.get(uri)
        assert r.status_code == 200, r.text
        target = r.json()["data"][name]
        r = await api.http.get(target)
        assert r.status_code == 200, r.text
        ids.append(r.json()["data"]["id"])
    return ids


async def test_easyquote_registers_its_webhook_and_handles_what_arrives(
    live: Api, receiver: Receiver
) -> None:
    signature = str(uuid.uuid4())
    body = {
        "url": receiver.url,
        "events": EASYQUOTE_EVENTS,
        "insecure_ssl": True,
        "signature": signature,
        "options": {"skip_keys": [SKIP_KEY]},
    }
    r = await live.http.post(live.path("Webhooks"), json=body)
    assert r.status_code == 201, r.text
    hook = r.json()["data"]
    assert (hook["events"], hook["insecure_ssl"], hook["signature"]) == (
        EASYQUOTE_EVENTS,
        True,
        signature,
    )
    assert hook["options"] == {"skip_keys": [SKIP_KEY]}
    receiver.webhook_id = hook["id"]

    acme = await live.create("Accounts", {"name": "Acme"})  # Account.Create: not subscribed
    ann = await live.create(
        "Contacts",
        {"last_name": "Ann", "account_relations": [{"account_id": acme["id"], "is_primary": True}]},
    )
    r = await live.http.patch(live.path("Contacts", ann["id"]), json={"title": "Dr"})
    assert r.status_code == 200, r.text
    pipeline = await live.create("Pipelines", {"name": "Sales"})
    step = await live.create("Steps", {"name": "New", "pipeline_id": pipeline["id"]})
    oppty = await live.create("Opportunities", {"name": "Deal", "step_id": step["id"]})
    await live.create(
        "Tasks", {"subject": "Quote", "lead_oppty_id": oppty["id"], "account_id": acme["id"]}
    )
    await live.create("Appointments", {"subject": "Review", "account_id": acme["id"]})
    await live.create("CloudObjects", {"filename": "quote.pdf", "lead_oppty_id": oppty["id"]})
    # easyQuote's own push carries its skip key: no event comes back to it.
    r = await live.http.patch(
        live.path("Accounts", acme["id"]),
        json={"city": "Vienna"},
        headers={"Webhook-Skip-Key": SKIP_KEY},
    )
    assert r.status_code == 200, r.text
    r = await live.http.patch(live.path("Accounts", acme["id"]), json={"city": "Graz"})
    assert r.status_code == 200, r.text

    expected = [
        "ContactAccountRelation.Create",
        "Contact.Update",
        "Task.Create",
        "Appointment.Create",
        "Opportunity.DocumentLinked",
        "Account.Update",
    ]
    try:
        await receiver.wait_for(expected, within=20.0)
    except AssertionError as missing:
        # Say what the delivery log holds, so a failure tells planning from sending apart. An
        # empty log on PostgreSQL: the router's session lock is one per database, not per
        # schema, so a router of another test session on the same database routes instead.
        log = (await live.get("Webhooks", hook["id"], "deliveries")).json()["data"]
        shown = [(d["status"], d["event_count"], d["last_status"], d["last_error"]) for d in log]
        raise AssertionError(f"{missing}; delivery log: {shown}") from None
    assert receiver.refused == []
    assert receiver.one("Account.Update")["entity"]["city"] == "Graz"

    # AccountRelationEventHandler: the relation's account_id.
    relation = receiver.one("ContactAccountRelation.Create")["entity"]
    assert (relation["account_id"], relation["contact_id"]) == (acme["id"], ann["id"])
    # A Contact's account_relations, each row followed to its account.
    contact = receiver.one("Contact.Update")["entity"]
    assert await _follow(live, contact["account_relations"], "account") == [acme["id"]]
    # TaskEventHandler and AppointmentEventHandler: opportunity and account relations.
    task = receiver.one("Task.Create")["entity"]
    assert await _follow(live, task["opportunity_relations"], "oppty") == [oppty["id"]]
    assert await _follow(live, task["account_relations"], "account") == [acme["id"]]
    meeting = receiver.one("Appointment.Create")["entity"]
    assert await _follow(live, meeting["account_relations"], "account") == [acme["id"]]
    assert meeting["opportunity_relations"] == []
    # OpportunityEventHandler: the entity's id.
    assert receiver.one("Opportunity.DocumentLinked")["entity"]["id"] == oppty["id"]


def test_easyquotes_rules_refuse_what_its_endpoint_refuses() -> None:
    """The endpoint's rules, checked on their own: the test above could not pass without them."""
    good = {
        "webhook": {
            "id": "h",
            "insecure_ssl": True,
            "options": {},
            "url": "http://x",
            "is_deleted": False,
            "created": "2026-12-01 03:14:57.451706+00:00",
            "modified": "2026-12-01 03:14:57.451706+00:00",
            "application_id": str(uuid.uuid4()),
            "client_id": None,
            "events": ["Task.Create"],
        },
        "event": "Task.Create",
        "event_time": "2026-12-01 03:14:57.451706+00:00",
        "team_space_id": "acme",
        "related_entity": None,
        "entity": {"id": str(uuid.uuid4())},
    }
    assert easyquote_refusals([good], "h") == []
    assert easyquote_refusals(good, "h") == ["the body is not a non-empty list"]
    no_app = {**good, "webhook": {**good["webhook"], "application_id": None}}
    assert easyquote_refusals([no_app], "h") == ["0: webhook.application_id"]
    no_related = {k: v for k, v in good.items() if k != "related_entity"}
    assert easyquote_refusals([no_related], "other") == ["0: webhook.id", "0: related_entity"]


# -- amp-labs ----------------------------------------------------------------------------------


async def _amp_read(api: Api, entity: str, params: dict[str, str]) -> list[Body]:
    """amp-labs' read loop: the next page is ``after=end_cursor`` while there is one."""
    rows: list[Body] = []
    after = None
    for _ in range(50):  # a bound: a cursor that never ends would loop for ever
        page = {**params, **({"after": after} if after else {})}
        r = await api.get(entity, params=page)
        assert r.status_code == 200, r.text
        body = r.json()
        rows += body["data"]
        after = (body.get("page_info") or {}).get("end_cursor")
        if not after:
            return rows
    raise AssertionError("the read did not end")


async def test_amp_labs_pages_until_the_end_cursor_is_empty(api: Api) -> None:
    ids = [(await api.create("Accounts", {"name": f"a{i}"}))["id"] for i in range(7)]
    for gone in ids[1:3]:
        assert (await api.http.delete(api.path("Accounts", gone))).status_code == 200
    live = [i for i in ids if i not in ids[1:3]]
    for size in ("3", "5", "100"):
        rows = await _amp_read(api, "Accounts", {"first": size})
        assert [r["id"] for r in rows] == live, size
    # Both spellings of the deleted records' switch, as clients write them.
    for name in ("include_deleted", "include-deleted"):
        rows = await _amp_read(api, "Accounts", {"first": "3", name: "true"})
        assert [r["id"] for r in rows] == ids, name
        assert [r["is_deleted"] for r in rows] == [False, True, True, False, False, False, False]
    # The page after the last: nothing, and no cursor to go on with.
    last = (await api.get("Accounts", params={"first": "100"})).json()["page_info"]
    r = await api.get("Accounts", params={"first": "100", "after": last["end_cursor"]})
    body = r.json()
    assert (body["data"], body["total"]) == ([], 5)
    assert (body["page_info"]["start_cursor"], body["page_info"]["end_cursor"]) == (None, None)
    assert body["page_info"]["has_next_page"] is False


def _rfc3339_utc(moment: datetime) -> str:
    """amp-labs' ``FormatRFC3339inUTC``: whole seconds, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_amp_labs_incremental_sync_by_modified(api: Api) -> None:
    old = await api.create("Accounts", {"name": "old"})
    touched = await api.create("Accounts", {"name": "touched"})
    # The filter has whole seconds: start the sync at the next second after those writes.
    now = datetime.now(UTC)
    since = now.replace(microsecond=0) + timedelta(seconds=1)
    await asyncio.sleep((since - now).total_seconds() + 0.01)
    new = await api.create("Accounts", {"name": "new"})
    r = await api.http.patch(api.path("Accounts", touched["id"]), json={"city": "Linz"})
    assert r.status_code == 200, r.text
    params = {
        "first": "1",
        "filter-op[modified]": "gte",
        "filter[modified]": _rfc3339_utc(since),
    }
    newest_first = await _amp_read(api, "Accounts", {**params, "order-by": "-modified"})
    assert [r["id"] for r in newest_first] == [touched["id"], new["id"]]
    oldest_first = await _amp_read(api, "Accounts", {**params, "order-by": "modified"})
    assert [r["id"] for r in oldest_first] == [new["id"], touched["id"]]
    assert old["id"] not in {r["id"] for r in newest_first}
    # The same sync of Notes and Contacts (amp-labs filters every object it can by time).
    for entity in ("Notes", "Contacts", "Profiles"):
        r = await api.get(entity, params={**params, "order-by": "-modified"})
        assert r.status_code == 200, r.text


async def test_amp_labs_reads_associations_as_expanded_objects(api: Api) -> None:
    await api.create("Accounts", {"name": "Green Inc.", "owner_id": api.space.client_id})
    params = {"first": "100", "expand": "owner,unit,account_type"}
    (account,) = await _amp_read(api, "Accounts", params)
    for name in ("owner", "unit", "account_type"):
        assert isinstance(account[name], dict), name
        assert account[name]["id"] == account[f"{name}_id"], name
    assert account["owner"]["id"] == api.space.client_id


# -- ByteChef ----------------------------------------------------------------------------------


async def test_bytechef_picks_an_owner_then_creates_an_account_and_a_contact(api: Api) -> None:
    clients = (await api.get("Clients")).json()["data"]
    options = {f"{c['first_name']} {c['last_name']}": c["id"] for c in clients}
    owner = options["API User"]
    account = await api.create("Accounts", {"owner_id": owner, "name": "Acme"})
    assert (account["owner_id"], account["name"]) == (owner, "Acme")
    contact = await api.create(
        "Contacts", {"owner_id": owner, "first_name": "Ann", "last_name": "Lee"}
    )
    assert {k: contact[k] for k in ("owner_id", "first_name", "last_name")} == {
        "owner_id": owner,
        "first_name": "Ann",
        "last_name": "Lee",
    }
    assert uuid.UUID(contact["id"])
