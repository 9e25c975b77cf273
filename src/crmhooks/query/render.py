"""Records as the API shows them: relations as URIs, to-many relations as lists of URIs.

Everything a page needs is loaded with one query per relation kind, never one per record.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.schema.registry import BUILTIN, GROUPS
from crmhooks.schema.types import EntityType
from crmhooks.store.records import Record, ids_pointing_at, kinds_of, table_of

API_PREFIX = "/api/v100/rest/spaces"
_KIND_TO_ROUTE = {"Lead": "Leads", "Opportunity": "Opportunities"}


def record_uri(base: str, space_id: str, entity: str, record_id: str) -> str:
    return f"{base}{API_PREFIX}/{space_id}/entities/{entity}/{record_id}"


async def _group_routes(
    conn: AsyncConnection, et: EntityType, space_id: str, records: Sequence[Record]
) -> dict[str, str]:
    """id -> route name for relations that point into a shared table."""
    out: dict[str, str] = {}
    for f in et.relations:
        group = GROUPS.get(f.target or "")
        if group is None:
            continue
        ids = [r[f.name] for r in records if r.get(f.name)]
        disc = "kind" if group.name == "LeadOpptys" else "ce_api_name"
        kinds = await kinds_of(conn, table_of(group), disc, space_id, ids)
        out.update({rid: _KIND_TO_ROUTE.get(k, k) for rid, k in kinds.items()})
    return out


async def render(
    conn: AsyncConnection,
    et: EntityType,
    space_id: str,
    records: Sequence[Record],
    base: str,
) -> list[dict[str, Any]]:
    """The records of one entity type as the API returns them."""
    if not records:
        return []
    routes = await _group_routes(conn, et, space_id, records)
    ids = [r["id"] for r in records]
    many = {
        tm.name: (tm.source, await ids_pointing_at(conn, BUILTIN[tm.source], tm.via, space_id, ids))
        for tm in et.to_many
    }
    out = []
    for r in records:
        shown: dict[str, Any] = {}
        for f in et.fields:
            value = r.get(f.name)
            shown[f.name] = value
            if f.target is not None:
                route = routes.get(str(value), f.target) if f.target in GROUPS else f.target
                shown[f.relation_name] = (
                    None if value is None else record_uri(base, space_id, route, value)
                )
        for name, (source, by_target) in many.items():
            shown[name] = [record_uri(base, space_id, source, i) for i in by_target[r["id"]]]
        out.append(shown)
    return out
