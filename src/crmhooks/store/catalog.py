"""Which entity type a route name means in a space: a built-in one or a custom entity."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.schema.custom import is_api_name, record_type
from crmhooks.schema.registry import BUILTIN, GROUPS
from crmhooks.schema.types import EntityType
from crmhooks.store.tables import table_for


async def custom_type(conn: AsyncConnection, space_id: str, api_name: str) -> EntityType | None:
    t = table_for("custom_entities")
    row = (
        await conn.execute(
            select(t.c.fields).where(
                t.c.space_id == space_id, t.c.api_name == api_name, t.c.is_deleted.is_(False)
            )
        )
    ).first()
    if row is None:
        return None
    return record_type(api_name, list(row.fields or []))


async def custom_types_by_space(
    conn: AsyncConnection, space_id: str | None = None
) -> dict[str, dict[str, EntityType]]:
    """space id -> api name -> custom entity type, for one space or for all of them."""
    t = table_for("custom_entities")
    stmt = select(t.c.space_id, t.c.api_name, t.c.fields).where(t.c.is_deleted.is_(False))
    if space_id is not None:
        stmt = stmt.where(t.c.space_id == space_id)
    out: dict[str, dict[str, EntityType]] = {}
    for space, api_name, fields in await conn.execute(stmt):
        out.setdefault(space, {})[api_name] = record_type(api_name, list(fields or []))
    return out


async def custom_types(conn: AsyncConnection, space_id: str) -> dict[str, EntityType]:
    """Every custom entity type defined in the space, by api name."""
    return (await custom_types_by_space(conn, space_id)).get(space_id, {})


async def entity_type(conn: AsyncConnection, space_id: str, name: str) -> EntityType | None:
    """The entity type behind ``/entities/{name}`` in this space, or None."""
    et = BUILTIN.get(name)
    if et is not None:
        return et
    if is_api_name(name):
        return await custom_type(conn, space_id, name)
    return None


def target_type(name: str) -> EntityType:
    """The entity type a relation field names (a built-in type or a group such as LeadOpptys)."""
    return BUILTIN.get(name) or GROUPS[name]
