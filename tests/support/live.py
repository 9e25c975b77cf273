"""The API with its dispatcher, delivering to loopback, behind an in-process client; and a
receiver on loopback for it to deliver to."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
from aiohttp import web

from crmhooks.app import create_app
from crmhooks.settings import Settings
from crmhooks.store.keys import IssuedKey


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
