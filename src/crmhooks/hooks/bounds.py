"""What one webhook may cost, checked when it is written (docs/api.md, "Limits").

A webhook runs on every event of its space for as long as it exists, so its costs are bounded
when it is registered: the size of its options, the substring scans its filters make, and the
records one request body can hold. Stored webhooks are not checked again when loaded, so a
limit lowered later does not silence webhooks that were accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from crmhooks.limits import Limits
from crmhooks.query.params import Condition, Op
from crmhooks.query.shape import Shape, worst_records
from crmhooks.schema.registry import BUILTIN
from crmhooks.schema.types import EntityType

SEARCH_OPS = frozenset({Op.CONTAINS, Op.ICONTAINS})


def options_bytes(options: Any) -> int:
    """The size of ``options`` as JSON (as stored and sent in each payload's ``webhook``)."""
    try:
        return len(orjson.dumps(options))
    except (TypeError, orjson.JSONEncodeError):
        return 0  # not JSON at all: the type checks name it


def search_values(conditions: tuple[Condition, ...]) -> int:
    """Substring values of these conditions: each one scans the record's text per event."""
    return sum(len(c.values) for c in conditions if c.op in SEARCH_OPS)


def stored_search_values(options: Any) -> int:
    """Substring values of a webhook's ``options`` as stored (already checked when written)."""
    entity = options.get("entity") if isinstance(options, dict) else None
    total = 0
    for opts in entity.values() if isinstance(entity, dict) else ():
        filters = opts.get("filter") if isinstance(opts, dict) else None
        ops = opts.get("filter-op") if isinstance(opts, dict) else None
        if not isinstance(filters, dict) or not isinstance(ops, dict):
            continue
        for path, op in ops.items():
            if op in SEARCH_OPS and path in filters:
                value = filters[path]
                total += len(value) if isinstance(value, list) else 1
    return total


def element_records(
    entity: Mapping[str, tuple[EntityType, Shape]], related: Mapping[str, Shape], cap: int
) -> int:
    """The most records one payload element can hold: its entity, shaped as the webhook asks
    for any of its entity types, and its related entity."""
    shown = max((worst_records(et, s.expand, cap) for et, s in entity.values()), default=1)
    rel = max((worst_records(BUILTIN[n], s.expand, cap) for n, s in related.items()), default=1)
    return shown + rel


def body_error(per_element: int, chunk_size: int, limits: Limits) -> str | None:
    """Why a body of ``chunk_size`` such elements is too large, or None."""
    if per_element * chunk_size <= limits.max_rendered_records:
        return None
    return (
        f"a request of {chunk_size} events can hold {per_element * chunk_size} records "
        f"({per_element} per event, each expanded list counted at its cap of "
        f"{limits.webhook_list_records}); the limit is {limits.max_rendered_records} "
        "(max_rendered_records): expand less or lower chunk_size"
    )
