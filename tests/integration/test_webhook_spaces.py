"""store.webhook_spaces: answers from the database, kept at most ``ttl`` seconds, forgotten on
request, and never more than ``max_spaces`` of them however many spaces write."""

from __future__ import annotations

from pathlib import Path

from crmhooks.store.engine import open_database
from crmhooks.store.webhook_spaces import WebhookSpaces
from tests.support.databases import migrated_sqlite


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_answers_are_kept_for_ttl_forgotten_on_request_and_bounded(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{migrated_sqlite(tmp_path / 'spaces.db')}")
    clock = Clock()
    spaces = WebhookSpaces(ttl=1.0, clock=clock, max_spaces=3)
    try:
        async with db.read() as conn:
            assert await spaces.any(conn, "s0") is False
            assert spaces._seen["s0"] == (False, 0.0)
            clock.now = 0.5
            await spaces.any(conn, "s0")
            assert spaces._seen["s0"] == (False, 0.0)  # kept: not looked up again
            clock.now = 1.5
            await spaces.any(conn, "s0")
            assert spaces._seen["s0"] == (False, 1.5)  # older than ttl: looked up again
            spaces.forget("s0")
            assert "s0" not in spaces._seen
            for i in range(1000):  # a stream of new spaces
                await spaces.any(conn, f"space-{i}")
                assert len(spaces._seen) <= 3
    finally:
        await db.dispose()
