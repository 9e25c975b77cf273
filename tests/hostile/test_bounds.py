"""One tenant cannot make the server do unbounded work (docs/api.md, "Limits").

Each test is a finding of the security review: a request or webhook that made the server render,
store, send or scan without bound, now refused with an error naming the limit, or capped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, example, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from crmhooks.hooks.subscription import compile_webhook
from crmhooks.limits import Limits
from crmhooks.query.render import Renderer
from crmhooks.schema.registry import BUILTIN
from crmhooks.settings import Settings
from crmhooks.store.engine import open_database
from crmhooks.store.keys import IssuedKey
from crmhooks.store.records import fetch
from tests.support.api import Api, asgi_client
from tests.support.databases import engine_independent
from tests.support.servers import free_port

HOOK_URL = "http://93.184.216.34/hook"  # a public literal: registration needs no lookup
DEFAULTS = Limits()


def _hook(events: list[str], options: Any = None, **extra: Any) -> dict[str, Any]:
    body = {"url": HOOK_URL, "events": events, "insecure_ssl": False, "options": options or {}}
    return {**body, **extra}


def _message(r: httpx.Response) -> str:
    body = r.json()
    texts = [body["message"]]
    for item in [body, *(d for d in body.get("data") or [] if isinstance(d, dict))]:
        for fe in item.get("field_errors", []):
            texts += [f"{fe['field_name']}: {e['message']}" for e in fe["errors"]]
        texts.append(item.get("message", ""))
    return " | ".join(texts)


def _refused(r: httpx.Response, status: int, *needles: str) -> None:
    assert r.status_code == status, r.text[:2000]
    text = _message(r)
    for needle in needles:
        assert needle in text, text[:2000]


@pytest.fixture
async def limited(settings: Settings, space: IssuedKey) -> AsyncIterator[Api]:
    """The API with small limits, so that going over them takes a few records."""
    small = settings.model_copy(
        update={"max_rendered_records": 100, "max_webhooks_per_space": 3, "max_batch_items": 50}
    )
    async with asgi_client(small) as client:
        client.auth = httpx.BasicAuth(space.api_key, space.api_secret)
        yield Api(client, space)


async def _pipeline(api: Api, steps: int) -> dict[str, Any]:
    pipeline = await api.create("Pipelines", {"name": "Sales"})
    items = [{"name": f"s{i}", "pipeline_id": pipeline["id"]} for i in range(steps)]
    r = await api.http.post(api.path("Steps", "batch-modify"), json=items)
    assert r.status_code == 200, r.text
    return pipeline


# --- 1. expand amplification ---------------------------------------------------------------


async def test_an_expand_deeper_than_the_limit_is_a_400_naming_it(api: Api) -> None:
    pipeline = await _pipeline(api, 20)
    deep = "steps.pipeline.steps.pipeline.steps"
    r = await api.get("Pipelines", pipeline["id"], params={"expand": deep})
    _refused(r, 400, "max_expand_depth", str(DEFAULTS.max_expand_depth))
    r = await api.get("Pipelines", params={"expand": deep})
    _refused(r, 400, "max_expand_depth")
    r = await api.get("Pipelines", pipeline["id"], params={"expand": "steps.pipeline.steps"})
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]["steps"][0]["pipeline"]["steps"]) == 20


async def test_records_are_counted_each_time_they_appear(limited: Api) -> None:
    # 42 distinct records, but the one pipeline appears under each of its 20 steps with all
    # 20 steps again: 441 shown, over the limit of 100.
    pipeline = await _pipeline(limited, 20)
    r = await limited.get("Pipelines", pipeline["id"], params={"expand": "steps.pipeline.steps"})
    _refused(r, 400, "max_rendered_records is 100", "smaller first")
    r = await limited.get("Pipelines", pipeline["id"], params={"expand": "steps.pipeline"})
    assert r.status_code == 200, r.text  # 41 shown


async def test_a_list_over_the_record_limit_is_a_400_and_a_smaller_first_fits(
    limited: Api,
) -> None:
    for _ in range(4):
        await _pipeline(limited, 30)  # 31 records each: 124 in all
    r = await limited.get("Pipelines", params={"expand": "steps"})
    _refused(r, 400, "max_rendered_records", "expand")
    r = await limited.get("Pipelines", params={"expand": "steps", "first": "2"})
    assert r.status_code == 200, r.text
    assert [len(p["steps"]) for p in r.json()["data"]] == [30, 30]


async def test_a_write_whose_answer_is_over_the_limit_changes_nothing(limited: Api) -> None:
    pipeline = await _pipeline(limited, 20)
    r = await limited.http.patch(
        limited.path("Pipelines", pipeline["id"]),
        json={"name": "renamed"},
        params={"expand": "steps.pipeline.steps"},
    )
    _refused(r, 400, "max_rendered_records")
    r = await limited.get("Pipelines", pipeline["id"])
    assert r.json()["data"]["name"] == "Sales"


async def test_a_webhook_expand_deeper_than_the_limit_is_a_422_naming_the_option(
    api: Api,
) -> None:
    deep = {"entity": {"Task": {"expand": ["comments.task.comments.task.comments"]}}}
    r = await api.http.post(api.path("Webhooks"), json=_hook(["Task.*"], deep))
    _refused(r, 422, "options.entity.Task", "max_expand_depth")
    related = {"related_entity": {"expand": ["task.comments.task.comments"]}}
    r = await api.http.post(api.path("Webhooks"), json=_hook(["Task.*"], related))
    _refused(r, 422, "options.related_entity", "max_expand_depth")


async def test_a_webhook_body_that_could_pass_the_record_limit_is_refused_at_registration(
    api: Api,
) -> None:
    # Per event: the task, 20 comments (the list cap), each with its task and that task's 20
    # comments: 441, and the related entity: 442. A hundred per request is over 5000.
    options = {"entity": {"Task": {"expand": ["comments.task.comments"]}}}
    r = await api.http.post(api.path("Webhooks"), json=_hook(["Task.*"], options))
    _refused(r, 422, "options.entity", "max_rendered_records", "chunk_size", "44200")
    r = await api.http.post(
        api.path("Webhooks"), json=_hook(["Task.*"], {**options, "chunk_size": 10})
    )
    assert r.status_code == 201, r.text


async def test_a_webhook_shows_at_most_the_list_cap_of_an_expanded_list(
    api: Api, db_url: str
) -> None:
    task = await api.create("Tasks", {"subject": "call"})
    comments = [{"task_id": task["id"], "comment": f"c{i}"} for i in range(30)]
    r = await api.http.post(api.path("TaskComments", "batch-modify"), json=comments)
    assert r.status_code == 200, r.text
    record = {**_hook(["Task.*"], {"entity": {"Task": {"expand": ["comments"]}}}), "id": "w"}
    sub = compile_webhook(record, {})
    db = open_database(db_url)
    try:
        async with db.read() as conn:
            found = await fetch(conn, BUILTIN["Tasks"], "acme", task["id"])
            assert found is not None
            renderer = Renderer(conn, "acme", "http://testserver")
            (shown,) = await renderer.shaped(BUILTIN["Tasks"], [found[0]], sub.entity["Task"].shape)
    finally:
        await db.dispose()
    r = await api.get("Tasks", task["id"], params={"expand": "comments"})  # the whole list
    every = [c["id"] for c in r.json()["data"]["comments"]]
    assert len(every) == 30
    cap = DEFAULTS.webhook_list_records
    assert [c["id"] for c in shown["comments"]] == every[:cap]  # the first, in list order


@dataclass
class Inbox:
    url: str
    bodies: list[bytes] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def inbox() -> AsyncIterator[Inbox]:
    port = free_port()
    box = Inbox(f"http://127.0.0.1:{port}/hook")

    async def receive(request: web.Request) -> web.Response:
        box.bodies.append(await request.read())
        box.arrived.set()
        return web.Response(status=200)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield box
    await runner.cleanup()


async def test_a_delivered_body_holds_capped_lists(
    settings: Settings, space: IssuedKey, inbox: Inbox
) -> None:
    live = settings.model_copy(update={"delivery": True, "allowed_targets": "127.0.0.0/8"})
    async with asgi_client(live) as client:
        client.auth = httpx.BasicAuth(space.api_key, space.api_secret)
        api = Api(client, space)
        task = await api.create("Tasks", {"subject": "call"})
        comments = [{"task_id": task["id"], "comment": "x" * 1000} for _ in range(60)]
        r = await api.http.post(api.path("TaskComments", "batch-modify"), json=comments)
        assert r.status_code == 200, r.text
        options = {"entity": {"Task": {"expand": ["comments"]}}}
        await api.create("Webhooks", {**_hook(["Task.Update"], options), "url": inbox.url})
        r = await api.http.patch(api.path("Tasks", task["id"]), json={"subject": "again"})
        assert r.status_code == 200
        await asyncio.wait_for(inbox.arrived.wait(), 10)
    (body, *_) = inbox.bodies
    (element,) = orjson.loads(body)
    assert len(element["entity"]["comments"]) == DEFAULTS.webhook_list_records
    assert len(body) < 40_000  # 20 comments of 1000 characters, not 60


# --- 2. filters that freeze the server -----------------------------------------------------


ELEVEN_FIELDS = ["name", "city", "country", "zip_code", "comments", "state_province", "address"]
ELEVEN_FIELDS += ["home_page", "email1", "phone1", "owner_id"]


def _filter_hook(filters: dict[str, Any], ops: dict[str, str]) -> dict[str, Any]:
    options = {"entity": {"Account": {"filter": filters, "filter-op": ops}}}
    return _hook(["Account.*"], options)


async def test_webhook_options_over_the_byte_limit_are_a_422(api: Api) -> None:
    needles = [f"needle{i:05}" for i in range(60_000)]
    hook = _filter_hook({"comments": needles}, {"comments": "contains"})
    r = await api.http.post(api.path("Webhooks"), json=hook)
    assert r.status_code in (413, 422), r.text  # over the body limit, or the options limit
    few = _filter_hook({"comments": needles[:1500]}, {"comments": "contains"})
    r = await api.http.post(api.path("Webhooks"), json=few)
    _refused(r, 422, "options", "max_options_bytes", str(DEFAULTS.max_options_bytes))


@engine_independent
@pytest.mark.parametrize(
    ("filters", "ops", "limit"),
    [
        ({"name": [f"n{i}" for i in range(101)]}, {}, "max_filter_values"),
        ({"comments": ["x" * 1001]}, {"comments": "contains"}, "max_filter_value_length"),
        (dict.fromkeys(ELEVEN_FIELDS, "a"), {}, "max_filter_fields"),
        ({"comments": [f"n{i}" for i in range(21)]}, {"comments": "contains"}, "search_values"),
    ],
)
async def test_webhook_filters_over_a_limit_are_a_422_naming_it(
    api: Api, filters: dict[str, Any], ops: dict[str, str], limit: str
) -> None:
    r = await api.http.post(api.path("Webhooks"), json=_filter_hook(filters, ops))
    _refused(r, 422, "options.entity", limit)


async def test_substring_values_of_a_whole_space_are_bounded(api: Api) -> None:
    def searching(n: int) -> dict[str, Any]:
        return _filter_hook({"comments": [f"n{i}" for i in range(n)]}, {"comments": "contains"})

    first = await api.create("Webhooks", searching(20))
    await api.create("Webhooks", searching(20))
    r = await api.http.post(api.path("Webhooks"), json=searching(20))
    _refused(r, 422, "options.entity", "max_space_search_values", "60")
    await api.create("Webhooks", searching(DEFAULTS.max_space_search_values - 40))
    # A webhook's own values are replaced, not added to, when it is changed.
    options = searching(20)["options"]
    r = await api.http.patch(api.path("Webhooks", first["id"]), json={"options": options})
    assert r.status_code == 200, r.text[:500]


@engine_independent
@pytest.mark.parametrize(
    ("params", "limit"),
    [
        ({"filter[name]": ",".join(f"n{i}" for i in range(101))}, "max_filter_values"),
        ({"filter[comments]": "x" * 1001, "filter-op[comments]": "contains"}, "value_length"),
        ({f"filter[{f}]": "a" for f in ELEVEN_FIELDS}, "max_filter_fields"),
        ({"expand": ",".join(["owner"] * 21)}, "max_shape_entries"),
        ({"load-only": ",".join(["name"] * 21)}, "max_shape_entries"),
        ({"order-by": ",".join(["name"] * 11)}, "max_order_keys"),
    ],
)
async def test_list_parameters_over_a_limit_are_a_400_naming_it(
    api: Api, params: dict[str, str], limit: str
) -> None:
    r = await api.get("Accounts", params=params)
    _refused(r, 400, limit)
    assert r.json()["name"] == "ERROR_PARAMETER_INVALID"


# --- 3. batches and webhooks per space -----------------------------------------------------


async def test_a_batch_over_the_item_limit_is_a_400_naming_it(api: Api, limited: Api) -> None:
    over = DEFAULTS.max_batch_items + 1
    r = await api.http.post(api.path("Accounts", "batch-modify"), json=[{"name": "a"}] * over)
    _refused(r, 400, "max_batch_items", str(DEFAULTS.max_batch_items))
    ids = ["00000000-0000-4000-8000-000000000000"] * 51
    for route in ("batch-delete", "batch-restore"):
        r = await limited.http.post(limited.path("Accounts", route), json=ids)
        _refused(r, 400, "at most 50 items")
    assert (await api.get("Accounts")).json()["total"] == 0


async def test_webhooks_past_the_space_limit_are_a_422_naming_it(limited: Api) -> None:
    hook = _hook(["Account.*"], {"chunk_size": 10})  # 20 records a request fit in 100
    r = await limited.http.post(limited.path("Webhooks", "batch-modify"), json=[hook] * 5)
    _refused(r, 422, "max_webhooks_per_space", "the limit is 3")
    assert r.json()["data"][3]["index"] == 3
    assert (await limited.get("Webhooks")).json()["total"] == 0  # all or nothing
    for _ in range(3):
        await limited.create("Webhooks", hook)
    r = await limited.http.post(limited.path("Webhooks"), json=hook)
    _refused(r, 422, "max_webhooks_per_space")
    (first, *_) = (await limited.get("Webhooks")).json()["data"]
    r = await limited.http.delete(limited.path("Webhooks", first["id"]))
    assert r.status_code == 200
    await limited.create("Webhooks", hook)  # room again


async def test_concurrent_creates_do_not_pass_the_space_limit(limited: Api) -> None:
    hook = _hook(["Account.*"], {"chunk_size": 10})
    results = await asyncio.gather(
        *(limited.http.post(limited.path("Webhooks"), json=hook) for _ in range(8))
    )
    assert sorted(r.status_code for r in results) == [201] * 3 + [422] * 5
    assert (await limited.get("Webhooks")).json()["total"] == 3


async def test_the_default_space_limit_stops_a_batch_of_300_webhooks(api: Api) -> None:
    hooks = [_hook(["Account.*"])] * 300
    r = await api.http.post(api.path("Webhooks", "batch-modify"), json=hooks)
    _refused(r, 422, "max_webhooks_per_space", str(DEFAULTS.max_webhooks_per_space))
    assert r.json()["data"][DEFAULTS.max_webhooks_per_space]["index"] == 100


# --- bounded fuzz: any options or list parameters, a 2xx or 4xx, in bounded time ----------

FUZZ = examples(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
RELATIONS = ["owner", "account", "contact", "comments", "task", "documents", "steps", "pipeline"]
FIELDS = ["name", "comments", "city", "owner_id", "created", "id", "subject", "revision", "x"]
OPS = ["eq", "contains", "icontains", "starts", "gt", "between", "null", "nope", ""]
PER_REQUEST_SECONDS = 2.0
PER_REQUEST_BYTES = 8_000_000

# Any relations, and chains that go through a to-many relation and back (the amplifiers).
_chain = st.tuples(
    st.sampled_from([("steps", "pipeline"), ("comments", "task")]), st.integers(1, 7)
)
_path = st.lists(st.sampled_from(RELATIONS), min_size=1, max_size=5).map(".".join) | _chain.map(
    lambda c: ".".join((list(c[0]) * 4)[: c[1]])
)
_text = st.text(max_size=40) | st.sampled_from(["", "a", "x" * 1200])
_value = _text | st.integers() | st.none() | st.booleans() | st.lists(_text, max_size=150)
_entity_options = st.fixed_dictionaries(
    {},
    optional={
        "expand": st.lists(_path, max_size=25) | _text,
        "load-only": st.lists(st.sampled_from(FIELDS) | _path, max_size=25),
        "filter": st.dictionaries(st.sampled_from(FIELDS), _value, max_size=12),
        "filter-op": st.dictionaries(st.sampled_from(FIELDS), st.sampled_from(OPS), max_size=4),
        "on-field-change": st.lists(st.sampled_from(FIELDS), max_size=25),
    },
)
_options = st.fixed_dictionaries(
    {},
    optional={
        "entity": st.dictionaries(
            st.sampled_from(["Task", "Account", "Pipeline", "Nope"]), _entity_options, max_size=2
        ),
        "related_entity": st.fixed_dictionaries(
            {}, optional={"expand": st.lists(_path, max_size=25)}
        ),
        "chunk_size": st.integers(-5, 200) | st.floats(allow_nan=False, allow_infinity=False),
        "skip_keys": st.lists(_text, max_size=5),
    },
)
_list_params = st.fixed_dictionaries(
    {},
    optional={
        "expand": st.lists(_path, max_size=25).map(",".join),
        "load-only": st.lists(st.sampled_from(FIELDS), max_size=25).map(",".join),
        "filter[name]": st.lists(_text, max_size=120).map(",".join),
        "filter[comments]": _text,
        "filter-op[name]": st.sampled_from(OPS),
        "filter-op[comments]": st.sampled_from(OPS),
        "filter[created]": _text,
        "order-by": st.lists(st.sampled_from([*FIELDS, "-name"]), max_size=4).map(",".join),
        "first": st.sampled_from(["0", "1", "100", "101", "-1", "x", ""]),
        "after": _text,
    },
)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _timed(call: Any) -> httpx.Response:
    started = time.monotonic()
    r: httpx.Response = await call
    assert time.monotonic() - started < PER_REQUEST_SECONDS
    assert r.status_code < 500, r.text[:2000]
    # The seeded records are small: even the most records an answer may show fit in this.
    assert len(r.content) < PER_REQUEST_BYTES
    return r


@pytest.mark.slow
@FUZZ
@given(options=_options)
def test_fuzzed_webhook_options_get_a_2xx_or_4xx(
    settings: Settings, space: IssuedKey, options: Any
) -> None:
    async def go() -> None:
        async with asgi_client(settings) as client:
            client.auth = httpx.BasicAuth(space.api_key, space.api_secret)
            api = Api(client, space)
            r = await _timed(api.http.post(api.path("Webhooks"), json=_hook(["*"], options)))
            if r.status_code == 201:
                await api.http.delete(api.path("Webhooks", r.json()["data"]["id"]))

    _run(go())


@pytest.fixture
def seeded(settings: Settings, space: IssuedKey) -> Settings:
    async def seed() -> None:
        async with asgi_client(settings) as client:
            client.auth = httpx.BasicAuth(space.api_key, space.api_secret)
            api = Api(client, space)
            await _pipeline(api, 20)
            account = await api.create("Accounts", {"name": "Acme", "comments": "x" * 5000})
            task = await api.create("Tasks", {"subject": "t", "account_id": account["id"]})
            await api.create("TaskComments", {"task_id": task["id"], "comment": "c"})

    _run(seed())
    return settings


@pytest.mark.slow
@FUZZ
@given(entity=st.sampled_from(["Accounts", "Pipelines", "Tasks"]), params=_list_params)
@example(
    entity="Pipelines", params={"expand": "steps.pipeline.steps.pipeline.steps.pipeline.steps"}
)
def test_fuzzed_list_parameters_get_a_2xx_or_4xx(
    seeded: Settings, space: IssuedKey, entity: str, params: dict[str, str]
) -> None:
    async def go() -> None:
        async with asgi_client(seeded) as client:
            client.auth = httpx.BasicAuth(space.api_key, space.api_secret)
            await _timed(client.get(Api(client, space).path(entity), params=params))

    _run(go())
