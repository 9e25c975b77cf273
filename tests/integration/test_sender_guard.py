"""The address guard at connection time: the sender itself, against a real receiver on loopback.

Registration refuses blocked targets (test_dispatch), but a name can resolve elsewhere later and
the allow list can change: the sender checks every address it is about to connect to. Names are
resolved by a stand-in resolver (no DNS server can be configured here); what it answers is what
aiohttp connects to, so a refusal proves the check and a delivery proves the pinning.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from crmhooks.delivery.sender import HttpSender as Sender
from crmhooks.hooks.subscription import Subscription
from crmhooks.netguard import Guard, parse_allowed
from tests.conftest import free_port


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


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    t = Target()
    runner = await t.start()
    yield t
    await runner.cleanup()


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


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "[fe80::1]",
        "[fd00::1]",
        "0.0.0.0",
    ],
)
async def test_a_blocked_literal_address_is_refused_without_connecting(
    target: Target, host: str
) -> None:
    status, error = await send(f"http://{host}:{target.port}/hook")
    assert status is None
    assert "blocked target address" in error
    assert target.hits == []


@pytest.mark.parametrize(
    ("addresses", "blocked"),
    [
        (["127.0.0.1"], "127.0.0.1"),
        (["10.1.2.3"], "10.1.2.3"),
        (["169.254.169.254"], "169.254.169.254"),
        (["::1"], "::1"),
        (["::ffff:10.0.0.7"], "::ffff:10.0.0.7"),
        # one public and one private answer: the private one is enough to refuse
        (["93.184.216.34", "127.0.0.1"], "127.0.0.1"),
    ],
)
async def test_a_name_that_resolves_to_a_blocked_address_is_refused_at_connection_time(
    target: Target, addresses: list[str], blocked: str
) -> None:
    names = Names({"hooks.example.com": addresses})
    status, error = await send(f"http://hooks.example.com:{target.port}/hook", names=names)
    assert status is None
    assert "resolves to a blocked address" in error
    assert blocked in error
    assert names.lookups == ["hooks.example.com"]
    assert target.hits == []


async def test_the_checked_address_is_the_one_connected_to(target: Target) -> None:
    # Allowed by the list, the same name is delivered to the address the resolver gave, once.
    names = Names({"hooks.example.com": ["127.0.0.1"]})
    status, error = await send(
        f"http://hooks.example.com:{target.port}/hook", allow="127.0.0.0/8", names=names
    )
    assert (status, error) == (200, "")
    assert names.lookups == ["hooks.example.com"]
    assert target.hits == ["/hook"]


async def test_the_allow_list_opens_only_the_networks_it_names(target: Target) -> None:
    assert (await send(f"http://127.0.0.1:{target.port}/a", allow="127.0.0.0/8"))[0] == 200
    status, error = await send(f"http://[::1]:{target.port}/b", allow="127.0.0.0/8")
    assert status is None
    assert "blocked" in error
    status, error = await send(f"http://127.0.0.1:{target.port}/c", allow="10.0.0.0/8")
    assert status is None
    assert "blocked" in error
    assert target.hits == ["/a"]


async def test_a_redirect_is_not_followed(target: Target) -> None:
    status, _ = await send(f"http://127.0.0.1:{target.port}/moved", allow="127.0.0.0/8")
    assert status == 302  # a failure for the retry rules, and nothing sent to /elsewhere
    assert target.hits == ["/moved"]
