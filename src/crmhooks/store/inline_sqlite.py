"""SQLite for SQLAlchemy's async engine, run on the event loop's own thread.

SQLAlchemy's async SQLite dialect drives ``aiosqlite``, which runs every DBAPI call (cursor,
execute, fetch, close, commit) on a thread of its own: each is a queue put, a thread wake-up
and a hand-back to the loop. A create is a dozen such calls, and the hand-offs were a third of
the server's CPU (docs/benchmarks.md). This module offers the same coroutine interface with
each call made directly on :mod:`sqlite3`, so a statement costs what SQLite costs.

It is safe because the statements of this server are short and never wait on each other in the
process: writes take the single writer connection in turn (``Database.write``), WAL readers
never wait for the writer, and a writer waiting for another process's write lock waits in
``asyncio.sleep`` (``engine._begin_immediate``), not in SQLite's busy handler.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Executable, Table, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.store.tables import UTCDateTime


class Cursor:
    __slots__ = ("_cursor",)

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Any = ()) -> Cursor:
        self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> Cursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> Sequence[Any]:
        return self._cursor.fetchmany(self._cursor.arraysize if size is None else size)

    async def fetchall(self) -> Sequence[Any]:
        return self._cursor.fetchall()

    async def nextset(self) -> None:
        return None

    async def close(self) -> None:
        self._cursor.close()


class Connection:
    """What SQLAlchemy's aiosqlite adapter uses of ``aiosqlite.Connection``."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.sqlite = conn
        self._conn = conn  # the name SQLAlchemy's adapter reaches for
        # The adapter looks at ``_connection`` to tell an open connection from a closed one.
        self._connection: sqlite3.Connection | None = conn
        # When this connection took SQLite's write lock (``engine._begin_immediate``), and what
        # to call when its transaction ends (``engine._released``).
        self.lock_taken: float | None = None
        self.on_release: Callable[[Connection], None] | None = None

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    def cursor(self) -> Cursor:
        return Cursor(self._conn.cursor())

    async def execute(self, sql: str, parameters: Any = ()) -> Cursor:
        return Cursor(self._conn.execute(sql, parameters))

    async def commit(self) -> None:
        try:
            self._conn.commit()
        finally:
            self._ended()

    async def rollback(self) -> None:
        try:
            self._conn.rollback()
        finally:
            self._ended()

    def _ended(self) -> None:
        if self.on_release is not None and not self._conn.in_transaction:
            self.on_release(self)

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()


async def connect(database: str, **kwargs: Any) -> Connection:
    """The ``async_creator_fn`` for SQLAlchemy's aiosqlite dialect."""
    # Transactions are ours to begin (``BEGIN IMMEDIATE`` for the writer), so the driver's own
    # transaction handling is off from the start. A connection may be closed by the garbage
    # collector of another thread, hence check_same_thread off; it is only used by the loop.
    kwargs["isolation_level"] = None
    kwargs["check_same_thread"] = False
    return Connection(sqlite3.connect(database, **kwargs))


def driver_of(conn: AsyncConnection) -> sqlite3.Connection | None:
    """The :mod:`sqlite3` connection under ``conn`` when it is one of this module's and in use
    (inside a transaction or a read), else None (PostgreSQL, or not started).

    For the few statements a hot path runs many times: through SQLAlchemy a statement costs
    ~70-100 µs of CPU here (compiled-cache lookup, parameter and result processing, greenlet
    hand-offs), straight on the driver 2-5 µs. Each such statement is compiled once, and its
    values go in through SQLAlchemy's own bind processors (:func:`insert_rows`,
    :func:`driver_rows`, :func:`driver_executemany`); rows come back as the driver's tuples.
    """
    sync = conn.sync_connection
    if sync is None or sync.closed or sync.invalidated:
        return None
    driver = sync.connection.driver_connection
    return driver.sqlite if isinstance(driver, Connection) else None


@dataclass(frozen=True)
class _Insert:
    sql: str
    processors: tuple[Callable[[Any], Any] | None, ...]
    once: tuple[bool, ...]  # per column: processed once per distinct value (date-times)


@lru_cache(maxsize=512)
def _compiled_insert(dialect: Dialect, table: Table, columns: tuple[str, ...]) -> _Insert:
    """``INSERT INTO table (columns) VALUES (?, ...)`` and each column's bind processor for
    ``dialect`` (the very ones SQLAlchemy applies: JSON through the engine's serializer,
    date-times through ``UTCDateTime``, booleans as integers)."""
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in columns)
    marks = ", ".join("?" * len(columns))
    processors = tuple(
        table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns
    )
    once = tuple(isinstance(table.c[c].type, UTCDateTime) for c in columns)
    sql = f"INSERT INTO {quote(table.name)} ({names}) VALUES ({marks})"
    return _Insert(sql, processors, once)


def _once_per_value(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``process`` run once per distinct value of one statement's rows: the rows of one write
    share their date-times (its ``now``), and SQLAlchemy's date-time processing is ~2 µs.
    For ``UTCDateTime`` only, whose output depends on the instant alone: values equal as
    instants (the same time at two offsets) make the same text."""
    done: dict[Any, Any] = {}

    def processed(value: Any) -> Any:
        try:
            return done[value]
        except KeyError:
            out = done[value] = process(value)
            return out

    return processed


async def insert_rows(
    conn: AsyncConnection, table: Table, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Insert ``rows`` (each naming the same columns) into ``table``: on the SQLite driver
    when ``conn`` runs on one (:func:`driver_of`; every create inserts its record and its
    events, and SQLAlchemy's ~80 µs per statement was a tenth of a create), through
    SQLAlchemy otherwise. Columns left out get no Python-side default: name them all."""
    if not rows:
        return
    driver = driver_of(conn)
    if driver is None:
        await conn.execute(insert(table), list(rows))
        return
    columns = tuple(rows[0])
    ins = _compiled_insert(conn.dialect, table, columns)
    processors = (
        _once_per_value(p) if p is not None and once and len(rows) > 1 else p
        for p, once in zip(ins.processors, ins.once, strict=True)
    )
    pairs = tuple(zip(columns, processors, strict=True))
    driver.executemany(ins.sql, [[r[c] if p is None else p(r[c]) for c, p in pairs] for r in rows])


@dataclass(frozen=True)
class _Select:
    sql: str
    names: tuple[str, ...]  # of the positional parameters, in order
    fixed: dict[str, Any]  # the values of the statement's own (literal) parameters
    # each positional parameter's bind processor (None: the value as it is), in that order
    processors: tuple[Callable[[Any], Any] | None, ...]


@lru_cache(maxsize=512)
def _compiled_select(
    dialect: Dialect, stmt: Executable, shape: tuple[tuple[str, int | None], ...]
) -> _Select:
    """``stmt`` compiled for ``dialect``, each parameter of ``shape`` with its length when it
    is an expanding one (as many positional parameters, which SQLAlchemy names ``<name>_1`` ..
    ``<name>_<n>``), None when it is a single value; with the bind processors SQLAlchemy
    applies (date-times through ``UTCDateTime``, booleans as integers)."""
    sample = {name: None if n is None else [None] * n for name, n in shape}
    # each positional name of an expanding parameter -> that parameter's name
    expanded = {f"{name}_{i}": name for name, n in shape if n for i in range(1, n + 1)}
    ours = set(expanded) | {name for name, n in shape if n is None}
    compiled: Any = stmt.compile(dialect=dialect)  # type: ignore[attr-defined]
    state = compiled.construct_expanded_state(sample)
    own = {n: v for n, v in state.parameters.items() if n not in ours}
    names = tuple(state.positiontup or ())
    of_name: dict[str, Any] = dict(compiled._bind_processors)
    of_name.update(state.processors)
    processors = tuple(of_name.get(n) or of_name.get(expanded.get(n, "")) for n in names)
    return _Select(state.statement, names, own, processors)


def _positional(sel: _Select, params: Mapping[str, Any]) -> list[Any]:
    given = dict(sel.fixed)
    for k, v in params.items():
        if isinstance(v, list | tuple):
            given.update({f"{k}_{i}": x for i, x in enumerate(v, 1)})
        else:
            given[k] = v
    return [
        given[n] if p is None or given[n] is None else p(given[n])
        for n, p in zip(sel.names, sel.processors, strict=True)
    ]


def _shape(params: Mapping[str, Any]) -> tuple[tuple[str, int | None], ...]:
    return tuple((k, len(v) if isinstance(v, list | tuple) else None) for k, v in params.items())


async def driver_rows(
    conn: AsyncConnection, stmt: Executable, params: Mapping[str, Any]
) -> Iterable[Any]:
    """The rows of ``stmt`` (built once; a list value is an expanding parameter) on the SQLite
    driver when ``conn`` runs on one, else through SQLAlchemy. Values go in through their
    bind processors, as SQLAlchemy would send them; the rows are the driver's (tuples, no
    result type processing). Any statement: an UPDATE or DELETE runs, and its ``RETURNING``
    rows are the result."""
    driver = driver_of(conn)
    if driver is None:
        return await conn.execute(stmt, dict(params))
    sel = _compiled_select(conn.dialect, stmt, _shape(params))
    return driver.execute(sel.sql, _positional(sel, params))


async def driver_executemany(
    conn: AsyncConnection, stmt: Executable, rows: Sequence[Mapping[str, Any]]
) -> None:
    """``stmt`` once per parameter set of ``rows`` (all of one shape, no list values), on the
    SQLite driver when ``conn`` runs on one, else through SQLAlchemy's executemany."""
    if not rows:
        return
    driver = driver_of(conn)
    if driver is None:
        await conn.execute(stmt, [dict(r) for r in rows])
        return
    sel = _compiled_select(conn.dialect, stmt, _shape(rows[0]))
    driver.executemany(sel.sql, [_positional(sel, r) for r in rows])
