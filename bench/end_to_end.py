"""End to end, the way the peers are measured: writes through the public API, delivery by the
same ``crmhooks serve``, received by the peers' receiver design, beside the bare aiohttp ceiling
in the same round.

Each round starts a receiver process (``bench/receiver.py``: asyncio protocol + httptools on
uvloop; it counts events and times each from its ``event_time`` to receipt) and ``python -m
crmhooks serve`` on a fresh database (SQLite file; ``--engine postgresql`` for a schema of its
own), with ``CRMHOOKS_ALLOWED_TARGETS=127.0.0.0/8``. Everything runs on 127.0.0.1. Then:

1. the ceiling: a bare aiohttp client (one session, 64 in flight, uvloop) POSTing the kit's
   1,431-byte ``Account.Update`` event, built and stamped right before each request, as
   1-element arrays (``--ceiling`` events) and as 100-element arrays (``--ceiling-100``);
2. create p50 from one client, one request at a time, with no webhook registered;
3. a webhook on ``Account.Create`` with chunk_size 1, then: create p50 again; latency at
   ``--rate`` writes/s from one client (the write's 2xx to the receiver, matched by entity id);
   batch ingest (batch-modify of 100 new Accounts, one client); one POST per event from 8
   clients; creates from 16 clients;
4. the webhook replaced by one with chunk_size 100; batch ingest again.

The Accounts carry the writable fields of the kit's event entity, owned by the space's API
user (``client id`` as ``serve`` prints it). events/s = distinct events received / (last
receipt - first write), as in the kit; every write phase is bounded by a count and by
``--seconds``, every wait for delivery by ``--deadline``. CPU per event is read from ``/proc``
for ``serve``'s own process, the processes below it (summed over the tree), the receiver and
this load generator.

Run ``python -m bench.end_to_end --rounds 3``; the table is printed and written to the "End to
end" section of ``docs/benchmarks.md`` (``--no-docs`` to skip). Never run as a test.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop
from rich.console import Console
from rich.table import Table

import crmhooks
from bench.api_speed import (
    DEFAULT_PG,
    machine,
    postgres_database,
    postgres_version,
    replace_figures,
    reproduce,
)
from bench.receiver import nearest_rank

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## End to end, beside the peers (`bench/end_to_end.py`)"
BEGIN, END = "<!-- end_to_end: figures -->", "<!-- /end_to_end: figures -->"
HOST = "127.0.0.1"
SPACE = "/api/v100/rest/spaces/default/entities"
BATCH = 100
CONCURRENCY = 64  # the kit's ceiling: requests in flight
HEADERS = {"Content-Type": "application/json"}

console = Console(width=None if sys.stdout.isatty() else 140)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# --- the event (the peers kit's ``common.make_event``) --------------------------------------

KIT_WEBHOOK: dict[str, Any] = {
    "id": "7d4f3a52-41c9-4ad6-9a4e-0f6bfe1d1c01",
    "url": "",
    "events": ["Account.*"],
    "insecure_ssl": False,
    "options": {"chunk_size": 1},
    "is_deleted": False,
    "application_id": None,
    "client_id": None,
}

COMMENTS = (
    "Key account; renewal negotiated in Q3, expansion to EMEA offices expected. "
    "Prefers quarterly invoicing and a single point of contact for support. "
    "Procurement requires a signed DPA before any new module is enabled."
)


# The kit's entity keys: ``--kit-shape`` asks for these alone (load-only), for a body near the
# kit's size; by default the record is sent as the API shows it. 20 of its 22 keys, the most a
# shape may name (max_shape_entries): not `parent_account_id` and `is_archived` (null, false).
KIT_FIELDS = [
    *("id", "created", "modified", "is_deleted", "revision", "name", "owner_id"),
    *("email1", "email2", "email3", "phone1", "phone2", "phone3", "address", "city"),
    *("zip_code", "state_province", "country", "home_page", "comments"),
]


def now_str() -> str:
    """A timestamp in the contract's format: ``2019-02-01 07:41:49.529970+00:00``."""
    return datetime.datetime.now(datetime.UTC).isoformat(" ", "microseconds")


def account_fields(i: int, owner: str) -> dict[str, Any]:
    """The writable fields of the kit's event entity: what the API is asked to store."""
    return {
        "name": f"Northwind Traders {i}",
        "owner_id": owner,
        "email1": f"sales{i}@northwind.example",
        "email2": "billing@northwind.example",
        "email3": "support@northwind.example",
        "phone1": "+1 206 555 0100",
        "phone2": "+1 206 555 0199",
        "phone3": "+1 425 555 0142",
        "address": "4110 Old Redmond Rd",
        "city": "Redmond",
        "zip_code": "98052",
        "state_province": "WA",
        "country": "United States",
        "home_page": "https://northwind.example",
        "comments": COMMENTS,
    }


def make_event(i: int, hook_url: str) -> dict[str, Any]:
    """One ``Account.Update`` event in the webhook contract's shape (1,431 bytes as JSON);
    ``event_time`` is taken now: the receiver measures latency from it."""
    t = now_str()
    owner = "3b1f8f6e-9d7c-4c55-a1de-6a2c4b1e0f42"
    entity = {
        "id": str(uuid.uuid4()),
        "created": "2026-01-05 09:12:44.120331+00:00",
        "modified": t,
        "is_deleted": False,
        "revision": i + 2,
        **account_fields(i, owner),
        "owner": f"/api/v100/rest/spaces/default/entities/Clients/{owner}",
        "parent_account_id": None,
        "is_archived": False,
    }
    return {
        "id": str(uuid.uuid4()),
        "event": "Account.Update",
        "event_time": t,
        "team_space_id": None,
        "webhook": {**KIT_WEBHOOK, "url": hook_url},
        "entity": entity,
        "related_entity": None,
        "changes": {"phone1": {"old": "+1 206 555 0101", "new": "+1 206 555 0100"}},
    }


# --- processes and their CPU ----------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


_HZ = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, grandchildren, ...), from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def own_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of one process."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / _HZ if fields else 0.0


def reaped_cpu(pid: int) -> float:
    """CPU seconds of the children ``pid`` has waited for (gone, counted in it)."""
    fields = _stat(pid)
    return (int(fields[13]) + int(fields[14])) / _HZ if fields else 0.0


def _name(pid: int) -> str:
    """A process's command line, shortened (its name where that is unreadable)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        text = " ".join(a.decode(errors="replace") for a in args if a)
    except OSError:
        return "?"
    return text if len(text) <= 60 else text[:57] + "..."


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and everything below it (live or reaped)."""
    return sum(own_cpu(p) + reaped_cpu(p) for p in (pid, *descendants(pid)))


@dataclass(frozen=True)
class Cpu:
    """CPU seconds so far of each process the benchmark watches."""

    api: float  # serve's own process
    below: float  # every process below serve, and those it has reaped
    processes_below: int
    receiver: float
    client: float  # this process: the load generator or the ceiling
    workers: float = 0.0  # `crmhooks worker` processes beside serve (--workers), with their trees
    each_below: tuple[tuple[str, float], ...] = ()  # ("pid name", seconds) of each process below

    @staticmethod
    def take(serve_pid: int | None, receiver_pid: int, workers: Sequence[int] = ()) -> Cpu:
        below, count = 0.0, 0
        each: tuple[tuple[str, float], ...] = ()
        if serve_pid is not None:
            kids = descendants(serve_pid)
            count = len(kids)
            each = tuple((f"{p} {_name(p)}", own_cpu(p) + reaped_cpu(p)) for p in kids)
            below = reaped_cpu(serve_pid) + sum(v for _, v in each)
        return Cpu(
            own_cpu(serve_pid) if serve_pid is not None else 0.0,
            below,
            count,
            own_cpu(receiver_pid),
            own_cpu(os.getpid()),
            sum(tree_cpu(w) for w in workers),
            each,
        )

    def since(self, start: Cpu) -> Cpu:
        return Cpu(
            self.api - start.api,
            self.below - start.below,
            max(self.processes_below, start.processes_below),
            self.receiver - start.receiver,
            self.client - start.client,
            self.workers - start.workers,
            tuple((k, v - dict(start.each_below).get(k, 0.0)) for k, v in self.each_below),
        )


def cores_busy(seconds: float = 1.0) -> float:
    def sample() -> tuple[float, float]:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
        return sum(ticks) - idle, sum(ticks)

    b0, t0 = sample()
    time.sleep(seconds)
    b1, t1 = sample()
    return (os.cpu_count() or 1) * (b1 - b0) / max(t1 - t0, 1)


def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


# --- the receiver ---------------------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    process: subprocess.Popen[bytes]

    @property
    def hook(self) -> str:
        return self.url + "/hook"

    def call(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return orjson.loads(r.read())

    def wait(self, n: int, deadline_s: float) -> dict[str, Any]:
        """Poll until ``n`` distinct event ids arrived (or the deadline passed): the stats."""
        end = time.monotonic() + deadline_s
        while True:
            s: dict[str, Any] = self.call("/stats")
            if s["unique"] >= n or time.monotonic() > end:
                return s
            time.sleep(0.02)

    def settle(self, quiet: float = 1.0, limit: float = 30.0) -> None:
        """Wait until nothing has arrived for ``quiet`` seconds (at most ``limit``)."""
        end = time.monotonic() + limit
        last, since = None, time.monotonic()
        while time.monotonic() < end:
            events = self.call("/stats")["events"]
            if events != last:
                last, since = events, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.05)


def start_receiver(max_seconds: float) -> Receiver:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.receiver",
            "--port",
            str(port),
            "--max-seconds",
            str(int(max_seconds)),
        ],
        cwd=ROOT,
    )
    rec = Receiver(f"http://{HOST}:{port}", proc)
    for _ in range(200):
        if proc.poll() is not None:
            break
        try:
            rec.call("/stats")
            return rec
        except OSError:
            time.sleep(0.05)
    stop(proc)
    raise RuntimeError("the receiver did not start")


def stop(proc: subprocess.Popen[bytes], below: Sequence[int] = ()) -> None:
    """Stop a process this benchmark started (SIGTERM, then SIGKILL), then any of the given
    processes that were below it and outlived it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    for pid in below:
        if _stat(pid) is not None:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# --- the server -----------------------------------------------------------------------------


@dataclass
class Serve:
    url: str
    auth: dict[str, str]
    owner: str
    process: subprocess.Popen[bytes]
    log: Path

    def entities(self, path: str) -> str:
        return f"{self.url}{SPACE}/{path}"


def _env_with_package() -> dict[str, str]:
    """This environment, with the imported crmhooks package importable from any directory."""
    src = str(Path(crmhooks.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        "PYTHONPATH": src + (os.pathsep + path if path else ""),
        "CRMHOOKS_ALLOWED_TARGETS": "127.0.0.0/8",
        "CRMHOOKS_LOG_LEVEL": "warning",
    }


def start_serve(db_url: str, workdir: Path, serve_args: list[str]) -> Serve:
    """``python -m crmhooks serve`` on a fresh database, once it answers; its key and its API
    user's id are read from what it prints."""
    port = _free_port()
    log = workdir / f"serve-{port}.log"
    env = {**_env_with_package(), "CRMHOOKS_DATABASE_URL": db_url}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "crmhooks",
                "serve",
                "--host",
                HOST,
                "--port",
                str(port),
                *serve_args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        printed = log.read_text(errors="replace")
        key, secret, client = (
            m.group(1) if m else None
            for m in (
                re.search(rf"{k}\s+(\S+)", printed) for k in ("api key", "api secret", "client id")
            )
        )
        if key and secret and "listening on" in printed:
            token = base64.b64encode(f"{key}:{secret}".encode()).decode()
            auth = {"Authorization": f"Basic {token}", **HEADERS}
            try:
                with urllib.request.urlopen(url + "/openapi.json", timeout=2) as r:
                    r.read()
                client = client or _api_user(url, auth)
            except OSError:
                time.sleep(0.1)
                continue
            return Serve(url, auth, client, proc, log)
        time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"serve did not start:\n{log.read_text(errors='replace')[-3000:]}")


def _api_user(url: str, auth: dict[str, str]) -> str:
    """The space's API user (its one Client), for a ``serve`` that does not print its id."""
    req = urllib.request.Request(f"{url}{SPACE}/Clients?first=1", headers=auth)
    with urllib.request.urlopen(req, timeout=10) as r:
        return str(orjson.loads(r.read())["data"][0]["id"])


def start_worker(db_url: str, workdir: Path) -> subprocess.Popen[bytes]:
    """``python -m crmhooks worker`` on the same database, once it says it delivers."""
    log = workdir / f"worker-{len(list(workdir.glob('worker-*.log')))}.log"
    env = {**_env_with_package(), "CRMHOOKS_DATABASE_URL": db_url}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "crmhooks", "worker"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if "delivering" in log.read_text(errors="replace"):
            return proc
        time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"worker did not start:\n{log.read_text(errors='replace')[-3000:]}")


class BenchError(Exception):
    """The API answered something the benchmark does not expect."""


async def _json(resp: aiohttp.ClientResponse, status: int) -> Any:
    raw = await resp.read()
    if resp.status != status:
        raise BenchError(f"{resp.method} {resp.url} -> {resp.status}: {raw[:300]!r}")
    return orjson.loads(raw) if raw else None


# --- the phases -----------------------------------------------------------------------------


@dataclass
class Phase:
    """One measured run: what was written, what the receiver saw, what it cost."""

    name: str
    written: int
    received: int = 0
    duplicates: int = 0
    requests: int = 0
    bytes_per_event: float = 0.0
    events_per_s: float = 0.0
    enqueue_per_s: float = 0.0
    p50_ms: float | None = None  # event_time to receipt, as the kit reports
    p99_ms: float | None = None
    cpu: Cpu | None = None
    extra: dict[str, float] = field(default_factory=dict)
    load: str = ""


@dataclass
class Options:
    events: int
    events_100: int
    ceiling: int
    ceiling_100: int
    creates: int
    singles: int
    latency_writes: int
    rate: float
    seconds: float
    deadline: float
    kit_shape: bool = False


class Round:
    def __init__(self, index: int, receiver: Receiver, opts: Options) -> None:
        self.index = index
        self.receiver = receiver
        self.opts = opts
        self.phases: dict[str, Phase] = {}
        self.serve: Serve | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.busy_before = cores_busy()  # the machine's background when the round starts
        self.load_before = load_average()

    def _cpu(self) -> Cpu:
        pid = self.serve.process.pid if self.serve else None
        return Cpu.take(pid, self.receiver.process.pid, [w.pid for w in self.workers])

    def _finish(self, phase: Phase, t0: float, t_written: float, cpu0: Cpu, n: int) -> Phase:
        """Wait for ``n`` distinct events at the receiver, then read its view of the run."""
        s = self.receiver.wait(n, self.opts.deadline)
        lat = self.receiver.call("/latency")
        phase.cpu = self._cpu().since(cpu0)
        phase.received = s["unique"]
        phase.duplicates = s["events"] - s["unique"]
        phase.requests = s["requests"]
        phase.bytes_per_event = s["bytes"] / s["events"] if s["events"] else 0.0
        if s["last_ts"]:
            phase.events_per_s = s["unique"] / max(s["last_ts"] - t0, 1e-9)
        phase.enqueue_per_s = phase.written / max(t_written - t0, 1e-9)
        phase.p50_ms, phase.p99_ms = lat["p50_ms"], lat["p99_ms"]
        phase.load = load_average()
        sample = self.receiver.call("/sample")
        if isinstance(sample, dict):  # the shape actually sent, beside the kit's 1,431 bytes
            for part in ("entity", "webhook"):
                phase.extra[f"{part}_bytes"] = len(orjson.dumps(sample.get(part)))
        self.phases[phase.name] = phase
        console.print(
            f"  round {self.index}: {phase.name}: {phase.received:,}/{phase.written:,} "
            f"received, {phase.events_per_s:,.0f} events/s, p50 {phase.p50_ms} ms "
            f"(load {phase.load})"
        )
        return phase

    # the ceiling

    async def ceiling(self, chunk: int, n: int) -> None:
        hook = self.receiver.hook
        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def blast(total: int, size: int) -> None:
                starts = iter(range(0, total, size))

                async def worker() -> None:
                    for start in starts:
                        items = [
                            make_event(i, hook) for i in range(start, min(start + size, total))
                        ]
                        async with session.post(
                            hook, data=orjson.dumps(items), headers=HEADERS
                        ) as r:
                            await r.read()
                            if r.status != 200:
                                raise BenchError(f"receiver answered {r.status}")

                await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

            self.receiver.call("/reset")
            await blast(CONCURRENCY * 4, 1)  # opens every pooled connection
            self.receiver.call("/reset")
            cpu0 = self._cpu()
            t0 = time.time()
            await blast(n, chunk)
            t_sent = time.time()
        self._finish(Phase(f"ceiling chunk={chunk}", n), t0, t_sent, cpu0, n)

    # crmhooks

    async def register(self, session: aiohttp.ClientSession, chunk: int) -> str:
        assert self.serve
        options: dict[str, Any] = {"chunk_size": chunk}
        if self.opts.kit_shape:
            options["entity"] = {"Account": {"load-only": KIT_FIELDS}}
        body = {
            "url": self.receiver.hook,
            "events": ["Account.Create"],
            "insecure_ssl": False,
            "options": options,
        }
        async with session.post(self.serve.entities("Webhooks"), data=orjson.dumps(body)) as r:
            data = await _json(r, 201)
        # warm-up: connections open, caches filled, then a clean receiver
        await self.batch(session, 0, BATCH)
        self.receiver.wait(BATCH, 30)
        self.receiver.settle()  # nothing late (another webhook's copies) counts in the next run
        self.receiver.call("/reset")
        return str(data["data"]["id"])

    async def unregister(self, session: aiohttp.ClientSession, hook_id: str) -> None:
        assert self.serve
        async with session.delete(self.serve.entities(f"Webhooks/{hook_id}")) as r:
            await r.read()
            if r.status >= 300:
                raise BenchError(f"DELETE webhook -> {r.status}")

    async def batch(self, session: aiohttp.ClientSession, first: int, count: int) -> None:
        assert self.serve
        items = [account_fields(i, self.serve.owner) for i in range(first, first + count)]
        url = self.serve.entities("Accounts/batch-modify")
        async with session.post(url, data=orjson.dumps(items)) as r:
            data = await _json(r, 200)
        if any(not isinstance(v, str) for v in data["data"]):
            raise BenchError(f"batch-modify failed: {data['data'][:3]}")

    async def create(self, session: aiohttp.ClientSession, i: int) -> str:
        assert self.serve
        body = orjson.dumps(account_fields(i, self.serve.owner))
        async with session.post(self.serve.entities("Accounts"), data=body) as r:
            data = await _json(r, 201)
        return str(data["data"]["id"])

    async def batch_ingest(self, session: aiohttp.ClientSession, name: str, n: int) -> None:
        self.receiver.call("/reset")
        cpu0 = self._cpu()
        t0 = time.time()
        end = time.monotonic() + self.opts.seconds
        written = 0
        while written < n and time.monotonic() < end:
            await self.batch(session, 1_000_000 + written, min(BATCH, n - written))
            written += min(BATCH, n - written)
        t_written = time.time()
        phase = self._finish(Phase(name, written), t0, t_written, cpu0, written)
        # How far delivery kept up while the batches were written (SQLite's one writer is
        # shared): the events that arrived before the last batch was answered.
        arrivals: dict[str, float] = self.receiver.call("/arrivals")
        during = sum(1 for t in arrivals.values() if t <= t_written)
        phase.extra["delivered_while_writing"] = during
        phase.extra["delivered_while_writing_per_s"] = during / max(t_written - t0, 1e-9)

    async def clients(
        self, session: aiohttp.ClientSession, name: str, n: int, clients: int
    ) -> Phase:
        """One POST per event from ``clients`` concurrent clients; also the creates' rate."""
        self.receiver.call("/reset")
        todo = iter(range(n))
        end = time.monotonic() + self.opts.seconds
        latencies: list[float] = []

        async def worker() -> None:
            for i in todo:
                if time.monotonic() > end:
                    return
                t = time.perf_counter()
                await self.create(session, 2_000_000 + i)
                latencies.append(time.perf_counter() - t)

        cpu0 = self._cpu()
        t0 = time.time()
        await asyncio.gather(*(worker() for _ in range(clients)))
        t_written = time.time()
        phase = self._finish(Phase(name, len(latencies)), t0, t_written, cpu0, len(latencies))
        latencies.sort()
        phase.extra["creates_per_s"] = len(latencies) / max(t_written - t0, 1e-9)
        phase.extra["create_p50_ms"] = nearest_rank(latencies, 0.5) * 1000
        return phase

    async def single_creates(self, session: aiohttp.ClientSession, name: str) -> None:
        """Creates from one client, one at a time: the create's p50 (and the delivery's, if
        a webhook listens)."""
        self.receiver.call("/reset")
        latencies: list[float] = []
        cpu0 = self._cpu()
        t0 = time.time()
        end = time.monotonic() + self.opts.seconds
        for i in range(self.opts.singles):
            if time.monotonic() > end:
                break
            t = time.perf_counter()
            await self.create(session, 3_000_000 + i)
            latencies.append(time.perf_counter() - t)
        t_written = time.time()
        listening = not name.endswith("no webhook")
        phase = self._finish(
            Phase(name, len(latencies)), t0, t_written, cpu0, len(latencies) if listening else 0
        )
        latencies.sort()
        phase.extra["create_p50_ms"] = nearest_rank(latencies, 0.5) * 1000
        phase.extra["create_p99_ms"] = nearest_rank(latencies, 0.99) * 1000

    async def paced(self, session: aiohttp.ClientSession, name: str) -> None:
        """Single creates at a fixed rate from one client; each write's 2xx matched to its
        arrival at the receiver by the entity id."""
        self.receiver.call("/reset")
        done: dict[str, float] = {}
        step = 1.0 / self.opts.rate
        cpu0 = self._cpu()
        t0 = time.time()
        start = time.monotonic()
        for i in range(self.opts.latency_writes):
            due = start + i * step
            now = time.monotonic()
            if now - start > self.opts.seconds:
                break
            if due > now:
                await asyncio.sleep(due - now)
            eid = await self.create(session, 4_000_000 + i)
            done[eid] = time.time()
        t_written = time.time()
        phase = self._finish(Phase(name, len(done)), t0, t_written, cpu0, len(done))
        arrivals: dict[str, float] = self.receiver.call("/arrivals")
        lat = sorted((arrivals[k] - v) * 1000 for k, v in done.items() if k in arrivals)
        phase.extra["matched"] = len(lat)
        if lat:
            phase.extra["write_to_receipt_p50_ms"] = nearest_rank(lat, 0.5)
            phase.extra["write_to_receipt_p99_ms"] = nearest_rank(lat, 0.99)
            phase.extra["write_to_receipt_max_ms"] = lat[-1]

    async def crmhooks(self) -> None:
        assert self.serve
        o = self.opts
        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=self.serve.auth
        ) as s:
            await self.single_creates(s, "create, 1 client, no webhook")
            hook = await self.register(s, 1)
            await self.single_creates(s, "create, 1 client, one webhook")
            await self.paced(s, f"latency at {o.rate:g} writes/s")
            await self.batch_ingest(s, "batch ingest, chunk_size 1", o.events)
            await self.clients(s, "one POST per event, 8 clients, chunk_size 1", o.events, 8)
            await self.clients(s, "creates, 16 clients, one webhook", o.creates, 16)
            await self.unregister(s, hook)
            hook = await self.register(s, 100)
            await self.batch_ingest(s, "batch ingest, chunk_size 100", o.events_100)
            await self.unregister(s, hook)


def run_round(
    index: int, opts: Options, engine: str, pg_url: str, serve_args: list[str], workers: int
) -> Round:
    with tempfile.TemporaryDirectory(prefix="crmhooks-e2e-") as tmp:
        workdir = Path(tmp)
        receiver = start_receiver(max_seconds=3600)
        try:
            rnd = Round(index, receiver, opts)
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(rnd.ceiling(1, opts.ceiling))
                runner.run(rnd.ceiling(100, opts.ceiling_100))
                with _database(engine, workdir, pg_url) as db_url:
                    serve = start_serve(db_url, workdir, serve_args)
                    below: list[int] = []
                    try:
                        rnd.serve = serve
                        for _ in range(workers):
                            rnd.workers.append(start_worker(db_url, workdir))
                        time.sleep(1.0)  # let a delivery process below serve start
                        below = descendants(serve.process.pid)
                        runner.run(rnd.crmhooks())
                        below = sorted(set(below) | set(descendants(serve.process.pid)))
                    except BaseException:
                        console.print(serve.log.read_text(errors="replace")[-3000:])
                        raise
                    finally:
                        for w in rnd.workers:
                            stop(w, descendants(w.pid))
                        stop(serve.process, below)
            return rnd
        finally:
            stop(receiver.process)


@contextmanager
def _database(engine: str, workdir: Path, pg_url: str) -> Iterator[str]:
    if engine == "postgresql":
        with postgres_database(pg_url) as url:
            yield url
    else:
        yield f"sqlite:///{workdir / 'bench.db'}"


# --- figures --------------------------------------------------------------------------------

B1 = "batch ingest, chunk_size 1"
C8 = "one POST per event, 8 clients, chunk_size 1"
C16 = "creates, 16 clients, one webhook"
B100 = "batch ingest, chunk_size 100"
NONE = "create, 1 client, no webhook"
ONE = "create, 1 client, one webhook"


def _latency(r: Round) -> Phase:
    return next(p for k, p in r.phases.items() if k.startswith("latency at"))


def _ratio(r: Round, name: str, chunk: int = 1) -> float:
    return r.phases[name].events_per_s / r.phases[f"ceiling chunk={chunk}"].events_per_s


@dataclass
class Figure:
    label: str
    target: str
    value: Callable[[Round], float]
    fmt: str
    passed: Callable[[float], bool] | None = None


def _rate(name: str) -> Callable[[Round], float]:
    return lambda r: r.phases[name].events_per_s


def _extra(name: str, key: str) -> Callable[[Round], float]:
    return lambda r: r.phases[name].extra.get(key, float("nan"))


def _paced(key: str) -> Callable[[Round], float]:
    return lambda r: _latency(r).extra.get(key, float("nan"))


def _create_ratio(r: Round) -> float:
    return r.phases[ONE].extra["create_p50_ms"] / r.phases[NONE].extra["create_p50_ms"]


def figures() -> list[Figure]:
    n, ms = "{:,.0f}", "{:.2f} ms"
    return [
        Figure("bare ceiling, chunk_size 1: events/s", "", _rate("ceiling chunk=1"), n),
        Figure("bare ceiling, chunk_size 100: events/s", "", _rate("ceiling chunk=100"), n),
        Figure("end to end, batch ingest, chunk_size 1: events/s", "", _rate(B1), n),
        Figure(
            "  ÷ bare ceiling (chunk_size 1)",
            "≥ 0.45",
            lambda r: _ratio(r, B1),
            "{:.3f}",
            lambda v: v >= 0.45,
        ),
        Figure(
            "  delivered while the batches were written: events/s",
            "",
            _extra(B1, "delivered_while_writing_per_s"),
            n,
        ),
        Figure(
            "end to end, one POST per event, 8 clients, chunk_size 1: events/s", "", _rate(C8), n
        ),
        Figure(
            "  ÷ bare ceiling (chunk_size 1)",
            "≥ 0.30",
            lambda r: _ratio(r, C8),
            "{:.3f}",
            lambda v: v >= 0.30,
        ),
        Figure(
            "latency at the paced rate, one client: p50, write's 2xx to the receiver",
            "< 5 ms",
            _paced("write_to_receipt_p50_ms"),
            ms,
            lambda v: v < 5,
        ),
        Figure("  p99", "< 25 ms", _paced("write_to_receipt_p99_ms"), ms, lambda v: v < 25),
        Figure(
            "end to end, batch ingest, chunk_size 100: events/s",
            "≥ 6,000",
            _rate(B100),
            n,
            lambda v: v >= 6000,
        ),
        Figure("  ÷ bare ceiling (chunk_size 100)", "", lambda r: _ratio(r, B100, 100), "{:.3f}"),
        Figure(
            "creates, 16 clients, one webhook delivering each: creates/s",
            "≥ 1,000",
            _extra(C16, "creates_per_s"),
            n,
            lambda v: v >= 1000,
        ),
        Figure("  delivered end to end: events/s", "", _rate(C16), n),
        Figure("single-client create p50, one webhook", "", _extra(ONE, "create_p50_ms"), ms),
        Figure("  no webhook", "", _extra(NONE, "create_p50_ms"), ms),
        Figure("  one webhook ÷ none", "≤ 1.3x", _create_ratio, "{:.2f}x", lambda v: v <= 1.3),
    ]


def _cell(values: list[float], fmt: str) -> str:
    values = [v for v in values if v == v]  # drop NaN
    if not values:
        return "-"
    med = fmt.format(statistics.median(values))
    if len(values) == 1:
        return med
    return f"{med} [{fmt.format(min(values))} - {fmt.format(max(values))}]"


def figure_rows(rounds: list[Round]) -> list[tuple[str, str, str, bool | None]]:
    rows = []
    for f in figures():
        values = []
        for r in rounds:
            try:
                values.append(f.value(r))
            except (KeyError, ZeroDivisionError, StopIteration):
                values.append(float("nan"))
        cell = _cell(values, f.fmt)
        known = [v for v in values if v == v]
        met = f.passed(statistics.median(known)) if f.passed and known else None
        rows.append((f.label, f.target, cell, met))
    return rows


# The kit's table: one row per measured run, named as the kit names its systems.
KIT_ROWS = [
    ("ceiling chunk=1", "ceiling aiohttp chunk=1", 1),
    ("ceiling chunk=100", "ceiling aiohttp chunk=100", 1),
    (B1, "crmhooks chunk=1 ingest=batch", 1),
    (C8, "crmhooks chunk=1 ingest=clients8", 1),
    (C16, "crmhooks chunk=1 ingest=clients16", 1),
    (B100, "crmhooks chunk=100 ingest=batch", 1),
]


def kit_rows(rounds: list[Round]) -> list[list[str]]:
    out = []
    for key, label, _ in KIT_ROWS:
        ps = [r.phases[key] for r in rounds if key in r.phases]
        if not ps:
            continue
        ratios = [
            p.events_per_s / r.phases["ceiling chunk=1"].events_per_s
            for r, p in zip(rounds, ps, strict=False)
        ]
        out.append(
            [
                label,
                str(len(ps)),
                f"{min(p.received for p in ps):,}/{max(p.written for p in ps):,}",
                _cell([p.events_per_s for p in ps], "{:,.0f}"),
                _cell([p.p50_ms or float("nan") for p in ps], "{:.1f}"),
                _cell([p.p99_ms or float("nan") for p in ps], "{:.1f}"),
                _cell(ratios, "{:.3f}"),
                _cell([p.enqueue_per_s for p in ps], "{:,.0f}"),
                _cell([p.bytes_per_event for p in ps], "{:,.0f}"),
            ]
        )
    return out


KIT_HEADER = [
    "system",
    "runs",
    "delivered",
    "events/s",
    "p50 ms",
    "p99 ms",
    "ratio to ceiling",
    "enqueue/s",
    "bytes/event",
]

CPU_PHASES = [B1, C8, C16, B100, "ceiling chunk=1", "ceiling chunk=100"]
CPU_HEADER = [
    "run",
    "serve: API process",
    "serve: processes below it",
    "serve: all",
    "workers",
    "receiver",
    "load generator",
]


def cpu_rows(rounds: list[Round]) -> list[list[str]]:
    out = []
    for key in CPU_PHASES:
        ps = [r.phases[key] for r in rounds if key in r.phases and r.phases[key].cpu]
        if not ps:
            continue

        def per_event(get: Callable[[Cpu], float], ps: list[Phase] = ps) -> str:
            return _cell([get(p.cpu) * 1e6 / max(p.received, 1) for p in ps if p.cpu], "{:,.0f}")

        below = max(p.cpu.processes_below for p in ps if p.cpu)
        serve = key.startswith("ceiling") is False
        out.append(
            [
                key,
                per_event(lambda c: c.api) if serve else "-",
                (per_event(lambda c: c.below) + f" ({below} proc.)") if serve else "-",
                per_event(lambda c: c.api + c.below) if serve else "-",
                per_event(lambda c: c.workers) if serve else "-",
                per_event(lambda c: c.receiver),
                per_event(lambda c: c.client),
            ]
        )
    return out


def print_tables(rounds: list[Round]) -> None:
    t = Table(title=f"crmhooks end to end: {len(rounds)} round(s), median [min - max]")
    for h in ("figure", "target", "measured"):
        t.add_column(h)
    for label, target, cell, met in figure_rows(rounds):
        colour = "" if met is None else ("[green]" if met else "[red]")
        t.add_row(label, target, f"{colour}{cell}[/]" if colour else cell)
    console.print(t)
    k = Table(title="the peers kit's columns (ratio within each round)")
    for h in KIT_HEADER:
        k.add_column(h)
    for row in kit_rows(rounds):
        k.add_row(*row)
    console.print(k)
    c = Table(title="CPU µs per event delivered, by process")
    for h in CPU_HEADER:
        c.add_column(h)
    for row in cpu_rows(rounds):
        c.add_row(*row)
    console.print(c)


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def revision() -> str:
    """The commit of the crmhooks measured (its ``src`` changed since, if so), when in git."""
    src = Path(crmhooks.__file__).resolve().parent
    try:
        head = subprocess.run(  # the last commit that changed src
            ["git", "log", "-1", "--format=%h", "--", "."],
            cwd=src,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "."], cwd=src, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "crmhooks (not in git)"
    return f"crmhooks src as of {head}" + (" with uncommitted changes" if dirty else "")


def markdown(rounds: list[Round], opts: Options, command: str, engine: str, before: str) -> str:
    lines = [
        f"Measured {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {revision()}, "
        f"on {machine()}, {engine}; `serve`, the receiver and the load generator share the "
        f"{os.cpu_count()} cores with whatever else runs. Load average (1 / 5 / 15 min) "
        f"{before} before the run, {load_average()} after it. {len(rounds)} round(s): "
        "median [min - max]; ratios are taken within each round.",
        "",
        *reproduce(command),
        "| Figure | Target | Measured |",
        "| --- | --- | --- |",
    ]
    for label, target, cell, met in figure_rows(rounds):
        mark = "" if met is None else (" (met)" if met else " (**missed**)")
        lines.append(f"| {label.strip()} | {target} | {cell}{mark} |")
    lines += ["", "The same runs in the peers kit's columns:", ""]
    lines += _md_table(KIT_HEADER, kit_rows(rounds))
    lines += ["", "CPU per event delivered (µs), by process:", ""]
    lines += _md_table(CPU_HEADER, cpu_rows(rounds))
    lines += [
        "",
        f"- Counts: {opts.events:,} events per chunk_size 1 run, {opts.events_100:,} at "
        f"chunk_size 100, {opts.creates:,} creates from 16 clients, {opts.singles:,} single "
        f"creates per p50, {opts.latency_writes:,} paced writes at {opts.rate:g}/s; ceiling "
        f"{opts.ceiling:,} and {opts.ceiling_100:,} events; each write phase bounded by "
        f"{opts.seconds:g} s, each wait for delivery by {opts.deadline:g} s.",
    ]
    for r in rounds:
        each = [
            f"{p.name}: "
            + ", ".join(f"`{k}` {v * 1e6 / max(p.received, 1):,.0f}" for k, v in p.cpu.each_below)
            for p in r.phases.values()
            if p.cpu and p.cpu.each_below
        ]
        if each:
            lines.append(
                f"- Processes below `serve` in round {r.index}, CPU µs per event: "
                + "; ".join(each)
                + "."
            )
    for r in rounds:
        parts = []
        for p in r.phases.values():
            extra = ", ".join(f"{k} {v:,.2f}" for k, v in p.extra.items())
            parts.append(
                f"{p.name}: {p.received:,}/{p.written:,}, {p.events_per_s:,.0f}/s"
                + (f" ({extra})" if extra else "")
                + f", load {p.load}"
            )
        lines.append(
            f"- Round {r.index} (cores busy just before: {r.busy_before:.2f}, load average "
            f"{r.load_before}): " + "; ".join(parts) + "."
        )
    return "\n".join(lines)


def write_docs(path: Path, block: str) -> None:
    replace_figures(path, block, SECTION, BEGIN, END)


# --- command line ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.end_to_end", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds (median [min-max])")
    p.add_argument("--events", type=int, default=5000, help="events per chunk_size 1 run")
    p.add_argument("--events-100", type=int, default=20_000, help="events at chunk_size 100")
    p.add_argument("--ceiling", type=int, default=5000, help="ceiling events, chunk_size 1")
    p.add_argument("--ceiling-100", type=int, default=100_000, help="ceiling, chunk_size 100")
    p.add_argument("--creates", type=int, default=5000, help="creates from 16 clients")
    p.add_argument("--singles", type=int, default=500, help="single-client creates per p50")
    p.add_argument("--latency-writes", type=int, default=1000, help="paced writes")
    p.add_argument("--rate", type=float, default=50.0, help="paced writes per second")
    p.add_argument("--seconds", type=float, default=60.0, help="time bound of each write phase")
    p.add_argument("--deadline", type=float, default=120.0, help="wait for delivery at most")
    p.add_argument(
        "--kit-shape",
        action="store_true",
        help="webhooks ask for the kit's entity fields alone (load-only), not the full record",
    )
    p.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument(
        "--postgres-url",
        default=os.environ.get("CRMHOOKS_BENCH_POSTGRES_URL", DEFAULT_PG),
        help="a database to create (and drop) a schema of its own in",
    )
    p.add_argument("--serve-arg", action="append", default=[], help="an argument for serve")
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="`crmhooks worker` processes beside serve (with --serve-arg=--no-delivery)",
    )
    p.add_argument("--docs", type=Path, default=DOCS, help="markdown file to update")
    p.add_argument("--no-docs", action="store_true", help="print only")
    args = p.parse_args(argv)
    opts = Options(
        args.events,
        args.events_100,
        args.ceiling,
        args.ceiling_100,
        args.creates,
        args.singles,
        args.latency_writes,
        args.rate,
        args.seconds,
        args.deadline,
        args.kit_shape,
    )
    before = load_average()
    engine = "SQLite"
    if args.engine == "postgresql":
        engine = f"PostgreSQL {postgres_version(args.postgres_url)}"
    console.print(f"load average {before}; cores busy now {cores_busy():.2f}")
    rounds = []
    for i in range(1, args.rounds + 1):
        console.print(f"round {i}/{args.rounds} (load average {load_average()})")
        rounds.append(
            run_round(i, opts, args.engine, args.postgres_url, args.serve_arg, args.workers)
        )
    print_tables(rounds)
    if not args.no_docs:
        given = argv if argv is not None else sys.argv[1:]
        shown = [
            a
            for i, a in enumerate(given)
            if not a.startswith("--docs") and (i == 0 or given[i - 1] != "--docs")
        ]
        command = " ".join(["python -m bench.end_to_end", *shown])
        write_docs(args.docs, markdown(rounds, opts, command, engine, before))
        console.print(f"updated {args.docs}")


if __name__ == "__main__":
    main()
