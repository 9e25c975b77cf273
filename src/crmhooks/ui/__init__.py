"""The web dashboard at ``/ui``: server-rendered pages to manage a space's webhooks and watch
their deliveries, in the same process as the API (see docs/dashboard.md).

Modules: ``sessions`` (signed cookies, CSRF tokens), ``forms`` (form bodies in and out),
``chart`` (the per-minute chart), ``queries`` (what the pages read beyond the API's queries),
``web`` (templates, session and CSRF checks, HTML errors), ``signin``, ``webhook_pages`` and
``delivery_pages`` (the pages).
"""

from __future__ import annotations

from pathlib import Path

from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from crmhooks.errors import NotFound
from crmhooks.settings import Settings
from crmhooks.ui.delivery_pages import delivery_routes
from crmhooks.ui.signin import signin_routes
from crmhooks.ui.web import BASE, Dashboard, Page, route
from crmhooks.ui.webhook_pages import webhook_routes

STATIC = Path(__file__).parent / "static"


def dashboard_routes(settings: Settings) -> list[BaseRoute]:
    """Every route of the dashboard, under ``/ui``."""
    dash = Dashboard(settings)
    return [
        Mount(BASE + "/static", StaticFiles(directory=STATIC), name="ui-static"),
        *signin_routes(dash),
        *webhook_routes(dash),
        *delivery_routes(dash),
        route(dash, "/{rest:path}", _no_page),  # last: any other address under /ui
    ]


async def _no_page(page: Page) -> Response:
    raise NotFound("there is no page at this address")


__all__ = ["Dashboard", "dashboard_routes"]
