"""Pipeliner fidelity: its error bodies, and the parameters and headers its clients send
(``validation-level``, ``include_deleted``, ``first`` with ``last``, ``before``, ``Timezone``).

The expected bodies are the shapes Pipeliner's service answered with in recorded sessions of a
public client: a create missing required fields, and an unknown collection.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.conftest import Api

# The keys of the service's 422 answer, top level, per field, and per inner error.
VALIDATION_KEYS = {
    "success",
    "http_status",
    "code",
    "name",
    "message",
    "entity_id",
    "entity_name",
    "entity_errors",
    "field_errors",
    "step_checklist_errors",
    "entity_index",
}
FIELD_KEYS = {"field_id", "field_name", "name", "code", "errors"}
INNER_KEYS = {"code", "name", "message", "field_id", "field_name"}


def validation_body(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 422, r.text
    body: dict[str, Any] = r.json()
    assert set(body) >= VALIDATION_KEYS, body
    assert (body["code"], body["name"], body["http_status"]) == (
        40000,
        "ERROR_ENTITY_VALIDATION",
        422,
    )
    assert body["entity_errors"] == []
    assert body["step_checklist_errors"] == []
    for fe in body["field_errors"]:
        assert set(fe) == FIELD_KEYS, fe
        assert (fe["name"], fe["code"]) == ("ERROR_FIELD_VALIDATION", 40002)
        for inner in fe["errors"]:
            assert set(inner) == INNER_KEYS, inner
            assert (inner["field_id"], inner["field_name"]) == (fe["field_id"], fe["field_name"])
    return body


def by_field(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {fe["field_name"]: fe for fe in body["field_errors"]}


def bad_parameter(r: httpx.Response, *named: str) -> None:
    assert r.status_code == 400, r.text
    body = r.json()
    assert (body["name"], body["code"]) == ("ERROR_PARAMETER_INVALID", 117)
    for n in named:
        assert n in body["message"], body


async def step_id(api: Api) -> str:
    pipeline = await api.create("Pipelines", {"name": "Sales"})
    step = await api.create("Steps", {"name": "New", "pipeline_id": pipeline["id"]})
    return str(step["id"])


# --- errors ----------------------------------------------------------------------------------


async def test_missing_required_field_is_parameter_missing_inside_the_422(api: Api) -> None:
    body = validation_body(await api.http.post(api.path("Accounts"), json={"city": "Rome"}))
    assert body["entity_name"] == "Account"
    assert body["entity_id"] is None
    assert body["entity_index"] is None
    (inner,) = by_field(body)["name"]["errors"]
    assert (inner["code"], inner["name"]) == (119, "ERROR_PARAMETER_MISSING")
    uuid.UUID(inner["field_id"])


async def test_field_ids_are_stable_per_entity_and_field(api: Api) -> None:
    first = validation_body(await api.http.post(api.path("Accounts"), json={"name": 1}))
    again = validation_body(await api.http.post(api.path("Accounts"), json={"name": 2}))
    other = validation_body(await api.http.post(api.path("Products"), json={"name": 3}))
    ids = [by_field(b)["name"]["field_id"] for b in (first, again, other)]
    assert ids[0] == ids[1] != ids[2]


async def test_patch_error_names_the_record(api: Api) -> None:
    account = await api.create("Accounts", {"name": "Acme"})
    r = await api.http.patch(
        api.path("Accounts", account["id"]), json={"owner_id": str(uuid.uuid4())}
    )
    body = validation_body(r)
    assert (body["entity_name"], body["entity_id"]) == ("Account", account["id"])
    (inner,) = by_field(body)["owner_id"]["errors"]
    assert (inner["code"], inner["name"]) == (120, "ERROR_RELATIONS_DOESNT_EXIST")


async def test_unknown_collection_is_unknown_type(api: Api) -> None:
    for r in (
        await api.get("Nonsense"),
        await api.get("Nonsense", str(uuid.uuid4())),
        await api.http.post(api.path("Nonsense"), json={}),
        await api.http.post(api.path("Nonsense", "batch-delete"), json=[]),
    ):
        assert r.status_code == 404
        assert r.json() == {
            "success": False,
            "http_status": 404,
            "code": 2006,
            "name": "ERROR_UNKNOWN_TYPE",
            "message": "cannot determine entity type from Nonsense",
        }


async def test_batch_item_errors_carry_entity_index(api: Api) -> None:
    account = await api.create("Accounts", {"name": "Acme"})
    items = [{"name": "ok"}, {"city": "no name"}, {"id": account["id"], "name": 5}]
    r = await api.http.post(
        api.path("Accounts", "batch-modify"), json=items, params={"rollback-method": "1"}
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert isinstance(data[0], str)
    for index, entity_id in ((1, None), (2, account["id"])):
        item = data[index]
        assert item["entity_index"] == item["index"] == index
        assert (item["entity_name"], item["entity_id"]) == ("Account", entity_id)
    assert by_field(data[1])["name"]["errors"][0]["code"] == 119
    # All or nothing: the same items at the same places, under a 422 of the validation shape.
    r = await api.http.post(api.path("Accounts", "batch-modify"), json=items)
    body = validation_body(r)
    assert body["data"][0] is None
    assert [body["data"][i]["entity_index"] for i in (1, 2)] == [1, 2]
    missing = str(uuid.uuid4())
    r = await api.http.post(api.path("Accounts", "batch-delete"), json=[missing])
    assert r.json()["data"][0]["entity_index"] == 0
    assert r.json()["data"][0]["name"] == "ERROR_ENTITY_NOT_FOUND"
