"""Every kind of bad input gets the error envelope (docs/api.md#envelopes), the right status, a
message or field error naming what is wrong, and changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.api import Api, assert_bad_parameter, assert_error, assert_invalid, everything
from tests.support.databases import engine_independent, new_space
from tests.support.servers import Server

MiB = 1024 * 1024


# --- helpers ---------------------------------------------------------------------------------


async def one(api: Api, entity: str, record_id: str) -> dict[str, Any]:
    r = await api.get(entity, record_id)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


async def pipeline_step(api: Api) -> str:
    pipeline = await api.create("Pipelines", {"name": "Sales"})
    step = await api.create("Steps", {"name": "New", "pipeline_id": pipeline["id"]})
    return str(step["id"])


async def opportunity(api: Api, **fields: Any) -> dict[str, Any]:
    step = await pipeline_step(api)
    return await api.create("Opportunities", {"name": "Deal", "step_id": step, **fields})


def missing_id() -> str:
    return str(uuid.uuid4())


# --- wrong types -----------------------------------------------------------------------------

WRONG_TYPES = [
    ("Accounts", {"name": 123}, "name"),
    ("Accounts", {"name": ["Acme"]}, "name"),
    ("Accounts", {"name": "x" * 256}, "name"),
    ("Accounts", {"name": "nul\x00byte"}, "name"),
    ("Accounts", {"name": "Acme", "is_archived": "yes"}, "is_archived"),
    ("Accounts", {"name": "Acme", "owner_id": "not-a-uuid"}, "owner_id"),
    ("Accounts", {"name": "Acme", "owner_id": 42}, "owner_id"),
    ("Tasks", {"subject": "Call", "priority": 7}, "priority"),
    ("Tasks", {"subject": "Call", "status": "Sleeping"}, "status"),
    ("Tasks", {"subject": "Call", "priority": True}, "priority"),
    ("Tasks", {"subject": "Call", "due_date": "2026-02-30"}, "due_date"),
    ("Tasks", {"subject": "Call", "due_date": 20260101}, "due_date"),
    ("Appointments", {"subject": "Meet", "start_date": "soon"}, "start_date"),
    ("Appointments", {"subject": "Meet", "start_date": "2026-02-30"}, "start_date"),
    ("Appointments", {"subject": "Meet", "start_date": "9999-12-31T23:59:59-01:00"}, "start_date"),
    ("Appointments", {"subject": "Meet", "start_date": "0001-01-01T00:00:00+01:00"}, "start_date"),
    ("Leads", {"name": "Lead", "status": 3}, "status"),
    ("Emails", {"subject": "Hi", "direction": 0}, "direction"),
]


@engine_independent
async def test_wrong_type_is_refused_naming_the_field_and_nothing_changes(
    api: Api, subtests: pytest.Subtests
) -> None:
    for entity, body, field in WRONG_TYPES:
        with subtests.test(entity=entity, body=body):
            before = await everything(api, entity)
            r = await api.http.post(api.path(entity), json=body)
            assert_invalid(r, field, "ERROR_FIELD_TYPE")
            assert await everything(api, entity) == before


@engine_independent
async def test_wrong_type_in_a_patch_leaves_the_record_unchanged(api: Api) -> None:
    account = await api.create("Accounts", {"name": "Acme", "city": "Oslo"})
    before = await one(api, "Accounts", account["id"])
    for body, field in [
        ({"city": 7}, "city"),
        ({"is_archived": "no"}, "is_archived"),
        ({"city": "Bergen", "email1": ["a@example.com"]}, "email1"),
    ]:
        r = await api.http.patch(api.path("Accounts", account["id"]), json=body)
        assert_invalid(r, field, "ERROR_FIELD_TYPE")
    assert await one(api, "Accounts", account["id"]) == before


@engine_independent
async def test_wrong_shape_of_an_object_field_names_the_sub_field(
    api: Api, subtests: pytest.Subtests
) -> None:
    deal = await opportunity(api)
    before = await one(api, "Opportunities", deal["id"])
    for value, field in [
        ("100", "value"),
        ([100], "value"),
        ({"base_value": "lots"}, "value.base_value"),
        ({"base_value": 10, "currency": "EUR"}, "value.currency"),
    ]:
        with subtests.test(value=value):
            r = await api.http.patch(api.path("Opportunities", deal["id"]), json={"value": value})
            assert_invalid(r, field)
    assert await one(api, "Opportunities", deal["id"]) == before


# --- required fields -------------------------------------------------------------------------

MISSING_REQUIRED = [
    ("Accounts", {"city": "Oslo"}, "name"),
    ("Accounts", {"name": None}, "name"),
    ("Tasks", {}, "subject"),
    ("Products", {"sku": "X-1"}, "name"),
    ("Opportunities", {"name": "Deal"}, "step_id"),
    ("Opportunities", {"name": "Deal"}, "owner_id"),
    ("Opportunities", {"name": "Deal"}, "closing_date"),
    ("Opportunities", {"name": "Deal"}, "value"),
    ("Accounts", {"name": "Acme"}, "owner_id"),
    ("Appointments", {"subject": "Meet"}, "owner_id"),
    ("Appointments", {"subject": "Meet"}, "end_date"),
    ("Emails", {"subject": "Hi"}, "direction"),
    ("Emails", {"subject": "Hi"}, "uid"),
    ("Steps", {"name": "New"}, "pipeline_id"),
    ("OpptyProductRelations", {"quantity": 2}, "oppty_id"),
    ("OpptyProductRelations", {"quantity": 2}, "product_id"),
    ("CloudObjects", {"url": "https://example.com/a.pdf"}, "filename"),
    ("CustomEntities", {"name": "Bid"}, "api_name"),
]


@engine_independent
async def test_missing_required_field_is_refused_and_nothing_changes(
    api: Api, subtests: pytest.Subtests
) -> None:
    for entity, body, field in MISSING_REQUIRED:
        with subtests.test(entity=entity, body=body):
            before = await everything(api, entity)
            r = await api.http.post(api.path(entity), json=body)
            assert_invalid(r, field, "ERROR_PARAMETER_MISSING")
            assert await everything(api, entity) == before


@engine_independent
async def test_contact_needs_an_owner_and_nothing_else(api: Api) -> None:
    """As published: a Contact's one required field is ``owner_id``; no name is needed."""
    before = await everything(api, "Contacts")
    r = await api.http.post(api.path("Contacts"), json={"first_name": "Ann"})
    assert_invalid(r, "owner_id", "ERROR_PARAMETER_MISSING")
    assert await everything(api, "Contacts") == before
    owner = api.space.client_id
    r = await api.http.post(api.path("Contacts"), json={"email1": "a@x.test", "owner_id": owner})
    assert r.status_code == 201, r.text
    contact = r.json()["data"]
    r = await api.http.patch(api.path("Contacts", contact["id"]), json={"last_name": None})
    assert r.status_code == 200, r.text
    r = await api.http.patch(api.path("Contacts", contact["id"]), json={"owner_id": None})
    assert_invalid(r, "owner_id", "ERROR_PARAMETER_MISSING")


@engine_independent
async def test_required_field_cannot_be_patched_to_null(api: Api) -> None:
    account = await api.create("Accounts", {"name": "Acme"})
    before = await one(api, "Accounts", account["id"])
    r = await api.http.patch(api.path("Accounts", account["id"]), json={"name": None})
    assert_invalid(r, "name", "ERROR_PARAMETER_MISSING")
    assert await one(api, "Accounts", account["id"]) == before


# --- unknown and read-only fields ------------------------------------------------------------


@engine_independent
async def test_unknown_field_is_refused_and_nothing_changes(api: Api) -> None:
    before = await everything(api, "Accounts")
    r = await api.http.post(api.path("Accounts"), json={"name": "Acme", "colour": "red"})
    assert_invalid(r, "colour", "ERROR_FIELD_UNKNOWN", "colour")
    assert await everything(api, "Accounts") == before

    account = await api.create("Accounts", {"name": "Acme"})
    before_one = await one(api, "Accounts", account["id"])
    r = await api.http.patch(
        api.path("Accounts", account["id"]), json={"city": "Oslo", "colour": "red"}
    )
    assert_invalid(r, "colour", "ERROR_FIELD_UNKNOWN")
    assert await one(api, "Accounts", account["id"]) == before_one


@engine_independent
async def test_relation_written_by_its_name_is_refused_with_a_hint(api: Api) -> None:
    owner = await api.create("Clients", {"first_name": "Ann"})
    before = await everything(api, "Accounts")
    r = await api.http.post(api.path("Accounts"), json={"name": "Acme", "owner": owner["id"]})
    assert_invalid(r, "owner", "ERROR_FIELD_UNKNOWN", "owner_id")
    assert await everything(api, "Accounts") == before


@engine_independent
async def test_field_of_an_opportunity_is_unknown_on_a_lead(api: Api) -> None:
    before = await everything(api, "Leads")
    r = await api.http.post(api.path("Leads"), json={"name": "Lead", "closing_date": "2026-01-01"})
    assert_invalid(r, "closing_date", "ERROR_FIELD_UNKNOWN")
    assert await everything(api, "Leads") == before


@engine_independent
async def test_system_field_in_a_write_is_refused_as_read_only(
    api: Api, subtests: pytest.Subtests
) -> None:
    account = await api.create("Accounts", {"name": "Acme"})
    for field, value in [
        ("id", "6f1d2b44-8e52-4a0e-9a55-6a4d5d0b8c01"),
        ("created", "2020-01-01 00:00:00.000000+00:00"),
        ("modified", "2020-01-01 00:00:00.000000+00:00"),
        ("is_deleted", True),
        ("revision", 99),
    ]:
        with subtests.test(field=field):
            before = await everything(api, "Accounts")
            r = await api.http.post(api.path("Accounts"), json={"name": "Acme", field: value})
            assert_invalid(r, field, "ERROR_FIELD_READ_ONLY")
            r = await api.http.patch(api.path("Accounts", account["id"]), json={field: value})
            assert_invalid(r, field, "ERROR_FIELD_READ_ONLY")
            assert await everything(api, "Accounts") == before


@engine_independent
async def test_derived_opportunity_field_in_a_write_is_refused_as_read_only(
    api: Api, subtests: pytest.Subtests
) -> None:
    deal = await opportunity(api)
    for field, value in [
        ("won_date", "2026-01-01 00:00:00.000000+00:00"),
        ("lost_date", "2026-01-01 00:00:00.000000+00:00"),
        ("qualify_date", "2026-01-01 00:00:00.000000+00:00"),
        ("was_qualified", True),
    ]:
        with subtests.test(field=field):
            before = await everything(api, "Opportunities")
            r = await api.http.patch(api.path("Opportunities", deal["id"]), json={field: value})
            assert_invalid(r, field, "ERROR_FIELD_READ_ONLY")
            body = {"name": "x", "step_id": deal["step_id"], field: value}
            r = await api.http.post(api.path("Opportunities"), json=body)
            assert_invalid(r, field, "ERROR_FIELD_READ_ONLY")
            assert await everything(api, "Opportunities") == before


@engine_independent
async def test_line_item_amount_cannot_be_written(api: Api) -> None:
    deal = await opportunity(api)
    product = await api.create("Products", {"name": "Widget"})
    line = {"oppty_id": deal["id"], "product_id": product["id"], "quantity": 2, "price": 3}
    before = await everything(api, "OpptyProductRelations")
    r = await api.http.post(api.path("OpptyProductRelations"), json={**line, "amount": 100})
    assert_invalid(r, "amount", "ERROR_FIELD_READ_ONLY")
    assert await everything(api, "OpptyProductRelations") == before
    item = await api.create("OpptyProductRelations", line)
    r = await api.http.patch(api.path("OpptyProductRelations", item["id"]), json={"amount": 1})
    assert_invalid(r, "amount", "ERROR_FIELD_READ_ONLY")
    assert (await one(api, "OpptyProductRelations", item["id"]))["amount"] == 6


# --- relations to records that do not exist --------------------------------------------------


def assert_no_such_relation(r: httpx.Response, field: str, value: str) -> None:
    errors = assert_invalid(r, field, "ERROR_RELATIONS_DOESNT_EXIST", value)
    codes = {e["code"] for e in errors if e["name"] == "ERROR_RELATIONS_DOESNT_EXIST"}
    assert codes == {120}


async def test_relation_to_a_missing_record_is_refused_with_code_120(api: Api) -> None:
    ghost = missing_id()
    before = await everything(api, "Accounts")
    r = await api.http.post(api.path("Accounts"), json={"name": "Acme", "owner_id": ghost})
    assert_no_such_relation(r, "owner_id", ghost)
    assert await everything(api, "Accounts") == before

    account = await api.create("Accounts", {"name": "Acme"})
    before_one = await one(api, "Accounts", account["id"])
    r = await api.http.patch(api.path("Accounts", account["id"]), json={"parent_account_id": ghost})
    assert_no_such_relation(r, "parent_account_id", ghost)
    assert await one(api, "Accounts", account["id"]) == before_one


async def test_relation_to_a_deleted_record_is_refused(api: Api) -> None:
    gone = await api.create("Accounts", {"name": "Gone"})
    assert (await api.http.delete(api.path("Accounts", gone["id"]))).status_code == 200
    before = await everything(api, "Contacts")
    r = await api.http.post(
        api.path("Contacts"),
        json={
            "last_name": "Smith",
            "owner_id": api.space.client_id,
            "primary_account_id": gone["id"],
        },
    )
    assert_no_such_relation(r, "primary_account_id", gone["id"])
    assert await everything(api, "Contacts") == before


async def test_relation_to_a_record_of_another_space_is_refused(api: Api, db_url: str) -> None:
    other = await new_space(db_url, "other")
    theirs = await api.http.post(
        api.path("Accounts"),
        json={"name": "Theirs", "owner_id": other.client_id},
        auth=httpx.BasicAuth(other.api_key, other.api_secret),
    )
    assert theirs.status_code == 401  # the path is this space's; their key does not open it
    r = await api.http.post(
        f"/api/v100/rest/spaces/{other.space_id}/entities/Accounts",
        json={"name": "Theirs", "owner_id": other.client_id},
        auth=httpx.BasicAuth(other.api_key, other.api_secret),
    )
    assert r.status_code == 201, r.text
    their_id = r.json()["data"]["id"]
    before = await everything(api, "Contacts")
    r = await api.http.post(
        api.path("Contacts"),
        json={
            "last_name": "Smith",
            "owner_id": api.space.client_id,
            "primary_account_id": their_id,
        },
    )
    assert_no_such_relation(r, "primary_account_id", their_id)
    assert await everything(api, "Contacts") == before


async def test_relation_to_a_record_of_the_wrong_entity_is_refused(api: Api) -> None:
    account = await api.create("Accounts", {"name": "Acme"})
    before = await everything(api, "Tasks")
    for field in ("lead_oppty_id", "contact_id", "owner_id"):
        r = await api.http.post(api.path("Tasks"), json={"subject": "Call", field: account["id"]})
        assert_no_such_relation(r, field, account["id"])
    assert await everything(api, "Tasks") == before


async def test_every_missing_relation_of_one_write_is_named(api: Api) -> None:
    a, b = missing_id(), missing_id()
    r = await api.http.post(
        api.path("Tasks"), json={"subject": "Call", "account_id": a, "contact_id": b}
    )
    assert_no_such_relation(r, "account_id", a)
    assert_no_such_relation(r, "contact_id", b)


# --- bodies that are not JSON objects --------------------------------------------------------

MALFORMED = [
    b'{"name": ',
    b"not json",
    b"{'name': 'Acme'}",
    b'{"name": "Acme",}',
    b'{"name": NaN}',
    b"\xff\xfe\x00",
    b'{"name": "Acme"} trailing',
    b"[" * 5000 + b"]" * 5000,
]


@engine_independent
async def test_malformed_json_is_a_400_envelope_and_nothing_changes(
    api: Api, subtests: pytest.Subtests
) -> None:
    account = await api.create("Accounts", {"name": "Acme"})
    headers = {"content-type": "application/json"}
    for raw in MALFORMED:
        with subtests.test(raw=raw[:40]):
            before = await everything(api, "Accounts")
            r = await api.http.post(api.path("Accounts"), content=raw, headers=headers)
            assert_bad_parameter(r, "JSON")
            path = api.path("Accounts", account["id"])
            assert_bad_parameter(await api.http.patch(path, content=raw, headers=headers), "JSON")
            assert await everything(api, "Accounts") == before


@engine_independent
async def test_body_that_is_not_an_object_is_a_400(api: Api, subtests: pytest.Subtests) -> None:
    account = await api.create("Accounts", {"name": "Acme"})
    headers = {"content-type": "application/json"}
    for raw in [b"[]", b'[{"name": "Acme"}]', b'"Acme"', b"1", b"true", b"null", b""]:
        with subtests.test(raw=raw):
            before = await everything(api, "Accounts")
            r = await api.http.post(api.path("Accounts"), content=raw, headers=headers)
            assert_bad_parameter(r, "object")
            path = api.path("Accounts", account["id"])
            r = await api.http.patch(path, content=raw, headers=headers)
            assert_bad_parameter(r, "object")
            assert await everything(api, "Accounts") == before


def oversized_body() -> bytes:
    return b'{"name": "' + b"x" * (MiB + 10) + b'"}'


async def _chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@engine_independent
async def test_body_over_1_mib_is_a_413_and_nothing_changes(api: Api) -> None:
    before = await everything(api, "Accounts")
    r = await api.http.post(api.path("Accounts"), content=oversized_body())
    assert "content-length" in r.request.headers
    assert_error(r, 413, "ERROR_PAYLOAD_TOO_LARGE")
    assert await everything(api, "Accounts") == before


@engine_independent
async def test_chunked_body_over_1_mib_is_a_413_and_nothing_changes(api: Api) -> None:
    before = await everything(api, "Accounts")
    r = await api.http.post(api.path("Accounts"), content=_chunks(oversized_body()))
    assert "content-length" not in r.request.headers
    assert r.request.headers["transfer-encoding"] == "chunked"
    assert_error(r, 413, "ERROR_PAYLOAD_TOO_LARGE")
    assert await everything(api, "Accounts") == before


async def test_body_just_under_1_mib_is_accepted(api: Api) -> None:
    # A long text field is the largest a write can be; padding with spaces keeps it valid JSON.
    body = b'{"subject": "big", "direction": 1, "uid": "1", "body": "' + b"x" * 100_000 + b'"}'
    body = body[:-1] + b" " * (MiB - len(body)) + b"}"
    assert len(body) == MiB
    r = await api.http.post(api.path("Emails"), content=body)
    assert r.status_code == 201, r.text


@pytest.mark.slow
def test_real_server_refuses_bodies_over_1_mib_declared_or_chunked(server: Server) -> None:
    auth = httpx.BasicAuth(server.api_key, server.api_secret)
    url = f"{server.url}/api/v100/rest/spaces/default/entities/Accounts"
    body = oversized_body()

    def chunks() -> Any:
        for i in range(0, len(body), 64 * 1024):
            yield body[i : i + 64 * 1024]

    with httpx.Client(auth=auth, timeout=30) as client:
        r = client.post(url, content=body)
        assert_error(r, 413, "ERROR_PAYLOAD_TOO_LARGE")
        r = client.post(url, content=chunks())
        assert "content-length" not in r.request.headers
        assert_error(r, 413, "ERROR_PAYLOAD_TOO_LARGE")
        listed = client.get(url)
        assert listed.status_code == 200
        assert listed.json()["total"] == 0
        small = {"name": "small", "owner_id": server.client_id}
        assert client.post(url, json=small).status_code == 201


# --- ids, entity names and paths -------------------------------------------------------------


@engine_independent
async def test_record_id_that_is_not_a_uuid_is_a_400_naming_it(
    api: Api, subtests: pytest.Subtests
) -> None:
    await api.create("Accounts", {"name": "Acme"})
    before = await everything(api, "Accounts")
    for bad_id in ["not-a-uuid", "123", "6f1d2b44-8e52-4a0e-9a55-6a4d5d0b8c0", "%C3%A9"]:
        with subtests.test(bad_id=bad_id):
            shown = bad_id.replace("%C3%A9", "\u00e9")
            assert_bad_parameter(await api.get("Accounts", bad_id), shown)
            r = await api.http.patch(api.path("Accounts", bad_id), json={"name": "x"})
            assert_bad_parameter(r, shown)
            assert_bad_parameter(await api.http.delete(api.path("Accounts", bad_id)), shown)
            r = await api.http.post(api.path("Leads", bad_id, "qualify"), json={})
            assert_bad_parameter(r, shown)
    assert await everything(api, "Accounts") == before


async def test_record_that_does_not_exist_is_a_404(api: Api) -> None:
    ghost = missing_id()
    assert_error(await api.get("Accounts", ghost), 404, "ERROR_ENTITY_NOT_FOUND", ghost)
    r = await api.http.patch(api.path("Accounts", ghost), json={"name": "x"})
    assert_error(r, 404, "ERROR_ENTITY_NOT_FOUND", ghost)
    assert_error(await api.http.delete(api.path("Accounts", ghost)), 404, "ERROR_ENTITY_NOT_FOUND")
    # A record of another entity type is not found under this one.
    product = await api.create("Products", {"name": "Widget"})
    assert_error(await api.get("Accounts", product["id"]), 404, "ERROR_ENTITY_NOT_FOUND")


@engine_independent
async def test_unknown_entity_is_a_404_naming_it(api: Api, subtests: pytest.Subtests) -> None:
    for name in ["Widgets", "accounts", "Account", "CE_Nope", "Webhook"]:
        with subtests.test(name=name):
            # Pipeliner's answer for a collection it does not have (recorded from the service).
            not_found = (404, "ERROR_UNKNOWN_TYPE", f"cannot determine entity type from {name}")
            assert assert_error(await api.get(name), *not_found)["code"] == 2006
            assert_error(await api.http.post(api.path(name), json={"name": "x"}), *not_found)
            assert_error(await api.get(name, missing_id()), *not_found)
            r = await api.http.patch(api.path(name, missing_id()), json={"name": "x"})
            assert_error(r, *not_found)
            assert_error(await api.http.delete(api.path(name, missing_id())), *not_found)


@engine_independent
async def test_wrong_method_is_a_405_envelope(api: Api, subtests: pytest.Subtests) -> None:
    some_id = missing_id()
    for method, path in [
        ("PUT", "Accounts"),
        ("DELETE", "Accounts"),
        ("PATCH", "Accounts"),
        ("POST", f"Accounts/{some_id}"),
        ("PUT", f"Accounts/{some_id}"),
        ("GET", f"Leads/{some_id}/qualify"),
        ("DELETE", f"Opportunities/{some_id}/back-to-lead"),
    ]:
        with subtests.test(method=method, path=path):
            r = await api.http.request(method, api.path(path), json={"name": "x"})
            assert_error(r, 405, "ERROR_METHOD_NOT_ALLOWED", method)
    assert (await everything(api, "Accounts"))["total"] == 0


@engine_independent
async def test_unknown_path_is_a_404_envelope(api: Api, subtests: pytest.Subtests) -> None:
    for path in [
        "/nope",
        "/api/v100/rest/spaces/acme",
        "/api/v100/rest/spaces/acme/things/Accounts",
        f"/api/v100/rest/spaces/acme/entities/Accounts/{missing_id()}/x",
        "/api/v99/rest/spaces/acme/entities/Accounts",
    ]:
        for method in ("GET", "POST"):
            with subtests.test(method=method, path=path):
                r = await api.http.request(method, path, json={"name": "x"})
                assert_error(r, 404, "ERROR_ENTITY_NOT_FOUND")


# --- custom entity definitions ---------------------------------------------------------------


@engine_independent
async def test_custom_entity_api_name_must_start_with_ce(
    api: Api, subtests: pytest.Subtests
) -> None:
    for api_name in ["Bid", "ce_Bid", "CE_", "CE_Bad-Name", "CE_Bid!", "XCE_Bid", "CE_" + "a" * 61]:
        with subtests.test(api_name=api_name):
            before = await everything(api, "CustomEntities")
            r = await api.http.post(
                api.path("CustomEntities"),
                json={"api_name": api_name, "name": "Bid", "fields": []},
            )
            assert_invalid(r, "api_name", None, "CE_")
            assert await everything(api, "CustomEntities") == before
            assert (await api.get(api_name)).status_code == 404


@engine_independent
async def test_custom_entity_api_name_that_is_not_text_is_refused(api: Api) -> None:
    r = await api.http.post(api.path("CustomEntities"), json={"api_name": 7, "name": "Bid"})
    assert_invalid(r, "api_name")
    assert (await everything(api, "CustomEntities"))["total"] == 0


async def test_custom_entity_api_name_is_unique_and_fixed(api: Api) -> None:
    bid = await api.create("CustomEntities", {"api_name": "CE_Bid", "name": "Bid"})
    before = await everything(api, "CustomEntities")
    r = await api.http.post(api.path("CustomEntities"), json={"api_name": "CE_Bid", "name": "B"})
    assert_invalid(r, "api_name", None, "CE_Bid")
    r = await api.http.patch(api.path("CustomEntities", bid["id"]), json={"api_name": "CE_Offer"})
    assert_invalid(r, "api_name", "ERROR_FIELD_READ_ONLY")
    assert await everything(api, "CustomEntities") == before


BAD_FIELD_DEFINITIONS = [
    ([{"api_name": "amount", "type": "money"}], "fields[0].type", "money"),
    ([{"api_name": "amount", "type": "INTEGER"}], "fields[0].type", "INTEGER"),
    ([{"api_name": "amount", "type": None}], "fields[0].type", "None"),
    ([{"api_name": "amount"}], "fields[0]", "type"),
    ([{"api_name": "amount", "type": "text", "size": 9}], "fields[0]", "type"),
    (["amount"], "fields[0]", "api_name"),
    ([{"api_name": "1st", "type": "text"}], "fields[0].api_name", "1st"),
    ([{"api_name": "name", "type": "integer"}], "fields[0].api_name", "reserved"),
    ([{"api_name": "id", "type": "uuid"}], "fields[0].api_name", "reserved"),
    (
        [{"api_name": "a", "type": "text"}, {"api_name": "a", "type": "integer"}],
        "fields[1].api_name",
        "twice",
    ),
    ("text", "fields", "list"),
    ({"amount": "integer"}, "fields", "list"),
    (None, "fields", "list"),
]


@engine_independent
async def test_custom_entity_field_definition_must_be_a_known_type(
    api: Api, subtests: pytest.Subtests
) -> None:
    for fields, field, mention in BAD_FIELD_DEFINITIONS:
        with subtests.test(fields=fields):
            before = await everything(api, "CustomEntities")
            body = {"api_name": "CE_Bid", "name": "Bid", "fields": fields}
            r = await api.http.post(api.path("CustomEntities"), json=body)
            assert_invalid(r, field, None, mention)
            assert await everything(api, "CustomEntities") == before
            assert (await api.get("CE_Bid")).status_code == 404


@engine_independent
async def test_bad_field_definition_in_a_patch_leaves_the_definition_unchanged(api: Api) -> None:
    fields = [{"api_name": "amount", "type": "float"}]
    bid = await api.create(
        "CustomEntities", {"api_name": "CE_Bid", "name": "Bid", "fields": fields}
    )
    before = await one(api, "CustomEntities", bid["id"])
    r = await api.http.patch(
        api.path("CustomEntities", bid["id"]),
        json={"fields": [{"api_name": "amount", "type": "decimal"}]},
    )
    assert_invalid(r, "fields[0].type", None, "decimal")
    assert await one(api, "CustomEntities", bid["id"]) == before


# --- query parameters ------------------------------------------------------------------------


@engine_independent
async def test_unknown_query_parameter_is_a_400_naming_it(api: Api) -> None:
    account = await api.create("Accounts", {"name": "Acme"})
    before = await everything(api, "Accounts")
    bad = {"colour": "red"}
    assert_bad_parameter(await api.get("Accounts", params=bad), "colour")
    assert_bad_parameter(await api.get("Accounts", account["id"], params=bad), "colour")
    r = await api.http.post(api.path("Accounts"), params=bad, json={"name": "Other"})
    assert_bad_parameter(r, "colour")
    r = await api.http.patch(api.path("Accounts", account["id"]), params=bad, json={"name": "B"})
    assert_bad_parameter(r, "colour")
    r = await api.http.delete(api.path("Accounts", account["id"]), params=bad)
    assert_bad_parameter(r, "colour")
    assert await everything(api, "Accounts") == before


@engine_independent
async def test_page_size_out_of_range_is_a_400_naming_it(
    api: Api, subtests: pytest.Subtests
) -> None:
    for name, value in [
        ("first", "101"),
        ("first", "1000000"),
        ("first", "0"),
        ("first", "-1"),
        ("first", "ten"),
        ("first", "1.5"),
        ("first", ""),
        ("first", "\u00b2"),  # a digit to str.isdigit, not to int()
        ("first", "\u0661\u0660"),  # Arabic-Indic "10"
        ("last", "101"),
        ("last", "0"),
    ]:
        with subtests.test(name=name, value=value):
            assert_bad_parameter(await api.get("Accounts", params={name: value}), name)


async def test_page_size_of_100_is_accepted(api: Api) -> None:
    r = await api.get("Accounts", params={"first": "100"})
    assert r.status_code == 200, r.text


@engine_independent
async def test_filter_or_order_on_an_unknown_field_is_a_400_naming_it(
    api: Api, subtests: pytest.Subtests
) -> None:
    for entity, params, mention in [
        ("Accounts", {"filter[colour]": "red"}, "colour"),
        ("Accounts", {"filter[owner]": "x"}, "owner"),
        ("Accounts", {"filter[name.first]": "x"}, "name"),
        ("Opportunities", {"filter[value.amount]": "1"}, "amount"),
        ("Accounts", {"filter[]": "x"}, "filter[]"),
        ("Accounts", {"order-by": "colour"}, "colour"),
        ("Accounts", {"order-by": "-colour,name"}, "colour"),
    ]:
        with subtests.test(entity=entity, params=params):
            assert_bad_parameter(await api.get(entity, params=params), mention)


@engine_independent
async def test_unknown_filter_operator_is_a_400_naming_it(
    api: Api, subtests: pytest.Subtests
) -> None:
    for op in ["bogus", "EQ", "equals", "like", ""]:
        with subtests.test(op=op):
            r = await api.get("Accounts", params={"filter[name]": "Acme", "filter-op[name]": op})
            assert_bad_parameter(r, "filter-op[name]", repr(op))


@engine_independent
async def test_filter_operator_without_its_filter_is_a_400(api: Api) -> None:
    r = await api.get("Accounts", params={"filter-op[name]": "eq"})
    assert_bad_parameter(r, "filter-op[name]")


@engine_independent
async def test_filter_value_that_does_not_fit_its_field_is_a_400(
    api: Api, subtests: pytest.Subtests
) -> None:
    for entity, field, value in [
        ("Accounts", "created", "yesterday"),
        ("Accounts", "is_archived", "maybe"),
        ("Accounts", "owner_id", "not-a-uuid"),
        ("Tasks", "due_date", "2026-13-01"),
        ("Tasks", "priority", "Urgent"),
        ("Steps", "sort_order", "first"),
        ("Steps", "sort_order", "99999999999999999999"),
        ("Appointments", "start_date", "9999-12-31T23:59:59-01:00"),
        ("Accounts", "name", "nul\x00byte"),
    ]:
        with subtests.test(entity=entity, field=field, value=value):
            r = await api.get(entity, params={f"filter[{field}]": value})
            assert_bad_parameter(r, f"filter[{field}]")


@engine_independent
async def test_include_deleted_that_is_not_a_boolean_is_a_400(
    api: Api, subtests: pytest.Subtests
) -> None:
    account = await api.create("Accounts", {"name": "Acme"})
    for value in ["maybe", "yes", "2"]:
        with subtests.test(value=value):
            params = {"include-deleted": value}
            assert_bad_parameter(await api.get("Accounts", params=params), value)
            r = await api.get("Accounts", account["id"], params=params)
            assert_bad_parameter(r, "include-deleted")


@engine_independent
async def test_cursor_that_was_not_issued_is_a_400(api: Api, subtests: pytest.Subtests) -> None:
    for cursor in ["%%%", "abc", "W10", "WyJ4IiwieSJd", "\u00e9"]:
        with subtests.test(cursor=cursor):
            assert_bad_parameter(await api.get("Accounts", params={"after": cursor}), "after")
            assert_bad_parameter(await api.get("Accounts", params={"before": cursor}), "before")


# --- credentials -----------------------------------------------------------------------------


@engine_independent
async def test_missing_or_malformed_credentials_are_a_401(
    api: Api, subtests: pytest.Subtests
) -> None:
    for authorization in [
        None,
        "Bearer abc",
        "Basic",
        "Basic !!!not-base64!!!",
        "Basic Zm9v",  # "foo": no colon
        "Basic OnNlY3JldA==",  # ":secret": no key
        b"Basic \xe9\xe9",
    ]:
        headers = {} if authorization is None else {"authorization": authorization}
        for method in ("GET", "POST"):
            with subtests.test(authorization=authorization, method=method):
                r = await api.http.request(
                    method, api.path("Accounts"), json={"name": "x"}, headers=headers, auth=None
                )
                assert_error(r, 401, "ERROR_UNAUTHORIZED")
                assert r.headers["www-authenticate"] == 'Basic realm="restapi"'
    assert (await everything(api, "Accounts"))["total"] == 0


async def test_wrong_key_or_secret_is_a_401_and_nothing_changes(api: Api) -> None:
    account = await api.create("Accounts", {"name": "Acme"})
    before = await everything(api, "Accounts")
    wrong = [
        httpx.BasicAuth(api.space.api_key, api.space.api_secret + "x"),
        httpx.BasicAuth(api.space.api_key, ""),
        httpx.BasicAuth("ck_" + "0" * 32, api.space.api_secret),
        httpx.BasicAuth(api.space.api_secret, api.space.api_key),
    ]
    for auth in wrong:
        for r in [
            await api.http.get(api.path("Accounts"), auth=auth),
            await api.http.post(api.path("Accounts"), json={"name": "x"}, auth=auth),
            await api.http.patch(
                api.path("Accounts", account["id"]), json={"name": "x"}, auth=auth
            ),
            await api.http.delete(api.path("Accounts", account["id"]), auth=auth),
        ]:
            assert_error(r, 401, "ERROR_UNAUTHORIZED")
            assert r.headers["www-authenticate"] == 'Basic realm="restapi"'
    assert await everything(api, "Accounts") == before


@engine_independent
async def test_credentials_are_checked_before_the_entity_or_body(api: Api) -> None:
    auth = httpx.BasicAuth(api.space.api_key, "wrong")
    for r in [
        await api.http.get(api.path("Widgets"), auth=auth),
        await api.http.post(api.path("Accounts"), content=b"{", auth=auth),
        await api.http.get(api.path("Accounts", "not-a-uuid"), auth=auth),
        await api.http.get(api.path("Accounts"), params={"first": "1000"}, auth=auth),
    ]:
        assert_error(r, 401, "ERROR_UNAUTHORIZED")


# --- rules of particular entities ------------------------------------------------------------


async def test_product_of_a_line_item_cannot_change_after_create(api: Api) -> None:
    deal = await opportunity(api)
    widget = await api.create("Products", {"name": "Widget"})
    gadget = await api.create("Products", {"name": "Gadget"})
    item = await api.create(
        "OpptyProductRelations",
        {"oppty_id": deal["id"], "product_id": widget["id"], "quantity": 2, "price": 5},
    )
    before = await one(api, "OpptyProductRelations", item["id"])
    path = api.path("OpptyProductRelations", item["id"])
    r = await api.http.patch(path, json={"product_id": gadget["id"], "quantity": 3})
    assert_invalid(r, "product_id", "ERROR_FIELD_READ_ONLY")
    r = await api.http.patch(path, json={"product_id": None})
    assert_invalid(r, "product_id", "ERROR_FIELD_READ_ONLY")
    assert await one(api, "OpptyProductRelations", item["id"]) == before
    # Sending the same product again is not a change.
    r = await api.http.patch(path, json={"product_id": widget["id"], "quantity": 3})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["product_id"] == widget["id"]


@engine_independent
async def test_document_with_two_links_is_refused(api: Api) -> None:
    account = await api.create("Accounts", {"name": "Acme"})
    contact = await api.create("Contacts", {"last_name": "Smith"})
    task = await api.create("Tasks", {"subject": "Call"})
    before = await everything(api, "CloudObjects")
    r = await api.http.post(
        api.path("CloudObjects"),
        json={"filename": "a.pdf", "account_id": account["id"], "contact_id": contact["id"]},
    )
    assert_invalid(r, "account_id", None, "contact_id")
    assert_invalid(r, "contact_id")
    assert await everything(api, "CloudObjects") == before

    doc = await api.create("CloudObjects", {"filename": "a.pdf", "account_id": account["id"]})
    before_one = await one(api, "CloudObjects", doc["id"])
    r = await api.http.patch(api.path("CloudObjects", doc["id"]), json={"task_id": task["id"]})
    assert_invalid(r, "task_id", None, "account_id")
    assert await one(api, "CloudObjects", doc["id"]) == before_one
    # Moving the one link is fine.
    r = await api.http.patch(
        api.path("CloudObjects", doc["id"]), json={"account_id": None, "task_id": task["id"]}
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["task_id"] == task["id"]


async def test_comment_cannot_move_to_another_task(api: Api) -> None:
    first = await api.create("Tasks", {"subject": "One"})
    second = await api.create("Tasks", {"subject": "Two"})
    comment = await api.create("TaskComments", {"task_id": first["id"], "comment": "hi"})
    r = await api.http.patch(
        api.path("TaskComments", comment["id"]), json={"task_id": second["id"]}
    )
    assert_invalid(r, "task_id", "ERROR_FIELD_READ_ONLY")
    assert (await one(api, "TaskComments", comment["id"]))["task_id"] == first["id"]


async def test_a_nul_character_in_a_webhooks_options_is_refused_on_every_engine(
    api: Api, subtests: pytest.Subtests
) -> None:
    # PostgreSQL's JSON cannot store U+0000: before this check it was a 500 there.
    hook = {"url": "https://example.org/h", "events": ["*"], "insecure_ssl": False}
    for options, path in (
        ({"skip_keys": ["a\x00b"]}, "options.skip_keys[0]"),
        ({"entity": {"Account": {"filter": {"name": "x\x00"}}}}, "options.entity.Account"),
        ({"skip_keys": ["ok"], "x\x00": 1}, "options"),
    ):
        with subtests.test(path=path):
            before = await everything(api, "Webhooks")
            r = await api.http.post(api.path("Webhooks"), json={**hook, "options": options})
            body = assert_error(r, 422, "ERROR_ENTITY_VALIDATION")
            (error,) = body["field_errors"]
            assert error["field_name"] == "options", error
            assert error["errors"][0]["message"].startswith(path), error
            assert "NUL" in error["errors"][0]["message"]
            assert await everything(api, "Webhooks") == before
