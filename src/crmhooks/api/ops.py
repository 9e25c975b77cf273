"""Operations routes: ``/health`` and ``/metrics`` (no authentication, nothing per space)."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from crmhooks.api.envelopes import JSONBody
from crmhooks.delivery.queue import pending_depth
from crmhooks.metrics import OLDEST_PENDING, QUEUE_DEPTH
from crmhooks.services.context import services


async def _queue(request: Request) -> tuple[int, float]:
    """Pending requests and the age in seconds of the oldest one."""
    async with services(request).db.read() as conn:
        count, oldest = await pending_depth(conn)
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    age = 0.0 if oldest is None else (datetime.now(UTC) - oldest).total_seconds()
    return int(count), max(age, 0.0)


async def health(request: Request) -> Response:
    dispatcher = request.app.state.dispatcher
    try:
        depth, age = await _queue(request)
    except (SQLAlchemyError, OSError) as e:
        body = {"status": "unavailable", "database": False, "error": type(e).__name__}
        return JSONBody(body, status_code=503)
    alive = dispatcher is None or dispatcher.alive
    body = {
        "status": "ok" if alive else "degraded",
        "database": True,
        "dispatcher": None if dispatcher is None else {"alive": alive},
        "queue_depth": depth,
        "oldest_pending_seconds": round(age, 3),
    }
    return JSONBody(body, status_code=200 if alive else 503)


async def metrics(request: Request) -> Response:
    depth, age = await _queue(request)
    QUEUE_DEPTH.set(depth)
    OLDEST_PENDING.set(age)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def ops_routes() -> list[Route]:
    return [Route("/health", health, methods=["GET"]), Route("/metrics", metrics, methods=["GET"])]
