"""Batch writes: many items through one writer, each item's outcome at its index.

Every write checks everything before it stores anything, so a failed item leaves nothing
behind and the batch can go on to the next one without a savepoint. With ``keep_going`` false
(``rollback-method=0``) a batch with any failure raises :class:`BatchFailed`, which rolls the
whole transaction back; with it true (``rollback-method=1``) the items that succeeded are kept.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from crmhooks.changes.writer import PreparedCreates, Writer, is_new
from crmhooks.errors import ApiError, BatchFailed, batch_item_error
from crmhooks.schema.types import EntityType

Item = Callable[[Writer, EntityType, Any], Awaitable[str]]


def item_error(et: EntityType, items: Sequence[Any], index: int, exc: ApiError) -> Any:
    item = items[index]
    raw = item.get("id") if isinstance(item, dict) else item
    return batch_item_error(index, exc, et.singular, raw if isinstance(raw, str) else None)


async def run_batch(
    writer: Writer,
    et: EntityType,
    items: Sequence[Any],
    run: Item,
    *,
    keep_going: bool,
    prepared: PreparedCreates | None = None,
) -> list[Any]:
    """Each item's id or error object, in item order.

    Consecutive new records (objects without ``id``) are created together by
    ``Writer.create_many``: one relation check per target and one insert for the run.
    ``prepared``: every item, all new, made ready before the write (``prepare_creates``).
    """
    results: list[Any] = []
    index = 0
    while index < len(items):
        end = index
        while end < len(items) and is_new(items[end]):
            end += 1
        if end > index:
            ready = prepared.items if prepared is not None and end - index == len(items) else None
            created = await writer.create_many(et, items[index:end], ready)
            for offset, outcome in enumerate(created):
                if isinstance(outcome, ApiError):
                    results.append(item_error(et, items, index + offset, outcome))
                else:
                    results.append(outcome["id"])
            index = end
            continue
        try:
            results.append(await run(writer, et, items[index]))
        except ApiError as exc:
            results.append(item_error(et, items, index, exc))
        index += 1
    failed = [i for i, r in enumerate(results) if isinstance(r, dict)]
    if failed and not keep_going:
        shown = [r if isinstance(r, dict) else None for r in results]
        raise BatchFailed(failed, shown)
    return results
