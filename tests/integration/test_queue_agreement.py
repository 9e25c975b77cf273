"""One scenario, two queues: what ``SqlQueue`` claims (SQLite, and PostgreSQL when configured)
is what ``MemoryQueue`` claims, step by step, so that the dispatcher's unit tests on the
in-memory queue say something about the real one."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from crmhooks.delivery.memory import MemoryQueue
from crmhooks.delivery.model import (
    Claimed,
    DeliveryStatus,
    Outcome,
    PlannedRequest,
    SendResult,
)
from crmhooks.delivery.queue import Claims, DeliveryQueue, HealthChanges, SqlQueue
from crmhooks.store.engine import open_database

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
A, B = str(uuid.UUID(int=1)), str(uuid.UUID(int=2))
RECORD = str(uuid.UUID(int=100))
BURST = str(uuid.UUID(int=200))


def _ids(n: int) -> list[str]:
    return [str(uuid.UUID(int=1000 + i)) for i in range(n)]


def _planned() -> list[PlannedRequest]:
    ids = _ids(8)
    out = []
    # A: three requests of one record (in order), two of other records.
    records = [RECORD, RECORD, str(uuid.uuid4()), RECORD, str(uuid.uuid4())]
    for i, record in enumerate(records):
        out.append(
            PlannedRequest(
                ids[i], A, "s", f'["a{i}"]', [f"e{i}"], i + 1, T0, 0.0, None, None, [record]
            )
        )
    # B: one burst in three chunks (chunk_delay 10 s).
    for n in range(3):
        i = 5 + n
        out.append(
            PlannedRequest(
                ids[i], B, "s", f'["b{n}"]', [f"e{i}"], i + 1, T0, 10.0 * n, BURST, n, [f"r{i}"]
            )
        )
    return out


def _delay(webhook_id: str) -> float:
    return 10.0 if webhook_id == B else 0.0


async def _claim(queue: DeliveryQueue, now: datetime, asks: list[tuple[str, int]]) -> Claims:
    async with queue.claiming(now, now + timedelta(seconds=60)) as c:
        for webhook_id, limit in asks:
            await c.claim(webhook_id, limit, 100)
        return await c.finish(_delay)


async def _record(
    queue: DeliveryQueue, claimed: list[Claimed], status_of: dict[str, int], now: datetime
) -> None:
    outcomes = []
    for c in claimed:
        code = status_of.get(c.id, 200)
        ok = 200 <= code < 300
        status = DeliveryStatus.DELIVERED if ok else DeliveryStatus.PENDING
        result = SendResult(code, 1.0, None if ok else "no", "", None, now)
        outcomes.append(
            Outcome(
                c, result, status, c.attempts + 1, now + timedelta(seconds=5), now if ok else None
            )
        )
    await queue.record(outcomes, HealthChanges(), now)


async def _scenario(queue: DeliveryQueue) -> list[object]:
    seen: list[object] = []

    def note(claims: Claims) -> list[Claimed]:
        seen.append(sorted((c.id, c.webhook_id, c.body, c.attempts) for c in claims.claimed))
        seen.append(sorted((w, at) for w, at in claims.later))
        return claims.claimed

    await queue.enqueue(_planned(), T0)
    ids = _ids(8)
    got = note(await _claim(queue, T0, [(A, 10), (B, 10)]))
    # Nothing more is due while those are leased.
    note(await _claim(queue, T0, [(A, 10), (B, 10)]))
    # The first of A's record fails (retry in 5 s); the rest succeed.
    await _record(queue, got, {ids[0]: 500}, T0)
    t1 = T0 + timedelta(seconds=1)
    note(await _claim(queue, t1, [(A, 10), (B, 10)]))  # A's record still held back
    t2 = T0 + timedelta(seconds=6)
    got = note(await _claim(queue, t2, [(A, 1), (B, 10)]))
    await _record(queue, got, {}, t2)
    t3 = T0 + timedelta(seconds=11)
    got = note(await _claim(queue, t3, [(A, 10), (B, 10)]))
    # Released, not sent: claimed again at once.
    await queue.release([c.id for c in got])
    got = note(await _claim(queue, t3, [(A, 10), (B, 10)]))
    await _record(queue, got, {c.id: 503 for c in got}, t3)
    seen.append(await queue.failed_between("s", A, T0, None))
    await queue.resend([ids[1]], t3)
    note(await _claim(queue, t3, [(A, 10), (B, 10)]))
    pruned = await queue.prune(T0 + timedelta(days=1), None)
    seen.append(pruned.deliveries)
    return seen


async def test_the_sql_queue_and_the_memory_queue_claim_alike(db_url: str) -> None:
    db = open_database(db_url)
    try:
        in_sql = await _scenario(SqlQueue(db))
    finally:
        await db.dispose()
    in_memory = await _scenario(MemoryQueue(shared=db_url.startswith("postgresql")))
    assert in_sql == in_memory
    assert in_sql[0]  # something was claimed
    assert in_sql[-1]  # and something pruned
