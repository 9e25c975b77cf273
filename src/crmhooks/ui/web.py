"""The dashboard's request plumbing: templates, who is signed in, the CSRF check, HTML error
pages and the headers every page carries.

Every dashboard route goes through :func:`route`, which (1) reads the session cookie, sending a
visitor without one to the sign-in page, (2) on POST reads the form and refuses it unless it
carries the session's CSRF token, *before* the handler runs, and (3) renders any error of the
project's hierarchy as an HTML page with the same status and message the API would give.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from crmhooks.changes.writer import WriteContext
from crmhooks.errors import ApiError, Forbidden, NotFound, Unauthorized
from crmhooks.schema.values import format_datetime, is_uuid
from crmhooks.services.context import Services, services
from crmhooks.settings import Settings
from crmhooks.store.keys import KeyRecord
from crmhooks.ui import sessions
from crmhooks.ui.forms import Form, parse_form

log = structlog.get_logger("crmhooks.ui")

BASE = "/ui"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class SignInNeeded(Unauthorized):
    """No valid session: a page sends the visitor to sign in; a form is refused."""


@dataclass(frozen=True)
class Visitor:
    """The person signed in: their key (and so their space) and the session's CSRF token."""

    key: KeyRecord
    claims: sessions.Claims
    csrf: str


def _when(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value).replace("+00:00", " UTC")


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


class Dashboard:
    """What every page shares: templates and the session secret; one per application."""

    def __init__(self, settings: Settings) -> None:
        # Without a configured secret, one per process: a restart signs everyone out.
        self.secret = settings.ui_secret.encode() or secrets.token_bytes(32)
        self.max_age = int(settings.ui_session_hours * 3600)
        self.env = Environment(
            loader=PackageLoader("crmhooks.ui", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["when"] = _when
        self.env.filters["pretty"] = _pretty
        self.env.globals["base"] = BASE

    def html(self, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        return HTMLResponse(self.env.get_template(name).render(**context), status_code=status)

    def signing_key(self, key: KeyRecord) -> bytes:
        return sessions.signing_key(self.secret, key.key_id, key.secret_hash, key.session_epoch)


@dataclass
class Page:
    """One request to the dashboard, with who made it and the form it sent."""

    request: Request
    dash: Dashboard
    visitor: Visitor | None
    form: Form = field(default_factory=dict)

    @property
    def svc(self) -> Services:
        return services(self.request)

    @property
    def me(self) -> Visitor:
        if self.visitor is None:
            raise SignInNeeded("sign in first")
        return self.visitor

    @property
    def space_id(self) -> str:
        return self.me.key.space_id

    @property
    def ctx(self) -> WriteContext:
        return WriteContext(space_id=self.space_id, key_id=self.me.key.key_id)

    @property
    def htmx(self) -> bool:
        return self.request.headers.get("hx-request") == "true"

    def path_id(self, name: str) -> str:
        """A UUID from the path; anything else is the same "not found" as an unknown id."""
        raw = str(self.request.path_params[name])
        if not is_uuid(raw):
            raise NotFound(f"nothing here has the id {raw!r}")
        return raw.lower()

    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        me = self.visitor
        context.setdefault("csrf", me.csrf if me else "")
        context.setdefault("space_id", me.key.space_id if me else None)
        context.setdefault("now", format_datetime(datetime.now(UTC)))
        return self.dash.html(name, context, status)

    def redirect(self, path: str) -> Response:
        return RedirectResponse(BASE + path, status_code=303)

    def secure_cookies(self) -> bool:
        public = self.svc.settings.public_url or ""
        return self.request.url.scheme == "https" or public.startswith("https:")


Handler = Callable[[Page], Awaitable[Response]]


async def _visitor(request: Request, dash: Dashboard) -> Visitor | None:
    """Who the session cookie names, if it is valid: signed for the key's current session epoch,
    the key still usable, not too old. Anything else (malformed too) is nobody."""
    cookie = request.cookies.get(sessions.SESSION_COOKIE)
    claims = sessions.peek(cookie)
    if claims is None:
        return None
    key = await services(request).keys.get(claims.api_key)
    if key is None or key.space_id != claims.space_id:
        return None
    signing = dash.signing_key(key)
    verified = sessions.verify(signing, cookie, int(time.time()), dash.max_age)
    if verified is None:
        return None
    return Visitor(key, verified, sessions.csrf_token(signing, verified))


async def _form(request: Request) -> Form:
    return parse_form(await request.body(), request.headers.get("content-type"))


def _check_csrf(request: Request, visitor: Visitor, form: Form) -> None:
    given = request.headers.get(sessions.CSRF_HEADER) or (form.get(sessions.CSRF_FIELD) or [""])[0]
    if not sessions.tokens_match(visitor.csrf, given):
        raise Forbidden(
            "this form's security token is missing or out of date, so nothing was changed: "
            "reload the page and try again"
        )


def error_page(page: Page, exc: ApiError) -> Response:
    titles = {400: "Not understood", 401: "Signed out", 403: "Refused", 404: "Not found"}
    response = page.render(
        "error.html",
        exc.http_status,
        title=titles.get(exc.http_status, "Something went wrong"),
        message=exc.message,
        code=exc.http_status,
    )
    if page.htmx and isinstance(exc, SignInNeeded):
        response.headers["HX-Redirect"] = BASE + "/signin"
    return response


def route(
    dash: Dashboard, path: str, handler: Handler, methods: tuple[str, ...] = ("GET",)
) -> Route:
    """A dashboard route: signed-in visitors only, CSRF-checked forms, HTML errors."""

    async def endpoint(request: Request) -> Response:
        page = Page(request, dash, None)
        try:
            page.visitor = await _visitor(request, dash)
            if page.visitor is None:
                if request.method == "GET" and not page.htmx:
                    return page.redirect("/signin")
                raise SignInNeeded("your session has ended, so nothing was changed: sign in again")
            if request.method == "POST":
                page.form = await _form(request)
                _check_csrf(request, page.visitor, page.form)
            response = await handler(page)
        except ApiError as e:
            response = error_page(page, e)
        except Exception:
            log.exception("dashboard error", path=request.url.path, method=request.method)
            response = error_page(page, ApiError("internal error: see the server's log"))
        return harden(response)

    return Route(BASE + path, endpoint, methods=list(methods))


def harden(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
