"""How records move through their lives (docs/webhooks.md#events): a Lead qualified into an
Opportunity and back, status dates, line item amounts, and custom entities."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support.api import Api
from tests.support.databases import new_space

DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}\+00:00$")


def parse_wire_datetime(value: str) -> datetime:
    assert DATETIME_RE.match(value), value
    return datetime.fromisoformat(value)


def assert_recent(value: str | None) -> None:
    assert value is not None
    moment = parse_wire_datetime(value)
    assert abs(datetime.now(UTC) - moment) < timedelta(minutes=1), value


def assert_invalid(r: httpx.Response, field: str, inner: str | None = None) -> None:
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["success"] is False
    assert body["name"] == "ERROR_ENTITY_VALIDATION"
    by_field = {fe["field_name"]: fe for fe in body["field_errors"]}
    assert field in by_field, body
    if inner is not None:
        assert inner in [e["name"] for e in by_field[field]["errors"]], body


async def read(api: Api, entity: str, record_id: str) -> dict[str, Any]:
    r = await api.get(entity, record_id)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


async def listed_ids(api: Api, entity: str, **params: str) -> list[str]:
    r = await api.get(entity, params={"first": "100", **params})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == len(body["data"])
    return [x["id"] for x in body["data"]]


async def patch(api: Api, entity: str, record_id: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await api.http.patch(api.path(entity, record_id), json=body)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


async def qualify(api: Api, lead_id: str, body: dict[str, Any] | None = None) -> httpx.Response:
    path = api.path("Leads", lead_id, "qualify")
    if body is None:
        return await api.http.post(path)
    return await api.http.post(path, json=body)


async def back_to_lead(api: Api, oppty_id: str) -> httpx.Response:
    return await api.http.post(api.path("Opportunities", oppty_id, "back-to-lead"))


async def pipeline(api: Api, name: str, steps: list[tuple[str, int]]) -> list[str]:
    """A pipeline and its steps, created in the order given; the step ids."""
    p = await api.create("Pipelines", {"name": name})
    ids = []
    for step_name, order in steps:
        step = await api.create(
            "Steps", {"name": step_name, "pipeline_id": p["id"], "sort_order": order}
        )
        ids.append(step["id"])
    return ids


# --- qualify and back to lead ----------------------------------------------------------------


async def test_qualify_turns_a_lead_into_an_opportunity_with_the_same_id(api: Api) -> None:
    _, second = await pipeline(api, "Sales", [("New", 1), ("Offer", 2)])
    account = await api.create("Accounts", {"name": "Acme"})
    lead = await api.create("Leads", {"name": "Big deal", "primary_account_id": account["id"]})
    assert lead["was_qualified"] is False
    assert lead["qualify_date"] is None

    value = {"base_value": 1000.0, "currency_id": "EUR", "value_foreign": 1100.0}
    r = await qualify(
        api, lead["id"], {"step_id": second, "value": value, "closing_date": "2026-12-31"}
    )
    assert r.status_code == 200, r.text
    oppty = r.json()["data"]
    assert oppty["id"] == lead["id"]
    assert oppty["was_qualified"] is True
    assert_recent(oppty["qualify_date"])
    assert oppty["step_id"] == second
    assert oppty["value"] == value
    assert oppty["closing_date"] == "2026-12-31"
    assert oppty["name"] == "Big deal"
    assert oppty["primary_account_id"] == account["id"]
    assert oppty["status"] == 1
    assert oppty["revision"] == lead["revision"] + 1

    assert await read(api, "Opportunities", lead["id"]) == oppty
    assert (await api.get("Leads", lead["id"])).status_code == 404
    assert await listed_ids(api, "Leads") == []
    assert await listed_ids(api, "Opportunities") == [lead["id"]]
    # The account's Lead-or-Opportunity relations follow the record to its new kind.
    doc = await api.create("CloudObjects", {"filename": "offer.pdf", "lead_oppty_id": lead["id"]})
    assert doc["lead_oppty"].endswith(f"/entities/Opportunities/{lead['id']}")
    # Only a Lead can be qualified.
    assert (await qualify(api, lead["id"], {})).status_code == 404


async def test_qualify_without_a_step_takes_the_first_step_of_the_first_pipeline(
    api: Api,
) -> None:
    # Created out of order: the step with the lowest sort_order comes first, not the oldest.
    later, first = await pipeline(api, "Sales", [("Offer", 2), ("New", 1)])
    await pipeline(api, "Renewals", [("Renew", 0)])
    for body in (None, {}):
        lead = await api.create("Leads", {"name": "Lead"})
        r = await qualify(api, lead["id"], body)
        assert r.status_code == 200, r.text
        assert r.json()["data"]["step_id"] == first
    assert later != first


async def test_qualify_with_no_pipeline_step_is_refused_naming_step_id(api: Api) -> None:
    lead = await api.create("Leads", {"name": "Lead"})
    # A deleted step does not count either.
    (step,) = await pipeline(api, "Old", [("Gone", 1)])
    assert (await api.http.delete(api.path("Steps", step))).status_code == 200
    before = await read(api, "Leads", lead["id"])
    r = await qualify(api, lead["id"])
    assert_invalid(r, "step_id")
    assert "step_id" in r.json()["message"]
    assert await read(api, "Leads", lead["id"]) == before
    assert await listed_ids(api, "Opportunities") == []


async def test_qualify_with_bad_input_changes_nothing(api: Api) -> None:
    await pipeline(api, "Sales", [("New", 1)])
    lead = await api.create("Leads", {"name": "Lead"})
    before = await read(api, "Leads", lead["id"])
    ghost = str(uuid.uuid4())
    assert_invalid(
        await qualify(api, lead["id"], {"step_id": ghost}),
        "step_id",
        "ERROR_RELATIONS_DOESNT_EXIST",
    )
    assert_invalid(await qualify(api, lead["id"], {"name": "Renamed"}), "name")
    assert_invalid(await qualify(api, lead["id"], {"closing_date": "soon"}), "closing_date")
    r = await api.http.post(api.path("Leads", lead["id"], "qualify"), content=b"[1]")
    assert r.status_code == 400, r.text
    assert (await qualify(api, str(uuid.uuid4()), {})).status_code == 404
    assert await read(api, "Leads", lead["id"]) == before


async def test_back_to_lead_makes_the_same_id_a_lead_again(api: Api) -> None:
    (step,) = await pipeline(api, "Sales", [("New", 1)])
    lead = await api.create("Leads", {"name": "Lead"})
    value = {"base_value": 50.0, "currency_id": "USD", "value_foreign": None}
    r = await qualify(api, lead["id"], {"value": value, "closing_date": "2027-01-31"})
    assert r.status_code == 200, r.text
    oppty = r.json()["data"]

    r = await back_to_lead(api, lead["id"])
    assert r.status_code == 200, r.text
    again = r.json()["data"]
    assert again["id"] == lead["id"]
    assert again["name"] == "Lead"
    assert again["revision"] == oppty["revision"] + 1
    assert "value" not in again
    assert "closing_date" not in again
    assert await read(api, "Leads", lead["id"]) == again
    assert (await api.get("Opportunities", lead["id"])).status_code == 404
    assert await listed_ids(api, "Opportunities") == []
    assert await listed_ids(api, "Leads") == [lead["id"]]
    assert (await back_to_lead(api, lead["id"])).status_code == 404

    # Qualified again, it gets its Opportunity fields back.
    r = await qualify(api, lead["id"])
    assert r.status_code == 200, r.text
    assert r.json()["data"]["value"] == value
    assert r.json()["data"]["closing_date"] == "2027-01-31"
    assert r.json()["data"]["step_id"] == step


async def test_back_to_lead_is_refused_for_a_won_opportunity(api: Api) -> None:
    (step,) = await pipeline(api, "Sales", [("New", 1)])
    deal = await api.create("Opportunities", {"name": "Deal", "step_id": step})
    won = await patch(api, "Opportunities", deal["id"], {"status": "Won"})
    r = await back_to_lead(api, deal["id"])
    assert_invalid(r, "status")
    assert await read(api, "Opportunities", deal["id"]) == won
    assert await listed_ids(api, "Leads") == []
    # A lost one may go back.
    await patch(api, "Opportunities", deal["id"], {"status": "Lost"})
    r = await back_to_lead(api, deal["id"])
    assert r.status_code == 200, r.text
    assert r.json()["data"]["status"] == 2


# --- status dates ----------------------------------------------------------------------------


async def test_won_and_lost_set_their_dates_and_reopening_clears_them(api: Api) -> None:
    (step,) = await pipeline(api, "Sales", [("New", 1)])
    deal = await api.create("Opportunities", {"name": "Deal", "step_id": step})
    assert deal["status"] == 1
    assert (deal["won_date"], deal["lost_date"]) == (None, None)

    won = await patch(api, "Opportunities", deal["id"], {"status": 3})
    assert won["status"] == 3
    assert_recent(won["won_date"])
    assert won["lost_date"] is None

    lost = await patch(api, "Opportunities", deal["id"], {"status": "Lost"})
    assert lost["status"] == 2
    assert_recent(lost["lost_date"])
    assert lost["won_date"] is None

    reopened = await patch(api, "Opportunities", deal["id"], {"status": "Open"})
    assert reopened["status"] == 1
    assert (reopened["won_date"], reopened["lost_date"]) == (None, None)
    assert await read(api, "Opportunities", deal["id"]) == reopened


async def test_status_dates_do_not_move_when_status_does_not_change(api: Api) -> None:
    (step,) = await pipeline(api, "Sales", [("New", 1)])
    deal = await api.create("Opportunities", {"name": "Deal", "step_id": step, "status": "Won"})
    assert_recent(deal["won_date"])
    renamed = await patch(api, "Opportunities", deal["id"], {"name": "Deal 2", "status": 3})
    assert renamed["won_date"] == deal["won_date"]


async def test_archiving_an_open_opportunity_makes_it_lost(api: Api) -> None:
    (step,) = await pipeline(api, "Sales", [("New", 1)])
    deal = await api.create("Opportunities", {"name": "Deal", "step_id": step})
    archived = await patch(api, "Opportunities", deal["id"], {"is_archived": True})
    assert archived["is_archived"] is True
    assert archived["status"] == 2
    assert_recent(archived["lost_date"])
    # Archiving a won one keeps it won.
    other = await api.create("Opportunities", {"name": "Won", "step_id": step, "status": 3})
    archived = await patch(api, "Opportunities", other["id"], {"is_archived": True})
    assert archived["status"] == 3
    assert archived["won_date"] == other["won_date"]
    assert archived["lost_date"] is None


async def test_lead_lost_and_archived_follow_the_same_rules(api: Api) -> None:
    lead = await api.create("Leads", {"name": "Lead"})
    assert lead["lost_date"] is None
    lost = await patch(api, "Leads", lead["id"], {"status": "Lost"})
    assert lost["status"] == 2
    assert_recent(lost["lost_date"])
    reopened = await patch(api, "Leads", lead["id"], {"status": 1})
    assert reopened["lost_date"] is None
    archived = await patch(api, "Leads", lead["id"], {"is_archived": True})
    assert archived["status"] == 2
    assert_recent(archived["lost_date"])


# --- line items ------------------------------------------------------------------------------


async def test_line_item_amount_is_quantity_times_price_and_follows_patches(api: Api) -> None:
    (step,) = await pipeline(api, "Sales", [("New", 1)])
    deal = await api.create("Opportunities", {"name": "Deal", "step_id": step})
    product = await api.create("Products", {"name": "Widget"})
    item = await api.create(
        "OpptyProductRelations",
        {"oppty_id": deal["id"], "product_id": product["id"], "quantity": 3, "price": 2.5},
    )
    assert item["amount"] == 7.5
    assert (await patch(api, "OpptyProductRelations", item["id"], {"quantity": 4}))[
        "amount"
    ] == 10.0
    assert (await patch(api, "OpptyProductRelations", item["id"], {"price": 1.25}))["amount"] == 5.0
    both = await patch(api, "OpptyProductRelations", item["id"], {"quantity": 0.5, "price": 9})
    assert both["amount"] == 4.5
    assert (await patch(api, "OpptyProductRelations", item["id"], {"comment": "x"}))[
        "amount"
    ] == 4.5
    assert (await read(api, "OpptyProductRelations", item["id"]))["amount"] == 4.5

    plain = await api.create(
        "OpptyProductRelations", {"oppty_id": deal["id"], "product_id": product["id"]}
    )
    assert (plain["quantity"], plain["price"], plain["amount"]) == (1.0, 0.0, 0.0)

    shown = await read(api, "Opportunities", deal["id"])
    assert [u.rsplit("/", 1)[1] for u in shown["product_relations"]] == [item["id"], plain["id"]]
    r = await api.get("OpptyProductRelations", params={"filter[amount]": "4.5"})
    assert [x["id"] for x in r.json()["data"]] == [item["id"]]


# --- custom entities -------------------------------------------------------------------------

BID_FIELDS = [
    {"api_name": "note", "type": "text"},
    {"api_name": "count", "type": "integer"},
    {"api_name": "ratio", "type": "float"},
    {"api_name": "accepted", "type": "boolean"},
    {"api_name": "due", "type": "date"},
    {"api_name": "sent_at", "type": "datetime"},
    {"api_name": "ref", "type": "uuid"},
]


async def define_bid(api: Api) -> dict[str, Any]:
    return await api.create(
        "CustomEntities", {"api_name": "CE_Bid", "name": "Bid", "fields": BID_FIELDS}
    )


async def test_custom_entity_records_are_created_read_patched_and_listed(api: Api) -> None:
    definition = await define_bid(api)
    assert definition["fields"] == BID_FIELDS
    owner = await api.create("Clients", {"first_name": "Ann"})
    ref = str(uuid.uuid4())
    created = await api.create(
        "CE_Bid",
        {
            "name": "First bid",
            "owner_id": owner["id"],
            "note": "hello",
            "count": 5_000_000_000,
            "ratio": 0.25,
            "accepted": True,
            "due": "2026-03-01",
            "sent_at": "2026-03-01T10:00:00+02:00",
            "ref": ref.upper(),
        },
    )
    assert created["name"] == "First bid"
    assert created["owner"].endswith(f"/entities/Clients/{owner['id']}")
    assert created["note"] == "hello"
    assert created["count"] == 5_000_000_000
    assert created["ratio"] == 0.25
    assert created["accepted"] is True
    assert created["due"] == "2026-03-01"
    assert created["sent_at"] == "2026-03-01 08:00:00.000000+00:00"
    assert created["ref"] == ref
    assert created["revision"] == 1
    assert await read(api, "CE_Bid", created["id"]) == created

    patched = await patch(api, "CE_Bid", created["id"], {"count": 6, "accepted": False})
    assert patched["count"] == 6
    assert patched["accepted"] is False
    assert patched["note"] == "hello"
    assert patched["revision"] == 2
    cleared = await patch(api, "CE_Bid", created["id"], {"note": None})
    assert cleared["note"] is None
    assert await read(api, "CE_Bid", created["id"]) == cleared

    second = await api.create("CE_Bid", {"name": "Second bid"})
    assert second["count"] is None
    assert await listed_ids(api, "CE_Bid") == [created["id"], second["id"]]

    doc = await api.create(
        "CloudObjects", {"filename": "bid.pdf", "custom_entity_id": second["id"]}
    )
    assert doc["custom_entity"].endswith(f"/entities/CE_Bid/{second['id']}")
    # Documents are listed as their CloudObjectRelations (Pipeliner's shape).
    shown = await api.get("CE_Bid", second["id"], params={"expand": "documents.cloud_object"})
    (link,) = shown.json()["data"]["documents"]
    assert link["cloud_object"]["id"] == doc["id"]
    assert link["custom_entity"].endswith(f"/entities/CE_Bid/{second['id']}")

    assert (await api.http.delete(api.path("CE_Bid", second["id"]))).status_code == 200
    assert await listed_ids(api, "CE_Bid") == [created["id"]]


async def test_custom_entity_records_filter_on_each_declared_type(
    api: Api, subtests: pytest.Subtests
) -> None:
    await define_bid(api)
    ref = str(uuid.uuid4())
    match = await api.create(
        "CE_Bid",
        {
            "name": "match",
            "note": "yes",
            "count": 5_000_000_000,
            "ratio": 1.5,
            "accepted": True,
            "due": "2026-03-01",
            "sent_at": "2026-03-01 10:00:00+00:00",
            "ref": ref,
        },
    )
    await api.create(
        "CE_Bid",
        {
            "name": "other",
            "note": "no",
            "count": 7,
            "ratio": 2.5,
            "accepted": False,
            "due": "2026-04-01",
            "sent_at": "2026-04-01 10:00:00+00:00",
            "ref": str(uuid.uuid4()),
        },
    )
    await api.create("CE_Bid", {"name": "empty"})
    for field, value in [
        ("name", "match"),
        ("note", "yes"),
        ("count", "5000000000"),
        ("ratio", "1.5"),
        ("accepted", "true"),
        ("due", "2026-03-01"),
        ("sent_at", "2026-03-01T10:00:00Z"),
        ("ref", ref),
    ]:
        with subtests.test(field=field):
            assert await listed_ids(api, "CE_Bid", **{f"filter[{field}]": value}) == [match["id"]]
    with subtests.test("a declared field that does not exist"):
        r = await api.get("CE_Bid", params={"filter[colour]": "red"})
        assert r.status_code == 400, r.text
        assert "colour" in r.json()["message"]
    with subtests.test("a value that does not fit the declared type"):
        r = await api.get("CE_Bid", params={"filter[count]": "many"})
        assert r.status_code == 400, r.text
        assert "filter[count]" in r.json()["message"]


async def test_custom_entity_values_are_checked_against_declared_types(
    api: Api, subtests: pytest.Subtests
) -> None:
    await define_bid(api)
    bid = await api.create("CE_Bid", {"name": "Bid", "count": 1})
    for field, value in [
        ("note", 5),
        ("count", "five"),
        ("count", 1.5),
        ("count", True),
        ("count", 2**63),
        ("ratio", "half"),
        ("accepted", "yes"),
        ("due", "2026-02-30"),
        ("due", "tomorrow"),
        ("sent_at", "later"),
        ("ref", "not-a-uuid"),
        ("colour", "red"),
        ("owner_id", str(uuid.uuid4())),
    ]:
        with subtests.test(field=field, value=value):
            before = await listed_ids(api, "CE_Bid")
            r = await api.http.post(api.path("CE_Bid"), json={"name": "x", field: value})
            assert_invalid(r, field)
            r = await api.http.patch(api.path("CE_Bid", bid["id"]), json={field: value})
            assert_invalid(r, field)
            assert await listed_ids(api, "CE_Bid") == before
    with subtests.test("name is required"):
        assert_invalid(await api.http.post(api.path("CE_Bid"), json={"count": 1}), "name")
    assert (await read(api, "CE_Bid", bid["id"]))["revision"] == 1


async def test_custom_entity_of_one_space_is_invisible_to_another(api: Api, db_url: str) -> None:
    await define_bid(api)
    bid = await api.create("CE_Bid", {"name": "Ours", "count": 1})
    other = await new_space(db_url, "other")
    theirs = httpx.BasicAuth(other.api_key, other.api_secret)
    base = f"/api/v100/rest/spaces/{other.space_id}/entities"

    r = await api.http.get(f"{base}/CE_Bid", auth=theirs)
    assert r.status_code == 404, r.text
    r = await api.http.get(f"{base}/CustomEntities", auth=theirs)
    assert r.json()["total"] == 0

    # The other space defines its own CE_Bid, with other fields; it still sees none of ours.
    r = await api.http.post(
        f"{base}/CustomEntities",
        json={"api_name": "CE_Bid", "name": "Bid", "fields": [{"api_name": "lot", "type": "text"}]},
        auth=theirs,
    )
    assert r.status_code == 201, r.text
    r = await api.http.get(f"{base}/CE_Bid", auth=theirs)
    assert r.status_code == 200, r.text
    assert r.json()["total"] == 0
    assert (await api.http.get(f"{base}/CE_Bid/{bid['id']}", auth=theirs)).status_code == 404
    r = await api.http.patch(f"{base}/CE_Bid/{bid['id']}", json={"name": "x"}, auth=theirs)
    assert r.status_code == 404
    r = await api.http.post(f"{base}/CE_Bid", json={"name": "Theirs", "count": 1}, auth=theirs)
    assert r.status_code == 422  # ``count`` is not a field of their CE_Bid
    r = await api.http.post(f"{base}/CE_Bid", json={"name": "Theirs", "lot": "A"}, auth=theirs)
    assert r.status_code == 201, r.text
    assert await listed_ids(api, "CE_Bid") == [bid["id"]]
    assert (await read(api, "CE_Bid", bid["id"]))["name"] == "Ours"


async def test_deleted_custom_entity_definition_takes_its_route_away(api: Api) -> None:
    definition = await define_bid(api)
    await api.create("CE_Bid", {"name": "Bid"})
    r = await api.http.delete(api.path("CustomEntities", definition["id"]))
    assert r.status_code == 200, r.text
    assert (await api.get("CE_Bid")).status_code == 404
    r = await api.http.post(api.path("CE_Bid"), json={"name": "x"})
    assert r.status_code == 404


async def test_adding_a_declared_field_makes_it_writable(api: Api) -> None:
    definition = await define_bid(api)
    bid = await api.create("CE_Bid", {"name": "Bid"})
    r = await api.http.patch(api.path("CE_Bid", bid["id"]), json={"stage": "open"})
    assert_invalid(r, "stage", "ERROR_FIELD_UNKNOWN")
    await patch(
        api,
        "CustomEntities",
        definition["id"],
        {"fields": [*BID_FIELDS, {"api_name": "stage", "type": "text"}]},
    )
    assert (await patch(api, "CE_Bid", bid["id"], {"stage": "open"}))["stage"] == "open"
