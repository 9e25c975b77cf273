"""Planning: from routed events to the requests to store, pure (no SQL, no clock of its own).

:func:`~crmhooks.delivery.budget.match_within` finds the webhooks each event fires, grouped by
webhook; once their elements are rendered (``hooks.rendering``), :func:`plan_requests` groups
one webhook's elements into requests by chunk (``chunking.plan_chunks``) as
:class:`~crmhooks.delivery.model.PlannedRequest`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import orjson

from crmhooks.delivery.chunking import plan_chunks
from crmhooks.delivery.model import PlannedRequest
from crmhooks.hooks.match import Event
from crmhooks.hooks.subscription import Subscription
from crmhooks.schema.values import new_sorted_id


def plan_requests(
    sub: Subscription,
    events: Sequence[Event],
    elements: Sequence[dict[str, Any]],
    now: datetime,
    make_id: Callable[[], str] = new_sorted_id,
    *,
    replay: bool = False,
) -> list[PlannedRequest]:
    """One webhook's requests for these events (``elements``: their payload elements;
    ``replay``: planned by a replay, sent with ``webhook-replay: true``)."""
    items = [(e.burst_id, (e, el)) for e, el in zip(events, elements, strict=True)]
    groups: dict[str, str] = {}
    planned: list[PlannedRequest] = []
    for chunk in plan_chunks(items, sub.chunk_size, sub.chunk_delay):
        body = orjson.dumps([el for _, el in chunk.items])
        group = None
        if chunk.burst is not None:
            group = groups.setdefault(chunk.burst, make_id())
        planned.append(
            PlannedRequest(
                id=make_id(),
                webhook_id=sub.id,
                space_id=sub.space_id,
                body=body.decode(),
                event_ids=[e.id for e, _ in chunk.items],
                first_seq=chunk.items[0][0].seq,
                created=now,
                delay=chunk.delay,
                chunk_group=group,
                chunk_index=chunk.index if group else None,
                record_ids=sorted({e.record_id for e, _ in chunk.items}),
                replay=replay,
            )
        )
    return planned
