"""Which spaces have a live webhook, as one process last looked (at most ``ttl`` seconds ago).

The write path keeps a changed record rendered with its event only for routing to reuse
(``changes.outbox``); a space without webhooks has nobody to route to, so its writes skip that
work. An answer may be stale by up to ``ttl`` (another process made the space's first webhook):
its events are then stored without the rendering, and routing renders them itself. Nothing is
lost or wrong either way, only done later.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.schema.registry import WEBHOOKS
from crmhooks.store.records import scope, table_of


class WebhookSpaces:
    """A per-process cache of "does this space have a live webhook?"."""

    def __init__(
        self,
        ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        max_spaces: int = 10_000,
    ) -> None:
        self.ttl = ttl
        self.clock = clock
        self.max_spaces = max_spaces  # bounds the memory a stream of new spaces can take
        self._seen: dict[str, tuple[bool, float]] = {}

    async def any(self, conn: AsyncConnection, space_id: str) -> bool:
        """Whether ``space_id`` has a live webhook (looked up on ``conn`` when the last answer
        is older than ``ttl``)."""
        now = self.clock()
        seen = self._seen.get(space_id)
        if seen is not None and now - seen[1] < self.ttl:
            return seen[0]
        t = table_of(WEBHOOKS)
        row = await conn.execute(select(t.c.id).where(scope(WEBHOOKS, space_id)).limit(1))
        found = row.first() is not None
        if len(self._seen) >= self.max_spaces:
            self._seen.clear()
        self._seen[space_id] = (found, now)
        return found

    def forget(self, space_id: str) -> None:
        """This process changed the space's webhooks: look again at the next write."""
        self._seen.pop(space_id, None)
