"""The body of a webhook request (docs/webhooks.md#the-body): one element per event."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson

from crmhooks.hooks.match import Event
from crmhooks.hooks.subscription import Subscription
from crmhooks.schema.values import format_datetime


@lru_cache(maxsize=65_536)
def _namespace(webhook_id: str) -> bytes:
    return uuid.UUID(webhook_id).bytes


def element_id(webhook_id: str, event_id: str) -> str:
    """Stable per event and per webhook, so a retry resends the same ids.

    ``str(uuid.uuid5(UUID(webhook_id), event_id))``, written out: the same SHA-1, version and
    variant bits, without building two UUID objects per element.
    """
    b = bytearray(hashlib.sha1(_namespace(webhook_id) + event_id.encode()).digest()[:16])
    b[6] = (b[6] & 0x0F) | 0x50  # version 5
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@lru_cache(maxsize=1024)
def event_time(occurred: datetime) -> str:
    return format_datetime(occurred)  # the events of one write share their time


def element(
    sub: Subscription,
    event: Event,
    entity: dict[str, Any] | orjson.Fragment,
    related: dict[str, Any] | None,
) -> dict[str, Any]:
    """``entity``: the record shown, or that JSON already made (a ``Fragment``)."""
    return {
        "id": element_id(sub.id, event.id),
        "event": event.name,
        "event_time": event_time(event.occurred),
        "team_space_id": event.space_id,
        "webhook": sub.webhook,
        "entity": entity,
        "related_entity": related,
        "changes": event.changes,
    }
