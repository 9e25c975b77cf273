"""Pipeliner's relation entities: rows of their own, shown on their parents as lists, written
nested, through their routes, or through our single-link shorthands."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from crmhooks.store.engine import open_database
from crmhooks.store.tables import events
from tests.support.api import Api


async def _data(api: Api, entity: str, *rest: str, **params: str) -> Any:
    r = await api.get(entity, *rest, params=params)
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def _event_names(db_url: str) -> list[str]:
    db = open_database(db_url)
    try:
        async with db.read() as conn:
            rows = await conn.execute(select(events.c.name).order_by(events.c.seq))
            return [r[0] for r in rows]
    finally:
        await db.dispose()


def _uri_id(uri: str) -> str:
    return uri.rsplit("/", 1)[1]


async def test_a_contact_created_with_account_relations_as_in_pipeliners_tutorial(
    api: Api, db_url: str
) -> None:
    acme = await api.create("Accounts", {"name": "Acme"})
    globex = await api.create("Accounts", {"name": "Globex"})
    contact = await api.create(
        "Contacts",
        {
            "first_name": "Ann",
            "account_relations": [
                {"account_id": acme["id"], "is_primary": False},
                {"account_id": globex["id"], "is_primary": True, "position": "CTO"},
            ],
        },
    )
    assert contact["primary_account_id"] == globex["id"]
    assert contact["primary_account"].endswith(f"/Accounts/{globex['id']}")
    assert len(contact["account_relations"]) == 2

    shown = await _data(api, "Contacts", contact["id"], expand="account_relations.account")
    rows = shown["account_relations"]
    assert [r["account"]["name"] for r in rows] == ["Acme", "Globex"]
    assert [r["is_primary"] for r in rows] == [False, True]
    assert rows[1]["position"] == "CTO"
    assert rows[1]["contact"].endswith(f"/Contacts/{contact['id']}")

    # The URIs of the plain list lead to the rows.
    relation = await _data(api, "ContactAccountRelations", _uri_id(contact["account_relations"][1]))
    assert relation["account_id"] == globex["id"]
    assert await _event_names(db_url) == [
        "Account.Create",
        "Account.Create",
        "Contact.Create",
        "ContactAccountRelation.Create",
        "ContactAccountRelation.Create",
    ]


async def test_the_primary_shorthand_writes_relation_rows(api: Api) -> None:
    acme = await api.create("Accounts", {"name": "Acme"})
    globex = await api.create("Accounts", {"name": "Globex"})
    contact = await api.create("Contacts", {"last_name": "Bo", "primary_account_id": acme["id"]})
    rows = await _data(api, "ContactAccountRelations", **{"filter[contact_id]": contact["id"]})
    assert [(r["account_id"], r["is_primary"]) for r in rows] == [(acme["id"], True)]

    r = await api.http.patch(
        api.path("Contacts", contact["id"]), json={"primary_account_id": globex["id"]}
    )
    assert r.status_code == 200, r.text
    rows = await _data(api, "ContactAccountRelations", **{"filter[contact_id]": contact["id"]})
    assert sorted((r["account_id"], r["is_primary"]) for r in rows) == sorted(
        [(acme["id"], False), (globex["id"], True)]
    )

    r = await api.http.patch(api.path("Contacts", contact["id"]), json={"primary_account_id": None})
    assert r.json()["data"]["primary_account_id"] is None
    rows = await _data(api, "ContactAccountRelations", **{"filter[contact_id]": contact["id"]})
    assert [r["is_primary"] for r in rows] == [False, False]


async def test_a_relation_written_through_its_route_moves_the_primary(
    api: Api, db_url: str
) -> None:
    acme = await api.create("Accounts", {"name": "Acme"})
    globex = await api.create("Accounts", {"name": "Globex"})
    contact = await api.create("Contacts", {"last_name": "Bo", "primary_account_id": acme["id"]})
    made = await api.create(
        "ContactAccountRelations",
        {"contact_id": contact["id"], "account_id": globex["id"], "is_primary": True},
    )
    assert made["is_primary"] is True
    shown = await _data(api, "Contacts", contact["id"])
    assert shown["primary_account_id"] == globex["id"]
    names = await _event_names(db_url)
    assert names[-2:] == ["ContactAccountRelation.Create", "ContactAccountRelation.Update"]

    r = await api.http.delete(api.path("ContactAccountRelations", made["id"]))
    assert r.status_code == 200
    shown = await _data(api, "Contacts", contact["id"])
    assert shown["primary_account_id"] is None
    assert len(shown["account_relations"]) == 1
    assert (await _event_names(db_url))[-1] == "ContactAccountRelation.Delete"


async def test_a_second_row_for_the_same_pair_and_a_missing_record_are_refused(api: Api) -> None:
    acme = await api.create("Accounts", {"name": "Acme"})
    contact = await api.create("Contacts", {"last_name": "Bo", "primary_account_id": acme["id"]})
    r = await api.http.post(
        api.path("ContactAccountRelations"),
        json={"contact_id": contact["id"], "account_id": acme["id"], "is_primary": False},
    )
    assert r.status_code == 422, r.text
    assert r.json()["field_errors"][0]["field_name"] == "account_id"
    missing = "00000000-0000-4000-8000-000000000000"
    r = await api.http.post(
        api.path("ContactAccountRelations"),
        json={"contact_id": contact["id"], "account_id": missing, "is_primary": False},
    )
    assert r.status_code == 422
    assert r.json()["field_errors"][0]["errors"][0]["code"] == 120


async def test_a_nested_item_that_fails_leaves_nothing_behind(api: Api, db_url: str) -> None:
    before = await _event_names(db_url)
    missing = "00000000-0000-4000-8000-000000000000"
    r = await api.http.post(
        api.path("Contacts"),
        json={
            "last_name": "Bo",
            "account_relations": [{"account_id": missing, "is_primary": True}],
        },
    )
    assert r.status_code == 422, r.text
    assert (await _data(api, "Contacts")) == []
    assert await _event_names(db_url) == before
    # In a batch that keeps what succeeds, the failed item is gone whole.
    acme = await api.create("Accounts", {"name": "Acme"})
    r = await api.http.post(
        api.path("Contacts", "batch-modify"),
        params={"rollback-method": "1"},
        json=[
            {
                "last_name": "Ok",
                "owner_id": api.space.client_id,
                "account_relations": [{"account_id": acme["id"], "is_primary": True}],
            },
            {
                "last_name": "No",
                "owner_id": api.space.client_id,
                "account_relations": [{"account_id": missing, "is_primary": True}],
            },
        ],
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert isinstance(data[0], str)
    assert data[1]["index"] == 1
    contacts = await _data(api, "Contacts")
    assert [c["last_name"] for c in contacts] == ["Ok"]
    assert len(await _data(api, "ContactAccountRelations")) == 1


async def test_an_update_replaces_a_nested_list(api: Api) -> None:
    a, b, c = [(await api.create("Accounts", {"name": n}))["id"] for n in "abc"]
    contact = await api.create(
        "Contacts",
        {
            "last_name": "Bo",
            "account_relations": [
                {"account_id": a, "is_primary": True},
                {"account_id": b, "is_primary": False},
            ],
        },
    )
    keep = _uri_id(contact["account_relations"][1])
    r = await api.http.patch(
        api.path("Contacts", contact["id"]),
        json={
            "account_relations": [
                {"id": keep, "is_primary": True},
                {"account_id": c, "is_primary": False},
            ]
        },
    )
    assert r.status_code == 200, r.text
    shown = r.json()["data"]
    assert shown["primary_account_id"] == b
    assert shown["revision"] == 2  # the contact's derived primary account changed
    rows = await _data(api, "ContactAccountRelations", **{"filter[contact_id]": contact["id"]})
    assert sorted((r["account_id"], r["is_primary"]) for r in rows) == sorted(
        [(b, True), (c, False)]
    )


async def test_lead_and_opportunity_relations_show_lead_or_oppty(api: Api) -> None:
    acme = await api.create("Accounts", {"name": "Acme"})
    ann = await api.create("Contacts", {"last_name": "Ann"})
    lead = await api.create(
        "Leads",
        {
            "name": "Deal",
            "account_relations": [{"account_id": acme["id"], "is_primary": True}],
            "contact_relations": [{"contact_id": ann["id"], "is_primary": True}],
        },
    )
    assert lead["primary_account_id"] == acme["id"]
    assert lead["primary_contact_id"] == ann["id"]
    row = await _data(api, "LeadOpptyAccountRelations", _uri_id(lead["account_relations"][0]))
    assert row["lead"].endswith(f"/Leads/{lead['id']}")
    assert row["oppty"] is None

    pipeline = await api.create("Pipelines", {"name": "Sales"})
    await api.create("Steps", {"name": "First", "pipeline_id": pipeline["id"]})
    r = await api.http.post(api.path("Leads", lead["id"], "qualify"), json={})
    assert r.status_code == 200, r.text
    row_id = _uri_id(lead["account_relations"][0])
    row = await _data(api, "LeadOpptyAccountRelations", row_id)
    assert row["lead"] is None
    assert row["oppty"].endswith(f"/Opportunities/{lead['id']}")
    assert "lead_oppty" not in row  # Pipeliner shows lead or oppty, no lead_oppty
    row = await _data(api, "LeadOpptyAccountRelations", row_id, expand="oppty")
    assert row["oppty"]["name"] == "Deal"
    oppty = await _data(api, "Opportunities", lead["id"], expand="contact_relations.contact")
    assert oppty["contact_relations"][0]["contact"]["last_name"] == "Ann"


async def test_an_activitys_links_are_activity_relations(api: Api, db_url: str) -> None:
    acme = await api.create("Accounts", {"name": "Acme"})
    globex = await api.create("Accounts", {"name": "Globex"})
    ann = await api.create("Contacts", {"last_name": "Ann"})
    lead = await api.create("Leads", {"name": "Deal"})
    task = await api.create(
        "Tasks",
        {
            "subject": "Call",
            "account_id": acme["id"],
            "contact_relations": [{"contact_id": ann["id"]}],
            "lead_relations": [{"lead_oppty_id": lead["id"]}],
        },
    )
    assert task["contact_id"] == ann["id"]
    assert task["lead_oppty_id"] == lead["id"]
    shown = await _data(api, "Tasks", task["id"])
    assert len(shown["account_relations"]) == 1
    assert len(shown["contact_relations"]) == 1
    assert len(shown["lead_relations"]) == 1
    assert shown["opportunity_relations"] == []
    row = await _data(api, "ActivityRelations", _uri_id(shown["account_relations"][0]))
    assert row["account_id"] == acme["id"]
    assert row["task"].endswith(f"/Tasks/{task['id']}")
    assert row["appointment"] is None
    assert "activity_type" not in row

    # The shorthand moves the single link: the old row goes, a new one comes.
    r = await api.http.patch(api.path("Tasks", task["id"]), json={"account_id": globex["id"]})
    assert r.status_code == 200, r.text
    rows = await _data(api, "ActivityRelations", **{"filter[activity_id]": task["id"]})
    assert sorted(r["account_id"] for r in rows if r["account_id"]) == [globex["id"]]
    names = await _event_names(db_url)
    assert names[-3:] == ["Task.Update", "ActivityRelation.Delete", "ActivityRelation.Create"]

    # Through the route, on an Appointment.
    meeting = await api.create("Appointments", {"subject": "Meet"})
    made = await api.create(
        "ActivityRelations", {"activity_id": meeting["id"], "account_id": acme["id"]}
    )
    assert made["appointment"].endswith(f"/Appointments/{meeting['id']}")
    assert (await _data(api, "Appointments", meeting["id"]))["account_id"] == acme["id"]


async def test_an_activity_relation_names_an_activity_and_one_record(api: Api) -> None:
    acme = await api.create("Accounts", {"name": "Acme"})
    ann = await api.create("Contacts", {"last_name": "Ann"})
    task = await api.create("Tasks", {"subject": "Call"})
    r = await api.http.post(
        api.path("ActivityRelations"),
        json={"activity_id": acme["id"], "account_id": acme["id"]},
    )
    assert r.status_code == 422
    assert r.json()["field_errors"][0]["field_name"] == "activity_id"
    r = await api.http.post(
        api.path("ActivityRelations"),
        json={"activity_id": task["id"], "account_id": acme["id"], "contact_id": ann["id"]},
    )
    assert r.status_code == 422
    r = await api.http.post(
        api.path("ActivityRelations"), json={"activity_id": task["id"], "activity_type": "x"}
    )
    assert r.status_code == 422


async def test_easyquote_reads_a_tasks_opportunity_through_its_relations(api: Api) -> None:
    """easyQuote's Task handler: GET each of ``opportunity_relations`` and follow ``oppty``."""
    pipeline = await api.create("Pipelines", {"name": "Sales"})
    step = await api.create("Steps", {"name": "First", "pipeline_id": pipeline["id"]})
    oppty = await api.create("Opportunities", {"name": "Big", "step_id": step["id"]})
    task = await api.create("Tasks", {"subject": "Quote", "lead_oppty_id": oppty["id"]})
    for uri in task["opportunity_relations"]:
        relation = (await api.http.get(uri)).json()["data"]
        followed = (await api.http.get(relation["oppty"])).json()["data"]
        assert followed["name"] == "Big"
    assert len(task["opportunity_relations"]) == 1


async def _events(db_url: str) -> list[Any]:
    db = open_database(db_url)
    try:
        async with db.read() as conn:
            rows = await conn.execute(select(events).order_by(events.c.seq))
            return list(rows.mappings())
    finally:
        await db.dispose()


async def test_a_document_links_to_several_records_through_its_relations(
    api: Api, db_url: str
) -> None:
    acme = await api.create("Accounts", {"name": "Acme"})
    task = await api.create("Tasks", {"subject": "Call"})
    doc = await api.create("CloudObjects", {"filename": "offer.pdf", "account_id": acme["id"]})
    made = await api.create(
        "CloudObjectRelations", {"cloud_object_id": doc["id"], "activity_id": task["id"]}
    )
    assert made["task"].endswith(f"/Tasks/{task['id']}")
    assert made["cloud_object"].endswith(f"/CloudObjects/{doc['id']}")
    shown = await _data(api, "Tasks", task["id"], expand="documents.cloud_object")
    assert [d["cloud_object"]["filename"] for d in shown["documents"]] == ["offer.pdf"]
    # The document's own link fields show its newest link of each kind.
    doc_now = await _data(api, "CloudObjects", doc["id"])
    assert (doc_now["account_id"], doc_now["task_id"]) == (acme["id"], task["id"])
    # It can still be renamed: the one-link rule holds for the link fields a write names.
    r = await api.http.patch(api.path("CloudObjects", doc["id"]), json={"filename": "v2.pdf"})
    assert r.status_code == 200, r.text

    linked = [e for e in await _events(db_url) if e["name"].endswith("DocumentLinked")]
    assert [(e["name"], e["record_id"]) for e in linked] == [
        ("Account.DocumentLinked", acme["id"]),
        ("Task.DocumentLinked", task["id"]),
    ]
    assert all(e["related_entity"] == "CloudObjects" for e in linked)
    assert linked[0]["related"]["filename"] == "offer.pdf"
    assert linked[1]["related"]["id"] == doc["id"]

    r = await api.http.post(
        api.path("CloudObjectRelations"),
        json={"cloud_object_id": doc["id"], "account_id": acme["id"], "contact_id": None},
    )
    assert r.status_code == 422  # that pair is linked already
    r = await api.http.post(api.path("CloudObjectRelations"), json={"cloud_object_id": doc["id"]})
    assert r.status_code == 422  # links nothing
    r = await api.http.post(
        api.path("CloudObjectRelations"),
        json={"cloud_object_id": doc["id"], "message_id": acme["id"]},
    )
    assert r.status_code == 422
    assert r.json()["field_errors"][0]["field_name"] == "message_id"


async def test_moving_a_documents_link_moves_its_relation_row(api: Api, db_url: str) -> None:
    acme = await api.create("Accounts", {"name": "Acme"})
    ann = await api.create("Contacts", {"last_name": "Ann"})
    doc = await api.create("CloudObjects", {"filename": "a.pdf", "account_id": acme["id"]})
    r = await api.http.patch(
        api.path("CloudObjects", doc["id"]), json={"account_id": None, "contact_id": ann["id"]}
    )
    assert r.status_code == 200, r.text
    rows = await _data(api, "CloudObjectRelations", **{"filter[cloud_object_id]": doc["id"]})
    assert [(r["account_id"], r["contact_id"]) for r in rows] == [(None, ann["id"])]
    assert (await _data(api, "Accounts", acme["id"]))["documents"] == []
    names = [e["name"] for e in await _events(db_url)]
    assert names[-1] == "Contact.DocumentLinked"
