"""Sharing the dispatcher's requests in flight between spaces (docs/webhooks.md, Isolation).

Every space is hostile to every other: one space's hanging or slow receivers must not take the
room, or the claims, another space's deliveries need. Two pure decisions live here: how much
of the room one space may hold, and the order in which a claim asks webhooks for requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# Below this a space could not keep even one healthy webhook's requests flowing (16 in flight).
MIN_SPACE_SHARE = 16


def space_share(max_in_flight: int, configured: int | None = None) -> int:
    """Requests one space may hold in this process (sending or claimed to send next).

    Half the room by default: the other half is always left to the other spaces, and half is
    what a space needs to keep a healthy webhook at full speed beside fifty of its own that
    hang (two each until they fail, 100, plus the healthy one's 16 and their refills).
    """
    if configured is not None:
        return max(1, min(configured, max_in_flight))
    return min(max_in_flight, max(MIN_SPACE_SHARE, max_in_flight // 2))


def take_turns(webhooks: Iterable[str], space_of: Mapping[str, str], turn: int) -> list[str]:
    """The order in which one claim asks webhooks with work: round-robin over their spaces.

    The first webhook of each space, then the second of each, and so on, so that a space with
    a hundred webhooks does not take a hundred turns before a space with one. ``turn`` (a
    counter of claims) rotates which space goes first and which of its webhooks, so that no
    space or webhook is always last when a claim fills up before the end.
    """
    by_space: dict[str, list[str]] = {}
    for w in sorted(webhooks):
        by_space.setdefault(space_of[w], []).append(w)
    if not by_space:
        return []
    spaces = _rotated(sorted(by_space), turn)
    queues = [_rotated(by_space[s], turn) for s in spaces]
    order: list[str] = []
    for i in range(max(len(q) for q in queues)):
        order.extend(q[i] for q in queues if i < len(q))
    return order


def _rotated(items: list[str], turn: int) -> list[str]:
    k = turn % len(items)
    return items[k:] + items[:k]
