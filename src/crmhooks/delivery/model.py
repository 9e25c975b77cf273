"""The values the delivery queue stores and hands out: typed, so that planning, claiming and
recording agree on one shape (pure: no SQL, no sockets)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from crmhooks.hooks.subscription import Subscription


class DeliveryStatus(StrEnum):
    """A request's state in the queue, stored as these strings."""

    PENDING = "pending"  # waiting for its next attempt (or being sent under a lease)
    DELIVERED = "delivered"  # a 2xx answer
    FAILED = "failed"  # given up (out of retries, or the webhook disabled); kept for recover


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    """One request a routing step made: a chunk of one webhook's events."""

    id: str
    webhook_id: str
    space_id: str
    body: str
    event_ids: list[str]
    first_seq: int
    created: datetime
    delay: float  # seconds after the routing step's commit until it is due
    chunk_group: str | None  # the requests of one burst share it
    chunk_index: int | None
    record_ids: list[str]  # the records its events are about (per-record order)
    replay: bool = False  # planned by a replay: sent with webhook-replay: true

    @property
    def event_count(self) -> int:
        return len(self.event_ids)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A request leased to this process for sending."""

    id: str
    webhook_id: str
    body: str
    attempts: int  # attempts made before this one
    replay: bool = False  # planned by a replay: sent with webhook-replay: true


@dataclass(frozen=True, slots=True)
class SendResult:
    """How one HTTP request went; ``status`` is None for a timeout, reset or refusal."""

    status: int | None
    latency_ms: float
    error: str | None
    body: str | None
    retry_after: str | None
    started: datetime


@dataclass(frozen=True, slots=True)
class Outcome:
    """What recording a sent request writes: its new state and the attempt made."""

    claimed: Claimed
    result: SendResult
    status: DeliveryStatus
    attempt: int  # the number of the attempt just made (1-based)
    next_attempt_at: datetime
    delivered_at: datetime | None


class Sender(Protocol):
    """Sends one request to a webhook (``sender.HttpSender``; a fake in the unit tests)."""

    async def send(
        self, sub: Subscription, msg_id: str, body: bytes, *, replay: bool = False
    ) -> SendResult: ...

    async def close(self) -> None: ...
