"""The parsed filter evaluated against one record in memory (webhook filters).

It must agree with ``query.sql`` on every record; the tests hold the two side by side.
"""

from __future__ import annotations

from typing import Any

from crmhooks.query.params import Condition, Op
from crmhooks.schema.types import Field, Kind
from crmhooks.schema.values import parse_date, parse_datetime
from crmhooks.store.records import Record


def _value(record: Record, path: str) -> Any:
    head, _, sub = path.partition(".")
    value = record.get(head)
    if sub:
        return None if not isinstance(value, dict) else value.get(sub)
    return value


def _typed(f: Field, wire: Any) -> Any:
    """A record's wire value in the stored type filter values are parsed to."""
    if wire is None:
        return None
    if f.kind is Kind.DATETIME:
        return parse_datetime(wire)
    if f.kind is Kind.DATE:
        return parse_date(wire)
    return wire


def matches(record: Record, conditions: tuple[Condition, ...]) -> bool:
    """True when the record passes every condition."""
    for c in conditions:
        value = _typed(c.field, _value(record, c.path))
        if c.op is Op.EQ and (value is None or value not in c.values):
            return False
    return True
