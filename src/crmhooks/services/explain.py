"""Explain (``GET /entities/Webhooks/{id}/explain?event_id=``, docs/webhooks.md#explain): every
matching rule for one stored event and one webhook, decided by the predicates routing uses
(``hooks.match.explain``), and the webhook's deliveries that carried the event."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.delivery.router import EVENT_COLUMNS, stored_event
from crmhooks.errors import NotFound, ParameterInvalid
from crmhooks.hooks.match import Event, explain
from crmhooks.hooks.rendering import Catalog
from crmhooks.hooks.subscription import Subscription, compile_webhook
from crmhooks.schema.registry import WEBHOOKS
from crmhooks.schema.values import is_uuid
from crmhooks.store.catalog import custom_types_by_space
from crmhooks.store.engine import Database
from crmhooks.store.records import row_to_record, scope, table_of
from crmhooks.store.tables import deliveries, events

# A request holds at most 100 events of one webhook, in seq order: the requests that may carry
# an event start at or before it; this many of them are looked at, newest first.
CARRIERS_READ = 1000


async def explain_event(db: Database, sub: Subscription, event_id: str | None) -> dict[str, Any]:
    """The verdict of every rule for the stored event ``event_id`` and the webhook as it is
    now; 400 for a missing or malformed id, 404 for an event the space does not have."""
    async with db.read() as conn:
        custom = await custom_types_by_space(conn, sub.space_id)
        event = await _event(conn, sub.space_id, event_id, Catalog(custom))
        return await _verdict(conn, sub, event)


async def event_verdicts(
    db: Database, space_id: str, event_id: str | None
) -> tuple[Event, list[tuple[Subscription, dict[str, Any]]]]:
    """A stored event of the space and its verdict for each webhook of the space (the
    dashboard's Events page), the webhooks that fired first."""
    async with db.read() as conn:
        custom = await custom_types_by_space(conn, space_id)
        event = await _event(conn, space_id, event_id, Catalog(custom))
        t = table_of(WEBHOOKS)
        rows = await conn.execute(select(t).where(scope(WEBHOOKS, space_id)))
        types = custom.get(space_id, {})
        subs = [
            compile_webhook({**row_to_record(WEBHOOKS, r), "space_id": space_id}, types)
            for r in rows.mappings()
        ]
        verdicts = [(sub, await _verdict(conn, sub, event)) for sub in subs]
    verdicts.sort(key=lambda v: (not v[1]["matched"], v[0].url))
    return event, verdicts


async def _event(
    conn: AsyncConnection, space_id: str, event_id: str | None, catalog: Catalog
) -> Event:
    if not event_id:
        raise ParameterInvalid("event_id: required (an id from GET /events)")
    if not is_uuid(event_id):
        raise ParameterInvalid(f"event_id: {event_id!r} is not an event id (UUID)")
    event_id = event_id.lower()
    row = (
        await conn.execute(
            select(*EVENT_COLUMNS).where(events.c.id == event_id, events.c.space_id == space_id)
        )
    ).first()
    if row is None:
        raise NotFound(f"no event {event_id} in this space (or past retention)")
    event = stored_event(row, catalog)
    if event is None:
        raise NotFound(f"event {event_id} is of a custom entity that no longer exists")
    return event


async def _verdict(conn: AsyncConnection, sub: Subscription, event: Event) -> dict[str, Any]:
    checks = explain(sub, event)
    carriers = await conn.execute(
        select(deliveries.c.id, deliveries.c.event_ids)
        .where(deliveries.c.webhook_id == sub.id, deliveries.c.first_seq <= event.seq)
        .order_by(deliveries.c.first_seq.desc(), deliveries.c.created.desc())
        .limit(CARRIERS_READ)
    )
    carried = [r.id for r in carriers if event.id in (r.event_ids or ())]
    return {
        "event_id": event.id,
        "event": event.name,
        "matched": all(c.passed for c in checks),
        "checks": [{"rule": c.rule, "passed": c.passed, "detail": c.detail} for c in checks],
        "deliveries": carried[::-1],
    }
