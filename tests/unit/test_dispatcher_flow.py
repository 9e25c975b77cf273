"""The dispatcher's flow control against the in-memory queue, a fake sender and a fake clock:
allowance and slow start, the per-webhook send limit, retries, disabling, the space share and
chunk spacing, in milliseconds (no sockets, no sleeps)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from crmhooks.delivery import health
from crmhooks.delivery.dispatcher import Dispatcher, DispatchSettings
from crmhooks.delivery.health import GONE_REASON, UNPROVEN_ALLOWANCE
from crmhooks.delivery.memory import MemoryQueue, delivered
from crmhooks.delivery.model import DeliveryStatus, PlannedRequest, SendResult
from crmhooks.delivery.retry import DEFAULT_SCHEDULE
from crmhooks.hooks.subscription import Subscription

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PER_WEBHOOK = 16


class FakeClock:
    def __init__(self) -> None:
        self.at = T0
        self.mono = 1000.0

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)
        self.mono += seconds


class FakeSender:
    """Answers with ``status_of(webhook)``; with ``hold`` set, each request waits until let go.
    Counts what is being sent at once, per webhook."""

    def __init__(self, clock: FakeClock, status_of: Callable[[str], int | None]) -> None:
        self.clock = clock
        self.status_of = status_of
        self.hold = False
        self.gate = asyncio.Event()
        self.sending: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.sent: list[tuple[str, str]] = []  # (webhook, request id) in order

    async def send(
        self, sub: Subscription, msg_id: str, body: bytes, *, replay: bool = False
    ) -> SendResult:
        self.sending[sub.id] += 1
        self.most[sub.id] = max(self.most[sub.id], self.sending[sub.id])
        try:
            if self.hold:
                await self.gate.wait()
        finally:
            self.sending[sub.id] -= 1
        self.sent.append((sub.id, msg_id))
        status = self.status_of(sub.id)
        return SendResult(status, 1.0, None if status else "refused", "", None, self.clock.now())

    async def close(self) -> None:
        pass


class Hooks:
    """The webhooks by id (``delivery.webhooks.Webhooks``)."""

    def __init__(self, subs: list[Subscription]) -> None:
        self.by_id = {s.id: s for s in subs}

    def get(self, webhook_id: str) -> Subscription | None:
        return self.by_id.get(webhook_id)

    def in_space(self, space_id: str) -> bool:
        return any(s.space_id == space_id for s in self.by_id.values())


class NoRouter:
    backlog = False
    stored_cursor = None

    def __init__(self) -> None:
        self.touched: set[str] = set()

    async def step(self) -> int:
        return 0

    def take_touched(self) -> set[str]:
        touched, self.touched = self.touched, set()
        return touched

    async def close(self) -> None:
        pass


def webhook(space: str = "s1", *, chunk_delay: float = 0.0) -> Subscription:
    return Subscription(
        id=str(uuid.uuid4()),
        space_id=space,
        url="http://receiver.test/hook",
        events=frozenset({"Account.Create"}),
        insecure_ssl=False,
        is_active=True,
        created=T0,
        client_id=None,
        signature=None,
        scheme="standard",
        previous_signature=None,
        previous_until=None,
        chunk_size=1,
        chunk_delay=chunk_delay,
        skip_keys=frozenset(),
        custom_entities=None,
        entity={},
        related={},
        webhook={},
    )


class Rig:
    def __init__(
        self,
        subs: list[Subscription],
        status_of: Callable[[str], int | None] = lambda _: 200,
        **cfg: Any,
    ) -> None:
        self.clock = FakeClock()
        self.queue = MemoryQueue()
        self.router = NoRouter()
        self.sender = FakeSender(self.clock, status_of)
        settings = DispatchSettings(DEFAULT_SCHEDULE, max_in_flight_per_webhook=PER_WEBHOOK, **cfg)
        self.d = Dispatcher(
            self.queue, self.router, Hooks(subs), self.sender, settings, clock=self.clock
        )
        self.seq = 0

    async def add(
        self,
        sub: Subscription,
        n: int,
        *,
        record: str | None = None,
        burst: str | None = None,
        delay: float = 0.0,
    ) -> list[str]:
        planned = []
        for i in range(n):
            self.seq += 1
            planned.append(
                PlannedRequest(
                    id=str(uuid.uuid4()),
                    webhook_id=sub.id,
                    space_id=sub.space_id,
                    body="[]",
                    event_ids=[str(uuid.uuid4())],
                    first_seq=self.seq,
                    created=self.clock.now(),
                    delay=i * delay if burst else 0.0,
                    chunk_group=burst,
                    chunk_index=i if burst else None,
                    record_ids=[record or str(uuid.uuid4())],
                )
            )
        await self.queue.enqueue(planned, self.clock.now())
        self.router.touched.add(sub.id)
        return [p.id for p in planned]

    async def round(self) -> int:
        """One claim, its sends, and the outcomes recorded; how many were sent."""
        before = len(self.sender.sent)
        while await self.d.claim_once():
            pass
        await self.d.sent()
        await self.d.flush()
        return len(self.sender.sent) - before

    async def claim_held(self) -> int:
        """Claim while the sender holds every request; how many the dispatcher holds."""
        self.sender.hold = True
        await self.d.claim_once()
        await asyncio.sleep(0)
        return self.d.in_flight


async def test_an_unproven_webhook_gets_a_few_then_the_full_allowance() -> None:
    hook = webhook()
    rig = Rig([hook])
    await rig.add(hook, 100)
    assert await rig.claim_held() == UNPROVEN_ALLOWANCE  # slow start
    rig.sender.gate.set()
    await rig.d.sent()
    await rig.d.flush()
    rig.sender.gate = asyncio.Event()
    # Answered well, its space with room: it may hold four times its allowance, and send its
    # allowance at once.
    assert await rig.claim_held() == health.DEEP * PER_WEBHOOK
    assert rig.sender.most[hook.id] == PER_WEBHOOK
    rig.sender.gate.set()
    await rig.d.sent()
    await rig.d.flush()
    assert delivered(rig.queue, hook.id) == UNPROVEN_ALLOWANCE + health.DEEP * PER_WEBHOOK


async def test_the_deep_claim_takes_no_more_than_half_of_a_spaces_share() -> None:
    """The deep claim is for a space with room: it fills no more than half of the space's
    share, and past that each webhook holds twice its allowance, so that the share goes to
    requests being sent rather than waiting."""
    hooks = [webhook("busy") for _ in range(5)]
    share = 8 * PER_WEBHOOK
    rig = Rig(hooks, max_in_flight_per_space=share)
    for h in hooks:
        await rig.add(h, 100)
    while sum(delivered(rig.queue, h.id) for h in hooks) < len(hooks) * UNPROVEN_ALLOWANCE:
        await rig.round()  # each answers well once (slow start)
    rig.sender.gate = asyncio.Event()
    rig.sender.hold = True
    await rig.d.claim_once()
    await asyncio.sleep(0)
    held = sorted((rig.d.per_webhook.held(h.id) for h in hooks), reverse=True)
    assert held == [
        health.DEEP * PER_WEBHOOK,
        health.SHALLOW * PER_WEBHOOK,
        health.SHALLOW * PER_WEBHOOK,
        0,
        0,
    ]
    rig.sender.gate.set()
    await rig.d.sent()


async def test_outcomes_are_recorded_in_the_next_claims_transaction() -> None:
    hook = webhook()
    rig = Rig([hook])
    await rig.add(hook, 10)
    await rig.d.claim_once()
    await rig.d.sent()
    recorded, claims = rig.queue.recorded, rig.queue.claims
    await rig.d.claim_once()  # the outcomes, then the next requests: one transaction
    assert (rig.queue.recorded, rig.queue.claims) == (recorded + 1, claims + 1)
    assert delivered(rig.queue, hook.id) == UNPROVEN_ALLOWANCE
    assert rig.d.in_flight > 0


async def test_a_failing_webhook_sends_one_at_a_time_and_retries_on_schedule() -> None:
    hook = webhook()
    answers = {hook.id: 500}
    rig = Rig([hook], status_of=answers.__getitem__)
    ids = await rig.add(hook, 5)
    assert await rig.round() == UNPROVEN_ALLOWANCE
    first = rig.queue.requests[ids[0]]
    assert (first.status, first.attempts) == (DeliveryStatus.PENDING, 1)
    wait = (first.next_attempt_at - rig.clock.now()).total_seconds()
    assert 0.8 * DEFAULT_SCHEDULE[0] <= wait <= 1.2 * DEFAULT_SCHEDULE[0]
    assert rig.queue.failing_since == {hook.id: T0}
    # Failing: one in flight. The others were never tried, so one of them goes now.
    assert await rig.claim_held() == health.allowance(False, PER_WEBHOOK) == 1
    rig.sender.gate.set()
    await rig.d.sent()
    await rig.d.flush()
    rig.sender.hold = False
    # The receiver recovers; the retries go once due, not before.
    answers[hook.id] = 200
    rig.clock.advance(1.2 * DEFAULT_SCHEDULE[0] + 0.01)
    while await rig.round():
        pass
    assert delivered(rig.queue, hook.id) == 5
    assert [r.attempts for r in rig.queue.of(hook.id)][:2] == [2, 2]
    assert rig.queue.failing_since == {}


async def test_410_disables_at_once_and_failing_too_long_disables() -> None:
    gone, down = webhook(), webhook()
    rig = Rig([gone, down], status_of=lambda w: 410 if w == gone.id else None, disable_after=60)
    await rig.add(gone, 1)
    await rig.add(down, 1)
    await rig.round()
    assert rig.queue.disabled == {gone.id: GONE_REASON}
    assert [r.status for r in rig.queue.of(gone.id)] == [DeliveryStatus.FAILED]
    # Failing since T0; still failing after the disable_after: disabled.
    rig.clock.advance(61)
    await rig.round()
    assert rig.queue.disabled[down.id] == health.worn_reason(60)


async def test_a_space_holds_no_more_than_its_share() -> None:
    busy = [webhook("busy") for _ in range(10)]
    calm = webhook("calm")
    rig = Rig([*busy, calm], max_in_flight=40, max_in_flight_per_space=8)
    for h in busy:
        await rig.add(h, 5)
    await rig.add(calm, 1)
    rig.sender.hold = True
    await rig.d.claim_once()
    await asyncio.sleep(0)
    held = Counter(
        h.space_id for h in [*busy, calm] for r in rig.queue.of(h.id) if r.lease_until is not None
    )
    assert held == {"busy": 8, "calm": 1}
    rig.sender.gate.set()
    await rig.d.sent()


async def test_later_chunks_are_spaced_after_the_first_is_sent() -> None:
    hook = webhook(chunk_delay=30)
    rig = Rig([hook])
    burst = str(uuid.uuid4())
    ids = await rig.add(hook, 3, burst=burst, delay=30)
    assert await rig.round() == 1  # the later chunks wait for the first
    rig.clock.advance(29)
    assert await rig.round() == 0
    rig.clock.advance(1)
    assert await rig.round() == 1
    rig.clock.advance(30)
    assert await rig.round() == 1
    assert [s for _, s in rig.sender.sent] == ids


async def test_requests_of_one_record_go_in_order() -> None:
    hook = webhook()
    rig = Rig([hook])
    record = str(uuid.uuid4())
    ids = await rig.add(hook, 3, record=record)
    sent = [await rig.round() for _ in range(3)]
    assert sent == [1, 1, 1]  # one at a time: each waits for the one before to finish
    assert [s for _, s in rig.sender.sent] == ids


async def test_stopping_releases_the_leases_of_unsent_requests() -> None:
    hook = webhook()
    rig = Rig([hook])
    await rig.add(hook, 2)
    assert await rig.claim_held() == 2
    await rig.d.stop(grace=0)
    assert [r.lease_until for r in rig.queue.of(hook.id)] == [None, None]


@pytest.mark.parametrize("shared", [False, True])
async def test_a_shared_queue_leaves_other_processes_leases_within_the_allowance(
    shared: bool,
) -> None:
    hook = webhook()
    rig = Rig([hook])
    rig.queue.shared = shared
    await rig.add(hook, 10)
    # Another process holds a lease on one of them.
    other = rig.queue.of(hook.id)[-1]
    other.lease_until = rig.clock.now() + timedelta(seconds=60)
    held = await rig.claim_held()
    assert held == (UNPROVEN_ALLOWANCE - 1 if shared else UNPROVEN_ALLOWANCE)
    rig.sender.gate.set()
    await rig.d.sent()


def test_health_decisions() -> None:
    assert [health.succeeded(s) for s in (None, 199, 200, 204, 299, 300, 410)] == [
        False,
        False,
        True,
        True,
        True,
        False,
        False,
    ]
    assert [health.allowance(ok, 16) for ok in (None, False, True)] == [2, 1, 16]
    assert [health.claimable(ok, 16) for ok in (None, False, True)] == [2, 1, 32]
    assert [health.claimable(ok, 16, deep=True) for ok in (None, False, True)] == [2, 1, 64]
    assert health.allowance(None, 1) == 1  # never more than the configured limit
    assert health.failing_too_long(T0, T0 + timedelta(seconds=61), 60)
    assert not health.failing_too_long(T0, T0 + timedelta(seconds=60), 60)
    assert not health.failing_too_long(None, T0, 60)
