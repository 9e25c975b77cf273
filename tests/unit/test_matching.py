"""Which events a change raises, and which webhooks an event fires: pure functions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from crmhooks.changes.events import drafts
from crmhooks.changes.writer import Action, Change
from crmhooks.errors import ValidationFailed
from crmhooks.hooks.match import Event, WebhookIndex, accepts, accepts_any_time
from crmhooks.hooks.subscription import compile_webhook
from crmhooks.schema.registry import BUILTIN

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _sub(events: list[str], options: dict[str, Any] | None = None, **extra: Any) -> Any:
    record = {
        "id": str(uuid.uuid4()),
        "space_id": "s",
        "url": "https://example.test/hook",
        "events": events,
        "insecure_ssl": False,
        "options": options or {},
        "created": "2025-12-31 00:00:00.000000+00:00",
        **extra,
    }
    return compile_webhook(record, {})


def _event(name: str, record: dict[str, Any], **extra: Any) -> Event:
    entity = extra.pop("entity", "Opportunities")
    key = extra.pop("option_key", BUILTIN[entity].singular if entity in BUILTIN else entity)
    fields: dict[str, Any] = {
        "seq": 1,
        "id": str(uuid.uuid4()),
        "space_id": "s",
        "name": name,
        "entity": entity,
        "option_key": key,
        "record_id": record.get("id", "r"),
        "record_json": record,
        "changes": None,
        "related_entity": None,
        "related_id": None,
        "related_json": None,
        "skip_key": None,
        "burst_id": "b",
        "occurred": T0,
    }
    fields.update(extra)
    return Event(**fields)


def test_on_field_change_fires_only_when_a_listed_field_changed() -> None:
    sub = _sub(
        ["Opportunity.Update"],
        {"entity": {"Opportunity": {"on-field-change": ["closing_date", "value"]}}},
    )
    changed_value = {"value": {"old": None, "new": {"base_value": 1}}}
    assert accepts(sub, _event("Opportunity.Update", {}, changes=changed_value))
    assert not accepts(sub, _event("Opportunity.Update", {}, changes={"name": {}}))


def test_status_filter_accepts_names() -> None:
    sub = _sub(["Opportunity.Update"], {"entity": {"Opportunity": {"filter": {"status": "Open"}}}})
    assert accepts(sub, _event("Opportunity.Update", {"status": 1}))
    assert not accepts(sub, _event("Opportunity.Update", {"status": 3}))


def test_skip_keys_suppress_only_listed_keys() -> None:
    sub = _sub(["*"], {"skip_keys": ["gmail_sync"]})
    assert not accepts(sub, _event("Account.Create", {}, entity="Accounts", skip_key="gmail_sync"))
    assert accepts(sub, _event("Account.Create", {}, entity="Accounts", skip_key="other"))


def test_custom_entity_names_limit_custom_entity_events() -> None:
    sub = _sub(["CustomEntity.*"], {"custom_entity_api_name": ["CE_Bid"]})
    bid = _event("CustomEntity.Create", {}, entity="CE_Bid")
    campaign = _event("CustomEntity.Create", {}, entity="CE_Campaign")
    assert accepts(sub, bid)
    assert not accepts(sub, campaign)


def test_client_id_limits_to_records_of_that_owner() -> None:
    owner = str(uuid.uuid4())
    sub = _sub(["Account.*"], client_id=owner)
    assert accepts(sub, _event("Account.Update", {"owner_id": owner}, entity="Accounts"))
    assert not accepts(sub, _event("Account.Update", {"owner_id": None}, entity="Accounts"))


def test_events_before_the_webhook_existed_do_not_fire_it() -> None:
    sub = _sub(["*"])
    assert not accepts(sub, _event("Account.Create", {}, occurred=T0 - timedelta(days=2)))


def test_index_looks_only_at_the_events_space_and_names() -> None:
    wanted = _sub(["Account.Create"])
    wildcard = _sub(["Account.*"])
    everything = _sub(["*"])
    other = _sub(["Contact.Create"])
    elsewhere = compile_webhook({**wanted.webhook, "space_id": "t", "id": str(uuid.uuid4())}, {})
    index = WebhookIndex([wanted, wildcard, everything, other, elsewhere])
    routed = index.route(_event("Account.Create", {}, entity="Accounts"))
    assert {s.id for s in routed} == {wanted.id, wildcard.id, everything.id}


@pytest.mark.parametrize(
    ("options", "culprit"),
    [
        ({"nope": 1}, "options.nope"),
        ({"chunk_size": 0}, "options.chunk_size"),
        ({"chunk_size": 101}, "options.chunk_size"),
        ({"chunk_delay": -1}, "options.chunk_delay"),
        ({"entity": {"Opportunity": {"filter": {"nope": 1}}}}, "options.entity.Opportunity.filter"),
        ({"entity": {"Nope": {}}}, "options.entity.Nope"),
        ({"entity": {"Opportunity": {"expand": ["nope"]}}}, "options.entity.Opportunity"),
        ({"related_entity": {"expand": ["nope"]}}, "options.related_entity"),
    ],
)
def test_bad_options_are_refused_naming_the_value(options: dict[str, Any], culprit: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        _sub(["*"], options)
    assert culprit in [e.field_name for e in err.value.errors]


def test_unknown_event_names_are_refused() -> None:
    with pytest.raises(ValidationFailed) as err:
        _sub(["Account.Explode"])
    assert "Account.Explode" in err.value.errors[0].message


def _change(entity: str, action: Action, before: Any, after: Any) -> Change:
    changed = {
        k: ((before or {}).get(k), v) for k, v in after.items() if (before or {}).get(k) != v
    }
    return Change(BUILTIN[entity], action, "r", before, after, changed, T0)


def test_an_update_raises_update_then_the_special_events_in_order() -> None:
    before = {"owner_id": "a", "step_id": "s1", "status": 1}
    after = {"owner_id": "b", "step_id": "s2", "status": 3}
    names = [d.name for d in drafts(_change("Opportunities", Action.UPDATE, before, after))]
    assert names == [
        "Opportunity.Update",
        "Opportunity.OwnerChanged",
        "Opportunity.Move",
        "Opportunity.Won",
    ]


def test_qualify_and_back_to_lead_raise_only_their_own_event() -> None:
    q = _change("Opportunities", Action.QUALIFY, {"x": 1}, {"x": 2})
    b = _change("Leads", Action.BACK_TO_LEAD, {"x": 1}, {"x": 1})
    assert [d.name for d in drafts(q)] == ["Opportunity.Qualify"]
    assert [d.name for d in drafts(b)] == ["Lead.BackToLead"]


def test_documents_and_comments_raise_on_the_linked_record() -> None:
    # A document is linked by a CloudObjectRelation row; the CloudObject itself raises nothing.
    link = {"cloud_object_id": "doc", "account_id": "acc"}
    (d,) = drafts(_change("CloudObjectRelations", Action.CREATE, None, link))
    assert (d.name, d.entity, d.record_id, d.related_entity, d.related_id) == (
        "DocumentLinked",
        "Accounts",
        "acc",
        "CloudObjects",
        "doc",
    )
    task = {"cloud_object_id": "doc", "activity_id": "t", "activity_type": "Appointments"}
    (d,) = drafts(_change("CloudObjectRelations", Action.CREATE, None, task))
    assert (d.entity, d.record_id) == ("Appointments", "t")
    assert drafts(_change("CloudObjectRelations", Action.DELETE, link, link)) == []
    doc = _change("CloudObjects", Action.CREATE, None, {"account_id": "acc", "filename": "f"})
    assert drafts(doc) == []
    comment = _change("TaskComments", Action.CREATE, None, {"task_id": "t", "comment": "c"})
    (c,) = drafts(comment)
    assert (c.name, c.entity, c.record_id) == ("Comment", "Tasks", "t")
    assert drafts(_change("Clients", Action.CREATE, None, {"first_name": "x"})) == []


def test_a_replay_takes_every_rule_but_the_registration_time() -> None:
    sub = _sub(["Account.Create"], {"skip_keys": ["mine"]}, created="2026-06-01 00:00:00+00:00")
    early = _event("Account.Create", {}, entity="Accounts")  # before the webhook existed
    assert early.occurred < sub.created
    assert not accepts(sub, early)
    assert accepts_any_time(sub, early)
    skipped = _event("Account.Create", {}, entity="Accounts", skip_key="mine")
    assert not accepts_any_time(sub, skipped)
