"""The parsed list query compiled to SQL (the same statements on SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    false,
    func,
    or_,
    select,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.query.params import (
    Condition,
    Cursor,
    ListQuery,
    Op,
    OrderKey,
    encode_cursor,
    typed_value,
)
from crmhooks.schema.types import EntityType, Field, Kind
from crmhooks.schema.values import to_wire
from crmhooks.store.records import Record, row_to_record, scope, table_of


def _operand(et: EntityType, c: Condition) -> tuple[ColumnElement[Any], Any]:
    """The SQL expression a condition reads, and how to present its values to it."""
    t = table_of(et)
    if c.column is not None:
        return t.c[c.column], None
    extracted = t.c.data[c.path]
    k = c.field.kind
    if k is Kind.INTEGER:
        return extracted.as_integer(), None
    if k is Kind.FLOAT:
        return extracted.as_float(), None
    if k is Kind.BOOLEAN:
        return extracted.as_boolean(), None
    return extracted.as_string(), c.field


def condition_sql(et: EntityType, c: Condition) -> ColumnElement[bool]:
    col, wire_field = _operand(et, c)
    values = [to_wire(wire_field, v) if wire_field else v for v in c.values]
    if c.op is Op.EQ:
        return col == values[0] if len(values) == 1 else col.in_(values)
    raise AssertionError(c.op)  # pragma: no cover - Op has no other members


def _cmp(col: ColumnElement[Any], value: Any, greater: bool) -> ColumnElement[bool]:
    """``col`` strictly after ``value`` in an order where NULL sorts first."""
    if greater:
        return col.is_not(None) if value is None else col > value
    return false() if value is None else or_(col < value, col.is_(None))


def _eq(col: ColumnElement[Any], value: Any) -> ColumnElement[bool]:
    return col.is_(None) if value is None else col == value


def keyset(
    et: EntityType, order: tuple[OrderKey, ...], cursor: Cursor, forward: bool
) -> ColumnElement[bool]:
    """Rows strictly after (``forward``) or before the cursor in the given order."""
    t = table_of(et)
    cols = [t.c[k.column] for k in order]
    greater = [(not k.desc) == forward for k in order]
    nullable = any(v is None for v in cursor.values)
    if len(set(greater)) == 1 and not nullable and all(_not_null(et, k) for k in order):
        # One direction and no NULLs: a row-value comparison that both engines seek with an index.
        lhs, rhs = tuple_(*cols), tuple_(*cursor.values)
        return lhs > rhs if greater[0] else lhs < rhs
    clauses = []
    for i, col in enumerate(cols):
        prefix = [_eq(cols[j], cursor.values[j]) for j in range(i)]
        clauses.append(and_(*prefix, _cmp(col, cursor.values[i], greater[i])))
    return or_(*clauses)


def _not_null(et: EntityType, k: OrderKey) -> bool:
    return k.column in ("id", "created", "modified", "revision", "is_deleted")


def _ordered(et: EntityType, order: tuple[OrderKey, ...], forward: bool) -> list[Any]:
    t = table_of(et)
    out = []
    for k in order:
        ascending = (not k.desc) == forward
        col = t.c[k.column]
        out.append(col.asc().nulls_first() if ascending else col.desc().nulls_last())
    return out


def where_clause(et: EntityType, space_id: str, q: ListQuery) -> ColumnElement[bool]:
    return and_(
        scope(et, space_id, include_deleted=q.include_deleted),
        *(condition_sql(et, c) for c in q.conditions),
    )


def page_statement(
    et: EntityType, space_id: str, q: ListQuery, cursor: Cursor | None, forward: bool, limit: int
) -> Select[Any]:
    t = table_of(et)
    stmt = select(t).where(where_clause(et, space_id, q))
    if cursor is not None:
        stmt = stmt.where(keyset(et, q.order, cursor, forward))
    return stmt.order_by(*_ordered(et, q.order, forward)).limit(limit)


def cursor_of(order: tuple[OrderKey, ...], record: Record) -> Cursor:
    values = []
    for k in order:
        head, _, sub = k.path.partition(".")
        value = record.get(head)
        if sub:
            value = None if value is None else value.get(sub)
        values.append(value)
    return Cursor(tuple(_typed(k.field, v) for k, v in zip(order, values, strict=True)))


def _typed(f: Field, wire: Any) -> Any:
    return None if wire is None else typed_value(f, wire, "cursor")


def _wire_cursor(order: tuple[OrderKey, ...], record: Record) -> str:
    values = []
    for k in order:
        head, _, sub = k.path.partition(".")
        value = record.get(head)
        values.append((value or {}).get(sub) if sub else value)
    return encode_cursor(values)


async def list_page(
    conn: AsyncConnection, et: EntityType, space_id: str, q: ListQuery
) -> tuple[list[Record], int, dict[str, Any]]:
    """One page of records, the total that match, and ``page_info``."""
    forward = not q.backward
    rows = (
        (await conn.execute(page_statement(et, space_id, q, q.cursor, forward, q.limit + 1)))
        .mappings()
        .all()
    )
    more = len(rows) > q.limit
    records = [row_to_record(et, r) for r in rows[: q.limit]]
    if not forward:
        records.reverse()
    total = (
        await conn.execute(
            select(func.count()).select_from(table_of(et)).where(where_clause(et, space_id, q))
        )
    ).scalar_one()
    # Is there anything on the far side of where this page starts?
    beyond = False
    if q.cursor is not None:
        anchor = cursor_of(q.order, records[0 if forward else -1]) if records else q.cursor
        probe = page_statement(et, space_id, q, anchor, not forward, 1)
        beyond = (await conn.execute(probe)).first() is not None
    has_next, has_previous = (more, beyond) if forward else (beyond, more)
    info = {
        "start_cursor": _wire_cursor(q.order, records[0]) if records else None,
        "end_cursor": _wire_cursor(q.order, records[-1]) if records else None,
        "has_previous_page": has_previous,
        "has_next_page": has_next,
    }
    return records, int(total), info
