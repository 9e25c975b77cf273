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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog

from crmhooks.changes.outbox import WEBHOOK_INPUTS
from crmhooks.changes.writer import Change, WriteContext
from crmhooks.delivery.fairness import space_share, take_turns
from crmhooks.delivery.flow import PerWebhook
from crmhooks.delivery.health import succeeded
from crmhooks.delivery.model import Claimed, DeliveryStatus, Outcome, Sender, SendResult
from crmhooks.delivery.notifications import Listener
from crmhooks.delivery.queue import Claims, DeliveryQueue, HealthChanges
from crmhooks.delivery.retry import (
    Verdict,
    decide,
    retry_after_seconds,
    status_after,
)
from crmhooks.delivery.webhooks import Webhooks
from crmhooks.metrics import DELIVERY_LATENCY, REQUESTS_SENT
from crmhooks.settings import Settings

log = structlog.get_logger("crmhooks.dispatcher")


def _default(name: str) -> Any:
    return Settings.model_fields[name].default


@dataclass(frozen=True)
class DispatchSettings:
    """What the dispatcher is told; ``worker.dispatch_settings`` maps :class:`Settings` onto it.
    The defaults are the settings' own (read from there, never written twice)."""

    schedule: Sequence[float]
    max_in_flight: int = _default("max_in_flight")
    max_in_flight_per_webhook: int = _default("max_in_flight_per_webhook")
    # Of max_in_flight, what one space's webhooks may hold together (``fairness.space_share``).
    max_in_flight_per_space: int = space_share(_default("max_in_flight"))
    lease_seconds: float = _default("lease_seconds")
    poll_seconds: float = 1.0
    claim_batch: int = 256
    disable_after: float = _default("disable_after_seconds")  # failing this long: disabled
    retention: float = _default("retention_seconds")
    prune_every: float = _default("prune_every_seconds")
    # While other requests are in flight, outcomes are gathered this long (or up to
    # record_batch of them) before they are written: one transaction for many.
    record_wait: float = 0.02
    record_batch: int = 256


# How soon a claim asks again for webhooks whose claim lock another process held.
CLAIM_LOCK_RETRY = 0.01


class Clock(Protocol):
    """Wall-clock time (stored, compared with the queue's) and monotonic time (intervals)."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class Routing(Protocol):
    """What the dispatcher asks of the router (``delivery.router.Router``)."""

    backlog: bool

    @property
    def stored_cursor(self) -> int | None: ...

    async def step(self) -> int: ...

    def take_touched(self) -> set[str]: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Sent:
    claimed: Claimed
    result: SendResult


@dataclass(frozen=True)
class Outcomes:
    """Outcomes taken to record, with what they change of their webhooks' health."""

    sent: list[Sent]
    outcomes: list[Outcome]
    health: HealthChanges


class Dispatcher:
    def __init__(
        self,
        queue: DeliveryQueue,
        router: Routing,
        webhooks: Webhooks,
        sender: Sender,
        cfg: DispatchSettings,
        *,
        listen_url: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.queue = queue
        self.router = router
        self.webhooks = webhooks
        self.sender = sender
        self.cfg = cfg
        self.clock = clock or SystemClock()
        self._route_wake = asyncio.Event()
        self._claim_wake = asyncio.Event()
        self.listener: Listener | None = None
        if listen_url is not None:  # PostgreSQL: other processes tell when they wrote
            self.listener = Listener(
                listen_url,
                on_events=lambda _: self._route_wake.set(),
                on_requests=lambda _: self._rescan(),
            )
        self._results: list[Sent] = []
        # Of those, per webhook: finished here, their leases still in the database.
        self._unrecorded: Counter[str] = Counter()
        self._results_ready = asyncio.Event()
        self._total = asyncio.Semaphore(cfg.max_in_flight)
        self.per_webhook = PerWebhook(cfg.max_in_flight_per_webhook)
        self._in_flight: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._sends: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._beat = self.clock.monotonic()
        self._clean: set[str] = set()  # webhooks known not to be failing
        self._rand = random.Random()
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
        return running and self.clock.monotonic() - self._beat < 5 * self.cfg.poll_seconds + 30

    @property
    def in_flight(self) -> int:
        """Requests claimed here and not finished."""
        return len(self._in_flight)

    def notify(self, ctx: WriteContext, changes: Sequence[Change]) -> None:
        """A write committed: route now, if a webhook can care.

        Writes in a space without webhooks wake nothing: their events are passed over by the
        next routing step, at the latest a poll interval later.
        """
        webhooks_changed = any(c.entity.name in WEBHOOK_INPUTS for c in changes)
        if not webhooks_changed and not self.webhooks.in_space(ctx.space_id):
            return
        self._route_wake.set()

    def wake(self) -> None:
        """Another process committed events (``delivery.wakeups``): route now."""
        self._route_wake.set()

    def _rescan(self) -> None:
        """Another process stored or finished requests: look for webhooks with work again."""
        self._scanned = -math.inf
        self._claim_wake.set()

    def requeued(self) -> None:
        """Deliveries were put back in the queue or planned outside routing (resend,
        recover, replay): look for the webhooks with work and claim now (they are not in
        ``_work``, which routing and outcomes fill)."""
        self._rescan()

    async def start(self) -> None:
        if self.listener is not None:
            self.listener.start()
        self._tasks = [
            asyncio.create_task(self._loop(self._route_once, self._route_wake), name="route"),
            asyncio.create_task(self._loop(self.claim_once, self._claim_wake), name="claim"),
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
        await self.flush()
        await self.queue.release(sorted(self._in_flight))
        await self.sender.close()
        await self.router.close()

    async def sent(self) -> None:
        """Wait until every request claimed so far was sent (or its sending failed)."""
        if self._sends:
            await asyncio.gather(*self._sends)

    async def _loop(self, once: Callable[[], Awaitable[bool]], wake: asyncio.Event) -> None:
        while not self._stopping:
            self._beat = self.clock.monotonic()
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

    async def claim_once(self) -> bool:
        """Record the outcomes gathered so far and lease requests due now, in one transaction,
        each webhook asked for no more than its room (``flow.PerWebhook``) and its space's
        share; whether to claim again at once.

        One statement per webhook with work, reading only that webhook's queue in order: the
        cost follows what is claimed, not the backlog, and a webhook at its allowance (a
        hanging receiver) or in a space at its share is not even asked. The spaces with work
        take turns (``fairness.take_turns``): one space's hundred webhooks do not go before
        another space's one.
        """
        room = self.cfg.max_in_flight - len(self._in_flight)
        if room <= 0:
            await self.flush()  # nothing to claim: the outcomes alone
            return False
        now = self.clock.now()
        self._work.update(self.router.take_touched())
        for w, at in list(self._due_later.items()):
            if at <= now:
                self._work.add(w)
                del self._due_later[w]
        scan = self.clock.monotonic() - self._scanned >= self.cfg.poll_seconds
        if not self._work and not scan and not self._results:
            # No webhook to ask and nothing to record: no write transaction (the writer,
            # shared with the API process on SQLite, stays free).
            return False
        outcomes = self._outcomes(now)
        want = min(room, self.cfg.claim_batch)
        try:
            claims, contended, taken = await self._claim(now, want, outcomes)
        except asyncio.CancelledError:
            if outcomes is not None:  # stopping: stop() records them
                self._give_back(outcomes)
            raise
        if outcomes is not None:
            self._recorded(outcomes)
        for webhook_id, at in claims.later:
            self._later(webhook_id, at)
        for claimed in claims.claimed:
            self._in_flight.add(claimed.id)
            self.per_webhook.claimed(claimed.webhook_id)
            task = asyncio.create_task(self._send(claimed))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)
        if contended:
            asyncio.get_running_loop().call_later(CLAIM_LOCK_RETRY, self._claim_wake.set)
        return taken >= want and room > taken

    async def _claim(
        self, now: datetime, want: int, outcomes: Outcomes | None
    ) -> tuple[Claims, bool, int]:
        """One claim transaction (see claim_once): what was leased, whether another process
        held a claim lock, how many were taken."""
        flow = self.per_webhook
        taken = 0
        lease = now + timedelta(seconds=self.cfg.lease_seconds)
        async with self.queue.claiming(now, lease) as claim:
            if outcomes is not None:
                await claim.record(outcomes.outcomes, outcomes.health)
            if self.clock.monotonic() - self._scanned >= self.cfg.poll_seconds:
                self._work.update(await claim.pending_webhooks())
                self._scanned = self.clock.monotonic()
            space_of: dict[str, str] = {}
            for w in list(self._work):
                sub = self.webhooks.get(w)
                if sub is None or not sub.is_active:
                    self._work.discard(w)
                else:
                    space_of[w] = sub.space_id
            held = self._held_by_space()
            self._turn += 1
            contended = False
            for w in take_turns(self._work, space_of, self._turn):
                if taken >= want:
                    break
                space = space_of[w]
                share = self.cfg.max_in_flight_per_space
                # Beyond its shallow room, a webhook takes the deep claim's only while its space
                # holds less than half its share (``health.claimable``).
                deep = min(flow.room(w, deep=True), share // 2 - held[space])
                n = min(max(flow.room(w), deep), share - held[space], want - taken)
                if n <= 0:  # asked again when its webhook or its space has room
                    continue
                # Leased in the database: the webhook's requests unfinished in every process,
                # and those finished here whose outcome is not recorded yet.
                got = await claim.claim(w, n, flow.allowance(w) + self._unrecorded[w])
                if got is None:
                    contended = True  # another process is claiming for it: a moment later
                    continue
                taken += got
                held[space] += got
                if got < n:  # nothing more due now: asked again when that changes
                    self._work.discard(w)
            claims = await claim.finish(self._chunk_delay)
        return claims, contended, taken

    def _chunk_delay(self, webhook_id: str) -> float:
        sub = self.webhooks.get(webhook_id)
        return 0.0 if sub is None else sub.chunk_delay

    def _held_by_space(self) -> Counter[str]:
        """Requests each space holds here, sending or claimed to send next (from the per-webhook
        counts, so that there is one count to keep right)."""
        held: Counter[str] = Counter()
        for w, n in self.per_webhook.items():
            sub = self.webhooks.get(w)
            if sub is not None:
                held[sub.space_id] += n
        return held

    def _later(self, webhook_id: str, at: datetime) -> None:
        known = self._due_later.get(webhook_id)
        if known is None or at < known:
            self._due_later[webhook_id] = at

    async def _send(self, claimed: Claimed) -> None:
        sub = self.webhooks.get(claimed.webhook_id)
        if sub is None:
            result = SendResult(None, 0.0, "webhook is gone", None, None, self.clock.now())
        else:
            # Cancelled at shutdown: the id stays in _in_flight and its lease is released.
            async with self._total, self.per_webhook.sending(claimed.webhook_id):
                try:
                    body = claimed.body.encode()
                    result = await self.sender.send(sub, claimed.id, body, replay=claimed.replay)
                except Exception as e:  # a bug must not strand the request: record it
                    log.exception("sending failed", delivery_id=claimed.id)
                    result = SendResult(
                        None, 0.0, f"internal error: {e}", None, None, self.clock.now()
                    )
        self._results.append(Sent(claimed, result))
        self._unrecorded[claimed.webhook_id] += 1
        self._results_ready.set()
        self._in_flight.discard(claimed.id)
        refill = self.per_webhook.finished(claimed.webhook_id, succeeded(result.status))
        self._work.add(claimed.webhook_id)  # its room, and the records it held, are free
        if refill:
            # Refill without waiting for the outcomes to be recorded: one claim per several
            # requests, and the webhook's pipe never runs dry.
            self._claim_wake.set()

    async def _prune_loop(self) -> None:
        """Every ``prune_every`` seconds, drop what is older than the retention age."""
        while not self._stopping:
            await asyncio.sleep(self.cfg.prune_every)
            try:
                cutoff = self.clock.now() - timedelta(seconds=self.cfg.retention)
                pruned = await self.queue.prune(cutoff, self.router.stored_cursor)
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
            if self._stopping:
                return  # stop() flushes what is left
            # The next claim records them, in its own transaction (claim_once).
            self._claim_wake.set()

    async def flush(self) -> None:
        """Record the outcomes of the requests sent since the last flush (one transaction)."""
        now = self.clock.now()
        outcomes = self._outcomes(now)
        if outcomes is None:
            return
        await self.queue.record(outcomes.outcomes, outcomes.health, now)
        self._recorded(outcomes)

    def _outcomes(self, now: datetime) -> Outcomes | None:
        """The outcomes of the requests sent since they were last taken, to record (None:
        nothing was sent)."""
        results, self._results = self._results, []
        # No longer counted as finished from here on, while their leases may still be in the
        # database until the commit: claims meanwhile err on the side of fewer (see claim_once).
        self._unrecorded.clear()
        if not results:
            return None
        outcomes: list[Outcome] = []
        gone: set[str] = set()
        ok: set[str] = set()
        failing: set[str] = set()
        for r in results:
            n = r.claimed.attempts + 1
            res = r.result
            decision = decide(
                n,
                res.status,
                schedule=self.cfg.schedule,
                retry_after=retry_after_seconds(res.retry_after),
                rand=self._rand,
            )
            status = status_after(decision.verdict)
            if decision.verdict is Verdict.DISABLE:
                gone.add(r.claimed.webhook_id)
            elif decision.verdict is Verdict.DELIVERED:
                ok.add(r.claimed.webhook_id)
            else:
                failing.add(r.claimed.webhook_id)
            REQUESTS_SENT.labels(decision.verdict.value).inc()
            if res.status is not None:
                DELIVERY_LATENCY.observe(res.latency_ms / 1000)
            due = now + timedelta(seconds=decision.delay)
            if status == DeliveryStatus.PENDING:
                self._later(r.claimed.webhook_id, due)
            delivered = now if status == DeliveryStatus.DELIVERED else None
            outcomes.append(Outcome(r.claimed, res, status, n, due, delivered))
        failing -= ok
        cleared = ok - self._clean
        health = HealthChanges(cleared, failing, gone, self.cfg.disable_after)
        return Outcomes(results, outcomes, health)

    def _give_back(self, taken: Outcomes) -> None:
        """Outcomes whose transaction did not commit: recorded later after all."""
        self._results[:0] = taken.sent
        self._unrecorded.update(s.claimed.webhook_id for s in taken.sent)

    def _recorded(self, taken: Outcomes) -> None:
        """The outcomes are committed."""
        health = taken.health
        self._clean.update(health.cleared)
        self._clean.difference_update(health.failing)
        # The next requests of these webhooks (held back by records these carried) may go now.
        self._work.update(o.claimed.webhook_id for o in taken.outcomes)
        for o in taken.outcomes:
            _log_outcome(o)


def _log_outcome(o: Outcome) -> None:
    """One structured line per request sent: a failure as a warning, a success at debug."""
    res = o.result
    fields: dict[str, Any] = {
        "webhook_id": o.claimed.webhook_id,
        "delivery_id": o.claimed.id,
        "attempt": o.attempt,
        "status_code": res.status,
        "latency_ms": round(res.latency_ms, 1),
    }
    if o.status == DeliveryStatus.DELIVERED:
        log.debug("delivered", **fields)
    elif o.status == DeliveryStatus.PENDING:
        log.warning(
            "delivery failed, will retry",
            error=res.error,
            next_attempt_at=o.next_attempt_at,
            **fields,
        )
    else:
        log.error("delivery failed, given up", error=res.error, **fields)
