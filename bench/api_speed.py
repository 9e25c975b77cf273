"""Speed of one ``crmhooks serve`` process: create throughput, read-by-id and list latency.

The server runs in a subprocess on a fresh database; the load comes from this process (aiohttp,
one connection pool, loopback only). Per engine:

1. create: single-record ``POST /entities/Accounts`` from 16 concurrent clients (records/s);
2. the ``accounts`` table is filled up to ``--accounts`` rows with a direct bulk insert;
3. read by id: ``GET /entities/Accounts/{id}`` of random stored ids, one client (p50), then
   16 clients (requests/s);
4. list: ``GET /entities/Accounts?first=100&order-by=modified`` and ``-modified``, one client
   (p50), the next page through ``after``, then 16 clients.

Run ``python -m bench.api_speed --engine both``; the figures are printed and written to
``docs/benchmarks.md`` (``--no-docs`` to skip). Every phase is bounded by a request count and by
``--seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import platform
import random
import re
import resource
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, func, insert, select, text

from crmhooks.schema.registry import BUILTIN
from crmhooks.store.engine import sync_url
from crmhooks.store.records import to_columns
from crmhooks.store.tables import table_for

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
DEFAULT_PG = "postgresql://root@127.0.0.1:5432/test"
API = "/api/v100/rest/spaces/default/entities/Accounts"
SECTION = "## API speed: create, read by id, list (`bench/api_speed.py`)"
HOST = "127.0.0.1"

console = Console(width=None if sys.stdout.isatty() else 120)


class BenchError(Exception):
    """The server answered something other than what the benchmark expects."""


# --- the server under test ------------------------------------------------------------------


@dataclass
class Server:
    url: str
    api_key: str
    api_secret: str
    process: subprocess.Popen[bytes]
    log: Path


async def api_user(
    session: aiohttp.ClientSession, base: str = API, headers: dict[str, str] | None = None
) -> str:
    """The id of the space's API user (its one Client): the owner every create names, as
    Pipeliner requires of Accounts. ``base`` is any entity route of the space."""
    clients = base.rsplit("/", 1)[0] + "/Clients?first=1"
    async with session.get(clients, headers=headers) as resp:
        resp.raise_for_status()
        body = orjson.loads(await resp.read())
    return str(body["data"][0]["id"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_server(
    db_url: str,
    workdir: Path,
    timeout: float = 60.0,
    *,
    args: Sequence[str] = (),
    credentials: tuple[str, str] | None = None,
) -> Server:
    """``crmhooks serve [args]``, ready to answer.

    On a fresh database the key is the one the server printed; on one that has its space
    already, pass the ``credentials`` issued before.
    """
    port = _free_port()
    log = workdir / f"serve-{port}.log"
    env = {**os.environ, "CRMHOOKS_DATABASE_URL": db_url, "CRMHOOKS_LOG_LEVEL": "warning"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                *("-m", "crmhooks", "serve", "--host", HOST, "--port", str(port), *args),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        printed = log.read_text(errors="replace")
        key = re.search(r"api key\s+(\S+)", printed)
        secret = re.search(r"api secret\s+(\S+)", printed)
        found = (key.group(1), secret.group(1)) if key and secret else credentials
        if found and "listening on" in printed:
            try:
                with urllib.request.urlopen(url + "/openapi.json", timeout=2) as r:
                    r.read()
                return Server(url, found[0], found[1], proc, log)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
        time.sleep(0.1)
    stop_server(proc)
    raise RuntimeError(f"server did not start:\n{log.read_text(errors='replace')}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from ``/proc``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from ``/proc/stat``."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return float("nan"), float("nan")
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


def wait_for_quiet(max_wait: float, threshold: float = 0.3) -> float:
    """Wait (at most ``max_wait`` s) until the machine is nearly idle; the cores busy at the end.

    On a shared machine other work steals CPU from the server and the client alike; the figures
    mean most when the run starts on a quiet machine, and the background is reported with them.
    """
    deadline = time.monotonic() + max_wait
    while True:
        busy0, total0 = machine_cpu()
        time.sleep(1.0)
        busy1, total1 = machine_cpu()
        cores = (os.cpu_count() or 1) * (busy1 - busy0) / max(total1 - total0, 1e-9)
        if cores < threshold or time.monotonic() >= deadline:
            return cores


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- databases ------------------------------------------------------------------------------


def _with_schema(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


@contextmanager
def sqlite_database(workdir: Path) -> Iterator[str]:
    yield f"sqlite:///{workdir / 'bench.db'}"


@contextmanager
def postgres_database(base_url: str) -> Iterator[str]:
    """A schema of its own in the given database, dropped at the end whatever happens."""
    schema = f"crmhooks_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(sync_url(base_url))
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            yield _with_schema(base_url, schema)
        finally:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


def postgres_version(base_url: str) -> str:
    engine = create_engine(sync_url(base_url))
    try:
        with engine.connect() as conn:
            raw = str(conn.execute(text("SHOW server_version")).scalar_one())
    finally:
        engine.dispose()
    return raw.split()[0]


def seed_accounts(db_url: str, total: int, chunk: int = 5000) -> tuple[int, float]:
    """Fill ``accounts`` up to ``total`` rows with the values a create through the API writes.

    The rows are older than the ones already there (``created``/``modified`` one millisecond
    apart, ending a minute before the first existing one). Returns (rows added, seconds).
    """
    et = BUILTIN["Accounts"]
    t = table_for(et.table)
    defaults = {f.name: f.default for f in et.fields if not f.read_only and f.default is not None}
    engine = create_engine(sync_url(db_url))
    started = time.perf_counter()
    try:
        with engine.begin() as conn:
            have = int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            oldest = conn.execute(select(func.min(t.c.created))).scalar_one()
        missing = max(0, total - have)
        end = (oldest or datetime.now(UTC)).replace(tzinfo=UTC) - timedelta(minutes=1)
        start = end - timedelta(milliseconds=missing)
        for first in range(0, missing, chunk):
            rows: list[dict[str, Any]] = []
            for i in range(first, min(first + chunk, missing)):
                at = start + timedelta(milliseconds=i)
                stored = {"name": f"Seeded account {i}", **defaults}
                rows.append(
                    {
                        "id": str(uuid.uuid4()),
                        "space_id": "default",
                        "created": at,
                        "modified": at,
                        "is_deleted": False,
                        "revision": 1,
                        **to_columns(et, stored, {}),
                    }
                )
            with engine.begin() as conn:
                conn.execute(insert(t), rows)
        if engine.dialect.name == "postgresql":
            # What autovacuum does on its own within a minute or so of a bulk load.
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text(f"VACUUM ANALYZE {t.name}"))
    finally:
        engine.dispose()
    return missing, time.perf_counter() - started


def some_ids(db_url: str, n: int) -> list[str]:
    t = table_for("accounts")
    engine = create_engine(sync_url(db_url))
    try:
        with engine.connect() as conn:
            ids = [str(r[0]) for r in conn.execute(select(t.c.id))]
    finally:
        engine.dispose()
    return random.sample(ids, min(n, len(ids)))


# --- load -----------------------------------------------------------------------------------


Call = Callable[[aiohttp.ClientSession, int], Awaitable[None]]


@dataclass
class Sample:
    """One phase: latencies of the requests that succeeded, wall time, CPU on both sides."""

    latencies: list[float]
    elapsed: float
    errors: int
    first_error: str | None
    server_cpu: float
    client_cpu: float
    machine_busy: float  # CPU seconds used by everything on the machine during the phase

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.count / self.elapsed if self.elapsed else 0.0

    def ms(self, q: float) -> float:
        """The ``q`` quantile of latency, in milliseconds (nearest rank)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def server_ms_per_request(self) -> float:
        total = self.count + self.errors
        return 1000 * self.server_cpu / total if total else float("nan")

    @property
    def machine_cores(self) -> float:
        """Cores busy on average during the phase (server, client, database, neighbours)."""
        return self.machine_busy / self.elapsed if self.elapsed else float("nan")

    @property
    def client_ms_per_request(self) -> float:
        total = self.count + self.errors
        return 1000 * self.client_cpu / total if total else float("nan")


async def run_load(
    session: aiohttp.ClientSession,
    call: Call,
    *,
    concurrency: int,
    count: int,
    seconds: float,
    server_pid: int,
    warmup: int = 50,
) -> Sample:
    """``call`` ``count`` times from ``concurrency`` workers, stopping early after ``seconds``."""
    for i in range(warmup):
        await call(session, -1 - i)
    latencies: list[float] = []
    errors = 0
    first_error: str | None = None
    issued = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal issued, errors, first_error
        while issued < count and time.perf_counter() < deadline:
            i = issued
            issued += 1
            t0 = time.perf_counter()
            try:
                await call(session, i)
            except (BenchError, aiohttp.ClientError) as e:
                errors += 1
                first_error = first_error or repr(e)
                continue
            latencies.append(time.perf_counter() - t0)

    cpu0, own0, (busy0, _) = process_cpu(server_pid), own_cpu(), machine_cpu()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    return Sample(
        latencies,
        elapsed,
        errors,
        first_error,
        process_cpu(server_pid) - cpu0,
        own_cpu() - own0,
        machine_cpu()[0] - busy0,
    )


async def _body(resp: aiohttp.ClientResponse, status: int) -> bytes:
    raw = await resp.read()
    if resp.status != status:
        raise BenchError(f"{resp.method} {resp.url} -> {resp.status}: {raw[:300]!r}")
    return raw


@dataclass
class Creates:
    """``POST /entities/Accounts`` with a small realistic body; keeps the ids it got."""

    owner: str
    ids: list[str] = field(default_factory=list)

    async def __call__(self, session: aiohttp.ClientSession, i: int) -> None:
        body = orjson.dumps(
            {
                "name": f"Bench account {i}",
                "owner_id": self.owner,
                "email1": f"a{i}@example.com",
                "city": "Oslo",
            }
        )
        async with session.post(
            API, data=body, headers={"Content-Type": "application/json"}
        ) as resp:
            raw = await _body(resp, 201)
        self.ids.append(orjson.loads(raw)["data"]["id"])


@dataclass
class Reads:
    ids: list[str]

    async def __call__(self, session: aiohttp.ClientSession, i: int) -> None:
        record_id = self.ids[i % len(self.ids)]
        async with session.get(f"{API}/{record_id}") as resp:
            raw = await _body(resp, 200)
        if orjson.loads(raw)["data"]["id"] != record_id:
            raise BenchError(f"read {record_id} answered another record")


@dataclass
class Lists:
    """A page of 100 in the given orders (taken in turn), optionally after a cursor."""

    orders: tuple[str, ...]
    expect_total: int
    after: dict[str, str] = field(default_factory=dict)

    async def __call__(self, session: aiohttp.ClientSession, i: int) -> None:
        order = self.orders[i % len(self.orders)]
        params = {"first": "100", "order-by": order}
        if order in self.after:
            params["after"] = self.after[order]
        async with session.get(API, params=params) as resp:
            raw = await _body(resp, 200)
        page = orjson.loads(raw)
        if len(page["data"]) != 100 or page["total"] != self.expect_total:
            raise BenchError(f"page of {len(page['data'])}, total {page['total']}")


async def end_cursor(session: aiohttp.ClientSession, order: str) -> str:
    async with session.get(API, params={"first": "100", "order-by": order}) as resp:
        page = orjson.loads(await _body(resp, 200))
    cursor: str = page["page_info"]["end_cursor"]
    return cursor


# --- one engine -----------------------------------------------------------------------------


@dataclass
class Options:
    accounts: int
    concurrency: int
    seconds: float
    creates: int
    quiet_wait: float = 60.0


@dataclass
class EngineRun:
    engine: str
    version: str
    seeded: int = 0
    seed_seconds: float = 0.0
    background: float = float("nan")  # cores busy on the machine just before the run
    phases: dict[str, Sample] = field(default_factory=dict)


async def measure(
    server: Server, db_url: str, run: EngineRun, opts: Options, *, only_create: str | None = None
) -> None:
    """Every phase, in order; with ``only_create``, just a create phase of that name."""
    pid = server.process.pid
    basic = base64.b64encode(f"{server.api_key}:{server.api_secret}".encode()).decode()
    headers = {"Authorization": f"Basic {basic}"}
    connector = aiohttp.TCPConnector(limit=opts.concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        base_url=server.url, headers=headers, connector=connector, timeout=timeout
    ) as session:

        async def phase(name: str, call: Call, concurrency: int, count: int) -> None:
            console.print(f"  {run.engine}: {name} ...", style="dim")
            sample = await run_load(
                session,
                call,
                concurrency=concurrency,
                count=count,
                seconds=opts.seconds,
                server_pid=pid,
            )
            if sample.errors:
                console.print(f"  {sample.errors} errors, first: {sample.first_error}", style="red")
            run.phases[name] = sample

        creates = Creates(await api_user(session))
        if only_create is not None:
            await phase(only_create, creates, opts.concurrency, opts.creates)
            return
        await phase("create", creates, opts.concurrency, opts.creates)

        console.print(f"  {run.engine}: seeding accounts up to {opts.accounts:,} ...", style="dim")
        run.seeded, run.seed_seconds = await asyncio.to_thread(seed_accounts, db_url, opts.accounts)
        total = await asyncio.to_thread(_count_accounts, db_url)

        reads = Reads(await asyncio.to_thread(some_ids, db_url, 5000))
        await phase("read", reads, 1, 3000)
        await phase("read16", reads, opts.concurrency, 20_000)

        await phase("list+", Lists(("modified",), total), 1, 500)
        await phase("list-", Lists(("-modified",), total), 1, 500)
        after = {o: await end_cursor(session, o) for o in ("modified", "-modified")}
        await phase("list-after", Lists(("modified", "-modified"), total, after), 1, 500)
        await phase("list16", Lists(("modified", "-modified"), total), opts.concurrency, 3000)


def _count_accounts(db_url: str) -> int:
    t = table_for("accounts")
    engine = create_engine(sync_url(db_url))
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(t).where(t.c.is_deleted.is_(False))
                ).scalar_one()
            )
    finally:
        engine.dispose()


@contextmanager
def _server_log_on_error(server: Server) -> Iterator[None]:
    """Stop the server at the end; on an error, show what it printed first."""
    try:
        yield
    except BaseException:
        console.print(f"server output:\n{server.log.read_text(errors='replace')[-4000:]}")
        raise
    finally:
        stop_server(server.process)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop for the client too when it is there: less of the shared CPU goes to the load."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_engine(engine: str, opts: Options, pg_url: str) -> EngineRun:
    workdir = Path(tempfile.mkdtemp(prefix=f"crmhooks-bench-{engine}-"))
    try:
        if engine == "sqlite":
            run = EngineRun(engine, f"SQLite {sqlite3.sqlite_version}")
            database = sqlite_database(workdir)
        else:
            run = EngineRun(engine, f"PostgreSQL {postgres_version(pg_url)}")
            database = postgres_database(pg_url)
        with database as db_url:
            console.print(f"[bold]{run.version}[/]: starting the server")
            server = start_server(db_url, workdir)
            with _server_log_on_error(server):
                if opts.quiet_wait > 0:
                    console.print(
                        f"  waiting (at most {opts.quiet_wait:.0f} s) for a quiet machine"
                    )
                run.background = wait_for_quiet(opts.quiet_wait)
                with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                    runner.run(measure(server, db_url, run, opts))
            # The same creates with webhook delivery out of the process: what it costs.
            credentials = (server.api_key, server.api_secret)
            console.print(f"[bold]{run.version}[/]: serve --no-delivery")
            server = start_server(db_url, workdir, args=["--no-delivery"], credentials=credentials)
            with _server_log_on_error(server), asyncio.Runner(loop_factory=_loop_factory()) as r:
                r.run(measure(server, db_url, run, opts, only_create="create-nd"))
        return run
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- report ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    label: str
    target: str
    show: Callable[[EngineRun], str]
    passed: Callable[[EngineRun], bool] | None = None


def _ms(v: float) -> str:
    return f"{v:.1f} ms" if v >= 10 else f"{v:.2f} ms"


def _phase(run: EngineRun, name: str) -> Sample:
    return run.phases[name]


def figures(opts: Options) -> list[Figure]:
    c = opts.concurrency
    n = f"{opts.accounts:,}"
    return [
        Figure(
            f"create, {c} clients: records/s",
            ">= 1,000",
            lambda r: f"{_phase(r, 'create').rate:,.0f}",
            lambda r: _phase(r, "create").rate >= 1000,
        ),
        Figure(
            f"create, {c} clients, `serve --no-delivery`: records/s",
            "",
            lambda r: f"{_phase(r, 'create-nd').rate:,.0f}",
        ),
        Figure(
            f"create, {c} clients: latency p50 / p99",
            "",
            lambda r: f"{_ms(_phase(r, 'create').ms(0.5))} / {_ms(_phase(r, 'create').ms(0.99))}",
        ),
        Figure(
            "read by id, 1 client: p50",
            "< 2 ms",
            lambda r: _ms(_phase(r, "read").ms(0.5)),
            lambda r: _phase(r, "read").ms(0.5) < 2,
        ),
        Figure("read by id, 1 client: p99", "", lambda r: _ms(_phase(r, "read").ms(0.99))),
        Figure(
            f"read by id, {c} clients: requests/s (p50)",
            "",
            lambda r: f"{_phase(r, 'read16').rate:,.0f} ({_ms(_phase(r, 'read16').ms(0.5))})",
        ),
        Figure(
            f"list 100 of {n}, order-by=modified, 1 client: p50",
            "< 20 ms",
            lambda r: _ms(_phase(r, "list+").ms(0.5)),
            lambda r: _phase(r, "list+").ms(0.5) < 20,
        ),
        Figure(
            f"list 100 of {n}, order-by=-modified, 1 client: p50",
            "< 20 ms",
            lambda r: _ms(_phase(r, "list-").ms(0.5)),
            lambda r: _phase(r, "list-").ms(0.5) < 20,
        ),
        Figure(
            "next page (after=cursor), both orders, 1 client: p50",
            "",
            lambda r: _ms(_phase(r, "list-after").ms(0.5)),
        ),
        Figure(
            f"list, {c} clients: pages/s (p50)",
            "",
            lambda r: f"{_phase(r, 'list16').rate:,.0f} ({_ms(_phase(r, 'list16').ms(0.5))})",
        ),
        Figure(
            "server CPU per request: create / create --no-delivery / read / list",
            "",
            lambda r: " / ".join(
                _ms(_phase(r, p).server_ms_per_request)
                for p in ("create", "create-nd", "read", "list+")
            ),
        ),
        Figure(
            f"machine cores busy: before the run / during create, {c} clients",
            "",
            lambda r: f"{r.background:.2f} / {_phase(r, 'create').machine_cores:.2f}",
        ),
    ]


def _cell(f: Figure, run: EngineRun) -> str:
    value = f.show(run)
    if f.passed is None:
        return value
    return f"{value} ({'met' if f.passed(run) else 'MISSED'})"


def print_table(runs: list[EngineRun], opts: Options) -> None:
    table = Table(title="crmhooks API speed (one server process, load from a second process)")
    table.add_column("Figure")
    table.add_column("Target")
    for run in runs:
        table.add_column(run.version, justify="right")
    for f in figures(opts):
        cells = []
        for run in runs:
            cell = _cell(f, run)
            if f.passed is not None:
                cell = f"[{'green' if f.passed(run) else 'red'}]{cell}[/]"
            cells.append(cell)
        table.add_row(f.label, f.target, *cells)
    console.print(table)
    for run in runs:
        errors = sum(s.errors for s in run.phases.values())
        console.print(
            f"{run.version}: seeded {run.seeded:,} rows in {run.seed_seconds:.1f} s; "
            f"{errors} failed requests; client CPU per create "
            f"{_ms(run.phases['create'].client_ms_per_request)}"
        )


def reproduce(command: str) -> list[str]:
    """The lines of a benchmark's docs section that give the command its figures came from."""
    return ["Reproduce with:", "", "```", command, "```", ""]


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{os.cpu_count()} vCPU ({model}){mem}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def markdown_block(runs: list[EngineRun], opts: Options, command: str) -> str:
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}: a shared virtual "
        f"machine with noisy neighbours, where the server, the database and the load generator "
        f"share the same {os.cpu_count()} cores (load average {load} when the run ended). "
        "Expect figures to move by 10-30% from run to run, more when other work runs.",
        "",
        "Latency targets (p50) are measured with one client, one request at a time: with "
        f"{opts.concurrency} clients on {os.cpu_count()} shared cores a request mostly waits "
        "behind the others, so the loaded phases are reported as throughput (their p50 is "
        "shown in brackets). Server CPU is the `crmhooks serve` process's user + system time "
        "(all its threads) divided by the requests of the phase.",
        "",
        *reproduce(command),
        "| Figure | Target | " + " | ".join(r.version for r in runs) + " |",
        "| --- | --- |" + " --- |" * len(runs),
    ]
    for f in figures(opts):
        cells = " | ".join(_cell(f, r) for r in runs)
        lines.append(f"| {f.label} | {f.target} | {cells} |")
    lines.append("")
    for run in runs:
        count = {k: s.count for k, s in run.phases.items()}
        errors = sum(s.errors for s in run.phases.values())
        lines.append(
            f"- {run.version}: {count['create']:,} + {count['create-nd']:,} creates, "
            f"{count['read']:,} + "
            f"{count['read16']:,} reads, {count['list+'] + count['list-']:,} + "
            f"{count['list-after']:,} + {count['list16']:,} list pages; {errors} failed; "
            f"{run.seeded:,} rows seeded in {run.seed_seconds:.1f} s."
        )
    return "\n".join(lines)


BEGIN, END = "<!-- api_speed: figures -->", "<!-- /api_speed: figures -->"


def replace_figures(path: Path, block: str, section: str, begin: str, end: str) -> None:
    """Replace a benchmark's generated figures between ``begin`` and ``end``, adding its
    ``section`` heading and the markers at the end of the file if they are missing. The file is
    read right before it is written, and nothing outside the markers changes."""
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    if begin not in current or end not in current:
        current = f"{current.rstrip()}\n\n{section}\n\n{begin}\n{end}\n"
    head, rest = current.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{head}{begin}\n{block}\n{end}{tail}")


def write_docs(path: Path, block: str) -> None:
    replace_figures(path, block, SECTION, BEGIN, END)


# --- command line ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.api_speed", description=__doc__.split("\n")[0]
    )
    p.add_argument("--engine", choices=("sqlite", "postgresql", "both"), default="both")
    p.add_argument("--accounts", type=int, default=100_000, help="accounts stored for list")
    p.add_argument("--concurrency", type=int, default=16, help="clients in the loaded phases")
    p.add_argument("--seconds", type=float, default=10.0, help="time bound of each phase")
    p.add_argument("--creates", type=int, default=20_000, help="count bound of the create phase")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="seconds to wait at most for an idle machine before each engine (0: do not wait)",
    )
    p.add_argument(
        "--postgres-url",
        default=os.environ.get("CRMHOOKS_BENCH_POSTGRES_URL", DEFAULT_PG),
        help="a database to create (and drop) a schema of its own in",
    )
    p.add_argument("--docs", type=Path, default=DOCS, help="markdown file to update")
    p.add_argument("--no-docs", action="store_true", help="print only")
    args = p.parse_args(argv)
    opts = Options(args.accounts, args.concurrency, args.seconds, args.creates, args.quiet_wait)
    engines = ["sqlite", "postgresql"] if args.engine == "both" else [args.engine]
    runs = [run_engine(e, opts, args.postgres_url) for e in engines]
    print_table(runs, opts)
    if not args.no_docs:
        shown = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--no-docs"]
        command = " ".join([".venv/bin/python -m bench.api_speed", *shown])
        write_docs(args.docs, markdown_block(runs, opts, command))
        console.print(f"updated {args.docs}")


if __name__ == "__main__":
    main()
