"""Pruning: delivered requests, their attempt logs and routed events past the retention age.

Deletes go in small batches, each its own short transaction, so delivery (which shares the
SQLite write lock) is never held up for long. Failed requests are kept for ``recover``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select

from crmhooks.store.engine import Database
from crmhooks.store.tables import deliveries, delivery_attempts, delivery_bodies, events

BATCH = 1000


@dataclass
class Pruned:
    deliveries: int = 0
    events: int = 0


async def prune(db: Database, cutoff: datetime, routed_up_to: int | None) -> Pruned:
    """Delete what is older than ``cutoff``; events only up to the router's stored cursor."""
    out = Pruned()
    while True:
        async with db.write() as conn:
            ids = [
                r[0]
                for r in await conn.execute(
                    select(deliveries.c.id)
                    .where(deliveries.c.status == "delivered", deliveries.c.delivered_at < cutoff)
                    .limit(BATCH)
                )
            ]
            if ids:
                await conn.execute(
                    delete(delivery_attempts).where(delivery_attempts.c.delivery_id.in_(ids))
                )
                await conn.execute(
                    delete(delivery_bodies).where(delivery_bodies.c.delivery_id.in_(ids))
                )
                await conn.execute(delete(deliveries).where(deliveries.c.id.in_(ids)))
        out.deliveries += len(ids)
        if len(ids) < BATCH:
            break
        await asyncio.sleep(0)
    while routed_up_to is not None:
        async with db.write() as conn:
            seqs = [
                r[0]
                for r in await conn.execute(
                    select(events.c.seq)
                    .where(events.c.occurred < cutoff, events.c.seq <= routed_up_to)
                    .order_by(events.c.seq)
                    .limit(BATCH)
                )
            ]
            if seqs:
                await conn.execute(delete(events).where(events.c.seq.in_(seqs)))
        out.events += len(seqs)
        if len(seqs) < BATCH:
            break
        await asyncio.sleep(0)
    if db.dialect == "sqlite":
        # Keep the planner's statistics fresh as tables grow (PostgreSQL's autovacuum does).
        async with db.write() as conn:
            await conn.exec_driver_sql("PRAGMA analysis_limit=1000")
            await conn.exec_driver_sql("PRAGMA optimize")
    return out
