"""Wake-ups between processes on PostgreSQL: ``LISTEN`` for committed events and requests.

Every write that records events sends ``pg_notify('crmhooks_events')`` in its transaction, and
the router sends ``crmhooks_requests`` with the requests it stores; PostgreSQL delivers them at
commit, to every process listening. A worker that hears one routes or claims at once instead of
at its next poll. Polling stays as the fallback: a lost connection only delays work by a poll
interval, and the listener connects again by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import psycopg
import structlog
from sqlalchemy.engine import make_url

from crmhooks.changes.outbox import EVENTS_CHANNEL, REQUESTS_CHANNEL

log = structlog.get_logger("crmhooks.notifications")


def conninfo(url: str) -> str:
    """A libpq connection string for psycopg from our ``postgresql://`` URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Listener:
    """Calls ``on_events`` / ``on_requests`` with each notification's payload (for events, the
    space the write was in)."""

    def __init__(
        self,
        url: str,
        *,
        on_events: Callable[[str], None],
        on_requests: Callable[[str], None] | None = None,
        retry_seconds: float = 1.0,
    ) -> None:
        self._conninfo = conninfo(url)
        # Only the channels something listens for: a process is not woken for the others.
        self._handlers = {EVENTS_CHANNEL: on_events}
        if on_requests is not None:
            self._handlers[REQUESTS_CHANNEL] = on_requests
        self._retry = retry_seconds
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()
        self.heard = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="listen")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                async with conn:
                    for channel in self._handlers:
                        await conn.execute(f"LISTEN {channel}")
                    self.listening.set()
                    async for note in conn.notifies():
                        self.heard += 1
                        handler = self._handlers.get(note.channel)
                        if handler is not None:
                            handler(note.payload)
            except (psycopg.Error, OSError) as e:
                log.warning("listen connection lost; polling meanwhile", error=str(e))
            self.listening.clear()
            await asyncio.sleep(self._retry)
