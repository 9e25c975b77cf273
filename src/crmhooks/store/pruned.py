"""How far retention has pruned the outbox, kept in ``dispatch_state`` (row ``pruned``): the
highest event seq deleted (``last_seq``) and the time before which events may be gone
(``updated``: the latest pruning cutoff). A change feed cursor before that seq, or a replay
window starting before that time, may miss events that are gone (410 ``ERROR_CURSOR_EXPIRED``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.store.tables import dispatch_state

PRUNED = "pruned"


async def mark_pruned(conn: AsyncConnection, seq: int, before: datetime) -> None:
    """Events up to ``seq``, of times before ``before``, may be gone (in the transaction that
    deleted them)."""
    t = dispatch_state
    found = (
        await conn.execute(select(t.c.last_seq, t.c.updated).where(t.c.name == PRUNED))
    ).first()
    if found is None:
        await conn.execute(insert(t).values(name=PRUNED, last_seq=seq, updated=before))
        return
    values = {"last_seq": max(int(found[0]), seq), "updated": max(found[1], before)}
    await conn.execute(update(t).where(t.c.name == PRUNED).values(**values))


async def pruned_up_to(conn: AsyncConnection) -> int | None:
    """The highest event seq pruned, None if none ever was."""
    t = dispatch_state
    found = await conn.scalar(select(t.c.last_seq).where(t.c.name == PRUNED))
    return None if found is None else int(found)


async def pruned_before(conn: AsyncConnection) -> datetime | None:
    """The time before which events may have been pruned, None if none ever was."""
    t = dispatch_state
    found: datetime | None = await conn.scalar(select(t.c.updated).where(t.c.name == PRUNED))
    return found
