"""Failed authentications counted per client address and per API key, in one process.

A failure (wrong secret, unknown, revoked or expired key, malformed credentials) is counted
under the client's address and under the API key it named. Once either has ``limit`` failures
within ``window`` seconds, further failures are answered 429 with the seconds until the oldest
of them leaves the window, instead of 401. Valid credentials are checked first and always pass:
one tenant's failures, against its own key or another's, never lock a key holder out (see
docs/api.md#spaces-and-keys). The state is per process and in memory: several processes each
allow ``limit``; a restart forgets.
"""

from __future__ import annotations

import math
from collections import deque

_MAX_NAME = 80  # what a bucket is named after: an address, or at most this much of a key


class FailureThrottle:
    """Sliding-window failure counts; pure bookkeeping, the caller passes the time."""

    def __init__(self, limit: int, window: float, max_buckets: int = 100_000) -> None:
        self.limit = max(1, limit)
        self.window = window
        self.max_buckets = max_buckets
        # Per bucket, the times of its latest ``limit`` failures, oldest first.
        self._failures: dict[str, deque[float]] = {}

    def _wait(self, name: str, now: float) -> float:
        times = self._failures.get(name)
        if times is None or len(times) < self.limit:
            return 0.0
        return max(0.0, times[0] + self.window - now)

    def retry_after(self, address: str, api_key: str, now: float) -> int:
        """Whole seconds until this address and key may fail again unthrottled; 0: not yet
        throttled."""
        wait = max(self._wait("a:" + address, now), self._wait("k:" + api_key[:_MAX_NAME], now))
        return math.ceil(wait)

    def failed(self, address: str, api_key: str, now: float) -> int:
        """Count one failure; the answer of :meth:`retry_after` *before* it was counted, so
        the first ``limit`` failures of a window are not throttled."""
        wait = self.retry_after(address, api_key, now)
        names = ["a:" + address] + (["k:" + api_key[:_MAX_NAME]] if api_key else [])
        for name in names:
            times = self._failures.get(name)
            if times is None:
                if len(self._failures) >= self.max_buckets:
                    self._forget(now)
                times = self._failures[name] = deque(maxlen=self.limit)
            times.append(now)
        return wait

    def _forget(self, now: float) -> None:
        """Make room: drop buckets whose failures all left the window, else the older half
        (a flood of made-up keys must not grow memory without bound)."""
        for name in [n for n, t in self._failures.items() if t[-1] + self.window <= now]:
            del self._failures[name]
        if len(self._failures) >= self.max_buckets:
            for name in list(self._failures)[: len(self._failures) // 2]:
                del self._failures[name]
