"""What a write implies beyond the fields it names: pure functions of before, updates and time.

``derive`` is called on every create and patch with the checked, stored values of the write; it
returns them completed (derived fields set) or raises ValidationFailed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from crmhooks.errors import FIELD_REQUIRED, FIELD_TYPE, FIELD_VALUE, ValidationFailed, field_error
from crmhooks.schema import custom
from crmhooks.schema.registry import DOCUMENT_LINKS, NOTE_LINKS
from crmhooks.schema.types import EntityType

Record = dict[str, Any]
Stored = dict[str, Any]

OPEN, LOST, WON = 1, 2, 3


def _merged(before: Record | None, updates: Stored, name: str) -> Any:
    if name in updates:
        return updates[name]
    return None if before is None else before.get(name)


def lead_oppty_status(before: Record | None, updates: Stored, now: datetime) -> Stored:
    """Status dates follow status; archiving an open record loses it (docs/webhooks.md#events)."""
    out = dict(updates)
    if before is None:
        out["was_qualified"] = False  # only qualify sets it; a new record shows false, not null
    old_status = OPEN if before is None else before.get("status", OPEN)
    was_archived = bool(before and before.get("is_archived"))
    status = _merged(before, out, "status") or OPEN
    if out.get("is_archived") and not was_archived and status == OPEN:
        status = out["status"] = LOST
    if status != old_status or before is None:
        if status == WON:
            out["won_date"] = now
            out["lost_date"] = None
        elif status == LOST:
            out["lost_date"] = now
            out["won_date"] = None
        elif before is not None:
            out["won_date"] = None
            out["lost_date"] = None
    return out


def _strip_foreign(et: EntityType, stored: Stored) -> Stored:
    """A Lead row keeps its Opportunity-only columns; a Lead's write cannot name them."""
    return {k: v for k, v in stored.items() if k in et.by_name}


def line_item_amount(before: Record | None, updates: Stored, now: datetime) -> Stored:
    out = dict(updates)
    quantity = _merged(before, out, "quantity")
    price = _merged(before, out, "price")
    out["amount"] = None if quantity is None or price is None else float(quantity) * float(price)
    return out


def one_document_link(before: Record | None, updates: Stored, now: datetime) -> Stored:
    """A CloudObject's own link fields name one record (more links: CloudObjectRelations).
    Checked when a write names a link, so a document linked to several records through its
    relations can still be renamed."""
    if not any(updates.get(name) is not None for name in DOCUMENT_LINKS):
        return updates
    linked = [name for name in DOCUMENT_LINKS if _merged(before, updates, name) is not None]
    if len(linked) > 1:
        raise ValidationFailed(
            [
                field_error(
                    name,
                    FIELD_VALUE,
                    f"a document links to one record; {', '.join(linked)} are all set",
                )
                for name in linked
            ]
        )
    return updates


def one_note_link(before: Record | None, updates: Stored, now: datetime) -> Stored:
    """A Note names exactly one record (Pipeliner's rule; projects and quotes aside)."""
    linked = [name for name in NOTE_LINKS if _merged(before, updates, name) is not None]
    if len(linked) == 1:
        return updates
    if not linked:
        message = f"a note names one record: one of {', '.join(NOTE_LINKS)} is required"
        raise ValidationFailed([field_error(NOTE_LINKS[0], FIELD_REQUIRED, message)])
    message = f"a note names one record; {', '.join(linked)} are all set"
    raise ValidationFailed([field_error(name, FIELD_VALUE, message) for name in linked])


FORM_MAX_BYTES = 64 * 1024


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def form_layout(before: Record | None, updates: Stored, now: datetime) -> Stored:
    """A type's ``form_edit``: kept as given, never read; an object of bounded size, with no
    NUL character (which PostgreSQL's JSON cannot hold)."""
    value = updates.get("form_edit")
    if value is None:
        return updates
    if not isinstance(value, dict):
        raise ValidationFailed([field_error("form_edit", FIELD_TYPE, "expected an object")])
    try:
        dumped = orjson.dumps(value)
    except orjson.JSONEncodeError:  # nested deeper than orjson writes (255 levels)
        error = field_error("form_edit", FIELD_VALUE, "nested too deeply")
        raise ValidationFailed([error]) from None
    if len(dumped) > FORM_MAX_BYTES:
        message = f"at most {FORM_MAX_BYTES} bytes of JSON, got {len(dumped)}"
        raise ValidationFailed([field_error("form_edit", FIELD_VALUE, message)])
    if _has_nul(value):
        raise ValidationFailed([field_error("form_edit", FIELD_VALUE, "contains a NUL character")])
    return updates


def keep_base_currency(record: Record) -> None:
    """The base currency of a space cannot be deleted (every space has exactly one)."""
    if record.get("is_base"):
        message = "the base currency of the space cannot be deleted"
        raise ValidationFailed([field_error("is_base", FIELD_VALUE, message)])


def custom_entity_definition(before: Record | None, updates: Stored, now: datetime) -> Stored:
    out = dict(updates)
    errors = []
    if "api_name" in out and before is None:
        errors += custom.check_api_name(out["api_name"])
    if "fields" in out:
        out["fields"], field_errors = custom.check_fields(out["fields"])
        errors += field_errors
    elif before is None:
        out["fields"] = []
    if errors:
        raise ValidationFailed(errors)
    return out


Rule = Callable[[Record | None, Stored, datetime], Stored]

RULES: dict[str, Rule] = {
    "Leads": lead_oppty_status,
    "Opportunities": lead_oppty_status,
    "OpptyProductRelations": line_item_amount,
    "CloudObjects": one_document_link,
    "Notes": one_note_link,
    **dict.fromkeys(("TaskTypes", "AppointmentTypes", "AccountTypes", "ContactTypes"), form_layout),
    "CustomEntities": custom_entity_definition,
}


# Checks of a record about to be deleted (soft): raise ValidationFailed to keep it.
DELETE_RULES: dict[str, Callable[[Record], None]] = {"Currencies": keep_base_currency}


def derive(et: EntityType, before: Record | None, updates: Stored, now: datetime) -> Stored:
    """The write's stored values with everything they imply set."""
    rule = RULES.get(et.name)
    out = updates if rule is None else rule(before, updates, now)
    return _strip_foreign(et, out)
