"""The API with its dispatcher, delivering to loopback, behind an in-process client; and a
receiver on loopback for it to deliver to (an ``Inbox`` that keeps what it got)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from aiohttp import web

from crmhooks.app import create_app
from crmhooks.settings import Settings
from crmhooks.store.keys import IssuedKey
from tests.support.servers import free_port


@asynccontextmanager
async def live_client(
    db_url: str, space: IssuedKey, retry_schedule: str | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A client signed in to ``space`` on the app with delivery on, allowed to reach
    loopback (``retry_schedule``: the settings' own when None)."""
    extra = {} if retry_schedule is None else {"retry_schedule": retry_schedule}
    settings = Settings(
        database_url=db_url,
        public_url="http://testserver",
        allowed_targets="127.0.0.0/8",
        **extra,
    )
    app = create_app(settings, migrate=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver",
            auth=httpx.BasicAuth(space.api_key, space.api_secret),
        ) as client,
    ):
        yield client


@asynccontextmanager
async def receiving(
    port: int, path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> AsyncIterator[None]:
    """An aiohttp server on 127.0.0.1:``port`` answering POSTs to ``path`` with ``handler``."""
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield
    finally:
        await runner.cleanup()


@dataclass
class Inbox:
    url: str
    requests: list[tuple[float, dict[str, str], Any]] = field(default_factory=list)
    status: int = 200
    fail_next: int = 0  # answer this many of the next requests with 500
    answered: list[int] = field(default_factory=list)  # the status each request got

    async def wait_for(self, events: int, within: float = 10.0) -> list[Any]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            got = [e for _, _, body in self.requests for e in body]
            if len(got) >= events:
                return got
            await asyncio.sleep(0.01)
        raise AssertionError(f"{len(got)} of {events} events arrived")


@asynccontextmanager
async def inbox() -> AsyncIterator[Inbox]:
    """An ``Inbox`` at ``http://127.0.0.1:PORT/hook``, listening until the block ends."""
    port = free_port()
    box = Inbox(f"http://127.0.0.1:{port}/hook")

    async def receive(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        box.requests.append((time.monotonic(), dict(request.headers), body))
        status = box.status
        if box.fail_next > 0:
            box.fail_next -= 1
            status = 500
        box.answered.append(status)
        return web.Response(status=status)

    async with receiving(port, "/hook", receive):
        yield box
