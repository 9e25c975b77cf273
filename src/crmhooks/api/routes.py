"""The entity routes of contract section 5, one set of handlers for every entity type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from crmhooks.api import envelopes
from crmhooks.api.auth import KeyCache, authenticate
from crmhooks.changes.writer import WriteContext, WritePath, Writer
from crmhooks.errors import NotFound, ParameterInvalid
from crmhooks.query.params import parse_bool_param, parse_list
from crmhooks.query.render import render
from crmhooks.query.sql import list_page
from crmhooks.schema.types import EntityType
from crmhooks.schema.values import is_uuid
from crmhooks.settings import Settings
from crmhooks.store.catalog import entity_type
from crmhooks.store.engine import Database
from crmhooks.store.records import Record, fetch

PREFIX = "/api/v100/rest/spaces/{space_id}"
SKIP_KEY_HEADER = "webhook-skip-key"
_READ_PARAMS = {"include-deleted"}


@dataclass
class Services:
    """What the handlers use; built once in the application's lifespan."""

    settings: Settings
    db: Database
    writes: WritePath
    keys: KeyCache


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def base_url(request: Request, settings: Settings) -> str:
    if settings.public_url:
        return settings.public_url.rstrip("/")
    return str(request.base_url).rstrip("/")


async def _context(request: Request) -> tuple[Services, WriteContext]:
    svc = services(request)
    space_id = request.path_params["space_id"]
    key = await authenticate(request, svc.keys, space_id)
    skip = request.headers.get(SKIP_KEY_HEADER)
    return svc, WriteContext(space_id=space_id, key_id=key.key_id, skip_key=skip)


async def _entity(svc: Services, space_id: str, name: str) -> EntityType:
    async with svc.db.read() as conn:
        et = await entity_type(conn, space_id, name)
    if et is None:
        raise NotFound(f"unknown entity {name!r}")
    return et


def _record_id(request: Request) -> str:
    raw = request.path_params["record_id"]
    if not is_uuid(raw):
        raise ParameterInvalid(f"record id {raw!r} is not a UUID")
    return str(raw).lower()


async def json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError as e:
        raise ParameterInvalid(f"request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise ParameterInvalid("request body must be a JSON object")
    return body


def _only(request: Request, allowed: set[str]) -> dict[str, str]:
    params = dict(request.query_params)
    for key in params:
        if key not in allowed:
            raise ParameterInvalid(f"unknown parameter {key!r}")
    return params


async def _shown(
    svc: Services, request: Request, writer_or_none: Writer | None, et: EntityType, rec: Record
) -> dict[str, Any]:
    base = base_url(request, svc.settings)
    space_id = request.path_params["space_id"]
    if writer_or_none is not None:
        return (await render(writer_or_none.conn, et, space_id, [rec], base))[0]
    async with svc.db.read() as conn:
        return (await render(conn, et, space_id, [rec], base))[0]


async def list_records(request: Request) -> Response:
    svc, ctx = await _context(request)
    et = await _entity(svc, ctx.space_id, request.path_params["entity"])
    q = parse_list(et, request.query_params)
    async with svc.db.read() as conn:
        records, total, info = await list_page(conn, et, ctx.space_id, q)
        shown = await render(conn, et, ctx.space_id, records, base_url(request, svc.settings))
    return envelopes.many(shown, total, info)


async def read_record(request: Request) -> Response:
    svc, ctx = await _context(request)
    et = await _entity(svc, ctx.space_id, request.path_params["entity"])
    record_id = _record_id(request)
    deleted = parse_bool_param(_only(request, _READ_PARAMS), "include-deleted")
    async with svc.db.read() as conn:
        found = await fetch(conn, et, ctx.space_id, record_id, include_deleted=deleted)
        if found is None:
            raise NotFound(f"no {et.name} record with id {record_id}")
        base = base_url(request, svc.settings)
        shown = (await render(conn, et, ctx.space_id, [found[0]], base))[0]
    return envelopes.one(shown)


WriteStep = Callable[[Writer, EntityType], Awaitable[Record]]


async def _write(
    request: Request,
    svc: Services,
    ctx: WriteContext,
    entity: str,
    step: WriteStep,
    status: int = 200,
) -> Response:
    et = await _entity(svc, ctx.space_id, entity)
    _only(request, set())
    async with svc.writes.begin(ctx) as writer:
        record = await step(writer, et)
        shown_type = writer.changes[-1].entity if writer.changes else et
        shown = await _shown(svc, request, writer, shown_type, record)
    return envelopes.one(shown, status)


async def create_record(request: Request) -> Response:
    svc, ctx = await _context(request)
    body = await json_object(request)

    async def step(w: Writer, et: EntityType) -> Record:
        return await w.create(et, body)

    return await _write(request, svc, ctx, request.path_params["entity"], step, 201)


async def patch_record(request: Request) -> Response:
    svc, ctx = await _context(request)
    record_id = _record_id(request)
    body = await json_object(request)

    async def step(w: Writer, et: EntityType) -> Record:
        return await w.update(et, record_id, body)

    return await _write(request, svc, ctx, request.path_params["entity"], step)


async def delete_record(request: Request) -> Response:
    svc, ctx = await _context(request)
    et = await _entity(svc, ctx.space_id, request.path_params["entity"])
    record_id = _record_id(request)
    _only(request, set())
    async with svc.writes.begin(ctx) as writer:
        await writer.delete(et, record_id)
    return envelopes.one(record_id)


async def qualify(request: Request) -> Response:
    svc, ctx = await _context(request)
    record_id = _record_id(request)
    body = await json_object(request) if (await request.body()).strip() else {}

    async def step(w: Writer, et: EntityType) -> Record:
        return await w.qualify(record_id, body)

    return await _write(request, svc, ctx, "Leads", step)


async def back_to_lead(request: Request) -> Response:
    svc, ctx = await _context(request)
    record_id = _record_id(request)

    async def step(w: Writer, et: EntityType) -> Record:
        return await w.back_to_lead(record_id)

    return await _write(request, svc, ctx, "Opportunities", step)


ENTITY = "/entities/{entity}"
RECORD = "/entities/{entity}/{record_id}"


def routes() -> list[Route]:
    """Starlette routes (no per-request dependency solving); OpenAPI is written by api.openapi."""
    table: list[tuple[str, Callable[[Request], Awaitable[Response]], list[str]]] = [
        ("/entities/Leads/{record_id}/qualify", qualify, ["POST"]),
        ("/entities/Opportunities/{record_id}/back-to-lead", back_to_lead, ["POST"]),
        (ENTITY, list_records, ["GET"]),
        (ENTITY, create_record, ["POST"]),
        (RECORD, read_record, ["GET"]),
        (RECORD, patch_record, ["PATCH"]),
        (RECORD, delete_record, ["DELETE"]),
    ]
    return [Route(PREFIX + path, fn, methods=methods) for path, fn, methods in table]
