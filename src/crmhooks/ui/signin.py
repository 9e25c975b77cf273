"""Signing in with a space's API key and secret, and signing out.

The sign-in form is the one form without a session, so its CSRF check is a double submit: the
page sets a random value in a cookie and repeats it in the form; a form posted from another
site cannot know it (and, the cookie being SameSite=Strict, would not send it either).
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from crmhooks.errors import ParameterInvalid
from crmhooks.services.context import client_address
from crmhooks.store.keys import end_sessions, secret_matches
from crmhooks.ui import sessions
from crmhooks.ui.forms import one, parse_form
from crmhooks.ui.web import BASE, Dashboard, Page, harden, route

REFUSED = "Sign-in failed: that API key and secret do not match. Nothing was changed."
STALE = "The sign-in form had expired. Please sign in again."
THROTTLED = (
    "Too many failed sign-ins from your address or with this API key. "
    "Please wait {seconds} seconds before trying again."
)
NOTICES = {"out": "You are signed out.", "ended": "Your session has ended. Please sign in again."}


def _cookie(page: Page, response: Response, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=BASE,
        httponly=True,
        samesite="strict",
        secure=page.secure_cookies(),
    )


def _form_page(page: Page, status: int = 200, error: str | None = None) -> Response:
    token = page.request.cookies.get(sessions.SIGNIN_COOKIE) or sessions.new_signin_token()
    notice = NOTICES.get(page.request.query_params.get("notice", ""))
    response = page.render("signin.html", status, signin_token=token, error=error, notice=notice)
    _cookie(page, response, sessions.SIGNIN_COOKIE, token, 3600)
    return harden(response)


def signin_routes(dash: Dashboard) -> list[Route]:
    async def show(request: Request) -> Response:
        return _form_page(Page(request, dash, None))

    async def submit(request: Request) -> Response:
        page = Page(request, dash, None)
        try:
            form = parse_form(await request.body(), request.headers.get("content-type"))
        except ParameterInvalid:
            return _form_page(page, 400, REFUSED)
        if not sessions.tokens_match(
            request.cookies.get(sessions.SIGNIN_COOKIE), one(form, sessions.CSRF_FIELD)
        ):
            return _form_page(page, 403, STALE)
        api_key, secret = one(form, "api_key").strip(), one(form, "api_secret").strip()
        key = await page.svc.keys.get(api_key) if api_key else None
        if key is None or not secret_matches(secret, key.secret_hash):
            # Counted with the API's failures: the same budgets, so the two cannot be combined
            # to try twice as often. A right key and secret are never throttled.
            now = time.monotonic()
            wait = page.svc.throttle.failed(client_address(request), api_key, now)
            if wait:
                response = _form_page(page, 429, THROTTLED.format(seconds=wait))
                response.headers["Retry-After"] = str(wait)
                return response
            return _form_page(page, 401, REFUSED)
        cookie = sessions.issue(dash.signing_key(key), api_key, key.space_id, int(time.time()))
        response = page.redirect("/webhooks")
        _cookie(page, response, sessions.SESSION_COOKIE, cookie, dash.max_age)
        response.delete_cookie(sessions.SIGNIN_COOKIE, path=BASE)
        return harden(response)

    async def signout(page: Page) -> Response:
        # Ends every session of the key, in every process: a copy of this cookie (and its CSRF
        # token) is refused from now on, not only this browser's.
        async with page.svc.db.write() as conn:
            await end_sessions(conn, page.me.key.key_id)
        page.svc.keys.forget(page.me.claims.api_key)
        response = page.redirect("/signin?notice=out")
        response.delete_cookie(sessions.SESSION_COOKIE, path=BASE)
        return response

    async def home(request: Request) -> Response:
        return harden(Page(request, dash, None).redirect("/webhooks"))

    return [
        Route(BASE, home, methods=["GET"]),
        Route(BASE + "/", home, methods=["GET"]),
        Route(BASE + "/signin", show, methods=["GET"]),
        Route(BASE + "/signin", submit, methods=["POST"]),
        route(dash, "/signout", signout, ("POST",)),
    ]
