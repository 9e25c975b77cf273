"""The change feed (``GET /events``, docs/webhooks.md#change-feed): a space's stored events,
oldest first, read with a cursor, the same events webhooks get; and the long-poll's wake-ups.

A cursor is the seq of the last event a client has seen, written opaquely. Seq follows commit
order on both engines (the outbox lock on PostgreSQL), so reading ``seq > cursor`` never skips
an event that commits later. A cursor before what retention pruned (``store.pruned``) may have
missed events: 410 with the oldest cursor that has not.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.changes.writer import Change, WriteContext
from crmhooks.delivery.router import EVENT_COLUMNS, stored_event
from crmhooks.errors import CursorExpired, ParameterInvalid, TooManyRequests
from crmhooks.hooks.match import Event
from crmhooks.hooks.names import EVENT_NAMES
from crmhooks.hooks.payload import event_time
from crmhooks.hooks.rendering import Catalog, Rendering
from crmhooks.query.shape import Shape
from crmhooks.schema.values import is_uuid
from crmhooks.store.catalog import custom_types_by_space
from crmhooks.store.engine import Database
from crmhooks.store.pruned import pruned_up_to
from crmhooks.store.tables import events

DEFAULT_FIRST = 30
MAX_FIRST = 100
MAX_WAIT = 30.0  # seconds
PARAMS = frozenset({"first", "after", "filter[event]", "filter[entity_id]", "wait"})
_CURSOR_PREFIX = b"events:"


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(_CURSOR_PREFIX + str(seq).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The seq a cursor stands for; 400 naming ``after`` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    digits = raw.removeprefix(_CURSOR_PREFIX)
    if not raw.startswith(_CURSOR_PREFIX) or not digits.isdigit() or len(digits) > 19:
        raise ParameterInvalid(f"after: {cursor!r} is not a cursor of this feed")
    return int(digits)


@dataclass(frozen=True)
class FeedQuery:
    """What one ``GET /events`` asks for."""

    first: int = DEFAULT_FIRST
    after: int | None = None
    # None: every event; else names, ``Entity.*`` and ``*``, as a webhook's ``events`` are
    names: frozenset[str] | None = None
    entity_id: str | None = None
    wait: float = 0.0


def parse_query(params: Mapping[str, str]) -> FeedQuery:
    """The feed's parameters, each checked (400 naming the parameter and the value)."""
    unknown = sorted(set(params) - PARAMS)
    if unknown:
        raise ParameterInvalid(
            f"unknown parameter {unknown[0]!r}; the feed takes {', '.join(sorted(PARAMS))}"
        )
    first = _number(params, "first", DEFAULT_FIRST, 1, MAX_FIRST, integer=True)
    after = decode_cursor(params["after"]) if "after" in params else None
    names = None
    if "filter[event]" in params:
        names = frozenset(n.strip() for n in params["filter[event]"].split(","))
        wrong = sorted(n for n in names if n not in EVENT_NAMES)
        if wrong:
            raise ParameterInvalid(
                f"filter[event]: unknown event {wrong[0]!r} (a name such as Account.Create, "
                "Account.* or *)"
            )
    entity_id = params.get("filter[entity_id]")
    if entity_id is not None:
        if not is_uuid(entity_id):
            raise ParameterInvalid(f"filter[entity_id]: {entity_id!r} is not a record id (UUID)")
        entity_id = entity_id.lower()
    wait = _number(params, "wait", 0.0, 0.0, MAX_WAIT, integer=False)
    return FeedQuery(int(first), after, names, entity_id, wait)


def _number(
    params: Mapping[str, str], name: str, default: float, low: float, high: float, *, integer: bool
) -> float:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:  # NaN too: it compares false
        kind = "an integer" if integer else "a number of seconds"
        raise ParameterInvalid(f"{name}: {raw!r} is not {kind} from {low:g} to {high:g}")
    return value


@dataclass(frozen=True)
class FeedPage:
    data: list[dict[str, Any]]
    end_cursor: str
    has_next_page: bool

    def body(self) -> dict[str, Any]:
        return {
            "success": True,
            "data": self.data,
            "page_info": {"end_cursor": self.end_cursor, "has_next_page": self.has_next_page},
        }


class FeedSignals:
    """Wakes the long-polls of a space when a write of this process commits events there.

    No database connection or transaction is held while a poll waits: it waits on an
    ``asyncio.Event`` of its space, then reads again.
    """

    def __init__(self, max_waiting: int = 100) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._waiting: dict[str, int] = {}  # polls waiting now, per space
        self.max_waiting = max_waiting  # per space (limits: max_waiting_polls_per_space)
        # Set while the writes of other processes wake polls too (PostgreSQL's LISTEN).
        self.hears_others = asyncio.Event()

    def notify(self, space_id: str) -> None:
        event = self._events.pop(space_id, None)
        if event is not None:
            event.set()  # every poll of the space waiting on it wakes; the next ones get anew

    def committed(self, ctx: WriteContext, changes: Sequence[Change]) -> None:
        """A ``WritePath`` after-commit callback: wakes the polls of the space written."""
        self.notify(ctx.space_id)

    @contextmanager
    def waiting(self, space_id: str) -> Iterator[None]:
        """One more poll of the space waits, within the space's limit: 429 past it (a space
        cannot hold the process's memory and connections with polls)."""
        held = self._waiting.get(space_id, 0)
        if held >= self.max_waiting:
            raise TooManyRequests(
                f"the space has {held} change feed polls waiting; the limit is "
                f"{self.max_waiting} (max_waiting_polls_per_space): poll without wait, or later",
                1,
            )
        self._waiting[space_id] = held + 1
        try:
            yield
        finally:
            left = self._waiting[space_id] - 1
            if left:
                self._waiting[space_id] = left
            else:
                del self._waiting[space_id]

    def waiter(self, space_id: str) -> asyncio.Event:
        event = self._events.get(space_id)
        if event is None:
            event = self._events[space_id] = asyncio.Event()
        return event


async def read_feed(
    db: Database,
    signals: FeedSignals,
    space_id: str,
    query: FeedQuery,
    base_url: str,
    *,
    poll_seconds: float | None = None,
) -> FeedPage:
    """One page of the feed; with ``wait`` (and ``after``) and nothing newer, waits for a write
    of the space, reading again after each (``poll_seconds``: also at this interval, for
    writes of other processes)."""
    if query.after is None or query.wait <= 0:
        return await _read_page(db, space_id, query, base_url)
    with signals.waiting(space_id):
        return await _wait_for_page(db, signals, space_id, query, base_url, poll_seconds)


async def _wait_for_page(
    db: Database,
    signals: FeedSignals,
    space_id: str,
    query: FeedQuery,
    base_url: str,
    poll_seconds: float | None,
) -> FeedPage:
    deadline = time.monotonic() + query.wait
    while True:
        # Taken before the read, so that no commit falls between the read and the wait.
        waiter = signals.waiter(space_id)
        page = await _read_page(db, space_id, query, base_url)
        left = deadline - time.monotonic()
        if page.data or left <= 0:
            return page
        timeout = left if poll_seconds is None else min(left, poll_seconds)
        try:
            await asyncio.wait_for(waiter.wait(), timeout)
        except TimeoutError:
            if time.monotonic() >= deadline:
                return page
        query = FeedQuery(
            query.first, decode_cursor(page.end_cursor), query.names, query.entity_id, 0.0
        )


async def _read_page(db: Database, space_id: str, query: FeedQuery, base_url: str) -> FeedPage:
    after = query.after or 0
    async with db.read() as conn:
        pruned = await pruned_up_to(conn)
        if query.after is not None and pruned is not None and query.after < pruned:
            raise CursorExpired(
                f"after: the events after this cursor up to {encode_cursor(pruned)} are past "
                "the retention period and gone; read from oldest_cursor (events may have "
                "been missed)",
                encode_cursor(pruned),
            )
        # The last event committed, read first: what the page reads is up to it, so a page
        # with nothing of this space can move the cursor to it.
        bound = await last_seq(conn)
        stmt = select(*EVENT_COLUMNS).where(
            events.c.space_id == space_id, events.c.seq > after, events.c.seq <= bound
        )
        stmt = narrowed(stmt, query)
        rows = list(await conn.execute(stmt.order_by(events.c.seq).limit(query.first + 1)))
        more = len(rows) > query.first
        rows = rows[: query.first]
        data = await _elements(conn, space_id, rows, base_url)
    # With nothing of this space up to the last commit, the next read starts there (and
    # never before what was pruned).
    end = int(rows[-1][0]) if rows else max(after, bound, pruned or 0)
    return FeedPage(data, encode_cursor(end), more)


async def last_seq(conn: AsyncConnection) -> int:
    """The seq of the last event committed (0 with none): where a read of events stops."""
    return int(await conn.scalar(select(func.max(events.c.seq))) or 0)


def narrowed(stmt: Any, query: FeedQuery) -> Any:
    """``stmt`` on ``events`` with the query's ``filter[entity_id]`` and ``filter[event]``."""
    if query.entity_id is not None:
        stmt = stmt.where(events.c.record_id == query.entity_id)
    if query.names is not None and "*" not in query.names:
        exact = sorted(n for n in query.names if not n.endswith(".*"))
        prefixes = sorted(n[:-1] for n in query.names if n.endswith(".*"))
        stmt = stmt.where(
            or_(
                events.c.name.in_(exact),
                *(events.c.name.startswith(p, autoescape=True) for p in prefixes),
            )
        )
    return stmt


async def recent_events(
    db: Database, space_id: str, query: FeedQuery, base_url: str
) -> list[dict[str, Any]]:
    """The space's newest ``first`` events passing the query's filters, newest first, as the
    feed shows them (the dashboard's Events page)."""
    async with db.read() as conn:
        stmt = narrowed(select(*EVENT_COLUMNS).where(events.c.space_id == space_id), query)
        rows = list(await conn.execute(stmt.order_by(events.c.seq.desc()).limit(query.first)))
        return await _elements(conn, space_id, rows, base_url)


def shown_name(element: Mapping[str, Any]) -> str:
    """The record's ``name`` in a feed element ('' without one): its entity is a dict, or the
    JSON text the write rendered."""
    entity = orjson.loads(orjson.dumps(element["entity"]))
    return str(entity.get("name") or "") if isinstance(entity, dict) else ""


async def _elements(
    conn: AsyncConnection, space_id: str, rows: Sequence[Any], base_url: str
) -> list[dict[str, Any]]:
    """Feed elements of ``EVENT_COLUMNS`` rows, each record as a webhook with default options
    shows it (the routing code's own rendering)."""
    catalog = Catalog(await custom_types_by_space(conn, space_id))
    evs = [e for row in rows if (e := stored_event(row, catalog)) is not None]
    shown = await Rendering(conn, base_url, catalog).entities(space_id, evs, lambda _: Shape())
    return [_element(e, s) for e, s in zip(evs, shown, strict=True)]


def _element(event: Event, entity: Any) -> dict[str, Any]:
    return {
        "id": event.id,
        "event": event.name,
        "event_time": event_time(event.occurred),
        "entity_name": event.option_key,
        "entity_id": event.record_id,
        "entity": entity if entity is not None else event.record,
        "changes": event.changes,
    }
