"""Delivery on PostgreSQL with 1, 2 and 4 ``crmhooks worker`` processes, against a bare client.

The events are written once through the API (``serve --no-delivery``, PostgreSQL in a schema of
its own) for ``--webhooks`` webhooks on ``Account.Create`` (each a path of its own on the bench
receiver, so the per-webhook limit of 16 in flight is not the only one); for chunk_size 100 the
events are then copied in SQL (new ids and bursts, same records). Before each run the delivery
tables and the router's cursor are emptied, so every run routes and delivers all of it. A run
starts the workers and is timed from the first request at the receiver to the last; then the
workers are stopped (SIGTERM) and each reports its exchanges with the database (statements,
and a BEGIN and a COMMIT per transaction). The ceiling is a bare aiohttp client posting the
bodies of that run to the same receiver, as many in flight as the dispatchers may have.

Run ``python -m bench.scale_out``; the figures are printed and written to the "Scale-out on
PostgreSQL" section of ``docs/benchmarks.md`` (``--no-docs`` to skip).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from rich.table import Table
from sqlalchemy import create_engine, text

from bench.api_speed import (
    machine,
    machine_cpu,
    postgres_database,
    postgres_version,
    process_cpu,
    reproduce,
    stop_server,
)
from bench.delivery_speed import (
    PER_WEBHOOK,
    Key,
    _loop_factory,
    _replay,
    console,
    receiver_call,
    register,
    start_receiver,
    start_serve,
    write_accounts,
    write_section,
)
from crmhooks.store.engine import sync_url
from crmhooks.store.tables import events

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
HEADING = "## Scale-out on PostgreSQL"
DEFAULT_PG = "postgresql://root@127.0.0.1:5432/test"


@dataclass
class Run:
    chunk_size: int
    workers: int
    events: int  # delivered (elements at the receiver)
    requests: int
    seconds: float  # first request at the receiver -> last
    round_trips: int
    statements: int
    transactions: int
    worker_cpu: float
    cores: float
    ceiling: float = float("nan")

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def trips_per_event(self) -> float:
        return self.round_trips / self.events if self.events else float("nan")


@dataclass
class Results:
    pg_version: str = ""
    webhooks: int = 0
    runs: list[Run] = field(default_factory=list)


def _sql(db_url: str, *statements: str, params: dict[str, Any] | None = None) -> None:
    engine = create_engine(sync_url(db_url))
    try:
        with engine.begin() as conn:
            for s in statements:
                conn.execute(text(s), params or {})
    finally:
        engine.dispose()


def reset_delivery(db_url: str) -> None:
    _sql(
        db_url,
        "TRUNCATE deliveries, delivery_bodies, delivery_records, delivery_attempts",
        "DELETE FROM dispatch_state WHERE name = 'router'",  # the routing cursor
    )


def copy_events(db_url: str, total: int) -> None:
    """Copy the stored events (new ids and bursts, same records) until there are ``total``."""
    names = [c.name for c in events.columns if c.name != "seq"]
    picked = ", ".join(
        {
            "id": "gen_random_uuid()::text",
            "burst_id": "md5(burst_id || :round)::uuid::text",
        }.get(n, n)
        for n in names
    )
    engine = create_engine(sync_url(db_url))
    try:
        with engine.begin() as conn:
            have = original = int(conn.execute(text("SELECT count(*) FROM events")).scalar_one())
            top = int(conn.execute(text("SELECT max(seq) FROM events")).scalar_one())
            round_ = 0
            while have < total:
                round_ += 1
                take = min(original, total - have)
                conn.execute(
                    text(
                        f"INSERT INTO events ({', '.join(names)}) SELECT {picked} FROM events"
                        f" WHERE seq <= :top ORDER BY seq LIMIT :take"
                    ),
                    {"round": str(round_), "top": top, "take": take},
                )
                have += take
    finally:
        engine.dispose()


def bodies(db_url: str) -> list[tuple[str, bytes]]:
    engine = create_engine(sync_url(db_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT d.id, d.webhook_id, b.body FROM deliveries d"
                    " JOIN delivery_bodies b ON b.delivery_id = d.id ORDER BY d.first_seq"
                )
            ).all()
    finally:
        engine.dispose()
    return [(str(r[0]), str(r[2]).encode()) for r in rows]


def start_workers(db_url: str, n: int, workdir: Path) -> list[tuple[subprocess.Popen[bytes], Path]]:
    env = {
        **os.environ,
        "CRMHOOKS_DATABASE_URL": db_url,
        "CRMHOOKS_ALLOWED_TARGETS": "127.0.0.0/8",
        "CRMHOOKS_LOG_LEVEL": "info",
        "CRMHOOKS_LOG_JSON": "true",
    }
    out = []
    for i in range(n):
        log = workdir / f"worker-{time.monotonic_ns()}-{i}.log"
        with log.open("wb") as f:
            proc = subprocess.Popen(
                [sys.executable, "-m", "crmhooks", "worker"],
                env=env,
                cwd=workdir,
                stdout=f,
                stderr=subprocess.STDOUT,
            )
        out.append((proc, log))
    return out


def one_run(
    db_url: str, receiver: Any, chunk_size: int, workers: int, expected: int, workdir: Path
) -> Run:
    reset_delivery(db_url)
    receiver_call(receiver, "/reset", "POST")
    console.print(f"  chunk_size {chunk_size}, {workers} worker(s): delivering", style="dim")
    busy0, t0 = machine_cpu()[0], time.time()
    procs = start_workers(db_url, workers, workdir)
    cpu = 0.0
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            stats = receiver_call(receiver, "/stats")
            if stats["distinct"] >= expected:
                break
            time.sleep(0.05)
        cpu = sum(process_cpu(p.pid) for p, _ in procs)
    finally:
        for p, _ in procs:
            p.terminate()
        for p, _ in procs:
            stop_server(p)
    cores = (machine_cpu()[0] - busy0) / max(time.time() - t0, 1e-9)
    statements = transactions = 0
    for _, log in procs:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"worker stopped"' in line:
                entry = orjson.loads(line)
                statements += int(entry["db_statements"])
                transactions += int(entry["db_transactions"])
    if stats["distinct"] < expected:
        raise RuntimeError(f"only {stats['distinct']} of {expected} events arrived")
    return Run(
        chunk_size,
        workers,
        int(stats["distinct"]),
        int(stats["requests"]),
        float(stats["last"] - stats["first"]),
        statements + 2 * transactions,
        statements,
        transactions,
        cpu,
        cores,
    )


def ceiling(db_url: str, receiver: Any, concurrency: int) -> float:
    sent = bodies(db_url)
    receiver_call(receiver, "/reset", "POST")
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_replay(receiver.hook, sent, concurrency))
    stats = receiver_call(receiver, "/stats")
    return float(stats["distinct"] / (stats["last"] - stats["first"]))


def measure(opts: argparse.Namespace, results: Results, workdir: Path) -> None:
    receiver = start_receiver()
    try:
        with postgres_database(opts.postgres_url) as db_url:
            results.pg_version = postgres_version(opts.postgres_url)
            key = Key()
            console.print(
                f"  writing {opts.events_1:,} accounts for {opts.webhooks} webhooks", style="dim"
            )
            serve = start_serve(db_url, workdir, delivery=False, key=key)
            try:
                with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                    for _ in range(opts.webhooks):
                        runner.run(register(serve, key, receiver.hook, {"chunk_size": 1}))
                    runner.run(write_accounts(serve, key, opts.events_1, batch=1000))
            finally:
                stop_server(serve.process)
            results.webhooks = opts.webhooks
            for chunk_size, total in ((1, opts.events_1), (100, opts.events_100)):
                if chunk_size == 100:
                    copy_events(db_url, total)
                options = orjson.dumps({"chunk_size": chunk_size}).decode()
                _sql(db_url, "UPDATE webhooks SET options = :o", params={"o": options})
                for n in opts.workers:
                    run = one_run(db_url, receiver, chunk_size, n, total * opts.webhooks, workdir)
                    run.ceiling = ceiling(db_url, receiver, PER_WEBHOOK * opts.webhooks)
                    results.runs.append(run)
    finally:
        stop_server(receiver.process)


def rows(r: Results) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for run in r.runs:
        target = 3 if run.chunk_size == 1 else 0.1
        ok = run.trips_per_event <= target
        out.append(
            (
                str(run.chunk_size),
                str(run.workers),
                f"{run.rate:,.0f}",
                f"{run.ceiling:,.0f}",
                f"{run.rate / run.ceiling:.0%}",
                f"{run.trips_per_event:.2f} (target <= {target:g}, {'met' if ok else 'missed'})",
                f"{1e6 * run.worker_cpu / max(run.requests, 1):,.0f}",
                f"{run.cores:.2f}",
            )
        )
    return out


COLUMNS = (
    "chunk_size",
    "workers",
    "events/s",
    "bare client events/s",
    "share",
    "DB round trips per event",
    "worker CPU µs per request",
    "cores busy",
)


def print_table(r: Results) -> None:
    table = Table(title=f"crmhooks delivery on PostgreSQL {r.pg_version}, {r.webhooks} webhooks")
    for c in COLUMNS:
        table.add_column(c)
    for row in rows(r):
        table.add_row(*row)
    console.print(table)


def markdown(r: Results, command: str) -> str:
    doc = (__doc__ or "").split("\n\nRun")[0].split("\n\n", 1)[-1]
    lines = [
        HEADING,
        "",
        "`bench/scale_out.py`: " + doc,
        "",
        "<!-- scale_out: figures -->",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}; PostgreSQL "
        f"{r.pg_version} on the same machine; {r.webhooks} webhooks.",
        "",
        *reproduce(command),
        "| " + " | ".join(COLUMNS) + " |",
        "| " + " | ".join("---" for _ in COLUMNS) + " |",
        *("| " + " | ".join(row) + " |" for row in rows(r)),
        "",
        "Round trips per event, by run: "
        + "; ".join(
            f"chunk_size {x.chunk_size}, {x.workers} worker(s): {x.statements:,} statements + "
            f"{x.transactions:,} transactions x 2 for {x.events:,} events in {x.requests:,} "
            f"requests"
            for x in r.runs
        )
        + ".",
        "<!-- /scale_out: figures -->",
        "",
        NOTES,
    ]
    return "\n".join(lines)


NOTES = """\
Where the limit is, from these runs:

- **CPU of this machine.** With one worker the machine is already 1.1-1.3 cores busy (the
  worker about one core, PostgreSQL, the receiver); two workers take it to 1.5-1.9 and four to
  1.6-1.9 of its 2 cores. More processes then only share the same two cores: events/s stay
  where one worker puts them (within the run-to-run noise of 10-20%) while the CPU per request
  grows (each process has its own event loop, claims and scans; one of them routes). The
  bare client meets the same wall: 13,000-15,000 requests/s with the receiver on the other core.
- **Not the database.** Claims take up to 32 requests of a webhook per statement and outcomes
  are recorded in batches, so the workers exchange 0.2-0.6 messages with PostgreSQL per event
  at chunk_size 1 (target 3) and 0.01-0.03 at chunk_size 100 (target 0.1), with statements
  and transactions counted in each worker (`RoundTrips`, reported when it stops). PostgreSQL
  itself was a small part of the busy cores.
- **Per worker**, a request costs ~400 µs of worker CPU at chunk_size 1 (routing included: the
  routing worker renders and stores each request) and ~6 ms per request of 100 events.

Projection for a larger machine: delivery is CPU-bound per process and the processes share
nothing but PostgreSQL, so each worker on a core of its own adds about what one worker does
here (2,000-2,400 requests/s at chunk_size 1; 15,000-17,000 events/s at chunk_size 100),
until one of two shared limits: the single routing process (~40-60 µs of CPU per event here,
some 20,000 events/s), and PostgreSQL's commit rate for the outbox (every API write takes the
outbox lock for its commit; ~1,000-2,000 commits/s measured on this machine's shared cores,
far more on dedicated ones). The per-webhook limit (16 in flight across all workers) bounds one
webhook's rate by its receiver's latency: 16 / latency.
"""


def main(argv: list[str] | None = None) -> None:
    args_in = argv if argv is not None else sys.argv[1:]
    p = argparse.ArgumentParser(prog="python -m bench.scale_out", description=__doc__)
    p.add_argument(
        "--postgres-url", default=os.environ.get("CRMHOOKS_TEST_POSTGRES_URL", DEFAULT_PG)
    )
    p.add_argument("--events-1", type=int, default=5_000, help="events, chunk_size 1")
    p.add_argument("--events-100", type=int, default=25_000, help="events, chunk_size 100")
    p.add_argument("--webhooks", type=int, default=4)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--docs", type=Path, default=DOCS)
    p.add_argument("--no-docs", action="store_true")
    opts = p.parse_args(args_in)
    results = Results()
    with tempfile.TemporaryDirectory(prefix="crmhooks-scale-") as tmp:
        measure(opts, results, Path(tmp))
    print_table(results)
    if not opts.no_docs:
        shown = [a for a in args_in if a != "--no-docs"]
        command = " ".join([".venv/bin/python -m bench.scale_out", *shown])
        write_section(opts.docs, markdown(results, command), HEADING)
        console.print(f"updated {opts.docs}")


if __name__ == "__main__":
    main()
