"""Which process routes (PostgreSQL): the one holding a session lock.

One process at a time routes: the one holding a session advisory lock on a connection kept for
it, released when the process (or its connection) goes; the others try again once a second.
Correctness does not rest on it (the router's cursor row is locked when requests are stored);
it saves the others the work. On SQLite every process leads (one machine, usually one process).
"""

from __future__ import annotations

import contextlib
import math
import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.store.engine import Database

# "crmr": the session lock of the routing process (PostgreSQL). Advisory locks belong to the
# database, so the second key is the schema's: deployments (and test runs) that share a
# database in schemas of their own each have their routing process.
ROUTER_LOCK = 0x6372_6D72

TRY_EVERY = 1.0  # seconds between tries of a process that does not lead


class LeaderLock:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._conn: AsyncConnection | None = None  # holds the lock while open
        self._tried = -math.inf

    @property
    def held(self) -> bool:
        return self._conn is not None

    async def acquire(self) -> bool:
        """Try for the lock (at most once a second); True if it was taken just now."""
        if self._conn is not None or time.monotonic() - self._tried < TRY_EVERY:
            return False
        self._tried = time.monotonic()
        conn = await self.db.writer.connect()
        try:
            got = await conn.scalar(
                text("SELECT pg_try_advisory_lock(:k, hashtext(current_schema()))"),
                {"k": ROUTER_LOCK},
            )
            await conn.commit()
        except BaseException:
            await conn.close()
            raise
        if got:
            self._conn = conn
            return True
        await conn.close()
        return False

    async def release(self) -> None:
        """Let go of the lock. Unlocked explicitly: closing only returns the connection to the
        pool, where the session lock would stay with it."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await conn.execute(
                    text("SELECT pg_advisory_unlock(:k, hashtext(current_schema()))"),
                    {"k": ROUTER_LOCK},
                )
                await conn.commit()
            with contextlib.suppress(Exception):
                await conn.close()
