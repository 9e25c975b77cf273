"""The delivery log: what was sent to a webhook and how each attempt went, as the API and the
dashboard show it (the query parameters, the JSON of a delivery; the reads are the queue's).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.delivery.model import DeliveryStatus
from crmhooks.delivery.queue import LogQuery, attempts_of, log_entry, log_page
from crmhooks.errors import ParameterInvalid
from crmhooks.query.params import DEFAULT_PAGE, encode_cursor, page_size
from crmhooks.schema.values import ValueRejected, format_datetime, parse_datetime

PENDING = DeliveryStatus.PENDING
STATUSES = tuple(DeliveryStatus)
LOG_PARAMS = {"status", "since", "until", "first", "after"}


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
        "replay": bool(row.replay),
        "attempts": row.attempts,
        "next_attempt_at": when(row.next_attempt_at) if row.status == PENDING else None,
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
    by_delivery = await attempts_of(conn, [r.id for r in rows])
    return [_delivery(r, by_delivery[r.id]) for r in rows]


async def list_deliveries(
    conn: AsyncConnection, space_id: str, webhook_id: str, q: LogQuery
) -> tuple[list[dict[str, Any]], int, dict[str, Any]]:
    """A page of a webhook's deliveries, newest first, with the total and page info."""
    rows, total, more = await log_page(conn, space_id, webhook_id, q)
    items = await _with_attempts(conn, rows)

    def cursor(row: Any) -> str:
        return encode_cursor([format_datetime(row.created), row.id])

    info = {
        "start_cursor": cursor(rows[0]) if rows else None,
        "end_cursor": cursor(rows[-1]) if rows else None,
        "has_previous_page": q.after is not None,
        "has_next_page": more,
    }
    return items, total, info


async def get_delivery(
    conn: AsyncConnection, space_id: str, webhook_id: str, delivery_id: str
) -> dict[str, Any] | None:
    row = await log_entry(conn, space_id, webhook_id, delivery_id)
    return None if row is None else (await _with_attempts(conn, [row]))[0]
