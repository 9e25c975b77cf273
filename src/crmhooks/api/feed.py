"""The change feed route, ``GET /events`` (ours; docs/webhooks.md#change-feed). What it reads
and how a long-poll waits is ``crmhooks.services.feed``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from crmhooks.api import envelopes
from crmhooks.api.routes import PREFIX, base_url, request_context
from crmhooks.services.feed import parse_query, read_feed

# On PostgreSQL, while this process does not hear other processes' commits (its LISTEN
# connection is down), a waiting poll reads again this often. SQLite's writes all go through
# the one API process, which wakes its polls itself.
OTHER_PROCESSES_POLL = 1.0  # seconds


async def read_events(request: Request) -> Response:
    svc, ctx = await request_context(request)
    query = parse_query(dict(request.query_params))
    deaf = svc.db.dialect == "postgresql" and not svc.feed.hears_others.is_set()
    poll = OTHER_PROCESSES_POLL if deaf else None
    page = await read_feed(
        svc.db, svc.feed, ctx.space_id, query, base_url(request, svc.settings), poll_seconds=poll
    )
    return envelopes.JSONBody(page.body())


def feed_routes() -> list[Route]:
    return [Route(PREFIX + "/events", read_events, methods=["GET"])]
