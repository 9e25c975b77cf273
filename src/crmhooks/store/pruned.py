"""How far retention has pruned the outbox: the highest event seq deleted, kept in
``dispatch_state`` (row ``pruned``). A change feed cursor before it may have missed events that
are gone (410 ``ERROR_CURSOR_EXPIRED``)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.store.tables import dispatch_state

PRUNED = "pruned"


async def mark_pruned(conn: AsyncConnection, seq: int) -> None:
    """Events up to ``seq`` may be gone (in the transaction that deleted them)."""
    now = datetime.now(UTC)
    t = dispatch_state
    moved = await conn.execute(
        update(t).where(t.c.name == PRUNED, t.c.last_seq < seq).values(last_seq=seq, updated=now)
    )
    if moved.rowcount == 0 and await pruned_up_to(conn) is None:
        await conn.execute(insert(t).values(name=PRUNED, last_seq=seq, updated=now))


async def pruned_up_to(conn: AsyncConnection) -> int | None:
    """The highest event seq pruned, None if none ever was."""
    t = dispatch_state
    found = await conn.scalar(select(t.c.last_seq).where(t.c.name == PRUNED))
    return None if found is None else int(found)
