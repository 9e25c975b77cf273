"""Pruning: delivered requests, their attempt logs and routed events past the retention age.

Deletes go in small batches, each its own short transaction, so delivery (which shares the
SQLite write lock) is never held up for long. Failed requests are kept for ``recover``. The
statements are the queue's (``SqlQueue.prune``).
"""

from __future__ import annotations

from datetime import datetime

from crmhooks.delivery.queue import Pruned, SqlQueue
from crmhooks.store.engine import Database

__all__ = ["Pruned", "prune"]


async def prune(db: Database, cutoff: datetime, routed_up_to: int | None) -> Pruned:
    """Delete what is older than ``cutoff``; events only up to the router's stored cursor."""
    return await SqlQueue(db).prune(cutoff, routed_up_to)
