"""Which webhooks an event goes to (docs/webhooks.md#matching, #options).

:class:`WebhookIndex` files subscriptions by (space, subscribed name), so an event looks at the
webhooks of its own space that listed its name, its ``Entity.*`` or ``*``, and at no other:
the cost of matching does not grow with webhooks that cannot match. :func:`accepts` is the
decision for one webhook and one event, a pure function.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import orjson

from crmhooks.hooks.names import CUSTOM_PREFIX, candidates
from crmhooks.hooks.subscription import Subscription
from crmhooks.query.memory import matches


def stored_json(value: Any) -> Any:
    """A JSON column's value as stored: text (SQLite) parsed with orjson, or with ``json`` for
    what orjson refuses (NaN, integers past 64 bits), so the values are the ones SQLAlchemy's
    JSON type gives, several times faster; anything else (parsed already: PostgreSQL) as it is."""
    if not isinstance(value, str):
        return value
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return json.loads(value)


@dataclass(frozen=True)
class Event:
    """A stored event as matching and rendering read it.

    The record and the related record come as stored (``record_json``, ``related_json``: JSON
    text on SQLite, parsed on PostgreSQL) and are parsed when first read (``record``,
    ``related``): a webhook with the default shape and no filter on the record never needs
    them, since the write rendered the record already (``rendered``)."""

    seq: int
    id: str
    space_id: str
    name: str
    entity: str  # route name of the record's type
    option_key: str  # key of options.entity for it ("Account", "CE_Bid")
    record_id: str
    record_json: Any
    changes: dict[str, Any] | None
    related_entity: str | None
    related_id: str | None
    related_json: Any
    skip_key: str | None
    burst_id: str
    occurred: datetime
    # The record as the webhook shows it by default, JSON text made in the write (None: not made)
    rendered: str | None = None

    @cached_property
    def record(self) -> dict[str, Any]:
        found: dict[str, Any] = stored_json(self.record_json)
        return found

    @cached_property
    def related(self) -> dict[str, Any] | None:
        found: dict[str, Any] | None = stored_json(self.related_json)
        return found


def accepts(sub: Subscription, event: Event) -> bool:
    """Whether this webhook fires for this event (its name already matched)."""
    if event.occurred < sub.created:
        return False  # registered after the event happened
    if event.skip_key is not None and event.skip_key in sub.skip_keys:
        return False
    if (
        event.name.startswith(CUSTOM_PREFIX + ".")
        and sub.custom_entities is not None
        and event.entity not in sub.custom_entities
    ):
        return False
    if sub.client_id is not None and event.record.get("owner_id") != sub.client_id:
        return False
    opts = sub.entity.get(event.option_key)
    if opts is None:
        return True
    if opts.conditions and not matches(event.record, opts.conditions):
        return False
    if opts.on_field_change and event.name.endswith(".Update"):
        return bool(opts.on_field_change.intersection(event.changes or {}))
    return True


class WebhookIndex:
    """Subscriptions filed by (space id, subscribed event name)."""

    def __init__(self, subs: Iterable[Subscription] = ()) -> None:
        self._by_name: dict[tuple[str, str], list[Subscription]] = {}
        self.by_id: dict[str, Subscription] = {}
        self.spaces: set[str] = set()  # spaces with at least one webhook
        for sub in subs:
            self.by_id[sub.id] = sub
            self.spaces.add(sub.space_id)
            for name in sub.events:
                self._by_name.setdefault((sub.space_id, name), []).append(sub)

    def __len__(self) -> int:
        return len(self.by_id)

    def route(self, event: Event) -> list[Subscription]:
        """Every webhook that fires for the event, each once."""
        out: list[Subscription] = []
        seen: set[str] = set()
        for name in candidates(event.name):
            for sub in self._by_name.get((event.space_id, name), ()):
                if sub.id not in seen and accepts(sub, event):
                    seen.add(sub.id)
                    out.append(sub)
        return out
