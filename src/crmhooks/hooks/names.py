"""Event names and the entity types webhook options are keyed by (docs/api.md#entities,
docs/webhooks.md#options)."""

from __future__ import annotations

from crmhooks.schema.registry import BUILTIN, STANDARD_EVENTS
from crmhooks.schema.types import EntityType

CUSTOM_PREFIX = "CustomEntity"

# singular option key ("Account", "OpptyProductRelation") -> entity type
BY_SINGULAR: dict[str, EntityType] = {et.singular: et for et in BUILTIN.values() if et.events}

# every event name a webhook may list, with the wildcards
EVENT_NAMES: frozenset[str] = frozenset(
    {f"{et.event_prefix}.{e}" for et in BY_SINGULAR.values() for e in et.events}
    | {f"{et.event_prefix}.*" for et in BY_SINGULAR.values()}
    | {f"{CUSTOM_PREFIX}.{e}" for e in STANDARD_EVENTS}
    | {f"{CUSTOM_PREFIX}.*", "*"}
)


def option_key(et: EntityType) -> str:
    """The key of ``options.entity`` that shapes and filters this entity type's events."""
    return et.name if et.custom else et.singular


def candidates(name: str) -> tuple[str, str, str]:
    """The subscription names an event name is delivered to: itself, ``Prefix.*``, ``*``."""
    prefix = name.split(".", 1)[0]
    return name, f"{prefix}.*", "*"
