"""The composition root: the one place the parts are built from the settings and put together.

``create_app`` is what ``crmhooks serve`` runs (the API, the dashboard and, unless turned off,
the dispatcher in one process); ``run_worker`` is ``crmhooks worker`` (the dispatcher alone).
Everything that both need is built here once: the database, the address :class:`Guard`, the
:class:`Sender` and the dispatcher with its settings. The packages below receive what they use;
none of them reads :class:`Settings` to build a collaborator of its own.
"""

from __future__ import annotations

import asyncio
import signal
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
from crmhooks.delivery.dispatcher import Dispatcher, DispatchSettings
from crmhooks.delivery.fairness import space_share
from crmhooks.delivery.queue import SqlQueue
from crmhooks.delivery.retry import parse_schedule
from crmhooks.delivery.router import Router
from crmhooks.delivery.sender import HttpSender
from crmhooks.hooks.registration import Lookup, UrlCheck, make_validator, system_lookup
from crmhooks.netguard import Guard, parse_allowed
from crmhooks.query.render import render
from crmhooks.schema.types import EntityType
from crmhooks.services.context import Services
from crmhooks.services.keys import KeyCache
from crmhooks.services.throttle import FailureThrottle
from crmhooks.settings import Settings
from crmhooks.store.engine import Database, open_database
from crmhooks.store.migrate import upgrade
from crmhooks.ui.routes import dashboard_routes

log = structlog.get_logger("crmhooks.worker")


def build_guard(settings: Settings) -> Guard:
    return Guard(parse_allowed(settings.allowed_targets))


def build_sender(settings: Settings, guard: Guard) -> HttpSender:
    """The one pool webhook requests go out on, deliveries and test events alike."""
    return HttpSender(
        guard,
        connect_timeout=settings.connect_timeout,
        total_timeout=settings.request_timeout,
        pool_size=settings.max_in_flight,
    )


def dispatch_settings(settings: Settings) -> DispatchSettings:
    """The dispatcher's settings; every default is :class:`Settings`' own."""
    return DispatchSettings(
        schedule=parse_schedule(settings.retry_schedule),
        max_in_flight=settings.max_in_flight,
        max_in_flight_per_webhook=settings.max_in_flight_per_webhook,
        max_in_flight_per_space=space_share(
            settings.max_in_flight, settings.max_in_flight_per_space
        ),
        lease_seconds=settings.lease_seconds,
        disable_after=settings.disable_after_seconds,
        retention=settings.retention_seconds,
        prune_every=settings.prune_every_seconds,
    )


def public_base(settings: Settings) -> str:
    """The base URL of the record URIs webhook payloads show."""
    return (settings.public_url or "http://127.0.0.1:8000").rstrip("/")


def build_recorder(settings: Settings) -> Recorder:
    """The event outbox, keeping each changed record rendered as webhooks show it by default
    (with the same base URL as routing, so the rendering is the one routing would make)."""
    base = public_base(settings)

    async def render_records(
        conn: AsyncConnection, space_id: str, et: EntityType, records: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        return await render(conn, et, space_id, records, base)

    return event_recorder(render_records)


def build_dispatcher(db: Database, settings: Settings, sender: HttpSender) -> Dispatcher:
    """The dispatcher with its queue, router and webhook cache, sending through ``sender``;
    on PostgreSQL it also listens for other processes' wake-ups."""
    router = Router(db, public_base(settings))
    listen = db.url if db.dialect == "postgresql" else None
    return Dispatcher(
        SqlQueue(db),
        router,
        router.webhooks,
        sender,
        dispatch_settings(settings),
        listen_url=listen,
    )


def create_app(
    settings: Settings | None = None, *, migrate: bool = True, lookup: Lookup | None = None
) -> FastAPI:
    """The API and the dashboard; the database is opened (and migrated) when the app starts.

    ``lookup`` resolves the names in webhook URLs at registration (the system's by default).
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
        dispatcher = build_dispatcher(db, settings, sender) if settings.delivery else None
        writes = WritePath(
            db,
            recorders=[build_recorder(settings)],
            after_commit=[dispatcher.notify] if dispatcher else [],
            validators={"Webhooks": make_validator(guard, settings)},
            prechecks={"Webhooks": urls.refusals},
        )
        keys = KeyCache(db, ttl=settings.key_cache_seconds)
        throttle = FailureThrottle(
            settings.auth_failure_limit, settings.auth_failure_window_seconds
        )
        app.state.services = Services(
            settings, db, writes, keys, throttle, guard, sender, dispatcher
        )
        app.state.dispatcher = dispatcher
        if dispatcher is not None:
            await dispatcher.start()
        try:
            yield
        finally:
            if dispatcher is not None:
                await dispatcher.stop()
            await sender.close()
            await db.dispose()

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


async def run_worker(settings: Settings) -> None:
    """``crmhooks worker``: the dispatcher without the API, until SIGTERM or SIGINT."""
    db = open_database(settings.database_url, pool_size=settings.db_pool_size)
    dispatcher = build_dispatcher(db, settings, build_sender(settings, build_guard(settings)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await dispatcher.start()
    log.info("worker started")
    try:
        await stop.wait()
    finally:
        await dispatcher.stop()
        await db.dispose()
        trips = db.round_trips
        log.info(
            "worker stopped",
            db_statements=trips.statements,
            db_transactions=trips.transactions,
            db_round_trips=trips.total,
        )
