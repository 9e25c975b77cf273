"""The outbox recorder: a transaction's changes become event rows in the same transaction.

A write that commits has all its events; one that rolls back has none. On PostgreSQL a
transaction-scoped advisory lock is taken just before the events are inserted and held to the
commit, so ``events.seq`` grows in commit order there too (SQLite has one writer anyway).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.changes.events import Draft, drafts
from crmhooks.changes.writer import Action, Change, Recorder, WriteContext
from crmhooks.metrics import EVENTS_RECORDED
from crmhooks.schema.registry import BUILTIN
from crmhooks.schema.types import EntityType
from crmhooks.schema.values import new_sorted_id
from crmhooks.store.catalog import custom_type, target_type
from crmhooks.store.inline_sqlite import insert_rows
from crmhooks.store.records import row_to_record, table_of
from crmhooks.store.tables import events
from crmhooks.store.webhook_spaces import WebhookSpaces
from crmhooks.store.webhook_version import bump_webhooks_version

OUTBOX_LOCK = 0x6372_6D68  # "crmh": one lock id for every event-writing transaction
# What routing reads besides events: a change to these moves the webhooks version.
WEBHOOK_INPUTS = frozenset({"Webhooks", "CustomEntities"})
_KINDS = {"Lead": "Leads", "Opportunity": "Opportunities"}


async def _linked_type(
    conn: AsyncConnection, space_id: str, group: str, row: Any
) -> EntityType | None:
    if group == "LeadOpptys":
        return BUILTIN[_KINDS[row["kind"]]]
    if group == "CustomEntityRecords":
        return await custom_type(conn, space_id, row["ce_api_name"])
    return BUILTIN[group]


async def _resolve(conn: AsyncConnection, space_id: str, d: Draft) -> Draft | None:
    """A DocumentLinked / Comment draft completed with the linked record, or None."""
    group = target_type(d.entity)
    t = table_of(group)
    row = (
        (await conn.execute(select(t).where(t.c.id == d.record_id, t.c.space_id == space_id)))
        .mappings()
        .first()
    )
    if row is None:
        return None
    et = await _linked_type(conn, space_id, d.entity, row)
    if et is None or d.name not in et.events:
        return None
    related = d.related
    if related is None and d.related_entity is not None and d.related_id is not None:
        related = await _load(conn, space_id, BUILTIN[d.related_entity], d.related_id)
    return Draft(
        name=f"{et.event_prefix}.{d.name}",
        entity=et.name,
        record_id=d.record_id,
        record=row_to_record(et, row),
        related_entity=d.related_entity,
        related_id=d.related_id,
        related=related,
    )


async def _load(
    conn: AsyncConnection, space_id: str, et: EntityType, record_id: str
) -> dict[str, Any] | None:
    t = table_of(et)
    row = (
        (await conn.execute(select(t).where(t.c.id == record_id, t.c.space_id == space_id)))
        .mappings()
        .first()
    )
    return None if row is None else row_to_record(et, row)


# PostgreSQL notification channels: events were committed; requests were stored or freed.
EVENTS_CHANNEL = "crmhooks_events"
REQUESTS_CHANNEL = "crmhooks_requests"


async def notify(conn: AsyncConnection, channel: str) -> None:
    """Tell the listening processes when this transaction commits (PostgreSQL; on SQLite the
    one process wakes itself)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": channel})


# Records of one entity type in one space as a webhook shows them by default (the composition
# root passes ``query.render`` with the public base URL: this layer cannot import it).
# (connection, space, entity type, records, fresh) -> the records rendered; ``fresh``: the
# records were created by this write and nothing else in it points at them (empty lists).
RenderRecords = Callable[
    [AsyncConnection, str, EntityType, list[dict[str, Any]], bool],
    Awaitable[list[dict[str, Any]]],
]


def event_recorder(
    render: RenderRecords | None = None, listening: WebhookSpaces | None = None
) -> Recorder:
    """The outbox as a :data:`~crmhooks.changes.writer.Recorder`; with ``render``, each event
    about the changed record itself also keeps that record rendered (``events.rendered``), so
    that routing does not render it again; with ``listening`` too, only in spaces that have a
    webhook (elsewhere nobody routes the event, or routing renders it when the cache was
    stale)."""

    async def recorder(conn: AsyncConnection, ctx: WriteContext, changes: Sequence[Change]) -> None:
        shows = render
        if listening is not None:
            if any(c.entity.name in WEBHOOK_INPUTS for c in changes):
                listening.forget(ctx.space_id)
            if shows is not None and not await listening.any(conn, ctx.space_id):
                shows = None
        await record_events(conn, ctx, changes, render=shows)

    return recorder


async def record_events(
    conn: AsyncConnection,
    ctx: WriteContext,
    changes: Sequence[Change],
    *,
    render: RenderRecords | None = None,
) -> None:
    """Store every event of ``changes`` (a :data:`~crmhooks.changes.writer.Recorder`), and
    count a change to webhooks or custom entities in the webhooks version. With ``render``,
    the events about a changed record keep it rendered (see :func:`event_recorder`)."""
    if any(c.entity.name in WEBHOOK_INPUTS for c in changes):
        await bump_webhooks_version(conn)
    rows: list[dict[str, Any]] = []
    burst = new_sorted_id()
    # Rows to render, by entity type: (row index, record), rendered in one call per type.
    to_render: dict[str, tuple[EntityType, list[tuple[int, dict[str, Any]]]]] = {}
    for change in changes:
        for d in drafts(change):
            resolved = d if d.record is not None else await _resolve(conn, ctx.space_id, d)
            if resolved is None or resolved.record is None:
                continue
            if render is not None and resolved.entity == change.entity.name:
                group = to_render.setdefault(change.entity.name, (change.entity, []))
                group[1].append((len(rows), resolved.record))
            rows.append(
                {
                    "id": new_sorted_id(),
                    "space_id": ctx.space_id,
                    "name": resolved.name,
                    "entity": resolved.entity,
                    "record_id": resolved.record_id,
                    "record": resolved.record,
                    "changes": resolved.changes,
                    "related_entity": resolved.related_entity,
                    "related_id": resolved.related_id,
                    "related": resolved.related,
                    "skip_key": ctx.skip_key,
                    "burst_id": burst,
                    "key_id": ctx.key_id,
                    "occurred": change.at,
                    "rendered": None,
                }
            )
    if not rows:
        return
    # A write of creates alone, all of one entity type, made records nothing points at yet:
    # their lists are empty, without the queries (a nested or shorthand link is a change of
    # its own, of another type; ids are the server's, so no item names another's record).
    first = changes[0].entity
    fresh = all(c.action is Action.CREATE and c.entity is first for c in changes)
    if render is not None:
        for et, items in to_render.values():
            shown = await render(conn, ctx.space_id, et, [r for _, r in items], fresh)
            for (i, _), s in zip(items, shown, strict=True):
                rows[i]["rendered"] = orjson.dumps(s, option=orjson.OPT_NON_STR_KEYS).decode()
    if conn.dialect.name == "postgresql":
        # The lock keeps seq in commit order; the notification reaches every listening worker
        # when (and only if) this transaction commits.
        await conn.execute(
            # Keyed by the schema too: one schema's writers never wait for another's.
            text(
                "SELECT pg_advisory_xact_lock(:k, hashtext(current_schema())),"
                " pg_notify(:channel, :space)"
            ),
            # The space is the payload: the change feed's long-polls of other API processes
            # wake for their own space only.
            {"k": OUTBOX_LOCK, "channel": EVENTS_CHANNEL, "space": ctx.space_id},
        )
    await insert_rows(conn, events, rows)
    EVENTS_RECORDED.inc(len(rows))  # counted before the commit: an aborted write over-counts
