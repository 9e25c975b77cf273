"""The delivery log and replay routes of a webhook, and explain (ours; see docs/deliveries.md,
docs/webhooks.md#explain). The operations are ``crmhooks.services.deliveries`` (shared with the
dashboard) and ``crmhooks.services.explain``."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from crmhooks.api import envelopes
from crmhooks.api.routes import (
    PREFIX,
    base_url,
    json_object,
    only_params,
    path_uuid,
    request_context,
    services,
)
from crmhooks.delivery.log import get_delivery, list_deliveries, parse_log_query, parse_time
from crmhooks.errors import NotFound, ParameterInvalid
from crmhooks.hooks.subscription import Subscription
from crmhooks.services.context import Delivery
from crmhooks.services.deliveries import (
    load_webhook,
    recover_failed,
    resend_delivery,
    send_sample_event,
)
from crmhooks.services.explain import explain_event
from crmhooks.services.replay import parse_replay, replay

BASE = PREFIX + "/entities/Webhooks/{webhook_id}"


async def _webhook(request: Request) -> tuple[str, Subscription]:
    """The caller's space and the webhook named in the path (404 if missing or deleted)."""
    svc, ctx = await request_context(request)
    webhook_id = path_uuid(request, "webhook_id")
    return ctx.space_id, await load_webhook(svc.db, ctx.space_id, webhook_id)


def _dispatcher(request: Request) -> Delivery | None:
    dispatcher: Delivery | None = request.app.state.dispatcher
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


async def replay_route(request: Request) -> Response:
    """Plan the window's matching events again for the webhook (or count them)."""
    _, sub = await _webhook(request)
    only_params(request, set())
    win = parse_replay(await json_object(request), datetime.now(UTC))
    svc = services(request)
    base = base_url(request, svc.settings)
    return envelopes.one(await replay(svc.db, _dispatcher(request), sub, win, base))


async def send_test(request: Request) -> Response:
    """Send one sample event now, record it, and answer with the outcome."""
    _, sub = await _webhook(request)
    only_params(request, set())
    svc = services(request)
    return envelopes.one(await send_sample_event(svc.db, svc.sender, sub))


async def explain_route(request: Request) -> Response:
    _, sub = await _webhook(request)
    only_params(request, {"event_id"})
    db = services(request).db
    return envelopes.one(await explain_event(db, sub, request.query_params.get("event_id")))


def delivery_routes() -> list[Route]:
    return [
        Route(BASE + "/explain", explain_route, methods=["GET"]),
        Route(BASE + "/deliveries", list_log, methods=["GET"]),
        Route(BASE + "/deliveries/{delivery_id}", read_log, methods=["GET"]),
        Route(BASE + "/deliveries/{delivery_id}/resend", resend_one, methods=["POST"]),
        Route(BASE + "/recover", recover, methods=["POST"]),
        Route(BASE + "/replay", replay_route, methods=["POST"]),
        Route(BASE + "/test", send_test, methods=["POST"]),
    ]
