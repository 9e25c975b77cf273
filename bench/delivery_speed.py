"""Speed of webhook delivery: throughput against a measured ceiling, latency, many webhooks.

Every phase runs ``crmhooks serve`` on a fresh SQLite file in a subprocess, and a minimal
receiver in a second subprocess (aiohttp, answers 200 at once, counts requests and events and
keeps arrival times; this module's ``receive`` command). Loopback only.

1. ``chunk_size`` 1 and 100, events already stored: the webhook is registered and the records
   written (batch-modify of creates) with ``CRMHOOKS_DELIVERY=false`` (for 100, those events
   are then copied in SQL up to ``--events-100``); ``serve`` is restarted with delivery on and
   timed from its first answer to the last event received. The ceiling is a bare aiohttp client
   (one session, as many requests in flight as the dispatcher's per-webhook limit) posting the
   very bodies the dispatcher sent (read back from ``deliveries``) to the same receiver.
2. latency: single ``POST /entities/Accounts`` paced at a fixed rate, delivery on; each arrival
   is matched to its write by the entity id (both processes read the same clock).
3. many webhooks: in this process, ``Router.step`` over the same stored events with 10 and with
   10,000 registered webhooks (one matches; the others listen to other events or live in other
   spaces): all stored events in one step, then one event per step followed by the claim of
   what it made (``Dispatcher.claim_once``, sending stubbed out), as live traffic is handled.
   The claim's CPU counts the stubbed sends and the outcomes the claim records in its
   transaction (those of the step before).

Run ``python -m bench.delivery_speed``; the figures are printed and written to the "Webhook
delivery" section of ``docs/benchmarks.md`` (``--no-docs`` to skip).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, delete, insert, select

from bench.api_speed import (
    api_user,
    machine,
    machine_cpu,
    replace_figures,
    reproduce,
    stop_server,
    wait_for_quiet,
)
from bench.end_to_end import tree_cpu
from crmhooks import logs
from crmhooks.delivery.dispatcher import Dispatcher, DispatchSettings
from crmhooks.delivery.model import SendResult
from crmhooks.delivery.queue import SqlQueue
from crmhooks.delivery.retry import DEFAULT_SCHEDULE
from crmhooks.delivery.router import ROUTER, Router
from crmhooks.delivery.sender import HttpSender
from crmhooks.delivery.signing import USER_AGENT
from crmhooks.hooks.names import EVENT_NAMES
from crmhooks.hooks.subscription import Subscription
from crmhooks.limits import Limits
from crmhooks.netguard import Guard, parse_allowed
from crmhooks.schema.registry import WEBHOOKS
from crmhooks.store.engine import open_database, sync_url
from crmhooks.store.records import table_of
from crmhooks.store.tables import deliveries, dispatch_state, events

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
HEADING = "## Webhook delivery"
BEGIN, END = "<!-- delivery_speed: figures -->", "<!-- /delivery_speed: figures -->"
HOST = "127.0.0.1"
SPACE = "default"
ACCOUNTS = f"/api/v100/rest/spaces/{SPACE}/entities/Accounts"
WEBHOOKS_PATH = f"/api/v100/rest/spaces/{SPACE}/entities/Webhooks"
HOOK = "/hook"
PER_WEBHOOK = int(os.environ.get("CRMHOOKS_MAX_IN_FLIGHT_PER_WEBHOOK", "16"))

console = Console(width=None if sys.stdout.isatty() else 120)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# --- the receiver (a process of its own) ----------------------------------------------------


@dataclass
class Inbox:
    """What the receiver has seen since the last reset."""

    requests: int = 0
    events: int = 0
    ids: set[str] = field(default_factory=set)
    first: float | None = None
    last: float | None = None
    track: bool = False
    arrivals: list[tuple[str, float]] = field(default_factory=list)  # (entity id, time)


def receiver_app() -> web.Application:
    box = Inbox()

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        items = orjson.loads(body)
        box.requests += 1
        box.events += len(items)
        box.ids.update(item["id"] for item in items)
        if box.first is None:
            box.first = now
        box.last = now
        if box.track:
            box.arrivals.extend((item["entity"]["id"], now) for item in items)
        return web.Response(status=200)

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": box.requests,
                "events": box.events,
                "distinct": len(box.ids),
                "first": box.first,
                "last": box.last,
            },
            dumps=lambda v: orjson.dumps(v).decode(),
        )

    async def arrivals(_: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(box.arrivals), content_type="application/json")

    async def reset(request: web.Request) -> web.Response:
        nonlocal box
        box = Inbox(track=request.query.get("track") == "1")
        return web.Response(status=204)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post(HOOK, hook)
    app.router.add_get("/stats", stats)
    app.router.add_get("/arrivals", arrivals)
    app.router.add_post("/reset", reset)
    return app


async def _serve_receiver(port: int) -> None:
    runner = web.AppRunner(receiver_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, port, backlog=1024).start()
    await asyncio.Event().wait()


def run_receiver(port: int) -> None:
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve_receiver(port))


@dataclass
class Receiver:
    url: str
    process: subprocess.Popen[bytes]

    @property
    def hook(self) -> str:
        return self.url + HOOK


def start_receiver() -> Receiver:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.delivery_speed", "receive", "--port", str(port)],
        cwd=ROOT,
    )
    return Receiver(wait_answering(port, proc, "the receiver"), proc)


def wait_answering(port: int, proc: subprocess.Popen[bytes], what: str) -> str:
    """The process's URL once ``GET /stats`` answers; stopped and an error if it never does."""
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url + "/stats", timeout=2) as r:
                r.read()
            return url
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)
    stop_server(proc)
    raise RuntimeError(f"{what} did not start")


# --- the server under test ------------------------------------------------------------------


@dataclass
class Serve:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    spawned: float  # time.time() of the spawn
    ready: float  # time.time() of its first answer


@dataclass
class Key:
    key: str = ""
    secret: str = ""

    def headers(self) -> dict[str, str]:
        basic = base64.b64encode(f"{self.key}:{self.secret}".encode()).decode()
        return {"Authorization": f"Basic {basic}", "Content-Type": "application/json"}


def start_serve(db_url: str, workdir: Path, *, delivery: bool, key: Key) -> Serve:
    """``crmhooks serve``; on a fresh database the key it prints is stored in ``key``."""
    port = _free_port()
    log = workdir / f"serve-{port}.log"
    env = {
        **os.environ,
        "CRMHOOKS_DATABASE_URL": db_url,
        "CRMHOOKS_LOG_LEVEL": "warning",
        "CRMHOOKS_DELIVERY": "true" if delivery else "false",
        "CRMHOOKS_ALLOWED_TARGETS": "127.0.0.0/8",
    }
    spawned = time.time()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "crmhooks", "serve", "--host", HOST, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        printed = log.read_text(errors="replace")
        if "listening on" not in printed:
            time.sleep(0.02)
            continue
        found = re.search(r"api key\s+(\S+)", printed), re.search(r"api secret\s+(\S+)", printed)
        if found[0] and found[1]:
            key.key, key.secret = found[0].group(1), found[1].group(1)
        try:
            # 404 with the error envelope: answered by the app, after its startup.
            with urllib.request.urlopen(url + "/none", timeout=2) as r:
                r.read()
        except urllib.error.HTTPError:
            return Serve(url, proc, log, spawned, time.time())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.005)
    stop_server(proc)
    raise RuntimeError(f"server did not start:\n{log.read_text(errors='replace')}")


# --- client helpers -------------------------------------------------------------------------


async def _json(resp: aiohttp.ClientResponse, status: int) -> Any:
    raw = await resp.read()
    if resp.status != status:
        raise RuntimeError(f"{resp.method} {resp.url} -> {resp.status}: {raw[:300]!r}")
    return orjson.loads(raw) if raw else None


async def register(serve: Serve, key: Key, target: str, options: dict[str, Any]) -> str:
    body = {"url": target, "events": ["Account.Create"], "insecure_ssl": False, "options": options}
    async with (
        aiohttp.ClientSession(headers=key.headers()) as s,
        s.post(serve.url + WEBHOOKS_PATH, data=orjson.dumps(body)) as resp,
    ):
        data = await _json(resp, 201)
    return str(data["data"]["id"])


# The most items one batch request may carry (the server's default CRMHOOKS_MAX_BATCH_ITEMS).
BATCH = Limits().max_batch_items


async def write_accounts(serve: Serve, key: Key, count: int, batch: int = BATCH) -> None:
    """``count`` Account.Create events, through batch-modify (one burst per request)."""
    async with aiohttp.ClientSession(headers=key.headers()) as s:
        owner = await api_user(s, serve.url + ACCOUNTS)
        for first in range(0, count, batch):
            items = [
                {
                    "name": f"Delivered account {i}",
                    "owner_id": owner,
                    "email1": f"d{i}@example.com",
                    "city": "Oslo",
                }
                for i in range(first, min(first + batch, count))
            ]
            async with s.post(
                serve.url + ACCOUNTS + "/batch-modify", data=orjson.dumps(items)
            ) as resp:
                data = await _json(resp, 200)
            if any(not isinstance(v, str) for v in data["data"]):
                raise RuntimeError(f"batch-modify failed: {data['data'][:3]}")


def receiver_call(receiver: Receiver, path: str, method: str = "GET") -> Any:
    req = urllib.request.Request(receiver.url + path, method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        raw = r.read()
    return orjson.loads(raw) if raw else None


def wait_for_events(receiver: Receiver, count: int, within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        stats: dict[str, Any] = receiver_call(receiver, "/stats")
        if stats["distinct"] >= count or time.monotonic() > deadline:
            return stats
        time.sleep(0.02)


# --- throughput with stored events ----------------------------------------------------------


@dataclass
class Throughput:
    chunk_size: int
    events: int
    requests: int = 0
    received: int = 0
    seconds: float = float("nan")  # serve's first answer -> last event received
    from_first: float = float("nan")  # first request received -> last
    startup: float = float("nan")  # spawn -> first answer
    server_cpu: float = float("nan")
    machine_cores: float = float("nan")
    run_rates: list[float] = field(default_factory=list)  # events/s of each delivery run
    ceiling_rates: list[float] = field(default_factory=list)
    ceiling_cpu: list[float] = field(default_factory=list)  # client CPU seconds, per run
    ceiling_cores: float = float("nan")
    background: float = float("nan")

    @property
    def rate(self) -> float:
        return self.received / self.seconds if self.seconds > 0 else 0.0

    @property
    def ceiling(self) -> float:
        return max(self.ceiling_rates) if self.ceiling_rates else float("nan")

    @property
    def share(self) -> float:
        return self.rate / self.ceiling if self.ceiling_rates else 0.0

    @property
    def server_us_per_request(self) -> float:
        return 1e6 * self.server_cpu / self.requests if self.requests else float("nan")

    @property
    def client_us_per_request(self) -> float:
        return 1e6 * min(self.ceiling_cpu) / self.requests if self.ceiling_cpu else float("nan")


async def _replay(url: str, bodies: list[tuple[str, bytes]], concurrency: int) -> float:
    """Post every body once, ``concurrency`` in flight, one session; seconds taken."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    async with aiohttp.ClientSession(connector=connector) as session:
        todo = iter(bodies)

        async def worker() -> None:
            for msg_id, body in todo:
                hdrs = {
                    **headers,
                    "webhook-id": msg_id,
                    "webhook-timestamp": str(int(time.time())),
                }
                async with session.post(url, data=body, headers=hdrs) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"receiver answered {resp.status}")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - t0


def stored_bodies(db_file: Path) -> list[tuple[str, bytes]]:
    with sqlite3.connect(db_file) as conn:
        rows = conn.execute(
            "SELECT id, body FROM deliveries JOIN delivery_bodies ON delivery_id = id"
            " ORDER BY first_seq"
        ).fetchall()
    return [(str(i), str(b).encode()) for i, b in rows]


@dataclass
class Stored:
    """A database with one webhook (chunk_size 1) and Account.Create events written by the API."""

    db_file: Path
    key: Key
    written: int


def store_events(receiver: Receiver, workdir: Path, count: int) -> Stored:
    db_file = workdir / "stored.db"
    key = Key()
    console.print(f"  writing {count:,} accounts (batch-modify, delivery off)", style="dim")
    serve = start_serve(f"sqlite:///{db_file}", workdir, delivery=False, key=key)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(register(serve, key, receiver.hook, {"chunk_size": 1}))
            runner.run(write_accounts(serve, key, count))
    finally:
        stop_server(serve.process)
    return Stored(db_file, key, count)


def _copy_database(source: Path, target: Path) -> None:
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def prepare(stored: Stored, target: Path, chunk_size: int, total: int) -> None:
    """A copy of the stored database with the webhook's chunk_size set, and the events copied
    (new event and burst ids, same records) until there are ``total``."""
    _copy_database(stored.db_file, target)
    with sqlite3.connect(target) as conn:
        conn.execute("UPDATE webhooks SET options = ?", (orjson.dumps({"chunk_size": chunk_size}),))
        names = [r[1] for r in conn.execute("PRAGMA table_info(events)") if r[1] != "seq"]
        rows = conn.execute(f"SELECT {', '.join(names)} FROM events ORDER BY seq").fetchall()
        at_id, at_burst = names.index("id"), names.index("burst_id")
        bursts: dict[tuple[str, int], str] = {}
        copies: list[list[Any]] = []
        for i in range(max(0, total - len(rows))):
            row = list(rows[i % len(rows)])
            row[at_id] = str(uuid.uuid4())
            key = (row[at_burst], i // len(rows))
            row[at_burst] = bursts.setdefault(key, str(uuid.uuid4()))
            copies.append(row)
        marks = ", ".join("?" for _ in names)
        conn.executemany(f"INSERT INTO events ({', '.join(names)}) VALUES ({marks})", copies)


@dataclass
class Delivered:
    """One delivery run of stored events."""

    requests: int
    received: int
    seconds: float
    from_first: float
    startup: float
    server_cpu: float
    machine_cores: float
    background: float

    @property
    def rate(self) -> float:
        return self.received / self.seconds if self.seconds > 0 else 0.0


def deliver_stored(
    stored: Stored, db_file: Path, result: Throughput, receiver: Receiver, quiet_wait: float
) -> Delivered:
    """Start ``serve`` with delivery on over a fresh copy, wait until the receiver has all."""
    prepare(stored, db_file, result.chunk_size, result.events)
    receiver_call(receiver, "/reset", "POST")
    background = wait_for_quiet(quiet_wait) if quiet_wait > 0 else float("nan")
    console.print(f"  chunk_size {result.chunk_size}: delivering", style="dim")
    busy0 = machine_cpu()[0]
    serve = start_serve(f"sqlite:///{db_file}", db_file.parent, delivery=True, key=stored.key)
    try:
        # serve and its delivery process (forked or started by it), as one figure
        cpu0 = tree_cpu(serve.process.pid)
        stats = wait_for_events(receiver, result.events, within=180)
        server_cpu = tree_cpu(serve.process.pid) - cpu0
    finally:
        stop_server(serve.process)
    last, first = stats["last"] or float("nan"), stats["first"] or float("nan")
    return Delivered(
        stats["requests"],
        stats["distinct"],
        last - serve.ready,
        last - first,
        serve.ready - serve.spawned,
        server_cpu,
        (machine_cpu()[0] - busy0) / max(time.time() - serve.spawned, 1e-9),
        background,
    )


def measure_throughput(
    result: Throughput,
    stored: Stored,
    receiver: Receiver,
    workdir: Path,
    quiet_wait: float,
    runs: int,
) -> None:
    """``runs`` delivery runs, each followed by a ceiling run; the best of each is kept."""
    best: Delivered | None = None
    for i in range(runs):
        db_file = workdir / f"chunk{result.chunk_size}-{i}.db"
        run = deliver_stored(stored, db_file, result, receiver, quiet_wait)
        result.run_rates.append(run.rate)
        if best is None or run.rate > best.rate:
            best = run
        bodies = stored_bodies(db_file)
        receiver_call(receiver, "/reset", "POST")
        busy0 = machine_cpu()[0]
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            t0, cpu0 = time.time(), time.process_time()
            runner.run(_replay(receiver.hook, bodies, PER_WEBHOOK))
            result.ceiling_cpu.append(time.process_time() - cpu0)
        stats = receiver_call(receiver, "/stats")
        elapsed = stats["last"] - t0
        result.ceiling_rates.append(stats["distinct"] / elapsed)
        result.ceiling_cores = (machine_cpu()[0] - busy0) / elapsed
    assert best is not None
    result.requests, result.received = best.requests, best.received
    result.seconds, result.from_first, result.startup = best.seconds, best.from_first, best.startup
    result.server_cpu, result.machine_cores = best.server_cpu, best.machine_cores
    result.background = best.background


# --- latency --------------------------------------------------------------------------------


@dataclass
class Latency:
    rate: float
    seconds: float
    writes: int = 0
    received: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, write's 2xx -> arrival
    write_ms: list[float] = field(default_factory=list)
    background: float = float("nan")
    db_file: Path | None = None

    def ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _paced_writes(serve: Serve, key: Key, result: Latency) -> dict[str, float]:
    done: dict[str, float] = {}
    count = int(result.rate * result.seconds)
    interval = 1.0 / result.rate
    async with aiohttp.ClientSession(headers=key.headers()) as s:
        owner = await api_user(s, serve.url + ACCOUNTS)
        start = time.perf_counter()
        for i in range(count):
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            body = orjson.dumps({"name": f"Paced account {i}", "owner_id": owner, "city": "Oslo"})
            t0 = time.perf_counter()
            async with s.post(serve.url + ACCOUNTS, data=body) as resp:
                data = await _json(resp, 201)
                at = time.time()
            result.write_ms.append(1000 * (time.perf_counter() - t0))
            done[str(data["data"]["id"])] = at
    return done


def measure_latency(result: Latency, receiver: Receiver, workdir: Path, quiet_wait: float) -> None:
    db_file = workdir / "latency.db"
    result.db_file = db_file
    key = Key()
    serve = start_serve(f"sqlite:///{db_file}", workdir, delivery=True, key=key)
    try:
        receiver_call(receiver, "/reset?track=1", "POST")
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(register(serve, key, receiver.hook, {}))
            result.background = wait_for_quiet(quiet_wait) if quiet_wait > 0 else float("nan")
            console.print(
                f"  latency: {result.rate:g} writes/s for {result.seconds:g} s", style="dim"
            )
            done = runner.run(_paced_writes(serve, key, result))
        wait_for_events(receiver, len(done), within=30)
    finally:
        stop_server(serve.process)
    arrived = {eid: t for eid, t in receiver_call(receiver, "/arrivals")}
    result.writes, result.received = len(done), len(arrived)
    result.latencies = [arrived[eid] - t for eid, t in done.items() if eid in arrived]


# --- routing with many webhooks -------------------------------------------------------------


@dataclass
class Routing:
    """CPU seconds per event of routing (``Router.step``) and of claiming what it made
    (``Dispatcher.claim_once``), per number of webhooks, one list entry per round."""

    webhooks: tuple[int, int]
    events: int = 0
    load_seconds: dict[int, float] = field(default_factory=dict)  # index load, per count
    bulk: dict[int, list[float]] = field(default_factory=dict)  # route, all events at once
    live: dict[int, list[float]] = field(default_factory=dict)  # route, one event per step
    live_claim: dict[int, list[float]] = field(default_factory=dict)  # claim, per event

    @staticmethod
    def best(values: list[float]) -> float:
        return min(values) if values else float("nan")

    def ratio(self, *which: dict[int, list[float]]) -> float:
        few, many = self.webhooks
        return sum(self.best(w[many]) for w in which) / sum(self.best(w[few]) for w in which)

    def cost(self, n: int, *which: dict[int, list[float]]) -> float:
        return sum(self.best(w[n]) for w in which)


def add_webhooks(db_file: Path, total: int) -> None:
    """Webhooks up to ``total``, copies of the one registered that can never match its events:
    half in the same space listening to other events, half in other spaces listening to the
    same event."""
    engine = create_engine(sync_url(f"sqlite:///{db_file}"))
    t = table_of(WEBHOOKS)
    others = sorted(n for n in EVENT_NAMES if not n.startswith("Account.") and n != "*")
    try:
        with engine.begin() as conn:
            (model,) = conn.execute(select(t)).mappings().all()
            rows = []
            for i in range(total - 1):
                row = dict(model)
                row["id"] = str(uuid.uuid4())
                if i % 2:
                    row["events"] = [others[i % len(others)]]
                else:
                    row["space_id"] = f"other-{i}"
                rows.append(row)
            if rows:
                conn.execute(insert(t), rows)
    finally:
        engine.dispose()


class _NoSend(HttpSender):
    """Answers every request with 200 at once: claiming is measured, not sending."""

    async def send(
        self, sub: Subscription, msg_id: str, body: bytes, *, replay: bool = False
    ) -> SendResult:
        return SendResult(200, 0.0, None, "", None, datetime.now(UTC))


@dataclass
class Pass:
    loaded: float  # seconds to load the webhook index
    route_cpu: float
    claim_cpu: float
    events: int


async def _dispatch_all(db_file: Path, batch: int) -> Pass:
    """Route every stored event from the start, ``batch`` per step, claiming after each step."""
    db = open_database(f"sqlite:///{db_file}")
    try:
        async with db.write() as conn:
            await conn.execute(delete(deliveries))
            await conn.execute(delete(dispatch_state).where(dispatch_state.c.name == ROUTER))
        router = Router(db, "http://127.0.0.1:8000", batch=batch)
        no_send = _NoSend(Guard(parse_allowed("")))
        cfg = DispatchSettings(DEFAULT_SCHEDULE)
        dispatcher = Dispatcher(SqlQueue(db), router, router.webhooks, no_send, cfg)
        t0 = time.perf_counter()
        async with db.read() as conn:
            await router.load(conn)
            count = len((await conn.execute(select(events.c.seq))).all())
        loaded = time.perf_counter() - t0
        route = claim = 0.0
        while True:
            cpu0 = time.process_time()
            made = await router.step()
            cpu1 = time.process_time()
            route += cpu1 - cpu0
            if not made:
                break
            while await dispatcher.claim_once():
                pass
            await dispatcher.sent()  # stubbed sends; their outcomes go with the next claim
            claim += time.process_time() - cpu1
        return Pass(loaded, route, claim, count)
    finally:
        await db.dispose()


def measure_routing(result: Routing, source: Path, workdir: Path, rounds: int) -> None:
    # Logging as `serve` sets it up (warnings and up): unconfigured, structlog would print a
    # debug line per request delivered, and the figures would count that printing.
    logs.configure("warning")
    copies: dict[int, Path] = {}
    for n in result.webhooks:
        copies[n] = workdir / f"routing-{n}.db"
        _copy_database(source, copies[n])
        add_webhooks(copies[n], n)
    for _ in range(rounds):
        for n in result.webhooks:
            for batch in (2000, 1):
                with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                    done = runner.run(_dispatch_all(copies[n], batch))
                result.events = done.events
                result.load_seconds[n] = done.loaded
                if batch == 1:
                    result.live.setdefault(n, []).append(done.route_cpu / done.events)
                    result.live_claim.setdefault(n, []).append(done.claim_cpu / done.events)
                else:
                    result.bulk.setdefault(n, []).append(done.route_cpu / done.events)


# --- report ---------------------------------------------------------------------------------


@dataclass
class Results:
    chunk1: Throughput
    chunk100: Throughput
    latency: Latency
    routing: Routing
    load_before: tuple[float, float, float]
    written: int = 0
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Row:
    label: str
    target: str
    value: str
    reference: str
    passed: bool | None


def _ms(v: float) -> str:
    return f"{v:.1f} ms" if v >= 10 else f"{v:.2f} ms"


def _us(v: float) -> str:
    return f"{v * 1e6:,.0f} µs"


def rows(r: Results) -> list[Row]:
    c1, c100, lat, rt = r.chunk1, r.chunk100, r.latency, r.routing
    few, many = rt.webhooks
    return [
        Row(
            f"chunk_size 1, {c1.events:,} stored events: events/s delivered",
            "≥ 70% of the ceiling",
            f"{c1.rate:,.0f} ({c1.share:.0%})",
            f"ceiling {c1.ceiling:,.0f}/s",
            c1.share >= 0.7,
        ),
        Row(
            f"chunk_size 100, {c100.events:,} stored events: events/s delivered",
            "≥ 20,000",
            f"{c100.rate:,.0f} ({c100.share:.0%})",
            f"ceiling {c100.ceiling:,.0f}/s",
            c100.rate >= 20_000,
        ),
        Row(
            f"latency at {lat.rate:g} writes/s, write's 2xx to receiver: p50",
            "< 10 ms",
            _ms(lat.ms(0.5)),
            f"{lat.received:,} of {lat.writes:,} matched",
            lat.ms(0.5) < 10,
        ),
        Row(
            "latency: p99 (max)",
            "< 50 ms",
            f"{_ms(lat.ms(0.99))} ({_ms(lat.ms(1.0))})",
            f"p90 {_ms(lat.ms(0.9))}",
            lat.ms(0.99) < 50,
        ),
        Row(
            f"routing CPU per event, {many:,} vs {few} webhooks, all {rt.events:,} stored "
            "events in one step",
            "≤ 1.2x",
            f"{rt.ratio(rt.bulk):.2f}x",
            f"{_us(rt.cost(many, rt.bulk))} vs {_us(rt.cost(few, rt.bulk))}",
            rt.ratio(rt.bulk) <= 1.2,
        ),
        Row(
            f"routing + claim CPU per event, one event per step, {many:,} vs {few} webhooks",
            "≤ 1.2x",
            f"{rt.ratio(rt.live, rt.live_claim):.2f}x",
            f"{_us(rt.cost(many, rt.live, rt.live_claim))} vs "
            f"{_us(rt.cost(few, rt.live, rt.live_claim))}",
            rt.ratio(rt.live, rt.live_claim) <= 1.2,
        ),
    ]


def print_table(r: Results) -> None:
    table = Table(title="crmhooks webhook delivery (serve + receiver processes, SQLite)")
    for name in ("Figure", "Target", "Measured", "Ceiling / reference"):
        table.add_column(name, justify="left" if name in ("Figure", "Target") else "right")
    for row in rows(r):
        value = row.value
        if row.passed is not None:
            value = f"[{'green' if row.passed else 'red'}]{value}[/]"
        table.add_row(row.label, row.target, value, row.reference)
    console.print(table)
    for line in details(r):
        console.print(line.removeprefix("- "), highlight=False)


def details(r: Results) -> list[str]:
    """How each figure was taken, with the counts and CPU times behind it."""
    c1, c100, lat, rt = r.chunk1, r.chunk100, r.latency, r.routing
    out = []
    for t in (c1, c100):
        out.append(
            f"- chunk_size {t.chunk_size}: {t.received:,} events in {t.requests:,} requests, "
            f"{t.seconds:.2f} s from `serve`'s first answer to the last event "
            f"({t.from_first:.2f} s from the first request; start-up, {t.startup:.1f} s, not "
            f"counted). `serve` CPU (with its delivery process) {t.server_cpu:.2f} s = "
            f"{t.server_us_per_request:,.0f} µs "
            f"per request; the bare client {t.client_us_per_request:,.0f} µs per request. "
            f"Runs: {', '.join(f'{x:,.0f}' for x in t.run_rates)} events/s; ceiling runs: "
            f"{', '.join(f'{x:,.0f}' for x in t.ceiling_rates)} events/s. "
            f"Cores busy: {t.machine_cores:.2f} while delivering, {t.ceiling_cores:.2f} in the "
            f"last ceiling run, {t.background:.2f} just before (other work)."
        )
    out.append(
        f"- latency: {lat.writes:,} writes, write p50 {_ms(statistics.median(lat.write_ms))}; "
        f"cores busy just before: {lat.background:.2f}."
    )

    def us(values: dict[int, list[float]]) -> str:
        return "; ".join(
            f"{n:,}: " + ", ".join(f"{v * 1e6:,.0f}" for v in vs) for n, vs in values.items()
        )

    out.append(
        f"- routing, µs CPU per event per round (webhooks: rounds): bulk route {us(rt.bulk)}; "
        f"one per step, route {us(rt.live)}; claim, sends and outcomes {us(rt.live_claim)}. "
        "Loading the index: "
        + ", ".join(f"{s * 1000:,.0f} ms with {n:,} webhooks" for n, s in rt.load_seconds.items())
        + "."
    )
    return out


def _load(v: tuple[float, float, float]) -> str:
    return " / ".join(f"{x:.2f}" for x in v)


def markdown(r: Results, command: str) -> str:
    c1, c100, rt = r.chunk1, r.chunk100, r.routing
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `bench/delivery_speed.py` on "
        f"{machine()}: a shared virtual machine with noisy neighbours; `crmhooks serve`, the "
        f"receiver and the load share its {os.cpu_count()} cores. Load average (1 / 5 / 15 min) "
        f"{_load(r.load_before)} before the run, {_load(r.load_after)} after it. SQLite; one "
        "`serve` process; a receiver process on loopback (aiohttp, answers 200 at once, counts "
        "requests and events, keeps arrival times). At most "
        f"{PER_WEBHOOK} requests in flight per webhook (`CRMHOOKS_MAX_IN_FLIGHT_PER_WEBHOOK`), "
        "the same for the ceiling.",
        "",
        "```",
        command,
        "```",
        "",
        "| Figure | Target | Measured | Ceiling / reference |",
        "| --- | --- | --- | --- |",
    ]
    for row in rows(r):
        mark = "" if row.passed is None else (" (met)" if row.passed else " (**missed**)")
        cells = (row.label, row.target, row.value + mark, row.reference)
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "How the figures are taken:",
        "",
        f"- Throughput: a webhook (`Account.Create`) is registered and {r.written:,} accounts "
        "are created by batch-modify while `serve` runs with `CRMHOOKS_DELIVERY=false`; for "
        f"chunk_size 100 that database is copied and its events copied up to {c100.events:,} "
        "(new event ids, same records) in SQL. `serve` is then started with delivery on and "
        "timed from its first HTTP answer (its delivery process, forked first, begins once the "
        "API has started) to the last event at the receiver; the CPU figures are `serve`'s and "
        "its delivery process's together. The ceiling is a bare aiohttp client, one session, "
        f"{PER_WEBHOOK} requests in flight, posting the bodies the dispatcher sent (read back "
        "from `deliveries`, same headers) to the same receiver. Each delivery run is followed "
        f"by a ceiling run, {len(c1.run_rates)} of each; the best of each is shown (the machine "
        "is shared, so the worst runs mostly measure the neighbours).",
        "- Latency: single `POST /entities/Accounts` paced at a fixed rate with delivery on; "
        "from the client reading the 201 to the receiver reading the request that carries the "
        "account's id (one machine, one clock).",
        f"- Many webhooks: in-process, `Router.step` over the {rt.events:,} events of the "
        f"latency run with {rt.webhooks[0]} and with {rt.webhooks[1]:,} webhooks stored, one "
        "matching (the others: half in the same space on other event names, half on "
        "`Account.Create` in other spaces), the index already loaded; process CPU (all "
        "threads) per event, best of the rounds. First all events in one step (the stored "
        "events), then one event per step followed by `Dispatcher.claim_once` (sending "
        "stubbed out), as live traffic at a low rate is dispatched; the claim's figure counts "
        "the stubbed sends and the outcomes recorded in the next claim's transaction.",
        *details(r),
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str, heading: str) -> None:
    """Replace the section under ``heading`` (up to the next ``## ``), or add it at the end
    (the whole section is generated: bench/reliability.py, bench/scale_out.py)."""
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    start = current.find(heading + "\n")
    if start < 0:
        updated = current.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    else:
        nxt = current.find("\n## ", start + len(heading))
        tail = "" if nxt < 0 else current[nxt + 1 :]
        updated = current[:start] + section.rstrip("\n") + "\n" + ("\n" + tail if tail else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(updated)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a markdown table."""
    return [
        "| " + " | ".join(columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def generated_section(
    heading: str,
    doc: str | None,
    measured: str,
    command: str,
    table: tuple[Sequence[str], Sequence[Sequence[str]]],
) -> str:
    """A generated docs section: the heading, the module's text after its first paragraph,
    the line saying when and where it was measured, the command, and the table."""
    columns, rows = table
    return "\n".join(
        [
            heading,
            "",
            (doc or "").split("\n\n", 1)[1].strip(),
            "",
            measured,
            "",
            *reproduce(command),
            *markdown_table(columns, rows),
            "",
        ]
    )


def publish(
    args: argparse.Namespace,
    table: tuple[str, Sequence[str], Sequence[Sequence[str]]],
    section: Callable[[str], str],
    heading: str,
    module: str,
) -> None:
    """Print ``table`` (title, columns, rows); unless ``--no-docs``, write the benchmark's
    section (``section`` of the command that reproduces it) under ``heading`` in ``--docs``."""
    title, columns, rows = table
    shown = Table(title=title)
    for name in columns:
        shown.add_column(name)
    for row in rows:
        shown.add_row(*row)
    console.print(shown)
    if not args.no_docs:
        command = f".venv/bin/python -m {module} " + " ".join(sys.argv[1:])
        write_section(args.docs, section(command.strip()), heading)
        console.print(f"written to {args.docs}")


def write_docs(path: Path, block: str) -> None:
    """Replace the figures between this benchmark's markers in ``path`` (the notes around
    them, written by hand from these and other measurements, stay as they are)."""
    replace_figures(path, block, HEADING, BEGIN, END)


# --- command line ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    args_in = argv if argv is not None else sys.argv[1:]
    if args_in[:1] == ["receive"]:
        rp = argparse.ArgumentParser(prog="python -m bench.delivery_speed receive")
        rp.add_argument("--port", type=int, required=True)
        run_receiver(rp.parse_args(args_in[1:]).port)
        return
    p = argparse.ArgumentParser(prog="python -m bench.delivery_speed", description=__doc__)
    p.add_argument("--events-1", type=int, default=10_000, help="stored events, chunk_size 1")
    p.add_argument("--events-100", type=int, default=50_000, help="stored events, chunk_size 100")
    p.add_argument(
        "--written", type=int, default=10_000, help="events written through the API (then copied)"
    )
    p.add_argument("--rate", type=float, default=50.0, help="writes/s of the latency phase")
    p.add_argument("--seconds", type=float, default=20.0, help="length of the latency phase")
    p.add_argument("--webhooks", type=int, default=10_000, help="webhooks in the routing phase")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the routing phase")
    p.add_argument(
        "--runs", type=int, default=2, help="delivery runs (each with a ceiling run); best kept"
    )
    p.add_argument("--quiet-wait", type=float, default=20.0, help="max s to wait for quiet")
    p.add_argument("--docs", type=Path, default=DOCS)
    p.add_argument("--no-docs", action="store_true")
    args = p.parse_args(args_in)
    workdir = Path(tempfile.mkdtemp(prefix="crmhooks-delivery-"))
    receiver = start_receiver()
    try:
        results = Results(
            Throughput(1, args.events_1),
            Throughput(100, args.events_100),
            Latency(args.rate, args.seconds),
            Routing((10, args.webhooks)),
            os.getloadavg(),
        )
        console.print(f"[bold]webhook delivery[/]: load average {_load(results.load_before)}")
        stored = store_events(receiver, workdir, args.written)
        results.written = stored.written
        for t in (results.chunk1, results.chunk100):
            measure_throughput(t, stored, receiver, workdir, args.quiet_wait, args.runs)
        measure_latency(results.latency, receiver, workdir, args.quiet_wait)
        console.print("  routing with many webhooks", style="dim")
        assert results.latency.db_file is not None
        measure_routing(results.routing, results.latency.db_file, workdir, args.rounds)
        results.load_after = os.getloadavg()
    finally:
        stop_server(receiver.process)
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(results)
    if not args.no_docs:
        shown = [a for a in args_in if a != "--no-docs"]
        command = " ".join([".venv/bin/python -m bench.delivery_speed", *shown])
        write_docs(args.docs, markdown(results, command))
        console.print(f"updated {args.docs}")


if __name__ == "__main__":
    main()
