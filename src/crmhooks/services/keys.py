"""The API keys both front-ends authenticate with, cached for a fraction of a second.

The API checks HTTP Basic credentials against it (``api/auth.py``), the dashboard its sign-in
form and every session cookie (``ui/signin.py``, ``ui/web.py``); see
docs/api.md#spaces-and-keys.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from crmhooks.store.engine import Database
from crmhooks.store.keys import KeyRecord, find_key


@dataclass(frozen=True)
class _Entry:
    record: KeyRecord
    read_at: float  # monotonic


class KeyCache:
    """Keys as stored, each read again from the database once it is ``ttl`` seconds old.

    A revoked, expired or deleted key stops working in every process within ``ttl`` plus one
    read, while a busy key costs one indexed read per ``ttl`` instead of one per request.
    Concurrent requests for a key whose entry is stale share one read.
    """

    def __init__(
        self,
        db: Database,
        size: int = 10_000,
        ttl: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.size = size
        self.ttl = ttl
        self.clock = clock
        self._keys: dict[str, _Entry] = {}
        self._reading: dict[str, asyncio.Task[KeyRecord | None]] = {}

    async def get(self, api_key: str) -> KeyRecord | None:
        """The key if it exists and is usable now (not revoked, not expired); else None."""
        entry = self._keys.get(api_key)
        if entry is None or self.clock() - entry.read_at >= self.ttl:
            found = await self._read_once(api_key)
        else:
            found = entry.record
        if found is None or not found.usable(datetime.now(UTC)):
            return None
        return found

    def forget(self, api_key: str) -> None:
        """Read this key from the database on its next use (after this process changed it)."""
        self._keys.pop(api_key, None)

    async def _read_once(self, api_key: str) -> KeyRecord | None:
        task = self._reading.get(api_key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._read(api_key))
            self._reading[api_key] = task
            task.add_done_callback(lambda done: self._done_reading(api_key, done))
        # Shielded: one caller going away must not cancel the read the others wait for.
        return await asyncio.shield(task)

    def _done_reading(self, api_key: str, task: asyncio.Task[KeyRecord | None]) -> None:
        if self._reading.get(api_key) is task:
            del self._reading[api_key]

    async def _read(self, api_key: str) -> KeyRecord | None:
        read_at = self.clock()
        async with self.db.read() as conn:
            found = await find_key(conn, api_key)
        if found is None:
            self._keys.pop(api_key, None)
        else:
            if len(self._keys) >= self.size and api_key not in self._keys:
                self._keys.clear()
            self._keys[api_key] = _Entry(found, read_at)
        return found
