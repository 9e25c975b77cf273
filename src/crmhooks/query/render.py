"""Records as the API shows them: relations as URIs or expanded records, to-many lists.

Everything a page needs is loaded with a fixed number of queries per relation in the ``expand``
tree, never one per record.

What one answer shows is bounded (docs/api.md, "Limits"): with ``max_records`` a renderer counts
the records it shows as it goes, each expanded record once per place it appears (a record that
many others point at is loaded once but shown, and serialized, in each), and refuses the answer
past the limit; a webhook shape's ``list_cap`` keeps each expanded to-many list to its first
records instead, so a payload's size is known when the webhook is registered.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import tzinfo
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    bindparam,
    case,
    false,
    func,
    literal,
    null,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import NullType

from crmhooks.errors import ParameterInvalid
from crmhooks.query.shape import ExpandTree, Shape, prune, related_type
from crmhooks.schema.registry import BUILTIN, GROUPS
from crmhooks.schema.types import EntityType, Field, Kind, KindLink, ToMany
from crmhooks.schema.values import in_zone
from crmhooks.store.catalog import custom_type
from crmhooks.store.inline_sqlite import driver_rows
from crmhooks.store.records import Record, by_ids, row_to_record, scope, table_of

API_PREFIX = "/api/v100/rest/spaces"
_KIND_TO_ROUTE = {"Lead": "Leads", "Opportunity": "Opportunities"}
Shown = dict[str, Any]


def mask(secret: Any) -> Any:
    """A secret shown by its last four characters only."""
    if not isinstance(secret, str) or not secret:
        return secret
    return "*" * max(len(secret) - 4, 4) + secret[-4:]


def record_uri(base: str, space_id: str, entity: str, record_id: str) -> str:
    return f"{base}{API_PREFIX}/{space_id}/entities/{entity}/{record_id}"


def too_many(limit: int) -> ParameterInvalid:
    return ParameterInvalid(
        f"the answer would show more than {limit} records, expanded ones included, each "
        f"time it appears (max_rendered_records is {limit}); ask for fewer with a smaller "
        "first or a shorter expand"
    )


@functools.cache
def _lists_statement(lists: tuple[ToMany, ...]) -> Select[Any]:
    """The one query behind :meth:`Renderer._uri_lists` for these lists (built once): rows of
    (list name, source, parent id, id, created), oldest first, for the parents ``:ids`` in the
    space ``:space``."""
    by_source: dict[tuple[str, str], list[ToMany]] = {}
    for tm in lists:
        by_source.setdefault((tm.source, tm.via), []).append(tm)
    parts = [_list_rows(source, via, group) for (source, via), group in by_source.items()]
    rows = union_all(*parts).subquery() if len(parts) > 1 else parts[0].subquery()
    return select(rows).order_by(rows.c.created, rows.c.id)


def _list_rows(source_name: str, via: str, group: Sequence[ToMany]) -> Select[Any]:
    """One relation entity's part: where several lists share it, a row's columns say which
    list it is in."""
    source = BUILTIN[source_name]
    assert source.discriminator is None  # lists are read from tables of one entity type
    t = table_of(source)
    lo = table_of(GROUPS["LeadOpptys"])
    name: ColumnElement[Any]
    if len(group) == 1 and group[0].nonnull is None and group[0].kind is None:
        name = literal(group[0].name)
    else:
        name = case(
            *(
                (
                    t.c[tm.nonnull].is_not(None) if tm.nonnull else lo.c.kind == tm.kind,
                    literal(tm.name),
                )
                for tm in group
            ),
            else_=null(),
        )
    stmt = select(
        name.label("list"),
        literal(source_name).label("source"),
        t.c[via].label("parent"),
        t.c.id,
        # Only sorted on: read as the driver gives it, without the datetime conversion.
        type_coerce(t.c.created, NullType()).label("created"),
    ).where(
        t.c[via].in_(bindparam("ids", expanding=True)),
        t.c.space_id == bindparam("space"),
        t.c.is_deleted == false(),
    )
    if any(tm.kind for tm in group):
        stmt = stmt.outerjoin(lo, lo.c.id == t.c.lead_oppty_id)
    return stmt


def _listed(tm: ToMany, ids: list[str], space_id: str, cap: int | None) -> Select[Any]:
    """The records of a to-many list, oldest first; with ``cap``, the first ``cap`` of each
    list (one query either way)."""
    source = BUILTIN[tm.source]
    t = table_of(source)
    where = [t.c[tm.via].in_(ids), scope(source, space_id)]
    if tm.nonnull is not None:
        where.append(t.c[tm.nonnull].is_not(None))
    if tm.kind is not None:
        lo = table_of(GROUPS["LeadOpptys"])
        kind = select(lo.c.id).where(lo.c.id == t.c.lead_oppty_id, lo.c.kind == tm.kind)
        where.append(kind.exists())
    if cap is None:
        return select(t).where(*where).order_by(t.c.created, t.c.id)
    place = func.row_number().over(partition_by=t.c[tm.via], order_by=(t.c.created, t.c.id))
    ranked = select(t, place.label("place_in_list")).where(*where).subquery()
    return (
        select(*(ranked.c[c.name] for c in t.c))
        .where(ranked.c.place_in_list <= cap)
        .order_by(ranked.c.created, ranked.c.id)
    )


def _shown_names(f: Field, route: str) -> tuple[str, ...]:
    """The names a relation to a record of ``route`` is shown under."""
    if not f.uri_by_kind:
        return f.shown_names
    return tuple(name for kind, name in f.uri_by_kind if kind == route)


class Renderer:
    """Shows records of one space; one per request (it caches custom entity types).

    ``max_records``: the most records the answer may show (a 400 past it); None: no count.
    """

    def __init__(
        self,
        conn: AsyncConnection,
        space_id: str,
        base: str,
        *,
        reveal: bool = False,
        zone: tzinfo | None = None,
        max_records: int | None = None,
    ) -> None:
        self.conn = conn
        self.space_id = space_id
        self.base = base
        self.reveal = reveal  # show secret fields whole (only the response that set them)
        self.zone = zone  # the request's Timezone: date-times are written in it (None: UTC)
        self.max_records = max_records
        self._loaded = 0  # records rendered so far (each once)
        self._sizes: dict[int, int] = {}  # id() of a shown record -> records it shows
        self._custom: dict[str, EntityType | None] = {}

    async def shaped(
        self, et: EntityType, records: Sequence[Record], shape: Shape, *, fresh: bool = False
    ) -> list[Shown]:
        shown = await self.render(et, records, shape.expand, fresh=fresh, cap=shape.list_cap)
        return [prune(r, shape.load_only) for r in shown]

    def _charge(self, count: int) -> None:
        """Count records about to be rendered; past ``max_records`` the answer is refused."""
        self._loaded += count
        if self.max_records is not None and self._loaded > self.max_records:
            raise too_many(self.max_records)

    def _measure(self, shown: list[Shown], embedded: Sequence[str]) -> None:
        """Record how many records each shown record holds (itself and what it embeds under
        the ``embedded`` names, each time it appears); past ``max_records`` for these alone
        the answer is refused."""
        if self.max_records is None:
            return
        total = 0
        for item in shown:
            size = 1
            for name in embedded:
                value = item.get(name)
                if isinstance(value, dict):
                    size += self._sizes.get(id(value), 0)
                elif isinstance(value, list):
                    size += sum(self._sizes.get(id(v), 0) for v in value if isinstance(v, dict))
            self._sizes[id(item)] = size
            total += size
        if total > self.max_records:
            raise too_many(self.max_records)

    async def render(
        self,
        et: EntityType,
        records: Sequence[Record],
        expand: ExpandTree | None = None,
        *,
        fresh: bool = False,
        cap: int | None = None,
    ) -> list[Shown]:
        """``fresh``: the records were created by this very write, so nothing points at them
        yet and their to-many lists are empty without a query. ``cap``: the most records of
        one expanded to-many list (per record)."""
        if not records:
            return []
        self._charge(len(records))
        expand = expand or {}
        routes = await self._group_routes(et, records)
        ids = [r["id"] for r in records]
        many: dict[str, dict[str, list[Any]]] = {}
        if fresh:
            many = {tm.name: {i: [] for i in ids} for tm in et.to_many}
        else:
            plain = [tm for tm in et.to_many if tm.name not in expand]
            many.update(await self._uri_lists(plain, ids))
            for tm in et.to_many:
                if tm.name in expand:
                    many[tm.name] = await self._to_many(tm, ids, expand[tm.name], cap)
        ones: dict[str, dict[str, Shown]] = {}
        for f in et.relations:
            for name in f.shown_names:
                if name in expand:
                    wanted = {r[f.name] for r in records if r.get(f.name)}
                    ones[name] = await self._to_one(et, name, wanted, expand, cap)
        out = []
        # Only a request with a Timezone header pays for this (records carry UTC wire values).
        zone = self.zone
        zoned = (
            []
            if zone is None
            else [f.name for f in et.fields if f.kind is Kind.DATETIME and not f.hidden]
        )
        for r in records:
            shown: Shown = {}
            for f in et.fields:
                if f.hidden:
                    continue
                value = r.get(f.name)
                shown[f.name] = mask(value) if f.secret and not self.reveal else value
                if f.target is None:
                    continue
                route = routes.get(value, f.target) if value and f.target in GROUPS else f.target
                if not f.uri_by_kind:  # one name: the common case, kept short
                    name = f.relation_name
                    if value is None:
                        shown[name] = None
                    elif name in ones:
                        shown[name] = ones[name].get(value)
                    else:
                        shown[name] = record_uri(self.base, self.space_id, route, value)
                    continue
                kept = _shown_names(f, route)  # a lead_oppty_id's lead or its oppty, not both
                for name in f.shown_names:
                    if value is None or name not in kept:
                        shown[name] = None
                    elif name in ones:
                        shown[name] = ones[name].get(value)
                    else:
                        shown[name] = record_uri(self.base, self.space_id, route, value)
            for link in et.kind_links:
                shown[link.name] = self._kind_link(link, r)
            for name, by_target in many.items():
                shown[name] = by_target[r["id"]]
            for name in zoned:
                if zone is not None and isinstance(value := shown[name], str):
                    shown[name] = in_zone(value, zone)
            out.append(shown)
        self._measure(out, [*ones, *(tm.name for tm in et.to_many if tm.name in expand)])
        return out

    async def _group_routes(self, et: EntityType, records: Sequence[Record]) -> dict[str, str]:
        """id -> route name, for relations that point into a shared table."""
        out: dict[str, str] = {}
        for f in et.relations:
            group = GROUPS.get(f.target or "")
            if group is None:
                continue
            ids = sorted({r[f.name] for r in records if r.get(f.name)})
            if not ids:
                continue
            t = table_of(group)
            disc = t.c.kind if group.name == "LeadOpptys" else t.c.ce_api_name
            rows = await self.conn.execute(
                select(t.c.id, disc).where(by_ids(group, self.space_id, ids, include_deleted=True))
            )
            out.update({rid: _KIND_TO_ROUTE.get(kind, kind) for rid, kind in rows})
        return out

    def _kind_link(self, link: KindLink, r: Record) -> str | None:
        value = r.get(link.field)
        if value is None or r.get(link.by) != link.route:
            return None
        return record_uri(self.base, self.space_id, link.route, value)

    async def _uri_lists(
        self, lists: Sequence[ToMany], ids: list[str]
    ) -> dict[str, dict[str, list[Any]]]:
        """Every list shown as URIs, in one query: a Contact's account relations and
        documents, a Task's five lists of ActivityRelations, comments and documents."""
        out: dict[str, dict[str, list[Any]]] = {tm.name: {i: [] for i in ids} for tm in lists}
        if not lists:
            return out
        found = await driver_rows(
            self.conn, _lists_statement(tuple(lists)), {"ids": ids, "space": self.space_id}
        )
        for name, source, parent, rid, _ in found:
            if name is not None:
                out[name][parent].append(record_uri(self.base, self.space_id, source, rid))
        return out

    async def _to_many(
        self, tm: ToMany, ids: list[str], expand: ExpandTree, cap: int | None
    ) -> dict[str, list[Any]]:
        source = BUILTIN[tm.source]
        query = _listed(tm, ids, self.space_id, cap)
        if self.max_records is not None:  # one past what is left: enough to know it is too many
            query = query.limit(self.max_records - self._loaded + 1)
        rows = (await self.conn.execute(query)).mappings()
        records = [row_to_record(source, row) for row in rows]
        shown = await self.render(source, records, expand, cap=cap)
        out: dict[str, list[Any]] = {i: [] for i in ids}
        for rec, item in zip(records, shown, strict=True):
            out[rec[tm.via]].append(item)
        return out

    async def _to_one(
        self, et: EntityType, name: str, ids: set[str], expand: ExpandTree, cap: int | None
    ) -> dict[str, Shown]:
        found = related_type(et, name)
        assert found is not None
        target = found[0]
        if not ids:
            return {}
        t = table_of(target)
        # A related record that was deleted since is still shown (with is_deleted: true).
        rows = (
            await self.conn.execute(
                select(t).where(
                    by_ids(target, self.space_id, sorted(ids), include_deleted=True, any_kind=True)
                )
            )
        ).mappings()
        by_type: dict[str, tuple[EntityType, list[Record]]] = {}
        for row in rows:
            actual = await self._actual_type(target, row)
            if actual is None:
                continue
            by_type.setdefault(actual.name, (actual, []))[1].append(row_to_record(actual, row))
        out: dict[str, Shown] = {}
        for actual, records in by_type.values():
            for item in await self.render(actual, records, expand[name], cap=cap):
                out[item["id"]] = item
        return out

    async def _actual_type(self, target: EntityType, row: Any) -> EntityType | None:
        """The real entity type of a row of a shared table (a Lead, a CE_Bid record...)."""
        if target.table == "lead_opptys":
            return BUILTIN[_KIND_TO_ROUTE[row["kind"]]]
        if target.name == "CustomEntityRecords":
            api_name = row["ce_api_name"]
            if api_name not in self._custom:
                self._custom[api_name] = await custom_type(self.conn, self.space_id, api_name)
            return self._custom[api_name]
        return target


async def render(
    conn: AsyncConnection,
    et: EntityType,
    space_id: str,
    records: Sequence[Record],
    base: str,
    shape: Shape | None = None,
    *,
    reveal: bool = False,
    fresh: bool = False,
    zone: tzinfo | None = None,
    max_records: int | None = None,
) -> list[Shown]:
    """The records of one entity type as the API returns them, shaped (``fresh``: see
    :meth:`Renderer.render`; ``max_records``: see :class:`Renderer`), date-times in ``zone``
    (None: UTC)."""
    renderer = Renderer(conn, space_id, base, reveal=reveal, zone=zone, max_records=max_records)
    return await renderer.shaped(et, records, shape or Shape(), fresh=fresh)
