"""Wake-ups from the API process to its delivery process on one machine (SQLite has no
``NOTIFY``): a pipe the API process writes to and the delivery process inherits.

After a commit that stored events (or put requests back in the queue) the API process writes
one record to the pipe, without blocking: if the pipe is full, wakes are pending already and
the record is dropped. Each record is a kind and the writer's monotonic clock (the same clock
in every process of the machine), so the delivery process knows how long each wake took. The
delivery process reads the pipe from its event loop; end of file means the API process is gone
(nothing else holds the pipe's write end), and the delivery process stops.

The delivery process may be started before the API process has migrated the database (``serve``
starts it first, so the two import at once): it waits in ``wait_ready`` for the first record
before it opens the database. The API process writes ``READY`` once it has started, and again
whenever it starts a new delivery process; any record means the same, since none is written
before.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from collections import deque
from collections.abc import Callable

import structlog

log = structlog.get_logger("crmhooks.wakeups")

EVENTS = b"e"  # events were committed: route
REQUEUED = b"r"  # requests were put back in the queue: claim
READY = b"g"  # the API process has started (the database is migrated): begin
_RECORD = struct.Struct("<cd")
# Whole records per read: writes of a record are atomic (below PIPE_BUF), so reads of a
# multiple of its size never split one.
_READ = _RECORD.size * 455


class WakeSender:
    """The API process's end: ``events`` and ``requeued`` never block and never fail."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self.dropped = 0

    def _send(self, kind: bytes) -> None:
        try:
            os.write(self._fd, _RECORD.pack(kind, time.monotonic()))
        except BlockingIOError:  # full: the delivery process has wakes to read already
            self.dropped += 1
        except OSError as e:  # closed at shutdown: nothing left to wake
            log.debug("wake not sent", error=str(e))

    def events(self, *_: object) -> None:
        """An ``after_commit`` callback: a write stored events."""
        self._send(EVENTS)

    def requeued(self) -> None:
        self._send(REQUEUED)

    def ready(self) -> None:
        """The API process has started: a delivery process waiting in ``wait_ready`` begins.
        Dropped only when the pipe is full, of records that mean the same."""
        self._send(READY)


def wait_ready(fd: int) -> bool:
    """Block until the API process writes its first record (see the module's text); False
    when the pipe ends first (the API process stopped before it started)."""
    os.set_blocking(fd, True)  # a reader before this one may have left it non-blocking
    data = b""
    while len(data) < _RECORD.size:
        chunk = os.read(fd, _RECORD.size - len(data))
        if not chunk:
            return False
        data += chunk
    return True


class WakeReader:
    """The delivery process's end: calls ``on_events`` / ``on_requeued`` for what it reads and
    ``on_gone`` once at end of file; keeps how long wakes took (seconds, the last 100,000)."""

    def __init__(
        self,
        fd: int,
        *,
        on_events: Callable[[], None],
        on_requeued: Callable[[], None],
        on_gone: Callable[[], None],
    ) -> None:
        self._fd = fd
        self._on_events = on_events
        self._on_requeued = on_requeued
        self._on_gone = on_gone
        self.latencies: deque[float] = deque(maxlen=100_000)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = 0.0

    def start(self) -> None:
        os.set_blocking(self._fd, False)
        self._started = time.monotonic()  # wakes written before are not timed: no reader yet
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._readable)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop = None

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, _READ)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.stop()
            self._on_gone()
            return
        now = time.monotonic()
        events = requeued = False
        for kind, at in _RECORD.iter_unpack(data[: len(data) - len(data) % _RECORD.size]):
            if at >= self._started:
                self.latencies.append(now - at)
            events |= kind == EVENTS
            requeued |= kind == REQUEUED
        if events:
            self._on_events()
        if requeued:
            self._on_requeued()

    def summary(self) -> dict[str, float | int]:
        """p50 / p99 / max of the wakes read so far, in milliseconds."""
        ordered = sorted(self.latencies)
        if not ordered:
            return {"wakes": 0}
        n = len(ordered)
        return {
            "wakes": n,
            "wake_p50_ms": round(ordered[n // 2] * 1000, 3),
            "wake_p99_ms": round(ordered[min(n - 1, n * 99 // 100)] * 1000, 3),
            "wake_max_ms": round(ordered[-1] * 1000, 3),
        }
