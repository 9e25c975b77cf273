"""A webhook's deliveries page (log, chart, live updates), one delivery's detail, and the
resend, recover and send-test buttons: the API's delivery routes, shown as pages.

The log and the actions are the same functions the API's routes call (``crmhooks.delivery.log``
and ``crmhooks.services.deliveries``); a webhook or delivery of another space is "not found"
exactly like one that never existed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.responses import Response
from starlette.routing import Route

from crmhooks.delivery.log import get_delivery, list_deliveries, parse_log_query, parse_time
from crmhooks.delivery.model import DeliveryStatus
from crmhooks.delivery.queue import minute_counts, request_body
from crmhooks.delivery.signing import headers
from crmhooks.errors import ApiError, NotFound, ParameterInvalid
from crmhooks.hooks.subscription import Subscription
from crmhooks.netguard import shown_url
from crmhooks.schema.values import parse_datetime
from crmhooks.services.context import Delivery, base_url
from crmhooks.services.deliveries import (
    load_webhook,
    recover_failed,
    resend_delivery,
    send_sample_event,
)
from crmhooks.services.replay import parse_replay, replay
from crmhooks.ui import chart
from crmhooks.ui.forms import log_params, one
from crmhooks.ui.web import Dashboard, Page, route
from crmhooks.ui.webhook_pages import NOTICES, load_record, shown_webhook

POLL = "2s"


def _dispatcher(page: Page) -> Delivery | None:
    dispatcher: Delivery | None = page.request.app.state.dispatcher
    return dispatcher


async def _webhook(page: Page) -> Subscription:
    return await load_webhook(page.svc.db, page.space_id, page.path_id("webhook_id"))


async def _log(page: Page, sub: Subscription) -> dict[str, Any]:
    """The log's page, chart and filters for the template; a bad filter is named, not fatal."""
    query = page.request.query_params
    now = datetime.now(UTC)
    filters = {k: query.get(k, "") for k in ("status", "since", "until")}
    context: dict[str, Any] = {
        "filters": filters,
        "filter_error": None,
        "polling": True,
        "statuses": [s.value for s in DeliveryStatus],
    }
    try:
        params = log_params(query)
        q = parse_log_query(params)
    except ParameterInvalid as e:
        params, q, context["filter_error"] = {}, parse_log_query({}), e.message
    async with page.svc.db.read() as conn:
        items, total, info = await list_deliveries(conn, page.space_id, sub.id, q)
        counts = await minute_counts(conn, page.space_id, [sub.id], chart.window_start(now))
    params.pop("after", None)
    context.update(
        deliveries=items,
        total=total,
        page_info=info,
        chart=chart.build(counts, now),
        query=params,
        polling=q.after is None and context["filter_error"] is None,
    )
    return context


async def deliveries_page(
    page: Page, outcome: dict[str, Any] | None = None, status: int = 200
) -> Response:
    sub = await _webhook(page)
    record = await load_record(page, sub.id)
    context = await _log(page, sub)
    notice = NOTICES.get(page.request.query_params.get("notice", ""))
    return page.render(
        "deliveries.html",
        status,
        webhook=shown_webhook(record),
        outcome=outcome,
        notice=notice,
        poll=POLL,
        **context,
    )


async def show_deliveries(page: Page) -> Response:
    return await deliveries_page(page)


async def live(page: Page) -> Response:
    """The part of the deliveries page that refreshes itself: the chart and the newest rows."""
    sub = await _webhook(page)
    context = await _log(page, sub)
    return page.render("_live.html", webhook={"id": sub.id}, poll=POLL, **context)


def _pretty_body(raw: str | None) -> str | None:
    if raw is None:
        return None
    try:
        return orjson.dumps(orjson.loads(raw), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return raw


async def detail_page(page: Page, outcome: str | None = None) -> Response:
    sub = await _webhook(page)
    delivery_id = page.path_id("delivery_id")
    async with page.svc.db.read() as conn:
        item = await get_delivery(conn, page.space_id, sub.id, delivery_id)
        body = await request_body(conn, delivery_id) if item is not None else None
    if item is None:
        raise NotFound(f"there is no delivery {delivery_id} of this webhook")
    attempts = item["attempt_log"]  # in the order they were made
    started = parse_datetime(attempts[-1]["started"]) if attempts else datetime.now(UTC)
    sent = headers(
        sub,
        delivery_id,
        int(started.timestamp()),
        (body or "").encode(),
        started,
        replay=item["replay"],
    )
    template = "_detail.html" if page.request.query_params.get("part") == "detail" else None
    return page.render(
        template or "delivery.html",
        webhook={"id": sub.id, "url": shown_url(sub.url)},
        delivery=item,
        request_headers=sent,
        body=_pretty_body(body),
        outcome=outcome,
        poll=POLL,
    )


async def show_delivery(page: Page) -> Response:
    return await detail_page(page)


async def resend(page: Page) -> Response:
    sub = await _webhook(page)
    delivery_id = page.path_id("delivery_id")
    await resend_delivery(page.svc.db, _dispatcher(page), sub, delivery_id)
    return await detail_page(page, "Queued again with a fresh retry budget; it is sent at once.")


async def recover(page: Page) -> Response:
    sub = await _webhook(page)
    since = parse_time(one(page.form, "since").strip() or None, "since")
    until = parse_time(one(page.form, "until").strip() or None, "until")
    if since is None:
        raise ParameterInvalid("since: a date-time is required to recover failed requests")
    ids = await recover_failed(page.svc.db, _dispatcher(page), sub, since, until)
    outcome = {"kind": "recover", "resent": len(ids)}
    return await deliveries_page(page, outcome)


async def replay_window(page: Page) -> Response:
    """The "Replay a window" form: the API's replay, its counts shown (dry run or planned),
    or why it was refused (a window past retention, a bad time), next to the form."""
    sub = await _webhook(page)
    body = {
        "since": one(page.form, "since").strip() or None,
        "until": one(page.form, "until").strip() or None,
        "dry_run": one(page.form, "dry_run") == "true",
    }
    try:
        win = parse_replay(body, datetime.now(UTC))
        base = base_url(page.request, page.svc.settings)
        counts = await replay(page.svc.db, _dispatcher(page), sub, win, base)
    except ApiError as e:
        return await deliveries_page(page, {"kind": "refused", "message": e.message})
    return await deliveries_page(page, {"kind": "replay", "dry_run": win.dry_run, **counts})


async def send_test(page: Page) -> Response:
    sub = await _webhook(page)
    result = await send_sample_event(page.svc.db, page.svc.sender, sub)
    return await deliveries_page(page, {**result, "kind": "test"})


def delivery_routes(dash: Dashboard) -> list[Route]:
    one_hook = "/webhooks/{webhook_id}"
    one_delivery = one_hook + "/deliveries/{delivery_id}"
    return [
        route(dash, one_hook + "/deliveries", show_deliveries),
        route(dash, one_hook + "/deliveries/live", live),
        route(dash, one_delivery, show_delivery),
        route(dash, one_delivery + "/resend", resend, ("POST",)),
        route(dash, one_hook + "/recover", recover, ("POST",)),
        route(dash, one_hook + "/replay", replay_window, ("POST",)),
        route(dash, one_hook + "/test", send_test, ("POST",)),
    ]
