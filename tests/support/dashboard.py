"""The dashboard as a browser without a browser sees it: a visitor with a cookie jar and the
CSRF token of its last page, what a page says, and webhooks made through the API beside it."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

import httpx

from crmhooks.settings import Settings
from crmhooks.store.keys import IssuedKey
from crmhooks.ui.sessions import CSRF_FIELD

TOKEN_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
# A receiver that is not there: the test event fails fast with a refused connection.
NOWHERE = "http://127.0.0.1:9/hook"


@dataclass
class Visitor:
    """A browser without a browser: a cookie jar, and the CSRF token of its last page."""

    http: httpx.AsyncClient
    csrf: str = ""

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        r = await self.http.get(path, **kw)
        found = TOKEN_RE.search(r.text)
        if found:
            self.csrf = found.group(1)
        return r

    async def post(
        self, path: str, data: dict[str, Any] | None = None, **kw: Any
    ) -> httpx.Response:
        return await self.http.post(path, data={CSRF_FIELD: self.csrf, **(data or {})}, **kw)

    async def sign_in(self, key: IssuedKey) -> None:
        await self.get("/ui/signin")
        r = await self.post("/ui/signin", {"api_key": key.api_key, "api_secret": key.api_secret})
        assert r.status_code == 303, r.text
        assert r.headers["location"] == "/ui/webhooks"
        await self.get("/ui/webhooks")


def dashboard_settings(db_url: str) -> Settings:
    """The API and dashboard without delivery; test sends may reach loopback, and fail fast."""
    return Settings(
        database_url=db_url,
        public_url="http://testserver",
        delivery=False,
        allowed_targets="127.0.0.0/8",
        connect_timeout=1,
        request_timeout=2,
    )


def said(r: httpx.Response) -> str:
    """The page's text, roughly: tags dropped, entities decoded, spaces collapsed."""
    return said_html(r.text)


def assert_page(r: httpx.Response, status: int, *mentions: str) -> None:
    assert r.status_code == status, r.text[:2000]
    assert r.headers["content-type"].startswith("text/html")
    text = said(r)
    for m in mentions:
        assert m in text, f"{m!r} is not on the page:\n{text[:3000]}"


def api(client: httpx.AsyncClient, key: IssuedKey) -> httpx.AsyncClient:
    """An API client of the same application, signed in to ``key``'s space with HTTP Basic."""
    return httpx.AsyncClient(
        transport=client._transport,
        base_url=f"http://testserver/api/v100/rest/spaces/{key.space_id}",
        auth=httpx.BasicAuth(key.api_key, key.api_secret),
    )


async def webhook_of(client: httpx.AsyncClient, key: IssuedKey) -> dict[str, Any]:
    """A webhook of ``key``'s space made through the API, with one (failed) test delivery."""
    async with api(client, key) as http:
        r = await http.post(
            "/entities/Webhooks",
            json={"url": NOWHERE, "events": ["Account.Create"], "insecure_ssl": False},
        )
        assert r.status_code == 201, r.text
        hook: dict[str, Any] = r.json()["data"]
        r = await http.post(f"/entities/Webhooks/{hook['id']}/test")
        assert r.status_code == 200, r.text
        hook["delivery_id"] = r.json()["data"]["delivery_id"]
    return hook


async def webhooks_in(client: httpx.AsyncClient, key: IssuedKey) -> list[dict[str, Any]]:
    async with api(client, key) as http:
        r = await http.get("/entities/Webhooks")
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["data"]
        return items


def said_html(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())
