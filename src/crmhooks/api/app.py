"""The FastAPI application: lifespan (database, migrations), limits, the error translator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crmhooks import __version__, limits
from crmhooks.api import envelopes
from crmhooks.api.auth import KeyCache
from crmhooks.api.deliveries import delivery_routes
from crmhooks.api.openapi import build_openapi
from crmhooks.api.ops import ops_routes
from crmhooks.api.routes import Services, routes
from crmhooks.api.throttle import FailureThrottle
from crmhooks.changes.outbox import record_events
from crmhooks.changes.writer import WritePath
from crmhooks.delivery.dispatcher import build_dispatcher
from crmhooks.errors import (
    ApiError,
    InternalError,
    MethodNotAllowed,
    NotFound,
    ParameterInvalid,
    PayloadTooLarge,
)
from crmhooks.hooks.registration import Lookup, UrlCheck, make_validator, system_lookup
from crmhooks.netguard import Guard, parse_allowed
from crmhooks.settings import Settings
from crmhooks.store.engine import open_database
from crmhooks.store.migrate import upgrade
from crmhooks.ui import dashboard_routes

log = structlog.get_logger("crmhooks.api")


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes, declared or streamed, with a 413 envelope."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = PayloadTooLarge(f"request body is larger than {self.limit} bytes")
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await envelopes.error(too_large)(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise too_large
            return message

        await self.app(scope, limited, send)


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return envelopes.error(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return envelopes.error(NotFound(f"no route {request.url.path}"))
    if exc.status_code == 405:
        return envelopes.error(MethodNotAllowed(f"{request.method} is not allowed here"))
    if exc.status_code == 400:
        return envelopes.error(ParameterInvalid(str(exc.detail)))
    return envelopes.error(InternalError(str(exc.detail)))


async def _validation_error(_: Request, exc: Exception) -> Response:
    return envelopes.error(ParameterInvalid(f"invalid request: {exc}"))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", path=request.url.path, method=request.method)
    return envelopes.error(InternalError("internal error"))


def create_app(
    settings: Settings | None = None, *, migrate: bool = True, lookup: Lookup | None = None
) -> FastAPI:
    """The whole API; the database is opened (and migrated) when the app starts.

    ``lookup`` resolves the names in webhook URLs at registration (the system's by default).
    """
    settings = settings or Settings()
    limits.use(settings)  # also the limits of the webhooks the in-process router compiles

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if migrate:
            await asyncio.to_thread(upgrade, settings.database_url)
        db = open_database(settings.database_url, pool_size=settings.db_pool_size)
        guard = Guard(parse_allowed(settings.allowed_targets))
        urls = UrlCheck(guard, settings.resolve_timeout, lookup or system_lookup)
        dispatcher = build_dispatcher(db, settings) if settings.delivery else None
        writes = WritePath(
            db,
            recorders=[record_events],
            after_commit=[dispatcher.notify] if dispatcher else [],
            validators={"Webhooks": make_validator(guard, settings)},
            prechecks={"Webhooks": urls.refusals},
        )
        keys = KeyCache(db, ttl=settings.key_cache_seconds)
        throttle = FailureThrottle(
            settings.auth_failure_limit, settings.auth_failure_window_seconds
        )
        app.state.services = Services(settings, db, writes, keys, throttle)
        app.state.dispatcher = dispatcher
        if dispatcher is not None:
            await dispatcher.start()
        try:
            yield
        finally:
            if dispatcher is not None:
                await dispatcher.stop()
            await db.dispose()

    app = FastAPI(
        title="crmhooks",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    # The delivery routes come first: /entities/Webhooks/{id}/deliveries would otherwise be
    # taken for a record route.
    app.router.routes.extend([*delivery_routes(), *routes(), *ops_routes()])
    # The web dashboard (its pages render their own errors as HTML; docs/dashboard.md).
    app.router.routes.extend(dashboard_routes(settings))
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(__version__)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
