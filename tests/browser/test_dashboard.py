"""The dashboard in a real headless Chromium (issue 7), against a real ``crmhooks serve``
process and a real receiver process: sign in, create a webhook, trigger an Account.Create, watch
its delivery appear without reloading, open it, make the receiver fail, see the failure, resend
once the receiver is fixed, see it delivered; then find the event on the Events page and why
it fired, and replay the window from the webhook's page (counted, then sent again).

Screenshots of every page go to the test's temporary directory; with
``CRMHOOKS_UPDATE_SCREENSHOTS=1`` one of each page at 1280 px is also written to
``docs/screenshots/``. Every page is also loaded 390 px wide and must not scroll sideways.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.servers import Server, start_server, stop_server
from tests.support.stack import SERVER_ENV, Receiver, start_receiver

CHROMIUM = "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
WAIT_MS = 15_000

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason=f"{CHROMIUM} is absent (Debian's chromium package; .ci/run installs it)",
    ),
]

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Server, Receiver]]:
    receiver = start_receiver(tmp_path)
    server = start_server(f"sqlite:///{tmp_path / 'crmhooks.db'}", extra_env=SERVER_ENV)
    try:
        yield server, receiver
    finally:
        stop_server(server)
        receiver.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


class Shots:
    """Screenshots into the test's directory (and docs/, when asked)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.to_docs = os.environ.get("CRMHOOKS_UPDATE_SCREENSHOTS") == "1"

    def take(self, page: Any, name: str) -> None:
        path = self.directory / f"{name}.png"
        page.screenshot(path=str(path))
        if self.to_docs:
            DOCS.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, DOCS / path.name)


def unlabelled_controls(page: Any) -> list[str]:
    """Form controls a person can see that have no label."""
    found: list[str] = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
            .filter(e => e.type !== 'hidden' && e.labels.length === 0
                         && !e.getAttribute('aria-label'))
            .map(e => e.outerHTML)"""
    )
    return found


def check_page(page: Any) -> None:
    assert unlabelled_controls(page) == []


def sideways_overflow(page: Any) -> int:
    overflow: int = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    return overflow


def test_sign_in_create_watch_fail_and_resend(
    stack: tuple[Server, Receiver], browser: Any, tmp_path: Path
) -> None:
    server, receiver = stack
    shots = Shots(tmp_path)
    api = httpx.Client(
        base_url=f"{server.url}/api/v100/rest/spaces/default/entities",
        auth=httpx.BasicAuth(server.api_key, server.api_secret),
    )
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    elsewhere: list[str] = []
    page.on(
        "request",
        lambda r: None if r.url.startswith(server.url) else elsewhere.append(r.url),
    )
    visited: list[str] = []

    # Sign in, with the keyboard: wrong secret first, then the right one.
    page.goto(f"{server.url}/ui")
    assert page.url.endswith("/ui/signin")
    check_page(page)
    shots.take(page, "signin")
    page.get_by_label("API key").fill(server.api_key)
    page.keyboard.press("Tab")
    page.keyboard.type("not the secret")
    page.keyboard.press("Enter")
    sync_api.expect(page.get_by_role("alert")).to_contain_text("Sign-in failed")
    page.get_by_label("API key").fill(server.api_key)
    page.get_by_label("API secret").fill(server.api_secret)
    page.get_by_role("button", name="Sign in").click()
    sync_api.expect(page.get_by_role("heading", name="Webhooks")).to_be_visible()
    visited.append(page.url)

    # Create a webhook: first with options the server refuses, then fixed.
    path = "/hook/dashboard"
    page.get_by_role("link", name="New webhook").click()
    check_page(page)
    page.get_by_label("URL").fill(receiver.url + path)
    page.get_by_label("Account.Create", exact=True).check()
    page.get_by_label("Options (JSON)").fill('{"chunk_size": 500}')
    page.get_by_role("button", name="Create webhook").click()
    sync_api.expect(page.locator("#options-errors")).to_contain_text(
        "options.chunk_size: 500 is not from 1 to 100"
    )
    shots.take(page, "webhook-form")
    visited.append(f"{server.url}/ui/webhooks/new")
    page.get_by_label("Options (JSON)").fill('{"chunk_size": 10}')
    page.get_by_role("button", name="Create webhook").click()
    sync_api.expect(page.get_by_role("heading", name="Deliveries")).to_be_visible()
    deliveries_url = page.url
    visited.append(deliveries_url)
    check_page(page)

    # An Account.Create appears in the log without a reload.
    page.evaluate("() => { window.notReloaded = true; }")
    owner = server.client_id  # the API user, as serve printed it
    api.post("/Accounts", json={"name": "Acme", "owner_id": owner}).raise_for_status()
    delivered = page.locator("#live tr.delivery.delivered")
    sync_api.expect(delivered).to_have_count(1)
    assert page.evaluate("() => window.notReloaded === true")
    sync_api.expect(page.locator(".chart .summary")).to_contain_text("1 delivered")

    # Its detail: the request and the attempt.
    delivered.get_by_role("link").click()
    sync_api.expect(page.locator("#delivery-status")).to_have_text("delivered")
    sync_api.expect(page.locator("tr.attempt")).to_contain_text("HTTP 200")
    sync_api.expect(page.locator("pre.body")).to_contain_text('"event": "Account.Create"')
    sync_api.expect(page.locator("table.headers")).to_contain_text("webhook-id")
    visited.append(page.url)

    # The receiver fails: the next request fails, and the log says so, live.
    receiver.add_rule(path, status=500)
    page.goto(deliveries_url)
    api.post("/Accounts", json={"name": "Globex", "owner_id": owner}).raise_for_status()
    failed = page.locator("#live tr.delivery.failed")
    sync_api.expect(failed).to_have_count(1)
    sync_api.expect(failed).to_contain_text("HTTP 500")
    shots.take(page, "deliveries")
    failed.get_by_role("link").click()
    sync_api.expect(page.locator("#delivery-status")).to_have_text("failed")
    sync_api.expect(page.locator("tr.attempt")).to_have_count(3)
    sync_api.expect(page.locator("tr.attempt").first).to_contain_text("HTTP 500")

    # Fixed: resend, and the same page turns to delivered.
    httpx.delete(f"{receiver.url}/_receiver/rules").raise_for_status()
    page.get_by_role("button", name="Resend").click()
    sync_api.expect(page.locator("#detail")).to_contain_text("Queued again")
    sync_api.expect(page.locator("#delivery-status")).to_have_text("delivered")
    sync_api.expect(page.locator("tr.attempt").last).to_contain_text("HTTP 200")
    shots.take(page, "delivery")
    ids = {r.headers["webhook-id"] for r in receiver.requests(path)}
    assert len(ids) == 2  # the resend kept the failed request's webhook-id

    # Send a test event from the deliveries page; its outcome is shown.
    page.goto(deliveries_url)
    page.get_by_role("button", name="Send a test event").click()
    sync_api.expect(page.locator("#outcome")).to_contain_text("Test event delivered")
    sync_api.expect(page.locator("#outcome")).to_contain_text("HTTP 200")

    # The webhooks page with its figures.
    page.goto(f"{server.url}/ui/webhooks")
    row = page.locator("table.cards tbody tr")
    sync_api.expect(row).to_contain_text("active")
    sync_api.expect(row).to_contain_text("100%")
    check_page(page)
    shots.take(page, "webhooks")

    # The Events page: the Account.Create is listed; opened, its verdict for the webhook says
    # it fired, every rule passed, and links to the request that carried it.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Events").click()
    sync_api.expect(page.get_by_role("heading", name="Events")).to_be_visible()
    check_page(page)
    first = page.locator("#live tr.event").filter(has_text="Account.Create").last
    sync_api.expect(first).to_contain_text("Acme")
    visited.append(page.url)
    first.locator("summary").click()
    verdict = first.locator(".verdict")
    sync_api.expect(verdict).to_contain_text("fired")
    sync_api.expect(verdict.locator("tr.check.passed")).to_have_count(7)
    shots.take(page, "events")
    verdict.locator("a.carrier").first.click()
    sync_api.expect(page.locator("#delivery-status")).to_have_text("delivered")
    page.goto(f"{server.url}/ui/events?event=Contact.*")
    sync_api.expect(page.locator("#live")).to_contain_text("No events match the filter")

    # Replay a window from the webhook's page: counted first (dry run), then sent again with
    # the same element ids and the replay header.
    page.goto(deliveries_url)
    page.get_by_label("Replay a window from (UTC)").fill("2000-01-01T00:00:00")
    page.get_by_role("button", name="Replay").click()
    outcome = page.locator("#outcome")
    sync_api.expect(outcome).to_contain_text("Dry run: 2 events of the window match")
    before = receiver.requests(path)
    page.get_by_label("count only").uncheck()
    page.get_by_role("button", name="Replay").click()
    sync_api.expect(outcome).to_contain_text("Replay planned: 2 events in 1 request")
    shots.take(page, "replay")
    deadline = time.monotonic() + WAIT_MS / 1000
    while not (replayed := [r for r in receiver.requests(path) if "webhook-replay" in r.headers]):
        assert time.monotonic() < deadline, "the replayed request did not arrive"
        time.sleep(0.05)
    assert [r.headers["webhook-replay"] for r in replayed] == ["true"]
    # The first deliveries (the failed one's retries and resend too, and the test event) and
    # the replay: each account's element keeps its id.
    names = ("Acme", "Globex")
    earlier = {e["entity"]["name"]: e["id"] for r in before for e in r.elements()}
    again = {e["entity"]["name"]: e["id"] for e in replayed[0].elements()}
    assert again == {n: earlier[n] for n in names}

    # 390 px wide: every page readable without scrolling sideways.
    narrow = browser.new_context(
        viewport={"width": 390, "height": 844}, storage_state=context.storage_state()
    )
    small = narrow.new_page()
    for i, url in enumerate(visited):
        small.goto(url)
        assert sideways_overflow(small) <= 0, url
        small.screenshot(path=str(tmp_path / f"narrow-{i}.png"), full_page=True)
    with contextlib.suppress(Exception):
        narrow.close()
    context.close()
    api.close()
    assert elsewhere == []
