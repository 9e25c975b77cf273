"""The webhooks as routing and claiming see them: a cache of every webhook, compiled and filed
by space and event name (``hooks.match.WebhookIndex``), reloaded when one changes.

Routing asks it which webhooks an event fires; claiming and sending ask it for a webhook by id
(:class:`Webhooks`, the interface the dispatcher uses).
"""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

import structlog
from sqlalchemy import func, select, true
from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.errors import ValidationFailed
from crmhooks.hooks.match import Event, WebhookIndex
from crmhooks.hooks.rendering import Catalog
from crmhooks.hooks.subscription import Subscription, compile_webhook
from crmhooks.schema.registry import WEBHOOKS
from crmhooks.store.catalog import custom_types_by_space
from crmhooks.store.records import row_to_record, table_of
from crmhooks.store.tables import table_for
from crmhooks.store.webhook_version import webhooks_version

log = structlog.get_logger("crmhooks.router")


class Webhooks(Protocol):
    """The webhooks by id, as the dispatcher asks for them."""

    def get(self, webhook_id: str) -> Subscription | None:
        """The webhook (active or not), or None if it is gone."""
        ...

    def in_space(self, space_id: str) -> bool:
        """Whether the space has any webhook."""
        ...


async def load_index(conn: AsyncConnection, catalog: Catalog) -> WebhookIndex:
    t = table_of(WEBHOOKS)
    subs: list[Subscription] = []
    for row in (await conn.execute(select(t).where(t.c.is_deleted.is_(False)))).mappings():
        record = {**row_to_record(WEBHOOKS, row), "space_id": row["space_id"]}
        try:
            subs.append(compile_webhook(record, catalog.custom.get(row["space_id"], {})))
        except ValidationFailed as e:  # e.g. a custom entity it filters on was deleted
            log.warning("webhook not loaded", webhook_id=row["id"], error=e.message)
    return WebhookIndex(subs)


async def webhooks_fingerprint(conn: AsyncConnection) -> tuple[Any, ...]:
    """Changes whenever a webhook or a custom entity definition changes, however it was written
    (reads every webhook: checked once a second, beside the version counter)."""
    w, c = table_of(WEBHOOKS), table_for("custom_entities")
    a = select(func.count(), func.max(w.c.modified), func.sum(w.c.revision)).subquery()
    b = select(func.count(), func.max(c.c.modified)).subquery()
    both = select(a, b).select_from(a.join(b, true()))  # one round trip, one row each
    return tuple((await conn.execute(both)).one())


class WebhookCache:
    """Every webhook, compiled, with the entity types they were compiled against."""

    def __init__(self) -> None:
        self.index = WebhookIndex()
        self.catalog = Catalog()
        self._version: int | None = -1  # the webhooks version loaded (-1: never)
        self._fingerprint: tuple[Any, ...] | None = None
        self._checked_at = -math.inf

    def get(self, webhook_id: str) -> Subscription | None:
        return self.index.by_id.get(webhook_id)

    def in_space(self, space_id: str) -> bool:
        return space_id in self.index.spaces

    def route(self, event: Event) -> list[Subscription]:
        """Every webhook that fires for the event, each once."""
        return self.index.route(event)

    def __len__(self) -> int:
        return len(self.index)

    async def refresh(self, conn: AsyncConnection, version: int | None) -> None:
        """Reload the webhooks if they changed. ``version`` (the counter every change through
        this release moves in its own transaction) shows a change at once; the fingerprint,
        checked once a second, shows the others (an older release during a rolling upgrade,
        a change made by hand)."""
        fingerprint = None
        if version == self._version:
            if time.monotonic() - self._checked_at < 1.0:
                return
            self._checked_at = time.monotonic()
            fingerprint = await webhooks_fingerprint(conn)
            if fingerprint == self._fingerprint:
                return
        self._checked_at = time.monotonic()
        # Read before the webhooks: a change in between is only seen twice.
        self._fingerprint = fingerprint or await webhooks_fingerprint(conn)
        self.catalog = Catalog(await custom_types_by_space(conn))
        self.index = await load_index(conn, self.catalog)
        self._version = version

    async def load(self, conn: AsyncConnection) -> None:
        """The webhooks as they are now, reloaded if they changed."""
        await self.refresh(conn, await conn.scalar(select(webhooks_version())))
