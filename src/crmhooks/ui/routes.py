"""Every route of the dashboard, under ``/ui``."""

from __future__ import annotations

from pathlib import Path

from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from crmhooks.errors import NotFound
from crmhooks.settings import Settings
from crmhooks.ui.delivery_pages import delivery_routes
from crmhooks.ui.event_pages import event_routes
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
        *event_routes(dash),
        route(dash, "/{rest:path}", _no_page),  # last: any other address under /ui
    ]


async def _no_page(page: Page) -> Response:
    raise NotFound("there is no page at this address")
