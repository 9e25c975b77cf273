"""Explain, ``GET /entities/Webhooks/{id}/explain?event_id=`` (CONTRACT section 11): every rule
of docs/webhooks.md, Matching, passing and failing once, decided as routing decides, and the
deliveries that carried the event."""

from __future__ import annotations

from typing import Any

import httpx

from crmhooks.delivery.router import Router
from crmhooks.store.engine import open_database
from tests.support.api import BASE, Api
from tests.support.databases import new_space

# A public address literal: registration needs no lookup, and nothing is sent here.
TARGET = "http://93.184.216.34/hook"
RULES = [
    "event_name",
    "registered_before",
    "skip_key",
    "custom_entity",
    "client",
    "filter",
    "on_field_change",
]


async def _hook(api: Api, events: list[str], **more: Any) -> str:
    hook = await api.create(
        "Webhooks", {"url": TARGET, "events": events, "insecure_ssl": False, **more}
    )
    return str(hook["id"])


async def _events(api: Api, name: str) -> list[dict[str, Any]]:
    r = await api.http.get(
        f"{BASE}/{api.space.space_id}/events", params={"filter[event]": name, "first": 100}
    )
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


async def _explain(api: Api, hook_id: str, event_id: str) -> dict[str, Any]:
    r = await api.http.get(api.path("Webhooks", hook_id, "explain"), params={"event_id": event_id})
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()["data"]
    assert [c["rule"] for c in data["checks"]] == RULES  # every rule, in the docs' order
    return data


def _check(verdict: dict[str, Any], rule: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in verdict["checks"] if c["rule"] == rule)
    return found


async def test_every_rule_passes_and_the_delivery_is_named(api: Api, db_url: str) -> None:
    owner = api.space.client_id
    options = {
        "skip_keys": ["mine"],
        "entity": {
            "Account": {
                "filter": {"name": "Acme"},
                "filter-op": {"name": "starts"},
                "on-field-change": ["name"],
            }
        },
    }
    hook = await _hook(api, ["Account.Update"], client_id=owner, options=options)
    account = await api.create("Accounts", {"name": "Acme"})
    r = await api.http.patch(api.path("Accounts", account["id"]), json={"name": "Acme Ltd"})
    assert r.status_code == 200, r.text
    (update,) = await _events(api, "Account.Update")
    db = open_database(db_url)
    router = Router(db, "http://testserver")
    try:
        assert await router.step() == 1  # the request that carries it
    finally:
        await router.close()
        await db.dispose()
    verdict = await _explain(api, hook, update["id"])
    assert verdict["matched"] is True
    assert verdict["event"] == "Account.Update"
    assert verdict["event_id"] == update["id"]
    assert all(c["passed"] for c in verdict["checks"]), verdict["checks"]
    assert len(verdict["deliveries"]) == 1
    r = await api.http.get(api.path("Webhooks", hook, "deliveries", verdict["deliveries"][0]))
    assert r.status_code == 200, r.text
    assert "Account.Update" in _check(verdict, "event_name")["detail"]
    assert "passes all 1 conditions" in _check(verdict, "filter")["detail"]
    assert _check(verdict, "on_field_change")["detail"] == "asked for name; changed: name"


async def test_each_rule_fails_once_naming_what_it_compared(
    api: Api, app_http: httpx.AsyncClient
) -> None:
    owner = api.space.client_id
    other_owner = (await api.create("Clients", {"first_name": "Ann"}))["id"]
    account = await api.create("Accounts", {"name": "Acme"})
    (create,) = await _events(api, "Account.Create")
    # 1, 2: a webhook on another event, registered after the event.
    later = await _hook(api, ["Contact.Create"])
    verdict = await _explain(api, later, create["id"])
    assert verdict["matched"] is False
    assert not _check(verdict, "event_name")["passed"]
    assert "Contact.Create; the event is Account.Create" in _check(verdict, "event_name")["detail"]
    assert not _check(verdict, "registered_before")["passed"]
    assert _check(verdict, "skip_key")["passed"]
    assert verdict["deliveries"] == []

    options = {
        "skip_keys": ["mine"],
        "entity": {
            "Account": {
                "filter": {"name": "Globex"},
                "on-field-change": ["email1"],
            }
        },
    }
    hook = await _hook(api, ["Account.*"], client_id=other_owner, options=options)
    r = await api.http.patch(
        api.path("Accounts", account["id"]),
        json={"name": "Acme Ltd"},
        headers={"Webhook-Skip-Key": "mine"},
    )
    assert r.status_code == 200, r.text
    (update,) = await _events(api, "Account.Update")
    verdict = await _explain(api, hook, update["id"])
    assert verdict["matched"] is False
    passed = {c["rule"]: c["passed"] for c in verdict["checks"]}
    assert passed == {
        "event_name": True,
        "registered_before": True,
        "skip_key": False,
        "custom_entity": True,
        "client": False,
        "filter": False,
        "on_field_change": False,
    }
    assert "'mine'" in _check(verdict, "skip_key")["detail"]
    assert other_owner in _check(verdict, "client")["detail"]
    assert owner is not None
    assert owner in _check(verdict, "client")["detail"]
    assert (
        _check(verdict, "filter")["detail"] == "name eq 'Globex': the record's value is 'Acme Ltd'"
    )
    assert _check(verdict, "on_field_change")["detail"] == "asked for email1; changed: name"


async def test_a_custom_entity_not_listed_fails_its_rule(api: Api) -> None:
    for api_name in ("CE_Bid", "CE_Campaign"):
        fields = [{"api_name": "amount", "type": "integer"}]
        await api.create(
            "CustomEntities", {"api_name": api_name, "name": api_name, "fields": fields}
        )
    hook = await _hook(api, ["CustomEntity.Create"], options={"custom_entity_api_name": ["CE_Bid"]})
    await api.create("CE_Campaign", {"name": "Spring"})
    await api.create("CE_Bid", {"name": "A bid"})
    campaign, bid = await _events(api, "CustomEntity.Create")
    verdict = await _explain(api, hook, campaign["id"])
    assert not _check(verdict, "custom_entity")["passed"]
    assert "CE_Bid; the record's: CE_Campaign" in _check(verdict, "custom_entity")["detail"]
    assert (await _explain(api, hook, bid["id"]))["matched"] is True


async def test_bad_or_unknown_event_ids_and_other_spaces(api: Api, db_url: str) -> None:
    hook = await _hook(api, ["Account.Create"])
    path = api.path("Webhooks", hook, "explain")
    for params, status in [
        ({}, 400),
        ({"event_id": "42"}, 400),
        ({"event_id": "00000000-0000-4000-8000-000000000000"}, 404),
        ({"event_id": "00000000-0000-4000-8000-000000000000", "extra": "1"}, 400),
    ]:
        r = await api.http.get(path, params=params)
        assert r.status_code == status, (params, r.text)
        assert r.json()["success"] is False
    # Another space's event, or its webhook: not found from here.
    other = await new_space(db_url, "other")
    auth = httpx.BasicAuth(other.api_key, other.api_secret)
    other_api = Api(api.http, other)
    await other_api.create("Accounts", {"name": "theirs"}, auth=auth)
    r = await api.http.get(f"{BASE}/{other.space_id}/events", params={"first": 100}, auth=auth)
    theirs = r.json()["data"][-1]["id"]
    r = await api.http.get(path, params={"event_id": theirs})
    assert r.status_code == 404, r.text
    r = await api.http.get(path, params={"event_id": theirs}, auth=auth)
    assert r.status_code == 401  # its key on this space
