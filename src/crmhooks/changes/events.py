"""Which events a change raises (docs/webhooks.md#events): a pure function of the change.

``Update`` (or ``Create`` / ``Delete``) first, then the special events, in the documented order.
Documents and comments raise their event on the record they are linked to, which the recorder
loads; that is the only part that needs the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crmhooks.changes.writer import Action, Change

OPEN, LOST, WON = 1, 2, 3

# A CloudObjectRelation's link columns and the entity types they name; an activity's and a
# message's type is kept on the row, in the column given here instead.
DOCUMENT_TARGETS = {
    "account_id": "Accounts",
    "contact_id": "Contacts",
    "lead_oppty_id": "LeadOpptys",
    "activity_id": "activity_type",
    "message_id": "message_type",
    "custom_entity_id": "CustomEntityRecords",
}

# Comment entity -> (the field naming the commented record, its entity type)
COMMENT_LINKS = {
    "TaskComments": ("task_id", "Tasks"),
    "AppointmentComments": ("appointment_id", "Appointments"),
}


@dataclass(frozen=True)
class Draft:
    """An event before it is stored: its name and what it is about."""

    name: str  # e.g. "Opportunity.Won"
    entity: str  # the route name of the record's type ("Accounts", "CE_Bid")
    record_id: str
    record: dict[str, Any] | None  # None: the recorder loads the linked record
    changes: dict[str, dict[str, Any]] | None = None
    related_entity: str | None = None  # e.g. "CloudObjects", "Opportunities"
    related_id: str | None = None
    related: dict[str, Any] | None = None


def _changes(change: Change) -> dict[str, dict[str, Any]]:
    return {k: {"old": old, "new": new} for k, (old, new) in change.changed.items()}


def _became(change: Change, name: str, value: Any) -> bool:
    return name in change.changed and change.changed[name][1] == value


def _own_events(change: Change) -> list[Draft]:
    et = change.entity
    if not et.events:
        return []
    prefix = et.event_prefix

    def draft(event: str, changes: dict[str, dict[str, Any]] | None = None) -> Draft:
        related = None
        if et.name == "OpptyProductRelations":
            related = ("Opportunities", change.after.get("oppty_id"))
        return Draft(
            name=f"{prefix}.{event}",
            entity=et.name,
            record_id=change.record_id,
            record=change.after,
            changes=changes,
            related_entity=related[0] if related else None,
            related_id=related[1] if related else None,
        )

    if change.action is Action.CREATE:
        return [draft("Create")]
    if change.action is Action.DELETE:
        return [draft("Delete")]
    if change.action is Action.QUALIFY:
        return [draft("Qualify", _changes(change))]
    if change.action is Action.BACK_TO_LEAD:
        return [draft("BackToLead", _changes(change))]
    if not change.changed:
        return []
    changes = _changes(change)
    out = [draft("Update", changes)]
    special = [
        ("OwnerChanged", "owner_id" in change.changed),
        ("Move", "step_id" in change.changed),
        ("Won", _became(change, "status", WON)),
        ("Lost", _became(change, "status", LOST)),
    ]
    out += [draft(name, changes) for name, happened in special if happened and name in et.events]
    return out


def _linked_events(change: Change) -> list[Draft]:
    """DocumentLinked and Comment: raised on the record a document or comment points at.

    A document is linked when a CloudObjectRelation is made (or restored): through its own
    route or by a CloudObject's link field. The event's related record is the CloudObject.
    """
    et = change.entity
    if et.name == "CloudObjectRelations":
        if change.action not in (Action.CREATE, Action.RESTORE):
            return []
        row = change.after
        for column, target in DOCUMENT_TARGETS.items():
            if row.get(column) is not None:
                if target.endswith("_type"):
                    target = row[target]
                return [
                    Draft(
                        name="DocumentLinked",
                        entity=target,
                        record_id=row[column],
                        record=None,
                        related_entity="CloudObjects",
                        related_id=row["cloud_object_id"],
                    )
                ]
        return []
    commented = COMMENT_LINKS.get(et.name)
    if commented is not None and change.action is Action.CREATE:
        return [_on_linked("Comment", commented[1], change.after[commented[0]], change)]
    return []


def _on_linked(event: str, target: str, record_id: str, change: Change) -> Draft:
    # The event's prefix depends on the linked record's type, known once it is loaded.
    return Draft(
        name=event,
        entity=target,
        record_id=record_id,
        record=None,
        related_entity=change.entity.name,
        related_id=change.record_id,
        related=change.after,
    )


def drafts(change: Change) -> list[Draft]:
    """Every event one change raises, in order."""
    return _own_events(change) + _linked_events(change)
