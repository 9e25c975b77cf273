"""The dispatcher inside ``crmhooks serve``: route, claim, send, record, retry.

It wakes when a write commits (``notify``), not on a timer; a slow poll is kept only as a
fallback for writes made by other processes. Four tasks run:

- routing: events -> deliveries (``delivery.router``);
- claiming: due deliveries of active webhooks get a lease and go to sending, limited in flight
  in total, per space and per webhook, the spaces with work taking turns;
- recording: outcomes are written in batches (one transaction for many requests);
- pruning: what is past the retention age (``delivery.retention``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

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
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from crmhooks.changes.outbox import REQUESTS_CHANNEL, WEBHOOK_INPUTS, notify
from crmhooks.changes.writer import Change, WriteContext
from crmhooks.delivery.fairness import space_share, take_turns
from crmhooks.delivery.notifications import Listener
from crmhooks.delivery.retention import prune
from crmhooks.delivery.retry import Verdict, decide, parse_schedule, retry_after_seconds
from crmhooks.delivery.router import Router
from crmhooks.delivery.sender import Outcome, Sender
from crmhooks.metrics import DELIVERY_LATENCY, REQUESTS_SENT
from crmhooks.netguard import Guard, parse_allowed
from crmhooks.schema.registry import WEBHOOKS
from crmhooks.settings import Settings
from crmhooks.store.engine import Database
from crmhooks.store.records import table_of
from crmhooks.store.tables import (
    deliveries,
    delivery_attempts,
    delivery_bodies,
    delivery_records,
)
from crmhooks.store.webhook_version import bump_webhooks_version

log = structlog.get_logger("crmhooks.dispatcher")


@dataclass(frozen=True)
class DispatchSettings:
    schedule: Sequence[float]
    max_in_flight: int = 256
    max_in_flight_per_webhook: int = 16
    # Of max_in_flight, what one space's webhooks may hold together (``fairness.space_share``).
    max_in_flight_per_space: int = space_share(256)
    lease_seconds: float = 60.0
    poll_seconds: float = 1.0
    claim_batch: int = 256
    disable_after: float = 5 * 86400  # failing continuously this long disables a webhook
    retention: float = 30 * 86400
    prune_every: float = 600.0
    # While other requests are in flight, outcomes are gathered this long (or up to
    # record_batch of them) before they are written: one transaction for many.
    record_wait: float = 0.02
    record_batch: int = 256


# Requests in flight for a webhook that has not answered well yet: fifty receivers that hang
# from the start hold 100 of the 256 in flight, not all of them.
UNPROVEN_ALLOWANCE = 2

# Claims of one webhook take turns across processes (PostgreSQL; held to the commit). Tried,
# not waited for: a claim asks webhooks in turns of spaces, not in one order every process
# shares, and waiting in different orders could deadlock. A webhook another process is
# claiming for right now is asked again a moment later. Two keys: a namespace of our own and
# the webhook's hash.
CLAIM_LOCK = text("SELECT pg_try_advisory_xact_lock(1668443491, hashtext(:w))")  # "crmc"

# How soon a claim asks again for webhooks whose claim lock another process held.
CLAIM_LOCK_RETRY = 0.01

# The webhooks with a pending request, one index probe each (status, webhook_id, ...).
WEBHOOKS_WITH_PENDING = """
WITH RECURSIVE w(id) AS (
    SELECT (SELECT webhook_id FROM deliveries WHERE status = 'pending'
            ORDER BY webhook_id LIMIT 1)
    UNION ALL
    SELECT (SELECT webhook_id FROM deliveries WHERE status = 'pending' AND webhook_id > w.id
            ORDER BY webhook_id LIMIT 1)
    FROM w WHERE w.id IS NOT NULL
)
SELECT id FROM w WHERE id IS NOT NULL
"""


@dataclass(frozen=True)
class Claimed:
    id: str
    webhook_id: str
    body: str
    attempts: int


@dataclass(frozen=True)
class Result:
    claimed: Claimed
    outcome: Outcome


class Dispatcher:
    def __init__(self, db: Database, router: Router, sender: Sender, cfg: DispatchSettings) -> None:
        self.db = db
        self.router = router
        self.sender = sender
        self.cfg = cfg
        self._route_wake = asyncio.Event()
        self._claim_wake = asyncio.Event()
        self.listener: Listener | None = None
        if db.dialect == "postgresql":
            self.listener = Listener(
                db.url, on_events=self._route_wake.set, on_requests=self._rescan
            )
        self._results: list[Result] = []
        # Of those, per webhook: finished here, their leases still in the database.
        self._unrecorded: Counter[str] = Counter()
        self._results_ready = asyncio.Event()
        self._total = asyncio.Semaphore(cfg.max_in_flight)
        self._per_webhook: dict[str, asyncio.Semaphore] = {}
        self._in_flight: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._sends: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._beat = time.monotonic()
        self._clean: set[str] = set()  # webhooks known not to be failing
        self._busy: Counter[str] = Counter()  # requests in flight per webhook
        self._last_ok: dict[str, bool] = {}  # webhook -> whether its last request succeeded
        self._rand = random.Random()
        self._claims: dict[bool, Any] = {}  # the claim statement, for PostgreSQL or not
        # Webhooks that may have requests due now: found by a scan of the queue (at most once
        # a poll interval), and told by the router (new requests) and by outcomes (a finished
        # request may let the next one of its records go). Each claim asks only these.
        self._work: set[str] = set()
        self._due_later: dict[str, datetime] = {}  # retries and later chunks, earliest first
        self._scanned = -math.inf
        self._turn = 0  # claims so far: which space, and which of its webhooks, is asked first

    @property
    def alive(self) -> bool:
        """Its loops are running and went round recently."""
        running = bool(self._tasks) and not any(t.done() for t in self._tasks)
        return running and time.monotonic() - self._beat < 5 * self.cfg.poll_seconds + 30

    def notify(self, ctx: WriteContext, changes: Sequence[Change]) -> None:
        """A write committed: route now, if a webhook can care.

        Writes in a space without webhooks wake nothing: their events are passed over by the
        next routing step, at the latest a poll interval later.
        """
        webhooks_changed = any(c.entity.name in WEBHOOK_INPUTS for c in changes)
        if not webhooks_changed and ctx.space_id not in self.router.index.spaces:
            return
        self._route_wake.set()

    def _rescan(self) -> None:
        """Another process stored or finished requests: look for webhooks with work again."""
        self._scanned = -math.inf
        self._claim_wake.set()

    def requeued(self) -> None:
        """Deliveries were put back in the queue: claim now."""
        self._claim_wake.set()

    async def start(self) -> None:
        if self.listener is not None:
            self.listener.start()
        self._tasks = [
            asyncio.create_task(self._loop(self._route_once, self._route_wake), name="route"),
            asyncio.create_task(self._loop(self._claim_once, self._claim_wake), name="claim"),
            asyncio.create_task(self._record_loop(), name="record"),
            asyncio.create_task(self._prune_loop(), name="prune"),
        ]

    async def stop(self, grace: float = 10.0) -> None:
        self._stopping = True
        if self.listener is not None:
            await self.listener.stop()
        for t in self._tasks:
            if t.get_name() != "record":  # the record loop ends by itself, after a last flush
                t.cancel()
        if self._sends:
            await asyncio.wait(self._sends, timeout=grace)
        for t in self._sends:
            t.cancel()
        self._results_ready.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._flush()
        await self._release(sorted(self._in_flight))
        await self.sender.close()
        await self.router.close()

    async def _release(self, ids: list[str]) -> None:
        """Give back the leases of requests that were claimed but not finished."""
        if not ids:
            return
        async with self.db.write() as conn:
            await conn.execute(
                update(deliveries).where(deliveries.c.id.in_(ids)).values(lease_until=None)
            )

    async def _loop(self, once: Any, wake: asyncio.Event) -> None:
        while not self._stopping:
            self._beat = time.monotonic()
            try:
                more = await once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dispatcher step failed")
                more = False
                await asyncio.sleep(self.cfg.poll_seconds)
            if more:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.cfg.poll_seconds)
            wake.clear()

    async def _route_once(self) -> bool:
        made = await self.router.step()
        if made:
            self._claim_wake.set()
        # Go round again at once only for a backlog; otherwise the next commit wakes it.
        return made > 0 and self.router.backlog

    async def _claim_once(self) -> bool:
        """Lease requests due now, each webhook asked for no more than its allowance and its
        space's share.

        One statement per webhook with work, reading only that webhook's queue in order: the
        cost follows what is claimed, not the backlog, and a webhook at its allowance (a
        hanging receiver) or in a space at its share is not even asked. The spaces with work
        take turns (``fairness.take_turns``): one space's hundred webhooks do not go before
        another space's one.
        """
        room = self.cfg.max_in_flight - len(self._in_flight)
        if room <= 0:
            return False
        now = datetime.now(UTC)
        self._work.update(self.router.take_touched())
        for w, at in list(self._due_later.items()):
            if at <= now:
                self._work.add(w)
                del self._due_later[w]
        want = min(room, self.cfg.claim_batch)
        rows: list[Any] = []
        async with self.db.write() as conn:
            if time.monotonic() - self._scanned >= self.cfg.poll_seconds:
                self._work.update(await self._webhooks_with_requests(conn))
                self._scanned = time.monotonic()
            postgresql = conn.dialect.name == "postgresql"
            claim = self._claim_statement(postgresql)
            lease = now + timedelta(seconds=self.cfg.lease_seconds)
            index = self.router.index.by_id
            gone = {w for w in self._work if w not in index or not index[w].is_active}
            self._work -= gone
            space_of = {w: index[w].space_id for w in self._work}
            held = self._held_by_space()
            self._turn += 1
            contended = False
            for w in take_turns(self._work, space_of, self._turn):
                if len(rows) >= want:
                    break
                space = space_of[w]
                n = min(
                    self._claimable(w) - self._busy[w],
                    self.cfg.max_in_flight_per_space - held[space],
                    want - len(rows),
                )
                if n <= 0:  # asked again when its webhook or its space has room
                    continue
                # Claims of one webhook take turns across processes (PostgreSQL), so the live
                # leases this claim counts include every other claim's (see _claim_statement).
                if postgresql and not await conn.scalar(CLAIM_LOCK, {"w": w}):
                    contended = True  # another process is claiming for it: a moment later
                    continue
                params = {
                    "c_now": now,
                    "c_lease": lease,
                    "c_limit": n,
                    # Leased in the database: the webhook's requests unfinished in every
                    # process, and those finished here whose outcome is not recorded yet.
                    "c_hold": self._allowance(w) + self._unrecorded[w],
                    "c_webhook": w,
                }
                got = (await conn.execute(claim, params)).all()
                rows.extend(got)
                held[space] += len(got)
                if len(got) < n:  # nothing more due now: asked again when that changes
                    self._work.discard(w)
            firsts = [r for r in rows if r.chunk_index == 0 and r.attempts == 0]
            if firsts:
                await self._space_out(conn, firsts, now)
            bodies = await self._bodies(conn, [r.id for r in rows])
        for row in rows:
            claimed = Claimed(row.id, row.webhook_id, bodies[row.id], row.attempts)
            self._in_flight.add(claimed.id)
            self._busy[claimed.webhook_id] += 1
            task = asyncio.create_task(self._send(claimed))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)
        if contended:
            asyncio.get_running_loop().call_later(CLAIM_LOCK_RETRY, self._claim_wake.set)
        return len(rows) >= want and room > len(rows)

    def _held_by_space(self) -> Counter[str]:
        """Requests each space holds here, sending or claimed to send next (from the per-webhook
        counts, so that there is one count to keep right)."""
        held: Counter[str] = Counter()
        for w, n in self._busy.items():
            sub = self.router.index.by_id.get(w)
            if sub is not None:
                held[sub.space_id] += n
        return held

    async def _bodies(self, conn: AsyncConnection, ids: list[str]) -> dict[str, str]:
        if not ids:
            return {}
        t = delivery_bodies
        found = await conn.execute(
            select(t.c.delivery_id, t.c.body).where(t.c.delivery_id.in_(ids))
        )
        return {row[0]: row[1] for row in found}

    async def _webhooks_with_requests(self, conn: AsyncConnection) -> set[str]:
        """Every webhook with a pending request: one index probe per webhook, not per request
        (a loose index scan, written as a recursive query)."""
        found = await conn.execute(text(WEBHOOKS_WITH_PENDING))
        return {row[0] for row in found}

    def _later(self, webhook_id: str, at: datetime) -> None:
        known = self._due_later.get(webhook_id)
        if known is None or at < known:
            self._due_later[webhook_id] = at

    def _claimable(self, webhook_id: str) -> int:
        """Requests a webhook may hold, sending or waiting to send: twice its allowance once
        its receiver answers well, so that the next requests are ready when one finishes."""
        allowance = self._allowance(webhook_id)
        return 2 * allowance if self._last_ok.get(webhook_id) else allowance

    def _allowance(self, webhook_id: str) -> int:
        """Requests a webhook may have in flight: one while its receiver is failing, a few until
        it has answered well once (slow start), the full allowance after, so that hanging or
        failing receivers cannot take the room healthy ones need."""
        ok = self._last_ok.get(webhook_id)
        if ok is False:
            return 1
        if ok:
            return self.cfg.max_in_flight_per_webhook
        return min(UNPROVEN_ALLOWANCE, self.cfg.max_in_flight_per_webhook)

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
                deliveries.c.status == "pending",
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
            )
        )
        self._claims[postgresql] = claim
        return claim

    async def _space_out(self, conn: AsyncConnection, firsts: Sequence[Any], now: datetime) -> None:
        """Chunk N of a burst is due N x chunk_delay after its chunk 0 is sent (now)."""
        later = (
            await conn.execute(
                select(deliveries.c.id, deliveries.c.chunk_group, deliveries.c.chunk_index).where(
                    deliveries.c.chunk_group.in_([r.chunk_group for r in firsts]),
                    deliveries.c.chunk_index > 0,
                )
            )
        ).all()
        first_of = {r.chunk_group: r for r in firsts}
        values = []
        for r in later:
            webhook_id = first_of[r.chunk_group].webhook_id
            delay = getattr(self.router.index.by_id.get(webhook_id), "chunk_delay", 0.0)
            due = now + timedelta(seconds=r.chunk_index * delay)
            values.append({"b_id": r.id, "b_next": due})
            self._later(webhook_id, due)
        if values:
            await conn.execute(
                update(deliveries)
                .where(deliveries.c.id == bindparam("b_id"))
                .values(next_attempt_at=bindparam("b_next")),
                values,
            )

    def _webhook_slot(self, webhook_id: str) -> asyncio.Semaphore:
        slot = self._per_webhook.get(webhook_id)
        if slot is None:
            slot = self._per_webhook[webhook_id] = asyncio.Semaphore(
                self.cfg.max_in_flight_per_webhook
            )
        return slot

    async def _send(self, claimed: Claimed) -> None:
        sub = self.router.index.by_id.get(claimed.webhook_id)
        if sub is None:
            outcome = Outcome(None, 0.0, "webhook is gone", None, None, datetime.now(UTC))
        else:
            # Cancelled at shutdown: the id stays in _in_flight and its lease is released.
            async with self._total, self._webhook_slot(claimed.webhook_id):
                try:
                    outcome = await self.sender.send(sub, claimed.id, claimed.body.encode())
                except Exception as e:  # a bug must not strand the request: record it
                    log.exception("sending failed", delivery_id=claimed.id)
                    outcome = Outcome(
                        None, 0.0, f"internal error: {e}", None, None, datetime.now(UTC)
                    )
        self._results.append(Result(claimed, outcome))
        self._unrecorded[claimed.webhook_id] += 1
        self._results_ready.set()
        self._in_flight.discard(claimed.id)
        self._busy[claimed.webhook_id] -= 1
        if self._busy[claimed.webhook_id] <= 0:
            del self._busy[claimed.webhook_id]
        self._last_ok[claimed.webhook_id] = (
            outcome.status is not None and 200 <= outcome.status < 300
        )
        self._work.add(claimed.webhook_id)  # its room, and the records it held, are free
        if self._busy[claimed.webhook_id] <= self._claimable(claimed.webhook_id) // 2:
            # Refill without waiting for the outcomes to be recorded, half of what it may hold
            # at a time: one claim per several requests, and the webhook's pipe never runs dry.
            self._claim_wake.set()

    async def _prune_loop(self) -> None:
        """Every ``prune_every`` seconds, drop what is older than the retention age."""
        while not self._stopping:
            await asyncio.sleep(self.cfg.prune_every)
            try:
                cutoff = datetime.now(UTC) - timedelta(seconds=self.cfg.retention)
                pruned = await prune(self.db, cutoff, self.router.stored_cursor)
                if pruned.deliveries or pruned.events:
                    log.info("pruned", deliveries=pruned.deliveries, events=pruned.events)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("pruning failed")

    async def _record_loop(self) -> None:
        while True:
            await self._results_ready.wait()
            if (
                self._in_flight
                and not self._stopping
                and len(self._results) < self.cfg.record_batch
            ):
                await asyncio.sleep(self.cfg.record_wait)  # more outcomes are on their way
            self._results_ready.clear()
            try:
                await self._flush()
            except Exception:
                log.exception("recording delivery outcomes failed")
                await asyncio.sleep(self.cfg.poll_seconds)
            if self._stopping:
                return
            self._claim_wake.set()

    async def _flush(self) -> None:
        results, self._results = self._results, []
        # No longer counted as finished from here on, while their leases may still be in the
        # database until the commit: claims meanwhile err on the side of fewer (see _claim_once).
        self._unrecorded.clear()
        if not results:
            return
        now = datetime.now(UTC)
        updates: list[dict[str, Any]] = []
        attempts: list[dict[str, Any]] = []
        disable: set[str] = set()
        succeeded: set[str] = set()
        failing: set[str] = set()
        for r in results:
            n = r.claimed.attempts + 1
            o = r.outcome
            decision = decide(
                n,
                o.status,
                schedule=self.cfg.schedule,
                retry_after=retry_after_seconds(o.retry_after),
                rand=self._rand,
            )
            status = {
                Verdict.DELIVERED: "delivered",
                Verdict.RETRY: "pending",
                Verdict.GIVE_UP: "failed",
                Verdict.DISABLE: "failed",
            }[decision.verdict]
            if decision.verdict is Verdict.DISABLE:
                disable.add(r.claimed.webhook_id)
            elif decision.verdict is Verdict.DELIVERED:
                succeeded.add(r.claimed.webhook_id)
            else:
                failing.add(r.claimed.webhook_id)
            REQUESTS_SENT.labels(decision.verdict.value).inc()
            if o.status is not None:
                DELIVERY_LATENCY.observe(o.latency_ms / 1000)
            if status == "pending":
                self._later(r.claimed.webhook_id, now + timedelta(seconds=decision.delay))
            updates.append(
                {
                    "b_id": r.claimed.id,
                    "b_status": status,
                    "b_attempts": n,
                    "b_next": now + timedelta(seconds=decision.delay),
                    "b_delivered": now if status == "delivered" else None,
                    "b_last_status": o.status,
                    "b_last_error": o.error,
                }
            )
            attempts.append(
                {
                    "delivery_id": r.claimed.id,
                    "attempt": n,
                    "started": o.started,
                    "status_code": o.status,
                    "latency_ms": o.latency_ms,
                    "error": o.error,
                    "response_body": o.body,
                }
            )
        async with self.db.write() as conn:
            await conn.execute(
                update(deliveries)
                .where(deliveries.c.id == bindparam("b_id"))
                .values(
                    status=bindparam("b_status"),
                    attempts=bindparam("b_attempts"),
                    next_attempt_at=bindparam("b_next"),
                    delivered_at=bindparam("b_delivered"),
                    last_status=bindparam("b_last_status"),
                    last_error=bindparam("b_last_error"),
                    lease_until=None,
                ),
                updates,
            )
            await conn.execute(insert(delivery_attempts), attempts)
            finished = [u["b_id"] for u in updates if u["b_status"] != "pending"]
            if finished:  # their records no longer hold later requests back
                await conn.execute(
                    delete(delivery_records).where(delivery_records.c.delivery_id.in_(finished))
                )
                await notify(conn, REQUESTS_CHANNEL)  # in other workers too
            if disable:
                await self._disable(conn, disable, "the receiver answered 410 Gone", now)
            await self._track_failures(conn, succeeded, failing - succeeded, now)
        # Committed: the next requests of these webhooks (held back by records these carried)
        # may go now.
        self._work.update(r.claimed.webhook_id for r in results)
        for r, u in zip(results, updates, strict=True):
            _log_outcome(r, u)

    async def _track_failures(
        self, conn: AsyncConnection, succeeded: set[str], failing: set[str], now: datetime
    ) -> None:
        """Note when a webhook started failing; disable it after failing for too long."""
        t = table_of(WEBHOOKS)
        cleared = sorted(succeeded - self._clean)
        if cleared:
            await conn.execute(
                update(t)
                .where(t.c.id.in_(cleared), t.c.failing_since.is_not(None))
                .values(failing_since=None)
            )
            self._clean.update(cleared)
        if not failing:
            return
        self._clean.difference_update(failing)
        ids = sorted(failing)
        await conn.execute(
            update(t).where(t.c.id.in_(ids), t.c.failing_since.is_(None)).values(failing_since=now)
        )
        limit = now - timedelta(seconds=self.cfg.disable_after)
        stale = await conn.execute(
            select(t.c.id).where(
                t.c.id.in_(ids), t.c.failing_since < limit, t.c.is_active.is_(True)
            )
        )
        worn = {row[0] for row in stale}
        if worn:
            days = self.cfg.disable_after / 86400
            reason = f"every request failed for {days:g} days"
            await self._disable(conn, worn, reason, now)

    async def _disable(
        self, conn: AsyncConnection, ids: set[str], reason: str, now: datetime
    ) -> None:
        t = table_of(WEBHOOKS)
        for webhook_id in sorted(ids):
            log.error("webhook disabled", webhook_id=webhook_id, reason=reason)
        await bump_webhooks_version(conn)
        await conn.execute(
            update(t)
            .where(and_(t.c.id.in_(sorted(ids)), t.c.is_active.is_(True)))
            .values(
                is_active=False, disabled_reason=reason, modified=now, revision=t.c.revision + 1
            )
        )


def _log_outcome(result: Result, update: dict[str, Any]) -> None:
    """One structured line per request sent: a failure as a warning, a success at debug."""
    o = result.outcome
    fields: dict[str, Any] = {
        "webhook_id": result.claimed.webhook_id,
        "delivery_id": result.claimed.id,
        "attempt": update["b_attempts"],
        "status_code": o.status,
        "latency_ms": round(o.latency_ms, 1),
    }
    if update["b_status"] == "delivered":
        log.debug("delivered", **fields)
    elif update["b_status"] == "pending":
        log.warning(
            "delivery failed, will retry", error=o.error, next_attempt_at=update["b_next"], **fields
        )
    else:
        log.error("delivery failed, given up", error=o.error, **fields)


def build_dispatcher(db: Database, settings: Settings) -> Dispatcher:
    """The dispatcher with its router and sender, configured from the settings."""
    guard = Guard(parse_allowed(settings.allowed_targets))
    sender = Sender(
        guard,
        connect_timeout=settings.connect_timeout,
        total_timeout=settings.request_timeout,
        pool_size=settings.max_in_flight,
    )
    base = (settings.public_url or "http://127.0.0.1:8000").rstrip("/")
    cfg = DispatchSettings(
        schedule=parse_schedule(settings.retry_schedule),
        max_in_flight=settings.max_in_flight,
        max_in_flight_per_webhook=settings.max_in_flight_per_webhook,
        max_in_flight_per_space=space_share(
            settings.max_in_flight, settings.max_in_flight_per_space
        ),
        lease_seconds=settings.lease_seconds,
        disable_after=settings.disable_after_seconds,
        retention=settings.retention_seconds,
        prune_every=settings.prune_every_seconds,
    )
    return Dispatcher(db, Router(db, base), sender, cfg)
