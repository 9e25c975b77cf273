"""The router: turns stored events into deliveries, in commit order, exactly once.

Each step reads the events after its cursor, finds the webhooks each one fires (the index),
renders the payload elements, groups them into requests by webhook and chunk, and stores those
requests together with the new cursor in one transaction. A crash between steps repeats nothing
and loses nothing: the cursor moves only with the deliveries it produced.

Matching has a budget per space and step (``delivery.budget``): the events of a space past it
are stored as held (``routing_deferred``) in the same transaction, and the next steps route
them first, oldest first, before any newer event of that space.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from itertools import takewhile
from typing import Any

import structlog
from sqlalchemy import (
    JSON,
    Dialect,
    Text,
    TypeDecorator,
    bindparam,
    delete,
    func,
    insert,
    select,
    type_coerce,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import TypeEngine

from crmhooks.delivery.budget import Budget, Matched, match_within
from crmhooks.delivery.leader import LeaderLock
from crmhooks.delivery.model import PlannedRequest
from crmhooks.delivery.planner import plan_requests
from crmhooks.delivery.queue import enqueue_in
from crmhooks.delivery.webhooks import WebhookCache
from crmhooks.hooks.match import Event, stored_json
from crmhooks.hooks.names import option_key
from crmhooks.hooks.rendering import Catalog, Rendering
from crmhooks.hooks.subscription import Subscription
from crmhooks.store.engine import Database
from crmhooks.store.inline_sqlite import driver_rows
from crmhooks.store.tables import UTCDateTime, dispatch_state, events, routing_deferred
from crmhooks.store.webhook_version import webhooks_version

log = structlog.get_logger("crmhooks.router")

ROUTER = "router"  # the router's row in dispatch_state (its cursor)
BURST_PAGE = 128  # events read at a time to finish a burst a batch cut
# Matching seconds per event assumed for a space with held events, until measured.
HELD_COST = 1e-3


class _StoredJSON(TypeDecorator[Any]):
    """A JSON column read as stored: the text on SQLite (``Event`` parses it when it is
    read), the JSON type elsewhere. No step per row on SQLite."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        return dialect.type_descriptor(Text() if dialect.name == "sqlite" else JSON())


class _StoredTime(TypeDecorator[Any]):
    """A date-time column read as stored: SQLite's naive UTC text (``_occurred`` parses it,
    once per distinct value), the column's own type elsewhere (aware datetimes)."""

    impl = UTCDateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        return dialect.type_descriptor(Text() if dialect.name == "sqlite" else UTCDateTime())


@lru_cache(maxsize=4096)
def _stored_time(text: str) -> datetime:
    """SQLite's stored text of a ``UTCDateTime`` as the type reads it: the events of one write
    share their time, so most of a batch's are parsed once."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _occurred(value: Any) -> datetime:
    return _stored_time(value) if isinstance(value, str) else value


# The statements of every step, built once (``inline_sqlite``: on SQLite they run on the
# driver, ~5 µs each instead of SQLAlchemy's ~80).
_CURSOR = select(dispatch_state.c.last_seq).where(dispatch_state.c.name == ROUTER)
_CURSOR_LOCKED = _CURSOR.with_for_update()
_BOUND = select(func.max(events.c.seq), webhooks_version())
_STORE_CURSOR = (
    update(dispatch_state)
    .where(dispatch_state.c.name == ROUTER)
    .values(
        last_seq=bindparam("r_seq", type_=dispatch_state.c.last_seq.type),
        updated=bindparam("r_at", type_=dispatch_state.c.updated.type),
    )
)

# What routing reads of an event, in this order (see ``stored_event``).
EVENT_COLUMNS = (
    events.c.seq,
    events.c.id,
    events.c.space_id,
    events.c.name,
    events.c.entity,
    events.c.record_id,
    type_coerce(events.c.record, _StoredJSON()).label("record"),
    type_coerce(events.c.changes, _StoredJSON()).label("changes"),  # parsed by stored_event
    events.c.related_entity,
    events.c.related_id,
    type_coerce(events.c.related, _StoredJSON()).label("related"),
    events.c.skip_key,
    events.c.burst_id,
    type_coerce(events.c.occurred, _StoredTime()).label("occurred"),
    events.c.rendered,  # JSON text, spliced into bodies as it is (never parsed)
)


# The events of a step (``Router._events``), built once; on SQLite run on the driver, whose rows
# keep ``changes`` as stored text (``stored_event`` parses it).
_EVENTS_AFTER = (
    select(*EVENT_COLUMNS)
    .where(events.c.seq > bindparam("e_after"), events.c.seq <= bindparam("e_upto"))
    .order_by(events.c.seq)
    .limit(bindparam("e_limit"))
)
SEQ, BURST = 0, 12  # the positions of seq and burst_id in a row of EVENT_COLUMNS

# A space's held events, oldest first, with the seq of the hold (its event may be gone).
_HELD_COLUMNS = (routing_deferred.c.seq, *EVENT_COLUMNS)
_HELD_FROM = routing_deferred.outerjoin(events, events.c.seq == routing_deferred.c.seq)
_BEHIND = select(routing_deferred.c.space_id, func.min(routing_deferred.c.seq)).group_by(
    routing_deferred.c.space_id
)


def stored_event(row: Any, catalog: Catalog) -> Event | None:
    """An event as routing (and the change feed) reads it, from a row of ``EVENT_COLUMNS``;
    None when its record's type no longer exists (a deleted custom entity)."""
    # By position (reading attributes by name costs more than the rest).
    (seq, id_, space_id, name, entity, record_id, record, changes) = row[:8]
    (related_entity, related_id, related, skip_key, burst_id, occurred, rendered) = row[8:]
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
        record_json=record,
        changes=stored_json(changes),  # the stored text on SQLite (hooks.match.stored_json)
        related_entity=related_entity,
        related_id=related_id,
        related_json=related,
        skip_key=skip_key,
        burst_id=burst_id,
        occurred=_occurred(occurred),
        rendered=rendered,
    )


@dataclass
class Router:
    db: Database
    base_url: str
    batch: int = 2000
    budget: float = 0.05  # seconds of matching per space and step (delivery.budget)
    webhooks: WebhookCache = field(default_factory=WebhookCache)
    _loaded: bool = False
    _stored: int | None = None  # the cursor as stored
    _memory: int = 0  # the cursor as routed
    _stored_at: datetime = field(default_factory=lambda: datetime.min.replace(tzinfo=UTC))
    backlog: bool = False  # the last step may have left events to route now
    _behind: dict[str, int] = field(default_factory=dict)  # space: its oldest held seq, stored
    _cost: dict[str, float] = field(default_factory=dict)  # matching seconds per event
    _touched: set[str] = field(default_factory=set)  # webhooks given requests since last asked
    _leader: LeaderLock = field(init=False)  # which process routes (PostgreSQL)

    def __post_init__(self) -> None:
        self._leader = LeaderLock(self.db)

    async def _leading(self) -> bool:
        """Whether this process routes (``delivery.leader``): always on SQLite."""
        if self.db.dialect != "postgresql":
            return True
        if await self._leader.acquire():
            self._loaded = False  # another router may have moved the cursor: read it again
        return self._leader.held

    async def close(self) -> None:
        """Let go of the routing lock (PostgreSQL)."""
        await self._leader.release()

    def take_touched(self) -> set[str]:
        """The webhooks this router has stored new requests for since the last call."""
        touched, self._touched = self._touched, set()
        return touched

    @property
    def stored_cursor(self) -> int | None:
        """The last event seq up to which every event's routing is stored (None before the
        first): the cursor, or the seq before the oldest event held for a later step."""
        if not self._loaded or self._stored is None:
            return None
        return min([self._stored, *(seq - 1 for seq in self._behind.values())])

    @property
    def behind(self) -> dict[str, int]:
        """The spaces with events held for a later step, each with its oldest held seq."""
        return dict(self._behind)

    async def load(self, conn: AsyncConnection) -> None:
        """The webhooks as they are now, reloaded if they changed."""
        await self.webhooks.load(conn)

    async def _cursor(self, conn: AsyncConnection, *, lock: bool = False) -> int | None:
        query = _CURSOR_LOCKED if lock and conn.dialect.name == "postgresql" else _CURSOR
        rows = list(await driver_rows(conn, query, {}))  # read to the end: no open statement
        return int(rows[0][0]) if rows else None

    async def _bound(self, conn: AsyncConnection) -> tuple[int, int | None]:
        """The last event committed and the webhooks version, read together (one snapshot)."""
        (row,) = await driver_rows(conn, _BOUND, {})
        return int(row[0] or 0), None if row[1] is None else int(row[1])

    async def _events(self, conn: AsyncConnection, after: int, upto: int) -> list[Any]:
        params = {"e_after": after, "e_upto": upto, "e_limit": self.batch}
        rows: list[Any] = list(await driver_rows(conn, _EVENTS_AFTER, params))
        if len(rows) == self.batch:  # finish the last burst, so its chunks are planned whole
            # A burst's events are consecutive (one transaction inserts them together, holding
            # the outbox lock on PostgreSQL): read on by seq until the burst changes, a page at
            # a time, never scanning the rest of the table (burst_id has no index). Each page
            # reads seq and burst_id only, whole events only for those of the burst; pages
            # grow from one event, since a batch mostly ends where its last burst ends.
            burst, size = rows[-1][BURST], 1
            while True:
                page = list(
                    await conn.execute(
                        select(events.c.seq, events.c.burst_id)
                        .where(events.c.seq > rows[-1][SEQ])
                        .order_by(events.c.seq)
                        .limit(size)
                    )
                )
                same = list(takewhile(lambda r: r.burst_id == burst, page))
                if same:
                    rows += await conn.execute(
                        select(*EVENT_COLUMNS)
                        .where(events.c.seq > rows[-1][SEQ], events.c.seq <= same[-1].seq)
                        .order_by(events.c.seq)
                    )
                if len(same) < size:
                    break
                size = min(size * 8, BURST_PAGE)
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
                self._behind = {s: int(q) for s, q in await conn.execute(_BEHIND)}
                self._loaded = True
            # The version is read with the last event to route, in one snapshot: a webhook
            # change committed before any of those events (seq follows commit order on both
            # engines), through any process, is loaded before they are routed.
            bound, version = await self._bound(conn)
            await self.webhooks.refresh(conn, version)
            budget, found = Budget(self.budget), Matched()
            # Held events first: they are older than any new event of their space.
            released = await self._match_held(conn, budget, found)
            rows = await self._events(conn, self._memory, bound)
            catalog = self.webhooks.catalog
            evs = [e for row in rows if (e := stored_event(row, catalog)) is not None]
            await match_within(evs, self.webhooks.route, budget, found, self._behind)
            self._measure(budget, found)
            self.backlog = len(rows) >= self.batch
            if not rows and not released:
                await self._store_cursor([], force=False)
                return 0
            planned = await self._plan(conn, found.fired())
        if rows:
            self._memory = rows[-1][SEQ]
        hold = [(e.space_id, e.seq) for e in found.held]
        # Held and released events are stored at once, as requests are; a step that only moved
        # past events that fire nothing stores its cursor at most once a second.
        force = bool(planned or hold or released)
        await self._store_cursor(planned, force=force, hold=hold, release=released)
        self.backlog = self.backlog or bool(self._behind)
        return max(len(planned), 1)

    async def _match_held(
        self, conn: AsyncConnection, budget: Budget, found: Matched
    ) -> dict[str, int]:
        """Match the held events of each space behind, as many as its budget allows; for each,
        the seq up to which its held events are done (routed now or firing nothing)."""
        released: dict[str, int] = {}
        catalog = self.webhooks.catalog
        for space_id in sorted(self._behind):
            most = budget.events_for(space_id, self._cost.get(space_id, HELD_COST), self.batch)
            rows = list(
                await conn.execute(
                    select(*_HELD_COLUMNS)
                    .select_from(_HELD_FROM)
                    .where(routing_deferred.c.space_id == space_id)
                    .order_by(routing_deferred.c.seq)
                    .limit(most)
                )
            )
            if not rows:
                continue
            evs = [e for r in rows if r[1] is not None and (e := stored_event(r[1:], catalog))]
            held = len(found.held)
            await match_within(evs, self.webhooks.route, budget, found)
            still = found.held[held:]  # past its budget again: they stay held as they are
            del found.held[held:]
            released[space_id] = still[0].seq - 1 if still else int(rows[-1][0])
        return released

    def _measure(self, budget: Budget, found: Matched) -> None:
        """Keep what matching one event cost the spaces that are or go behind."""
        for event in found.held:
            self._cost.setdefault(event.space_id, HELD_COST)
        for space_id, count in found.matched.items():
            if space_id in self._behind or space_id in self._cost:
                self._cost[space_id] = budget.spent[space_id] / count

    async def _store_cursor(
        self,
        planned: list[PlannedRequest],
        *,
        force: bool,
        hold: Sequence[tuple[str, int]] = (),
        release: Mapping[str, int] | None = None,
    ) -> None:
        now = datetime.now(UTC)
        if self._memory == (self._stored or 0) and not (planned or hold or release):
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
                self._touched.update(p.webhook_id for p in planned)
                await enqueue_in(conn, planned, now)
            behind = None
            if hold or release:
                if hold:
                    rows = [{"space_id": s, "seq": q} for s, q in hold]
                    await conn.execute(insert(routing_deferred), rows)
                for space_id, upto in (release or {}).items():
                    await conn.execute(
                        delete(routing_deferred).where(
                            routing_deferred.c.space_id == space_id, routing_deferred.c.seq <= upto
                        )
                    )
                behind = {s: int(q) for s, q in await conn.execute(_BEHIND)}
            if self._stored is None:
                values = {"last_seq": self._memory, "updated": now}
                await conn.execute(insert(dispatch_state).values(name=ROUTER, **values))
            else:
                await driver_rows(conn, _STORE_CURSOR, {"r_seq": self._memory, "r_at": now})
        self._stored = self._memory
        self._stored_at = now
        if behind is not None:
            self._behind = behind
            self._cost = {s: c for s, c in self._cost.items() if s in behind}

    async def _plan(
        self, conn: AsyncConnection, matched: list[tuple[Subscription, list[Event]]]
    ) -> list[PlannedRequest]:
        if not matched:
            return []
        renderer = Rendering(conn, self.base_url, self.webhooks.catalog)
        now = datetime.now(UTC)
        planned: list[PlannedRequest] = []
        for sub, evs_of in matched:
            elements = await renderer.elements(sub, evs_of)
            planned.extend(plan_requests(sub, evs_of, elements, now))
        return planned
