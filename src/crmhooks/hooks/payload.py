"""The body of a webhook request (contract section 8): one element per event."""

from __future__ import annotations

import uuid
from typing import Any

from crmhooks.hooks.match import Event
from crmhooks.hooks.subscription import Subscription
from crmhooks.schema.values import format_datetime


def element_id(webhook_id: str, event_id: str) -> str:
    """Stable per event and per webhook, so a retry resends the same ids."""
    return str(uuid.uuid5(uuid.UUID(webhook_id), event_id))


def element(
    sub: Subscription,
    event: Event,
    entity: dict[str, Any],
    related: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "id": element_id(sub.id, event.id),
        "event": event.name,
        "event_time": format_datetime(event.occurred),
        "team_space_id": event.space_id,
        "webhook": sub.webhook,
        "entity": entity,
        "related_entity": related,
        "changes": event.changes,
    }
