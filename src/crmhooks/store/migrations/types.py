"""The column types the migrations use, frozen as they were when the migrations were written.

A migration describes a step of history: it must build the same columns whatever
``crmhooks.store.tables`` becomes later, so it imports its types from here, never from the live
modules. Change nothing here; a type that must change gets a new class (and a new migration).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes: naive UTC text on SQLite, ``timestamptz`` on PostgreSQL (a copy of
    ``store.tables.UTCDateTime`` as of migrations 0001 to 0011)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
