"""What a create leaves out and the space decides: default relations and the base currency.

Pipeliner files a new record under the creator's default sales unit and the first activity or
record type of the space; here that is the space's oldest live record of the target type (a new
space gets one of each from ``store.space_defaults``). A space's first currency is its base.
One query per writer, however many records a batch creates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from sqlalchemy import Executable, bindparam, false, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.schema.registry import BUILTIN, DEFAULTED_RELATIONS
from crmhooks.schema.types import EntityType
from crmhooks.store.records import scope, table_of


@cache
def _oldest_query(targets: tuple[str, ...]) -> Executable:
    """Built once per set of targets (building a statement costs more than running it)."""
    parts = []
    for target in targets:
        et = BUILTIN[target]
        t = table_of(et)
        live = [t.c.space_id == bindparam("space_id"), t.c.is_deleted == false()]
        if et.discriminator:
            live.append(t.c[et.discriminator[0]] == et.discriminator[1])
        oldest = (
            select(literal(target).label("target"), t.c.id)
            .where(*live)
            .order_by(t.c.created, t.c.id)
            .limit(1)
            .subquery()
        )
        parts.append(select(oldest.c.target, oldest.c.id))
    return parts[0] if len(parts) == 1 else union_all(*parts)


async def oldest_live_ids(
    conn: AsyncConnection, targets: Sequence[str], space_id: str
) -> dict[str, str | None]:
    """Each target's oldest live record in the space (its default), or None: one query."""
    found: dict[str, str | None] = dict.fromkeys(targets)
    rows = await conn.execute(_oldest_query(tuple(targets)), {"space_id": space_id})
    found.update({str(target): str(record_id) for target, record_id in rows})
    return found


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

    def known(self, target: str, value: str) -> bool:
        """Whether ``value`` is the default of ``target`` found live in this transaction (so
        a relation to it needs no existence check)."""
        return self._ids.get(target) == value

    async def complete(self, et: EntityType, stored: dict[str, Any]) -> dict[str, Any]:
        """A create's stored values with the relations it left out set to the defaults."""
        missing = {
            f.name: f.target
            for f in et.relations
            if f.name in DEFAULTED_RELATIONS and f.name not in stored and f.target
        }
        unknown = sorted({t for t in missing.values() if t not in self._ids})
        if unknown:
            self._ids.update(await oldest_live_ids(self.conn, unknown, self.space_id))
        out = stored
        for name, target in missing.items():
            if self._ids[target] is not None:
                out = {**out, name: self._ids[target]}
        if et.name == "Currencies":
            # Only a space without one (none seeded) gets its first currency as the base.
            out = {**out, "is_base": not await has_base_currency(self.conn, self.space_id)}
        return out
