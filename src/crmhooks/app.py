"""The composition root: the one place the parts are built from the settings and put together.

``create_app`` is what ``crmhooks serve`` runs: the API, the dashboard and, unless turned off,
delivery, either in a process of its own (``worker.DeliveryProcess``, which ``serve`` starts
before it imports this module) or by a dispatcher in the same process. Delivery's parts (the
address :class:`Guard`, the :class:`Sender`, the dispatcher with its settings) are built by
``crmhooks.worker``, which ``crmhooks worker`` runs alone; the API's (the database, the write
path, the key cache, the throttle, the routes) here. The packages below receive what they
use; none of them reads :class:`Settings` to build a collaborator of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks import __version__, limits
from crmhooks.api.app import api_routes, install
from crmhooks.changes.outbox import event_recorder
from crmhooks.changes.writer import Recorder, WritePath
from crmhooks.delivery.notifications import Listener
from crmhooks.hooks.registration import Lookup, UrlCheck, make_validator, system_lookup
from crmhooks.query.render import render
from crmhooks.schema.types import EntityType
from crmhooks.services.context import Services
from crmhooks.services.feed import FeedSignals
from crmhooks.services.keys import KeyCache
from crmhooks.services.throttle import FailureThrottle
from crmhooks.settings import Settings
from crmhooks.store.engine import WRITE_LOCK, open_database
from crmhooks.store.migrate import upgrade
from crmhooks.store.webhook_spaces import WebhookSpaces
from crmhooks.ui.routes import dashboard_routes
from crmhooks.worker import (
    DeliveryProcess,
    build_dispatcher,
    build_guard,
    build_sender,
    public_base,
)

log = structlog.get_logger("crmhooks.serve")


def build_recorder(settings: Settings) -> Recorder:
    """The event outbox, keeping each changed record rendered as webhooks show it by default
    (with the same base URL as routing, so the rendering is the one routing would make)."""
    base = public_base(settings)

    async def render_records(
        conn: AsyncConnection,
        space_id: str,
        et: EntityType,
        records: list[dict[str, Any]],
        fresh: bool,
    ) -> list[dict[str, Any]]:
        return await render(conn, et, space_id, records, base, fresh=fresh)

    return event_recorder(render_records, WebhookSpaces())


def create_app(
    settings: Settings | None = None,
    *,
    migrate: bool = True,
    lookup: Lookup | None = None,
    delivery_process: DeliveryProcess | None = None,
) -> FastAPI:
    """The API and the dashboard; the database is opened (and migrated) when the app starts.

    ``lookup`` resolves the names in webhook URLs at registration (the system's by default).
    With ``settings.delivery``, webhooks are delivered by a dispatcher in this process, or, with
    ``delivery_process`` (what ``crmhooks serve`` passes unless its setting of that name is
    off), by that child process: it may be running already (importing while this process
    does), and is told to begin once the app has started; it is stopped with the app.
    """
    settings = settings or Settings()
    limits.use(settings)  # also the limits of the webhooks the in-process router compiles

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if migrate:
            await asyncio.to_thread(upgrade, settings.database_url)
        db = open_database(settings.database_url, pool_size=settings.db_pool_size)
        guard = build_guard(settings)
        sender = build_sender(settings, guard)
        urls = UrlCheck(guard, settings.resolve_timeout, lookup or system_lookup)
        child = delivery_process if settings.delivery else None
        dispatcher = (
            build_dispatcher(db, settings, sender) if settings.delivery and child is None else None
        )
        wake = dispatcher or child
        feed = FeedSignals(settings.max_waiting_polls_per_space)
        writes = WritePath(
            db,
            recorders=[build_recorder(settings)],
            after_commit=[*([wake.notify] if wake else []), feed.committed],
            validators={"Webhooks": make_validator(guard, settings)},
            prechecks={"Webhooks": urls.refusals},
        )
        # On PostgreSQL other API processes write too: their commits wake this one's polls.
        heard = None
        if db.dialect == "postgresql":
            heard = Listener(db.url, on_events=feed.notify)
            feed.hears_others = heard.listening
            heard.start()
        keys = KeyCache(db, ttl=settings.key_cache_seconds)
        throttle = FailureThrottle(
            settings.auth_failure_limit, settings.auth_failure_window_seconds
        )
        app.state.services = Services(
            settings, db, writes, keys, throttle, guard, sender, dispatcher, feed
        )
        # What the front-ends ask of delivery (services.context.Delivery): health, requeued.
        app.state.dispatcher = wake
        app.state.delivery_process = child
        if dispatcher is not None:
            await dispatcher.start()
        if child is not None:
            await child.start(db)
        try:
            yield
        finally:
            if dispatcher is not None:
                await dispatcher.stop()
            if child is not None:
                await child.stop()
            if heard is not None:
                await heard.stop()
            await sender.close()
            await db.dispose()
            if child is not None:
                log.info("api stopped", **WRITE_LOCK.summary())

    # FastAPI only as the application shell (it serves /docs); every route is a Starlette
    # route (docs/architecture.md, Starlette routes in a FastAPI shell).
    app = FastAPI(
        title="crmhooks",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    # The dashboard's pages render their own errors as HTML (docs/dashboard.md).
    app.router.routes.extend([*api_routes(), *dashboard_routes(settings)])
    install(app, settings)
    return app
