"""The change feed, ``GET /events`` (docs/webhooks.md#change-feed), through ``crmhooks serve`` on
SQLite (delivery off: nothing else runs in the server).

1. Paging: ``--events`` Accounts written with batch-modify, then read from the start with
   ``first=100``, following ``end_cursor``, by one client; events/s over the whole read (best
   of ``--rounds``).
2. Wake-up: one long-poll waits (``after`` = the end, ``wait=10``); one Account is created; the
   time from the create's 2xx to the poll's answer, ``--wakes`` times.
3. Many waiting: ``--polls`` long-polls waiting at once. The API's p50 for a small read
   (``GET /entities/Accounts?first=1``, ``--reads`` times) with them waiting and with none;
   serve's resident memory per waiting poll; then one create, and the time until every poll
   has its answer. (One space's polls: serve runs with ``max_waiting_polls_per_space`` raised
   to ``--polls``.)

Run: ``python -m bench.feed_speed`` (writes its section of docs/benchmarks.md; ``--no-docs``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import orjson

from bench.api_speed import api_user, machine, stop_server, wait_for_quiet
from bench.delivery_speed import (
    ACCOUNTS,
    DOCS,
    SPACE,
    Key,
    Serve,
    generated_section,
    publish,
    start_serve,
    write_accounts,
)

FEED = f"/api/v100/rest/spaces/{SPACE}/events"
HEADING = "## Change feed (`bench/feed_speed.py`)"
COLUMNS = ("figure", "target", "measured")


@dataclass
class Figures:
    events: int = 0
    paging: list[float] = field(default_factory=list)  # events/s per round
    wakes: list[float] = field(default_factory=list)  # ms, create's 2xx to the poll's answer
    wakes_from_send: list[float] = field(default_factory=list)  # ms, create sent to answer
    polls: int = 0
    read_idle: list[float] = field(default_factory=list)  # ms
    read_waiting: list[float] = field(default_factory=list)  # ms
    rss_before_mb: float = 0.0
    rss_waiting_mb: float = 0.0
    fan_out_ms: float = 0.0  # one create: until every waiting poll answered
    background: float = 0.0


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _page(http: aiohttp.ClientSession, url: str, params: dict[str, str]) -> dict:  # type: ignore[type-arg]
    async with http.get(url + FEED, params=params) as r:
        body = orjson.loads(await r.read())
        if r.status != 200:
            raise RuntimeError(f"GET /events: {r.status} {body}")
        return body  # type: ignore[no-any-return]


async def _end(http: aiohttp.ClientSession, url: str) -> str:
    """The cursor after everything there is now."""
    params = {"first": "100"}
    while True:
        body = await _page(http, url, params)
        params["after"] = body["page_info"]["end_cursor"]
        if not body["page_info"]["has_next_page"]:
            return params["after"]


async def _paging(http: aiohttp.ClientSession, url: str, expected: int) -> float:
    started = time.perf_counter()
    params, seen = {"first": "100"}, 0
    while True:
        body = await _page(http, url, params)
        seen += len(body["data"])
        params["after"] = body["page_info"]["end_cursor"]
        if not body["page_info"]["has_next_page"]:
            break
    took = time.perf_counter() - started
    if seen < expected:
        raise RuntimeError(f"the feed gave {seen} of {expected} events")
    return seen / took


async def _create(http: aiohttp.ClientSession, url: str, owner: str, name: str) -> float:
    async with http.post(url + ACCOUNTS, json={"name": name, "owner_id": owner}) as r:
        await r.read()
        if r.status != 201:
            raise RuntimeError(f"create: {r.status}")
    return time.perf_counter()


async def _wakes(http: aiohttp.ClientSession, url: str, owner: str, n: int, out: Figures) -> None:
    cursor = await _end(http, url)
    for i in range(n):
        poll = asyncio.create_task(_page(http, url, {"after": cursor, "wait": "10"}))
        await asyncio.sleep(0.02)  # the poll is waiting
        sent = time.perf_counter()
        answered_2xx = await _create(http, url, owner, f"wake {i}")
        body = await poll
        answered = time.perf_counter()
        if not body["data"]:
            raise RuntimeError("a long-poll answered without the event")
        out.wakes.append(1000 * max(0.0, answered - answered_2xx))
        out.wakes_from_send.append(1000 * (answered - sent))
        cursor = body["page_info"]["end_cursor"]


async def _reads(http: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        async with http.get(url + ACCOUNTS, params={"first": "1"}) as r:
            await r.read()
            if r.status != 200:
                raise RuntimeError(f"read: {r.status}")
        times.append(1000 * (time.perf_counter() - t0))
    return times


async def _many(
    http: aiohttp.ClientSession, serve: Serve, owner: str, polls: int, reads: int, out: Figures
) -> None:
    url = serve.url
    await _reads(http, url, reads)  # warm: the first reads of a route cost more
    out.read_idle = await _reads(http, url, reads)
    cursor = await _end(http, url)
    out.rss_before_mb = _rss_mb(serve.process.pid)
    waiting = [
        asyncio.create_task(_page(http, url, {"after": cursor, "wait": "30"})) for _ in range(polls)
    ]
    await asyncio.sleep(2.0)  # every poll has arrived and waits
    if any(t.done() for t in waiting):
        raise RuntimeError("a long-poll answered with nothing written")
    out.rss_waiting_mb = _rss_mb(serve.process.pid)
    out.read_waiting = await _reads(http, url, reads)
    written = await _create(http, url, owner, "fan-out")
    bodies = await asyncio.gather(*waiting)
    out.fan_out_ms = 1000 * (time.perf_counter() - written)
    if not all(b["data"] for b in bodies):
        raise RuntimeError("a waiting poll answered without the event")


async def measure(args: argparse.Namespace, serve: Serve, key: Key, out: Figures) -> None:
    connector = aiohttp.TCPConnector(limit=args.polls + 20)
    async with aiohttp.ClientSession(headers=key.headers(), connector=connector) as http:
        owner = await api_user(http, serve.url + ACCOUNTS)
        for _ in range(args.rounds):
            out.paging.append(await _paging(http, serve.url, out.events))
        await _wakes(http, serve.url, owner, args.wakes, out)
        await _many(http, serve, owner, args.polls, args.reads, out)


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def rows(f: Figures) -> list[tuple[str, str, str]]:
    per_poll_kb = 1024 * (f.rss_waiting_mb - f.rss_before_mb) / max(f.polls, 1)
    return [
        (
            "paging with first=100 from the start, one client: events/s (best of rounds)",
            "≥ 5,000",
            f"{max(f.paging):,.0f} ({', '.join(f'{v:,.0f}' for v in f.paging)})",
        ),
        (
            "long-poll wake-up, the create's 2xx to the poll's answer: p50 / p99",
            "p50 < 10 ms",
            f"{statistics.median(f.wakes):.2f} / {_p(f.wakes, 0.99):.2f} ms "
            f"(from the create sent: {statistics.median(f.wakes_from_send):.2f} ms)",
        ),
        (
            f"a small read's p50 with {f.polls} long-polls waiting / with none",
            "within 10%",
            f"{statistics.median(f.read_waiting):.2f} / {statistics.median(f.read_idle):.2f} ms "
            f"= {statistics.median(f.read_waiting) / statistics.median(f.read_idle):.2f}x",
        ),
        (
            f"serve's memory with {f.polls} long-polls waiting",
            "",
            f"{f.rss_waiting_mb:.0f} MB against {f.rss_before_mb:.0f} MB: "
            f"{per_poll_kb:.0f} KB per waiting poll",
        ),
        (
            f"one create with {f.polls} polls waiting: until every one answered",
            "",
            f"{f.fan_out_ms:.0f} ms",
        ),
    ]


def markdown(f: Figures, command: str) -> str:
    measured = (
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}; SQLite; "
        f"{f.events:,} events stored; cores busy before the run {f.background:.2f}."
    )
    return generated_section(HEADING, __doc__, measured, command, (COLUMNS, rows(f)))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.feed_speed", description=__doc__)
    p.add_argument("--events", type=int, default=20_000, help="Accounts written, then paged")
    p.add_argument("--rounds", type=int, default=3, help="paging rounds")
    p.add_argument("--wakes", type=int, default=200, help="long-poll wake-ups timed")
    p.add_argument("--polls", type=int, default=500, help="long-polls waiting at once")
    p.add_argument("--reads", type=int, default=300, help="small reads timed each way")
    p.add_argument("--quiet-wait", type=float, default=20.0, help="max s to wait for quiet")
    p.add_argument("--docs", type=Path, default=DOCS)
    p.add_argument("--no-docs", action="store_true")
    args = p.parse_args(argv)
    figures = Figures(events=args.events, polls=args.polls)
    # One space's polls, all of them: the server's per-space bound raised to their number.
    os.environ["CRMHOOKS_MAX_WAITING_POLLS_PER_SPACE"] = str(max(args.polls, 100))
    work = Path(tempfile.mkdtemp(prefix="crmhooks-feed-"))
    key = Key()
    serve = start_serve(f"sqlite:///{work}/feed.db", work, delivery=False, key=key)
    try:
        asyncio.run(write_accounts(serve, key, args.events, 100))
        figures.background = wait_for_quiet(args.quiet_wait)
        asyncio.run(measure(args, serve, key, figures))
    finally:
        stop_server(serve.process)
    table = ("change feed", COLUMNS, rows(figures))
    publish(args, table, lambda command: markdown(figures, command), HEADING, "bench.feed_speed")


if __name__ == "__main__":
    main()
