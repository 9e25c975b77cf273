"""The delivery queue in memory: the same interface as ``queue.SqlQueue`` and the same rules
(claim order, leases, chunks of a burst in turn, per-record order, retries, health), without a
database, so that the dispatcher's flow control is tested in milliseconds (the model is
procrastinate's ``InMemoryConnector``).

``shared=True`` behaves as PostgreSQL's claim does (several processes share the queue: a claim
also leaves a webhook's live leases within what it may hold); the default as SQLite's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from crmhooks.delivery.health import GONE_REASON, failing_too_long, worn_reason
from crmhooks.delivery.model import Claimed, DeliveryStatus, Outcome, PlannedRequest, SendResult
from crmhooks.delivery.queue import Claims, ClaimSession, HealthChanges, Pruned


@dataclass
class StoredRequest:
    """A row of ``deliveries`` with its body and the records it holds."""

    id: str
    webhook_id: str
    space_id: str
    body: str
    event_ids: list[str]
    first_seq: int
    created: datetime
    next_attempt_at: datetime
    chunk_group: str | None
    chunk_index: int | None
    records: list[str]  # its rows of delivery_records: emptied when it is finished
    replay: bool = False
    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: int = 0
    lease_until: datetime | None = None
    delivered_at: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None
    log: list[SendResult] = field(default_factory=list)  # its attempts, in order


class MemoryQueue:
    def __init__(self, *, shared: bool = False) -> None:
        self.shared = shared
        self.requests: dict[str, StoredRequest] = {}
        self.failing_since: dict[str, datetime] = {}  # webhook -> since when
        self.disabled: dict[str, str] = {}  # webhook -> reason
        self.recorded = 0  # record() calls that wrote something (alone or in a claim)
        self.claims = 0  # claim transactions

    # --- what tests look at ---------------------------------------------------------------

    def of(self, webhook_id: str) -> list[StoredRequest]:
        """The webhook's requests in queue order."""
        found = [r for r in self.requests.values() if r.webhook_id == webhook_id]
        return sorted(found, key=lambda r: (r.first_seq, r.created))

    def leased(self, webhook_id: str, now: datetime) -> int:
        return sum(
            1
            for r in self.requests.values()
            if r.webhook_id == webhook_id and r.lease_until is not None and r.lease_until > now
        )

    # --- the queue ---------------------------------------------------------------------------

    async def enqueue(self, planned: Sequence[PlannedRequest], now: datetime) -> None:
        for p in planned:
            self.requests[p.id] = StoredRequest(
                id=p.id,
                webhook_id=p.webhook_id,
                space_id=p.space_id,
                body=p.body,
                event_ids=list(p.event_ids),
                first_seq=p.first_seq,
                created=p.created,
                next_attempt_at=now + timedelta(seconds=p.delay),
                chunk_group=p.chunk_group,
                chunk_index=p.chunk_index,
                records=list(p.record_ids),
                replay=p.replay,
            )

    @asynccontextmanager
    async def claiming(self, now: datetime, lease_until: datetime) -> AsyncIterator[ClaimSession]:
        self.claims += 1
        yield _MemoryClaim(self, now, lease_until)

    async def record(
        self, outcomes: Sequence[Outcome], health: HealthChanges, now: datetime
    ) -> None:
        if not outcomes:
            return
        self.recorded += 1
        for o in outcomes:
            r = self.requests[o.claimed.id]
            r.status = o.status
            r.attempts = o.attempt
            r.next_attempt_at = o.next_attempt_at
            r.delivered_at = o.delivered_at
            r.last_status = o.result.status
            r.last_error = o.result.error
            r.lease_until = None
            r.log.append(o.result)
            if o.status != DeliveryStatus.PENDING:
                r.records = []
        for w in health.gone:
            self.disabled.setdefault(w, GONE_REASON)
        for w in health.cleared:
            self.failing_since.pop(w, None)
        for w in health.failing:
            since = self.failing_since.setdefault(w, now)
            if w not in self.disabled and failing_too_long(since, now, health.disable_after):
                self.disabled[w] = worn_reason(health.disable_after)

    async def release(self, ids: Sequence[str]) -> None:
        for i in ids:
            self.requests[i].lease_until = None

    async def resend(self, ids: Sequence[str], now: datetime) -> None:
        for i in ids:
            r = self.requests[i]
            r.status, r.attempts, r.next_attempt_at, r.lease_until = (
                DeliveryStatus.PENDING,
                0,
                now,
                None,
            )

    async def failed_between(
        self, space_id: str, webhook_id: str, since: datetime, until: datetime | None
    ) -> list[str]:
        found = [
            r
            for r in self.requests.values()
            if r.space_id == space_id
            and r.webhook_id == webhook_id
            and r.status == DeliveryStatus.FAILED
            and r.created >= since
            and (until is None or r.created <= until)
        ]
        return [r.id for r in sorted(found, key=lambda r: (r.created, r.id))]

    async def prune(self, cutoff: datetime, routed_up_to: int | None) -> Pruned:
        gone = [
            r.id
            for r in self.requests.values()
            if r.status == DeliveryStatus.DELIVERED
            and r.delivered_at is not None
            and r.delivered_at < cutoff
        ]
        for i in gone:
            del self.requests[i]
        return Pruned(deliveries=len(gone))

    # --- the claim's rules (``SqlQueue._claim_statement``) --------------------------------------

    def _due(self, r: StoredRequest, now: datetime) -> bool:
        if r.status != DeliveryStatus.PENDING or r.next_attempt_at > now:
            return False
        if r.lease_until is not None and r.lease_until >= now:
            return False
        if r.chunk_group is not None and any(
            o.chunk_group == r.chunk_group
            and o.chunk_index is not None
            and r.chunk_index is not None
            and o.chunk_index < r.chunk_index
            and o.attempts == 0
            for o in self.requests.values()
        ):
            return False  # a later chunk waits until the ones before it were sent once
        mine = set(r.records)
        return not any(
            o.webhook_id == r.webhook_id and o.first_seq < r.first_seq and mine & set(o.records)
            for o in self.requests.values()
        )  # per-record order


class _MemoryClaim:
    def __init__(self, queue: MemoryQueue, now: datetime, lease_until: datetime) -> None:
        self.queue = queue
        self.now = now
        self.lease_until = lease_until
        self.taken: list[StoredRequest] = []

    async def pending_webhooks(self) -> set[str]:
        return {
            r.webhook_id for r in self.queue.requests.values() if r.status == DeliveryStatus.PENDING
        }

    async def claim(self, webhook_id: str, limit: int, hold: int) -> int | None:
        q = self.queue
        if q.shared:
            limit = max(0, min(limit, hold - q.leased(webhook_id, self.now)))
        due = [r for r in q.requests.values() if r.webhook_id == webhook_id and q._due(r, self.now)]
        due.sort(key=lambda r: (r.next_attempt_at, r.first_seq))
        got = due[:limit]
        for r in got:
            r.lease_until = self.lease_until
        self.taken.extend(got)
        return len(got)

    async def record(self, outcomes: Sequence[Outcome], health: HealthChanges) -> None:
        await self.queue.record(outcomes, health, self.now)

    async def finish(self, chunk_delay: Callable[[str], float]) -> Claims:
        later: list[tuple[str, datetime]] = []
        firsts = {
            r.chunk_group: r
            for r in self.taken
            if r.chunk_index == 0 and r.attempts == 0 and r.chunk_group is not None
        }
        for r in self.queue.requests.values():
            first = firsts.get(r.chunk_group) if r.chunk_group is not None else None
            if first is None or r.chunk_index is None or r.chunk_index <= 0:
                continue
            due = self.now + timedelta(seconds=r.chunk_index * chunk_delay(first.webhook_id))
            r.next_attempt_at = due
            later.append((first.webhook_id, due))
        claimed = [Claimed(r.id, r.webhook_id, r.body, r.attempts, r.replay) for r in self.taken]
        return Claims(claimed, later)


def delivered(queue: MemoryQueue, webhook_id: str) -> int:
    """How many of the webhook's requests were delivered."""
    return sum(1 for r in queue.of(webhook_id) if r.status == DeliveryStatus.DELIVERED)
