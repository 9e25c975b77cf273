"""The plain routes (docs/api.md#routes) on every engine."""

from __future__ import annotations

import httpx

from tests.support.api import Api
from tests.support.databases import new_space


async def test_create_read_patch_delete_account(api: Api) -> None:
    created = await api.create("Accounts", {"name": "Acme", "email1": "a@example.com"})
    assert created["revision"] == 1
    assert created["is_deleted"] is False
    r = await api.get("Accounts", created["id"])
    assert r.status_code == 200
    assert r.json()["data"]["name"] == "Acme"
    r = await api.http.patch(api.path("Accounts", created["id"]), json={"city": "Oslo"})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["city"] == "Oslo"
    assert r.json()["data"]["revision"] == 2
    r = await api.http.delete(api.path("Accounts", created["id"]))
    assert r.json() == {"success": True, "data": created["id"]}
    assert (await api.get("Accounts", created["id"])).status_code == 404
    listed = (await api.get("Accounts")).json()
    assert listed["total"] == 0
    listed = (await api.get("Accounts", params={"include-deleted": "true"})).json()
    assert listed["total"] == 1
    assert listed["data"][0]["is_deleted"] is True


async def test_list_pages_with_cursors(api: Api) -> None:
    ids = [(await api.create("Products", {"name": f"p{i}"}))["id"] for i in range(7)]
    seen: list[str] = []
    after = None
    while True:
        params = {"first": "3", **({"after": after} if after else {})}
        body = (await api.get("Products", params=params)).json()
        assert body["total"] == 7
        seen += [r["id"] for r in body["data"]]
        if not body["page_info"]["has_next_page"]:
            break
        after = body["page_info"]["end_cursor"]
    assert seen == ids
    last = (await api.get("Products", params={"last": "2"})).json()
    assert [r["id"] for r in last["data"]] == ids[-2:]
    assert last["page_info"]["has_previous_page"] is True


async def test_relations_are_written_as_ids_and_shown_as_uris(api: Api) -> None:
    owner = await api.create("Clients", {"first_name": "Ann", "email": "ann@example.com"})
    account = await api.create("Accounts", {"name": "Acme", "owner_id": owner["id"]})
    assert account["owner"].endswith(f"/spaces/acme/entities/Clients/{owner['id']}")
    doc = await api.create("CloudObjects", {"filename": "a.pdf", "account_id": account["id"]})
    read = (await api.get("Accounts", account["id"])).json()["data"]
    base = "http://testserver/api/v100/rest/spaces/acme/entities"
    # A record's documents are the CloudObjectRelations linking a document to it.
    (link,) = read["documents"]
    assert link.startswith(f"{base}/CloudObjectRelations/")
    relation = (await api.http.get(link)).json()["data"]
    assert relation["cloud_object"] == f"{base}/CloudObjects/{doc['id']}"
    assert relation["account"] == f"{base}/Accounts/{account['id']}"
    assert doc["account"] == f"{base}/Accounts/{account['id']}"


async def test_filter_eq_and_any_of(api: Api) -> None:
    for name in ("a", "b", "c"):
        await api.create("Accounts", {"name": name})
    r = await api.get("Accounts", params={"filter[name]": "b"})
    assert [x["name"] for x in r.json()["data"]] == ["b"]
    r = await api.get("Accounts", params={"filter[name]": "a,c"})
    assert sorted(x["name"] for x in r.json()["data"]) == ["a", "c"]


async def test_key_of_another_space_is_refused(api: Api, db_url: str) -> None:

    other = await new_space(db_url, "other")
    created = await api.create("Accounts", {"name": "secret"})
    intruder = httpx.BasicAuth(other.api_key, other.api_secret)
    r = await api.http.get(api.path("Accounts", created["id"]), auth=intruder)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Basic realm="restapi"'
    assert r.json()["name"] == "ERROR_UNAUTHORIZED"
    r = await api.http.post(api.path("Accounts"), json={"name": "x"}, auth=intruder)
    assert r.status_code == 401
    # The same answer for a space that does not exist: nothing is revealed.
    r2 = await api.http.get("/api/v100/rest/spaces/nope/entities/Accounts", auth=intruder)
    assert r2.status_code == 401
    assert r2.json() == r.json()
