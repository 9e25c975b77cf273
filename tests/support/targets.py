"""Delivery targets for the sender's own tests: a stand-in name resolver, a real receiver on
loopback that counts what reaches it, and one send through a guarded ``Sender``."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from crmhooks.delivery.sender import HttpSender as Sender
from crmhooks.hooks.subscription import Subscription
from crmhooks.netguard import Guard, parse_allowed
from tests.support.servers import free_port


class Names(AbstractResolver):
    """Answers from a table, as a DNS server would; counts the lookups."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        if host not in self.table:
            raise OSError(f"no such name: {host}")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.table[host]
        ]

    async def close(self) -> None:
        return None


class Target:
    """A real receiver on 127.0.0.1 that counts what reaches it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.hits: list[str] = []

    async def start(self) -> web.AppRunner:
        async def hook(request: web.Request) -> web.Response:
            self.hits.append(request.path)
            if request.path == "/moved":
                raise web.HTTPFound("/elsewhere")
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/{tail:.*}", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        return runner


def webhook(url: str) -> Subscription:
    return Subscription(
        id="w",
        space_id="s",
        url=url,
        events=frozenset({"Account.Create"}),
        insecure_ssl=False,
        is_active=True,
        created=datetime.now(UTC),
        client_id=None,
        signature=None,
        scheme="pipeliner",
        previous_signature=None,
        previous_until=None,
        chunk_size=1,
        chunk_delay=0.0,
        skip_keys=frozenset(),
        custom_entities=None,
        entity={},
        related={},
        webhook={},
    )


async def send(url: str, *, allow: str = "", names: Names | None = None) -> tuple[int | None, str]:
    sender = Sender(Guard(parse_allowed(allow)), connect_timeout=2, total_timeout=3, resolver=names)
    try:
        outcome = await sender.send(webhook(url), "msg", b"[]")
    finally:
        await sender.close()
    return outcome.status, outcome.error or ""
