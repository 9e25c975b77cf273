"""What the dashboard reads beyond the API's own queries: per-webhook figures, the chart's
counts (``delivery.queue`` reads them, each query bounded by the index on
``(webhook_id, created)`` and scoped to the space)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.delivery.model import DeliveryStatus
from crmhooks.delivery.queue import latest_request, status_counts
from crmhooks.query.params import parse_list
from crmhooks.query.sql import list_page
from crmhooks.schema.registry import WEBHOOKS
from crmhooks.store.records import Record

DELIVERED, FAILED, PENDING = (
    DeliveryStatus.DELIVERED,
    DeliveryStatus.FAILED,
    DeliveryStatus.PENDING,
)

STATS_WINDOW = timedelta(hours=24)
WEBHOOKS_PAGE = 50


@dataclass(frozen=True)
class Last:
    """A webhook's most recent request."""

    created: datetime
    status: str
    last_status: int | None
    last_error: str | None
    delivery_id: str


@dataclass(frozen=True)
class Stats:
    """A webhook's requests of the last 24 hours, and its most recent one (of any age)."""

    delivered: int = 0
    failed: int = 0
    pending: int = 0
    last: Last | None = None

    @property
    def success_rate(self) -> float | None:
        """Delivered among finished requests, 0..1; None when none finished."""
        done = self.delivered + self.failed
        return None if done == 0 else self.delivered / done


async def webhooks_page(
    conn: AsyncConnection, space_id: str, after: str | None
) -> tuple[list[Record], int, dict[str, Any]]:
    """A page of the space's webhooks, newest first, through the list API's own query."""
    params = {"first": str(WEBHOOKS_PAGE), "order-by": "-created"}
    if after:
        params["after"] = after
    return await list_page(conn, WEBHOOKS, space_id, parse_list(WEBHOOKS, params))


async def webhook_stats(
    conn: AsyncConnection, space_id: str, webhook_ids: Sequence[str], now: datetime
) -> dict[str, Stats]:
    counts = await status_counts(conn, space_id, webhook_ids, now - STATS_WINDOW)
    out = {}
    for w in webhook_ids:
        row = await latest_request(conn, space_id, w)
        c = counts[w]
        last = None if row is None else Last(*row)
        out[w] = Stats(c.get(DELIVERED, 0), c.get(FAILED, 0), c.get(PENDING, 0), last)
    return out
