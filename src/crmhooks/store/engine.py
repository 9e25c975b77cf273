"""Database engines for SQLite and PostgreSQL, and the two ways to use them: read and write.

SQLite allows one writer at a time. Rather than let concurrent writers collide on the file lock
(and spin in ``busy_timeout``), writes take one connection in turn, opened with
``BEGIN IMMEDIATE``; reads use a small pool of their own and see committed data (WAL mode).
PostgreSQL needs none of this: reads and writes share one pool.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import await_


from crmhooks.errors import ConfigError
from crmhooks.store import inline_sqlite

DEFAULT_URL = "sqlite:///crmhooks.db"


def parse_url(url: str) -> URL:
    """Accept ``sqlite:///file.db`` and ``postgresql://...`` (drivers are ours to pick)."""
    try:
        parsed = make_url(url)
    except Exception as e:
        raise ConfigError(f"not a database URL: {url!r}") from e
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ConfigError("SQLite needs a file: sqlite:///path/to/file.db")
    return parsed


def async_url(url: str) -> URL:
    parsed = parse_url(url)
    driver = "aiosqlite" if parsed.get_backend_name() == "sqlite" else "psycopg"
    return parsed.set(drivername=f"{parsed.get_backend_name()}+{driver}")


def sync_url(url: str) -> URL:
    parsed = parse_url(url)
    driver = "pysqlite" if parsed.get_backend_name() == "sqlite" else "psycopg"
    return parsed.set(drivername=f"{parsed.get_backend_name()}+{driver}")


# How long a writer waits for another process to finish its write (``crmhooks worker``, the
# command line) before its request fails, and how long a statement may wait in SQLite's own busy
# handler, which blocks the event loop: only for the rare moments a WAL reader must wait.
WRITE_LOCK_WAIT = 10.0
READ_BUSY_MS = 100


def _sqlite_engine(target: URL, *, size: int, overflow: int, writer: bool) -> AsyncEngine:
    engine = create_async_engine(
        target,
        pool_size=size,
        max_overflow=overflow,
        connect_args={"async_creator_fn": inline_sqlite.connect},
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a process crash; only a power loss may lose
        # the last transactions. That is the trade the SQLite default is chosen for.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={0 if writer else READ_BUSY_MS}")
        cur.execute("PRAGMA cache_size=-65536")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        driver = conn.connection.driver_connection
        if writer:
            _begin_immediate(driver)
        else:
            driver.sqlite.execute("BEGIN")

    return engine


def _begin_immediate(driver: inline_sqlite.Connection) -> None:
    """Take SQLite's write lock, waiting on the event loop while another process holds it."""
    deadline = time.monotonic() + WRITE_LOCK_WAIT
    pause = 0.001
    while True:
        try:
            driver.sqlite.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        await_(asyncio.sleep(pause))
        pause = min(pause * 2, 0.05)


@dataclass
class Database:
    """The engines of one database and the way into a read or a write transaction."""

    url: str
    reader: AsyncEngine
    writer: AsyncEngine
    _write_lock: asyncio.Lock | None

    @property
    def dialect(self) -> str:
        return self.writer.dialect.name

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction: committed when the block ends, rolled back on error."""
        if self._write_lock is None:
            async with self.writer.begin() as conn:
                yield conn
            return
        async with self._write_lock, self.writer.begin() as conn:
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.reader.connect() as conn:
            yield conn

    async def dispose(self) -> None:
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()


def open_database(url: str, *, pool_size: int = 10) -> Database:
    target = async_url(url)
    if target.get_backend_name() == "sqlite":
        writer = _sqlite_engine(target, size=1, overflow=0, writer=True)
        reader = _sqlite_engine(target, size=4, overflow=4, writer=False)
        return Database(url, reader, writer, asyncio.Lock())
    engine = create_async_engine(target, pool_size=pool_size, max_overflow=pool_size)
    return Database(url, engine, engine, None)
