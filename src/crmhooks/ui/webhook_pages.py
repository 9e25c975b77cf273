"""The webhooks page and its forms: list, create, edit, pause, resume, delete.

Every change goes through the API's write path (``Services.writes``) with the webhook validator
it was built with, so a form is judged exactly as ``POST /entities/Webhooks`` would judge its
body, its events are raised the same way, and a refusal changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from crmhooks.delivery.queue import minute_counts
from crmhooks.errors import NotFound, ValidationFailed
from crmhooks.netguard import shown_url
from crmhooks.query.render import mask
from crmhooks.schema.registry import WEBHOOKS
from crmhooks.store.records import Record, fetch
from crmhooks.ui import chart
from crmhooks.ui.forms import (
    WebhookForm,
    errors_by_field,
    event_groups,
    form_of_record,
    read_webhook_form,
    webhook_body,
)
from crmhooks.ui.queries import webhook_stats, webhooks_page
from crmhooks.ui.web import Dashboard, Page, route

NOTICES = {
    "deleted": "The webhook was deleted.",
    "paused": "The webhook is paused: nothing is sent to it until it is resumed.",
    "resumed": "The webhook is active again.",
    "saved": "The webhook was saved.",
}
# Where pause and resume go back to: a name, never a URL (no open redirect).
RETURN_TO = {"list": "/webhooks", "deliveries": "/webhooks/{id}/deliveries"}


async def load_record(page: Page, webhook_id: str) -> Record:
    """A webhook of the visitor's space; another space's is as missing as one never made."""
    async with page.svc.db.read() as conn:
        found = await fetch(conn, WEBHOOKS, page.space_id, webhook_id)
    if found is None:
        raise NotFound(f"there is no webhook {webhook_id} in this space")
    return found[0]


def shown_webhook(record: Record) -> dict[str, Any]:
    """A webhook for the page: its secret masked, and its URL's credentials (a row stored
    before registration refused them), as the API shows them."""
    url = record.get("url")
    return {
        **record,
        "signature": mask(record.get("signature")),
        "url": shown_url(url) if isinstance(url, str) else url,
    }


async def list_webhooks(page: Page) -> Response:
    after = page.request.query_params.get("after") or None
    now = datetime.now(UTC)
    async with page.svc.db.read() as conn:
        records, total, info = await webhooks_page(conn, page.space_id, after)
        ids = [str(r["id"]) for r in records]
        stats = await webhook_stats(conn, page.space_id, ids, now)
        counts = await minute_counts(conn, page.space_id, ids, chart.window_start(now))
    return page.render(
        "webhooks.html",
        webhooks=[shown_webhook(r) for r in records],
        stats=stats,
        total=total,
        page_info=info,
        chart=chart.build(counts, now),
        notice=NOTICES.get(page.request.query_params.get("notice", "")),
    )


def _form_page(
    page: Page,
    form: WebhookForm,
    *,
    webhook_id: str | None = None,
    errors: dict[str, list[str]] | None = None,
    status: int = 200,
) -> Response:
    return page.render(
        "webhook_form.html",
        status,
        form=form,
        groups=event_groups(),
        webhook_id=webhook_id,
        errors=errors or {},
        message=None if not errors else "The webhook was not saved: see the fields marked below.",
    )


async def new_form(page: Page) -> Response:
    return _form_page(page, WebhookForm())


async def create(page: Page) -> Response:
    form = read_webhook_form(page.form)
    try:
        body = webhook_body(form, creating=True)
        ctx = await page.svc.writes.precheck(page.ctx, WEBHOOKS, [body])
        async with page.svc.writes.begin(ctx) as writer:
            record = await writer.create(WEBHOOKS, body)
    except ValidationFailed as e:
        return _form_page(page, form, errors=errors_by_field(e), status=422)
    if record.get("signature_scheme") == "standard-webhooks" and not form.signature:
        # The generated secret is shown once, as the API's create response shows it.
        return page.render("webhook_created.html", webhook=record)
    return page.redirect(f"/webhooks/{record['id']}/deliveries")


async def edit_form(page: Page) -> Response:
    webhook_id = page.path_id("webhook_id")
    record = await load_record(page, webhook_id)
    return _form_page(page, form_of_record(record), webhook_id=webhook_id)


async def update(page: Page) -> Response:
    webhook_id = page.path_id("webhook_id")
    await load_record(page, webhook_id)
    form = read_webhook_form(page.form)
    try:
        body = webhook_body(form, creating=False)
        ctx = await page.svc.writes.precheck(page.ctx, WEBHOOKS, [body])
        async with page.svc.writes.begin(ctx) as writer:
            await writer.update(WEBHOOKS, webhook_id, body)
    except ValidationFailed as e:
        return _form_page(page, form, webhook_id=webhook_id, errors=errors_by_field(e), status=422)
    return page.redirect("/webhooks?notice=saved")


async def _set_active(page: Page, active: bool) -> Response:
    webhook_id = page.path_id("webhook_id")
    async with page.svc.writes.begin(page.ctx) as writer:
        await writer.update(WEBHOOKS, webhook_id, {"is_active": active})
    back = RETURN_TO.get(page.form.get("return_to", ["list"])[0], RETURN_TO["list"])
    notice = "resumed" if active else "paused"
    return page.redirect(back.format(id=webhook_id) + f"?notice={notice}")


async def pause(page: Page) -> Response:
    return await _set_active(page, False)


async def resume(page: Page) -> Response:
    return await _set_active(page, True)


async def delete_confirm(page: Page) -> Response:
    webhook_id = page.path_id("webhook_id")
    record = await load_record(page, webhook_id)
    return page.render("webhook_delete.html", webhook=shown_webhook(record))


async def delete(page: Page) -> Response:
    webhook_id = page.path_id("webhook_id")
    async with page.svc.writes.begin(page.ctx) as writer:
        await writer.delete(WEBHOOKS, webhook_id)
    return page.redirect("/webhooks?notice=deleted")


def webhook_routes(dash: Dashboard) -> list[Route]:
    one = "/webhooks/{webhook_id}"
    return [
        route(dash, "/webhooks", list_webhooks),
        route(dash, "/webhooks/new", new_form),
        route(dash, "/webhooks/new", create, ("POST",)),
        route(dash, one + "/edit", edit_form),
        route(dash, one + "/edit", update, ("POST",)),
        route(dash, one + "/pause", pause, ("POST",)),
        route(dash, one + "/resume", resume, ("POST",)),
        route(dash, one + "/delete", delete_confirm),
        route(dash, one + "/delete", delete, ("POST",)),
    ]
