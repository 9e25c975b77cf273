"""The Events page: the space's recent events, live, filterable by event name and record id,
each opened to its verdict for every webhook of the space (explain), linking to the deliveries
that carried it. The feed's and explain's own functions (``crmhooks.services``)."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from crmhooks.errors import ParameterInvalid
from crmhooks.services.explain import event_verdicts
from crmhooks.services.feed import parse_query, recent_events, shown_name
from crmhooks.ui.web import Dashboard, Page, route

POLL = "2s"
SHOWN = 50


def _filters(page: Page) -> tuple[dict[str, str], dict[str, Any]]:
    """The page's filters as typed, and what they make of the feed's query (a bad one is
    named on the page, not fatal)."""
    q = page.request.query_params
    typed = {"event": q.get("event", "").strip(), "entity_id": q.get("entity_id", "").strip()}
    params = {"first": str(SHOWN)}
    if typed["event"]:
        params["filter[event]"] = typed["event"]
    if typed["entity_id"]:
        params["filter[entity_id]"] = typed["entity_id"]
    try:
        return typed, {"query": parse_query(params), "error": None}
    except ParameterInvalid as e:
        message = e.message.replace("filter[event]", "Event")
        message = message.replace("filter[entity_id]", "Record id")
        return typed, {"query": parse_query({"first": str(SHOWN)}), "error": message}


async def _rows(page: Page) -> dict[str, Any]:
    typed, made = _filters(page)
    shown = await recent_events(page.svc.db, page.space_id, made["query"], "")
    for e in shown:
        e["label"] = shown_name(e)
    query = {k: v for k, v in typed.items() if v}
    return {"events": shown, "filters": typed, "filter_error": made["error"], "query": query}


async def show_events(page: Page) -> Response:
    return page.render("events.html", poll=POLL, **await _rows(page))


async def live(page: Page) -> Response:
    return page.render("_events_live.html", poll=POLL, **await _rows(page))


async def show_event(page: Page) -> Response:
    """One event's verdict for every webhook: a fragment for the Events page, a page alone."""
    event, verdicts = await event_verdicts(page.svc.db, page.space_id, page.path_id("event_id"))
    template = "_event_verdicts.html" if page.htmx else "event.html"
    return page.render(template, event=event, verdicts=verdicts)


def event_routes(dash: Dashboard) -> list[Route]:
    return [
        route(dash, "/events", show_events),
        route(dash, "/events/live", live),
        route(dash, "/events/{event_id}", show_event),
    ]
