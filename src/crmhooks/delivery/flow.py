"""The one per-webhook limit of the dispatcher: how many of a webhook's requests it may hold
(claimed, sending or waiting to send) and send at once, from how the webhook answers.

A webhook may hold ``health.claimable`` requests (more while its space has room) and send
``max_in_flight_per_webhook`` of them at a time; until it answered well once it holds only a
few (slow start), while it fails one.
Claims ask it for no more than its :meth:`PerWebhook.room`; a finished request asks for a
refill once the webhook holds half of what it may or less.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import ItemsView

from crmhooks.delivery import health


class PerWebhook:
    def __init__(self, max_in_flight_per_webhook: int) -> None:
        self.limit = max_in_flight_per_webhook
        self._held: Counter[str] = Counter()  # claimed here and not finished, per webhook
        self._last_ok: dict[str, bool] = {}  # whether its last request succeeded
        self._sending: dict[str, asyncio.Semaphore] = {}  # while it holds requests

    def allowance(self, webhook_id: str) -> int:
        """Requests it may have in flight across processes (``health.allowance``)."""
        return health.allowance(self._last_ok.get(webhook_id), self.limit)

    def claimable(self, webhook_id: str, *, deep: bool = False) -> int:
        return health.claimable(self._last_ok.get(webhook_id), self.limit, deep=deep)

    def held(self, webhook_id: str) -> int:
        return self._held[webhook_id]

    def room(self, webhook_id: str, *, deep: bool = False) -> int:
        """How many more of its requests a claim may take now (0 or less: none); ``deep``:
        its space has room for the deep claim (``health.claimable``)."""
        return self.claimable(webhook_id, deep=deep) - self._held[webhook_id]

    def claimed(self, webhook_id: str) -> None:
        self._held[webhook_id] += 1

    def sending(self, webhook_id: str) -> asyncio.Semaphore:
        """Held while one of its requests is sent: no more than the limit at once."""
        slot = self._sending.get(webhook_id)
        if slot is None:
            slot = self._sending[webhook_id] = asyncio.Semaphore(self.limit)
        return slot

    def finished(self, webhook_id: str, ok: bool) -> bool:
        """One of its requests is done (``ok``: answered well); whether to claim for it now:
        half of what it may hold at a time, so that one claim serves several requests and its
        pipe never runs dry."""
        self._held[webhook_id] -= 1
        if self._held[webhook_id] <= 0:
            del self._held[webhook_id]
            self._sending.pop(webhook_id, None)  # nothing holds or waits for it
        self._last_ok[webhook_id] = ok
        return self._held[webhook_id] <= self.claimable(webhook_id) // 2

    def items(self) -> ItemsView[str, int]:
        """(webhook, requests held) of each webhook holding any."""
        return self._held.items()
