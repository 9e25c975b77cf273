"""Speed of the query layer: filtered lists, expansion, in-memory filters, batch writes.

The server runs in a subprocess on a fresh database (``crmhooks serve``, loopback only); the
database is filled by direct bulk insert with a few hundred owners (Clients), 100,000 Accounts
and 100,000 Contacts that point at both. Per engine, from one client:

1. ``GET /entities/Accounts?filter[owner_id]=<uuid>&first=100`` (owners taken in turn);
2. ``GET /entities/Accounts?filter[name]=<text>&filter-op[name]=icontains&first=100``, with a
   common word (thousands of matches) and with a company name (fewer matches than a page);
3. ``GET /entities/Contacts?first=100`` with and without ``expand=primary_account,owner``,
   the two requests taken in turn so that both see the same conditions;
4. ``query.memory.matches`` of a five-clause filter against one record, in this process;
5. ``POST /entities/Accounts/batch-modify`` with 1,000 new Accounts.

For the list figures the SQL statements the server runs (the page and the total) are also
timed on their own, straight through the driver, to tell database time from server time.

Run ``python -m bench.query_speed --engine both``; the figures are printed and written to the
"Query layer" section of ``docs/benchmarks.md`` (``--no-docs`` to skip). Every phase is bounded
by a request count and by ``--seconds``; ``--quiet-wait`` waits for an idle machine before
measuring, ``--sqlite-analyze`` gives SQLite the statistics the server never takes, to show what
they change, and ``--explain`` prints the plans of the list statements.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from rich.markup import escape
from rich.table import Table
from sqlalchemy import Engine, Select, create_engine, insert, text
from sqlalchemy.sql.elements import TextClause

from bench.api_speed import (
    BenchError,
    Sample,
    Server,
    console,
    machine,
    postgres_database,
    postgres_version,
    process_cpu,
    replace_figures,
    reproduce,
    sqlite_database,
    start_server,
    stop_server,
    wait_for_quiet,
)
from crmhooks.query.memory import matches
from crmhooks.query.params import ascii_lower, conditions, parse_list
from crmhooks.query.sql import page_statement, total_statement
from crmhooks.schema.registry import BUILTIN
from crmhooks.schema.types import EntityType
from crmhooks.store.engine import sync_url
from crmhooks.store.records import Record, row_to_record, table_of, to_columns

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
DEFAULT_PG = "postgresql://root@127.0.0.1:5432/test"
ENTITIES = "/api/v100/rest/spaces/default/entities"
SPACE = "default"
HEADING = "## Query layer"

# --- realistic data -------------------------------------------------------------------------


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FIRST_NAMES = _words(
    "Anna Ben Carla David Elena Felix Greta Hugo Ines Jonas Katarina Lukas Maria Nils Olga "
    "Pavel Quentin Rosa Stefan Tereza Ulrich Vera Walter Xenia Yusuf Zoe Aisha Bruno Chen Dmitri "
    "Emma Farid Grace Hannah Ivan Julia Kenji Laura Mateo Nora Oscar Priya Rafael Sofia Tomas "
    "Uma Viktor Wei Yara Zdenek"
)
LAST_NAMES = _words(
    "Novak Schmidt Rossi Garcia Smith Kowalski Nielsen Dubois Horvath Svoboda Jensen Müller "
    "Fischer Weber Wagner Becker Hoffmann Koch Richter Klein Wolf Schröder Neumann Schwarz "
    "Zimmermann Braun Hofmann Hartmann Lange Schmitt Werner Krause Meier Lehmann Köhler Walter "
    "Mayer Huber Kaiser Fuchs Peters Lang Scholz Möller Weiß Jung Hahn Vogel Friedrich Keller"
)
NAME_HEADS = _words(
    "North Blue Silver Green Alpine Harbor Summit Pioneer Atlas Cedar Crescent Evergreen "
    "Golden Granite Horizon Iron Lakeside Maple Meridian Nova Oak Orion Pacific Polar Redwood "
    "River Sierra Solar Sterling Stone Sunrise Trident Union Valley Vertex Vista West Willow "
    "Zenith Apex"
)
NAME_TRADES = _words(
    "Analytics Logistics Foods Systems Partners Consulting Energy Health Media Motors Pharma "
    "Robotics Software Textiles Ventures Works Labs Capital Dynamics Networks Outfitters "
    "Holdings Industries Solutions Studios Trading Construction Designs Insurance Electric"
)
NAME_TAILS = ("Inc", "Ltd", "GmbH", "AG", "LLC", "S.A.", "Oy", "AB", "s.r.o.", "Co", "", "")
REGIONS = ("", "", "", "", "Nordic", "Europe", "Americas", "Asia", "CEE", "UK", "DACH")
CITIES = _words(
    "Vienna Prague Bratislava Berlin Munich Oslo Stockholm Helsinki Copenhagen Madrid Lisbon "
    "Paris Lyon Milan Rome Warsaw Krakow Budapest Zurich Geneva Amsterdam Rotterdam Brussels"
)
COUNTRIES = ("AT", "CZ", "SK", "DE", "NO", "SE", "FI", "DK", "ES", "PT", "FR", "IT", "PL", "HU")
TITLES = ("Mr.", "Ms.", "Dr.", "Ing.", "Mgr.", "", "", "")
POSITIONS = (
    "CEO",
    "CFO",
    "CTO",
    "Head of Sales",
    "Account Manager",
    "Buyer",
    "Procurement Lead",
    "Office Manager",
    "Engineer",
    "Consultant",
)
DOMAINS = ("example.com", "example.org", "example.net", "mail.example", "corp.example")

# The two ``icontains`` searches: a common word (about one name in thirty) and a company name
# that fits fewer records than a page holds, so the page must look at every row.
COMMON_NEEDLE = "LOGIST"
RARE_NEEDLE = "zenith robotics"


def account_name(rng: random.Random) -> str:
    parts = [rng.choice(NAME_HEADS), rng.choice(NAME_TRADES)]
    region = rng.choice(REGIONS)
    if region:
        parts.append(region)
    tail = rng.choice(NAME_TAILS)
    if tail:
        parts.append(tail)
    return " ".join(parts)


@dataclass
class Seeded:
    """What the rows are, so that the answers can be checked."""

    owners: list[str]
    accounts: list[str]
    accounts_per_owner: Counter[str]
    account_names: list[str]
    contacts: int
    seconds: float

    def matching(self, needle: str) -> int:
        folded = ascii_lower(needle)
        return sum(folded in ascii_lower(n) for n in self.account_names)


def _rows(
    et: EntityType,
    values: list[dict[str, Any]],
    start: datetime,
    rng: random.Random,
) -> list[dict[str, Any]]:
    """Table rows for stored field values, created one after another from ``start``."""
    out = []
    for i, stored in enumerate(values):
        created = start + timedelta(seconds=30 * i, milliseconds=rng.randrange(1000))
        modified = min(created + timedelta(days=rng.randrange(400)), start + timedelta(days=1100))
        out.append(
            {
                "id": str(uuid.uuid4()),
                "space_id": SPACE,
                "created": created,
                "modified": modified,
                "is_deleted": False,
                "revision": 1 + rng.randrange(5),
                **to_columns(et, stored, {}),
            }
        )
    return out


def _insert(engine: Engine, et: EntityType, rows: list[dict[str, Any]], chunk: int) -> None:
    t = table_of(et)
    for first in range(0, len(rows), chunk):
        with engine.begin() as conn:
            conn.execute(insert(t), rows[first : first + chunk])


def seed(
    db_url: str,
    owners: int,
    accounts: int,
    contacts: int,
    *,
    sqlite_analyze: bool = False,
    chunk: int = 5000,
) -> Seeded:
    """Owners, Accounts owned by them, Contacts at those Accounts: one bulk insert each.

    On PostgreSQL the tables are then analyzed, as autovacuum would soon do by itself. SQLite
    has nothing that does it (the server never runs ``ANALYZE``), so it is left without
    statistics unless ``sqlite_analyze`` asks for them.
    """
    rng = random.Random(20261127)
    clients_et, accounts_et, contacts_et = (
        BUILTIN["Clients"],
        BUILTIN["Accounts"],
        BUILTIN["Contacts"],
    )
    start = datetime(2023, 1, 1, tzinfo=UTC)
    engine = create_engine(sync_url(db_url))
    started = time.perf_counter()
    try:
        owner_values = []
        for i in range(owners):
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            owner_values.append(
                {
                    "first_name": first,
                    "last_name": last,
                    "email": f"{first}.{last}.{i}@example.com".lower(),
                }
            )
        owner_rows = _rows(clients_et, owner_values, start - timedelta(days=30), rng)
        _insert(engine, clients_et, owner_rows, chunk)
        owner_ids = [r["id"] for r in owner_rows]

        account_values = []
        for i in range(accounts):
            name = account_name(rng)
            slug = "".join(c for c in name.lower() if c.isalnum())[:20]
            account_values.append(
                {
                    "name": name,
                    "owner_id": rng.choice(owner_ids),
                    "email1": f"info{i}@{slug}.example",
                    "phone1": f"+420 {rng.randrange(100, 999)} {rng.randrange(100_000, 999_999)}",
                    "city": rng.choice(CITIES),
                    "country": rng.choice(COUNTRIES),
                    "is_archived": rng.random() < 0.05,
                }
            )
        account_rows = _rows(accounts_et, account_values, start, rng)
        _insert(engine, accounts_et, account_rows, chunk)
        account_ids = [r["id"] for r in account_rows]

        contact_values = []
        for i in range(contacts):
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            contact_values.append(
                {
                    "first_name": first,
                    "last_name": last,
                    "owner_id": rng.choice(owner_ids),
                    "title": rng.choice(TITLES) or None,
                    "position": rng.choice(POSITIONS),
                    "email1": f"{first}.{last}{i}@{rng.choice(DOMAINS)}".lower(),
                    "phone1": f"+43 {rng.randrange(100, 999)} {rng.randrange(10_000, 99_999)}",
                    # A few contacts belong to no account.
                    "primary_account_id": None if rng.random() < 0.05 else rng.choice(account_ids),
                    "is_archived": False,
                }
            )
        _insert(engine, contacts_et, _rows(contacts_et, contact_values, start, rng), chunk)
        if engine.dialect.name == "postgresql":
            # What autovacuum does on its own within a minute or so of a bulk load.
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                for et in (clients_et, accounts_et, contacts_et):
                    conn.execute(text(f"VACUUM ANALYZE {table_of(et).name}"))
        elif sqlite_analyze:
            with engine.begin() as conn:
                conn.execute(text("ANALYZE"))
    finally:
        engine.dispose()
    return Seeded(
        owners=owner_ids,
        accounts=account_ids,
        accounts_per_owner=Counter(v["owner_id"] for v in account_values),
        account_names=[v["name"] for v in account_values],
        contacts=contacts,
        seconds=time.perf_counter() - started,
    )


# --- SQL on its own -------------------------------------------------------------------------


@dataclass
class SqlTiming:
    page_ms: float
    count_ms: float
    plan: str


def _explain(engine: Engine, stmt: Select[Any] | TextClause) -> str:
    """The plan the database picks for ``stmt`` (PostgreSQL: also run, with its timings)."""
    compiled = stmt.compile(engine)
    sql = str(compiled)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            args = tuple(compiled.params[k] for k in compiled.positiontup or ())
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", args)
            return "\n".join(str(r[-1]) for r in rows)
        rows = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, COSTS OFF) {sql}", compiled.params)
        return "\n".join(str(r[0]) for r in rows)


def time_sql(db_url: str, entity: str, query: Mapping[str, str], repeat: int) -> SqlTiming:
    """p50 of the page statement and of the total, as ``query.sql.list_page`` builds them."""
    et = BUILTIN[entity]
    q = parse_list(et, query)
    page = page_statement(et, SPACE, q, q.cursor, True, q.limit + 1)
    engine = create_engine(sync_url(db_url))
    count = total_statement(engine.dialect.name, et, SPACE, q)
    try:
        plan = f"page:\n{_explain(engine, page)}\ntotal:\n{_explain(engine, count)}"
        with engine.connect() as conn:
            timings: dict[str, list[float]] = {"page": [], "count": []}
            for _ in range(repeat):
                for name, stmt in (("page", page), ("count", count)):
                    t0 = time.perf_counter()
                    conn.execute(stmt).all()
                    timings[name].append(1000 * (time.perf_counter() - t0))
    finally:
        engine.dispose()
    return SqlTiming(statistics.median(timings["page"]), statistics.median(timings["count"]), plan)


# --- in memory ------------------------------------------------------------------------------


@dataclass
class MemoryTiming:
    us_per_eval: float  # p50 over batches of the mean time of one evaluation
    best_us: float  # the fastest batch: the cost with no other process in the way
    evaluations: int
    clauses: int


def opportunity_record(owner: str, account: str, step: str) -> Record:
    """An Opportunity as the write path hands it to the webhook filters (its wire form)."""
    et = BUILTIN["Opportunities"]
    now = datetime(2026, 3, 2, 9, 30, 12, 345678, tzinfo=UTC)
    row: dict[str, Any] = {c.name: None for c in table_of(et).columns}
    row.update(
        id=str(uuid.uuid4()),
        space_id=SPACE,
        kind="Opportunity",
        created=now - timedelta(days=20),
        modified=now,
        is_deleted=False,
        revision=3,
        name="Northwind Robotics — fleet renewal 2026",
        owner_id=owner,
        primary_account_id=account,
        step_id=step,
        status=1,
        is_archived=False,
        was_qualified=True,
        value__base_value=42_500.0,
        value__currency_id="EUR",
        value__value_foreign=42_500.0,
    )
    return row_to_record(et, row)


def measure_memory(
    evaluations: int, seconds: float, batch: int = 1000
) -> tuple[MemoryTiming, bool]:
    """``matches`` of five conditions on one record that passes them all (none short-cut)."""
    et = BUILTIN["Opportunities"]
    owner, account, step = (str(uuid.uuid4()) for _ in range(3))
    record = opportunity_record(owner, account, step)
    conds = conditions(
        et,
        {
            "owner_id": owner,
            "name": "ROBOTICS",
            "modified": "2026-01-01T00:00:00Z",
            "value.base_value": "10000,50000",
            "primary_account_id": "",
        },
        {
            "name": "icontains",
            "modified": "gte",
            "value.base_value": "between",
            "primary_account_id": "not-null",
        },
    )
    passed = matches(record, conds)
    for _ in range(batch):  # warm up
        matches(record, conds)
    per_batch: list[float] = []
    deadline = time.perf_counter() + seconds
    done = 0
    while done < evaluations and time.perf_counter() < deadline:
        t0 = time.perf_counter_ns()
        for _ in range(batch):
            matches(record, conds)
        per_batch.append((time.perf_counter_ns() - t0) / batch / 1000)
        done += batch
    timing = MemoryTiming(statistics.median(per_batch), min(per_batch), done, len(conds))
    return timing, passed


# --- load -----------------------------------------------------------------------------------


Call = Callable[[aiohttp.ClientSession, int], Awaitable[None]]


async def _get(session: aiohttp.ClientSession, path: str, params: Mapping[str, str]) -> Any:
    async with session.get(path, params=dict(params)) as resp:
        raw = await resp.read()
    if resp.status != 200:
        raise BenchError(f"GET {path} {dict(params)} -> {resp.status}: {raw[:300]!r}")
    return orjson.loads(raw)


@dataclass
class FilteredList:
    """A page of 100 Accounts for one of the queries (taken in turn); checks the total."""

    queries: list[dict[str, str]]
    totals: list[int]

    async def __call__(self, session: aiohttp.ClientSession, i: int) -> None:
        k = i % len(self.queries)
        page = await _get(session, f"{ENTITIES}/Accounts", self.queries[k])
        want = self.totals[k]
        if page["total"] != want or len(page["data"]) != min(100, want):
            raise BenchError(f"{self.queries[k]}: {len(page['data'])} of {page['total']}")


@dataclass
class ContactsPage:
    """The first page of 100 Contacts, expanded or not; checks the expansion."""

    expand: str | None

    async def __call__(self, session: aiohttp.ClientSession, i: int) -> None:
        params = {"first": "100"}
        if self.expand:
            params["expand"] = self.expand
        page = await _get(session, f"{ENTITIES}/Contacts", params)
        data = page["data"]
        if len(data) != 100:
            raise BenchError(f"a page of {len(data)} contacts")
        if self.expand:
            for r in data:
                owner, account = r["owner"], r["primary_account"]
                if not isinstance(owner, dict) or owner["id"] != r["owner_id"]:
                    raise BenchError(f"contact {r['id']}: owner not expanded")
                if r["primary_account_id"] and not isinstance(account, dict):
                    raise BenchError(f"contact {r['id']}: primary_account not expanded")


async def timed(
    session: aiohttp.ClientSession,
    calls: list[Call],
    *,
    count: int,
    seconds: float,
    server_pid: int,
    warmup: int = 20,
) -> list[Sample]:
    """Each call ``count`` times from one client, the calls taken in turn (their order swapped
    every round), so that all of them see the same conditions; stops early after ``seconds``."""
    for i in range(warmup):
        for call in calls:
            await call(session, i)
    latencies: list[list[float]] = [[] for _ in calls]
    errors = [0] * len(calls)
    first_error: list[str | None] = [None] * len(calls)
    cpu = [0.0] * len(calls)
    started = time.perf_counter()
    deadline = started + seconds
    i = 0
    while i < count and time.perf_counter() < deadline:
        order = list(range(len(calls)))
        if i % 2:
            order.reverse()
        for k in order:
            cpu0 = process_cpu(server_pid)
            t0 = time.perf_counter()
            try:
                await calls[k](session, i)
            except (BenchError, aiohttp.ClientError) as e:
                errors[k] += 1
                first_error[k] = first_error[k] or repr(e)
                continue
            latencies[k].append(time.perf_counter() - t0)
            cpu[k] += process_cpu(server_pid) - cpu0
        i += 1
    elapsed = time.perf_counter() - started
    return [
        Sample(latencies[k], elapsed, errors[k], first_error[k], cpu[k], 0.0, float("nan"))
        for k in range(len(calls))
    ]


@dataclass
class BatchTiming:
    seconds: list[float]
    items: int
    errors: int = 0
    first_error: str | None = None

    @property
    def p50(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")


async def batch_modify(
    session: aiohttp.ClientSession, seeded: Seeded, items: int, runs: int, seconds: float
) -> BatchTiming:
    """``runs`` batches of ``items`` new Accounts (after one that is not counted)."""
    rng = random.Random(7)
    out = BatchTiming([], items)
    deadline = time.perf_counter() + seconds
    for run in range(runs + 1):
        if run and time.perf_counter() > deadline:
            break
        body = orjson.dumps(
            [
                {
                    "name": account_name(rng),
                    "owner_id": rng.choice(seeded.owners),
                    "email1": f"batch{run}.{i}@example.com",
                    "phone1": f"+420 {rng.randrange(100, 999)} {rng.randrange(100_000, 999_999)}",
                    "city": rng.choice(CITIES),
                    "country": rng.choice(COUNTRIES),
                }
                for i in range(items)
            ]
        )
        t0 = time.perf_counter()
        try:
            async with session.post(
                f"{ENTITIES}/Accounts/batch-modify",
                data=body,
                headers={"Content-Type": "application/json"},
            ) as resp:
                raw = await resp.read()
        except aiohttp.ClientError as e:
            out.errors += 1
            out.first_error = out.first_error or repr(e)
            continue
        took = time.perf_counter() - t0
        ok = resp.status == 200
        if ok:
            data = orjson.loads(raw)["data"]
            ok = len(data) == items and all(isinstance(x, str) for x in data)
        if not ok:
            out.errors += 1
            out.first_error = out.first_error or f"{resp.status}: {raw[:300]!r}"
        elif run:
            out.seconds.append(took)
    return out


# --- one engine -----------------------------------------------------------------------------


@dataclass
class Options:
    owners: int
    accounts: int
    contacts: int
    requests: int
    seconds: float
    batch_items: int
    batch_runs: int
    evaluations: int
    explain: bool
    sqlite_analyze: bool
    quiet_wait: float


@dataclass
class EngineRun:
    engine: str
    version: str
    seeded: Seeded | None = None
    samples: dict[str, Sample] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    sql: dict[str, SqlTiming] = field(default_factory=dict)
    memory: MemoryTiming | None = None
    batch: BatchTiming | None = None
    load: str = ""  # load averages when the engine's run ended
    background: float = float("nan")  # cores busy when the measurements started


def _list_queries(
    seeded: Seeded, owners: int = 20
) -> dict[str, tuple[list[dict[str, str]], list[int]]]:
    picked = random.Random(3).sample(seeded.owners, min(owners, len(seeded.owners)))
    by_owner = [{"filter[owner_id]": o, "first": "100"} for o in picked]
    return {
        "owner": (by_owner, [seeded.accounts_per_owner[o] for o in picked]),
        "icontains": (
            [{"filter[name]": COMMON_NEEDLE, "filter-op[name]": "icontains", "first": "100"}],
            [seeded.matching(COMMON_NEEDLE)],
        ),
        "icontains-rare": (
            [{"filter[name]": RARE_NEEDLE, "filter-op[name]": "icontains", "first": "100"}],
            [seeded.matching(RARE_NEEDLE)],
        ),
    }


async def measure(server: Server, db_url: str, run: EngineRun, opts: Options) -> None:
    pid = server.process.pid
    basic = base64.b64encode(f"{server.api_key}:{server.api_secret}".encode()).decode()
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(
        base_url=server.url,
        headers={"Authorization": f"Basic {basic}"},
        connector=aiohttp.TCPConnector(limit=1),
        timeout=timeout,
    ) as session:
        console.print(
            f"  {run.engine}: seeding {opts.owners} owners, {opts.accounts:,} accounts, "
            f"{opts.contacts:,} contacts ...",
            style="dim",
        )
        seeded = await asyncio.to_thread(
            seed,
            db_url,
            opts.owners,
            opts.accounts,
            opts.contacts,
            sqlite_analyze=opts.sqlite_analyze,
        )
        run.seeded = seeded
        if opts.quiet_wait > 0:
            console.print(
                f"  {run.engine}: waiting (at most {opts.quiet_wait:.0f} s) for a quiet machine",
                style="dim",
            )
            run.background = await asyncio.to_thread(wait_for_quiet, opts.quiet_wait)

        for name, (queries, totals) in _list_queries(seeded).items():
            console.print(f"  {run.engine}: {name} ...", style="dim")
            call = FilteredList(queries, totals)
            (run.samples[name],) = await timed(
                session, [call], count=opts.requests, seconds=opts.seconds, server_pid=pid
            )
            run.totals[name] = totals[0]
            run.sql[name] = await asyncio.to_thread(time_sql, db_url, "Accounts", queries[0], 15)

        console.print(f"  {run.engine}: contacts, plain and expanded ...", style="dim")
        plain, expanded = await timed(
            session,
            [ContactsPage(None), ContactsPage("primary_account,owner")],
            count=opts.requests,
            seconds=2 * opts.seconds,
            server_pid=pid,
        )
        run.samples["contacts"], run.samples["contacts-expanded"] = plain, expanded
        run.sql["contacts"] = await asyncio.to_thread(
            time_sql, db_url, "Contacts", {"first": "100"}, 15
        )

        console.print(f"  {run.engine}: batch-modify ...", style="dim")
        run.batch = await batch_modify(
            session, seeded, opts.batch_items, opts.batch_runs, 6 * opts.seconds
        )
    # In this process, with the server idle (and no connection left idle past its keep-alive).
    console.print(f"  {run.engine}: in-memory filter ...", style="dim")
    run.memory, passed = measure_memory(opts.evaluations, opts.seconds)
    if not passed:
        raise BenchError("the in-memory filter does not match its record")
    run.load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    for s in run.samples.values():
        if s.errors:
            console.print(f"  {s.errors} errors, first: {s.first_error}", style="red")
    if run.batch.errors:
        console.print(f"  batch errors, first: {run.batch.first_error}", style="red")
    if opts.explain:
        for name, t in run.sql.items():
            console.print(f"[bold]{run.engine} {name}[/] plan:\n{t.plan}")


def run_engine(engine: str, opts: Options, pg_url: str) -> EngineRun:
    workdir = Path(tempfile.mkdtemp(prefix=f"crmhooks-qbench-{engine}-"))
    try:
        if engine == "sqlite":
            stats = " + ANALYZE" if opts.sqlite_analyze else ""
            run = EngineRun(engine, f"SQLite {sqlite3.sqlite_version}{stats}")
            database = sqlite_database(workdir)
        else:
            run = EngineRun(engine, f"PostgreSQL {postgres_version(pg_url)}")
            database = postgres_database(pg_url)
        with database as db_url:
            console.print(f"[bold]{run.version}[/]: starting the server")
            server = start_server(db_url, workdir)
            try:
                asyncio.run(measure(server, db_url, run, opts))
            except BaseException:
                console.print(f"server output:\n{server.log.read_text(errors='replace')[-4000:]}")
                raise
            finally:
                stop_server(server.process)
        return run
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- report ---------------------------------------------------------------------------------


def _ms(v: float) -> str:
    return f"{v:.0f} ms" if v >= 100 else f"{v:.1f} ms" if v >= 10 else f"{v:.2f} ms"


@dataclass(frozen=True)
class Figure:
    label: str
    target: str
    show: Callable[[EngineRun], str]
    passed: Callable[[EngineRun], bool] | None = None


def _p50(run: EngineRun, name: str) -> float:
    return run.samples[name].ms(0.5)


def _latency(run: EngineRun, name: str) -> str:
    """p50, and the server's CPU time per request (what the latency is on an idle machine)."""
    sample = run.samples[name]
    return f"{_ms(sample.ms(0.5))} (server CPU {_ms(sample.server_ms_per_request)})"


def _ratio(run: EngineRun) -> float:
    return _p50(run, "contacts-expanded") / _p50(run, "contacts")


def _sql(run: EngineRun, name: str) -> str:
    t = run.sql[name]
    return f"{_ms(t.page_ms)} + {_ms(t.count_ms)}"


def _mem(run: EngineRun) -> float:
    assert run.memory is not None
    return run.memory.us_per_eval


def _best(run: EngineRun) -> float:
    assert run.memory is not None
    return run.memory.best_us


def _batch(run: EngineRun) -> BatchTiming:
    assert run.batch is not None
    return run.batch


def figures(runs: list[EngineRun], opts: Options) -> list[Figure]:
    """The rows of the report; query strings are in backticks (Markdown code)."""
    n = runs[0].totals if runs else {}
    of = f"of {opts.accounts:,}"
    return [
        Figure(
            f"Accounts `filter[owner_id]=<uuid>&first=100` (~{n.get('owner', 0)} {of}): p50",
            "< 10 ms",
            lambda r: _latency(r, "owner"),
            lambda r: _p50(r, "owner") < 10,
        ),
        Figure("  of which SQL: page + total", "", lambda r: _sql(r, "owner")),
        Figure(
            f"Accounts `filter[name]={COMMON_NEEDLE}&filter-op[name]=icontains&first=100` "
            f"({n.get('icontains', 0):,} {of}): p50",
            "< 100 ms",
            lambda r: _latency(r, "icontains"),
            lambda r: _p50(r, "icontains") < 100,
        ),
        Figure("  of which SQL: page + total", "", lambda r: _sql(r, "icontains")),
        Figure(
            f"the same with `{RARE_NEEDLE}` ({n.get('icontains-rare', 0)} {of}, fewer than a "
            "page): p50",
            "< 100 ms",
            lambda r: _latency(r, "icontains-rare"),
            lambda r: _p50(r, "icontains-rare") < 100,
        ),
        Figure("  of which SQL: page + total", "", lambda r: _sql(r, "icontains-rare")),
        Figure(
            f"Contacts `first=100` (of {opts.contacts:,}): p50",
            "",
            lambda r: _latency(r, "contacts"),
        ),
        Figure("  of which SQL: page + total", "", lambda r: _sql(r, "contacts")),
        Figure(
            "Contacts `first=100&expand=primary_account,owner`, same run: p50",
            "",
            lambda r: _latency(r, "contacts-expanded"),
        ),
        Figure(
            "  expanded / plain",
            "< 2x",
            lambda r: f"{_ratio(r):.2f}x",
            lambda r: _ratio(r) < 2,
        ),
        Figure(
            "memory.matches, 5 clauses, all evaluated: per evaluation, p50",
            "< 20 µs",
            lambda r: f"{_mem(r):.1f} µs (best batch {_best(r):.1f})",
            lambda r: _mem(r) < 20,
        ),
        Figure(
            f"`POST /entities/Accounts/batch-modify`, {opts.batch_items:,} new Accounts: "
            "p50 (min-max)",
            "< 1 s",
            lambda r: (
                f"{_batch(r).p50:.2f} s ({min(_batch(r).seconds):.2f}-{max(_batch(r).seconds):.2f})"
                if _batch(r).seconds
                else "failed"
            ),
            lambda r: _batch(r).p50 < 1,
        ),
    ]


def _cell(f: Figure, run: EngineRun) -> str:
    value = f.show(run)
    if f.passed is None:
        return value
    return f"{value} ({'met' if f.passed(run) else 'MISSED'})"


def print_table(runs: list[EngineRun], opts: Options) -> None:
    table = Table(title="crmhooks query layer (one server process, one client over loopback)")
    table.add_column("Figure")
    table.add_column("Target")
    for run in runs:
        table.add_column(run.version, justify="right")
    for f in figures(runs, opts):
        cells = []
        for run in runs:
            cell = _cell(f, run)
            if f.passed is not None:
                cell = f"[{'green' if f.passed(run) else 'red'}]{cell}[/]"
            cells.append(cell)
        table.add_row(escape(f.label), f.target, *cells)
    console.print(table)
    for line in _counts(runs):
        console.print(line)


def _counts(runs: list[EngineRun]) -> list[str]:
    lines = []
    for run in runs:
        s = run.samples
        errors = sum(x.errors for x in s.values()) + (run.batch.errors if run.batch else 0)
        seeded = run.seeded
        lines.append(
            f"- {run.version}: {s['owner'].count} + {s['icontains'].count} + "
            f"{s['icontains-rare'].count} filtered pages, {s['contacts'].count} plain and "
            f"{s['contacts-expanded'].count} expanded Contacts pages, "
            f"{run.memory.evaluations if run.memory else 0:,} in-memory evaluations, "
            f"batches: {len(run.batch.seconds) if run.batch else 0} (after one not counted); "
            f"{errors} failed; "
            + (f"seeded in {seeded.seconds:.0f} s; " if seeded else "not seeded; ")
            + f"{run.background:.1f} cores busy when measuring began, "
            + f"load average {run.load} at the end."
        )
    return lines


def markdown_block(runs: list[EngineRun], opts: Options, command: str) -> str:
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}: a shared virtual "
        f"machine with noisy neighbours, where the server, the database and the client share "
        f"the same {os.cpu_count()} cores (load average {load} when the run ended). Latencies "
        "are end to end from one client over loopback (HTTP, authentication, SQL, rendering, "
        "JSON); the SQL rows time the page statement and the total on their own.",
        "",
        *reproduce(command),
        "| Figure | Target | " + " | ".join(r.version for r in runs) + " |",
        "| --- | --- |" + " --- |" * len(runs),
    ]
    for f in figures(runs, opts):
        label = f.label.replace("  ", "&nbsp;&nbsp;", 1) if f.label.startswith("  ") else f.label
        cells = " | ".join(_cell(f, r) for r in runs)
        lines.append(f"| {label} | {f.target} | {cells} |")
    lines += ["", *_counts(runs)]
    return "\n".join(lines)


BEGIN, END = "<!-- query_speed: figures -->", "<!-- /query_speed: figures -->"


def write_docs(path: Path, block: str) -> None:
    replace_figures(path, block, HEADING, BEGIN, END)


# --- command line ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    assert __doc__ is not None
    p = argparse.ArgumentParser(
        prog="python -m bench.query_speed", description=__doc__.split("\n")[0]
    )
    p.add_argument("--engine", choices=("sqlite", "postgresql", "both"), default="both")
    p.add_argument("--owners", type=int, default=300, help="Clients that own the records")
    p.add_argument("--accounts", type=int, default=100_000)
    p.add_argument("--contacts", type=int, default=100_000)
    p.add_argument("--requests", type=int, default=200, help="count bound of each list phase")
    p.add_argument("--seconds", type=float, default=10.0, help="time bound of each phase")
    p.add_argument("--batch-items", type=int, default=1000)
    p.add_argument("--batch-runs", type=int, default=5)
    p.add_argument("--evaluations", type=int, default=500_000, help="in-memory evaluations")
    p.add_argument("--explain", action="store_true", help="print the query plans")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="seconds to wait, at most, for an idle machine before measuring (0: do not wait)",
    )
    p.add_argument(
        "--sqlite-analyze",
        action="store_true",
        help=(
            "give SQLite statistics (ANALYZE) after seeding, as a running server does at start"
            " and every 10 minutes (PRAGMA optimize)"
        ),
    )
    p.add_argument(
        "--postgres-url",
        default=os.environ.get("CRMHOOKS_BENCH_POSTGRES_URL", DEFAULT_PG),
        help="a database to create (and drop) a schema of its own in",
    )
    p.add_argument("--docs", type=Path, default=DOCS, help="markdown file to update")
    p.add_argument("--no-docs", action="store_true", help="print only")
    args = p.parse_args(argv)
    opts = Options(
        owners=args.owners,
        accounts=args.accounts,
        contacts=args.contacts,
        requests=args.requests,
        seconds=args.seconds,
        batch_items=args.batch_items,
        batch_runs=args.batch_runs,
        evaluations=args.evaluations,
        explain=args.explain,
        sqlite_analyze=args.sqlite_analyze,
        quiet_wait=args.quiet_wait,
    )
    engines = ["sqlite", "postgresql"] if args.engine == "both" else [args.engine]
    # A plain ``kill`` still stops the server and drops the PostgreSQL schema (finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    runs = [run_engine(e, opts, args.postgres_url) for e in engines]
    print_table(runs, opts)
    if not args.no_docs:
        shown = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--no-docs"]
        command = " ".join([".venv/bin/python -m bench.query_speed", *shown])
        write_docs(args.docs, markdown_block(runs, opts, command))
        console.print(f"updated {args.docs}")


if __name__ == "__main__":
    main()
