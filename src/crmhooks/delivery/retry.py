"""When to try a failed request again, and when to give up: pure decisions.

The schedule after a failure: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h (ten attempts
over about three days), each with +-20% jitter. ``Retry-After`` on 429/503 is honoured within
[scheduled delay, twice it]. ``410 Gone`` disables the webhook at once.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from crmhooks.delivery.health import succeeded
from crmhooks.delivery.model import DeliveryStatus

DEFAULT_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
JITTER = 0.2


class Verdict(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    GIVE_UP = "give_up"
    DISABLE = "disable"  # 410 Gone: stop this webhook now


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    delay: float = 0.0  # seconds until the next attempt, for RETRY


def parse_schedule(raw: str | None) -> tuple[float, ...]:
    """A schedule from ``CRMHOOKS_RETRY_SCHEDULE`` (comma-separated seconds), or the default."""
    if not raw:
        return DEFAULT_SCHEDULE
    return tuple(float(part) for part in raw.split(",") if part.strip())


def retry_after_seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def decide(
    attempts: int,
    status: int | None,
    *,
    schedule: Sequence[float] = DEFAULT_SCHEDULE,
    retry_after: float | None = None,
    rand: random.Random | None = None,
) -> Decision:
    """What to do after attempt number ``attempts`` (1-based) ended with ``status``.

    ``status`` is None for a timeout, reset or refused connection.
    """
    if succeeded(status):
        return Decision(Verdict.DELIVERED)
    if status == 410:
        return Decision(Verdict.DISABLE)
    if attempts > len(schedule):
        return Decision(Verdict.GIVE_UP)
    base = schedule[attempts - 1]
    r = rand or random
    delay = base * (1 + r.uniform(-JITTER, JITTER))
    if status in (429, 503) and retry_after is not None:
        delay = min(max(retry_after, base), 2 * base)
    return Decision(Verdict.RETRY, delay)


def status_after(verdict: Verdict) -> DeliveryStatus:
    """The request's state in the queue after an attempt with this verdict."""
    if verdict is Verdict.DELIVERED:
        return DeliveryStatus.DELIVERED
    if verdict is Verdict.RETRY:
        return DeliveryStatus.PENDING
    return DeliveryStatus.FAILED  # given up, or its webhook disabled
