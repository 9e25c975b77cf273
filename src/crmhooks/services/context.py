"""What the API and the dashboard share: the :class:`Services` one application is built with
(by ``crmhooks.app``), and reading it, and the client's address, from a request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from starlette.requests import Request

from crmhooks.changes.writer import WritePath
from crmhooks.delivery.dispatcher import Dispatcher
from crmhooks.delivery.sender import HttpSender
from crmhooks.netguard import Guard
from crmhooks.services.feed import FeedSignals
from crmhooks.services.keys import KeyCache
from crmhooks.services.throttle import FailureThrottle
from crmhooks.settings import Settings
from crmhooks.store.engine import Database


class Delivery(Protocol):
    """What the front-ends ask of delivery (``app.state.dispatcher``): the dispatcher of this
    process, or ``serve``'s delivery process (``worker.DeliveryProcess``)."""

    @property
    def alive(self) -> bool: ...

    def requeued(self) -> None: ...


@dataclass
class Services:
    """What the handlers and pages use; built once, when the application starts."""

    settings: Settings
    db: Database
    writes: WritePath
    keys: KeyCache
    throttle: FailureThrottle  # failed authentications, of the API and the dashboard sign-in
    guard: Guard  # the addresses webhooks may reach: registration and sending alike
    sender: HttpSender  # the one connection pool webhook requests go out on
    # None when this process does not deliver: `--no-delivery`, or serve's delivery process does.
    dispatcher: Dispatcher | None
    feed: FeedSignals = field(default_factory=FeedSignals)  # wakes change feed long-polls


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def base_url(request: Request, settings: Settings) -> str:
    """The server's address as links in bodies name it: ``public_url``, or the request's."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    return str(request.base_url).rstrip("/")


def client_address(request: Request) -> str:
    """The client's address (the proxy's, unless the server trusts its forwarded headers)."""
    return request.client.host if request.client else ""
