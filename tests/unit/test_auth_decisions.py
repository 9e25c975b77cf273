"""The pure decisions of authentication: when a key is usable, when failures are throttled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from crmhooks.services.throttle import FailureThrottle
from crmhooks.store.keys import key_usable

T = datetime(2026, 12, 1, tzinfo=UTC)
S = timedelta(seconds=1)


def test_a_key_is_usable_until_revoked_or_expired() -> None:
    assert key_usable(None, None, T)
    assert key_usable(T + S, None, T)
    assert not key_usable(T, None, T)
    assert key_usable(None, T + S, T)
    assert not key_usable(None, T, T)
    assert not key_usable(T - S, T + S, T)


def test_the_first_failures_of_a_window_are_not_throttled_then_the_rest_are() -> None:
    throttle = FailureThrottle(limit=3, window=60)
    assert [throttle.failed("1.1.1.1", "ck_a", 100.0 + i) for i in range(3)] == [0, 0, 0]
    assert throttle.failed("1.1.1.1", "ck_a", 103.0) == 57  # the first failure leaves at 160
    assert throttle.retry_after("1.1.1.1", "ck_b", 110.0) > 0  # the address, for any key
    assert throttle.retry_after("2.2.2.2", "ck_a", 110.0) > 0  # the key, from any address
    assert throttle.retry_after("2.2.2.2", "ck_b", 110.0) == 0  # neither: not throttled
    assert throttle.retry_after("1.1.1.1", "ck_a", 170.0) == 0  # the window has passed


def test_the_throttle_forgets_old_buckets_to_stay_bounded() -> None:
    throttle = FailureThrottle(limit=2, window=10, max_buckets=100)
    for i in range(1000):
        throttle.failed("1.1.1.1", f"ck_{i}", float(i))
    assert len(throttle._failures) <= 100
