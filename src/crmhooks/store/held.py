"""SQLite connections kept open between transactions, instead of a pool checkout for each.

Through SQLAlchemy, taking a connection from its pool and giving it back costs more than the
short transactions the hot paths run: on this machine an empty ``engine.connect()`` block ~60
µs and an empty ``engine.begin()`` block ~114 µs, against ~36 µs for ``begin()`` on a
connection already held, and ~3 µs for SQLite's own ``BEGIN IMMEDIATE`` and ``COMMIT``. The
delivery process runs three such blocks for each event it routes alone (the router's read,
its write, the claim's write), and each single create of the API one.

A connection goes back on the shelf only clean: no transaction open, in SQLAlchemy or in
SQLite, not invalidated; anything else is closed (back to the pool, which resets it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from crmhooks.store.inline_sqlite import driver_of


class HeldConnections:
    """Up to ``keep`` connections of ``engine``, open between uses."""

    def __init__(self, engine: AsyncEngine, keep: int) -> None:
        self.engine = engine
        self.keep = keep
        self._idle: list[AsyncConnection] = []

    async def take(self) -> AsyncConnection:
        """A connection with no transaction open: one kept, or a new one from the pool."""
        if self._idle:
            return self._idle.pop()
        return await self.engine.connect()

    @asynccontextmanager
    async def using(self) -> AsyncIterator[AsyncConnection]:
        """A connection for the block: given back after it, closed if the block raised."""
        conn = await self.take()
        try:
            yield conn
        except BaseException:
            await self.discard(conn)
            raise
        await self.give_back(conn)

    async def give_back(self, conn: AsyncConnection) -> None:
        """Keep ``conn`` for the next use, once no transaction is open on it (a read block's,
        begun by its first statement, is rolled back as the pool would); else close it."""
        try:
            if conn.in_transaction():
                await conn.rollback()
            sqlite = driver_of(conn)  # None once closed or invalidated
            keep = sqlite is not None and not sqlite.in_transaction
        except Exception:
            keep = False
        if keep and len(self._idle) < self.keep:
            self._idle.append(conn)
            return
        await self.discard(conn)

    async def discard(self, conn: AsyncConnection) -> None:
        """Close ``conn`` (after an error in its block): the pool resets it or drops it."""
        try:
            await conn.close()
        except Exception:
            with suppress(Exception):
                await conn.invalidate()

    async def close(self) -> None:
        """Close every kept connection (before the engine is disposed)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await self.discard(conn)
