"""The webhooks version: a counter that every change to webhooks or custom entity definitions
moves in its own transaction (migration 0008), so that routing in any process sees the change
before the events committed after it, for one indexed read per routing step."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.store.tables import dispatch_state

WEBHOOKS_VERSION = "webhooks"  # its row of dispatch_state


async def bump_webhooks_version(conn: AsyncConnection) -> None:
    """Count one change, committed (or rolled back) with the transaction of ``conn``."""
    t = dispatch_state
    await conn.execute(
        update(t)
        .where(t.c.name == WEBHOOKS_VERSION)
        .values(last_seq=t.c.last_seq + 1, updated=datetime.now(UTC))
    )


def webhooks_version() -> ColumnElement[int]:
    """The counter as a scalar subquery (NULL before migration 0008 ran)."""
    t = dispatch_state
    return select(t.c.last_seq).where(t.c.name == WEBHOOKS_VERSION).scalar_subquery()
