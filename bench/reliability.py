"""Delivery under trouble: isolation from hanging receivers, and a backlog of a million requests.

1. Isolation. A healthy receiver (this repository's bench receiver, answers 200 at once) and a
   hanging one (accepts every request and never answers; the server's request timeout, 15 s,
   is longer than a run). One webhook on ``Account.Create`` (chunk_size 1) points at the
   healthy receiver; with ``--dead`` webhooks on ``Account.Update`` point at the hanging one.
   The events are written through the API with delivery off: ``--updates`` accounts created
   and updated (every dead webhook gets a request for each update), then ``--events`` more
   accounts created. ``serve`` is then started with delivery on and timed from its first answer
   to the last event at the healthy receiver, on a copy of that database with the dead webhooks
   and on one without them (deleted from the copy); runs alternate, the best of each is kept.
2. Backlog. ``--backlog`` pending requests (due now, each with one record, a realistic body)
   stored in SQL for one webhook. In this process the claim (``Dispatcher.claim_once``, one
   statement for the webhook, sending stubbed out) and the scan for webhooks with work are
   timed as the backlog grows. Then ``serve`` runs on the largest backlog, delivering to the
   healthy receiver, and its memory (with its delivery process) is sampled from ``/proc``
   for ``--seconds``.

Run ``python -m bench.reliability``; the figures are printed and written to the "Delivery under
trouble" section of ``docs/benchmarks.md`` (``--no-docs`` to skip).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web
from rich.table import Table

from bench.api_speed import machine, reproduce, stop_server, wait_for_quiet
from bench.delivery_speed import (
    ACCOUNTS,
    BATCH,
    HOST,
    WEBHOOKS_PATH,
    Key,
    Receiver,
    _copy_database,
    _free_port,
    _json,
    _loop_factory,
    _NoSend,
    console,
    receiver_call,
    start_receiver,
    start_serve,
    wait_answering,
    wait_for_events,
    write_accounts,
    write_section,
)
from bench.end_to_end import descendants, tree_cpu
from crmhooks import logs
from crmhooks.delivery.dispatcher import Dispatcher, DispatchSettings
from crmhooks.delivery.queue import SqlQueue
from crmhooks.delivery.retry import DEFAULT_SCHEDULE
from crmhooks.delivery.router import Router
from crmhooks.netguard import Guard, parse_allowed
from crmhooks.store.engine import open_database

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
HEADING = "## Delivery under trouble"

# --- the hanging receiver -------------------------------------------------------------------


def run_hanging(port: int) -> None:
    """Accept every request and never answer; count them at ``GET /stats``."""
    held = 0

    async def hang(_: web.Request) -> web.Response:
        nonlocal held
        held += 1
        await asyncio.Event().wait()
        return web.Response()

    async def stats(_: web.Request) -> web.Response:
        return web.json_response({"held": held})

    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/dead/{n}", hang)
        app.router.add_get("/stats", stats)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, HOST, port, backlog=1024).start()
        await asyncio.Event().wait()

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve())


@dataclass
class Hanging:
    url: str
    process: subprocess.Popen[bytes]

    def held(self) -> int:
        with urllib.request.urlopen(self.url + "/stats", timeout=5) as r:
            return int(orjson.loads(r.read())["held"])


def start_hanging() -> Hanging:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.reliability", "hang", "--port", str(port)], cwd=ROOT
    )
    return Hanging(wait_answering(port, proc, "the hanging receiver"), proc)


# --- isolation ------------------------------------------------------------------------------


async def _register(serve_url: str, key: Key, url: str, events: list[str]) -> str:
    body = {"url": url, "events": events, "insecure_ssl": False, "options": {"chunk_size": 1}}
    async with (
        aiohttp.ClientSession(headers=key.headers()) as s,
        s.post(serve_url + WEBHOOKS_PATH, data=orjson.dumps(body)) as resp,
    ):
        data = await _json(resp, 201)
    return str(data["data"]["id"])


async def _update_all(serve_url: str, key: Key, ids: list[str]) -> None:
    async with aiohttp.ClientSession(headers=key.headers()) as s:
        for first in range(0, len(ids), BATCH):
            items = [{"id": i, "city": "Bergen"} for i in ids[first : first + BATCH]]
            body = orjson.dumps(items)
            async with s.post(serve_url + ACCOUNTS + "/batch-modify", data=body) as resp:
                data = await _json(resp, 200)
            if any(not isinstance(v, str) for v in data["data"]):
                raise RuntimeError(f"batch-modify failed: {data['data'][:3]}")


@dataclass
class Isolation:
    events: int
    updates: int
    dead: int
    healthy_events: int = 0
    base_rates: list[float] = field(default_factory=list)
    dead_rates: list[float] = field(default_factory=list)
    held: list[int] = field(default_factory=list)  # requests held by the hanging receiver
    base_cpu: list[float] = field(default_factory=list)  # serve CPU µs per healthy event
    dead_cpu: list[float] = field(default_factory=list)
    background: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return max(self.dead_rates) / max(self.base_rates)


def build_isolation_db(
    result: Isolation, receiver: Receiver, hanging: Hanging, workdir: Path
) -> tuple[Path, Key, list[str]]:
    db_file = workdir / "isolation.db"
    key = Key()
    console.print(
        f"  isolation: {result.dead} dead webhooks, {result.updates} updates, "
        f"{result.events:,} creates (delivery off)",
        style="dim",
    )
    serve = start_serve(f"sqlite:///{db_file}", workdir, delivery=False, key=key)
    dead_ids: list[str] = []
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_register(serve.url, key, receiver.hook, ["Account.Create"]))
            for n in range(result.dead):
                url = f"{hanging.url}/dead/{n}"
                dead_ids.append(runner.run(_register(serve.url, key, url, ["Account.Update"])))
            runner.run(write_accounts(serve, key, result.updates))
            with sqlite3.connect(db_file) as conn:
                ids = [r[0] for r in conn.execute("SELECT id FROM accounts")]
            runner.run(_update_all(serve.url, key, ids))
            runner.run(write_accounts(serve, key, result.events))
    finally:
        stop_server(serve.process)
    result.healthy_events = result.updates + result.events
    return db_file, key, dead_ids


def isolation_run(
    source: Path,
    key: Key,
    dead_ids: list[str],
    with_dead: bool,
    result: Isolation,
    receiver: Receiver,
    hanging: Hanging,
    quiet_wait: float,
    n: int,
) -> None:
    db_file = source.parent / f"isolation-{'dead' if with_dead else 'base'}-{n}.db"
    _copy_database(source, db_file)
    if not with_dead:
        with sqlite3.connect(db_file) as conn:
            marks = ", ".join("?" for _ in dead_ids)
            conn.execute(f"DELETE FROM webhooks WHERE id IN ({marks})", dead_ids)
    receiver_call(receiver, "/reset", "POST")
    held0 = hanging.held()
    result.background.append(wait_for_quiet(quiet_wait) if quiet_wait > 0 else float("nan"))
    label = "with the dead webhooks" if with_dead else "without them"
    console.print(f"  isolation: delivering, {label}", style="dim")
    serve = start_serve(f"sqlite:///{db_file}", db_file.parent, delivery=True, key=key)
    try:
        # serve and what runs below it: since issue 13 its delivery process is a child.
        cpu0 = tree_cpu(serve.process.pid)
        stats = wait_for_events(receiver, result.healthy_events, within=180)
        cpu = tree_cpu(serve.process.pid) - cpu0
        held = hanging.held() - held0
    finally:
        serve.process.kill()  # the hanging requests would hold a graceful stop for its grace
        serve.process.wait(10)
    if stats["distinct"] < result.healthy_events:
        raise RuntimeError(f"only {stats['distinct']} of {result.healthy_events} arrived")
    rate = stats["distinct"] / (stats["last"] - serve.ready)
    per_event = 1e6 * cpu / stats["distinct"]
    if with_dead:
        result.dead_rates.append(rate)
        result.dead_cpu.append(per_event)
        result.held.append(held)
    else:
        result.base_rates.append(rate)
        result.base_cpu.append(per_event)


def measure_isolation(
    result: Isolation, receiver: Receiver, workdir: Path, quiet_wait: float, runs: int
) -> None:
    hanging = start_hanging()
    try:
        source, key, dead_ids = build_isolation_db(result, receiver, hanging, workdir)
        for n in range(runs):
            for with_dead in (False, True):
                isolation_run(
                    source,
                    key,
                    dead_ids,
                    with_dead,
                    result,
                    receiver,
                    hanging,
                    quiet_wait,
                    n,
                )
    finally:
        stop_server(hanging.process)


# --- backlog --------------------------------------------------------------------------------


@dataclass
class Backlog:
    sizes: list[int]
    seconds: float
    claim_ms: dict[int, list[float]] = field(default_factory=dict)  # one claim_once each
    scan_ms: dict[int, list[float]] = field(default_factory=dict)
    fill_seconds: float = 0.0
    db_mb: float = 0.0
    rss_start_mb: float = 0.0  # resident sets of serve's processes, summed
    rss_max_mb: float = 0.0
    pss_start_mb: float = 0.0  # their proportional sets (shared pages once), summed
    pss_max_mb: float = 0.0
    delivered: int = 0
    rss_samples: int = 0


def _body(i: int, webhook_id: str, now: str) -> str:
    record = {
        "id": str(uuid.UUID(int=i)),
        "name": f"Backlog account {i}",
        "email1": f"b{i}@example.com",
        "city": "Oslo",
        "owner_id": None,
        "created": now,
        "modified": now,
        "revision": 1,
        "is_deleted": False,
    }
    element = {
        "id": str(uuid.uuid4()),
        "event": "Account.Create",
        "event_time": now,
        "team_space_id": "default",
        "webhook": {"id": webhook_id, "url": "http://127.0.0.1/hook", "client_id": None},
        "entity": record,
        "related_entity": None,
        "changes": None,
    }
    return orjson.dumps([element]).decode()


def fill_backlog(db_file: Path, webhook_id: str, start: int, stop: int) -> None:
    """Pending requests ``start``..``stop`` (due now), one record each, in SQL."""
    now = datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")
    iso = now.isoformat()
    with sqlite3.connect(db_file) as conn:
        for first in range(start, stop, 20_000):
            rows = []
            records = []
            for i in range(first, min(first + 20_000, stop)):
                delivery_id = str(uuid.uuid4())
                rows.append(
                    (
                        delivery_id,
                        webhook_id,
                        "default",
                        "pending",
                        _body(i, webhook_id, iso),
                        orjson.dumps([str(uuid.uuid4())]).decode(),
                        1,
                        i + 1,
                        0,
                        stamp,
                        stamp,
                    )
                )
                records.append((delivery_id, str(uuid.UUID(int=i)), webhook_id, i + 1))
            conn.executemany(
                "INSERT INTO deliveries (id, webhook_id, space_id, status, event_ids,"
                " event_count, first_seq, attempts, next_attempt_at, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [r[:4] + r[5:] for r in rows],
            )
            conn.executemany(
                "INSERT INTO delivery_bodies (delivery_id, body) VALUES (?, ?)",
                [(r[0], r[4]) for r in rows],
            )
            conn.executemany(
                "INSERT INTO delivery_records (delivery_id, record_id, webhook_id, first_seq)"
                " VALUES (?, ?, ?, ?)",
                records,
            )
        conn.execute("ANALYZE")


async def _time_claims(db_file: Path, rounds: int) -> tuple[list[float], list[float]]:
    """Claim ``rounds`` times (sending stubbed: every request succeeds at once), timing each
    claim and the scan for webhooks with work; the outcomes are recorded between claims."""
    db = open_database(f"sqlite:///{db_file}")
    try:
        router = Router(db, "http://127.0.0.1:8000")
        queue = SqlQueue(db)
        no_send = _NoSend(Guard(parse_allowed("")))
        cfg = DispatchSettings(DEFAULT_SCHEDULE)
        dispatcher = Dispatcher(queue, router, router.webhooks, no_send, cfg)
        async with db.read() as conn:
            await router.load(conn)
        claims: list[float] = []
        scans: list[float] = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            found = await queue.pending_webhooks()
            scans.append(1000 * (time.perf_counter() - t0))
            assert found, "no webhook with work"
            dispatcher._scanned = time.monotonic()  # the claim is timed without the scan
            dispatcher._work.update(found)
            t0 = time.perf_counter()
            await dispatcher.claim_once()
            claims.append(1000 * (time.perf_counter() - t0))
            await dispatcher.sent()
            await dispatcher.flush()
        return claims, scans
    finally:
        await db.dispose()


def tree_memory_mb(pid: int) -> tuple[float, float]:
    """Memory of ``pid`` and every process below it (serve's delivery process, forked from
    it): the sum of their resident sets, and of their proportional sets (PSS: a page the
    processes share, as a fork's are until written, counted once in all)."""
    rss = pss = 0.0
    for p in (pid, *descendants(pid)):
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) / 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) / 1024
        except OSError:
            if p == pid:
                return float("nan"), float("nan")
    return rss, pss


def measure_backlog(result: Backlog, receiver: Receiver, workdir: Path, rounds: int) -> None:
    db_file = workdir / "backlog.db"
    key = Key()
    serve = start_serve(f"sqlite:///{db_file}", workdir, delivery=False, key=key)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            webhook_id = runner.run(_register(serve.url, key, receiver.hook, ["Account.Create"]))
    finally:
        stop_server(serve.process)
    filled = 0
    t0 = time.perf_counter()
    for size in sorted(result.sizes):
        console.print(f"  backlog: {size:,} pending requests", style="dim")
        fill_backlog(db_file, webhook_id, filled, size)
        filled = size
        result.fill_seconds = time.perf_counter() - t0
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            claims, scans = runner.run(_time_claims(db_file, rounds))
        result.claim_ms[size], result.scan_ms[size] = claims, scans
        t0 = time.perf_counter()
    result.db_mb = db_file.stat().st_size / 1e6
    console.print(
        f"  backlog: serve delivering from {max(result.sizes):,}, memory sampled",
        style="dim",
    )
    receiver_call(receiver, "/reset", "POST")
    serve = start_serve(f"sqlite:///{db_file}", workdir, delivery=True, key=key)
    try:
        result.rss_start_mb, result.pss_start_mb = tree_memory_mb(serve.process.pid)
        peak, peak_pss = result.rss_start_mb, result.pss_start_mb
        deadline = time.monotonic() + result.seconds
        while time.monotonic() < deadline:
            rss, pss = tree_memory_mb(serve.process.pid)
            peak, peak_pss = max(peak, rss), max(peak_pss, pss)
            result.rss_samples += 1
            time.sleep(0.1)
        result.rss_max_mb, result.pss_max_mb = peak, peak_pss
        result.delivered = int(receiver_call(receiver, "/stats")["distinct"])
    finally:
        stop_server(serve.process)


# --- report ---------------------------------------------------------------------------------


def _p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table_rows(iso: Isolation, back: Backlog) -> list[tuple[str, str, str, bool | None]]:
    rows: list[tuple[str, str, str, bool | None]] = [
        (
            f"events/s to the healthy receiver, {iso.dead} hanging webhooks registered / none",
            ">= 90%",
            f"{max(iso.dead_rates):,.0f} / {max(iso.base_rates):,.0f} = {iso.ratio:.0%}",
            iso.ratio >= 0.9,
        ),
    ]
    largest = max(back.sizes)
    smallest = min(back.sizes)
    growth = _p50(back.claim_ms[largest]) / _p50(back.claim_ms[smallest])
    claims = ", ".join(f"{n:,}: {_p50(back.claim_ms[n]):.2f} ms" for n in sorted(back.sizes))
    rows.append(
        (
            "claim (one `claim_once`, up to 32 requests) p50 by backlog",
            f"not with the backlog: < 2x for {largest // smallest:,}x",
            f"{claims} ({growth:.2f}x)",
            growth < 2,
        )
    )
    scans = ", ".join(f"{n:,}: {_p50(back.scan_ms[n]):.2f} ms" for n in sorted(back.sizes))
    rows.append(("scan for webhooks with work, p50 by backlog", "", scans, None))
    rows.append(
        (
            f"`serve` memory (PSS of its processes) delivering from {largest:,} pending: "
            "at start / peak",
            "< 300 MB",
            f"{back.pss_start_mb:.0f} MB / {back.pss_max_mb:.0f} MB",
            back.pss_max_mb < 300,
        )
    )
    return rows


def print_table(iso: Isolation, back: Backlog) -> None:
    table = Table(title="crmhooks delivery under trouble (serve + receiver processes, SQLite)")
    for name in ("Figure", "Target", "Measured"):
        table.add_column(name)
    for label, target, value, passed in table_rows(iso, back):
        if passed is not None:
            value = f"[{'green' if passed else 'red'}]{value}[/]"
        table.add_row(label, target, value)
    console.print(table)
    for line in details(iso, back):
        console.print(line.removeprefix("- "), highlight=False)


def details(iso: Isolation, back: Backlog) -> list[str]:
    def rates(v: list[float]) -> str:
        return ", ".join(f"{x:,.0f}" for x in v)

    return [
        f"- isolation: {iso.healthy_events:,} events to the healthy receiver per run; runs "
        f"without the dead webhooks {rates(iso.base_rates)} events/s, with them "
        f"{rates(iso.dead_rates)} events/s; requests held by the hanging receiver during each "
        f"run with them: {', '.join(str(h) for h in iso.held)} (of {iso.dead * iso.updates:,} "
        f"queued for the dead webhooks); `serve` CPU per healthy event "
        f"{rates(iso.base_cpu)} µs without, {rates(iso.dead_cpu)} µs with; cores busy before "
        f"each run: {', '.join(f'{b:.2f}' for b in iso.background)}.",
        f"- backlog: filled in SQL ({back.fill_seconds:.0f} s for the last step; database "
        f"{back.db_mb:,.0f} MB); claims per size: "
        + "; ".join(
            f"{n:,}: " + ", ".join(f"{v:.2f}" for v in back.claim_ms[n]) + " ms"
            for n in sorted(back.sizes)
        )
        + f". Memory: {back.rss_samples} samples over {back.seconds:g} s of serve and the "
        f"processes below it (its delivery process), from /proc/PID/smaps_rollup: PSS "
        f"{back.pss_start_mb:.0f} MB at start, {back.pss_max_mb:.0f} MB at peak; resident sets "
        f"summed (pages the two share counted twice) {back.rss_start_mb:.0f} / "
        f"{back.rss_max_mb:.0f} MB; while "
        f"`serve` delivered {back.delivered:,} of the backlog.",
    ]


def markdown(iso: Isolation, back: Backlog, command: str) -> str:
    lines = [
        HEADING,
        "",
        "`bench/reliability.py`:",
        "",
        textwrap.dedent((__doc__ or "").split("\n\n", 1)[1].split("\n\nRun")[0]),
        "",
        "<!-- reliability: figures -->",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}.",
        "",
        *reproduce(command),
        "| Figure | Target | Measured |",
        "| --- | --- | --- |",
    ]
    for label, target, value, passed in table_rows(iso, back):
        verdict = "" if passed is None else (" (met)" if passed else " (**missed**)")
        lines.append(f"| {label} | {target} | {value}{verdict} |")
    lines += ["", *details(iso, back), "<!-- /reliability: figures -->", "", NOTES, ""]
    return "\n".join(lines)


NOTES = """\
What the figures show:

- **Isolation.** Fifty receivers that hang hold 100 requests (two each: a webhook that has not
  answered well yet may have two in flight, one once a request failed), out of 256 in flight in
  all; the healthy webhook keeps its 16 and its refills. What the dead webhooks still cost is
  their routing: each update event becomes 50 requests (10,000 in all), about +10% of server
  CPU per healthy event in these runs. Before this, claims took the oldest requests whatever
  their webhook and handed back those over a webhook's allowance: a backlog for one webhook
  made every claim scan it.
- **Backlog.** A claim asks each webhook with work for its own requests in order, through the
  index `(status, webhook_id, next_attempt_at, first_seq)` (migration 0005), and the webhooks
  with work are found by a loose index scan, one probe per webhook. Neither reads the backlog:
  a hundred times the requests cost 1.7x per claim, which is the B-trees one or two levels
  deeper and SQLite's page cache (64 MB) no longer holding the 1.4 GB file. The first claim of
  each size (4-5 ms) reads the pages cold. Memory follows what is in flight (at most 256
  requests with their bodies) and the claim batch, not the queue.
"""


# --- command line ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    args_in = argv if argv is not None else sys.argv[1:]
    if args_in[:1] == ["hang"]:
        hp = argparse.ArgumentParser(prog="python -m bench.reliability hang")
        hp.add_argument("--port", type=int, required=True)
        run_hanging(hp.parse_args(args_in[1:]).port)
        return
    p = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__)
    p.add_argument("--events", type=int, default=10_000, help="creates for the healthy webhook")
    p.add_argument("--updates", type=int, default=200, help="updates for each dead webhook")
    p.add_argument("--dead", type=int, default=50, help="webhooks to the hanging receiver")
    p.add_argument("--runs", type=int, default=2, help="isolation runs of each kind")
    p.add_argument(
        "--backlog",
        type=int,
        nargs="+",
        default=[10_000, 100_000, 1_000_000],
        help="pending requests at which the claim is timed (the largest for memory)",
    )
    p.add_argument("--claims", type=int, default=20, help="claims timed at each backlog")
    p.add_argument("--seconds", type=float, default=20.0, help="memory sampling time")
    p.add_argument("--quiet-wait", type=float, default=20.0, help="max s to wait for quiet")
    p.add_argument("--docs", type=Path, default=DOCS)
    p.add_argument("--no-docs", action="store_true")
    args = p.parse_args(args_in)
    logs.configure("warning")  # the in-process dispatcher's lines would drown the table
    workdir = Path(tempfile.mkdtemp(prefix="crmhooks-reliability-"))
    receiver = start_receiver()
    try:
        iso = Isolation(args.events, args.updates, args.dead)
        measure_isolation(iso, receiver, workdir, args.quiet_wait, args.runs)
        back = Backlog(list(args.backlog), args.seconds)
        measure_backlog(back, receiver, workdir, args.claims)
    finally:
        stop_server(receiver.process)
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(iso, back)
    if not args.no_docs:
        shown = [a for a in args_in if a != "--no-docs"]
        command = " ".join([".venv/bin/python -m bench.reliability", *shown])
        write_section(args.docs, markdown(iso, back, command), HEADING)
        console.print(f"updated {args.docs}")


if __name__ == "__main__":
    main()
