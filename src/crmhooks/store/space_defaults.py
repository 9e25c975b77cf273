"""What a new space holds before anyone writes to it, as a new Pipeliner space does.

A base currency, a sales unit, a task type, an appointment type, an account type, a contact type
and a Client standing for the space's API user (the ``owner_id`` an integration writes with).
They are inserted as rows, not written through the API: nothing is listening to a space that
does not exist yet, so they raise no events. Migration 0011 gives spaces made before it the
same records (docs/api.md, "A new space").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.schema.values import new_sorted_id
from crmhooks.store.tables import table_for

DEFAULT_BASE_CURRENCY = "USD"
CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "CHF": "CHF", "CAD": "$"}

# table -> the fields of its one default record (icons: Pipeliner's 1 Task, 2 Appointment).
DEFAULT_RECORDS: dict[str, dict[str, Any]] = {
    "sales_units": {"name": "Default unit", "parent_id": None},
    "task_types": {"name": "Task", "is_readonly": False, "icon": 1},
    "appointment_types": {"name": "Meeting", "is_readonly": False, "icon": 2},
    "account_types": {"name": "Account", "is_readonly": False},
    "contact_types": {"name": "Contact", "is_readonly": False},
    "clients": {"first_name": "API", "last_name": "User", "email": None},
}


@dataclass(frozen=True)
class Seeded:
    """The ids of what a space was given; the Client is the one to write ``owner_id`` with."""

    client_id: str
    base_currency_id: str
    unit_id: str


def default_rows(space_id: str, now: datetime, base_currency: str) -> dict[str, dict[str, Any]]:
    """table -> the row to insert, ids made here; pure."""
    rows: dict[str, dict[str, Any]] = {}
    system = {"space_id": space_id, "created": now, "modified": now, "is_deleted": False}
    for table, values in DEFAULT_RECORDS.items():
        rows[table] = {"id": new_sorted_id(), **system, "revision": 1, **values}
    code = base_currency.upper()
    rows["currencies"] = {
        "id": new_sorted_id(),
        **system,
        "revision": 1,
        "code": code,
        "symbol": CURRENCY_SYMBOLS.get(code, code),
        "is_base": True,
    }
    return rows


async def seed_space(
    conn: AsyncConnection,
    space_id: str,
    now: datetime,
    base_currency: str = DEFAULT_BASE_CURRENCY,
) -> Seeded:
    """Insert a new space's default records (in the caller's transaction)."""
    rows = default_rows(space_id, now, base_currency)
    for table, row in rows.items():
        await conn.execute(insert(table_for(table)), [row])
    return Seeded(
        client_id=rows["clients"]["id"],
        base_currency_id=rows["currencies"]["id"],
        unit_id=rows["sales_units"]["id"],
    )
