"""The parsed filter evaluated against one record in memory (webhook filters).

It must agree with ``query.sql`` on every record: the property tests run both side by side on
SQLite and PostgreSQL. The rules it shares with the SQL: a record without a value matches only
``null``, ``empty``, ``not-eq`` and ``not-ieq``; text compares by code point; the ``i``
operators fold A-Z only.
"""

from __future__ import annotations

from typing import Any

from crmhooks.query.params import CASE_INSENSITIVE, Condition, Op, ascii_lower
from crmhooks.schema.types import Field, Kind
from crmhooks.schema.values import parse_date, parse_datetime
from crmhooks.store.records import Record


def _value(record: Record, path: str) -> Any:
    head, _, sub = path.partition(".")
    value = record.get(head)
    if sub:
        return value.get(sub) if isinstance(value, dict) else None
    return value


def _typed(f: Field, wire: Any) -> Any:
    """A record's wire value as the stored type filter values are parsed to."""
    if wire is None:
        return None
    if f.kind is Kind.DATETIME:
        return parse_datetime(wire)
    if f.kind is Kind.DATE:
        return parse_date(wire)
    return wire


def _text_match(value: str, op: Op, needle: str) -> bool:
    if op in (Op.CONTAINS, Op.ICONTAINS):
        return needle in value
    if op in (Op.STARTS, Op.ISTARTS):
        return value.startswith(needle)
    return value.endswith(needle)


_last_folded: tuple[str, str] = ("", "")


def _folded(value: str) -> str:
    """``ascii_lower(value)``, remembered for the last value: the webhooks of a space that
    filter one field case-insensitively see the same (up to 100,000-character) text in turn."""
    global _last_folded
    if _last_folded[0] is not value:  # identity: the tuple keeps the text, so its id is its own
        _last_folded = (value, ascii_lower(value))
    return _last_folded[1]


def holds(c: Condition, value: Any) -> bool:
    """Whether one typed value passes one condition."""
    op = c.op
    if op is Op.NULL:
        return value is None
    if op is Op.NOT_NULL:
        return value is not None
    if op in (Op.EMPTY, Op.NOT_EMPTY):
        empty = value is None or value == ""
        return empty if op is Op.EMPTY else not empty
    if value is None:
        return op in (Op.NOT_EQ, Op.NOT_IEQ)
    if op in CASE_INSENSITIVE:
        value = _folded(value)
    if op in (Op.EQ, Op.IEQ):
        return value in c.values
    if op in (Op.NOT_EQ, Op.NOT_IEQ):
        return value not in c.values
    if op is Op.BETWEEN:
        return bool(c.values[0] <= value <= c.values[1])
    if op is Op.GT:
        return any(value > v for v in c.values)
    if op is Op.GTE:
        return any(value >= v for v in c.values)
    if op is Op.LT:
        return any(value < v for v in c.values)
    if op is Op.LTE:
        return any(value <= v for v in c.values)
    return any(_text_match(value, op, v) for v in c.values)


def matches(record: Record, conditions: tuple[Condition, ...]) -> bool:
    """True when the record passes every condition."""
    return first_failing(record, conditions) is None


def first_failing(
    record: Record, conditions: tuple[Condition, ...]
) -> tuple[Condition, Any] | None:
    """The first condition the record fails, with the record's value it compared; None when
    it passes them all (:func:`matches`)."""
    for c in conditions:
        value = _typed(c.target.field, _value(record, c.target.path))
        if not holds(c, value):
            return c, value
    return None
