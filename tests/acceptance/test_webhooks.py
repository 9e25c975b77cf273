"""The webhook engine end to end (docs/webhooks.md, and the examples of Pipeliner's webhook
documentation): a real ``crmhooks serve`` process, real receiver processes on loopback, real
databases. What a test expects to have arrived is checked once the dispatcher has routed every
event and has nothing pending for the test's webhooks (``Space.settle``), so an event that must
*not* arrive is known not to have arrived."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from crmhooks.store.tables import delivery_attempts
from tests.support.servers import Server, free_port, wait_until
from tests.support.stack import Hook, Receiver, Space, launch, start_receiver

pytestmark = pytest.mark.slow

DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}\+00:00$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
DOC_URL = "https://enrdznpu5i7jp.x.pipedream.net"


def names_and_ids(hook: Hook) -> list[tuple[str, str]]:
    return [(el["event"], el["entity"]["id"]) for el in hook.elements()]


# --- the product documentation's examples, as written -----------------------------------------

DOC_ACCOUNT_CREATE: dict[str, Any] = {
    "insecure_ssl": False,
    "url": DOC_URL,
    "events": ["Account.Create"],
    "options": {},
}

DOC_FIELD_CHANGE: dict[str, Any] = {
    "insecure_ssl": False,
    "url": DOC_URL,
    "events": ["Opportunity.Update"],
    "options": {"entity": {"Opportunity": {"on-field-change": ["closing_date", "value"]}}},
}

DOC_OPEN_ONLY: dict[str, Any] = {
    "insecure_ssl": False,
    "url": DOC_URL,
    "events": ["Opportunity.Update"],
    "options": {"entity": {"Opportunity": {"filter": {"status": "Open"}}}},
}

DOC_CUSTOM_ENTITY: dict[str, Any] = {
    "insecure_ssl": False,
    "url": DOC_URL,
    "events": ["CustomEntity.Create", "CustomEntity.Update"],
    "options": {
        "custom_entity_api_name": ["CE_Bid", "CE_Campaign"],
        "entity": {"CE_Bid": {"filter": {"name": "important"}, "filter-op": {"name": "contains"}}},
    },
}


def test_doc_account_create_sends_the_body_of_the_new_account(tenant: Space) -> None:
    hook = tenant.register(DOC_ACCOUNT_CREATE)
    account = tenant.create("Accounts", {"name": "Acme", "city": "Bratislava"})
    tenant.patch("Accounts", account["id"], {"name": "Acme Ltd"})  # not subscribed
    tenant.settle(hook)
    [el] = hook.elements()
    assert el["event"] == "Account.Create"
    assert el["entity"] == account  # the record as the API returned it after the change


def test_doc_on_field_change_fires_for_closing_date_or_value_and_not_for_name(
    tenant: Space,
) -> None:
    step = tenant.pipeline_step()
    hook = tenant.register(DOC_FIELD_CHANGE)
    opened = {"closing_date": "2026-06-30", "value": {"base_value": 500.0}}
    opp = tenant.create("Opportunities", {"name": "Deal", "step_id": step, **opened})
    value = {"base_value": 1000.0, "currency_id": "EUR", "value_foreign": 1000.0}
    tenant.patch("Opportunities", opp["id"], {"closing_date": "2026-12-31"})
    tenant.patch("Opportunities", opp["id"], {"value": value})
    tenant.patch("Opportunities", opp["id"], {"name": "Bigger deal"})
    tenant.patch("Opportunities", opp["id"], {"name": "Biggest deal", "closing_date": "2027-01-31"})
    tenant.settle(hook)
    els = hook.elements()
    assert [el["event"] for el in els] == ["Opportunity.Update"] * 3
    assert [sorted(set(el["changes"]) & {"closing_date", "value", "name"}) for el in els] == [
        ["closing_date"],
        ["value"],
        ["closing_date", "name"],
    ]
    assert els[0]["changes"]["closing_date"] == {"old": "2026-06-30", "new": "2026-12-31"}
    assert els[1]["changes"]["value"]["new"] == value
    assert els[2]["entity"]["name"] == "Biggest deal"


def test_doc_status_filter_fires_for_open_opportunities_only(tenant: Space) -> None:
    step = tenant.pipeline_step()
    hook = tenant.register(DOC_OPEN_ONLY)
    opps = [tenant.create("Opportunities", {"name": f"O{i}", "step_id": step}) for i in range(4)]
    open_, won, lost, archived = (o["id"] for o in opps)
    tenant.patch("Opportunities", open_, {"name": "still open"})
    tenant.patch("Opportunities", won, {"status": 3})
    tenant.patch("Opportunities", lost, {"status": 2})
    tenant.patch("Opportunities", archived, {"is_archived": True})  # archived while open: Lost
    tenant.patch("Opportunities", lost, {"status": 1})  # open again
    tenant.settle(hook)
    els = hook.elements()
    assert [(el["event"], el["entity"]["id"]) for el in els] == [
        ("Opportunity.Update", open_),
        ("Opportunity.Update", lost),
    ]
    assert all(el["entity"]["status"] == 1 for el in els)


def test_doc_custom_entity_webhook_fires_for_listed_entities_and_filters_ce_bid_by_name(
    tenant: Space,
) -> None:
    for api_name in ("CE_Bid", "CE_Campaign", "CE_Other"):
        fields = [{"api_name": "amount", "type": "integer"}]
        tenant.create("CustomEntities", {"api_name": api_name, "name": api_name, "fields": fields})
    hook = tenant.register(DOC_CUSTOM_ENTITY)
    bid_only = tenant.register(
        {
            "insecure_ssl": False,
            "url": DOC_URL,
            "events": ["CustomEntity.Create", "CustomEntity.Update"],
            "options": {"custom_entity_api_name": ["CE_Bid"]},
        }
    )
    important = tenant.create("CE_Bid", {"name": "An important bid", "amount": 5})["id"]
    boring = tenant.create("CE_Bid", {"name": "A boring bid"})["id"]
    tenant.patch("CE_Bid", boring, {"name": "Now an important bid"})
    tenant.patch("CE_Bid", important, {"amount": 6})
    campaign = tenant.create("CE_Campaign", {"name": "Spring"})["id"]
    tenant.patch("CE_Campaign", campaign, {"amount": 1})
    tenant.create("CE_Other", {"name": "important, but not listed"})
    tenant.delete("CE_Bid", important)  # Delete is not subscribed
    tenant.settle(hook, bid_only)
    assert names_and_ids(hook) == [
        ("CustomEntity.Create", important),
        ("CustomEntity.Update", boring),
        ("CustomEntity.Update", important),
        ("CustomEntity.Create", campaign),
        ("CustomEntity.Update", campaign),
    ]
    assert names_and_ids(bid_only) == [
        ("CustomEntity.Create", important),
        ("CustomEntity.Create", boring),
        ("CustomEntity.Update", boring),
        ("CustomEntity.Update", important),
    ]
    assert hook.elements()[0]["entity"]["amount"] == 5


# --- which write raises which event (docs/webhooks.md#events) -------------------------------------


@dataclass
class Step:
    label: str
    expected: list[str]
    start: datetime
    end: datetime
    got: list[dict[str, Any]] = field(default_factory=list)


class Script:
    """Writes run one after another, each with the event names it must raise, in order.

    Every event of one write carries that write's time, so each received event is matched to
    the write whose request was in flight at that time.
    """

    def __init__(self) -> None:
        self.steps: list[Step] = []

    def __call__(self, label: str, expected: list[str], write: Callable[[], Any]) -> Any:
        start = datetime.now(UTC)
        result = write()
        self.steps.append(Step(label, expected, start, datetime.now(UTC)))
        return result

    def attribute(self, elements: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """File each element under its write; the elements no write accounts for."""
        stray = []
        for el in elements:
            at = datetime.fromisoformat(el["event_time"])
            owner = next((s for s in self.steps if s.start <= at <= s.end), None)
            if owner is None:
                stray.append(el)
            else:
                owner.got.append(el)
        return stray

    def step(self, label: str) -> Step:
        return next(s for s in self.steps if s.label == label)


def test_every_event_is_raised_by_the_write_that_should_raise_it_and_by_no_other(
    tenant: Space,
) -> None:
    s = tenant
    hook = s.register({"insecure_ssl": False, "events": ["*"], "options": {}})
    r = Script()

    # Types with no events of their own.
    ann = r("create Client", [], lambda: s.create("Clients", {"first_name": "Ann"}))["id"]
    bob = r("create Client 2", [], lambda: s.create("Clients", {"first_name": "Bob"}))["id"]
    r("patch Client", [], lambda: s.patch("Clients", ann, {"last_name": "Lee"}))
    pipe = r("create Pipeline", [], lambda: s.create("Pipelines", {"name": "P"}))["id"]
    step1 = r("create Step", [], lambda: s.create("Steps", {"name": "A", "pipeline_id": pipe}))[
        "id"
    ]
    step2 = r(
        "create Step 2",
        [],
        lambda: s.create("Steps", {"name": "B", "pipeline_id": pipe, "sort_order": 1}),
    )["id"]
    r("patch Step", [], lambda: s.patch("Steps", step2, {"percent": 50}))
    r("patch Pipeline", [], lambda: s.patch("Pipelines", pipe, {"name": "Pipe"}))
    definition = {
        "api_name": "CE_Bid",
        "name": "Bid",
        "fields": [{"api_name": "n", "type": "text"}],
    }
    ce_def = r("create CustomEntities", [], lambda: s.create("CustomEntities", definition))["id"]
    r("patch CustomEntities", [], lambda: s.patch("CustomEntities", ce_def, {"name": "Bids"}))
    r(
        "create another Webhook",
        [],
        lambda: s.create(
            "Webhooks",
            {
                "url": s.stack.receiver.url + "/unused",
                "events": ["Product.Create"],
                "insecure_ssl": False,
            },
        ),
    )

    # Accounts, and the batch routes.
    acc = r("create Account", ["Account.Create"], lambda: s.create("Accounts", {"name": "A"}))["id"]
    r("patch Account", ["Account.Update"], lambda: s.patch("Accounts", acc, {"city": "Wien"}))
    r("patch Account, no change", [], lambda: s.patch("Accounts", acc, {"city": "Wien"}))
    r(
        "Account owner",
        ["Account.Update", "Account.OwnerChanged"],
        lambda: s.patch("Accounts", acc, {"owner_id": ann}),
    )
    batch = r(
        "batch-modify Accounts",
        ["Account.Update", "Account.Create"],
        lambda: s.request(
            "POST",
            "Accounts",
            "batch-modify",
            json=[{"id": acc, "name": "A2"}, {"name": "B", "owner_id": s.client_id}],
        ),
    )
    acc_b = batch[1]
    bad_item = {"id": acc, "owner_id": str(uuid.UUID(int=1))}  # no such Client
    r(
        "batch-modify failing all or nothing",
        [],
        lambda: s.request(
            "POST",
            "Accounts",
            "batch-modify",
            json=[{"name": "C", "owner_id": s.client_id}, bad_item],
            expect=422,
        ),
    )
    r(
        "batch-modify keeping what succeeded",
        ["Account.Create"],
        lambda: s.request(
            "POST",
            "Accounts",
            "batch-modify",
            params={"rollback-method": "1"},
            json=[bad_item, {"name": "D", "owner_id": s.client_id}],
        ),
    )
    r("delete Account", ["Account.Delete"], lambda: s.delete("Accounts", acc_b))
    r(
        "batch-restore Account",
        ["Account.Update"],
        lambda: s.request("POST", "Accounts", "batch-restore", json=[acc_b]),
    )
    r(
        "batch-delete Account",
        ["Account.Delete"],
        lambda: s.request("POST", "Accounts", "batch-delete", json=[acc_b]),
    )

    # Contacts.
    con = r(
        "create Contact", ["Contact.Create"], lambda: s.create("Contacts", {"first_name": "C"})
    )["id"]
    r("patch Contact", ["Contact.Update"], lambda: s.patch("Contacts", con, {"title": "Dr"}))
    r(
        "Contact owner",
        ["Contact.Update", "Contact.OwnerChanged"],
        lambda: s.patch("Contacts", con, {"owner_id": bob}),
    )

    # Relation rows: their own events, after the parent's; the shorthands write them too.
    car = "ContactAccountRelation"
    con2 = r(
        "create Contact with a nested primary account",
        ["Contact.Create", f"{car}.Create"],
        lambda: s.create(
            "Contacts",
            {"last_name": "N", "account_relations": [{"account_id": acc, "is_primary": True}]},
        ),
    )["id"]
    acc_c = r("create Account C", ["Account.Create"], lambda: s.create("Accounts", {"name": "C"}))
    link = r(
        "link a Contact to an Account, primary",
        [f"{car}.Create", f"{car}.Update"],  # the new primary clears the old one
        lambda: s.create(
            f"{car}s", {"contact_id": con2, "account_id": acc_c["id"], "is_primary": True}
        ),
    )["id"]
    r("patch a relation", [f"{car}.Update"], lambda: s.patch(f"{car}s", link, {"comment": "x"}))
    r("delete a relation", [f"{car}.Delete"], lambda: s.delete(f"{car}s", link))
    r(
        "Contact primary account shorthand",
        ["Contact.Update", f"{car}.Create"],
        lambda: s.patch("Contacts", con, {"primary_account_id": acc}),
    )

    # Leads: Lost, archive while open, qualify, back to lead.
    lead = r("create Lead", ["Lead.Create"], lambda: s.create("Leads", {"name": "L"}))["id"]
    r("Lead step", ["Lead.Update"], lambda: s.patch("Leads", lead, {"step_id": step1}))
    r(
        "Lead owner",
        ["Lead.Update", "Lead.OwnerChanged"],
        lambda: s.patch("Leads", lead, {"owner_id": ann}),
    )
    lead2 = r("create Lead 2", ["Lead.Create"], lambda: s.create("Leads", {"name": "L2"}))["id"]
    lead3 = r("create Lead 3", ["Lead.Create"], lambda: s.create("Leads", {"name": "L3"}))["id"]
    r("Lead lost", ["Lead.Update", "Lead.Lost"], lambda: s.patch("Leads", lead2, {"status": 2}))
    r(
        "Lead archived while open",
        ["Lead.Update", "Lead.Lost"],
        lambda: s.patch("Leads", lead3, {"is_archived": True}),
    )
    r(
        "qualify",
        ["Opportunity.Qualify"],
        lambda: s.request("POST", "Leads", lead, "qualify", json={"step_id": step1}),
    )
    r(
        "back to lead",
        ["Lead.BackToLead"],
        lambda: s.request("POST", "Opportunities", lead, "back-to-lead"),
    )

    # Opportunities: Move, Won, Lost, archive while open, several at once.
    def new_opp(name: str) -> str:
        return str(s.create("Opportunities", {"name": name, "step_id": step1})["id"])

    def created_opp(label: str, name: str) -> str:
        return str(r(label, ["Opportunity.Create"], lambda: new_opp(name)))

    opp = created_opp("create Opportunity", "O")
    opp2, opp3, opp4 = (created_opp(f"create {n}", n) for n in ("O2", "O3", "O4"))
    upd = "Opportunity.Update"
    r("Opportunity patch", [upd], lambda: s.patch("Opportunities", opp, {"name": "O!"}))
    r(
        "Opportunity step",
        [upd, "Opportunity.Move"],
        lambda: s.patch("Opportunities", opp, {"step_id": step2}),
    )
    r(
        "Opportunity won",
        [upd, "Opportunity.Won"],
        lambda: s.patch("Opportunities", opp, {"status": 3}),
    )
    r(
        "archive won Opportunity",
        [upd],
        lambda: s.patch("Opportunities", opp, {"is_archived": True}),
    )
    r(
        "Opportunity lost",
        [upd, "Opportunity.Lost"],
        lambda: s.patch("Opportunities", opp2, {"status": 2}),
    )
    r("Opportunity reopened", [upd], lambda: s.patch("Opportunities", opp2, {"status": 1}))
    r(
        "Opportunity archived while open",
        [upd, "Opportunity.Lost"],
        lambda: s.patch("Opportunities", opp3, {"is_archived": True}),
    )
    r(
        "Opportunity owner, step and won at once",
        [upd, "Opportunity.OwnerChanged", "Opportunity.Move", "Opportunity.Won"],
        lambda: s.patch("Opportunities", opp4, {"owner_id": bob, "step_id": step2, "status": 3}),
    )

    # Line items: their own events, with their Opportunity as related_entity.
    product = r("create Product", ["Product.Create"], lambda: s.create("Products", {"name": "P"}))[
        "id"
    ]
    r("patch Product", ["Product.Update"], lambda: s.patch("Products", product, {"sku": "P-1"}))
    line = r(
        "create line item",
        ["OpptyProductRelation.Create"],
        lambda: s.create(
            "OpptyProductRelations",
            {"oppty_id": opp2, "product_id": product, "quantity": 2, "price": 10},
        ),
    )["id"]
    r(
        "patch line item",
        ["OpptyProductRelation.Update"],
        lambda: s.patch("OpptyProductRelations", line, {"quantity": 3}),
    )
    r(
        "delete line item",
        ["OpptyProductRelation.Delete"],
        lambda: s.delete("OpptyProductRelations", line),
    )

    # Tasks, Emails, Appointments, and comments.
    task = r("create Task", ["Task.Create"], lambda: s.create("Tasks", {"subject": "T"}))["id"]
    r("patch Task", ["Task.Update"], lambda: s.patch("Tasks", task, {"priority": 3}))
    r(
        "Task owner",
        ["Task.Update", "Task.OwnerChanged"],
        lambda: s.patch("Tasks", task, {"owner_id": ann}),
    )
    tc = r(
        "create TaskComment",
        ["Task.Comment"],
        lambda: s.create("TaskComments", {"task_id": task, "comment": "hi"}),
    )["id"]
    r("patch TaskComment", [], lambda: s.patch("TaskComments", tc, {"comment": "hello"}))
    r("delete TaskComment", [], lambda: s.delete("TaskComments", tc))
    email = r("create Email", ["Email.Create"], lambda: s.create("Emails", {"subject": "E"}))["id"]
    r(
        "Email owner (Email has no OwnerChanged)",
        ["Email.Update"],
        lambda: s.patch("Emails", email, {"owner_id": ann}),
    )
    appt = r(
        "create Appointment",
        ["Appointment.Create"],
        lambda: s.create("Appointments", {"subject": "M"}),
    )["id"]
    r(
        "Appointment owner",
        ["Appointment.Update", "Appointment.OwnerChanged"],
        lambda: s.patch("Appointments", appt, {"owner_id": bob}),
    )
    ac = r(
        "create AppointmentComment",
        ["Appointment.Comment"],
        lambda: s.create("AppointmentComments", {"appointment_id": appt, "comment": "c"}),
    )["id"]
    r("patch AppointmentComment", [], lambda: s.patch("AppointmentComments", ac, {"comment": "d"}))

    # Custom entity records.
    bid = r("create CE record", ["CustomEntity.Create"], lambda: s.create("CE_Bid", {"name": "B"}))[
        "id"
    ]
    r("patch CE record", ["CustomEntity.Update"], lambda: s.patch("CE_Bid", bid, {"n": "x"}))
    r(
        "CE record owner",
        ["CustomEntity.Update", "CustomEntity.OwnerChanged"],
        lambda: s.patch("CE_Bid", bid, {"owner_id": ann}),
    )

    # Documents: DocumentLinked on the linked record only.
    links = {
        "account_id": (acc, "Account"),
        "contact_id": (con, "Contact"),
        "lead_oppty_id": (lead, "Lead"),
        "task_id": (task, "Task"),
        "email_id": (email, "Email"),
        "appointment_id": (appt, "Appointment"),
        "custom_entity_id": (bid, "CustomEntity"),
    }
    docs: dict[str, str] = {}
    for link, (target, prefix) in links.items():
        body = {"filename": f"{link}.pdf", link: target}
        docs[link] = r(
            f"document linked by {link}",
            [f"{prefix}.DocumentLinked"],
            functools.partial(s.create, "CloudObjects", body),
        )["id"]
    opp_doc = r(
        "document linked to an Opportunity",
        ["Opportunity.DocumentLinked"],
        lambda: s.create("CloudObjects", {"filename": "o.pdf", "lead_oppty_id": opp}),
    )["id"]
    r(
        "patch document",
        [],
        lambda: s.patch("CloudObjects", docs["account_id"], {"filename": "renamed.pdf"}),
    )
    r(
        "document linked elsewhere",
        ["Contact.DocumentLinked"],
        lambda: s.patch(
            "CloudObjects", docs["account_id"], {"account_id": None, "contact_id": con}
        ),
    )
    r("delete document", [], lambda: s.delete("CloudObjects", opp_doc))
    loose = r("create unlinked document", [], lambda: s.create("CloudObjects", {"filename": "u"}))
    r(
        "link a document later",
        ["Email.DocumentLinked"],
        lambda: s.patch("CloudObjects", loose["id"], {"email_id": email}),
    )

    # Deletes last: the records above stay linkable until here.
    r("delete Contact", ["Contact.Delete"], lambda: s.delete("Contacts", con))
    r("delete Lead", ["Lead.Delete"], lambda: s.delete("Leads", lead))
    r("delete Opportunity", ["Opportunity.Delete"], lambda: s.delete("Opportunities", opp4))
    r("delete Task", ["Task.Delete"], lambda: s.delete("Tasks", task))
    r("delete Email", ["Email.Delete"], lambda: s.delete("Emails", email))
    r("delete Appointment", ["Appointment.Delete"], lambda: s.delete("Appointments", appt))
    r("delete Product", ["Product.Delete"], lambda: s.delete("Products", product))
    r("delete CE record", ["CustomEntity.Delete"], lambda: s.delete("CE_Bid", bid))
    r("delete Client", [], lambda: s.delete("Clients", bob))
    r("delete Step", [], lambda: s.delete("Steps", step2))

    s.settle(hook)
    stray = r.attribute(hook.elements())
    got = [(st.label, [el["event"] for el in st.got]) for st in r.steps]
    want = [(st.label, st.expected) for st in r.steps]
    assert got == want
    assert stray == []

    # The record each event is about, and its related record.
    for link, (target, _) in links.items():
        [el] = r.step(f"document linked by {link}").got
        assert el["entity"]["id"] == target
        assert el["related_entity"]["id"] == docs[link]
        assert el["related_entity"]["filename"] == f"{link}.pdf"
    [el] = r.step("document linked elsewhere").got
    assert (el["entity"]["id"], el["related_entity"]["id"]) == (con, docs["account_id"])
    [el] = r.step("create TaskComment").got
    assert (el["entity"]["id"], el["related_entity"]["id"]) == (task, tc)
    assert el["related_entity"]["comment"] == "hi"
    [el] = r.step("create AppointmentComment").got
    assert (el["entity"]["id"], el["related_entity"]["id"]) == (appt, ac)
    for label in ("create line item", "patch line item", "delete line item"):
        [el] = r.step(label).got
        assert el["entity"]["id"] == line
        assert el["related_entity"]["id"] == opp2
    [el] = r.step("delete line item").got
    assert el["entity"]["is_deleted"] is True
    [el] = r.step("qualify").got
    assert el["entity"]["id"] == lead
    assert el["entity"]["was_qualified"] is True
    [el] = r.step("back to lead").got
    assert el["entity"]["id"] == lead
    for st in r.steps:
        for el in st.got:
            if el["event"] not in ("Account.Update", "Account.Create", "Account.Delete"):
                continue
            assert el["related_entity"] is None


# --- the request sent (docs/webhooks.md#the-body) -------------------------------------------------

ELEMENT_KEYS = {
    "id",
    "event",
    "event_time",
    "team_space_id",
    "webhook",
    "entity",
    "related_entity",
    "changes",
}
WEBHOOK_KEYS = {
    "id",
    "url",
    "events",
    "insecure_ssl",
    "options",
    "is_deleted",
    "created",
    "modified",
    "application_id",
    "client_id",
}


def check_element(el: dict[str, Any], tenant: Space, hook: Hook) -> None:
    """What a strict integration checks in every element."""
    assert set(el) == ELEMENT_KEYS, el.keys()
    assert UUID_RE.match(el["id"])
    assert DATETIME_RE.match(el["event_time"]), el["event_time"]
    assert isinstance(el["team_space_id"], str)
    assert el["team_space_id"] == tenant.space_id
    wh = el["webhook"]
    assert set(wh) == WEBHOOK_KEYS, wh.keys()
    assert wh["id"] == hook.id
    assert wh["url"] == hook.receiver.url + hook.path
    assert wh["events"] == hook.record["events"]
    assert wh["insecure_ssl"] is False
    assert wh["options"] == hook.record["options"]
    assert wh["is_deleted"] is False
    assert DATETIME_RE.match(wh["created"])
    assert DATETIME_RE.match(wh["modified"])
    assert UUID_RE.match(wh["application_id"])
    assert wh["application_id"] == tenant.key_id
    assert wh["client_id"] is None
    assert "related_entity" in el
    entity = el["entity"]
    assert UUID_RE.match(entity["id"])
    for key in ("created", "modified"):
        assert DATETIME_RE.match(entity[key]), entity[key]


def test_payload_has_the_contract_shape_and_a_retry_resends_the_same_ids(tenant: Space) -> None:
    step = tenant.pipeline_step()
    options = {
        "entity": {"Opportunity": {"expand": ["primary_account"]}},
        "skip_keys": ["nobody"],
        "chunk_size": 50,
    }
    hook = tenant.register({"insecure_ssl": False, "events": ["Opportunity.*"], "options": options})
    other = tenant.register({"insecure_ssl": False, "events": ["Opportunity.Create"]})
    hook.receiver.add_rule(hook.path, status=500, count=1)
    account = tenant.create("Accounts", {"name": "Buyer"})
    opp = tenant.create(
        "Opportunities",
        {
            "name": "Deal",
            "step_id": step,
            "primary_account_id": account["id"],
            "closing_date": "2026-11-30",
        },
    )
    first, retry = hook.receiver.wait_for(2, hook.path)
    assert retry.body == first.body
    assert retry.headers["webhook-id"] == first.headers["webhook-id"]
    assert [el["id"] for el in retry.elements()] == [el["id"] for el in first.elements()]
    assert int(retry.headers["webhook-timestamp"]) >= int(first.headers["webhook-timestamp"])
    assert retry.time - first.time >= 0.3  # the retry schedule, 0.5 s +-20 %
    [failed] = wait_until(
        lambda: tenant.stack.logged(event="delivery failed, will retry", webhook_id=hook.id),
        what="the failure in the log",
    )
    assert (failed["status_code"], failed["attempt"], failed["level"]) == (500, 1, "warning")
    assert failed["delivery_id"] in {r["id"] for r in tenant.stack.deliveries_of(hook.id)}
    assert failed["next_attempt_at"]

    tenant.patch("Opportunities", opp["id"], {"value": {"base_value": 5.5, "currency_id": "EUR"}})
    tenant.settle(hook, other)
    requests = hook.requests()
    assert len(requests) == 3
    for req in requests:
        assert req.method == "POST"
        assert req.headers["content-type"].startswith("application/json")
        assert req.headers["user-agent"].startswith("crmhooks/")
        assert req.headers["webhook-timestamp"].isdigit()
        assert "webhook-signature" not in req.headers  # no secret, no signature
    created, updated = requests[1].elements() + requests[2].elements()
    for el in (created, updated):
        check_element(el, tenant, hook)
    assert created["event"] == "Opportunity.Create"
    assert created["entity"]["id"] == opp["id"]
    assert created["entity"]["primary_account"]["name"] == "Buyer"  # options.entity expand
    assert DATE_RE.match(created["entity"]["closing_date"])
    assert created["related_entity"] is None
    assert created["changes"] is None
    assert updated["event"] == "Opportunity.Update"
    assert updated["changes"]["value"] == {
        "old": created["entity"]["value"],
        "new": {"base_value": 5.5, "currency_id": "EUR", "value_foreign": None},
    }
    assert updated["entity"]["value"]["base_value"] == 5.5
    # The id is per event and per webhook.
    [other_el] = other.elements()
    assert other_el["event"] == "Opportunity.Create"
    assert other_el["id"] != created["id"]

    # What the server recorded: one request tried twice, the other delivered at once.
    rows = tenant.stack.deliveries_of(hook.id)
    assert [(d["status"], d["attempts"], d["last_status"]) for d in rows] == [
        ("delivered", 2, 200),
        ("delivered", 1, 200),
    ]
    assert rows[0]["id"] == first.headers["webhook-id"]
    with tenant.stack.db.connect() as conn:
        codes = conn.execute(
            select(delivery_attempts.c.attempt, delivery_attempts.c.status_code)
            .where(delivery_attempts.c.delivery_id == rows[0]["id"])
            .order_by(delivery_attempts.c.attempt)
        ).all()
    assert [tuple(c) for c in codes] == [(1, 500), (2, 200)]


# --- options ------------------------------------------------------------------------------------


def test_skip_key_suppresses_only_the_webhooks_that_list_it(tenant: Space) -> None:
    s = tenant
    skipping = s.register(
        {
            "insecure_ssl": False,
            "events": ["Account.*"],
            "options": {"skip_keys": ["my_integration", "gmail_sync"]},
        }
    )
    plain = s.register({"insecure_ssl": False, "events": ["Account.*"], "options": {}})
    acc = s.create("Accounts", {"name": "A"}, headers={"Webhook-Skip-Key": "my_integration"})["id"]
    s.patch("Accounts", acc, {"city": "one"}, headers={"Webhook-Skip-Key": "gmail_sync"})
    s.request(
        "POST",
        "Accounts",
        "batch-modify",
        json=[{"id": acc, "city": "two"}],
        headers={"Webhook-Skip-Key": "my_integration"},
    )
    s.patch("Accounts", acc, {"city": "three"}, headers={"Webhook-Skip-Key": "someone_else"})
    s.patch("Accounts", acc, {"city": "four"})
    s.settle(skipping, plain)
    assert [(e["event"], e["entity"]["city"]) for e in plain.elements()] == [
        ("Account.Create", None),
        ("Account.Update", "one"),
        ("Account.Update", "two"),
        ("Account.Update", "three"),
        ("Account.Update", "four"),
    ]
    assert [(e["event"], e["entity"]["city"]) for e in skipping.elements()] == [
        ("Account.Update", "three"),
        ("Account.Update", "four"),
    ]


def test_a_batch_of_250_is_sent_in_chunks_of_100_100_50_spaced_by_chunk_delay(
    sqlite_tenant: Space,
) -> None:
    s = sqlite_tenant
    hook = s.register(
        {
            "insecure_ssl": False,
            "events": ["Account.Create"],
            "options": {"chunk_size": 100, "chunk_delay": 1},
        }
    )
    ids = s.request(
        "POST",
        "Accounts",
        "batch-modify",
        json=[{"name": f"A{i}", "owner_id": s.client_id} for i in range(250)],
    )
    s.settle(hook)
    requests = sorted(hook.requests(), key=lambda r: r.time)
    assert [len(r.elements()) for r in requests] == [100, 100, 50]
    assert [el["entity"]["id"] for r in requests for el in r.elements()] == ids
    first = requests[0].time
    assert requests[1].time - first >= 1.0
    assert requests[2].time - first >= 2.0
    assert requests[2].time - first < 2.0 + 3.0  # and not much later


def test_the_contract_options_example_shapes_filters_and_skips_as_documented(
    tenant: Space,
) -> None:
    s = tenant
    step = s.pipeline_step()
    mine, theirs, nobody = (s.create("Clients", {"first_name": n})["id"] for n in "ABC")
    options = {
        "entity": {
            "Opportunity": {
                "expand": ["primary_account", "product_relations.product"],
                "load-only": ["id", "name", "value", "primary_account.name"],
                "filter": {"status": "Open", "owner_id": [mine, theirs]},
                "filter-op": {"status": "eq"},
                "on-field-change": ["closing_date", "value"],
            }
        },
        "related_entity": {"expand": ["contact"], "load-only": ["id", "contact"]},
        "skip_keys": ["gmail_sync", "custom_integration"],
        "chunk_size": 100,
        "chunk_delay": 0,
    }
    hook = s.register(
        {"insecure_ssl": False, "events": ["Opportunity.*", "Contact.*"], "options": options}
    )
    acc = s.create("Accounts", {"name": "Buyer"})["id"]
    opp = s.create(
        "Opportunities",
        {
            "name": "D",
            "step_id": step,
            "owner_id": mine,
            "primary_account_id": acc,
            "value": {"base_value": 250.0},
        },
    )["id"]
    s.create("Opportunities", {"name": "E", "step_id": step, "owner_id": nobody})
    s.patch("Opportunities", opp, {"closing_date": "2026-01-01"})
    s.patch("Opportunities", opp, {"name": "D2"})  # not a field listed in on-field-change
    s.patch(
        "Opportunities",
        opp,
        {"value": {"base_value": 1.0}},
        headers={"Webhook-Skip-Key": "gmail_sync"},
    )
    con = s.create("Contacts", {"first_name": "Con"})["id"]
    doc = s.create("CloudObjects", {"filename": "f.pdf", "contact_id": con})["id"]
    s.settle(hook)
    els = hook.elements()
    assert [(el["event"], el["entity"]["id"]) for el in els] == [
        ("Opportunity.Create", opp),
        ("Opportunity.Update", opp),
        ("Contact.Create", con),
        ("Contact.DocumentLinked", con),
    ]
    assert els[0]["entity"] == {
        "id": opp,
        "name": "D",
        "value": {"base_value": 250.0, "currency_id": None, "value_foreign": None},
        "primary_account": {"name": "Buyer"},
    }
    assert els[2]["entity"]["first_name"] == "Con"  # no options for Contact: the whole record
    related = els[3]["related_entity"]
    assert set(related) == {"id", "contact"}
    assert related["id"] == doc
    assert related["contact"]["id"] == con


# --- signatures (docs/webhooks.md#headers) --------------------------------------------------------


def new_whsec() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def test_pipeliner_signature_is_the_hex_hmac_of_the_raw_body(tenant: Space) -> None:
    s = tenant
    secret = str(uuid.uuid4())
    hook = s.register(
        {"insecure_ssl": False, "events": ["Account.*"], "options": {}, "signature": secret}
    )
    assert hook.record["signature"] == secret  # shown whole in the create response only
    shown = s.get("Webhooks", hook.id)["signature"]
    assert shown != secret
    assert shown.endswith(secret[-4:])
    acc = s.create("Accounts", {"name": "Signed"})["id"]
    [req] = hook.receiver.wait_for(1, hook.path)
    expected = hmac.new(secret.encode(), req.body, hashlib.sha256).hexdigest()
    assert req.headers["webhook-signature"] == expected

    rotated = str(uuid.uuid4())
    patched = s.patch("Webhooks", hook.id, {"signature": rotated})
    assert patched["signature"] != rotated
    s.patch("Accounts", acc, {"name": "Signed again"})
    _, req2 = hook.receiver.wait_for(2, hook.path)
    expected2 = hmac.new(rotated.encode(), req2.body, hashlib.sha256).hexdigest()
    assert req2.headers["webhook-signature"] == expected2


def test_standard_webhooks_signature_verifies_with_the_reference_library_across_rotation(
    tenant: Space,
) -> None:
    s = tenant
    hook = s.register(
        {
            "insecure_ssl": False,
            "events": ["Account.*"],
            "options": {},
            "signature_scheme": "standard-webhooks",
        }
    )
    secret = hook.record["signature"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) >= 24
    for shown in (s.get("Webhooks", hook.id)["signature"], s.get("Webhooks")[0]["signature"]):
        assert secret[:-4] not in shown  # masked on every later read
    acc = s.create("Accounts", {"name": "Std"})["id"]
    [req] = hook.receiver.wait_for(1, hook.path)
    assert Webhook(secret).verify(req.body, req.headers)[0]["event"] == "Account.Create"
    with pytest.raises(WebhookVerificationError):
        Webhook(new_whsec()).verify(req.body, req.headers)

    rotated = new_whsec()
    patched = s.patch("Webhooks", hook.id, {"signature": rotated})
    assert patched["signature"] != rotated
    s.patch("Accounts", acc, {"name": "Std 2"})
    _, req2 = hook.receiver.wait_for(2, hook.path)
    assert len(req2.headers["webhook-signature"].split(" ")) == 2
    Webhook(rotated).verify(req2.body, req2.headers)
    Webhook(secret).verify(req2.body, req2.headers)  # the old one, within its grace period
    with pytest.raises(WebhookVerificationError):
        Webhook(new_whsec()).verify(req2.body, req2.headers)


# --- TLS ---------------------------------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_insecure_ssl_false_refuses_a_self_signed_receiver_and_true_delivers_to_it(
    sqlite_tenant: Space, tmp_path: Path
) -> None:
    s = sqlite_tenant
    tls = start_receiver(tmp_path, tls=self_signed(tmp_path))
    try:
        assert tls.url.startswith("https://")
        strict = s.register(
            {"insecure_ssl": False, "events": ["Account.Create"]}, receiver=tls, name="strict"
        )
        lax = s.register(
            {"insecure_ssl": True, "events": ["Account.Create"]}, receiver=tls, name="lax"
        )
        s.create("Accounts", {"name": "Over TLS"})
        [el] = lax.wait_elements(1)
        assert el["event"] == "Account.Create"
        # Tried, failed, retried on the schedule, given up: and nothing ever arrived.
        wait_until(
            lambda: [d["status"] for d in s.stack.deliveries_of(strict.id)] == ["failed"],
            what="the delivery to the self-signed receiver to fail",
        )
        [row] = s.stack.deliveries_of(strict.id)
        assert row["attempts"] == 3
        assert row["last_status"] is None
        assert "certificate" in row["last_error"].lower() or "ssl" in row["last_error"].lower()
        assert strict.requests() == []
    finally:
        tls.stop()


# --- bad input ---------------------------------------------------------------------------------

VALID: dict[str, Any] = {
    "url": "https://hooks.example.com/in",
    "events": ["Account.Create"],
    "insecure_ssl": False,
    "options": {},
}

# (what is wrong, the body's changes, the field named, text the message must hold)
INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown event", {"events": ["Account.Explode"]}, "events", "Account.Explode"),
    ("unknown entity in event", {"events": ["Widget.Create"]}, "events", "Widget.Create"),
    ("event of an entity without it", {"events": ["Email.OwnerChanged"]}, "events", "Email.Owner"),
    ("no events", {"events": []}, "events", ""),
    ("events not a list", {"events": "Account.Create"}, "events", ""),
    ("unknown option", {"options": {"chunk_sise": 5}}, "options.chunk_sise", "chunk_sise"),
    (
        "unknown entity option",
        {"options": {"entity": {"Account": {"filters": {}}}}},
        "options.entity.Account.filters",
        "filters",
    ),
    (
        "filter on a field the entity lacks",
        {"options": {"entity": {"Account": {"filter": {"closing_date": "2026-01-01"}}}}},
        "options.entity.Account.filter",
        "closing_date",
    ),
    (
        "unknown filter operator",
        {
            "options": {
                "entity": {"Account": {"filter": {"name": "x"}, "filter-op": {"name": "resembles"}}}
            }
        },
        "options.entity.Account.filter",
        "resembles",
    ),
    (
        "on-field-change of a field the entity lacks",
        {"options": {"entity": {"Opportunity": {"on-field-change": ["colour"]}}}},
        "options.entity.Opportunity.on-field-change",
        "colour",
    ),
    (
        "options of an unknown entity",
        {"options": {"entity": {"Widget": {}}}},
        "options.entity.Widget",
        "Widget",
    ),
    (
        "options of an undefined custom entity",
        {"options": {"entity": {"CE_Nothing": {}}}},
        "options.entity.CE_Nothing",
        "CE_Nothing",
    ),
    (
        "expand of an unknown relation",
        {"options": {"entity": {"Account": {"expand": ["boss"]}}}},
        "options.entity.Account",
        "boss",
    ),
    ("chunk_size 0", {"options": {"chunk_size": 0}}, "options.chunk_size", "0"),
    ("chunk_size 101", {"options": {"chunk_size": 101}}, "options.chunk_size", "101"),
    ("chunk_size 1.5", {"options": {"chunk_size": 1.5}}, "options.chunk_size", "1.5"),
    ("chunk_size text", {"options": {"chunk_size": "10"}}, "options.chunk_size", "10"),
    ("negative chunk_delay", {"options": {"chunk_delay": -1}}, "options.chunk_delay", "-1"),
    ("skip_keys not strings", {"options": {"skip_keys": [1]}}, "options.skip_keys", ""),
    (
        "custom entity name without CE_",
        {"options": {"custom_entity_api_name": ["Bid"]}},
        "options.custom_entity_api_name",
        "Bid",
    ),
    ("options not an object", {"options": ["chunk_size"]}, "options", ""),
    ("url scheme ftp", {"url": "ftp://hooks.example.com/in"}, "url", "ftp://hooks.example.com"),
    ("url without host", {"url": "http:///in"}, "url", "http:///in"),
    ("url not a URL", {"url": "hooks"}, "url", "hooks"),
    ("cloud metadata address", {"url": "http://169.254.169.254/"}, "url", "169.254.169.254"),
    ("private address", {"url": "http://10.0.0.1/"}, "url", "10.0.0.1"),
    ("loopback address", {"url": "http://127.0.0.1:9/"}, "url", "127.0.0.1"),
    ("IPv6 loopback", {"url": "http://[::1]:9/"}, "url", "::1"),
    ("IPv4-mapped loopback", {"url": "http://[::ffff:127.0.0.1]/"}, "url", "::ffff:127.0.0.1"),
    ("unspecified address", {"url": "http://0.0.0.0/"}, "url", "0.0.0.0"),
    ("a name of loopback", {"url": "http://localhost:9/"}, "url", "localhost"),
    ("insecure_ssl missing", {"insecure_ssl": None}, "insecure_ssl", ""),
    ("insecure_ssl not boolean", {"insecure_ssl": "no"}, "insecure_ssl", ""),
    ("url missing", {"url": None}, "url", ""),
    ("pipeliner secret not a UUID", {"signature": "hunter2"}, "signature", "UUID"),
    (
        "standard-webhooks secret not whsec_",
        {"signature_scheme": "standard-webhooks", "signature": "hunter2"},
        "signature",
        "whsec_",
    ),
    ("unknown scheme", {"signature_scheme": "md5"}, "signature_scheme", "md5"),
    ("unknown client", {"client_id": str(uuid.UUID(int=7))}, "client_id", str(uuid.UUID(int=7))),
]


def invalid_body(changes: dict[str, Any]) -> dict[str, Any]:
    body = {**VALID, **changes}
    return {k: v for k, v in body.items() if v is not None}


def assert_names(r: httpx.Response, field_name: str, needle: str) -> None:
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["success"] is False
    assert body["name"] == "ERROR_ENTITY_VALIDATION"
    errors = {fe["field_name"]: fe for fe in body["field_errors"]}
    assert field_name in errors, body
    messages = " ".join(e["message"] for e in errors[field_name]["errors"])
    assert needle in messages, messages


@pytest.fixture(scope="module")
def plain_http(plain_server: Server) -> Any:
    with httpx.Client(
        base_url=f"{plain_server.url}/api/v100/rest/spaces/default/entities",
        auth=httpx.BasicAuth(plain_server.api_key, plain_server.api_secret),
        timeout=30,
    ) as http:
        yield http


@pytest.mark.parametrize(
    ("changes", "field_name", "needle"),
    [pytest.param(c, f, n, id=what) for what, c, f, n in INVALID],
)
def test_an_invalid_registration_is_a_422_naming_the_value(
    plain_http: httpx.Client, changes: dict[str, Any], field_name: str, needle: str
) -> None:
    r = plain_http.post("/Webhooks", json=invalid_body(changes))
    assert_names(r, field_name, needle)


def test_an_invalid_patch_of_a_webhook_is_a_422_and_changes_nothing(
    plain_http: httpx.Client,
) -> None:
    r = plain_http.post("/Webhooks", json=VALID)
    assert r.status_code == 201, r.text
    hook_id = r.json()["data"]["id"]
    for changes, field_name, needle in [
        ({"options": {"chunk_size": 0}}, "options.chunk_size", "0"),
        ({"events": ["Account.Explode"]}, "events", "Account.Explode"),
        ({"url": "http://169.254.169.254/latest/meta-data"}, "url", "169.254.169.254"),
    ]:
        assert_names(plain_http.patch(f"/Webhooks/{hook_id}", json=changes), field_name, needle)
    after = plain_http.get(f"/Webhooks/{hook_id}").json()["data"]
    assert (after["url"], after["events"], after["options"]) == (
        VALID["url"],
        VALID["events"],
        VALID["options"],
    )


def test_the_allow_list_opens_only_the_networks_it_names(sqlite_tenant: Space) -> None:
    s = sqlite_tenant
    for url in ("http://169.254.169.254/", "http://10.0.0.1/", "http://192.168.1.1/"):
        r = s.http.post(s.path("Webhooks"), json={**VALID, "url": url})
        assert_names(r, "url", url.split("/")[2])
    r = s.http.post(s.path("Webhooks"), json={**VALID, "url": s.stack.receiver.url + "/ok"})
    assert r.status_code == 201, r.text


# --- receivers that misbehave -------------------------------------------------------------------


def test_a_receiver_that_answers_garbage_hangs_closes_or_refuses_does_not_stall_delivery(
    sqlite_tenant: Space, tmp_path: Path
) -> None:
    s = sqlite_tenant
    launches = {mode: launch(tmp_path, mode=mode) for mode in ("garbage", "hang", "close")}
    broken: dict[str, Receiver] = {mode: lau.ready() for mode, lau in launches.items()}
    try:
        body = {"insecure_ssl": False, "events": ["Account.Create"]}
        bad = {mode: s.register(body, receiver=rec, name=mode) for mode, rec in broken.items()}
        bad["refused"] = s.register(body, base=f"http://127.0.0.1:{free_port()}")
        healthy = s.register(body, name="healthy")
        written = time.time()
        s.create("Accounts", {"name": "first"})
        [req] = healthy.receiver.wait_for(1, healthy.path, timeout=5)
        assert req.time - written < 1.5  # not behind the hanging receiver (timeout 2 s)
        for mode in ("garbage", "hang", "close"):
            bad[mode].receiver.wait_for(1, bad[mode].path, timeout=5)  # the request arrived

        # The others fail at once and are retried on the schedule; the hang times out.
        def retried(hook: Hook) -> bool:
            return sum(int(d["attempts"]) for d in s.stack.deliveries_of(hook.id)) >= 2

        for mode in ("garbage", "close", "refused"):
            wait_until(functools.partial(retried, bad[mode]), what=f"a retry of the {mode} hook")
        wait_until(
            lambda: s.stack.deliveries_of(bad["hang"].id)[0]["attempts"] >= 1,
            what="the hanging request to time out",
        )
        written = time.time()
        s.create("Accounts", {"name": "second"})
        _, req2 = healthy.receiver.wait_for(2, healthy.path, timeout=5)
        assert req2.time - written < 1.5
        for mode, hook in bad.items():
            row = s.stack.deliveries_of(hook.id)[0]
            assert row["last_status"] is None, (mode, row)
            assert row["last_error"], (mode, row)
        assert "timed out" in s.stack.deliveries_of(bad["hang"].id)[0]["last_error"]
        assert s.stack.server.process.poll() is None
    finally:
        for rec in broken.values():
            rec.stop()


def test_a_410_answer_disables_the_webhook(tenant: Space) -> None:
    s = tenant
    hook = s.register({"insecure_ssl": False, "events": ["Account.Create"]})
    hook.receiver.add_rule(hook.path, status=410)
    s.create("Accounts", {"name": "gone"})
    wait_until(
        lambda: s.get("Webhooks", hook.id)["is_active"] is False, what="the webhook disabled"
    )
    shown = s.get("Webhooks", hook.id)
    assert "410" in shown["disabled_reason"]
    [row] = s.stack.deliveries_of(hook.id)
    assert (row["status"], row["attempts"], row["last_status"]) == ("failed", 1, 410)
    # Structured logs name the webhook and the delivery.
    [given_up] = wait_until(lambda: s.stack.logged(delivery_id=row["id"]), what="a log line")
    assert given_up["webhook_id"] == hook.id
    assert (given_up["event"], given_up["level"]) == ("delivery failed, given up", "error")
    assert (given_up["attempt"], given_up["status_code"]) == (1, 410)
    [disabled] = s.stack.logged(event="webhook disabled", webhook_id=hook.id)
    assert "410" in disabled["reason"]
