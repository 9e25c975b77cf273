"""The API's part of the application: its routes in order, the request body limit, the error
translator (every error of ``crmhooks.errors`` becomes an envelope here, and only here) and the
OpenAPI document. ``crmhooks.app`` builds the application around them."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crmhooks import __version__
from crmhooks.api import envelopes
from crmhooks.api.deliveries import delivery_routes
from crmhooks.api.feed import feed_routes
from crmhooks.api.openapi import build_openapi
from crmhooks.api.ops import ops_routes
from crmhooks.api.routes import routes
from crmhooks.errors import (
    ApiError,
    InternalError,
    MethodNotAllowed,
    NotFound,
    ParameterInvalid,
    PayloadTooLarge,
)
from crmhooks.settings import Settings

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


def api_routes() -> list[BaseRoute]:
    """Every route of the API and the operations routes, in the order they are matched."""
    # The delivery routes come first: /entities/Webhooks/{id}/deliveries would otherwise be
    # taken for a record route.
    return [*delivery_routes(), *feed_routes(), *routes(), *ops_routes()]


def install(app: FastAPI, settings: Settings) -> None:
    """The body limit, the error translator and the OpenAPI document, on the whole app."""
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
