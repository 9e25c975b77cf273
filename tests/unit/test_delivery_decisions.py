"""Pure decisions of delivery: retry schedule, chunk plans, address guard, signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import time
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from crmhooks.delivery.budget import Budget, Matched, match_within
from crmhooks.delivery.chunking import plan_chunks
from crmhooks.delivery.retry import DEFAULT_SCHEDULE, Verdict, decide, parse_schedule
from crmhooks.delivery.signing import headers, pipeliner_signature, standard_signature
from crmhooks.errors import ParameterInvalid
from crmhooks.hooks.match import Event
from crmhooks.hooks.subscription import Subscription, compile_webhook
from crmhooks.netguard import Guard, parse_allowed
from crmhooks.services.replay import parse_replay, split_ready


def test_success_is_delivered_and_410_disables() -> None:
    assert decide(1, 204).verdict is Verdict.DELIVERED
    assert decide(3, 410).verdict is Verdict.DISABLE


@pytest.mark.parametrize("status", [None, 301, 400, 500])
def test_failures_follow_the_schedule_with_twenty_percent_jitter(status: int | None) -> None:
    rand = random.Random(7)
    for attempt, base in enumerate(DEFAULT_SCHEDULE, start=1):
        d = decide(attempt, status, rand=rand)
        assert d.verdict is Verdict.RETRY
        assert 0.8 * base <= d.delay <= 1.2 * base


def test_ten_attempts_then_give_up() -> None:
    assert len(DEFAULT_SCHEDULE) == 9  # the first attempt and nine more
    assert 2.5 < sum(DEFAULT_SCHEDULE) / 86400 < 3.5  # about three days
    assert decide(10, 500).verdict is Verdict.GIVE_UP


def test_retry_after_is_honoured_between_the_delay_and_twice_it() -> None:
    assert decide(1, 429, retry_after=7).delay == 7
    assert decide(1, 503, retry_after=1).delay == 5  # at least the scheduled delay
    assert decide(1, 503, retry_after=3600).delay == 10  # at most twice it
    assert decide(1, 500, retry_after=60).delay <= 6  # only 429 and 503 are asked to wait


def test_a_compressed_schedule_for_tests() -> None:
    assert parse_schedule("0.5,1") == (0.5, 1.0)
    assert parse_schedule("") == DEFAULT_SCHEDULE
    assert decide(3, 500, schedule=(0.5, 1)).verdict is Verdict.GIVE_UP


def test_chunks_of_a_burst_are_spread_by_the_delay() -> None:
    items = [("b1", i) for i in range(250)]
    chunks = plan_chunks(items, 100, 1.0)
    assert [len(c.items) for c in chunks] == [100, 100, 50]
    assert [c.delay for c in chunks] == [0.0, 1.0, 2.0]


def test_without_a_delay_bursts_share_requests() -> None:
    items = [("b1", 1), ("b2", 2), ("b2", 3)]
    chunks = plan_chunks(items, 100, 0)
    assert [c.items for c in chunks] == [[1, 2, 3]]
    assert [c.items for c in plan_chunks(items, 2, 0)] == [[1, 2], [3]]


def test_with_a_delay_each_burst_starts_its_own_chunks() -> None:
    items = [("b1", 1), ("b2", 2), ("b2", 3)]
    chunks = plan_chunks(items, 1, 5)
    assert [(c.items, c.delay) for c in chunks] == [([1], 0), ([2], 0), ([3], 5)]


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "64:ff9b::a00:1",
        "2002:a00:1::",
    ],
)
def test_blocked_addresses(address: str) -> None:
    assert not Guard().permits(address)


def test_public_addresses_pass_and_the_allow_list_opens_private_ones() -> None:
    assert Guard().permits("93.184.216.34")
    assert Guard().permits("2606:2800:220:1::1")
    guard = Guard(parse_allowed("127.0.0.0/8, ::1/128"))
    assert guard.permits("127.0.0.1")
    assert guard.permits("::1")
    assert guard.permits("::ffff:127.0.0.1")
    assert not guard.permits("10.0.0.1")


def test_pipeliner_signature_is_hex_hmac_of_the_body() -> None:
    secret, body = "0b1f2a8e-2f5e-4c4b-9a57-3b7b6f0c1d2e", b'[{"a":1}]'
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert pipeliner_signature(secret, body) == expected


def test_standard_signature_verifies_with_the_reference_library() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    body = b'[{"event":"Account.Create"}]'
    now = int(time.time())
    sig = standard_signature(secret, "msg_1", now, body)
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(now), "webhook-signature": sig}
    Webhook(secret).verify(body, headers)  # raises if the signature is refused
    with pytest.raises(Exception, match="signature"):
        Webhook(secret).verify(body + b" ", headers)


def _event(seq: int, space_id: str) -> Event:
    return Event(
        seq=seq,
        id=f"e{seq}",
        space_id=space_id,
        name="Account.Create",
        entity="Accounts",
        option_key="Account",
        record_id=f"r{seq}",
        record_json="{}",
        changes=None,
        related_entity=None,
        related_id=None,
        related_json=None,
        skip_key=None,
        burst_id=f"b{seq}",
        occurred=datetime(2026, 12, 1, tzinfo=UTC),
    )


async def test_a_space_past_its_matching_budget_has_its_next_events_held() -> None:
    now = [0.0]
    cost = {"costly": 10.0, "calm": 0.5, "behind": 0.5}  # seconds of matching per event

    def route(event: Event) -> list[Subscription]:
        now[0] += cost[event.space_id]
        return []

    spaces = ["costly", "calm", "costly", "costly", "behind", "calm", "costly", "calm"]
    evs = [_event(seq, space) for seq, space in enumerate(spaces, start=1)]
    budget, found = Budget(25.0, clock=lambda: now[0]), Matched()
    await match_within(evs, route, budget, found, behind={"behind"})
    # The costly space: 10, 20, 30 (past 25 after its third); its fourth is held, and so is
    # every event of the space behind; the calm space is never held.
    assert [e.seq for e in found.held] == [5, 7]
    assert found.matched == {"costly": 3, "calm": 3}
    assert budget.spent == {"costly": 30.0, "calm": 1.5}
    # A budget of nothing still moves every space on by one event per step.
    none, found = Budget(0.0, clock=lambda: now[0]), Matched()
    await match_within(evs, route, none, found)
    assert found.matched == {"costly": 1, "calm": 1, "behind": 1}
    # Held events to read for what is left of a space's budget, at least one.
    assert budget.events_for("calm", 0.5, 100) == 48
    assert budget.events_for("calm", 0.5, 10) == 10
    assert budget.events_for("costly", 10.0, 100) == 1


def _burst(seq: int, burst: str) -> Event:
    event = _event(seq, "s")
    return replace(event, burst_id=burst)


def test_a_replay_page_plans_whole_chunks_and_leaves_the_rest_for_the_next() -> None:
    evs = [_burst(i, f"b{i // 4}") for i in range(10)]  # bursts of 4, 4, 2
    assert split_ready(evs, 3, 0.0) == 9  # three chunks of 3; the tenth may be joined
    assert split_ready(evs, 5, 0.0) == 10
    assert split_ready(evs, 100, 0.0) == 0
    # With a chunk_delay chunks are per burst: the last burst may go on in the next page.
    assert split_ready(evs, 3, 1.0) == 8
    assert split_ready(evs[:4], 3, 1.0) == 0


def test_a_replay_body_is_read_with_errors_naming_the_field() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    win = parse_replay({"since": "2026-11-01T00:00:00Z"}, now)
    assert (win.since, win.until, win.dry_run) == (datetime(2026, 11, 1, tzinfo=UTC), now, False)
    got = parse_replay({"since": "2026-11-01T00:00:00Z", "until": None, "dry_run": True}, now)
    assert got.dry_run is True
    for body, field in [
        ({}, "since"),
        ({"since": 1}, "since"),
        ({"since": "soon"}, "since"),
        ({"since": "2026-11-01T00:00:00Z", "until": "2026-10-01T00:00:00Z"}, "until"),
        ({"since": "2026-11-01T00:00:00Z", "dry_run": 1}, "dry_run"),
        ({"since": "2026-11-01T00:00:00Z", "webhook": "x"}, "webhook"),
    ]:
        with pytest.raises(ParameterInvalid, match=field):
            parse_replay(body, now)


def test_a_replayed_request_says_so_in_a_header_outside_the_signature() -> None:
    record = {"id": "w", "space_id": "s", "url": "https://example.test/hook"}
    sub = compile_webhook({**record, "events": ["*"], "insecure_ssl": False}, {})
    body = b"[]"
    live = headers(sub, "msg", 1, body, datetime(2026, 12, 1, tzinfo=UTC))
    again = headers(sub, "msg", 1, body, datetime(2026, 12, 1, tzinfo=UTC), replay=True)
    assert "webhook-replay" not in live
    assert again == {**live, "webhook-replay": "true"}
