"""The entity routes (docs/api.md#routes), one set of handlers for every entity type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from crmhooks.api import envelopes
from crmhooks.api.auth import authenticate
from crmhooks.changes import links
from crmhooks.changes.batch import run_batch
from crmhooks.changes.writer import WriteContext, Writer, writable
from crmhooks.errors import NotFound, ParameterInvalid, UnknownType, ValidationFailed
from crmhooks.netguard import shown_url
from crmhooks.query.params import (
    INCLUDE_DELETED,
    SHAPE_PARAMS,
    VALIDATION_LEVEL,
    include_deleted,
    parse_list,
    request_timezone,
    shape_of,
    validation_level,
)
from crmhooks.query.render import render
from crmhooks.query.shape import Shape
from crmhooks.query.sql import list_page
from crmhooks.schema.registry import BUILTIN
from crmhooks.schema.types import EntityType
from crmhooks.schema.values import is_uuid

# Services and services are also imported from here by the delivery routes (api/deliveries.py).
from crmhooks.services.context import Services as Services
from crmhooks.services.context import base_url as base_url
from crmhooks.services.context import services as services
from crmhooks.store.catalog import entity_type
from crmhooks.store.records import Record, fetch

PREFIX = "/api/v100/rest/spaces/{space_id}"
SKIP_KEY_HEADER = "webhook-skip-key"
TIMEZONE_HEADER = "timezone"
MAX_SKIP_KEY = 255


async def request_context(request: Request) -> tuple[Services, WriteContext]:
    svc = services(request)
    space_id = request.path_params["space_id"]
    key = await authenticate(request, svc.keys, svc.throttle, space_id)
    skip = request.headers.get(SKIP_KEY_HEADER)
    if skip is not None and len(skip) > MAX_SKIP_KEY:
        raise ParameterInvalid(f"Webhook-Skip-Key: longer than {MAX_SKIP_KEY} characters")
    zone = request_timezone(request.headers.get(TIMEZONE_HEADER))
    return svc, WriteContext(space_id=space_id, key_id=key.key_id, skip_key=skip, timezone=zone)


async def _entity(svc: Services, space_id: str, name: str) -> EntityType:
    et = BUILTIN.get(name)  # only a custom entity needs the database
    if et is None:
        async with svc.db.read() as conn:
            et = await entity_type(conn, space_id, name)
    if et is None:
        raise UnknownType(name)
    return et


def path_uuid(request: Request, name: str) -> str:
    """A UUID path parameter, lower-cased; a 400 naming it otherwise."""
    raw = str(request.path_params[name])
    if not is_uuid(raw):
        raise ParameterInvalid(f"{name.replace('_', ' ')} {raw!r} is not a UUID")
    return raw.lower()


def _record_id(request: Request) -> str:
    return path_uuid(request, "record_id")


async def _json(request: Request) -> Any:
    raw = await request.body()
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError as e:
        raise ParameterInvalid(f"request body is not valid JSON: {e}") from None


async def json_object(request: Request) -> dict[str, Any]:
    body = await _json(request)
    if not isinstance(body, dict):
        raise ParameterInvalid("request body must be a JSON object")
    return body


async def json_array(request: Request, max_items: int) -> list[Any]:
    body = await _json(request)
    if not isinstance(body, list):
        raise ParameterInvalid("request body must be a JSON array")
    if len(body) > max_items:
        raise ParameterInvalid(
            f"a batch holds at most {max_items} items (max_batch_items), got {len(body)}"
        )
    return body


def rollback_method(raw: str | None) -> bool:
    """``rollback-method``: 0 (default) all or nothing; 1 keep the items that succeeded."""
    if raw in (None, "0"):
        return False
    if raw == "1":
        return True
    raise ParameterInvalid(f"rollback-method: {raw!r} is not 0 or 1")


def only_params(request: Request, allowed: set[str] | frozenset[str]) -> dict[str, str]:
    params = dict(request.query_params)
    for key in params:
        if key not in allowed:
            raise ParameterInvalid(f"unknown parameter {key!r}")
    return params


def _shape(
    request: Request, svc: Services, et: EntityType, extra: frozenset[str] = frozenset()
) -> Shape:
    return shape_of(et, only_params(request, SHAPE_PARAMS | extra), svc.settings)


WRITE_PARAMS = frozenset({VALIDATION_LEVEL})


def checked_as_asked(request: Request, ctx: WriteContext) -> WriteContext:
    """The context of a write that takes ``validation-level`` (Pipeliner's create, update,
    delete and batch routes)."""
    level = validation_level(request.query_params)
    return ctx if not level else replace(ctx, validation=level)


async def list_records(request: Request) -> Response:
    svc, ctx = await request_context(request)
    et = await _entity(svc, ctx.space_id, request.path_params["entity"])
    q = parse_list(et, request.query_params, svc.settings, ctx.timezone)
    async with svc.db.read() as conn:
        records, total, info = await list_page(conn, et, ctx.space_id, q)
        base = base_url(request, svc.settings)
        shown = await render(
            conn,
            et,
            ctx.space_id,
            records,
            base,
            q.shape,
            zone=ctx.timezone,
            max_records=svc.settings.max_rendered_records,
        )
    return envelopes.many(without_credentials(et, shown), total, info)


async def read_record(request: Request) -> Response:
    svc, ctx = await request_context(request)
    et = await _entity(svc, ctx.space_id, request.path_params["entity"])
    record_id = _record_id(request)
    shape = _shape(request, svc, et, frozenset(INCLUDE_DELETED))
    deleted = include_deleted(request.query_params)
    async with svc.db.read() as conn:
        found = await fetch(conn, et, ctx.space_id, record_id, include_deleted=deleted)
        if found is None:
            raise NotFound(f"no {et.name} record with id {record_id}")
        base = base_url(request, svc.settings)
        limit = svc.settings.max_rendered_records
        shown = await render(
            conn, et, ctx.space_id, [found[0]], base, shape, zone=ctx.timezone, max_records=limit
        )
    return envelopes.one(without_credentials(et, shown)[0])


def without_credentials(et: EntityType, shown: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A webhook URL stored before registration refused credentials is shown masked."""
    if et.name == "Webhooks":
        for record in shown:
            if isinstance(record.get("url"), str):
                record["url"] = shown_url(record["url"])
    return shown


WriteStep = Callable[[Writer, EntityType], Awaitable[Record]]


async def _write(
    request: Request,
    svc: Services,
    ctx: WriteContext,
    et: EntityType,
    step: WriteStep,
    *,
    shown_as: EntityType | None = None,
    status: int = 200,
    reveal: bool = False,
    fresh: bool = False,
    record_id: str | None = None,
    params: frozenset[str] = frozenset(),
) -> Response:
    """Run one write and answer with the record as it is now, shaped as asked."""
    shape = _shape(request, svc, shown_as or et, params)
    async with svc.writes.begin(ctx) as writer:
        try:
            record = await step(writer, et)
        except ValidationFailed as e:
            raise e.about((shown_as or et).singular, record_id) from None
        base = base_url(request, svc.settings)
        shown = await render(
            writer.conn,
            shown_as or et,
            ctx.space_id,
            [record],
            base,
            shape,
            reveal=reveal,
            fresh=fresh,
            zone=ctx.timezone,
            max_records=svc.settings.max_rendered_records,
        )
    return envelopes.one(without_credentials(shown_as or et, shown)[0], status)


async def create_record(request: Request) -> Response:
    svc, ctx = await request_context(request)
    et = await _entity(svc, ctx.space_id, request.path_params["entity"])
    body = await json_object(request)
    ctx = checked_as_asked(request, ctx)
    ctx = await svc.writes.precheck(ctx, et, [body])

    async def step(w: Writer, et: EntityType) -> Record:
        return await w.create(et, body)

    # A new record's lists are empty, unless this very write filled them (relation rows).
    fresh = not links.involved(et, body)
    return await _write(
        request, svc, ctx, et, step, status=201, reveal=True, fresh=fresh, params=WRITE_PARAMS
    )


async def patch_record(request: Request) -> Response:
    svc, ctx = await request_context(request)
    et = await _entity(svc, ctx.space_id, request.path_params["entity"])
    record_id = _record_id(request)
    body = await json_object(request)
    ctx = checked_as_asked(request, ctx)
    ctx = await svc.writes.precheck(ctx, et, [body])

    async def step(w: Writer, et: EntityType) -> Record:
        return await w.update(et, record_id, body)

    return await _write(request, svc, ctx, et, step, record_id=record_id, params=WRITE_PARAMS)


async def delete_record(request: Request) -> Response:
    svc, ctx = await request_context(request)
    et = await _entity(svc, ctx.space_id, request.path_params["entity"])
    record_id = _record_id(request)
    only_params(request, WRITE_PARAMS)
    # A delete checks only that the record is there: no level relaxes that, so the level is
    # checked for its form and has no other effect.
    ctx = checked_as_asked(request, ctx)
    async with svc.writes.begin(ctx) as writer:
        await writer.delete(et, record_id)
    return envelopes.one(record_id)


async def qualify(request: Request) -> Response:
    svc, ctx = await request_context(request)
    record_id = _record_id(request)
    body = await json_object(request) if (await request.body()).strip() else {}

    async def step(w: Writer, et: EntityType) -> Record:
        return await w.qualify(record_id, body)

    leads, opptys = BUILTIN["Leads"], BUILTIN["Opportunities"]
    return await _write(request, svc, ctx, leads, step, shown_as=opptys, record_id=record_id)


async def back_to_lead(request: Request) -> Response:
    svc, ctx = await request_context(request)
    record_id = _record_id(request)

    async def step(w: Writer, et: EntityType) -> Record:
        return await w.back_to_lead(record_id)

    leads, opptys = BUILTIN["Leads"], BUILTIN["Opportunities"]
    return await _write(request, svc, ctx, opptys, step, shown_as=leads, record_id=record_id)


async def _batch(
    request: Request, run: Callable[[Writer, EntityType, Any], Awaitable[str]]
) -> Response:
    svc, ctx = await request_context(request)
    et = writable(await _entity(svc, ctx.space_id, request.path_params["entity"]))
    params = only_params(request, {"rollback-method", VALIDATION_LEVEL})
    keep_going = rollback_method(params.get("rollback-method"))
    ctx = checked_as_asked(request, ctx)
    items = await json_array(request, svc.settings.max_batch_items)
    ctx = await svc.writes.precheck(ctx, et, items)
    # batch-modify of new records only: checked before the write (delete and restore name ids)
    ready = await svc.writes.prepare_creates(ctx, et, items) if run is _modify else None
    async with svc.writes.begin(ctx, ready.now if ready else None) as writer:
        results = await run_batch(writer, et, items, run, keep_going=keep_going, prepared=ready)
    return envelopes.JSONBody({"success": True, "data": results})


async def _modify(w: Writer, et: EntityType, item: Any) -> str:
    """One item of batch-modify: a create without ``id``, an update with one."""
    if not isinstance(item, dict):
        raise ParameterInvalid("an item of batch-modify must be a JSON object")
    if "id" not in item:
        return str((await w.create(et, item))["id"])
    body = dict(item)
    record_id = body.pop("id")
    if not isinstance(record_id, str) or not is_uuid(record_id):
        raise ParameterInvalid(f"id {record_id!r} is not a UUID")
    return str((await w.update(et, record_id.lower(), body))["id"])


async def batch_modify(request: Request) -> Response:
    return await _batch(request, _modify)


def _id_item(item: Any) -> str:
    if not isinstance(item, str) or not is_uuid(item):
        raise ParameterInvalid(f"{item!r} is not a record id (UUID)")
    return item.lower()


async def batch_delete(request: Request) -> Response:
    async def run(w: Writer, et: EntityType, item: Any) -> str:
        return str((await w.delete(et, _id_item(item)))["id"])

    return await _batch(request, run)


async def batch_restore(request: Request) -> Response:
    async def run(w: Writer, et: EntityType, item: Any) -> str:
        return str((await w.restore(et, _id_item(item)))["id"])

    return await _batch(request, run)


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
        (ENTITY + "/batch-modify", batch_modify, ["POST"]),
        (ENTITY + "/batch-delete", batch_delete, ["POST"]),
        (ENTITY + "/batch-restore", batch_restore, ["POST"]),
    ]
    return [Route(PREFIX + path, fn, methods=methods) for path, fn, methods in table]
