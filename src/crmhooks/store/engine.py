"""Database engines for SQLite and PostgreSQL, and the two ways to use them: read and write.

SQLite allows one writer at a time. Rather than let concurrent writers collide on the file lock
(and spin in ``busy_timeout``), writes take one connection in turn, opened with
``BEGIN IMMEDIATE``, and writes that queue for it together share one commit (``group_commit``);
reads use a small pool of their own and see committed data (WAL mode). Statements run on the
event loop's thread (``inline_sqlite``), and the WAL is copied back into the database file by a
thread of its own (``WalCheckpointer``). PostgreSQL needs none of this: reads and writes share
one pool.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import await_

from crmhooks.errors import ConfigError
from crmhooks.store import inline_sqlite
from crmhooks.store.group_commit import GroupWriter
from crmhooks.store.held import HeldConnections

log = structlog.get_logger("crmhooks.store")


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


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


# JSON columns through orjson: the JSON type's default, the json module, was 2-3% of a create.
JSON_CODEC: dict[str, Any] = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads}

# How long a writer waits for another process to finish its write (``crmhooks worker``, the
# command line) before its request fails, and how long a statement may wait in SQLite's own busy
# handler, which blocks the event loop: only for the rare moments a WAL reader must wait.
WRITE_LOCK_WAIT = 10.0
READ_BUSY_MS = 100
READERS = 4  # SQLite reader connections in the pool (as many again may be opened besides)


def _sqlite_engine(target: URL, *, size: int, overflow: int, writer: bool) -> AsyncEngine:
    engine = create_async_engine(
        target,
        pool_size=size,
        max_overflow=overflow,
        connect_args={"async_creator_fn": inline_sqlite.connect},
        **JSON_CODEC,
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
        if writer:
            # Copying the WAL back into the database file (with its fsync) is the checkpoint
            # thread's work, off the event loop (``WalCheckpointer``), not the committing
            # request's.
            cur.execute("PRAGMA wal_autocheckpoint=0")
            # Each write of a group runs in a savepoint (``group_commit``), whose undo pages
            # SQLite keeps in a sub-journal: in memory, not in a temporary file.
            cur.execute("PRAGMA temp_store=MEMORY")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        driver = conn.connection.driver_connection
        if writer:
            _begin_immediate(driver)
        else:
            driver.sqlite.execute("BEGIN")

    return engine


# While another process holds the write lock, a writer first tries again every SPIN_PAUSE
# seconds for up to SPIN seconds, sleeping on the thread (the event loop's timers are too coarse
# for that: a lock held 0.3 ms would cost 1 ms or more); the delivery process's transactions are
# a few short statements (it opens no group and awaits nothing inside one), so the lock is
# almost always free within the spin. Beyond it the writer tries again every BUSY_POLL seconds
# on the event loop until WRITE_LOCK_WAIT. SQLite queues no one: whoever asks first after a
# commit gets the lock, and the API's batch writes hold it ~15 ms with a few ms between them,
# so a waiter that backed off to longer pauses would miss every gap and stall (delivery made
# ~90 events/s during a batch-modify burst with pauses doubling to 50 ms, ~1,000 with 1 ms). A
# failed attempt costs a few µs: polling a 10 s wait costs ~1% of a core.
SPIN = 0.002
SPIN_PAUSE = 0.00005
BUSY_POLL = 0.001


@dataclass
class LockStats:
    """How long this process waited for SQLite's write lock and held it, per transaction
    (seconds; the last ``keep`` of each), for the benchmarks and the worker's last log line."""

    keep: int = 100_000
    waits: deque[float] = field(default_factory=deque)
    holds: deque[float] = field(default_factory=deque)
    busy: int = 0  # transactions that found the lock held by another process

    def add(self, into: deque[float], seconds: float) -> None:
        into.append(seconds)
        if len(into) > self.keep:
            into.popleft()

    def summary(self) -> dict[str, float | int]:
        """p50 and p99 of waits and holds in milliseconds, and the count of each."""
        out: dict[str, float | int] = {"transactions": len(self.holds), "busy": self.busy}
        for name, values in (("wait", self.waits), ("hold", self.holds)):
            ordered = sorted(values)
            for q in (50, 99):
                at = ordered[min(len(ordered) - 1, len(ordered) * q // 100)] if ordered else 0.0
                out[f"{name}_p{q}_ms"] = round(at * 1000, 3)
            out[f"{name}_max_ms"] = round(ordered[-1] * 1000, 3) if ordered else 0.0
        return out


# This process's writer (one writer connection per process and database in practice).
WRITE_LOCK = LockStats()


def _begin_immediate(driver: inline_sqlite.Connection) -> None:
    """Take SQLite's write lock: spin briefly while another process holds it, then wait on the
    event loop."""
    start = time.perf_counter()
    spin_until = start + SPIN
    deadline = time.monotonic() + WRITE_LOCK_WAIT
    busy = False
    while True:
        try:
            driver.sqlite.execute("BEGIN IMMEDIATE")
            break
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        busy = True
        if time.perf_counter() < spin_until:
            time.sleep(SPIN_PAUSE)
            continue
        await_(asyncio.sleep(BUSY_POLL))
    taken = time.perf_counter()
    if busy:
        WRITE_LOCK.busy += 1
    WRITE_LOCK.add(WRITE_LOCK.waits, taken - start)
    driver.lock_taken = taken
    driver.on_release = _released


def _released(driver: inline_sqlite.Connection) -> None:
    """The writer's transaction ended (commit or rollback): count how long it held the lock."""
    if driver.lock_taken is not None:
        WRITE_LOCK.add(WRITE_LOCK.holds, time.perf_counter() - driver.lock_taken)
        driver.lock_taken = None


class WalCheckpointer:
    """Copies SQLite's write-ahead log back into the database file, on a thread of its own.

    The writer connection does not checkpoint at commit (``wal_autocheckpoint=0``): a
    checkpoint writes pages to the database file and syncs it, which would stall the event
    loop for that commit. Here it runs every ``every`` seconds, without the GIL while SQLite
    works, and ``PASSIVE``: it never waits for, nor blocks, readers or the writer. Once the
    whole log has been copied, the next write starts the log again from its beginning.
    """

    def __init__(self, path: str, every: float = 0.2) -> None:
        self._path = path
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def checkpoint(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _run(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            while not self._stop.wait(self._every):
                try:
                    self.checkpoint(conn)
                except sqlite3.Error as e:  # a busy or vanished file: try again next time
                    log.warning("wal_checkpoint_failed", error=str(e))
            with suppress(sqlite3.Error):
                self.checkpoint(conn)
        finally:
            conn.close()


@dataclass
class RoundTrips:
    """Exchanges with the database server so far (PostgreSQL): for the benchmarks."""

    statements: int = 0
    transactions: int = 0  # each one a BEGIN and a COMMIT or ROLLBACK

    @property
    def total(self) -> int:
        return self.statements + 2 * self.transactions


@dataclass
class Database:
    """The engines of one database and the way into a read or a write transaction.

    On SQLite the connections are kept open between transactions (``store.held``): the
    reader's up to its pool's size, the writer's one (with a group writer, the group's)."""

    url: str
    reader: AsyncEngine
    writer: AsyncEngine
    _group_writer: GroupWriter | None = None
    _checkpointer: WalCheckpointer | None = None
    round_trips: RoundTrips = field(default_factory=RoundTrips)
    _held_readers: HeldConnections | None = None
    _held_writer: HeldConnections | None = None  # SQLite without a group writer
    _write_lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    @property
    def dialect(self) -> str:
        return self.writer.dialect.name

    def _writing(self) -> asyncio.Lock:
        """One write transaction of this process at a time on the held writer (as the
        writer's pool of one connection made them wait before), per event loop."""
        loop = asyncio.get_running_loop()
        if self._write_lock is None or self._write_lock[0] is not loop:
            self._write_lock = (loop, asyncio.Lock())
        return self._write_lock[1]

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction: committed when the block ends, rolled back on error.

        On SQLite the block may share its transaction with other writes that queued for the
        writer at the same time (``group_commit``); it still returns only once committed.
        """
        if self._group_writer is not None:
            async with self._group_writer.write() as conn:
                yield conn
            return
        held = self._held_writer
        if held is None:
            async with self.writer.begin() as conn:
                yield conn
            return
        async with self._writing(), held.using() as conn, conn.begin():
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        held = self._held_readers
        if held is None:
            async with self.reader.connect() as conn:
                yield conn
            return
        async with held.using() as conn:
            yield conn

    async def dispose(self) -> None:
        if self._group_writer is not None:
            await self._group_writer.close()
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.stop)
        for held in (self._held_readers, self._held_writer):
            if held is not None:
                await held.close()
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()


def open_database(url: str, *, pool_size: int = 10, group_commit: bool = True) -> Database:
    """The database at ``url``. On SQLite, ``group_commit=False`` gives each write transaction
    the writer to itself, committed as soon as its block ends: what a process sharing the file
    with an API process wants (``serve``'s delivery process), since a group stays open, holding
    the write lock, until the event loop comes round to commit it."""
    target = async_url(url)
    if target.get_backend_name() == "sqlite":
        writer = _sqlite_engine(target, size=1, overflow=0, writer=True)
        reader = _sqlite_engine(target, size=READERS, overflow=READERS, writer=False)
        checkpointer = WalCheckpointer(str(target.database))
        checkpointer.start()
        group = GroupWriter(writer) if group_commit else None
        return Database(
            url,
            reader,
            writer,
            group,
            checkpointer,
            _held_readers=HeldConnections(reader, keep=READERS),
            _held_writer=None if group_commit else HeldConnections(writer, keep=1),
        )
    engine = create_async_engine(target, pool_size=pool_size, max_overflow=pool_size, **JSON_CODEC)
    db = Database(url, engine, engine)
    _count_round_trips(engine, db.round_trips)
    return db


def _count_round_trips(engine: AsyncEngine, counts: RoundTrips) -> None:
    """Each statement, and each transaction's BEGIN and COMMIT or ROLLBACK, is one exchange
    with the server (psycopg sends BEGIN on its own before the first statement)."""
    sync = engine.sync_engine

    @event.listens_for(sync, "before_cursor_execute")
    def _statement(*_: Any) -> None:
        counts.statements += 1

    @event.listens_for(sync, "begin")
    def _begin(_: Any) -> None:
        counts.transactions += 1
