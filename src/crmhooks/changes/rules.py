"""What a write implies beyond the fields it names: pure functions of before, updates and time.

``derive`` is called on every create and patch with the checked, stored values of the write; it
returns them completed (derived fields set) or raises ValidationFailed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from crmhooks.errors import FIELD_VALUE, ValidationFailed, field_error
from crmhooks.schema import custom
from crmhooks.schema.registry import DOCUMENT_LINKS
from crmhooks.schema.types import EntityType

Record = dict[str, Any]
Stored = dict[str, Any]

OPEN, LOST, WON = 1, 2, 3


def _merged(before: Record | None, updates: Stored, name: str) -> Any:
    if name in updates:
        return updates[name]
    return None if before is None else before.get(name)


def lead_oppty_status(before: Record | None, updates: Stored, now: datetime) -> Stored:
    """Status dates follow status; archiving an open record loses it (contract section 4)."""
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
    "CustomEntities": custom_entity_definition,
}


def derive(et: EntityType, before: Record | None, updates: Stored, now: datetime) -> Stored:
    """The write's stored values with everything they imply set."""
    rule = RULES.get(et.name)
    out = updates if rule is None else rule(before, updates, now)
    return _strip_foreign(et, out)
