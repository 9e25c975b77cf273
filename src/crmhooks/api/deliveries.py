"""The delivery log and replay routes of a webhook (ours; see docs/deliveries.md)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import insert
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from crmhooks.api import envelopes
from crmhooks.api.routes import (
    PREFIX,
    Services,
    json_object,
    only_params,
    path_uuid,
    request_context,
    services,
)
from crmhooks.delivery.dispatcher import Dispatcher
from crmhooks.delivery.log import (
    failed_between,
    get_delivery,
    list_deliveries,
    parse_log_query,
    parse_time,
    resend,
    window,
)
from crmhooks.delivery.sender import Outcome, Sender
from crmhooks.errors import NotFound, ParameterInvalid
from crmhooks.hooks.payload import element_id
from crmhooks.hooks.subscription import Subscription, compile_webhook
from crmhooks.netguard import Guard, parse_allowed
from crmhooks.schema.registry import WEBHOOKS
from crmhooks.schema.values import format_datetime
from crmhooks.settings import Settings
from crmhooks.store.catalog import custom_types
from crmhooks.store.engine import Database
from crmhooks.store.records import fetch
from crmhooks.store.tables import deliveries, delivery_attempts, delivery_bodies

BASE = PREFIX + "/entities/Webhooks/{webhook_id}"


async def load_webhook(db: Database, space_id: str, webhook_id: str) -> Subscription:
    """A webhook of the space, compiled; NotFound if it is missing, deleted or another's."""
    async with db.read() as conn:
        found = await fetch(conn, WEBHOOKS, space_id, webhook_id)
        if found is None:
            raise NotFound(f"no Webhooks record with id {webhook_id}")
        record = {**found[0], "space_id": space_id}
        return compile_webhook(record, await custom_types(conn, space_id))


async def _webhook(request: Request) -> tuple[str, Subscription]:
    """The caller's space and the webhook named in the path (404 if missing or deleted)."""
    svc, ctx = await request_context(request)
    webhook_id = path_uuid(request, "webhook_id")
    return ctx.space_id, await load_webhook(svc.db, ctx.space_id, webhook_id)


def _dispatcher(request: Request) -> Dispatcher | None:
    dispatcher: Dispatcher | None = request.app.state.dispatcher
    return dispatcher


async def list_log(request: Request) -> Response:
    space_id, sub = await _webhook(request)
    q = parse_log_query(request.query_params)
    async with services(request).db.read() as conn:
        items, total, info = await list_deliveries(conn, space_id, sub.id, q)
    return envelopes.many(items, total, info)


async def read_log(request: Request) -> Response:
    space_id, sub = await _webhook(request)
    delivery_id = path_uuid(request, "delivery_id")
    only_params(request, set())
    async with services(request).db.read() as conn:
        item = await get_delivery(conn, space_id, sub.id, delivery_id)
    if item is None:
        raise NotFound(f"webhook {sub.id} has no delivery {delivery_id}")
    return envelopes.one(item)


async def resend_one(request: Request) -> Response:
    _, sub = await _webhook(request)
    delivery_id = path_uuid(request, "delivery_id")
    only_params(request, set())
    db = services(request).db
    return envelopes.one(await resend_delivery(db, _dispatcher(request), sub, delivery_id))


async def resend_delivery(
    db: Database, dispatcher: Dispatcher | None, sub: Subscription, delivery_id: str
) -> dict[str, Any]:
    """Queue one of the webhook's deliveries again now; the delivery as it is then."""
    async with db.write() as conn:
        if await get_delivery(conn, sub.space_id, sub.id, delivery_id) is None:
            raise NotFound(f"webhook {sub.id} has no delivery {delivery_id}")
        await resend(conn, [delivery_id])
        item = await get_delivery(conn, sub.space_id, sub.id, delivery_id)
    assert item is not None
    if dispatcher is not None:
        dispatcher.requeued()
    return item


async def recover(request: Request) -> Response:
    _, sub = await _webhook(request)
    only_params(request, set())
    body = await json_object(request)
    unknown = set(body) - {"since", "until"}
    if unknown:
        raise ParameterInvalid(f"recover takes since and until, not {', '.join(sorted(unknown))}")
    if not isinstance(body.get("since"), str):
        raise ParameterInvalid("since: a date-time is required")
    until_raw = body.get("until")
    if until_raw is not None and not isinstance(until_raw, str):
        raise ParameterInvalid("until: expected a date-time string")
    since, until = parse_time(body["since"], "since"), parse_time(until_raw, "until")
    assert since is not None
    ids = await recover_failed(services(request).db, _dispatcher(request), sub, since, until)
    return envelopes.one({"resent": len(ids), "delivery_ids": ids})


async def recover_failed(
    db: Database,
    dispatcher: Dispatcher | None,
    sub: Subscription,
    since: datetime,
    until: datetime | None,
) -> list[str]:
    """Resend every failed request of the webhook created in the window; their ids."""
    window(since, until)
    async with db.write() as conn:
        ids = await failed_between(conn, sub.space_id, sub.id, since, until)
        await resend(conn, ids)
    if ids and dispatcher is not None:
        dispatcher.requeued()
    return ids


def _sample_event(sub: Subscription) -> str:
    for name in sorted(sub.events):
        if not name.endswith("*"):
            return name
    prefix = sorted(sub.events)[0].split(".")[0]
    return "Account.Create" if prefix == "*" else f"{prefix}.Create"


async def send_test(request: Request) -> Response:
    """Send one sample event now, record it, and answer with the outcome."""
    _, sub = await _webhook(request)
    only_params(request, set())
    return envelopes.one(await send_sample_event(services(request), _dispatcher(request), sub))


async def send_sample_event(
    svc: Services, dispatcher: Dispatcher | None, sub: Subscription
) -> dict[str, Any]:
    """Send one sample event to the webhook now and record it in its log; the outcome."""
    now = datetime.now(UTC)
    event_id = str(uuid.uuid4())
    sample = {
        "id": element_id(sub.id, event_id),
        "event": _sample_event(sub),
        "event_time": format_datetime(now),
        "team_space_id": sub.space_id,
        "webhook": sub.webhook,
        "entity": {"id": str(uuid.uuid4()), "name": "crmhooks test event"},
        "related_entity": None,
        "changes": None,
    }
    body = orjson.dumps([sample])
    delivery_id = str(uuid.uuid4())
    sender = dispatcher.sender if dispatcher is not None else _own_sender(svc.settings)
    try:
        outcome = await sender.send(sub, delivery_id, body)
    finally:
        if dispatcher is None:
            await sender.close()
    await _record_test(svc.db, sub, delivery_id, event_id, body, outcome, now)
    ok = outcome.status is not None and 200 <= outcome.status < 300
    return {
        "delivery_id": delivery_id,
        "success": ok,
        "status_code": outcome.status,
        "latency_ms": round(outcome.latency_ms, 3),
        "error": outcome.error,
        "response_body": outcome.body,
    }


def _own_sender(settings: Settings) -> Sender:
    return Sender(
        Guard(parse_allowed(settings.allowed_targets)),
        connect_timeout=settings.connect_timeout,
        total_timeout=settings.request_timeout,
    )


async def _record_test(
    db: Database,
    sub: Subscription,
    delivery_id: str,
    event_id: str,
    body: bytes,
    outcome: Outcome,
    now: datetime,
) -> None:
    ok = outcome.status is not None and 200 <= outcome.status < 300
    row: dict[str, Any] = {
        "id": delivery_id,
        "webhook_id": sub.id,
        "space_id": sub.space_id,
        "status": "delivered" if ok else "failed",
        "event_ids": [event_id],
        "event_count": 1,
        "first_seq": 0,
        "attempts": 1,
        "next_attempt_at": now,
        "created": now,
        "delivered_at": datetime.now(UTC) if ok else None,
        "last_status": outcome.status,
        "last_error": outcome.error,
    }
    async with db.write() as conn:
        await conn.execute(insert(deliveries).values(**row))
        await conn.execute(
            insert(delivery_bodies).values(delivery_id=delivery_id, body=body.decode())
        )
        await conn.execute(
            insert(delivery_attempts).values(
                delivery_id=delivery_id,
                attempt=1,
                started=outcome.started,
                status_code=outcome.status,
                latency_ms=outcome.latency_ms,
                error=outcome.error,
                response_body=outcome.body,
            )
        )


def delivery_routes() -> list[Route]:
    return [
        Route(BASE + "/deliveries", list_log, methods=["GET"]),
        Route(BASE + "/deliveries/{delivery_id}", read_log, methods=["GET"]),
        Route(BASE + "/deliveries/{delivery_id}/resend", resend_one, methods=["POST"]),
        Route(BASE + "/recover", recover, methods=["POST"]),
        Route(BASE + "/test", send_test, methods=["POST"]),
    ]
