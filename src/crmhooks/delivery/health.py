"""A webhook's health: pure decisions, beside ``retry.py``.

- :func:`succeeded`: the one rule of what counts as delivered (a 2xx answer).
- :func:`allowance` / :func:`claimable`: how many requests a webhook may have in flight and
  hold, from how its last request went (slow start until it answered well once, one at a
  time while it fails) and its space's room, so that hanging or failing receivers cannot take
  the room healthy ones need.
- :func:`failing_too_long` and the reasons: when a failing webhook is disabled.
"""

from __future__ import annotations

from datetime import datetime, timedelta

# Requests in flight for a webhook that has not answered well yet: fifty receivers that hang
# from the start hold 100 of the 256 in flight, not all of them.
UNPROVEN_ALLOWANCE = 2

GONE_REASON = "the receiver answered 410 Gone"


def succeeded(status: int | None) -> bool:
    """Whether an answer with this HTTP status delivered the request (None: no answer)."""
    return status is not None and 200 <= status < 300


def allowance(last_ok: bool | None, per_webhook: int) -> int:
    """Requests a webhook may have in flight: one while its receiver is failing (``last_ok``
    False), a few until it has answered well once (None), ``per_webhook`` after."""
    if last_ok is False:
        return 1
    if last_ok:
        return per_webhook
    return min(UNPROVEN_ALLOWANCE, per_webhook)


# How many times its allowance a webhook that answers well may hold claimed: SHALLOW always,
# DEEP while its space holds less than half its share (``Dispatcher._claim``).
SHALLOW, DEEP = 2, 4


def claimable(last_ok: bool | None, per_webhook: int, *, deep: bool = False) -> int:
    """Requests a webhook may hold, sending or waiting to send: once its receiver answers
    well, twice its allowance, so that the next requests are ready when one finishes, or four
    times (``deep``), so that they last while the claim that refills them waits for SQLite's
    writer (the API's batch writes hold it ~10 ms at a time). Waiting requests count against
    their space's share, so only a space with room takes the deep claim: a space's busy
    webhooks do not fill its share with requests that wait while others' could be sent."""
    n = allowance(last_ok, per_webhook)
    if not last_ok:
        return n
    return (DEEP if deep else SHALLOW) * n


def failing_limit(now: datetime, disable_after: float) -> datetime:
    """A webhook failing since before this is disabled."""
    return now - timedelta(seconds=disable_after)


def failing_too_long(failing_since: datetime | None, now: datetime, disable_after: float) -> bool:
    return failing_since is not None and failing_since < failing_limit(now, disable_after)


def worn_reason(disable_after: float) -> str:
    """Why a webhook that failed for too long was disabled."""
    return f"every request failed for {disable_after / 86400:g} days"
