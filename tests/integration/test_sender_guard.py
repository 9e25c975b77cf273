"""The address guard at connection time: the sender itself, against a real receiver on loopback.

Registration refuses blocked targets (test_dispatch), but a name can resolve elsewhere later and
the allow list can change: the sender checks every address it is about to connect to. Names are
resolved by a stand-in resolver (no DNS server can be configured here); what it answers is what
aiohttp connects to, so a refusal proves the check and a delivery proves the pinning.
"""

from __future__ import annotations

import pytest

from crmhooks.delivery.sender import HttpSender as Sender
from crmhooks.netguard import Guard, parse_allowed
from tests.support.targets import Names, Target, send, webhook


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


async def test_a_urls_checks_are_kept_per_url_and_refuse_every_time(target: Target) -> None:
    """The sender works out a URL's checks once (``HttpSender._refusal``): the same blocked
    URL is refused on every request, so is one that is no target, and a sender whose guard
    allows the address sends to it every time."""
    sender = Sender(Guard(parse_allowed("")), connect_timeout=2, total_timeout=3)
    blocked, unusable = webhook(f"http://127.0.0.1:{target.port}/hook"), webhook("ftp://x/")
    try:
        for _ in range(3):
            outcome = await sender.send(blocked, "msg", b"[]")
            assert outcome.error == "blocked target address 127.0.0.1"
            outcome = await sender.send(unusable, "msg", b"[]")
            assert (outcome.error or "").startswith("not a target")
        assert target.hits == []
        open_sender = Sender(
            Guard(parse_allowed("127.0.0.0/8")), connect_timeout=2, total_timeout=3
        )
        try:
            for _ in range(2):
                assert (await open_sender.send(blocked, "msg", b"[]")).status == 200
        finally:
            await open_sender.close()
        assert len(target.hits) == 2
    finally:
        await sender.close()
