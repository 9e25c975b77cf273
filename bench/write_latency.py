"""Write latency with delivery on, and delivery latency at a steady rate (issue 13, point 1).

On SQLite, one client writes Accounts one at a time (``POST /entities/Accounts``, the space's
API user as ``owner_id``) to a real ``crmhooks serve``:

1. create p50 with no webhook, then with one webhook (``chunk_size`` 1, a loopback receiver
   in a process of its own) delivering each create: the ratio is the cost delivery adds to a
   write (target <= 1.3);
2. 50 creates a second, paced: p50 / p99 from each write's 2xx to its arrival at the receiver
   (target < 5 / < 25 ms).

Each source tree given (``--tree``, default this one) is measured in turn, ``--rounds`` times,
alternating, so that a comparison with another tree (a worktree of main) shares the machine's
moments. serve logs JSON; at its stop the delivery process logs how long it held SQLite's
write lock and how long its wake-ups took, and the API how long it waited for that lock: the
figures are shown when the tree logs them.

    PYTHONPATH=src python -m bench.write_latency --tree . --tree ../base --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

HOST = "127.0.0.1"
ACCOUNTS = "/api/v100/rest/spaces/default/entities/Accounts"
WEBHOOKS = "/api/v100/rest/spaces/default/entities/Webhooks"
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# --- the receiver: a process of its own, recording when each entity arrived ------------------


def run_receiver(port: int) -> None:
    arrivals: list[tuple[str, float]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        arrivals.extend((item["entity"]["id"], now) for item in orjson.loads(body))
        return web.Response()

    async def take(_: web.Request) -> web.Response:
        out = orjson.dumps(arrivals)
        arrivals.clear()
        return web.Response(body=out, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/hook", hook)
        app.router.add_get("/arrivals", take)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, HOST, port).start()
        await asyncio.Event().wait()

    import uvloop

    uvloop.run(main())


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return orjson.loads(r.read())


def _wait_answering(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                r.read()
            return
        except urllib.error.HTTPError:
            return  # answered
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.02)
    proc.kill()
    raise RuntimeError(f"{url} did not answer")


# --- one round on one tree ---------------------------------------------------------------------


@dataclass
class Round:
    tree: str
    create_plain: list[float] = field(default_factory=list)  # ms
    create_hooked: list[float] = field(default_factory=list)  # ms
    delivered: list[float] = field(default_factory=list)  # ms, 2xx -> arrival, paced
    paced_writes: int = 0
    logs: dict[str, dict[str, Any]] = field(default_factory=dict)  # event -> last fields

    @staticmethod
    def q(values: list[float], p: float) -> float:
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    @property
    def ratio(self) -> float:
        return self.q(self.create_hooked, 0.5) / self.q(self.create_plain, 0.5)


def _serve(tree: Path, workdir: Path) -> tuple[str, subprocess.Popen[bytes], Path, str, str]:
    port = _free_port()
    log = workdir / "serve.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(tree / "src"),
        "CRMHOOKS_DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}",
        "CRMHOOKS_ALLOWED_TARGETS": "127.0.0.0/8",
        "CRMHOOKS_LOG_JSON": "true",
        "CRMHOOKS_LOG_LEVEL": "info",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "crmhooks", "serve", "--host", HOST, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )
    url = f"http://{HOST}:{port}"
    _wait_answering(url + "/none", proc)
    # A delivery process starting (imports, first statements) takes a core for a second or
    # two: measure once it is up (a tree without one waits as long, so both start quiet).
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and '"worker started"' not in log.read_text(errors="replace"):
        time.sleep(0.05)
    time.sleep(0.5)
    printed = log.read_text(errors="replace")
    found = [re.search(rf"{k}\s+(\S+)", printed) for k in ("api key", "api secret", "client id")]
    if not all(found):
        proc.kill()
        raise RuntimeError(f"serve printed no key:\n{printed}")
    key, secret, client = (m.group(1) for m in found if m)
    return url, proc, log, f"{key}:{secret}", client


async def _creates(s: aiohttp.ClientSession, url: str, owner: str, n: int, tag: str) -> list[float]:
    out: list[float] = []
    for i in range(n):
        body = orjson.dumps({"name": f"{tag} {i}", "owner_id": owner})
        t0 = time.perf_counter()
        async with s.post(url + ACCOUNTS, data=body) as r:
            await r.read()
            if r.status != 201:
                raise RuntimeError(f"create -> {r.status}")
        out.append(1000 * (time.perf_counter() - t0))
    return out


async def _paced(
    s: aiohttp.ClientSession, url: str, owner: str, rate: float, seconds: float
) -> dict[str, float]:
    done: dict[str, float] = {}
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        body = orjson.dumps({"name": f"paced {i}", "owner_id": owner})
        async with s.post(url + ACCOUNTS, data=body) as r:
            data = orjson.loads(await r.read())
            done[str(data["data"]["id"])] = time.time()
    return done


def one_round(tree: Path, receiver: str, creates: int, rate: float, seconds: float) -> Round:
    result = Round(str(tree))
    with tempfile.TemporaryDirectory(prefix="write-latency-") as tmp:
        url, proc, log, auth, owner = _serve(tree, Path(tmp))
        headers = {
            "Authorization": "Basic " + base64.b64encode(auth.encode()).decode(),
            "Content-Type": "application/json",
        }

        async def run() -> dict[str, float]:
            conn = aiohttp.TCPConnector(limit=1)
            async with aiohttp.ClientSession(headers=headers, connector=conn) as s:
                await _creates(s, url, owner, 100, "warm")
                result.create_plain = await _creates(s, url, owner, creates, "plain")
                hook = {
                    "url": receiver + "/hook",
                    "events": ["Account.Create"],
                    "insecure_ssl": False,
                    "options": {"chunk_size": 1},
                }
                async with s.post(url + WEBHOOKS, data=orjson.dumps(hook)) as r:
                    if r.status != 201:
                        raise RuntimeError(await r.text())
                await _creates(s, url, owner, 100, "warm hooked")
                result.create_hooked = await _creates(s, url, owner, creates, "hooked")
                await asyncio.sleep(1.0)
                _get(receiver + "/arrivals")  # drop what arrived so far
                return await _paced(s, url, owner, rate, seconds)

        try:
            done = asyncio.run(run())
            deadline = time.monotonic() + 30
            arrived: dict[str, float] = {}
            while time.monotonic() < deadline and not set(done) <= set(arrived):
                time.sleep(0.5)
                arrived.update(dict(_get(receiver + "/arrivals")))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        result.paced_writes = len(done)
        result.delivered = [1000 * (arrived[i] - t) for i, t in done.items() if i in arrived]
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                fields = orjson.loads(line)
                result.logs[str(fields.get("event"))] = fields
    return result


# --- report ------------------------------------------------------------------------------------


def _show(r: Round) -> str:
    lock = r.logs.get("worker stopped", {})
    api = r.logs.get("api stopped", {})
    parts = [
        f"create p50 {Round.q(r.create_plain, 0.5):.2f} ms plain,"
        f" {Round.q(r.create_hooked, 0.5):.2f} ms hooked (x{r.ratio:.2f});"
        f" hooked p99 {Round.q(r.create_hooked, 0.99):.2f} ms",
        f"50/s: {len(r.delivered)}/{r.paced_writes} delivered,"
        f" p50 {Round.q(r.delivered, 0.5):.2f} / p99 {Round.q(r.delivered, 0.99):.2f}"
        f" / max {max(r.delivered, default=float('nan')):.2f} ms",
    ]
    if "hold_p50_ms" in lock:
        parts.append(
            f"delivery lock hold p50 {lock['hold_p50_ms']} / p99 {lock['hold_p99_ms']}"
            f" / max {lock['hold_max_ms']} ms over {lock['transactions']} transactions;"
            f" wake p50 {lock.get('wake_p50_ms')} / p99 {lock.get('wake_p99_ms')} ms"
        )
    if "wait_p50_ms" in api:
        parts.append(
            f"API lock wait p50 {api['wait_p50_ms']} / p99 {api['wait_p99_ms']}"
            f" / max {api['wait_max_ms']} ms; {api['busy']} of {api['transactions']}"
            " transactions found it held"
        )
    return "\n    ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    receive = sub.add_parser("receive")
    receive.add_argument("--port", type=int, required=True)
    parser.add_argument("--tree", action="append", help="a source tree (default: this one)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--creates", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    if args.command == "receive":
        run_receiver(args.port)
        return
    trees = [Path(t).resolve() for t in (args.tree or [str(ROOT)])]
    port = _free_port()
    receiver = subprocess.Popen(
        [sys.executable, "-m", "bench.write_latency", "receive", "--port", str(port)], cwd=ROOT
    )
    url = f"http://{HOST}:{port}"
    try:
        _wait_answering(url + "/arrivals", receiver)
        results: dict[str, list[Round]] = {str(t): [] for t in trees}
        for n in range(args.rounds):
            for tree in trees if n % 2 == 0 else list(reversed(trees)):
                r = one_round(tree, url, args.creates, args.rate, args.seconds)
                results[str(tree)].append(r)
                print(f"round {n + 1} {tree}:\n    {_show(r)}", flush=True)
        print("\nsummary (median of the rounds' figures):")
        for name, rounds in results.items():
            med = statistics.median
            print(
                f"  {name}: ratio x{med(r.ratio for r in rounds):.2f} "
                f"(plain {med(Round.q(r.create_plain, 0.5) for r in rounds):.2f} ms, "
                f"hooked {med(Round.q(r.create_hooked, 0.5) for r in rounds):.2f} ms); "
                f"50/s p50 {med(Round.q(r.delivered, 0.5) for r in rounds):.2f} / "
                f"p99 {med(Round.q(r.delivered, 0.99) for r in rounds):.2f} ms"
            )
    finally:
        receiver.terminate()
        receiver.wait(10)


if __name__ == "__main__":
    main()
