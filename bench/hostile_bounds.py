"""What a hostile space can still make one ``crmhooks serve`` do within the limits.

The server runs in a subprocess on a fresh database (SQLite, or PostgreSQL with ``--pg URL``),
with the dispatcher on. Two spaces: ``default`` (the attacker) and ``victim``.

1. batch hold: the attacker posts a batch-modify of ``--batch`` new Accounts while the victim
   creates one Account every 20 ms; the victim's slowest create during the batch, and the
   batch's own time.
2. filter scan: the attacker registers as many webhooks on ``Account.*`` as the limits allow,
   each with ``max_webhook_search_values`` ``contains`` values (within the space's
   ``max_space_search_values``), short near misses of a periodic text, the slowest needles for
   Python's substring search; then writes Accounts with that 100,000-character comment while
   ``/health`` is polled every 10 ms; the slowest ``/health`` answer and the p50.

Run ``python -m bench.hostile_bounds [--batch 1000] [--pg URL]``; prints the figures. Extra
``CRMHOOKS_*`` settings for the server can be given with ``--env NAME=VALUE``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from bench.api_speed import api_user, postgres_database, sqlite_database
from crmhooks.limits import Limits
from crmhooks.store.engine import open_database
from crmhooks.store.keys import create_space

BASE = "/api/v100/rest/spaces/{space}/entities/{entity}"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(db_url: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], str, str, str]:
    port = _port()
    full = {**os.environ, "CRMHOOKS_DATABASE_URL": db_url, "CRMHOOKS_LOG_LEVEL": "warning", **env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "crmhooks", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=full,
    )
    try:
        return _started(proc, port)
    except BaseException:
        proc.kill()  # a server left running would hold the router's lock on PostgreSQL
        proc.wait(10)
        raise


def _started(proc: subprocess.Popen[str], port: int) -> tuple[subprocess.Popen[str], str, str, str]:
    assert proc.stdout is not None
    out = ""
    while "listening on" not in out:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"server did not start:\n{out}")
        out += line
    key = re.search(r"api key\s+(\S+)", out)
    secret = re.search(r"api secret\s+(\S+)", out)
    if key is None or secret is None:
        raise RuntimeError(f"server printed no key:\n{out}")
    # Keep reading what it prints, so that the pipe never fills up.
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port}", key.group(1), secret.group(1)


def _auth(key: str, secret: str) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(key, secret)}


async def _victim_space(db_url: str) -> dict[str, str]:
    db = open_database(db_url)
    try:
        async with db.write() as conn:
            issued = await create_space(conn, "victim")
    finally:
        await db.dispose()
    return _auth(issued.api_key, issued.api_secret)


async def _batch_hold(
    http: aiohttp.ClientSession, url: str, attacker: dict[str, str], victim: dict[str, str]
) -> tuple[float, float, int]:
    """(batch seconds, victim's slowest create during it, victim creates during it)."""
    path = url + BASE.format(space="default", entity="Accounts")
    owner = await api_user(http, path, attacker)
    items = [{"name": f"a{i}", "owner_id": owner, "comments": "x" * 200} for i in range(ARGS.batch)]
    done = asyncio.Event()
    latencies: list[float] = []

    async def victim_loop() -> None:
        path = url + BASE.format(space="victim", entity="Accounts")
        mine = await api_user(http, path, victim)
        while not done.is_set():
            started = time.perf_counter()
            async with http.post(path, json={"name": "v", "owner_id": mine}, headers=victim) as r:
                assert r.status == 201, await r.text()
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.02)

    task = asyncio.create_task(victim_loop())
    await asyncio.sleep(0.2)
    latencies.clear()
    started = time.perf_counter()
    path = url + BASE.format(space="default", entity="Accounts") + "/batch-modify"
    async with http.post(path, json=items, headers=attacker) as r:
        assert r.status == 200, (await r.text())[:500]
    took = time.perf_counter() - started
    done.set()
    await task
    return took, max(latencies), len(latencies)


async def _filter_scan(
    http: aiohttp.ClientSession, url: str, attacker: dict[str, str], limits: Limits
) -> tuple[list[float], int, int, int]:
    """/health latencies while Accounts with the longest comment go past the widest filters."""
    per_hook = limits.max_webhook_search_values
    budget = min(limits.max_space_search_values, per_hook * limits.max_webhooks_per_space)
    counts = [per_hook] * (budget // per_hook) + ([budget % per_hook] if budget % per_hook else [])
    hooks = []
    for w, count in enumerate(counts):
        # Short near misses of the periodic comment: the slowest a scan gets (~1 ms each).
        needles = [
            ("abcdefghij" * 2)[i % 10 : i % 10 + 4] + chr(65 + (w + i) % 26) for i in range(count)
        ]
        options = {
            "entity": {
                "Account": {"filter": {"comments": needles}, "filter-op": {"comments": "contains"}}
            }
        }
        hooks.append(
            {
                "url": "http://93.184.216.34/hook",
                "events": ["Account.*"],
                "insecure_ssl": False,
                "options": options,
            }
        )
    path = url + BASE.format(space="default", entity="Webhooks") + "/batch-modify"
    for start in range(0, len(hooks), 10):
        async with http.post(path, json=hooks[start : start + 10], headers=attacker) as r:
            assert r.status == 200, (await r.text())[:500]
    await asyncio.sleep(1.5)  # the router reloads the webhooks
    return await _health_during_writes(http, url, attacker), len(hooks), sum(counts), 5


async def _health_during_writes(
    http: aiohttp.ClientSession, url: str, attacker: dict[str, str]
) -> list[float]:
    """/health latencies while ``--writes`` Accounts with a 100,000-character comment are made."""
    comment = ("abcdefghij" * 10_000)[:100_000]
    done = asyncio.Event()
    latencies: list[float] = []

    async def poll() -> None:
        while not done.is_set():
            started = time.perf_counter()
            async with http.get(url + "/health") as r:
                await r.read()
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)

    task = asyncio.create_task(poll())
    path = url + BASE.format(space="default", entity="Accounts")
    owner = await api_user(http, path, attacker)
    for _ in range(ARGS.writes):
        async with http.post(
            path, json={"name": "big", "owner_id": owner, "comments": comment}, headers=attacker
        ) as r:
            assert r.status == 201, (await r.text())[:500]
        await asyncio.sleep(0.3)
    await asyncio.sleep(1.0)
    done.set()
    await task
    return latencies


def _show(latencies: list[float]) -> str:
    return (
        f"/health max {max(latencies) * 1000:.0f} ms, "
        f"p50 {statistics.median(latencies) * 1000:.1f} ms ({len(latencies)} polls)"
    )


async def main() -> None:
    env = dict(pair.split("=", 1) for pair in ARGS.env)
    limits = Limits(**{k.removeprefix("CRMHOOKS_").lower(): v for k, v in env.items()})
    with tempfile.TemporaryDirectory() as tmp:
        database = postgres_database(ARGS.pg) if ARGS.pg else sqlite_database(Path(tmp))
        with database as db_url:
            await _measure(db_url, env, limits)


async def _measure(db_url: str, env: dict[str, str], limits: Limits) -> None:
    proc, url, key, secret = _serve(db_url, env)
    try:
        attacker = _auth(key, secret)
        victim = await _victim_space(db_url)
        async with aiohttp.ClientSession() as http:
            took, worst, n = await _batch_hold(http, url, attacker, victim)
            print(f"batch of {ARGS.batch}: {took:.2f} s; victim's slowest create during it")
            print(f"  {worst * 1000:.0f} ms ({n} creates)")
            base = await _health_during_writes(http, url, attacker)
            print(f"no webhooks, {ARGS.writes} writes: {_show(base)}")
            lat, hooks, values, length = await _filter_scan(http, url, attacker, limits)
            print(
                f"filter scan: {hooks} webhooks, {values} contains values in all, x {length}"
                f" chars vs 100,000-char comment, {ARGS.writes} writes:"
            )
            print(f"  {_show(lat)}")
    finally:
        proc.terminate()
        proc.wait(10)


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
parser.add_argument("--batch", type=int, default=1000)
parser.add_argument("--writes", type=int, default=5)
parser.add_argument(
    "--pg", default=None, help="a PostgreSQL database to make (and drop) a schema of its own in"
)
parser.add_argument("--env", action="append", default=[], help="CRMHOOKS_NAME=VALUE")
ARGS: Any = None

if __name__ == "__main__":
    ARGS = parser.parse_args()
    asyncio.run(main())
