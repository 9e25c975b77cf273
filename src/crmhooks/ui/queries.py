"""What the dashboard reads beyond the API's own queries: per-webhook figures, the chart's
counts and a request's body. Every query is bounded by the index on
``(webhook_id, created)`` and scoped to the space."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.query.params import parse_list
from crmhooks.query.sql import list_page
from crmhooks.schema.registry import WEBHOOKS
from crmhooks.store.records import Record
from crmhooks.store.tables import deliveries, delivery_bodies

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
    d = deliveries.c
    counts: dict[str, dict[str, int]] = {w: {} for w in webhook_ids}
    if webhook_ids:
        rows = await conn.execute(
            select(d.webhook_id, d.status, func.count())
            .where(
                d.space_id == space_id,
                d.webhook_id.in_(list(webhook_ids)),
                d.created >= now - STATS_WINDOW,
            )
            .group_by(d.webhook_id, d.status)
        )
        for webhook_id, status, n in rows:
            counts[webhook_id][status] = int(n)
    out = {}
    for w in webhook_ids:
        row = (
            await conn.execute(
                select(d.created, d.status, d.last_status, d.last_error, d.id)
                .where(d.space_id == space_id, d.webhook_id == w)
                .order_by(d.created.desc(), d.id.desc())
                .limit(1)
            )
        ).first()
        c = counts[w]
        last = None if row is None else Last(*row)
        out[w] = Stats(c.get("delivered", 0), c.get("failed", 0), c.get("pending", 0), last)
    return out


def _minute(conn: AsyncConnection, col: Any) -> Any:
    """``YYYY-MM-DD HH:MM`` of a UTC time, in SQL (SQLite keeps naive UTC text)."""
    if conn.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", col), "YYYY-MM-DD HH24:MI")
    return func.strftime("%Y-%m-%d %H:%M", col)


async def minute_counts(
    conn: AsyncConnection, space_id: str, webhook_ids: Sequence[str], since: datetime
) -> list[tuple[str, str, int]]:
    """Requests created since ``since`` by minute and by their status now."""
    if not webhook_ids:
        return []
    d = deliveries.c
    minute = _minute(conn, d.created).label("minute")
    rows = await conn.execute(
        select(minute, d.status, func.count())
        .where(d.space_id == space_id, d.webhook_id.in_(list(webhook_ids)), d.created >= since)
        .group_by(minute, d.status)
    )
    return [(str(m), str(s), int(n)) for m, s, n in rows]


async def request_body(conn: AsyncConnection, delivery_id: str) -> str | None:
    """The body sent (or to be sent) for a delivery; the caller has checked whose it is."""
    row = (
        await conn.execute(
            select(delivery_bodies.c.body).where(delivery_bodies.c.delivery_id == delivery_id)
        )
    ).first()
    return None if row is None else str(row[0])
