"""The query language (docs/api.md#query-parameters) through the API: operators, order, cursors,
expand, load-only and batch writes, on every engine."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from tests.support.api import Api
from tests.support.databases import engine_independent


async def _ids(api: Api, entity: str, **params: str) -> list[str]:
    r = await api.get(entity, params=params)
    assert r.status_code == 200, r.text
    return [x["id"] for x in r.json()["data"]]


async def _names(api: Api, entity: str, **params: str) -> list[str]:
    r = await api.get(entity, params=params)
    assert r.status_code == 200, r.text
    return [x["name"] for x in r.json()["data"]]


async def test_text_operators(api: Api) -> None:
    for name in ("Alpha", "alphabet", "Beta", "gamma"):
        await api.create("Accounts", {"name": name, "city": None if name == "Beta" else "Oslo"})

    async def by(op: str, value: str) -> list[str]:
        return sorted(
            await _names(api, "Accounts", **{"filter[name]": value, "filter-op[name]": op})
        )

    assert await by("eq", "Alpha") == ["Alpha"]
    assert await by("ieq", "ALPHA") == ["Alpha"]
    assert await by("not-eq", "Alpha,Beta") == ["alphabet", "gamma"]
    assert await by("not-ieq", "alpha") == ["Beta", "alphabet", "gamma"]
    assert await by("contains", "lph") == ["Alpha", "alphabet"]
    assert await by("starts", "al") == ["alphabet"]
    assert await by("istarts", "AL") == ["Alpha", "alphabet"]
    assert await by("ends", "ta") == ["Beta"]
    assert await by("iends", "MMA") == ["gamma"]
    assert await by("icontains", "PHA") == ["Alpha", "alphabet"]
    assert await by("gt", "Beta") == ["alphabet", "gamma"]
    assert await by("between", "B,C") == ["Beta"]
    assert await by("between", "B,b") == ["Beta", "alphabet"]  # code point order
    null = {"filter[city]": "", "filter-op[city]": "null"}
    assert await _names(api, "Accounts", **null) == ["Beta"]
    not_null = {"filter[city]": "", "filter-op[city]": "not-null"}
    assert len(await _names(api, "Accounts", **not_null)) == 3


async def _pipeline_step(api: Api) -> str:
    pipeline = await api.create("Pipelines", {"name": "Sales"})
    step = await api.create("Steps", {"name": "Open", "pipeline_id": pipeline["id"]})
    return str(step["id"])


async def test_numbers_dates_status_names_and_dotted_paths(api: Api) -> None:
    step = await _pipeline_step(api)
    for i, (status, value, closing) in enumerate(
        [(1, 10.0, "2026-01-01"), (3, 250.5, "2026-02-01"), (2, None, "2026-03-01")]
    ):
        await api.create(
            "Opportunities",
            {
                "name": f"o{i}",
                "step_id": step,
                "status": status,
                "closing_date": closing,
                **({"value": {"base_value": value}} if value is not None else {}),
            },
        )
    ops = "filter-op[value.base_value]"
    assert await _names(api, "Opportunities", **{"filter[value.base_value]": "100", ops: "gt"}) == [
        "o1"
    ]
    assert await _names(api, "Opportunities", **{"filter[status]": "Won"}) == ["o1"]
    assert await _names(api, "Opportunities", **{"filter[status]": "Open,Lost"}) == ["o0", "o2"]
    dates = {"filter[closing_date]": "2026-01-15,2026-02-15", "filter-op[closing_date]": "between"}
    assert await _names(api, "Opportunities", **dates) == ["o1"]
    since = {"filter[created]": "2000-01-01T00:00:00Z", "filter-op[created]": "gte"}
    assert len(await _names(api, "Opportunities", **since)) == 3


async def test_order_by_several_keys_and_descending(api: Api) -> None:
    for name, city in [("b", "x"), ("a", "y"), ("c", "x"), ("a", "x")]:
        await api.create("Accounts", {"name": name, "city": city})
    rows = (await api.get("Accounts", params={"order-by": "city,-name"})).json()["data"]
    assert [(r["city"], r["name"]) for r in rows] == [
        ("x", "c"),
        ("x", "b"),
        ("x", "a"),
        ("y", "a"),
    ]


async def _walk(api: Api, params: dict[str, str], between: Any = None) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        page = {**params, **({"after": after} if after else {})}
        body = (await api.get("Accounts", params=page)).json()
        seen += [r["id"] for r in body["data"]]
        if between is not None:
            await between()
        if not body["page_info"]["has_next_page"]:
            return seen
        after = body["page_info"]["end_cursor"]


async def test_cursors_stay_correct_while_records_are_inserted(api: Api) -> None:
    originals = [(await api.create("Accounts", {"name": f"n{i:02d}"}))["id"] for i in range(10)]
    counter = iter(range(1000))

    async def insert_some() -> None:
        i = next(counter)
        await api.create("Accounts", {"name": f"a{i:02d}"})  # sorts before every original
        await api.create("Accounts", {"name": f"z{i:02d}"})  # sorts after them

    seen = await _walk(api, {"first": "3", "order-by": "name"}, insert_some)
    assert len(seen) == len(set(seen))  # nothing twice
    assert [i for i in seen if i in originals] == originals  # nothing missed, in order
    backward = (await api.get("Accounts", params={"last": "3", "order-by": "name"})).json()
    names = [r["name"] for r in backward["data"]]
    assert names == sorted(names)
    assert names[-1].startswith("z")


async def test_incremental_sync_returns_every_changed_record_once(api: Api) -> None:
    ids = [(await api.create("Accounts", {"name": f"s{i}"}))["id"] for i in range(9)]
    first = (await api.get("Accounts", ids[0])).json()["data"]
    since = {
        "filter[modified]": first["modified"],
        "filter-op[modified]": "gte",
        "order-by": "modified",
        "first": "4",
    }
    assert await _walk(api, since) == ids
    assert sorted(await _walk(api, {**since, "order-by": "-modified"})) == sorted(ids)


async def _crm(api: Api) -> dict[str, Any]:
    owner = await api.create("Clients", {"first_name": "Ann"})
    account = await api.create("Accounts", {"name": "Acme", "owner_id": owner["id"]})
    step = await _pipeline_step(api)
    oppty = await api.create(
        "Opportunities", {"name": "Deal", "step_id": step, "primary_account_id": account["id"]}
    )
    product = await api.create("Products", {"name": "Widget"})
    item = await api.create(
        "OpptyProductRelations",
        {"oppty_id": oppty["id"], "product_id": product["id"], "quantity": 2, "price": 5},
    )
    return {"owner": owner, "account": account, "oppty": oppty, "product": product, "item": item}


async def test_expand_to_one_to_many_and_dotted(api: Api) -> None:
    crm = await _crm(api)
    params = {"expand": "product_relations.product,primary_account.owner"}
    one = (await api.get("Opportunities", crm["oppty"]["id"], params=params)).json()["data"]
    assert one["primary_account"]["name"] == "Acme"
    assert one["primary_account"]["owner"]["first_name"] == "Ann"
    (line,) = one["product_relations"]
    assert line["amount"] == 10.0
    assert line["product"]["name"] == "Widget"
    listed = (await api.get("Opportunities", params=params)).json()["data"]
    assert listed[0]["primary_account"]["owner"]["id"] == crm["owner"]["id"]
    r = await api.http.patch(
        api.path("Opportunities", crm["oppty"]["id"]),
        json={"name": "Bigger deal"},
        params={"expand": "primary_account"},
    )
    assert r.json()["data"]["primary_account"]["id"] == crm["account"]["id"]


async def test_load_only_with_dotted_paths_after_expansion(api: Api) -> None:
    crm = await _crm(api)
    for name in ("load-only", "load_only"):
        params = {"expand": "primary_account", name: "id,name,primary_account.name"}
        rec = (await api.get("Opportunities", crm["oppty"]["id"], params=params)).json()["data"]
        assert rec == {
            "id": crm["oppty"]["id"],
            "name": "Deal",
            "primary_account": {"name": "Acme"},
        }
    r = await api.get("Opportunities", params={"load-only": "primary_account.name"})
    assert r.status_code == 400
    assert "primary_account" in r.json()["message"]


@contextmanager
def counting(api: Api) -> Iterator[list[str]]:
    transport = api.http._transport
    assert isinstance(transport, httpx.ASGITransport)
    engine = transport.app.state.services.db.reader.sync_engine  # type: ignore[attr-defined]
    statements: list[str] = []

    def count(*args: Any) -> None:
        # The key check reads its key again every half second: not the request's own work.
        if "FROM api_keys" not in str(args[2]):
            statements.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


async def test_expansion_takes_a_fixed_number_of_queries(api: Api) -> None:
    owners = [(await api.create("Clients", {"first_name": f"o{i}"}))["id"] for i in range(3)]
    accounts = [(await api.create("Accounts", {"name": f"a{i}"}))["id"] for i in range(5)]
    batch = [
        {"last_name": f"c{i}", "owner_id": owners[i % 3], "primary_account_id": accounts[i % 5]}
        for i in range(100)
    ]
    r = await api.http.post(api.path("Contacts", "batch-modify"), json=batch)
    assert r.status_code == 200, r.text
    counts = {}
    for size in ("10", "100"):
        with counting(api) as statements:
            r = await api.get("Contacts", params={"first": size, "expand": "primary_account,owner"})
        assert len(r.json()["data"]) == int(size)
        counts[size] = len(statements)
    assert counts["10"] == counts["100"]
    assert counts["100"] <= 10


async def test_batch_modify_creates_and_updates_all_or_nothing(api: Api) -> None:
    existing = await api.create("Accounts", {"name": "old"})
    # As many items as a batch may hold (docs/api.md, "Limits").
    owner = api.space.client_id
    items = [{"name": f"n{i}", "owner_id": owner} for i in range(999)]
    items.append({"id": existing["id"], "city": "Rome"})
    r = await api.http.post(api.path("Accounts", "batch-modify"), json=items)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert len(data) == 1000
    assert data[-1] == existing["id"]
    assert (await api.get("Accounts", existing["id"])).json()["data"]["city"] == "Rome"
    assert (await api.get("Accounts")).json()["total"] == 1000

    bad = [{"name": "ok", "owner_id": owner}, {"name": 5, "owner_id": owner}, {"nope": 1}]
    r = await api.http.post(api.path("Accounts", "batch-modify"), json=bad)
    assert r.status_code == 422
    body = r.json()
    assert body["data"][0] is None
    assert body["data"][1]["index"] == 1
    assert body["data"][1]["field_errors"][0]["field_name"] == "name"
    assert body["data"][2]["field_errors"][0]["field_name"] == "nope"
    assert (await api.get("Accounts")).json()["total"] == 1000  # nothing saved


async def test_batch_keep_going_keeps_the_items_that_succeeded(api: Api) -> None:
    r = await api.http.post(
        api.path("Accounts", "batch-modify"),
        json=[{"name": n, "owner_id": api.space.client_id} for n in ("a", None, "c")],
        params={"rollback-method": "1"},
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert isinstance(data[0], str)
    assert data[1]["index"] == 1
    assert isinstance(data[2], str)
    assert (await api.get("Accounts")).json()["total"] == 2


async def test_batch_delete_and_restore(api: Api) -> None:
    ids = [(await api.create("Products", {"name": f"p{i}"}))["id"] for i in range(3)]
    missing = "00000000-0000-4000-8000-000000000000"
    r = await api.http.post(api.path("Products", "batch-delete"), json=[*ids[:2], missing])
    assert r.status_code == 422
    assert r.json()["data"][2]["name"] == "ERROR_ENTITY_NOT_FOUND"
    assert (await api.get("Products")).json()["total"] == 3
    r = await api.http.post(api.path("Products", "batch-delete"), json=ids[:2])
    assert r.json() == {"success": True, "data": ids[:2]}
    assert (await api.get("Products")).json()["total"] == 1
    r = await api.http.post(api.path("Products", "batch-restore"), json=[ids[0]])
    assert r.json()["data"] == [ids[0]]
    assert (await api.get("Products")).json()["total"] == 2


@engine_independent
@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"filter[nope]": "x"}, "nope"),
        ({"filter[name]": "x", "filter-op[name]": "like"}, "like"),
        ({"filter-op[name]": "eq"}, "filter-op[name]"),
        ({"filter[created]": "yesterday", "filter-op[created]": "gt"}, "yesterday"),
        ({"filter[is_archived]": "x", "filter-op[is_archived]": "contains"}, "contains"),
        ({"filter[name]": "a", "filter-op[name]": "between"}, "between"),
        ({"filter[city]": "x", "filter-op[city]": "null"}, "null"),
        ({"order-by": "nope"}, "nope"),
        ({"expand": "nope"}, "nope"),
        ({"expand": "owner.nope"}, "nope"),
        ({"load-only": "nope"}, "nope"),
        ({"first": "101"}, "first"),
        ({"after": "!!"}, "after"),
        ({"sort": "name"}, "sort"),
    ],
)
async def test_every_parameter_error_names_its_culprit(
    api: Api, params: dict[str, str], named: str
) -> None:
    r = await api.get("Accounts", params=params)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["name"] == "ERROR_PARAMETER_INVALID"
    assert body["code"] == 117
    assert named in body["message"]


async def test_concurrent_reads_during_writes(api: Api) -> None:
    async def write(i: int) -> None:
        await api.create("Accounts", {"name": f"w{i}"})

    await asyncio.gather(*(write(i) for i in range(20)), *(api.get("Accounts") for _ in range(5)))
    assert (await api.get("Accounts")).json()["total"] == 20


async def test_totals_count_each_kind_of_a_shared_table_and_only_live_records(api: Api) -> None:
    """Leads and Opportunities share a table, as do the records of every custom entity; the
    total of an unfiltered list counts its own kind, live records only (on SQLite from the
    partial index of live records, ``query.sql._total``)."""
    leads = [(await api.create("Leads", {"name": f"l{i}"}))["id"] for i in range(3)]
    await api.create("Opportunities", {"name": "o", "step_id": await _pipeline_step(api)})
    for name in ("CE_Bid", "CE_Ask"):
        await api.create("CustomEntities", {"api_name": name, "name": name[3:]})
    bids = [(await api.create("CE_Bid", {"name": f"b{i}"}))["id"] for i in range(2)]
    await api.create("CE_Ask", {"name": "a"})
    assert (await api.http.delete(api.path("Leads", leads[0]))).status_code == 200
    assert (await api.http.delete(api.path("CE_Bid", bids[0]))).status_code == 200
    totals = {e: (await api.get(e)).json()["total"] for e in ("Leads", "Opportunities")}
    totals |= {e: (await api.get(e)).json()["total"] for e in ("CE_Bid", "CE_Ask")}
    assert totals == {"Leads": 2, "Opportunities": 1, "CE_Bid": 1, "CE_Ask": 1}
    deleted = await api.get("Leads", params={"include-deleted": "true"})
    assert deleted.json()["total"] == 3
