"""The change feed route, ``GET /events`` (ours; docs/webhooks.md#change-feed). What it reads
and how a long-poll waits is ``crmhooks.services.feed``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from crmhooks.api import envelopes
from crmhooks.api.routes import PREFIX, base_url, request_context
from crmhooks.services.feed import parse_query, read_feed

# Writes through another process reach a waiting poll within this (PostgreSQL; SQLite's
# writes all go through the one API process, which wakes its polls itself).
OTHER_PROCESSES_POLL = 1.0  # seconds


async def read_events(request: Request) -> Response:
    svc, ctx = await request_context(request)
    query = parse_query(dict(request.query_params))
    poll = OTHER_PROCESSES_POLL if svc.db.dialect == "postgresql" else None
    page = await read_feed(
        svc.db, svc.feed, ctx.space_id, query, base_url(request, svc.settings), poll_seconds=poll
    )
    return envelopes.JSONBody(page.body())


def feed_routes() -> list[Route]:
    return [Route(PREFIX + "/events", read_events, methods=["GET"])]
