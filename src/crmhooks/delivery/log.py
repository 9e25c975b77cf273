"""The delivery log: what was sent to a webhook, how each attempt went, and sending again.

Resending puts a request back in the queue as it was (same ``webhook-id``, same body) with a
fresh retry budget; the dispatcher sends it at once.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import and_, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.errors import ParameterInvalid
from crmhooks.query.params import DEFAULT_PAGE, encode_cursor, page_size
from crmhooks.schema.values import ValueRejected, format_datetime, parse_datetime
from crmhooks.store.tables import deliveries, delivery_attempts

STATUSES = ("pending", "delivered", "failed")
LOG_PARAMS = {"status", "since", "until", "first", "after"}


@dataclass(frozen=True)
class LogQuery:
    statuses: tuple[str, ...]
    since: datetime | None
    until: datetime | None
    limit: int
    after: tuple[datetime, str] | None


def parse_time(raw: str | None, name: str) -> datetime | None:
    if raw is None:
        return None
    try:
        return parse_datetime(raw)
    except ValueRejected as e:
        raise ParameterInvalid(f"{name}: {e}") from None


def window(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and since > until:
        raise ParameterInvalid(
            f"since ({format_datetime(since)}) is after until ({format_datetime(until)})"
        )


def parse_log_query(params: Mapping[str, str]) -> LogQuery:
    for key in params:
        if key not in LOG_PARAMS:
            raise ParameterInvalid(f"unknown parameter {key!r}")
    statuses = tuple(s for s in params.get("status", "").split(",") if s)
    for s in statuses:
        if s not in STATUSES:
            raise ParameterInvalid(f"status: {s!r} is not one of {', '.join(STATUSES)}")
    since, until = (
        parse_time(params.get("since"), "since"),
        parse_time(params.get("until"), "until"),
    )
    window(since, until)
    first = page_size(params, "first") or DEFAULT_PAGE
    after = None
    if "after" in params:
        after = _decode(params["after"])
    return LogQuery(statuses, since, until, first, after)


def _decode(raw: str) -> tuple[datetime, str]:
    try:
        created, rid = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        return parse_datetime(created), str(rid)
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError, ValueRejected):
        raise ParameterInvalid(f"after: {raw!r} is not a cursor") from None


def _delivery(row: Any, attempts: Sequence[Any]) -> dict[str, Any]:
    def when(value: datetime | None) -> str | None:
        return None if value is None else format_datetime(value)

    return {
        "id": row.id,
        "webhook_id": row.webhook_id,
        "status": row.status,
        "event_ids": row.event_ids,
        "event_count": row.event_count,
        "attempts": row.attempts,
        "next_attempt_at": when(row.next_attempt_at) if row.status == "pending" else None,
        "created": when(row.created),
        "delivered_at": when(row.delivered_at),
        "last_status": row.last_status,
        "last_error": row.last_error,
        "attempt_log": [
            {
                "attempt": a.attempt,
                "started": when(a.started),
                "status_code": a.status_code,
                "latency_ms": round(a.latency_ms, 3),
                "error": a.error,
                "response_body": a.response_body,
            }
            for a in attempts
        ],
    }


async def _with_attempts(conn: AsyncConnection, rows: Sequence[Any]) -> list[dict[str, Any]]:
    ids = [r.id for r in rows]
    by_delivery: dict[str, list[Any]] = {i: [] for i in ids}
    if ids:
        found = await conn.execute(
            select(delivery_attempts)
            .where(delivery_attempts.c.delivery_id.in_(ids))
            # In the order made: a resend numbers its attempts from 1 again.
            .order_by(delivery_attempts.c.delivery_id, delivery_attempts.c.id)
        )
        for a in found:
            by_delivery[a.delivery_id].append(a)
    return [_delivery(r, by_delivery[r.id]) for r in rows]


async def list_deliveries(
    conn: AsyncConnection, space_id: str, webhook_id: str, q: LogQuery
) -> tuple[list[dict[str, Any]], int, dict[str, Any]]:
    """A page of a webhook's deliveries, newest first, with the total and page info."""
    d = deliveries.c
    where = [d.space_id == space_id, d.webhook_id == webhook_id]
    if q.statuses:
        where.append(d.status.in_(q.statuses))
    if q.since is not None:
        where.append(d.created >= q.since)
    if q.until is not None:
        where.append(d.created <= q.until)
    page = select(deliveries).where(*where)
    if q.after is not None:
        page = page.where(tuple_(d.created, d.id) < tuple_(*q.after))
    rows = list(await conn.execute(page.order_by(d.created.desc(), d.id.desc()).limit(q.limit + 1)))
    total = (
        await conn.execute(select(func.count()).select_from(deliveries).where(*where))
    ).scalar_one()
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    items = await _with_attempts(conn, rows)

    def cursor(row: Any) -> str:
        return encode_cursor([format_datetime(row.created), row.id])

    info = {
        "start_cursor": cursor(rows[0]) if rows else None,
        "end_cursor": cursor(rows[-1]) if rows else None,
        "has_previous_page": q.after is not None,
        "has_next_page": more,
    }
    return items, int(total), info


async def get_delivery(
    conn: AsyncConnection, space_id: str, webhook_id: str, delivery_id: str
) -> dict[str, Any] | None:
    row = (
        await conn.execute(
            select(deliveries).where(
                deliveries.c.id == delivery_id,
                deliveries.c.webhook_id == webhook_id,
                deliveries.c.space_id == space_id,
            )
        )
    ).first()
    return None if row is None else (await _with_attempts(conn, [row]))[0]


async def resend(conn: AsyncConnection, ids: Sequence[str]) -> None:
    """Queue these deliveries again, now, with a fresh retry budget."""
    if not ids:
        return
    await conn.execute(
        update(deliveries)
        .where(deliveries.c.id.in_(list(ids)))
        .values(status="pending", attempts=0, next_attempt_at=datetime.now(UTC), lease_until=None)
    )


async def failed_between(
    conn: AsyncConnection,
    space_id: str,
    webhook_id: str,
    since: datetime,
    until: datetime | None,
) -> list[str]:
    d = deliveries.c
    clauses = [d.space_id == space_id, d.webhook_id == webhook_id, d.status == "failed"]
    clauses.append(d.created >= since)
    if until is not None:
        clauses.append(d.created <= until)
    rows = await conn.execute(select(d.id).where(and_(*clauses)).order_by(d.created, d.id))
    return [r[0] for r in rows]
