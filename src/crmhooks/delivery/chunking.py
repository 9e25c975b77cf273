"""How one webhook's events become requests: at most ``chunk_size`` each, bursts spread out.

A burst is one API request's events. With ``chunk_delay`` > 0 each burst is split on its own and
chunk N (from 0) waits N x ``chunk_delay`` seconds; with no delay, events of several bursts
share requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Chunk(Generic[T]):
    items: list[T]
    delay: float  # seconds after the first chunk
    burst: str | None = None  # with a chunk_delay: the burst it is a chunk of
    index: int = 0  # its place among the burst's chunks


def plan_chunks(
    items: Sequence[tuple[str, T]], chunk_size: int, chunk_delay: float
) -> list[Chunk[T]]:
    """``items`` are (burst id, item) in order; the chunks to send, in order."""
    if chunk_delay <= 0:
        values = [item for _, item in items]
        return [Chunk(values[i : i + chunk_size], 0.0) for i in range(0, len(values), chunk_size)]
    bursts: dict[str, list[T]] = {}
    for burst, item in items:
        bursts.setdefault(burst, []).append(item)
    out: list[Chunk[T]] = []
    for burst, values in bursts.items():
        for n, i in enumerate(range(0, len(values), chunk_size)):
            out.append(Chunk(values[i : i + chunk_size], n * chunk_delay, burst, n))
    return out
