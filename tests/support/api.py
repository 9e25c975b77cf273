"""The API as a client sees it: an HTTP client on the application in process, signed in to a
space, and the checks of the error envelope (contract section 2) the tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from crmhooks.app import create_app
from crmhooks.settings import Settings
from crmhooks.store.keys import IssuedKey
from tests.support.required import with_required

BASE = "/api/v100/rest/spaces"


@dataclass
class Api:
    """An HTTP client on the app, signed in to one space, with the contract's base path."""

    http: httpx.AsyncClient
    space: IssuedKey

    def path(self, entity: str, *rest: str) -> str:
        tail = "/".join([entity, *rest])
        return f"{BASE}/{self.space.space_id}/entities/{tail}"

    async def create(self, entity: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        """POST a record; what Pipeliner requires and ``body`` leaves out is filled in
        (tests/support/required.py)."""
        body = with_required(entity, body, self.space.client_id)
        r = await self.http.post(self.path(entity), json=body, **kw)
        assert r.status_code == 201, r.text
        data: dict[str, Any] = r.json()["data"]
        return data

    async def get(self, entity: str, *rest: str, **kw: Any) -> httpx.Response:
        return await self.http.get(self.path(entity, *rest), **kw)


def api_settings(db_url: str) -> Settings:
    """The API alone: tests of delivery start a dispatcher of their own (or a real server).
    Bad-input tests send many wrong credentials from one address: a failure budget they do
    not reach (tests/hostile tests the throttle with a small one)."""
    return Settings(
        database_url=db_url, public_url="http://testserver", delivery=False, auth_failure_limit=1000
    )


@asynccontextmanager
async def asgi_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app of ``settings``, started, behind an in-process HTTP client."""
    app = create_app(settings, migrate=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client,
    ):
        yield client


# --- the error envelope ----------------------------------------------------------------------


def assert_error(r: httpx.Response, status: int, name: str, *mentions: str) -> dict[str, Any]:
    """The error envelope of section 2, with ``mentions`` somewhere in what it says."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body: dict[str, Any] = r.json()
    assert body["success"] is False
    assert body["http_status"] == status
    assert isinstance(body["code"], int)
    assert body["name"] == name
    assert isinstance(body["message"], str)
    assert body["message"]
    said = body["message"] + " ".join(
        f"{fe['field_name']} {e['message']}"
        for fe in body.get("field_errors", [])
        for e in fe["errors"]
    )
    for m in mentions:
        assert m in said, f"{m!r} is not named in {body}"
    return body


def assert_bad_parameter(r: httpx.Response, *mentions: str) -> dict[str, Any]:
    body = assert_error(r, 400, "ERROR_PARAMETER_INVALID", *mentions)
    assert body["code"] == 117
    return body


def assert_invalid(
    r: httpx.Response, field: str, inner: str | None = None, *mentions: str
) -> list[dict[str, Any]]:
    """A 422 whose ``field_errors`` name ``field``; returns that field's inner errors."""
    body = assert_error(r, 422, "ERROR_ENTITY_VALIDATION", *mentions)
    assert body["code"] == 40000
    by_field = {fe["field_name"]: fe for fe in body["field_errors"]}
    assert field in by_field, f"{field!r} is not named in {body['field_errors']}"
    fe = by_field[field]
    assert fe["name"] == "ERROR_FIELD_VALIDATION"
    assert fe["code"] == 40002
    errors: list[dict[str, Any]] = fe["errors"]
    assert errors
    for e in errors:
        assert isinstance(e["code"], int)
        assert e["name"].startswith("ERROR_")
        assert e["message"]
    if inner is not None:
        assert inner in [e["name"] for e in errors], errors
    assert field in body["message"]
    return errors


async def everything(api: Api, entity: str) -> dict[str, Any]:
    """All of an entity's records, deleted ones too: compared before and after a bad write."""
    r = await api.get(entity, params={"include-deleted": "true", "first": "100"})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return {"total": body["total"], "data": body["data"]}
