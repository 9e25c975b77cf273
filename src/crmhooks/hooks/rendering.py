"""Rendering the events of a webhook request: each event's ``entity`` and ``related_entity``
as the API shows the records, shaped by the webhook's options, into payload elements
(``hooks.payload.element``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.hooks.match import Event
from crmhooks.hooks.payload import element
from crmhooks.hooks.subscription import Subscription
from crmhooks.query.render import Renderer
from crmhooks.query.shape import Shape
from crmhooks.schema.registry import BUILTIN
from crmhooks.schema.types import EntityType
from crmhooks.store.records import row_to_record, table_of


@dataclass
class Catalog:
    """Entity types of one routing step, custom ones loaded once per space."""

    custom: dict[str, dict[str, EntityType]] = field(default_factory=dict)

    def entity(self, space_id: str, name: str) -> EntityType | None:
        return BUILTIN.get(name) or self.custom.get(space_id, {}).get(name)


class Rendering:
    """Renders the ``entity`` and ``related_entity`` of events, one query set per shape."""

    def __init__(self, conn: AsyncConnection, base_url: str, catalog: Catalog) -> None:
        self.conn = conn
        self.base_url = base_url
        self.catalog = catalog
        self._renderers: dict[str, Renderer] = {}

    def _renderer(self, space_id: str) -> Renderer:
        if space_id not in self._renderers:
            self._renderers[space_id] = Renderer(self.conn, space_id, self.base_url)
        return self._renderers[space_id]

    async def elements(self, sub: Subscription, evs: list[Event]) -> list[dict[str, Any]]:
        opts = sub.entity
        entities = await self.entities(
            sub.space_id, evs, lambda key: opts[key].shape if key in opts else Shape()
        )
        related = await self._related(sub, evs, self._renderer(sub.space_id))
        return [
            element(sub, e, {} if (ent := entities[i]) is None else ent, related[i])
            for i, e in enumerate(evs)
        ]

    async def entities(
        self, space_id: str, evs: list[Event], shape_of: Callable[[str], Shape]
    ) -> list[dict[str, Any] | orjson.Fragment | None]:
        """Each event's record as the API shows it, shaped by ``shape_of(option key)``: the
        rendering made in the write where the shape is the default one. None for a record of
        a type that no longer exists (a deleted custom entity)."""
        renderer = self._renderer(space_id)
        by_type: dict[str, list[int]] = {}
        for i, e in enumerate(evs):
            by_type.setdefault(e.entity, []).append(i)
        entities: list[dict[str, Any] | orjson.Fragment | None] = [None] * len(evs)
        for entity, idxs in by_type.items():
            et = self.catalog.entity(space_id, entity)
            if et is None:
                continue
            shape = shape_of(evs[idxs[0]].option_key)
            if not shape.expand and shape.load_only is None:
                # The default shape: the rendering made in the write, where there is one.
                for i in idxs:
                    if (made := evs[i].rendered) is not None:
                        entities[i] = orjson.Fragment(made)
                idxs = [i for i in idxs if entities[i] is None]
                if not idxs:
                    continue
            shown = await renderer.shaped(et, [evs[i].record for i in idxs], shape)
            for i, s in zip(idxs, shown, strict=True):
                entities[i] = s
        return entities

    async def _related(
        self, sub: Subscription, evs: list[Event], renderer: Renderer
    ) -> list[dict[str, Any] | None]:
        out: list[dict[str, Any] | None] = [None] * len(evs)
        by_type: dict[str, list[int]] = {}
        for i, e in enumerate(evs):
            if e.related_entity is not None:
                by_type.setdefault(e.related_entity, []).append(i)
        for name, idxs in by_type.items():
            et = BUILTIN[name]
            records: list[dict[str, Any] | None] = [evs[i].related for i in idxs]
            missing = [evs[i].related_id for i, r in zip(idxs, records, strict=True) if r is None]
            if missing:
                t = table_of(et)
                rows = await self.conn.execute(
                    select(t).where(t.c.id.in_(sorted({m for m in missing if m})))
                )
                loaded = {r["id"]: row_to_record(et, r) for r in rows.mappings()}
                records = [
                    r if r is not None else loaded.get(evs[i].related_id or "")
                    for i, r in zip(idxs, records, strict=True)
                ]
            present = [(i, r) for i, r in zip(idxs, records, strict=True) if r is not None]
            shape = sub.related.get(name, Shape())
            shown = await renderer.shaped(et, [r for _, r in present], shape)
            for (i, _), s in zip(present, shown, strict=True):
                out[i] = s
        return out
