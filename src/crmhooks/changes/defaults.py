"""What a create leaves out and the space decides: default relations and the base currency.

Pipeliner files a new record under the creator's default sales unit and the first activity or
record type of the space; here that is the space's oldest live record of the target type (a new
space gets one of each from ``store.space_defaults``). A space's first currency is its base.
One query per target and writer, however many records a batch creates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.schema.registry import BUILTIN, DEFAULTED_RELATIONS
from crmhooks.schema.types import EntityType
from crmhooks.store.records import scope, table_of


async def oldest_live_id(conn: AsyncConnection, et: EntityType, space_id: str) -> str | None:
    """The id of the space's oldest live record of ``et`` (its default one), or None."""
    t = table_of(et)
    row = (
        await conn.execute(
            select(t.c.id).where(scope(et, space_id)).order_by(t.c.created, t.c.id).limit(1)
        )
    ).first()
    return None if row is None else str(row[0])


async def has_base_currency(conn: AsyncConnection, space_id: str) -> bool:
    currencies = BUILTIN["Currencies"]
    t = table_of(currencies)
    row = await conn.execute(
        select(t.c.id).where(scope(currencies, space_id), t.c.is_base.is_(True)).limit(1)
    )
    return row.first() is not None


@dataclass
class SpaceDefaults:
    """The defaults of one space, looked up once per writer."""

    conn: AsyncConnection
    space_id: str
    _ids: dict[str, str | None] = field(default_factory=dict)

    async def _default(self, target: str) -> str | None:
        if target not in self._ids:
            self._ids[target] = await oldest_live_id(self.conn, BUILTIN[target], self.space_id)
        return self._ids[target]

    async def complete(self, et: EntityType, stored: dict[str, Any]) -> dict[str, Any]:
        """A create's stored values with the relations it left out set to the defaults."""
        out = stored
        for f in et.relations:
            if f.name in DEFAULTED_RELATIONS and f.name not in stored and f.target:
                value = await self._default(f.target)
                if value is not None:
                    out = {**out, f.name: value}
        if et.name == "Currencies":
            # Only a space without one (none seeded) gets its first currency as the base.
            out = {**out, "is_base": not await has_base_currency(self.conn, self.space_id)}
        return out
