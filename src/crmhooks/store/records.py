"""Entity rows: reading them as records, writing stored values into columns.

A *record* here is the wire form of a row (what ``crmhooks.schema.values.to_wire`` gives): plain
JSON values, dates as strings. Relation URIs and to-many lists are added when a record is shown,
not here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import BindParameter, ColumnElement, Table, and_, false, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from crmhooks.schema.types import EntityType, Field, Kind
from crmhooks.schema.values import to_wire
from crmhooks.store.tables import field_columns, table_for

Record = dict[str, Any]


def table_of(et: EntityType) -> Table:
    return table_for(et.table)


def scope(et: EntityType, space_id: str, *, include_deleted: bool = False) -> ColumnElement[bool]:
    """The rows of this entity type in this space (not deleted, unless asked)."""
    t = table_of(et)
    clauses: list[ColumnElement[bool]] = [t.c.space_id == space_id]
    if et.discriminator:
        col, value = et.discriminator
        clauses.append(t.c[col] == value)
    if not include_deleted:
        clauses.append(t.c.is_deleted == false())
    return and_(*clauses)


def wire_value(f: Field, stored: Any) -> Any:
    """A stored value of any field kind (OBJECT as a dict of stored sub-values) on the wire."""
    if f.kind is Kind.OBJECT:
        if stored is None:
            return None
        return {s.name: to_wire(s, stored.get(s.name)) for s in f.subfields}
    if f.kind is Kind.JSON:
        return list(stored) if isinstance(stored, tuple) else stored
    return to_wire(f, stored)


_Reader = Callable[[Mapping[Any, Any]], Any]


def _column_reader(f: Field, col: str) -> _Reader:
    """How one plain column's stored value becomes its wire value (decided once per field)."""
    k = f.kind
    if k is Kind.DATETIME:
        return lambda row: None if (v := row[col]) is None else to_wire(f, v)
    if k is Kind.DATE:
        return lambda row: None if (v := row[col]) is None else v.isoformat()
    if k is Kind.FLOAT:
        return lambda row: None if (v := row[col]) is None else float(v)
    if k is Kind.BOOLEAN:
        return lambda row: None if (v := row[col]) is None else bool(v)
    if k is Kind.JSON:
        return lambda row: wire_value(f, row[col])
    return lambda row: row[col]


def _reader(f: Field) -> _Reader:
    col = f.column_name
    if col is None:
        return lambda row: (row.get("data") or {}).get(f.name)
    if f.kind is Kind.OBJECT:
        cols = [(s.name, f"{col}__{s.name}") for s in f.subfields]

        def read_object(row: Mapping[Any, Any]) -> Any:
            subs = {name: row[c] for name, c in cols}
            return None if all(v is None for v in subs.values()) else wire_value(f, subs)

        return read_object
    return _column_reader(f, col)


# Readers per entity type, built once (custom types are rebuilt per request: bounded).
_READERS: dict[int, tuple[EntityType, list[tuple[str, _Reader]]]] = {}


def _readers(et: EntityType) -> list[tuple[str, _Reader]]:
    found = _READERS.get(id(et))
    if found is not None and found[0] is et:
        return found[1]
    if len(_READERS) > 1000:
        _READERS.clear()
    readers = [(f.name, _reader(f)) for f in et.fields]
    _READERS[id(et)] = (et, readers)
    return readers


def row_to_record(et: EntityType, row: Mapping[Any, Any]) -> Record:
    """A row as a record (wire values), by readers prepared once per entity type."""
    return {name: read(row) for name, read in _readers(et)}


def to_columns(et: EntityType, stored: Mapping[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """Column values for the given stored field values; JSON-kept fields go into ``data``."""
    cols: dict[str, Any] = {}
    for name, value in stored.items():
        f = et.by_name[name]
        if f.column_name is None:
            data[name] = to_wire(f, value)
            continue
        if f.kind is Kind.OBJECT:
            for col, sub in field_columns(f):
                cols[col] = None if value is None else value.get(sub.name)
        else:
            cols[f.column_name] = list(value) if isinstance(value, tuple) else value
    return cols


async def fetch(
    conn: AsyncConnection,
    et: EntityType,
    space_id: str,
    record_id: str,
    *,
    include_deleted: bool = False,
    for_update: bool = False,
) -> tuple[Record, Mapping[Any, Any]] | None:
    """One record and its raw row, or None."""
    t = table_of(et)
    stmt = select(t).where(
        t.c.id == record_id, scope(et, space_id, include_deleted=include_deleted)
    )
    if for_update:
        stmt = stmt.with_for_update()
    row = (await conn.execute(stmt)).mappings().first()
    if row is None:
        return None
    return row_to_record(et, row), row


class unindexed(FunctionElement[Any]):
    """A column that must not pick the index (SQLite's unary ``+``; a no-op elsewhere)."""

    inherit_cache = True

    def __init__(self, col: ColumnElement[Any]) -> None:
        super().__init__(col)
        self.type = col.type


@compiles(unindexed)
def _unindexed(element: unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(unindexed, "sqlite")
def _unindexed_sqlite(element: unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return "+" + str(compiler.process(element.clauses, **kw))


def by_ids(
    et: EntityType,
    space_id: str | BindParameter[str],
    ids: Sequence[str] | BindParameter[Any],
    *,
    include_deleted: bool = False,
    any_kind: bool = False,
) -> ColumnElement[bool]:
    """These ids in the space, found through the primary key.

    The other terms are kept off the indexes: without statistics SQLite would otherwise walk
    a ``(space_id, ...)`` index through every record of the space (48 ms for 100 of 100,000).
    """
    t = table_of(et)
    clauses: list[ColumnElement[bool]] = [
        t.c.id.in_(ids if isinstance(ids, BindParameter) else list(ids)),
        unindexed(t.c.space_id) == space_id,
    ]
    if et.discriminator and not any_kind:
        col, value = et.discriminator
        clauses.append(unindexed(t.c[col]) == value)
    if not include_deleted:
        clauses.append(unindexed(t.c.is_deleted) == false())
    return and_(*clauses)


async def existing_ids(
    conn: AsyncConnection,
    et: EntityType,
    space_id: str,
    ids: Iterable[str],
    *,
    include_deleted: bool = False,
) -> set[str]:
    """Which of ``ids`` are live records of ``et`` in the space (or deleted ones too)."""
    wanted = sorted(set(ids))
    if not wanted:
        return set()
    t = table_of(et)
    where = by_ids(et, space_id, wanted, include_deleted=include_deleted)
    rows = await conn.execute(select(t.c.id).where(where))
    return {r[0] for r in rows}
