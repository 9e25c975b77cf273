"""What the API and the dashboard do with a webhook's deliveries: load the webhook, resend one
request, recover the failed ones of a window, send a test event.

A webhook or delivery of another space is "not found" exactly like one that never existed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from crmhooks.delivery.health import succeeded
from crmhooks.delivery.log import get_delivery, window
from crmhooks.delivery.model import Sender
from crmhooks.delivery.queue import SqlQueue, resend_in
from crmhooks.errors import NotFound
from crmhooks.hooks.payload import element_id
from crmhooks.hooks.subscription import Subscription, compile_webhook
from crmhooks.schema.registry import WEBHOOKS
from crmhooks.schema.values import format_datetime, new_sorted_id
from crmhooks.services.context import Delivery
from crmhooks.store.catalog import custom_types
from crmhooks.store.engine import Database
from crmhooks.store.records import fetch


async def load_webhook(db: Database, space_id: str, webhook_id: str) -> Subscription:
    """A webhook of the space, compiled; NotFound if it is missing, deleted or another's."""
    async with db.read() as conn:
        found = await fetch(conn, WEBHOOKS, space_id, webhook_id)
        if found is None:
            raise NotFound(f"no Webhooks record with id {webhook_id}")
        record = {**found[0], "space_id": space_id}
        return compile_webhook(record, await custom_types(conn, space_id))


async def resend_delivery(
    db: Database, dispatcher: Delivery | None, sub: Subscription, delivery_id: str
) -> dict[str, Any]:
    """Queue one of the webhook's deliveries again now, as it was (same ``webhook-id``, same
    body) with a fresh retry budget; the delivery as it is then."""
    async with db.write() as conn:
        if await get_delivery(conn, sub.space_id, sub.id, delivery_id) is None:
            raise NotFound(f"webhook {sub.id} has no delivery {delivery_id}")
        await resend_in(conn, [delivery_id], datetime.now(UTC))
        item = await get_delivery(conn, sub.space_id, sub.id, delivery_id)
    assert item is not None
    if dispatcher is not None:
        dispatcher.requeued()
    return item


async def recover_failed(
    db: Database,
    dispatcher: Delivery | None,
    sub: Subscription,
    since: datetime,
    until: datetime | None,
) -> list[str]:
    """Resend every failed request of the webhook created in the window; their ids."""
    window(since, until)
    ids = await SqlQueue(db).recover(sub.space_id, sub.id, since, until)
    if ids and dispatcher is not None:
        dispatcher.requeued()
    return ids


def _sample_event(sub: Subscription) -> str:
    for name in sorted(sub.events):
        if not name.endswith("*"):
            return name
    prefix = sorted(sub.events)[0].split(".")[0]
    return "Account.Create" if prefix == "*" else f"{prefix}.Create"


async def send_sample_event(db: Database, sender: Sender, sub: Subscription) -> dict[str, Any]:
    """Send one sample event to the webhook now, through the application's one ``sender``
    (with or without delivery in this process), and record it in its log; the outcome."""
    now = datetime.now(UTC)
    event_id = new_sorted_id()
    sample = {
        "id": element_id(sub.id, event_id),
        "event": _sample_event(sub),
        "event_time": format_datetime(now),
        "team_space_id": sub.space_id,
        "webhook": sub.webhook,
        "entity": {"id": new_sorted_id(), "name": "crmhooks test event"},
        "related_entity": None,
        "changes": None,
    }
    body = orjson.dumps([sample])
    delivery_id = new_sorted_id()
    result = await sender.send(sub, delivery_id, body)
    await SqlQueue(db).record_test(
        delivery_id=delivery_id,
        webhook_id=sub.id,
        space_id=sub.space_id,
        event_id=event_id,
        body=body.decode(),
        result=result,
        now=now,
    )
    return {
        "delivery_id": delivery_id,
        "success": succeeded(result.status),
        "status_code": result.status,
        "latency_ms": round(result.latency_ms, 3),
        "error": result.error,
        "response_body": result.body,
    }
