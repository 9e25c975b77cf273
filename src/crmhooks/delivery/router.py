"""The router: turns stored events into deliveries, in commit order, exactly once.

Each step reads the events after its cursor, finds the webhooks each one fires (the index),
renders the payload elements, groups them into requests by webhook and chunk, and stores those
requests together with the new cursor in one transaction. A crash between steps repeats nothing
and loses nothing: the cursor moves only with the deliveries it produced.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import structlog
from sqlalchemy import (
    JSON,
    Dialect,
    Text,
    TypeDecorator,
    func,
    insert,
    select,
    text,
    true,
    type_coerce,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import TypeEngine

from crmhooks.changes.outbox import REQUESTS_CHANNEL, notify
from crmhooks.delivery.chunking import plan_chunks
from crmhooks.errors import ValidationFailed
from crmhooks.hooks.match import Event, WebhookIndex
from crmhooks.hooks.names import option_key
from crmhooks.hooks.payload import element
from crmhooks.hooks.subscription import Subscription, compile_webhook
from crmhooks.query.render import Renderer
from crmhooks.query.shape import Shape
from crmhooks.schema.registry import BUILTIN, WEBHOOKS
from crmhooks.schema.types import EntityType
from crmhooks.store.catalog import custom_types_by_space
from crmhooks.store.engine import Database
from crmhooks.store.records import row_to_record, table_of
from crmhooks.store.tables import (
    deliveries,
    delivery_bodies,
    delivery_records,
    dispatch_state,
    events,
    table_for,
)
from crmhooks.store.webhook_version import webhooks_version

log = structlog.get_logger("crmhooks.router")

# "crmr": the session lock of the routing process (PostgreSQL). Advisory locks belong to the
# database, so the second key is the schema's: deployments (and test runs) that share a
# database in schemas of their own each have their routing process.
ROUTER_LOCK = 0x6372_6D72
ROUTER = "router"


@dataclass
class Catalog:
    """Entity types of one routing step, custom ones loaded once per space."""

    custom: dict[str, dict[str, EntityType]] = field(default_factory=dict)

    def entity(self, space_id: str, name: str) -> EntityType | None:
        return BUILTIN.get(name) or self.custom.get(space_id, {}).get(name)


async def load_index(conn: AsyncConnection, catalog: Catalog) -> WebhookIndex:
    t = table_of(WEBHOOKS)
    subs: list[Subscription] = []
    for row in (await conn.execute(select(t).where(t.c.is_deleted.is_(False)))).mappings():
        record = {**row_to_record(WEBHOOKS, row), "space_id": row["space_id"]}
        try:
            subs.append(compile_webhook(record, catalog.custom.get(row["space_id"], {})))
        except ValidationFailed as e:  # e.g. a custom entity it filters on was deleted
            log.warning("webhook not loaded", webhook_id=row["id"], error=e.message)
    return WebhookIndex(subs)


async def webhooks_fingerprint(conn: AsyncConnection) -> tuple[Any, ...]:
    """Changes whenever a webhook or a custom entity definition changes, however it was written
    (reads every webhook: checked once a second, beside the version counter)."""
    w, c = table_of(WEBHOOKS), table_for("custom_entities")
    a = select(func.count(), func.max(w.c.modified), func.sum(w.c.revision)).subquery()
    b = select(func.count(), func.max(c.c.modified)).subquery()
    both = select(a, b).select_from(a.join(b, true()))  # one round trip, one row each
    return tuple((await conn.execute(both)).one())


class _ReadJSON(TypeDecorator[Any]):
    """A JSON column as the router reads it. On SQLite: the stored text parsed with orjson, or
    with ``json`` for what orjson refuses (NaN, integers past 64 bits), so the values are the
    ones the JSON type gives, several times faster. Elsewhere: the JSON type itself."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        return dialect.type_descriptor(Text() if dialect.name == "sqlite" else JSON())

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if dialect.name != "sqlite" or not isinstance(value, str):
            return value
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return json.loads(value)


# What routing reads of an event, in this order (see ``_event``).
_EVENT_COLUMNS = (
    events.c.seq,
    events.c.id,
    events.c.space_id,
    events.c.name,
    events.c.entity,
    events.c.record_id,
    type_coerce(events.c.record, _ReadJSON()).label("record"),
    type_coerce(events.c.changes, _ReadJSON()).label("changes"),
    events.c.related_entity,
    events.c.related_id,
    type_coerce(events.c.related, _ReadJSON()).label("related"),
    events.c.skip_key,
    events.c.burst_id,
    events.c.occurred,
)


def _event(row: Any, catalog: Catalog) -> Event | None:
    # By position: a row of _EVENT_COLUMNS (reading attributes by name costs more than the rest).
    (seq, id_, space_id, name, entity, record_id, record, changes) = row[:8]
    (related_entity, related_id, related, skip_key, burst_id, occurred) = row[8:]
    et = catalog.entity(space_id, entity)
    if et is None:
        return None
    return Event(
        seq=seq,
        id=id_,
        space_id=space_id,
        name=name,
        entity=entity,
        option_key=option_key(et),
        record_id=record_id,
        record=record,
        changes=changes,
        related_entity=related_entity,
        related_id=related_id,
        related=related,
        skip_key=skip_key,
        burst_id=burst_id,
        occurred=occurred,
    )


@dataclass
class Router:
    db: Database
    base_url: str
    batch: int = 2000
    index: WebhookIndex = field(default_factory=WebhookIndex)
    catalog: Catalog = field(default_factory=Catalog)
    _version: int | None = -1  # the webhooks version the index was loaded at (-1: never)
    _fingerprint: tuple[Any, ...] | None = None
    _checked_at: float = -math.inf
    _loaded: bool = False
    _stored: int | None = None  # the cursor as stored
    _memory: int = 0  # the cursor as routed
    _stored_at: datetime = field(default_factory=lambda: datetime.min.replace(tzinfo=UTC))
    backlog: bool = False  # the last step may have left events to route now
    _touched: set[str] = field(default_factory=set)  # webhooks given requests since last asked
    _leader: AsyncConnection | None = None  # PostgreSQL: holds the routing lock while open
    _lead_tried: float = -math.inf

    async def _leading(self) -> bool:
        """Whether this process routes. On PostgreSQL one process at a time does: the one
        holding a session lock on a connection kept for it, released when the process (or its
        connection) goes; the others try again once a second. Correctness does not rest
        on it (the cursor row is locked when routes are stored); it saves the others the work.
        """
        if self.db.dialect != "postgresql" or self._leader is not None:
            return True
        if time.monotonic() - self._lead_tried < 1.0:
            return False
        self._lead_tried = time.monotonic()
        conn = await self.db.writer.connect()
        try:
            got = await conn.scalar(
                text("SELECT pg_try_advisory_lock(:k, hashtext(current_schema()))"),
                {"k": ROUTER_LOCK},
            )
            await conn.commit()
        except BaseException:
            await conn.close()
            raise
        if got:
            self._leader = conn
            self._loaded = False  # another router may have moved the cursor: read it again
            return True
        await conn.close()
        return False

    async def close(self) -> None:
        """Let go of the routing lock (PostgreSQL). Unlocked explicitly: closing only returns
        the connection to the pool, where the session lock would stay with it."""
        if self._leader is not None:
            leader, self._leader = self._leader, None
            with contextlib.suppress(Exception):
                await leader.execute(
                    text("SELECT pg_advisory_unlock(:k, hashtext(current_schema()))"),
                    {"k": ROUTER_LOCK},
                )
                await leader.commit()
            with contextlib.suppress(Exception):
                await leader.close()

    def take_touched(self) -> set[str]:
        """The webhooks this router has stored new requests for since the last call."""
        touched, self._touched = self._touched, set()
        return touched

    @property
    def stored_cursor(self) -> int | None:
        """The last event seq whose routing is stored (None before the first)."""
        return self._stored if self._loaded else None

    async def refresh(self, conn: AsyncConnection, version: int | None) -> None:
        """Reload the webhooks if they changed. ``version`` (the counter every change through
        this release moves in its own transaction) shows a change at once; the fingerprint,
        checked once a second, shows the others (an older release during a rolling upgrade,
        a change made by hand)."""
        fingerprint = None
        if version == self._version:
            if time.monotonic() - self._checked_at < 1.0:
                return
            self._checked_at = time.monotonic()
            fingerprint = await webhooks_fingerprint(conn)
            if fingerprint == self._fingerprint:
                return
        self._checked_at = time.monotonic()
        # Read before the webhooks: a change in between is only seen twice.
        self._fingerprint = fingerprint or await webhooks_fingerprint(conn)
        self.catalog = Catalog(await custom_types_by_space(conn))
        self.index = await load_index(conn, self.catalog)
        self._version = version

    async def load(self, conn: AsyncConnection) -> None:
        """The webhooks as they are now, reloaded if they changed."""
        await self.refresh(conn, await conn.scalar(select(webhooks_version())))

    async def _cursor(self, conn: AsyncConnection, *, lock: bool = False) -> int | None:
        query = select(dispatch_state.c.last_seq).where(dispatch_state.c.name == ROUTER)
        if lock and conn.dialect.name == "postgresql":
            query = query.with_for_update()
        row = (await conn.execute(query)).first()
        return None if row is None else int(row[0])

    async def _bound(self, conn: AsyncConnection) -> tuple[int, int | None]:
        """The last event committed and the webhooks version, read together (one snapshot)."""
        row = (await conn.execute(select(func.max(events.c.seq), webhooks_version()))).one()
        return int(row[0] or 0), row[1]

    async def _events(self, conn: AsyncConnection, after: int, upto: int) -> list[Any]:
        rows = list(
            await conn.execute(
                select(*_EVENT_COLUMNS)
                .where(events.c.seq > after, events.c.seq <= upto)
                .order_by(events.c.seq)
                .limit(self.batch)
            )
        )
        if len(rows) == self.batch:  # finish the last burst, so its chunks are planned whole
            last = rows[-1]
            rows += list(
                await conn.execute(
                    select(*_EVENT_COLUMNS)
                    .where(events.c.burst_id == last.burst_id, events.c.seq > last.seq)
                    .order_by(events.c.seq)
                )
            )
        return rows

    async def step(self) -> int:
        """Route the next batch of events; the number of deliveries made (0: nothing to do).

        The cursor is stored with the deliveries it produced. Events that fire no webhook move
        it only in memory, stored at most once a second: after a crash they are read again and
        still fire nothing (a webhook never fires for events older than itself).
        """
        if not await self._leading():
            async with self.db.read() as conn:
                await self.load(conn)  # the claims of every process need the webhooks
            return 0
        async with self.db.read() as conn:
            if not self._loaded:
                self._stored = await self._cursor(conn)
                self._memory = self._stored or 0
                self._loaded = True
            # The version is read with the last event to route, in one snapshot: a webhook
            # change committed before any of those events (seq follows commit order on both
            # engines), through any process, is loaded before they are routed.
            bound, version = await self._bound(conn)
            await self.refresh(conn, version)
            rows = await self._events(conn, self._memory, bound)
            self.backlog = len(rows) >= self.batch
            if not rows:
                await self._store_cursor([], force=False)
                return 0
            planned = await self._plan(conn, rows)
        self._memory = rows[-1].seq
        await self._store_cursor(planned, force=bool(planned))
        return max(len(planned), 1)

    async def _store_cursor(self, planned: list[dict[str, Any]], *, force: bool) -> None:
        now = datetime.now(UTC)
        if self._memory == (self._stored or 0) and not planned:
            return
        if not force and (now - self._stored_at).total_seconds() < 1.0:
            return
        async with self.db.write() as conn:
            # Locked on PostgreSQL, where routers of other processes may store at the same time:
            # the second waits for the first to commit, then sees the cursor moved and
            # abandons its plan (no request is made twice).
            if await self._cursor(conn, lock=True) != self._stored:
                self._loaded = False  # another router moved it: start again from the table
                self.backlog = True
                return
            if planned:
                self._touched.update(p["webhook_id"] for p in planned)
                records = [
                    {
                        "delivery_id": p["id"],
                        "record_id": record_id,
                        "webhook_id": p["webhook_id"],
                        "first_seq": p["first_seq"],
                    }
                    for p in planned
                    for record_id in p.pop("record_ids")
                ]
                bodies = [{"delivery_id": p["id"], "body": p.pop("body")} for p in planned]
                rows = [
                    {**p, "next_attempt_at": now + timedelta(seconds=p.pop("delay"))}
                    for p in planned
                ]
                await conn.execute(insert(deliveries), rows)
                await conn.execute(insert(delivery_bodies), bodies)
                await conn.execute(insert(delivery_records), records)
                await notify(conn, REQUESTS_CHANNEL)  # wake the workers of other processes
            values = {"last_seq": self._memory, "updated": now}
            if self._stored is None:
                await conn.execute(insert(dispatch_state).values(name=ROUTER, **values))
            else:
                await conn.execute(
                    update(dispatch_state).where(dispatch_state.c.name == ROUTER).values(**values)
                )
        self._stored = self._memory
        self._stored_at = now

    async def _plan(self, conn: AsyncConnection, rows: Sequence[Any]) -> list[dict[str, Any]]:
        matched: dict[str, list[tuple[Event, Subscription]]] = {}
        for row in rows:
            event = _event(row, self.catalog)
            if event is None:
                continue
            for sub in self.index.route(event):
                matched.setdefault(sub.id, []).append((event, sub))
        if not matched:
            return []
        renderer = Rendering(conn, self.base_url, self.catalog)
        now = datetime.now(UTC)
        planned: list[dict[str, Any]] = []
        for pairs in matched.values():
            sub = pairs[0][1]
            elements = await renderer.elements(sub, [e for e, _ in pairs])
            items = [
                (e.burst_id, (e, el)) for e, el in zip([e for e, _ in pairs], elements, strict=True)
            ]
            groups: dict[str, str] = {}
            for chunk in plan_chunks(items, sub.chunk_size, sub.chunk_delay):
                body = orjson.dumps([el for _, el in chunk.items])
                group = None
                if chunk.burst is not None:
                    group = groups.setdefault(chunk.burst, str(uuid.uuid4()))
                planned.append(
                    {
                        "id": str(uuid.uuid4()),
                        "webhook_id": sub.id,
                        "space_id": sub.space_id,
                        "status": "pending",
                        "body": body.decode(),
                        "event_ids": [e.id for e, _ in chunk.items],
                        "event_count": len(chunk.items),
                        "first_seq": chunk.items[0][0].seq,
                        "attempts": 0,
                        "created": now,
                        "delay": chunk.delay,
                        "chunk_group": group,
                        "chunk_index": chunk.index if group else None,
                        "record_ids": sorted({e.record_id for e, _ in chunk.items}),
                    }
                )
        return planned


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
        renderer = self._renderer(sub.space_id)
        opts = sub.entity
        by_type: dict[str, list[int]] = {}
        for i, e in enumerate(evs):
            by_type.setdefault(e.entity, []).append(i)
        entities: list[dict[str, Any] | None] = [None] * len(evs)
        for entity, idxs in by_type.items():
            et = self.catalog.entity(sub.space_id, entity)
            assert et is not None
            shape = (
                opts[evs[idxs[0]].option_key].shape if evs[idxs[0]].option_key in opts else Shape()
            )
            shown = await renderer.shaped(et, [evs[i].record for i in idxs], shape)
            for i, s in zip(idxs, shown, strict=True):
                entities[i] = s
        related = await self._related(sub, evs, renderer)
        return [element(sub, e, entities[i] or {}, related[i]) for i, e in enumerate(evs)]

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
