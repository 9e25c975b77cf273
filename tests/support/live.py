"""The API with its dispatcher, delivering to loopback, behind an in-process client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from crmhooks.api import create_app
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
