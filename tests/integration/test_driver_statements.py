"""Statements run straight on the SQLite driver (``store.inline_sqlite``) store exactly what
the same statements through SQLAlchemy store: every column type of the schema, every table."""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Table, bindparam, insert, literal, select
from sqlalchemy.types import JSON, BigInteger, Boolean, Date, Double, Integer, SmallInteger

from crmhooks.store.engine import open_database
from crmhooks.store.inline_sqlite import driver_executemany, driver_of, driver_rows, insert_rows
from crmhooks.store.tables import UTCDateTime, metadata
from tests.support.databases import migrated_sqlite

PLUS_TWO = timezone(timedelta(hours=2))


def _value(table: Table, column: str, i: int) -> Any:
    """A value of the column's type, varied by row (``None`` in every other row where the
    column takes it: JSON's None and SQL NULL are where the two paths could differ)."""
    c = table.c[column]
    if c.nullable and i % 2:
        return None
    t = c.type
    if isinstance(t, UTCDateTime):
        # Rows share date-times, as a write's rows share its ``now``, one of them written at
        # another offset (insert_rows processes each distinct value once).
        base = datetime(2026, 12, 1, 10, 30, 15, 123456, tzinfo=PLUS_TWO)
        return [base, base + timedelta(days=1), base.astimezone(UTC), base][i % 4]
    if isinstance(t, JSON):
        return {"name": f"Ærø {i}", "list": [1, 2.5, None, True], "nested": {"k": "v"}}
    if isinstance(t, Boolean):
        return bool(i % 2)
    if isinstance(t, Date):
        return date(2026, 1, 1 + i)
    if isinstance(t, Double):
        return 1.25 + i
    if isinstance(t, SmallInteger | Integer | BigInteger):
        return 7 + i
    return str(uuid.uuid4()) if c.primary_key else f"text {i} ☃"


async def test_insert_rows_stores_what_sqlalchemy_stores(tmp_path: Path) -> None:
    template = migrated_sqlite(tmp_path / "template.db")
    paths = {way: tmp_path / f"{way}.db" for way in ("driver", "sqlalchemy")}
    for path in paths.values():
        shutil.copy(template, path)
    tables = [t for t in metadata.sorted_tables if t.name != "alembic_version"]
    rows = {
        t.name: [
            {c.name: _value(t, c.name, i) for c in t.c if c.autoincrement is not True}
            for i in range(4)
        ]
        for t in tables
    }
    for way, path in paths.items():
        db = open_database(f"sqlite:///{path}")
        try:
            async with db.write() as conn:
                assert driver_of(conn) is not None
                for t in tables:
                    if way == "driver":
                        await insert_rows(conn, t, rows[t.name])
                    else:
                        await conn.execute(insert(t), rows[t.name])
        finally:
            await db.dispose()
    stored = {}
    for way, path in paths.items():
        conn = sqlite3.connect(path)
        try:
            stored[way] = {
                t.name: conn.execute(f'SELECT * FROM "{t.name}" ORDER BY rowid').fetchall()
                for t in tables
            }
        finally:
            conn.close()
    for t in tables:
        assert len(stored["driver"][t.name]) >= 4, t.name  # and what migrations put there
        assert stored["driver"][t.name] == stored["sqlalchemy"][t.name], t.name


async def test_driver_rows_answers_what_sqlalchemy_answers(tmp_path: Path) -> None:
    """A statement with an expanding parameter, a single one and literals of its own, run on
    the driver for several lengths of the list, gives SQLAlchemy's rows."""
    t = metadata.tables["clients"]
    rows = [{c.name: _value(t, c.name, 0) for c in t.c} | {"space_id": space} for space in "ab" * 3]
    stmt = (
        select(literal("tag").label("tag"), t.c.space_id, t.c.id)
        .where(t.c.id.in_(bindparam("ids", expanding=True)), t.c.space_id == bindparam("space"))
        .order_by(t.c.id)
    )
    db = open_database(f"sqlite:///{migrated_sqlite(tmp_path / 'rows.db')}")
    try:
        async with db.write() as conn:
            await insert_rows(conn, t, rows)
            ids = sorted(r["id"] for r in rows)
            for n in (0, 1, 4, 6):
                params = {"ids": ids[:n], "space": "a"}
                expected = [tuple(r) for r in await conn.execute(stmt, params)]
                got = [tuple(r) for r in await driver_rows(conn, stmt, params)]
                assert got == expected, n
                assert len(got) == sum(
                    1 for r in rows if r["id"] in ids[:n] and r["space_id"] == "a"
                )
    finally:
        await db.dispose()


async def test_typed_parameters_go_in_as_sqlalchemy_sends_them(tmp_path: Path) -> None:
    """``driver_rows`` and ``driver_executemany`` apply each parameter's bind processor: an
    UPDATE with a date-time and a boolean, run many times on the driver, leaves the rows as the
    same UPDATE through SQLAlchemy does, and a date-time compares in a WHERE as it is stored."""
    t = metadata.tables["webhooks"]
    rows = [{c.name: _value(t, c.name, i) for c in t.c} for i in range(4)]
    change = (
        t.update()
        .where(t.c.id == bindparam("w_id"))
        .values(
            failing_since=bindparam("w_at", type_=t.c.failing_since.type),
            is_active=bindparam("w_on", type_=t.c.is_active.type),
        )
    )
    at = datetime(2027, 3, 4, 5, 6, 7, 891011, tzinfo=PLUS_TWO)
    source = migrated_sqlite(tmp_path / "typed.db")
    twin = tmp_path / "twin.db"
    shutil.copy(source, twin)
    stored: list[list[tuple[Any, ...]]] = []
    for path, on_driver in ((source, True), (twin, False)):
        db = open_database(f"sqlite:///{path}")
        try:
            async with db.write() as conn:
                await conn.execute(insert(t), rows)
                sets = [
                    {"w_id": r["id"], "w_at": at, "w_on": bool(i % 2)} for i, r in enumerate(rows)
                ]
                if on_driver:
                    assert driver_of(conn) is not None
                    await driver_executemany(conn, change, sets)
                    later = select(t.c.id).where(
                        t.c.failing_since >= bindparam("since", type_=t.c.failing_since.type)
                    )
                    found = await driver_rows(conn, later, {"since": at - timedelta(seconds=1)})
                    assert sorted(r[0] for r in found) == sorted(r["id"] for r in rows)
                else:
                    await conn.execute(change, sets)
        finally:
            await db.dispose()
        with sqlite3.connect(path) as raw:
            stored.append(raw.execute("SELECT * FROM webhooks ORDER BY id").fetchall())
    assert stored[0] == stored[1]
