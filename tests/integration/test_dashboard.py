"""The dashboard against bad input (issue 7): wrong credentials, missing or forged CSRF tokens,
invalid webhook options, and another space's ids. Each gets a clear message on an HTML page and
changes nothing; another space's ids are "not found" exactly like ids that never existed.

httpx against the application on a real database file; no browser needed for any of this.
"""

from __future__ import annotations

import re
import uuid

import httpx
import orjson
import pytest

from crmhooks.store.keys import IssuedKey
from crmhooks.ui.sessions import CSRF_FIELD, SESSION_COOKIE, SIGNIN_COOKIE
from tests.support.dashboard import (
    NOWHERE,
    Visitor,
    api,
    assert_page,
    said,
    said_html,
    webhook_of,
    webhooks_in,
)
from tests.support.databases import engine_independent


@pytest.fixture
def me(app_client: httpx.AsyncClient) -> Visitor:
    return Visitor(app_client)


# --- signing in ----------------------------------------------------------------------------


@engine_independent
async def test_pages_send_a_visitor_without_a_session_to_sign_in(me: Visitor) -> None:
    for path in ("/ui", "/ui/webhooks", f"/ui/webhooks/{uuid.uuid4()}/deliveries"):
        r = await me.http.get(path, follow_redirects=True)
        assert_page(r, 200, "Sign in", "API key", "API secret")
        assert str(r.url).endswith("/ui/signin")


async def test_wrong_credentials_are_refused_with_a_message_and_no_session(
    me: Visitor, spaces: tuple[IssuedKey, IssuedKey]
) -> None:
    mine, theirs = spaces
    await me.get("/ui/signin")
    for key, secret in (
        (mine.api_key, "wrong"),
        (mine.api_key, theirs.api_secret),
        ("ck_unknown", mine.api_secret),
        ("", ""),
    ):
        r = await me.post("/ui/signin", {"api_key": key, "api_secret": secret})
        assert_page(r, 401, "Sign-in failed: that API key and secret do not match")
        assert SESSION_COOKIE not in r.headers.get("set-cookie", "")
        assert mine.space_id not in r.text
    r = await me.http.get("/ui/webhooks")
    assert r.status_code == 303


@engine_independent
async def test_signing_in_without_the_forms_token_is_refused(
    me: Visitor, spaces: tuple[IssuedKey, IssuedKey]
) -> None:
    mine, _ = spaces
    await me.get("/ui/signin")
    good = {"api_key": mine.api_key, "api_secret": mine.api_secret}
    for token in ("", "forged-token"):
        r = await me.http.post("/ui/signin", data={**good, CSRF_FIELD: token})
        assert_page(r, 403, "The sign-in form had expired")
        assert SESSION_COOKIE not in r.headers.get("set-cookie", "")
    me.http.cookies.delete(SIGNIN_COOKIE, path="/ui")
    r = await me.http.post("/ui/signin", data={**good, CSRF_FIELD: me.csrf})
    assert_page(r, 403, "The sign-in form had expired")


@engine_independent
async def test_the_session_cookie_is_httponly_strict_and_scoped_to_the_dashboard(
    me: Visitor, spaces: tuple[IssuedKey, IssuedKey]
) -> None:
    mine, _ = spaces
    await me.get("/ui/signin")
    r = await me.post("/ui/signin", {"api_key": mine.api_key, "api_secret": mine.api_secret})
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE))
    attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/ui"} <= attributes
    r = await me.get("/ui/webhooks")
    assert_page(r, 200, "Webhooks", "Space mine")
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"


async def test_signing_out_ends_the_session(
    me: Visitor, spaces: tuple[IssuedKey, IssuedKey]
) -> None:
    await me.sign_in(spaces[0])
    r = await me.post("/ui/signout", follow_redirects=True)
    assert_page(r, 200, "You are signed out")
    assert (await me.http.get("/ui/webhooks")).status_code == 303


@engine_independent
async def test_pages_load_nothing_from_another_host(
    me: Visitor, app_client: httpx.AsyncClient, spaces: tuple[IssuedKey, IssuedKey]
) -> None:
    await me.sign_in(spaces[0])
    hook = await webhook_of(app_client, spaces[0])
    pages = [
        "/ui/signin",
        "/ui/webhooks",
        "/ui/webhooks/new",
        f"/ui/webhooks/{hook['id']}/deliveries",
        f"/ui/webhooks/{hook['id']}/deliveries/{hook['delivery_id']}",
    ]
    for path in pages:
        r = await me.http.get(path)
        assert r.status_code == 200, path
        for attr in re.findall(r'(?:src|href|action|hx-get|hx-post)="([^"]*)"', r.text):
            assert attr.startswith(("/ui", "?", "#")), f"{path} refers to {attr!r}"
    for asset in ("/ui/static/htmx.min.js", "/ui/static/dashboard.css"):
        assert (await me.http.get(asset)).status_code == 200


# --- CSRF -----------------------------------------------------------------------------------


@engine_independent
async def test_a_form_without_or_with_a_forged_csrf_token_changes_nothing(
    me: Visitor, app_client: httpx.AsyncClient, spaces: tuple[IssuedKey, IssuedKey]
) -> None:
    mine, _ = spaces
    hook = await webhook_of(app_client, mine)
    other = Visitor(httpx.AsyncClient(transport=app_client._transport, base_url="http://t"))
    await other.sign_in(mine)  # another session of the same key: its token is not ours
    await other.http.aclose()
    await me.sign_in(mine)
    create = {"url": NOWHERE, "events": ["Account.Create"], "options": "{}"}
    posts = [
        ("/ui/webhooks/new", create),
        (f"/ui/webhooks/{hook['id']}/pause", {}),
        (f"/ui/webhooks/{hook['id']}/delete", {}),
        (f"/ui/webhooks/{hook['id']}/edit", {**create, "url": NOWHERE + "2"}),
        (f"/ui/webhooks/{hook['id']}/deliveries/{hook['delivery_id']}/resend", {}),
        (f"/ui/webhooks/{hook['id']}/recover", {"since": "2000-01-01T00:00"}),
        (f"/ui/webhooks/{hook['id']}/replay", {"since": "2000-01-01T00:00"}),
        (f"/ui/webhooks/{hook['id']}/test", {}),
        ("/ui/signout", {}),
    ]
    for token in ("", "forged", other.csrf):
        for path, data in posts:
            r = await me.http.post(path, data={**data, CSRF_FIELD: token})
            assert_page(r, 403, "security token is missing or out of date", "nothing was changed")
    r = await me.http.post(posts[0][0], json={**create, CSRF_FIELD: me.csrf})
    assert_page(r, 403, "security token")
    assert await webhooks_in(app_client, mine) == [
        {k: v for k, v in hook.items() if k != "delivery_id"}
    ]
    r = await me.get(f"/ui/webhooks/{hook['id']}/deliveries")
    assert_page(r, 200, "1 request,")  # the test delivery, and no second one
    assert (await me.http.get("/ui/webhooks")).status_code == 200  # still signed in


@engine_independent
async def test_a_csrf_token_in_the_htmx_header_is_accepted(
    me: Visitor, spaces: tuple[IssuedKey, IssuedKey]
) -> None:
    await me.sign_in(spaces[0])
    r = await me.http.post("/ui/signout", headers={"X-CSRF-Token": me.csrf, "HX-Request": "true"})
    assert r.status_code == 303


# --- invalid webhooks -----------------------------------------------------------------------


@engine_independent
async def test_invalid_options_show_the_servers_message_at_the_field_and_save_nothing(
    me: Visitor, app_client: httpx.AsyncClient, spaces: tuple[IssuedKey, IssuedKey]
) -> None:
    mine, _ = spaces
    await me.sign_in(mine)
    body = {
        "url": NOWHERE,
        "events": ["Account.Create"],
        "insecure_ssl": False,
        "options": {"chunk_size": 500, "entity": {"Account": {"filter": {"nope": "x"}}}},
    }
    async with api(app_client, mine) as http:
        refused = (await http.post("/entities/Webhooks", json=body)).json()
    assert refused["http_status"] == 422
    messages = [
        (fe["field_name"], e["message"]) for fe in refused["field_errors"] for e in fe["errors"]
    ]
    assert {name for name, _ in messages} == {"options.chunk_size", "options.entity.Account.filter"}
    form = {
        "url": NOWHERE,
        "events": "Account.Create",
        "options": orjson.dumps(body["options"]).decode(),
    }
    r = await me.post("/ui/webhooks/new", form)
    assert_page(r, 422, "The webhook was not saved")
    errors = re.search(r'<ul class="field-errors" id="options-errors">(.*?)</ul>', r.text, re.S)
    assert errors is not None, r.text
    shown = said_html(errors.group(1))
    for name, message in messages:
        assert f"{name}: {message}" in shown
    assert 'aria-describedby="options-help options-errors"' in r.text
    assert "chunk_size" in said(r)  # the form keeps what was typed
    for options, message in (("{oops", "not valid JSON"), ("[]", "expected a JSON object")):
        r = await me.post("/ui/webhooks/new", {**form, "options": options})
        assert_page(r, 422, message)
    r = await me.post("/ui/webhooks/new", {**form, "options": "{}", "events": "Nope.Create"})
    assert_page(r, 422, "unknown event 'Nope.Create'")
    r = await me.post("/ui/webhooks/new", {**form, "options": "{}", "url": "ftp://x"})
    assert_page(r, 422, "is not an http or https URL")
    assert await webhooks_in(app_client, mine) == []


@engine_independent
async def test_an_invalid_edit_changes_nothing(
    me: Visitor, app_client: httpx.AsyncClient, spaces: tuple[IssuedKey, IssuedKey]
) -> None:
    mine, _ = spaces
    hook = await webhook_of(app_client, mine)
    await me.sign_in(mine)
    r = await me.get(f"/ui/webhooks/{hook['id']}/edit")
    assert_page(r, 200, "Edit webhook")
    r = await me.post(
        f"/ui/webhooks/{hook['id']}/edit",
        {"url": NOWHERE, "events": "Account.Create", "options": '{"chunk_delay": -1}'},
    )
    assert_page(r, 422, "options.chunk_delay: -1 is not from 0 to 86400")
    [stored] = await webhooks_in(app_client, mine)
    assert stored["options"] == {}


# --- another space's ids ---------------------------------------------------------------------


async def test_another_spaces_webhook_and_delivery_are_not_found_and_stay_as_they_were(
    me: Visitor, app_client: httpx.AsyncClient, spaces: tuple[IssuedKey, IssuedKey]
) -> None:
    mine, theirs = spaces
    own = await webhook_of(app_client, mine)
    their = await webhook_of(app_client, theirs)
    await me.sign_in(mine)
    missing = str(uuid.uuid4())
    cases = [
        # (webhook, delivery): theirs, and ids that never existed, side by side
        (their["id"], their["delivery_id"]),
        (missing, their["delivery_id"]),
        (own["id"], their["delivery_id"]),
        (own["id"], missing),
    ]
    for hook_id, delivery_id in cases:
        gets = [f"/ui/webhooks/{hook_id}/deliveries/{delivery_id}"]
        posts = [f"/ui/webhooks/{hook_id}/deliveries/{delivery_id}/resend"]
        if hook_id != own["id"]:
            gets += [f"/ui/webhooks/{hook_id}/{p}" for p in ("deliveries", "edit", "delete")]
            gets.append(f"/ui/webhooks/{hook_id}/deliveries/live")
            posts += [f"/ui/webhooks/{hook_id}/{p}" for p in ("pause", "delete", "test")]
            posts.append(f"/ui/webhooks/{hook_id}/recover")
            posts.append(f"/ui/webhooks/{hook_id}/replay")
        for path in gets:
            assert_page(await me.get(path), 404, "Not found")
        for path in posts:
            r = await me.post(path, {"since": "2000-01-01T00:00"})
            assert_page(r, 404, "Not found")
            assert "theirs" not in r.text
    assert_page(await me.get("/ui/webhooks/not-a-uuid/deliveries"), 404, "Not found")
    assert_page(await me.get("/ui/no/such/page"), 404, "no page at this address")
    [after] = await webhooks_in(app_client, theirs)
    assert after == {k: v for k, v in their.items() if k != "delivery_id"}
    async with api(app_client, theirs) as http:
        log = (await http.get(f"/entities/Webhooks/{their['id']}/deliveries")).json()
    assert [(d["status"], d["attempts"]) for d in log["data"]] == [("failed", 1)]


# --- what works ------------------------------------------------------------------------------


async def test_pause_resume_edit_and_delete_go_through_the_api(
    me: Visitor, app_client: httpx.AsyncClient, spaces: tuple[IssuedKey, IssuedKey]
) -> None:
    mine, _ = spaces
    hook = await webhook_of(app_client, mine)
    await me.sign_in(mine)
    base = f"/ui/webhooks/{hook['id']}"
    r = await me.post(base + "/pause", {"return_to": "list"}, follow_redirects=True)
    assert_page(r, 200, "The webhook is paused", "paused")
    assert (await webhooks_in(app_client, mine))[0]["is_active"] is False
    r = await me.post(base + "/resume", {"return_to": "deliveries"}, follow_redirects=True)
    assert_page(r, 200, "The webhook is active again", "Deliveries")
    assert (await webhooks_in(app_client, mine))[0]["is_active"] is True
    r = await me.post(
        base + "/edit",
        {"url": NOWHERE + "/v2", "events": ["Account.Create", "Contact.*"], "options": "{}"},
        follow_redirects=True,
    )
    assert_page(r, 200, "The webhook was saved", NOWHERE + "/v2", "Contact.*")
    assert_page(await me.get(base + "/delete"), 200, "Delete this webhook?")
    r = await me.post(base + "/delete", follow_redirects=True)
    assert_page(r, 200, "The webhook was deleted", "No webhooks yet")
    assert await webhooks_in(app_client, mine) == []


@engine_independent
async def test_a_bad_log_filter_is_named_on_the_page(
    me: Visitor, app_client: httpx.AsyncClient, spaces: tuple[IssuedKey, IssuedKey]
) -> None:
    hook = await webhook_of(app_client, spaces[0])
    await me.sign_in(spaces[0])
    path = f"/ui/webhooks/{hook['id']}/deliveries"
    r = await me.get(path, params={"since": "2030-01-01T00:00", "until": "2020-01-01T00:00"})
    assert_page(r, 200, "The filter was not applied", "is after until")
    r = await me.get(path, params={"since": "yesterday"})
    assert_page(r, 200, "The filter was not applied", "'yesterday' is not a date-time")
    r = await me.get(path, params={"status": "failed"})
    assert_page(r, 200, "1 request,", "failed")
    # The chart counts this minute's request, on either engine's clock arithmetic.
    assert_page(r, 200, "Last hour: 0 delivered, 1 failed, 0 pending.")
    assert len(re.findall(r'<rect [^>]*class="failed"', r.text)) == 1
    r = await me.get(path, params={"status": "delivered"})
    assert_page(r, 200, "0 requests", "No requests match the filter")


async def test_a_generated_secret_is_shown_once_and_never_put_back_in_a_page(
    me: Visitor, app_client: httpx.AsyncClient, spaces: tuple[IssuedKey, IssuedKey]
) -> None:
    mine, _ = spaces
    await me.sign_in(mine)
    r = await me.post(
        "/ui/webhooks/new",
        {"url": NOWHERE, "events": "Account.Create", "signature_scheme": "standard-webhooks"},
    )
    assert_page(r, 200, "Webhook created", "shown this once")
    secret = re.search(r"whsec_[A-Za-z0-9+/=]+", r.text)
    assert secret is not None
    [hook] = await webhooks_in(app_client, mine)
    for path in ("/ui/webhooks", f"/ui/webhooks/{hook['id']}/edit"):
        page = await me.get(path)
        assert page.status_code == 200
        assert secret.group(0) not in page.text
    r = await me.post(
        f"/ui/webhooks/{hook['id']}/edit",
        {"url": NOWHERE, "events": "Account.Create", "signature_scheme": "standard-webhooks"},
        follow_redirects=True,
    )
    assert_page(r, 200, "The webhook was saved")
    [kept] = await webhooks_in(app_client, mine)  # an empty secret on edit keeps the old one
    assert kept["signature"] == hook["signature"]
    assert kept["signature"].endswith(secret.group(0)[-4:])


# --- the Events page (issue 15) --------------------------------------------------------------


async def test_the_events_page_lists_filters_and_explains_each_event(
    me: Visitor, app_client: httpx.AsyncClient, spaces: tuple[IssuedKey, IssuedKey]
) -> None:
    mine, theirs = spaces
    hook = await webhook_of(app_client, mine)
    async with api(app_client, mine) as http:
        owner = mine.client_id
        r = await http.post("/entities/Accounts", json={"name": "Acme", "owner_id": owner})
        assert r.status_code == 201, r.text
        account = r.json()["data"]
        r = await http.patch(f"/entities/Accounts/{account['id']}", json={"name": "Acme Ltd"})
        assert r.status_code == 200, r.text
    r = await app_client.get(
        f"/api/v100/rest/spaces/{mine.space_id}/events",
        auth=httpx.BasicAuth(mine.api_key, mine.api_secret),
    )
    events = r.json()
    async with api(app_client, theirs) as http:
        r = await http.post(
            "/entities/Accounts", json={"name": "theirs", "owner_id": theirs.client_id}
        )
        assert r.status_code == 201, r.text
    await me.sign_in(mine)
    r = await me.get("/ui/events")
    assert_page(r, 200, "Events", "Account.Create", "Account.Update", "Acme Ltd")
    assert "theirs" not in r.text
    # Filtered by name, and by record: a bad name is named on the page.
    r = await me.get("/ui/events/live?event=Account.Update")
    assert_page(r, 200, "Account.Update")
    assert "Account.Create" not in said(r)
    r = await me.get(f"/ui/events?entity_id={uuid.uuid4()}")
    assert_page(r, 200, "No events match the filter")
    r = await me.get("/ui/events?event=Account.Explode")
    assert_page(r, 200, "The filter was not applied", "Event: unknown event 'Account.Explode'")
    # One event's verdict for the space's webhook: not fired for the Update (it listens to
    # Account.Create), with every rule.
    update = next(e for e in events["data"] if e["event"] == "Account.Update")
    r = await me.get(f"/ui/events/{update['id']}", headers={"HX-Request": "true"})
    assert_page(r, 200, "not fired", "event_name", "on_field_change", hook["url"])
    create = next(e for e in events["data"] if e["event"] == "Account.Create")
    r = await me.get(f"/ui/events/{create['id']}")
    assert_page(r, 200, "Why it fired, or not", "fired", "No request carries it yet")
    assert "not fired" not in said(r)
    # Another space's event is not found from here.
    assert_page(await me.get(f"/ui/events/{uuid.uuid4()}"), 404, "Not found")


async def test_the_replay_form_counts_plans_and_names_what_it_refused(
    me: Visitor, app_client: httpx.AsyncClient, spaces: tuple[IssuedKey, IssuedKey]
) -> None:
    mine, _ = spaces
    hook = await webhook_of(app_client, mine)  # registered before the accounts: a replay needs none
    async with api(app_client, mine) as http:
        for name in ("a", "b", "c"):
            r = await http.post(
                "/entities/Accounts", json={"name": name, "owner_id": mine.client_id}
            )
            assert r.status_code == 201, r.text
    await me.sign_in(mine)
    page = f"/ui/webhooks/{hook['id']}"
    assert_page(await me.get(page + "/deliveries"), 200, "Replay a window from (UTC)", "count only")
    r = await me.post(page + "/replay", {"since": "2000-01-01T00:00", "dry_run": "true"})
    assert_page(r, 200, "Dry run: 3 events of the window match", "in 1 request.")
    async with api(app_client, mine) as http:
        log = (await http.get(f"/entities/Webhooks/{hook['id']}/deliveries")).json()["data"]
    assert [d["replay"] for d in log] == [False]  # the test delivery only: nothing planned
    r = await me.post(page + "/replay", {"since": "2000-01-01T00:00", "until": ""})
    assert_page(r, 200, "Replay planned: 3 events in 1 request", "webhook-replay: true")
    async with api(app_client, mine) as http:
        log = (await http.get(f"/entities/Webhooks/{hook['id']}/deliveries")).json()["data"]
    assert sorted(d["replay"] for d in log) == [False, True]
    replayed = next(d for d in log if d["replay"])
    assert replayed["event_count"] == 3
    r = await me.get(f"{page}/deliveries/{replayed['id']}")
    assert_page(r, 200, "webhook-replay")  # the request's headers, as sent
    r = await me.post(page + "/replay", {"since": "2001-01-02T00:00", "until": "2001-01-01T00:00"})
    assert_page(r, 200, "Not replayed: since (2001-01-02")
