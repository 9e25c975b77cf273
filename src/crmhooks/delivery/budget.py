"""Matching time per space in one routing step (docs/webhooks.md, Isolation).

A webhook's filter runs on every event of its space; the limits on filters bound what one
event can cost (docs/api.md, Filters: tens of milliseconds at worst), not how many such events
a space writes. Each routing step therefore gives every space a budget of matching time: a
space past it has the rest of its events in the step held, routed in later steps, in order,
while the other spaces' events go on. The space that spends the most waits; the others never
queue behind it for more than one budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from time import perf_counter

from crmhooks.hooks.match import Event
from crmhooks.hooks.subscription import Subscription

# Matching runs on the event loop that also sends: it lets the loop run this often.
YIELD_EVERY = 0.005  # seconds


@dataclass
class Budget:
    """The matching time each space has spent in one step, against the same budget each."""

    per_space: float  # seconds
    clock: Callable[[], float] = perf_counter
    spent: dict[str, float] = field(default_factory=dict)

    def events_for(self, space_id: str, cost: float, most: int) -> int:
        """How many of a space's held events to read for the rest of its budget, at ``cost``
        seconds each (as last measured): at least one, so every step moves it on."""
        left = self.per_space - self.spent.get(space_id, 0.0)
        return max(1, min(most, int(left / max(cost, 1e-6)) + 1))


@dataclass
class Matched:
    """What one matching pass found: each webhook with the events it fires (in order, webhooks
    in the order of their first event) and the events held for a later step."""

    webhooks: dict[str, tuple[Subscription, list[Event]]] = field(default_factory=dict)
    held: list[Event] = field(default_factory=list)
    matched: dict[str, int] = field(default_factory=dict)  # events matched, per space

    def fired(self) -> list[tuple[Subscription, list[Event]]]:
        return list(self.webhooks.values())


async def match_within(
    events: Sequence[Event],
    route: Callable[[Event], list[Subscription]],
    budget: Budget,
    out: Matched,
    behind: Container[str] = (),
) -> None:
    """Match ``events`` in order into ``out``: an event of a space in ``behind`` (it has older
    events held) or past its budget is held, not matched, so that a space's events are always
    matched in order. Each space matches at least one event per step, however small the
    budget, and an event is matched whole once begun: a space goes past its budget by at most
    one event (whose cost the filter limits bound)."""
    clock, spent = budget.clock, budget.spent
    webhooks, held, counts = out.webhooks, out.held, out.matched
    started = clock()
    for event in events:
        space = event.space_id
        if space in behind or (space in counts and spent[space] >= budget.per_space):
            held.append(event)
            continue
        t0 = clock()
        subs = route(event)
        t1 = clock()
        spent[space] = spent.get(space, 0.0) + (t1 - t0)
        counts[space] = counts.get(space, 0) + 1
        for sub in subs:
            webhooks.setdefault(sub.id, (sub, []))[1].append(event)
        if t1 - started >= YIELD_EVERY:
            await asyncio.sleep(0)
            started = clock()
