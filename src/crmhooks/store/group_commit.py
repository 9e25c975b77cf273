"""SQLite's single writer, shared by the write transactions that queue for it (group commit).

SQLite writes one transaction at a time, so concurrent writes of this process wait for the one
writer connection in turn. Rather than each paying for its own ``BEGIN IMMEDIATE`` and
``COMMIT`` (the commit writes every page the transaction touched to the WAL, about a tenth of a
create's cost), the writes that are waiting when one finishes run in the same SQLite
transaction, each in a ``SAVEPOINT`` of its own:

- a write that fails is rolled back to its savepoint and changes nothing; the others are kept;
- a write that succeeds is released into the group, and its ``write()`` block returns only once
  the group has committed: a caller never answers before its change is durable, and if the
  commit fails, every write of the group raises;
- the group's commit queues for the writer when its first write finishes, behind the writes
  already waiting and those of requests the event loop had ready to run: they join, later ones
  start the next group. A lone write costs one pass of the event loop more than before.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

from crmhooks.store.held import HeldConnections


class LostTransaction(RuntimeError):
    """SQLite ended the group's transaction on its own (a disk or I/O error rolls it all back)."""


@dataclass(eq=False)
class _Group:
    conn: AsyncConnection
    tx: AsyncTransaction
    done: asyncio.Future[None]
    committer: asyncio.Task[None] | None = field(default=None)

    @property
    def sqlite(self) -> sqlite3.Connection:
        driver = self.conn.sync_connection.connection.driver_connection  # type: ignore[union-attr]
        return driver.sqlite  # type: ignore[union-attr,no-any-return]

    def in_transaction(self) -> bool:
        return self.sqlite.in_transaction


class GroupWriter:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._held = HeldConnections(engine, keep=1)  # the writer, open between groups
        self._lock = asyncio.Lock()
        self._group: _Group | None = None
        self.groups = 0

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        await self._lock.acquire()
        try:
            group = await self._join()
            # The savepoint is written straight to the driver: SQLAlchemy's own (begin_nested)
            # costs more than the commit it saves.
            group.sqlite.execute("SAVEPOINT write")
            try:
                yield group.conn
            except BaseException:
                await self._rollback(group)
                raise
            else:
                try:
                    group.sqlite.execute("RELEASE write")
                except sqlite3.Error as e:  # the transaction is gone, and the group's work
                    lost = LostTransaction(f"release of the savepoint failed: {e}")
                    await self._finish(group, lost)
                    raise lost from e
            finally:
                await self._settle(group)
        finally:
            self._lock.release()
        await asyncio.shield(group.done)

    async def close(self) -> None:
        """Commit the open group, if any (at shutdown), and close the writer."""
        async with self._lock:
            if self._group is not None:
                await self._commit(self._group)
            await self._held.close()

    async def _join(self) -> _Group:
        group = self._group
        if group is not None and not group.in_transaction():
            await self._finish(group, LostTransaction("the group's transaction was rolled back"))
            group = None
        if group is None:
            conn = await self._held.take()
            try:
                tx = await conn.begin()
            except BaseException:
                await self._held.discard(conn)
                raise
            group = self._group = _Group(conn, tx, asyncio.get_running_loop().create_future())
            self.groups += 1
        return group

    async def _rollback(self, group: _Group) -> None:
        try:
            group.sqlite.execute("ROLLBACK TO write")
            group.sqlite.execute("RELEASE write")
        except Exception as e:  # the whole transaction is gone: so is the group's work
            await self._finish(group, LostTransaction(f"rollback to savepoint failed: {e}"))

    async def _settle(self, group: _Group) -> None:
        """After a write: have the group committed by a task that queues for the writer.

        The task runs once the event loop has run what was ready before it, so writes of
        requests that arrived meanwhile join the group first; it then commits the group when it
        gets the writer.
        """
        if self._group is group and group.committer is None:
            group.committer = asyncio.get_running_loop().create_task(self._queued_commit(group))

    async def _queued_commit(self, group: _Group) -> None:
        async with self._lock:
            if self._group is group:
                await self._commit(group)

    async def _commit(self, group: _Group) -> None:
        """Commit the group (the caller holds the writer) and tell its writes how it went."""
        if not group.in_transaction():
            await self._finish(group, LostTransaction("the group's transaction was rolled back"))
            return
        try:
            await group.tx.commit()
        except Exception as e:
            await self._finish(group, e)
            return
        await self._finish(group, None)

    async def _finish(self, group: _Group, error: BaseException | None) -> None:
        if self._group is group:
            self._group = None
        try:
            if error is None:
                await self._held.give_back(group.conn)
            else:
                if group.tx.is_active:
                    with suppress(Exception):
                        await group.tx.rollback()
                await self._held.discard(group.conn)
        finally:
            if not group.done.done():
                if error is None:
                    group.done.set_result(None)
                else:
                    group.done.set_exception(error)
                    group.done.exception()  # retrieved: a group with no waiter logs nothing
