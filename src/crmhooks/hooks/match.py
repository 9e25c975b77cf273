"""Which webhooks an event goes to (docs/webhooks.md#matching, #options).

:class:`WebhookIndex` files subscriptions by (space, subscribed name), so an event looks at the
webhooks of its own space that listed its name, its ``Entity.*`` or ``*``, and at no other:
the cost of matching does not grow with webhooks that cannot match. :func:`accepts` is the
decision for one webhook and one event, a pure function made of one predicate per rule;
:func:`explain` reports those same predicates' verdicts, rule by rule, with what they compared.
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
from crmhooks.query.memory import first_failing, matches
from crmhooks.schema.values import format_datetime


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


# The rules of docs/webhooks.md, Matching, one predicate each: routing (``accepts``, after the
# index matched the name) and explain (``explain``) both decide with these.


def names_it(sub: Subscription, event: Event) -> bool:
    """1. The webhook lists the event's name, its ``Entity.*`` or ``*``."""
    return any(name in sub.events for name in candidates(event.name))


def registered_before(sub: Subscription, event: Event) -> bool:
    """2. The webhook was registered before the event happened."""
    return event.occurred >= sub.created


def not_skipped(sub: Subscription, event: Event) -> bool:
    """3. The write did not send a ``Webhook-Skip-Key`` the webhook lists."""
    return event.skip_key is None or event.skip_key not in sub.skip_keys


def custom_entity_listed(sub: Subscription, event: Event) -> bool:
    """4. For ``CustomEntity.*`` events, the webhook's custom entities (if given) list it."""
    return (
        not event.name.startswith(CUSTOM_PREFIX + ".")
        or sub.custom_entities is None
        or event.entity in sub.custom_entities
    )


def owned_by_client(sub: Subscription, event: Event) -> bool:
    """5. With ``client_id``, the record's ``owner_id`` is that Client."""
    return sub.client_id is None or event.record.get("owner_id") == sub.client_id


def passes_filter(sub: Subscription, event: Event) -> bool:
    """6. The record passes every filter of the webhook's options for its entity."""
    opts = sub.entity.get(event.option_key)
    return opts is None or not opts.conditions or matches(event.record, opts.conditions)


def field_changed(sub: Subscription, event: Event) -> bool:
    """7. For an ``Update``, ``on-field-change`` (if given) names a field that changed."""
    opts = sub.entity.get(event.option_key)
    if opts is None or not opts.on_field_change or not event.name.endswith(".Update"):
        return True
    return bool(opts.on_field_change.intersection(event.changes or {}))


def accepts(sub: Subscription, event: Event) -> bool:
    """Whether this webhook fires for this event (its name already matched)."""
    return registered_before(sub, event) and accepts_any_time(sub, event)


def accepts_any_time(sub: Subscription, event: Event) -> bool:
    """Every rule but 1 and 2: whether a replay of the webhook carries this event (its name
    already matched; a replay does not ask when the webhook was registered)."""
    return (
        not_skipped(sub, event)
        and custom_entity_listed(sub, event)
        and owned_by_client(sub, event)
        and passes_filter(sub, event)
        and field_changed(sub, event)
    )


@dataclass(frozen=True)
class Check:
    """One rule of docs/webhooks.md, Matching, for one webhook and one event (explain)."""

    rule: str
    passed: bool
    detail: str


def explain(sub: Subscription, event: Event) -> list[Check]:
    """Every rule, in the order of docs/webhooks.md, each decided by the predicate routing
    uses, with what it compared; the webhook fires when all of them pass."""
    opts = sub.entity.get(event.option_key)
    custom = event.name.startswith(CUSTOM_PREFIX + ".")
    checks = [
        Check(
            "event_name",
            names_it(sub, event),
            f"the webhook lists {', '.join(sub.events)}; the event is {event.name}",
        ),
        Check(
            "registered_before",
            registered_before(sub, event),
            f"the webhook was registered at {format_datetime(sub.created)}, the event happened "
            f"at {format_datetime(event.occurred)}",
        ),
        Check(
            "skip_key",
            not_skipped(sub, event),
            "the write sent no Webhook-Skip-Key"
            if event.skip_key is None
            else f"the write sent Webhook-Skip-Key {event.skip_key!r}; the webhook's skip_keys: "
            f"{', '.join(sorted(sub.skip_keys)) or 'none'}",
        ),
        Check(
            "custom_entity",
            custom_entity_listed(sub, event),
            "not a custom entity's event"
            if not custom
            else "the webhook names no custom entity: all of them"
            if sub.custom_entities is None
            else f"the webhook's custom entities: {', '.join(sorted(sub.custom_entities))}; "
            f"the record's: {event.entity}",
        ),
        Check(
            "client",
            owned_by_client(sub, event),
            "the webhook has no client_id"
            if sub.client_id is None
            else f"client_id {sub.client_id}; the record's owner_id {event.record.get('owner_id')}",
        ),
        Check("filter", passes_filter(sub, event), _filter_detail(opts, event)),
        Check("on_field_change", field_changed(sub, event), _change_detail(opts, event)),
    ]
    return checks


def _filter_detail(opts: Any, event: Event) -> str:
    if opts is None or not opts.conditions:
        return f"no filter for {event.option_key}"
    failed = first_failing(event.record, opts.conditions)
    if failed is None:
        return f"the record passes all {len(opts.conditions)} conditions"
    c, value = failed
    expected = c.values[0] if len(c.values) == 1 else list(c.values)
    return f"{c.target.path} {c.op.value} {expected!r}: the record's value is {value!r}"


def _change_detail(opts: Any, event: Event) -> str:
    if opts is None or not opts.on_field_change:
        return "no on-field-change"
    asked = ", ".join(sorted(opts.on_field_change))
    if not event.name.endswith(".Update"):
        return f"asked for {asked}; not an Update: it does not apply"
    changed = ", ".join(sorted(event.changes or {})) or "none"
    return f"asked for {asked}; changed: {changed}"


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
