"""Replay (``POST /entities/Webhooks/{id}/replay``, docs/webhooks.md#replay) of a large window,
through ``crmhooks serve`` on SQLite with delivery on (its delivery process), a receiver
process, and a probe receiver in this process.

1. ``--events`` Accounts are written with batch-modify (100 a request), the first ``--small``
   of them in a window of their own; then a webhook on ``Account.Create`` (``chunk_size`` 100)
   is registered (after every event: live, it gets none) to the receiver, and another on
   ``Contact.Create`` to the probe receiver.
2. Probes: one Contact created every 50 ms; its latency is the time from the create's 2xx to
   its arrival at the probe receiver (the other webhook's live delivery). Measured with nothing
   else going on, then during each replay.
3. Replays: a dry run of the whole window, then the small window, then the whole window, each
   until the receiver has every replayed event. The replay request's time (planning), the time
   until delivered, and the memory of serve's process tree (PSS, sampled every 100 ms): bounded
   memory means the whole window's peak is about the small window's.

Run: ``python -m bench.replay_speed`` (writes its section of docs/benchmarks.md; ``--no-docs``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from bench.api_speed import api_user, machine, stop_server, wait_for_quiet
from bench.delivery_speed import (
    ACCOUNTS,
    DOCS,
    HOST,
    SPACE,
    WEBHOOKS_PATH,
    Key,
    Receiver,
    Serve,
    _free_port,
    console,
    generated_section,
    publish,
    receiver_call,
    start_receiver,
    start_serve,
    write_accounts,
)
from bench.reliability import tree_memory_mb

HEADING = "## Replay (`bench/replay_speed.py`)"
CONTACTS = f"/api/v100/rest/spaces/{SPACE}/entities/Contacts"
PROBE_EVERY = 0.05


@dataclass
class Run:
    """One replay."""

    label: str
    events: int = 0
    requests: int = 0
    planning_s: float = 0.0  # the replay request, sent to answered
    delivered_s: float = 0.0  # sent until the receiver had every replayed event
    pss_peak_mb: float = 0.0
    pss_before_mb: float = 0.0
    probes: list[float] = field(default_factory=list)  # ms


@dataclass
class Figures:
    events: int = 0
    small: int = 0
    write_s: float = 0.0
    idle_probes: list[float] = field(default_factory=list)  # ms
    runs: list[Run] = field(default_factory=list)
    background: float = 0.0


class Probe:
    """The probe webhook's receiver, in this process: when each Contact arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.waiting: dict[str, asyncio.Event] = {}

    async def hook(self, request: web.Request) -> web.Response:
        now = time.perf_counter()
        for item in orjson.loads(await request.read()):
            name = item["entity"]["last_name"]
            self.arrived[name] = now
            if name in self.waiting:
                self.waiting[name].set()
        return web.Response(status=200)

    async def start(self) -> tuple[str, web.AppRunner]:
        app = web.Application()
        app.router.add_post("/probe", self.hook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = _free_port()
        await web.TCPSite(runner, HOST, port).start()
        return f"http://{HOST}:{port}/probe", runner


async def _json(resp: aiohttp.ClientResponse, status: int) -> Any:
    raw = await resp.read()
    if resp.status != status:
        raise RuntimeError(f"{resp.method} {resp.url} -> {resp.status}: {raw[:300]!r}")
    return orjson.loads(raw)


async def _register(http: aiohttp.ClientSession, url: str, target: str, events: list[str]) -> str:
    body = {"url": target, "events": events, "insecure_ssl": False, "options": {"chunk_size": 100}}
    async with http.post(url + WEBHOOKS_PATH, data=orjson.dumps(body)) as r:
        return str((await _json(r, 201))["data"]["id"])


@dataclass
class Probing:
    http: aiohttp.ClientSession
    url: str
    owner: str
    probe: Probe


async def _probes(p: Probing, until: asyncio.Event, out: list[float]) -> None:
    """A Contact every PROBE_EVERY s until ``until`` is set; each one's latency, in ms."""
    probe = p.probe
    while not until.is_set():
        name = f"p{time.perf_counter_ns()}"
        probe.waiting[name] = asyncio.Event()
        body = {"first_name": "probe", "last_name": name, "owner_id": p.owner}
        async with p.http.post(p.url + CONTACTS, json=body) as r:
            await _json(r, 201)
            answered = time.perf_counter()
        await asyncio.wait_for(probe.waiting[name].wait(), 60)
        out.append(1000 * max(0.0, probe.arrived[name] - answered))
        await asyncio.sleep(PROBE_EVERY)


async def _sample_memory(pid: int, until: asyncio.Event, run: Run) -> None:
    while not until.is_set():
        run.pss_peak_mb = max(run.pss_peak_mb, tree_memory_mb(pid)[1])
        await asyncio.sleep(0.1)


async def _delivered(receiver: Receiver, count: int, within: float) -> None:
    deadline = time.monotonic() + within
    while (await asyncio.to_thread(receiver_call, receiver, "/stats"))["events"] < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the replayed events did not all arrive within {within} s")
        await asyncio.sleep(0.05)


async def _replay(
    p: Probing, serve: Serve, receiver: Receiver, hook: str, run: Run, body: dict[str, Any]
) -> None:
    await asyncio.to_thread(receiver_call, receiver, "/reset", "POST")
    run.pss_before_mb = run.pss_peak_mb = tree_memory_mb(serve.process.pid)[1]
    done = asyncio.Event()
    sampler = asyncio.create_task(_sample_memory(serve.process.pid, done, run))
    probing = asyncio.create_task(_probes(p, done, run.probes))
    started = time.perf_counter()
    path = f"{serve.url}{WEBHOOKS_PATH}/{hook}/replay"
    try:
        async with p.http.post(path, data=orjson.dumps(body)) as r:
            data = (await _json(r, 200))["data"]
        run.planning_s = time.perf_counter() - started
        run.events, run.requests = data["events"], data["requests"]
        if not body.get("dry_run"):
            await _delivered(receiver, run.events, 600)
        run.delivered_s = time.perf_counter() - started
    finally:
        done.set()
        await asyncio.gather(sampler, probing)


async def measure(args: argparse.Namespace, serve: Serve, key: Key, out: Figures) -> None:
    receiver = start_receiver()
    probe = Probe()
    probe_url, runner = await probe.start()
    try:
        t0 = datetime.now(UTC)
        started = time.perf_counter()
        await write_accounts(serve, key, args.small, 100)
        t_small = datetime.now(UTC)
        await write_accounts(serve, key, args.events - args.small, 100)
        out.write_s = time.perf_counter() - started
        async with aiohttp.ClientSession(headers=key.headers()) as http:
            probing = Probing(http, serve.url, await api_user(http, serve.url + ACCOUNTS), probe)
            hook = await _register(http, serve.url, receiver.hook, ["Account.Create"])
            await _register(http, serve.url, probe_url, ["Contact.Create"])
            out.background = wait_for_quiet(args.quiet_wait)
            done = asyncio.Event()
            idle = asyncio.create_task(_probes(probing, done, out.idle_probes))
            await asyncio.sleep(args.idle_seconds)
            done.set()
            await idle
            whole: dict[str, Any] = {"since": t0.isoformat()}
            plans: list[tuple[str, dict[str, Any]]] = [
                ("dry run, whole window", {**whole, "dry_run": True}),
                ("small window", {"since": t0.isoformat(), "until": t_small.isoformat()}),
                ("whole window", whole),
            ]
            for label, body in plans:
                run = Run(label)
                await _replay(probing, serve, receiver, hook, run, body)
                out.runs.append(run)
                console.print(f"{label}: {run.events:,} events, {run.planning_s:.2f} s")
    finally:
        await runner.cleanup()
        stop_server(receiver.process)


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _probe_cell(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.1f} / {_p(values, 0.99):.1f} ms ({len(values)} probes)"


def rows(f: Figures) -> list[tuple[str, str, str, str, str, str]]:
    out = [("no replay (probes only)", "", "", "", "", _probe_cell(f.idle_probes))]
    for r in f.runs:
        rate = r.events / r.planning_s if r.planning_s else float("nan")
        out.append(
            (
                r.label,
                f"{r.events:,} / {r.requests:,}",
                f"{r.planning_s:.2f} s ({rate:,.0f} events/s)",
                "-" if r.label.startswith("dry") else f"{r.delivered_s:.2f} s",
                f"{r.pss_before_mb:.0f} -> {r.pss_peak_mb:.0f} MB",
                _probe_cell(r.probes),
            )
        )
    return out


COLUMNS = (
    "replay",
    "events / requests",
    "replay request (planning)",
    "until all delivered",
    "serve's memory (PSS), before -> peak",
    "another webhook's live delivery: p50 / p99",
)


def markdown(f: Figures, command: str) -> str:
    measured = (
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}; SQLite; "
        f"{f.events:,} events stored ({f.write_s:.0f} s to write), the small window "
        f"{f.small:,}; cores busy before the run {f.background:.2f}."
    )
    return generated_section(HEADING, __doc__, measured, command, (COLUMNS, rows(f)))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.replay_speed", description=__doc__)
    p.add_argument("--events", type=int, default=100_000, help="Accounts written (the window)")
    p.add_argument("--small", type=int, default=10_000, help="the small window's events")
    p.add_argument("--idle-seconds", type=float, default=5.0, help="probing with no replay")
    p.add_argument("--quiet-wait", type=float, default=20.0, help="max s to wait for quiet")
    p.add_argument("--docs", type=Path, default=DOCS)
    p.add_argument("--no-docs", action="store_true")
    args = p.parse_args(argv)
    figures = Figures(events=args.events, small=args.small)
    work = Path(tempfile.mkdtemp(prefix="crmhooks-replay-"))
    key = Key()
    serve = start_serve(f"sqlite:///{work}/replay.db", work, delivery=True, key=key)
    try:
        asyncio.run(measure(args, serve, key, figures))
    finally:
        stop_server(serve.process)
    table = ("replay", COLUMNS, rows(figures))
    publish(args, table, lambda command: markdown(figures, command), HEADING, "bench.replay_speed")


if __name__ == "__main__":
    main()
