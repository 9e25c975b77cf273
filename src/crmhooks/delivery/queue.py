"""The delivery queue: every statement on ``deliveries``, ``delivery_bodies``,
``delivery_records`` and ``delivery_attempts``, behind one interface.

- enqueue: the requests a routing step planned (with its cursor, in the router's transaction);
- claim: lease a webhook's requests due now, in claim order (``SqlQueue.claiming``);
- record: the outcomes of sent requests, in one transaction for many, with the webhooks'
  health (failing since, disabled) they change;
- release, resend, recover (``failed_between``), prune, and the log's reads.

:class:`DeliveryQueue` is the interface the dispatcher uses; :class:`SqlQueue` is it on SQLite
and PostgreSQL, ``delivery.memory.MemoryQueue`` in memory (for the unit tests).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog
from sqlalchemy import (
    Integer,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from crmhooks.changes.outbox import REQUESTS_CHANNEL, notify
from crmhooks.delivery.health import GONE_REASON, failing_limit, succeeded, worn_reason
from crmhooks.delivery.model import Claimed, DeliveryStatus, Outcome, PlannedRequest, SendResult
from crmhooks.schema.registry import WEBHOOKS
from crmhooks.store.engine import Database
from crmhooks.store.inline_sqlite import driver_executemany, driver_rows, insert_rows
from crmhooks.store.pruned import mark_pruned
from crmhooks.store.records import table_of
from crmhooks.store.tables import (
    deliveries,
    delivery_attempts,
    delivery_bodies,
    delivery_records,
    events,
)
from crmhooks.store.webhook_version import bump_webhooks_version

log = structlog.get_logger("crmhooks.dispatcher")

PENDING, DELIVERED, FAILED = DeliveryStatus.PENDING, DeliveryStatus.DELIVERED, DeliveryStatus.FAILED

# The statements of every claim and every outcome, built once (``inline_sqlite``: on SQLite
# they run on the driver, ~5 µs each instead of SQLAlchemy's ~80).
_BODIES = select(delivery_bodies.c.delivery_id, delivery_bodies.c.body).where(
    delivery_bodies.c.delivery_id.in_(bindparam("ids", expanding=True))
)
_OUTCOME = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status", type_=deliveries.c.status.type),
        attempts=bindparam("b_attempts", type_=deliveries.c.attempts.type),
        next_attempt_at=bindparam("b_next", type_=deliveries.c.next_attempt_at.type),
        delivered_at=bindparam("b_delivered", type_=deliveries.c.delivered_at.type),
        last_status=bindparam("b_last_status", type_=deliveries.c.last_status.type),
        last_error=bindparam("b_last_error", type_=deliveries.c.last_error.type),
        lease_until=None,
    )
)
_FINISHED_RECORDS = delete(delivery_records).where(
    delivery_records.c.delivery_id.in_(bindparam("ids", expanding=True))
)

# Claims of one webhook take turns across processes (PostgreSQL; held to the commit). Tried,
# not waited for: a claim asks webhooks in turns of spaces, not in one order every process
# shares, and waiting in different orders could deadlock. A webhook another process is
# claiming for right now is asked again a moment later. Two keys: a namespace of our own and
# the webhook's hash.
CLAIM_LOCK = text("SELECT pg_try_advisory_xact_lock(1668443491, hashtext(:w))")  # "crmc"

# The webhooks with a pending request, one index probe each (status, webhook_id, ...).
WEBHOOKS_WITH_PENDING = f"""
WITH RECURSIVE w(id) AS (
    SELECT (SELECT webhook_id FROM deliveries WHERE status = '{PENDING.value}'
            ORDER BY webhook_id LIMIT 1)
    UNION ALL
    SELECT (SELECT webhook_id FROM deliveries WHERE status = '{PENDING.value}'
            AND webhook_id > w.id ORDER BY webhook_id LIMIT 1)
    FROM w WHERE w.id IS NOT NULL
)
SELECT id FROM w WHERE id IS NOT NULL
"""

# Pruning deletes in batches this size, each its own short transaction, so that delivery
# (which shares the SQLite write lock) is never held up for long.
PRUNE_BATCH = 1000


@dataclass
class Pruned:
    deliveries: int = 0
    events: int = 0


@dataclass(frozen=True)
class Claims:
    """What one claim leased: the requests (with their bodies), and when the later chunks of
    the bursts it started are due (webhook, time)."""

    claimed: list[Claimed]
    later: list[tuple[str, datetime]]


@dataclass(frozen=True)
class HealthChanges:
    """What recorded outcomes change of their webhooks' health."""

    cleared: set[str] = field(default_factory=set)  # answered well: no longer failing
    failing: set[str] = field(default_factory=set)  # failing (since now, if not already)
    gone: set[str] = field(default_factory=set)  # answered 410 Gone: disabled now
    disable_after: float = 5 * 86400  # failing continuously this long disables a webhook


class ClaimSession(Protocol):
    """One claim: a write transaction on the queue, asked webhook by webhook."""

    async def pending_webhooks(self) -> set[str]:
        """Every webhook with a pending request."""
        ...

    async def claim(self, webhook_id: str, limit: int, hold: int) -> int | None:
        """Lease up to ``limit`` of the webhook's requests due now, in order; how many. On a
        shared queue (PostgreSQL) also no more than leaves its live leases within ``hold``;
        None when another process is claiming for the webhook right now (ask again soon)."""
        ...

    async def record(self, outcomes: Sequence[Outcome], health: HealthChanges) -> None:
        """Record outcomes in this claim's transaction (``DeliveryQueue.record``), before the
        claims: one transaction for both, and the records they free are claimable at once."""
        ...

    async def finish(self, chunk_delay: Callable[[str], float]) -> Claims:
        """Space out the later chunks of the bursts started, and read the bodies."""
        ...


class DeliveryQueue(Protocol):
    """The queue as the dispatcher and the front-ends use it."""

    def claiming(
        self, now: datetime, lease_until: datetime
    ) -> AbstractAsyncContextManager[ClaimSession]: ...

    async def enqueue(self, planned: Sequence[PlannedRequest], now: datetime) -> None: ...

    async def record(
        self, outcomes: Sequence[Outcome], health: HealthChanges, now: datetime
    ) -> None: ...

    async def release(self, ids: Sequence[str]) -> None: ...

    async def resend(self, ids: Sequence[str], now: datetime) -> None: ...

    async def failed_between(
        self, space_id: str, webhook_id: str, since: datetime, until: datetime | None
    ) -> list[str]: ...

    async def prune(self, cutoff: datetime, routed_up_to: int | None) -> Pruned: ...


class SqlQueue:
    """The queue in the database (SQLite or PostgreSQL)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._claims: dict[bool, Any] = {}  # the claim statement, for PostgreSQL or not

    # --- enqueue ---------------------------------------------------------------------------

    async def enqueue(self, planned: Sequence[PlannedRequest], now: datetime) -> None:
        async with self.db.write() as conn:
            await enqueue_in(conn, planned, now)

    # --- claim -----------------------------------------------------------------------------

    @asynccontextmanager
    async def claiming(self, now: datetime, lease_until: datetime) -> AsyncIterator[ClaimSession]:
        async with self.db.write() as conn:
            postgresql = conn.dialect.name == "postgresql"
            yield _SqlClaim(conn, self._claim_statement(postgresql), postgresql, now, lease_until)

    def _claim_statement(self, postgresql: bool) -> Any:
        """The claim, built once: building it costs more than running it on a short queue."""
        if postgresql in self._claims:
            return self._claims[postgresql]
        now = bindparam("c_now", type_=deliveries.c.next_attempt_at.type)
        webhook = bindparam("c_webhook", type_=deliveries.c.webhook_id.type)
        # What this process may take. On PostgreSQL, where workers on several machines share
        # the queue, also no more than leaves the webhook's unfinished requests in all
        # processes within its allowance: live leases (counted after CLAIM_LOCK, so no other
        # claim of it is in progress) less those of this process finished and not recorded
        # yet. Requests finished elsewhere count until recorded: the cap may be under-used for
        # a moment, never exceeded. SQLite serves one machine, usually one process: the count
        # would only cost (a fifth of the requests/s).
        limit: ColumnElement[Any] = bindparam("c_limit", type_=Integer())
        if postgresql:
            held = deliveries.alias("held")
            leased = (
                select(func.count())
                .where(
                    held.c.webhook_id == webhook,
                    held.c.lease_until.is_not(None),
                    held.c.lease_until > now,
                )
                .scalar_subquery()
            )
            limit = func.greatest(0, func.least(limit, bindparam("c_hold") - leased))
        # A later chunk of a burst waits until the chunks before it were sent once.
        earlier = deliveries.alias("earlier")
        earlier_unsent = select(earlier.c.id).where(
            earlier.c.chunk_group == deliveries.c.chunk_group,
            earlier.c.chunk_index < deliveries.c.chunk_index,
            earlier.c.attempts == 0,
        )
        # Per-record order: a request waits while an earlier request of the same webhook that
        # carries an event of one of its records is not finished (delivered or given up).
        mine, other = delivery_records.alias("mine"), delivery_records.alias("other")
        record_busy = (
            select(other.c.delivery_id)
            .select_from(
                mine.join(
                    other,
                    and_(
                        other.c.webhook_id == mine.c.webhook_id,
                        other.c.record_id == mine.c.record_id,
                        other.c.first_seq < mine.c.first_seq,
                    ),
                )
            )
            .where(mine.c.delivery_id == deliveries.c.id)
        )
        due = (
            select(deliveries.c.id)
            .where(
                deliveries.c.status == PENDING,
                deliveries.c.webhook_id == webhook,
                deliveries.c.next_attempt_at <= now,
                or_(deliveries.c.lease_until.is_(None), deliveries.c.lease_until < now),
                or_(deliveries.c.chunk_group.is_(None), ~exists(earlier_unsent)),
                ~exists(record_busy),
            )
            .order_by(deliveries.c.next_attempt_at, deliveries.c.first_seq)
            .limit(limit)
        )
        if postgresql:
            due = due.with_for_update(skip_locked=True)
        claim = (
            update(deliveries)
            .where(deliveries.c.id.in_(due.scalar_subquery()))
            .values(lease_until=bindparam("c_lease", type_=deliveries.c.lease_until.type))
            .returning(
                deliveries.c.id,
                deliveries.c.webhook_id,
                deliveries.c.attempts,
                deliveries.c.chunk_group,
                deliveries.c.chunk_index,
                deliveries.c.replay,
            )
        )
        self._claims[postgresql] = claim
        return claim

    async def pending_webhooks(self) -> set[str]:
        """Every webhook with a pending request (in a read transaction of its own)."""
        async with self.db.read() as conn:
            return await _pending_webhooks(conn)

    # --- record ----------------------------------------------------------------------------

    async def record(
        self, outcomes: Sequence[Outcome], health: HealthChanges, now: datetime
    ) -> None:
        """Write the outcomes, their attempts, and what they change of their webhooks' health,
        in one transaction."""
        if not outcomes:
            return
        async with self.db.write() as conn:
            await record_in(conn, outcomes, health, now)

    async def record_test(
        self,
        *,
        delivery_id: str,
        webhook_id: str,
        space_id: str,
        event_id: str,
        body: str,
        result: SendResult,
        now: datetime,
    ) -> None:
        """Store a test event sent outside the queue, finished, in the webhook's log."""
        ok = succeeded(result.status)
        row: dict[str, Any] = {
            "id": delivery_id,
            "webhook_id": webhook_id,
            "space_id": space_id,
            "status": DELIVERED if ok else FAILED,
            "event_ids": [event_id],
            "event_count": 1,
            "first_seq": 0,
            "attempts": 1,
            "next_attempt_at": now,
            "created": now,
            "delivered_at": datetime.now(UTC) if ok else None,
            "last_status": result.status,
            "last_error": result.error,
        }
        async with self.db.write() as conn:
            await conn.execute(insert(deliveries).values(**row))
            await conn.execute(insert(delivery_bodies).values(delivery_id=delivery_id, body=body))
            await conn.execute(
                insert(delivery_attempts).values(
                    delivery_id=delivery_id,
                    attempt=1,
                    started=result.started,
                    status_code=result.status,
                    latency_ms=result.latency_ms,
                    error=result.error,
                    response_body=result.body,
                )
            )

    # --- release, resend, recover ------------------------------------------------------------

    async def release(self, ids: Sequence[str]) -> None:
        """Give back the leases of requests that were claimed but not finished."""
        if not ids:
            return
        async with self.db.write() as conn:
            await conn.execute(
                update(deliveries).where(deliveries.c.id.in_(list(ids))).values(lease_until=None)
            )

    async def resend(self, ids: Sequence[str], now: datetime) -> None:
        async with self.db.write() as conn:
            await resend_in(conn, ids, now)

    async def failed_between(
        self, space_id: str, webhook_id: str, since: datetime, until: datetime | None
    ) -> list[str]:
        async with self.db.read() as conn:
            return await failed_between_in(conn, space_id, webhook_id, since, until)

    async def recover(
        self, space_id: str, webhook_id: str, since: datetime, until: datetime | None
    ) -> list[str]:
        """Queue again every failed request of the webhook created in the window; their ids."""
        async with self.db.write() as conn:
            ids = await failed_between_in(conn, space_id, webhook_id, since, until)
            await resend_in(conn, ids, datetime.now(UTC))
        return ids

    # --- prune -----------------------------------------------------------------------------

    async def prune(self, cutoff: datetime, routed_up_to: int | None) -> Pruned:
        """Delete delivered requests (with their attempts and bodies) and events older than
        ``cutoff``; events only up to the router's stored cursor. Failed requests are kept
        for recover."""
        db = self.db
        out = Pruned()
        while True:
            async with db.write() as conn:
                ids = [
                    r[0]
                    for r in await conn.execute(
                        select(deliveries.c.id)
                        .where(deliveries.c.status == DELIVERED, deliveries.c.delivered_at < cutoff)
                        .limit(PRUNE_BATCH)
                    )
                ]
                if ids:
                    await conn.execute(
                        delete(delivery_attempts).where(delivery_attempts.c.delivery_id.in_(ids))
                    )
                    await conn.execute(
                        delete(delivery_bodies).where(delivery_bodies.c.delivery_id.in_(ids))
                    )
                    await conn.execute(delete(deliveries).where(deliveries.c.id.in_(ids)))
            out.deliveries += len(ids)
            if len(ids) < PRUNE_BATCH:
                break
            await asyncio.sleep(0)
        while routed_up_to is not None:
            async with db.write() as conn:
                # The newest event stays, however old: on SQLite seq is the rowid, and an
                # empty table would number the next event 1 again, behind every cursor.
                newest = select(func.max(events.c.seq)).scalar_subquery()
                seqs = [
                    r[0]
                    for r in await conn.execute(
                        select(events.c.seq)
                        .where(
                            events.c.occurred < cutoff,
                            events.c.seq <= routed_up_to,
                            events.c.seq < newest,
                        )
                        .order_by(events.c.seq)
                        .limit(PRUNE_BATCH)
                    )
                ]
                if seqs:
                    await conn.execute(delete(events).where(events.c.seq.in_(seqs)))
                    await mark_pruned(conn, max(seqs), cutoff)
            out.events += len(seqs)
            if len(seqs) < PRUNE_BATCH:
                break
            await asyncio.sleep(0)
        if db.dialect == "sqlite":
            # Keep the planner's statistics fresh as tables grow (PostgreSQL's autovacuum does).
            async with db.write() as conn:
                await conn.exec_driver_sql("PRAGMA analysis_limit=1000")
                await conn.exec_driver_sql("PRAGMA optimize")
        return out


class _SqlClaim:
    def __init__(
        self,
        conn: AsyncConnection,
        statement: Any,
        postgresql: bool,
        now: datetime,
        lease_until: datetime,
    ) -> None:
        self.conn = conn
        self.statement = statement
        self.postgresql = postgresql
        self.now = now
        self.lease_until = lease_until
        self.rows: list[_Leased] = []

    async def pending_webhooks(self) -> set[str]:
        """Every webhook with a pending request: one index probe per webhook, not per request
        (a loose index scan, written as a recursive query)."""
        return await _pending_webhooks(self.conn)

    async def claim(self, webhook_id: str, limit: int, hold: int) -> int | None:
        # Claims of one webhook take turns across processes (PostgreSQL), so the live leases
        # this claim counts include every other claim's (see SqlQueue._claim_statement).
        if self.postgresql and not await self.conn.scalar(CLAIM_LOCK, {"w": webhook_id}):
            return None
        params = {
            "c_now": self.now,
            "c_lease": self.lease_until,
            "c_limit": limit,
            "c_webhook": webhook_id,
        }
        if self.postgresql:
            params["c_hold"] = hold
        # (id, webhook_id, attempts, chunk_group, chunk_index, replay), as the statement
        # returns them
        got = [_Leased(*r) for r in await driver_rows(self.conn, self.statement, params)]
        self.rows.extend(got)
        return len(got)

    async def record(self, outcomes: Sequence[Outcome], health: HealthChanges) -> None:
        if outcomes:
            await record_in(self.conn, outcomes, health, self.now)

    async def finish(self, chunk_delay: Callable[[str], float]) -> Claims:
        rows, conn = self.rows, self.conn
        later: list[tuple[str, datetime]] = []
        firsts = [r for r in rows if r.chunk_index == 0 and r.attempts == 0]
        if firsts:
            # Chunk N of a burst is due N x chunk_delay after its chunk 0 is sent (now).
            found = (
                await conn.execute(
                    select(
                        deliveries.c.id, deliveries.c.chunk_group, deliveries.c.chunk_index
                    ).where(
                        deliveries.c.chunk_group.in_([r.chunk_group for r in firsts]),
                        deliveries.c.chunk_index > 0,
                    )
                )
            ).all()
            first_of = {r.chunk_group: r for r in firsts}
            values = []
            for r in found:
                webhook_id = first_of[r.chunk_group].webhook_id
                due = self.now + timedelta(seconds=r.chunk_index * chunk_delay(webhook_id))
                values.append({"b_id": r.id, "b_next": due})
                later.append((webhook_id, due))
            if values:
                await conn.execute(
                    update(deliveries)
                    .where(deliveries.c.id == bindparam("b_id"))
                    .values(next_attempt_at=bindparam("b_next")),
                    values,
                )
        bodies: dict[str, str] = {}
        if rows:
            found_bodies = await driver_rows(conn, _BODIES, {"ids": [r.id for r in rows]})
            bodies = {row[0]: row[1] for row in found_bodies}
        claimed = [
            Claimed(r.id, r.webhook_id, bodies[r.id], r.attempts, bool(r.replay)) for r in rows
        ]
        return Claims(claimed, later)


@dataclass(frozen=True, slots=True)
class _Leased:
    """A row the claim statement returned."""

    id: str
    webhook_id: str
    attempts: int
    chunk_group: str | None
    chunk_index: int | None
    replay: bool


async def _pending_webhooks(conn: AsyncConnection) -> set[str]:
    found = await conn.execute(text(WEBHOOKS_WITH_PENDING))
    return {row[0] for row in found}


async def enqueue_in(
    conn: AsyncConnection, planned: Sequence[PlannedRequest], now: datetime
) -> None:
    """Store planned requests (in the caller's transaction: the router's, with its cursor)."""
    if not planned:
        return
    rows = [
        {
            "id": p.id,
            "webhook_id": p.webhook_id,
            "space_id": p.space_id,
            "status": PENDING,
            "event_ids": p.event_ids,
            "event_count": p.event_count,
            "first_seq": p.first_seq,
            "attempts": 0,
            "created": p.created,
            "chunk_group": p.chunk_group,
            "chunk_index": p.chunk_index,
            "next_attempt_at": now + timedelta(seconds=p.delay),
            "replay": p.replay,
        }
        for p in planned
    ]
    bodies = [{"delivery_id": p.id, "body": p.body} for p in planned]
    records = [
        {
            "delivery_id": p.id,
            "record_id": record_id,
            "webhook_id": p.webhook_id,
            "first_seq": p.first_seq,
        }
        for p in planned
        for record_id in p.record_ids
    ]
    await insert_rows(conn, deliveries, rows)
    await insert_rows(conn, delivery_bodies, bodies)
    await insert_rows(conn, delivery_records, records)
    await notify(conn, REQUESTS_CHANNEL)  # wake the workers of other processes


async def record_in(
    conn: AsyncConnection, outcomes: Sequence[Outcome], health: HealthChanges, now: datetime
) -> None:
    """Write the outcomes of sent requests in the caller's transaction (``SqlQueue.record``)."""
    updates = [
        {
            "b_id": o.claimed.id,
            "b_status": o.status,
            "b_attempts": o.attempt,
            "b_next": o.next_attempt_at,
            "b_delivered": o.delivered_at,
            "b_last_status": o.result.status,
            "b_last_error": o.result.error,
        }
        for o in outcomes
    ]
    attempts = [
        {
            "delivery_id": o.claimed.id,
            "attempt": o.attempt,
            "started": o.result.started,
            "status_code": o.result.status,
            "latency_ms": o.result.latency_ms,
            "error": o.result.error,
            "response_body": o.result.body,
        }
        for o in outcomes
    ]
    await driver_executemany(conn, _OUTCOME, updates)
    await insert_rows(conn, delivery_attempts, attempts)
    finished = [o.claimed.id for o in outcomes if o.status != PENDING]
    if finished:  # their records no longer hold later requests back
        await driver_rows(conn, _FINISHED_RECORDS, {"ids": finished})
        await notify(conn, REQUESTS_CHANNEL)  # in other workers too
    if health.gone:
        await _disable(conn, health.gone, GONE_REASON, now)
    await _track_failures(conn, health, now)


async def resend_in(conn: AsyncConnection, ids: Sequence[str], now: datetime) -> None:
    """Queue these requests again, now, with a fresh retry budget."""
    if not ids:
        return
    await conn.execute(
        update(deliveries)
        .where(deliveries.c.id.in_(list(ids)))
        .values(status=PENDING, attempts=0, next_attempt_at=now, lease_until=None)
    )


async def failed_between_in(
    conn: AsyncConnection,
    space_id: str,
    webhook_id: str,
    since: datetime,
    until: datetime | None,
) -> list[str]:
    """The failed requests of the webhook created in the window, oldest first."""
    d = deliveries.c
    clauses = [d.space_id == space_id, d.webhook_id == webhook_id, d.status == FAILED]
    clauses.append(d.created >= since)
    if until is not None:
        clauses.append(d.created <= until)
    rows = await conn.execute(select(d.id).where(and_(*clauses)).order_by(d.created, d.id))
    return [r[0] for r in rows]


# --- the log's reads ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LogQuery:
    """Which of a webhook's requests the log shows (``delivery.log.parse_log_query``)."""

    statuses: tuple[str, ...]
    since: datetime | None
    until: datetime | None
    limit: int
    after: tuple[datetime, str] | None


async def log_page(
    conn: AsyncConnection, space_id: str, webhook_id: str, q: LogQuery
) -> tuple[list[Any], int, bool]:
    """A page of a webhook's requests, newest first: the rows, the total, whether more follow."""
    d = deliveries.c
    where = [d.space_id == space_id, d.webhook_id == webhook_id]
    if q.statuses:
        where.append(d.status.in_(q.statuses))
    if q.since is not None:
        where.append(d.created >= q.since)
    if q.until is not None:
        where.append(d.created <= q.until)
    page = select(deliveries).where(*where)
    if q.after is not None:
        page = page.where(tuple_(d.created, d.id) < tuple_(*q.after))
    rows = list(await conn.execute(page.order_by(d.created.desc(), d.id.desc()).limit(q.limit + 1)))
    total = (
        await conn.execute(select(func.count()).select_from(deliveries).where(*where))
    ).scalar_one()
    return rows[: q.limit], int(total), len(rows) > q.limit


async def log_entry(
    conn: AsyncConnection, space_id: str, webhook_id: str, delivery_id: str
) -> Any | None:
    """One request of the webhook (None if it has no such request)."""
    return (
        await conn.execute(
            select(deliveries).where(
                deliveries.c.id == delivery_id,
                deliveries.c.webhook_id == webhook_id,
                deliveries.c.space_id == space_id,
            )
        )
    ).first()


async def attempts_of(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, list[Any]]:
    """The attempts of these requests, in the order made (a resend numbers from 1 again)."""
    by_delivery: dict[str, list[Any]] = {i: [] for i in ids}
    if ids:
        found = await conn.execute(
            select(delivery_attempts)
            .where(delivery_attempts.c.delivery_id.in_(list(ids)))
            .order_by(delivery_attempts.c.delivery_id, delivery_attempts.c.id)
        )
        for a in found:
            by_delivery[a.delivery_id].append(a)
    return by_delivery


# --- the dashboard's and the metrics' reads ------------------------------------------------------


async def pending_depth(conn: AsyncConnection) -> tuple[int, datetime | None]:
    """Pending requests, and when the oldest of them was made."""
    count, oldest = (
        await conn.execute(
            select(func.count(), func.min(deliveries.c.created)).where(
                deliveries.c.status == PENDING
            )
        )
    ).one()
    return int(count), oldest


async def status_counts(
    conn: AsyncConnection, space_id: str, webhook_ids: Sequence[str], since: datetime
) -> dict[str, dict[str, int]]:
    """Per webhook, its requests made since ``since`` by their status now."""
    d = deliveries.c
    counts: dict[str, dict[str, int]] = {w: {} for w in webhook_ids}
    if webhook_ids:
        rows = await conn.execute(
            select(d.webhook_id, d.status, func.count())
            .where(d.space_id == space_id, d.webhook_id.in_(list(webhook_ids)), d.created >= since)
            .group_by(d.webhook_id, d.status)
        )
        for webhook_id, status, n in rows:
            counts[webhook_id][status] = int(n)
    return counts


async def latest_request(conn: AsyncConnection, space_id: str, webhook_id: str) -> Any | None:
    """(created, status, last_status, last_error, id) of the webhook's most recent request."""
    d = deliveries.c
    return (
        await conn.execute(
            select(d.created, d.status, d.last_status, d.last_error, d.id)
            .where(d.space_id == space_id, d.webhook_id == webhook_id)
            .order_by(d.created.desc(), d.id.desc())
            .limit(1)
        )
    ).first()


def _minute(conn: AsyncConnection, col: Any) -> Any:
    """``YYYY-MM-DD HH:MM`` of a UTC time, in SQL (SQLite keeps naive UTC text)."""
    if conn.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", col), "YYYY-MM-DD HH24:MI")
    return func.strftime("%Y-%m-%d %H:%M", col)


async def minute_counts(
    conn: AsyncConnection, space_id: str, webhook_ids: Sequence[str], since: datetime
) -> list[tuple[str, str, int]]:
    """Requests created since ``since`` by minute and by their status now."""
    if not webhook_ids:
        return []
    d = deliveries.c
    minute = _minute(conn, d.created).label("minute")
    rows = await conn.execute(
        select(minute, d.status, func.count())
        .where(d.space_id == space_id, d.webhook_id.in_(list(webhook_ids)), d.created >= since)
        .group_by(minute, d.status)
    )
    return [(str(m), str(s), int(n)) for m, s, n in rows]


async def request_body(conn: AsyncConnection, delivery_id: str) -> str | None:
    """The body sent (or to be sent) for a request; the caller has checked whose it is."""
    row = (
        await conn.execute(
            select(delivery_bodies.c.body).where(delivery_bodies.c.delivery_id == delivery_id)
        )
    ).first()
    return None if row is None else str(row[0])


# --- webhook health ----------------------------------------------------------------------------


async def _track_failures(conn: AsyncConnection, health: HealthChanges, now: datetime) -> None:
    """Note when a webhook started failing; disable it after failing for too long."""
    t = table_of(WEBHOOKS)
    cleared = sorted(health.cleared)
    if cleared:
        await conn.execute(
            update(t)
            .where(t.c.id.in_(cleared), t.c.failing_since.is_not(None))
            .values(failing_since=None)
        )
    if not health.failing:
        return
    ids = sorted(health.failing)
    await conn.execute(
        update(t).where(t.c.id.in_(ids), t.c.failing_since.is_(None)).values(failing_since=now)
    )
    limit = failing_limit(now, health.disable_after)
    stale = await conn.execute(
        select(t.c.id).where(t.c.id.in_(ids), t.c.failing_since < limit, t.c.is_active.is_(True))
    )
    worn = {row[0] for row in stale}
    if worn:
        await _disable(conn, worn, worn_reason(health.disable_after), now)


async def _disable(conn: AsyncConnection, ids: set[str], reason: str, now: datetime) -> None:
    t = table_of(WEBHOOKS)
    for webhook_id in sorted(ids):
        log.error("webhook disabled", webhook_id=webhook_id, reason=reason)
    await bump_webhooks_version(conn)
    await conn.execute(
        update(t)
        .where(and_(t.c.id.in_(sorted(ids)), t.c.is_active.is_(True)))
        .values(is_active=False, disabled_reason=reason, modified=now, revision=t.c.revision + 1)
    )
