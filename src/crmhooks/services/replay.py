"""Replay (``POST /entities/Webhooks/{id}/replay``, docs/webhooks.md#replay): the stored events
of a window that match the webhook's current options, planned again as new requests for it.

The events are read a page at a time (``PAGE`` of the space's events in seq order), matched by
the rules routing uses except the registration time (``hooks.match.accepts_any_time``),
rendered and chunked as routing does, and each flush of about ``PAGE`` matched events is stored
in a short write transaction of its own: memory stays bounded by a page whatever the window,
and the writer is never held for long. After each page the replay rests as long as the page
took (``REST``), so live work keeps at least half the time (docs/benchmarks.md, Replay).

Element ids are those of any earlier delivery of the same event to the same webhook
(``hooks.payload.element_id``), so receivers deduplicate; the requests are marked ``replay``
(header ``webhook-replay: true``). Each request keeps the seq of its first event, so the
per-record order of the queue makes a live event of a record wait for that record's replayed
ones.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.delivery.chunking import plan_chunks
from crmhooks.delivery.log import parse_time, window
from crmhooks.delivery.planner import plan_requests
from crmhooks.delivery.queue import enqueue_in
from crmhooks.delivery.router import EVENT_COLUMNS, stored_event
from crmhooks.errors import CursorExpired, ParameterInvalid, TooManyRequests
from crmhooks.hooks.match import Event, accepts_any_time, names_it
from crmhooks.hooks.rendering import Catalog, Rendering
from crmhooks.hooks.subscription import Subscription
from crmhooks.schema.values import format_datetime
from crmhooks.services.context import Delivery
from crmhooks.services.feed import encode_cursor, last_seq
from crmhooks.store.catalog import custom_types_by_space
from crmhooks.store.engine import Database
from crmhooks.store.pruned import pruned_before, pruned_up_to
from crmhooks.store.tables import events

PAGE = 250  # events read, and matched events planned, at a time
# After each page a replay pauses this many times as long as the page took: it works at most
# half the time, and live routing and sending (of every webhook, on both cores) keep the rest.
REST = 1.0
FIELDS = frozenset({"since", "until", "dry_run"})


@dataclass(frozen=True)
class ReplayWindow:
    since: datetime
    until: datetime
    dry_run: bool


def parse_replay(body: Mapping[str, Any], now: datetime) -> ReplayWindow:
    """The body of a replay request; 400 naming the field at fault."""
    unknown = set(body) - FIELDS
    if unknown:
        raise ParameterInvalid(
            f"replay takes since, until and dry_run, not {', '.join(sorted(unknown))}"
        )
    raw_since, raw_until, dry_run = body.get("since"), body.get("until"), body.get("dry_run", False)
    if not isinstance(raw_since, str):
        raise ParameterInvalid("since: a date-time is required")
    if raw_until is not None and not isinstance(raw_until, str):
        raise ParameterInvalid("until: expected a date-time string")
    if not isinstance(dry_run, bool):
        raise ParameterInvalid(f"dry_run: expected true or false, not {dry_run!r}")
    since = parse_time(raw_since, "since")
    until = parse_time(raw_until, "until") or now
    assert since is not None
    window(since, until)
    return ReplayWindow(since, until, dry_run)


def split_ready(matched: Sequence[Event], chunk_size: int, chunk_delay: float) -> int:
    """How many of ``matched`` (a webhook's events in seq order, more may follow) can be
    planned now and be chunked as they would be all together: whole chunks; with a
    ``chunk_delay`` (chunks per burst), every burst but the last, which may go on."""
    if chunk_delay <= 0:
        return len(matched) - len(matched) % chunk_size
    last = len(matched)
    while last > 0 and matched[last - 1].burst_id == matched[-1].burst_id:
        last -= 1
    return last


class ReplaysRunning:
    """One replay at a time per space in this process: a second is a 429 (a space cannot
    make the server plan several large windows at once)."""

    def __init__(self) -> None:
        self._spaces: set[str] = set()

    @contextmanager
    def running(self, space_id: str) -> Iterator[None]:
        if space_id in self._spaces:
            raise TooManyRequests("a replay of this space is running; try again when it ends", 5)
        self._spaces.add(space_id)
        try:
            yield
        finally:
            self._spaces.discard(space_id)


RUNNING = ReplaysRunning()


# Events are numbered in commit order (seq) and stamped when written (occurred): the two orders
# differ by no more than a write's transaction takes. A replay finds its window's seq range by
# a binary search on seq, widened by this much, and reads only that range, not the space's
# whole history (each page reads about PAGE events of the window).
DISORDER = timedelta(minutes=10)


async def _seq_before(
    conn: AsyncConnection, space_id: str, lo: int, hi: int, when: datetime, at: bool = False
) -> int:
    """The seq in [lo, hi] after which every event of the space up to ``hi`` was written after
    ``when`` (at or after, with ``at``), taking times to grow with seq: one indexed probe per
    halving of the range."""
    while lo < hi:
        mid = (lo + hi) // 2
        row = (
            await conn.execute(
                select(events.c.seq, events.c.occurred)
                .where(events.c.space_id == space_id, events.c.seq > mid, events.c.seq <= hi)
                .order_by(events.c.seq)
                .limit(1)
            )
        ).first()
        if row is None or (row[1] >= when if at else row[1] > when):
            hi = mid
        else:
            lo = int(row[0])  # it and every event before it are not after ``when``
    return lo


@dataclass
class _Counts:
    events: int = 0
    requests: int = 0


async def replay(
    db: Database,
    dispatcher: Delivery | None,
    sub: Subscription,
    win: ReplayWindow,
    base_url: str,
) -> dict[str, int]:
    """Plan the window's matching events for the webhook (or count them, ``dry_run``):
    ``{"events": N, "requests": M}``. 410 when retention may have pruned part of the window."""
    if not sub.is_active:
        raise ParameterInvalid(
            f"webhook {sub.id} is not active (is_active false): activate it before a replay"
        )
    with RUNNING.running(sub.space_id):
        async with db.read() as conn:
            gone_before = await pruned_before(conn)
            if gone_before is not None and win.since < gone_before:
                pruned = await pruned_up_to(conn)
                raise CursorExpired(
                    f"since: events before {format_datetime(gone_before)} are past the retention "
                    "period and may be gone; replay a window that starts at or after it",
                    encode_cursor(pruned or 0),
                )
            # Up to the last event committed now: a replay does not chase new writes. Of
            # those, the seq range of the window, widened by DISORDER: what the pages read.
            bound = await last_seq(conn)
            after = await _seq_before(conn, sub.space_id, 0, bound, win.since - DISORDER, True)
            bound = await _seq_before(conn, sub.space_id, after, bound, win.until + DISORDER)
            catalog = Catalog(await custom_types_by_space(conn, sub.space_id))
        counts, pending = _Counts(), []
        while True:
            started = time.perf_counter()
            async with db.read() as conn:
                rows = list(
                    await conn.execute(
                        select(*EVENT_COLUMNS)
                        .where(
                            events.c.space_id == sub.space_id,
                            events.c.seq > after,
                            events.c.seq <= bound,
                            events.c.occurred >= win.since,
                            events.c.occurred <= win.until,
                        )
                        .order_by(events.c.seq)
                        .limit(PAGE)
                    )
                )
            if rows:
                after = int(rows[-1][0])
            for row in rows:
                event = stored_event(row, catalog)
                if event is not None and names_it(sub, event) and accepts_any_time(sub, event):
                    pending.append(event)
            final = len(rows) < PAGE
            if len(pending) >= PAGE or final:
                ready = (
                    len(pending) if final else split_ready(pending, sub.chunk_size, sub.chunk_delay)
                )
                await _plan(
                    db, dispatcher, sub, pending[:ready], win.dry_run, base_url, catalog, counts
                )
                pending = pending[ready:]
            if final:
                return {"events": counts.events, "requests": counts.requests}
            await asyncio.sleep(REST * (time.perf_counter() - started))


async def _plan(
    db: Database,
    dispatcher: Delivery | None,
    sub: Subscription,
    evs: list[Event],
    dry_run: bool,
    base_url: str,
    catalog: Catalog,
    counts: _Counts,
) -> None:
    """Plan (or count) these events' requests; stored in one short write transaction."""
    if not evs:
        return
    counts.events += len(evs)
    if dry_run:
        items = [(e.burst_id, e) for e in evs]
        counts.requests += len(plan_chunks(items, sub.chunk_size, sub.chunk_delay))
        return
    async with db.read() as conn:
        elements = await Rendering(conn, base_url, catalog).elements(sub, evs)
    planned = plan_requests(sub, evs, elements, datetime.now(UTC), replay=True)
    async with db.write() as conn:
        await enqueue_in(conn, planned, datetime.now(UTC))
    counts.requests += len(planned)
    if dispatcher is not None:
        dispatcher.requeued()
