"""Delivery's half of the composition root: what ``crmhooks worker`` runs and what ``serve``
starts beside its API.

``run_worker`` is ``crmhooks worker`` (the dispatcher alone, also the body of ``serve``'s
delivery process); :class:`DeliveryProcess` is that process as ``serve`` starts, wakes,
restarts and stops it. The builders here (the address :class:`Guard`, the :class:`Sender`,
the dispatcher and its settings) are the only place those parts are made from
:class:`Settings`; ``crmhooks.app`` builds the API with the same functions. Nothing here
imports the HTTP side, so a delivery process starts without loading it (``crmhooks serve``
starts its delivery process first, and the two import at once).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from contextlib import suppress
from typing import Protocol

import structlog
from sqlalchemy import select

from crmhooks.changes.outbox import WEBHOOK_INPUTS
from crmhooks.changes.writer import Change, WriteContext
from crmhooks.delivery.dispatcher import Dispatcher, DispatchSettings
from crmhooks.delivery.fairness import space_share
from crmhooks.delivery.queue import SqlQueue
from crmhooks.delivery.retry import parse_schedule
from crmhooks.delivery.router import Router
from crmhooks.delivery.sender import HttpSender
from crmhooks.delivery.wakeups import WakeReader, WakeSender, wait_ready
from crmhooks.netguard import Guard, parse_allowed
from crmhooks.schema.registry import WEBHOOKS
from crmhooks.settings import Settings
from crmhooks.store.engine import WRITE_LOCK, Database, open_database
from crmhooks.store.records import table_of

log = structlog.get_logger("crmhooks.worker")
supervisor_log = structlog.get_logger("crmhooks.serve")


def build_guard(settings: Settings) -> Guard:
    return Guard(parse_allowed(settings.allowed_targets))


def build_sender(settings: Settings, guard: Guard) -> HttpSender:
    """The one pool webhook requests go out on, deliveries and test events alike."""
    return HttpSender(
        guard,
        connect_timeout=settings.connect_timeout,
        total_timeout=settings.request_timeout,
        pool_size=settings.max_in_flight,
    )


def dispatch_settings(settings: Settings) -> DispatchSettings:
    """The dispatcher's settings; every default is :class:`Settings`' own."""
    return DispatchSettings(
        schedule=parse_schedule(settings.retry_schedule),
        max_in_flight=settings.max_in_flight,
        max_in_flight_per_webhook=settings.max_in_flight_per_webhook,
        max_in_flight_per_space=space_share(
            settings.max_in_flight, settings.max_in_flight_per_space
        ),
        lease_seconds=settings.lease_seconds,
        disable_after=settings.disable_after_seconds,
        retention=settings.retention_seconds,
        prune_every=settings.prune_every_seconds,
    )


def public_base(settings: Settings) -> str:
    """The base URL of the record URIs webhook payloads show."""
    return (settings.public_url or "http://127.0.0.1:8000").rstrip("/")


def build_dispatcher(db: Database, settings: Settings, sender: HttpSender) -> Dispatcher:
    """The dispatcher with its queue, router and webhook cache, sending through ``sender``;
    on PostgreSQL it also listens for other processes' wake-ups."""
    router = Router(db, public_base(settings), budget=settings.routing_budget_ms / 1000)
    listen = db.url if db.dialect == "postgresql" else None
    return Dispatcher(
        SqlQueue(db),
        router,
        router.webhooks,
        sender,
        dispatch_settings(settings),
        listen_url=listen,
    )


class _Child(Protocol):
    """What the supervisor asks of its delivery process: ``subprocess.Popen``'s terms."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


class _Forked:
    """A forked child in ``subprocess.Popen``'s terms (``_Child``)."""

    WAIT_STEP = 0.01

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                done, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: gone all the same
                self.returncode = -1
            else:
                if done:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if end is not None and time.monotonic() >= end:
                raise subprocess.TimeoutExpired(f"delivery process {self.pid}", timeout or 0.0)
            time.sleep(self.WAIT_STEP)
        return code

    def _signal(self, sig: signal.Signals) -> None:
        if self.poll() is None:
            with suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)


class DeliveryProcess:
    """``crmhooks serve``'s delivery: ``crmhooks worker`` in a child process, woken through a
    pipe after each commit that stored events (``delivery.wakeups``).

    ``serve`` forks the first one before it starts anything else (no thread, socket or
    database connection exists yet to be copied), so that child has the delivery side
    imported already and waits only for the API to start; later ones (after a crash) are
    started afresh as ``crmhooks worker --wake-fd``, since forking a running server is unsafe.
    The child stops by itself when this process dies (end of file on the pipe, even after a
    SIGKILL); when the child dies, it is started again after a pause that doubles from
    ``RESTART_FIRST`` to ``RESTART_MAX`` while it keeps dying within ``STEADY`` seconds.
    ``stop`` ends it with SIGTERM (its leases released, outcomes recorded) and waits for it.
    """

    SPACES_EVERY = 2.0
    RESTART_FIRST = 0.1
    RESTART_MAX = 5.0
    STEADY = 30.0
    POLL = 0.1
    STOP_WAIT = 15.0

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._read, write = os.pipe()  # not inherited by children, unless passed on
        self._wakes = WakeSender(write)
        self._write = write
        self._proc: _Child | None = None
        self._stopping = False
        self._ready = False  # start() was called: a new delivery process may begin at once
        self.started_at = 0.0
        self.restarts = 0
        self._spaces: set[str] | None = None  # spaces with webhooks; None: not known now
        self._generation = 0  # webhook changes seen
        self._reload = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def notify(self, ctx: WriteContext, changes: Sequence[Change]) -> None:
        """An ``after_commit`` callback: events were committed. Writes in a space without
        webhooks wake nothing (as the in-process ``Dispatcher.notify``): their events are
        passed over by the next routing step, at the latest a poll interval later."""
        if any(c.entity.name in WEBHOOK_INPUTS for c in changes):
            self._spaces = None  # wake for every write until the spaces are read again
            self._generation += 1
            self._reload.set()
        elif self._spaces is not None and ctx.space_id not in self._spaces:
            return
        self._wakes.events()

    async def _watch_spaces(self, db: Database) -> None:
        """Keep the spaces that have webhooks: read at start, after each webhook change made
        here, and every ``SPACES_EVERY`` seconds (changes made by other processes)."""
        t = table_of(WEBHOOKS)
        query = select(t.c.space_id).where(t.c.is_deleted.is_(False)).distinct()
        while not self._stopping:
            generation = self._generation
            try:
                async with db.read() as conn:
                    found = {str(r[0]) for r in await conn.execute(query)}
            except Exception as e:  # keep waking for every write meanwhile
                supervisor_log.warning("reading the spaces with webhooks failed", error=str(e))
            else:
                if generation == self._generation:  # no webhook change since the read began
                    self._spaces = found
            with suppress(TimeoutError):
                await asyncio.wait_for(self._reload.wait(), self.SPACES_EVERY)
            self._reload.clear()

    def requeued(self) -> None:
        """Deliveries were put back in the queue (resend, recover)."""
        self._wakes.requeued()

    def spawn(self, *, fork: bool = False) -> None:
        """Start the delivery process now; it waits until ``start`` tells it the database is
        ready (``wakeups.wait_ready``). ``serve`` calls this first thing with ``fork``: the
        child is a copy of this process, with the delivery side imported already (the caller
        has imported this module) and nothing running that a copy could break."""
        if fork:
            self._proc = self._fork()
        else:
            env = {
                **os.environ,
                "CRMHOOKS_DATABASE_URL": self._settings.database_url,
                "CRMHOOKS_PUBLIC_URL": self._settings.public_url or "",
            }
            command = [sys.executable, "-m", "crmhooks", "worker", "--wake-fd", str(self._read)]
            self._proc = subprocess.Popen(command, env=env, pass_fds=(self._read,))
        self.started_at = time.monotonic()
        supervisor_log.info("delivery process started", pid=self._proc.pid, forked=fork)
        if self._ready:
            self._wakes.ready()

    def _fork(self) -> _Forked:
        pid = os.fork()
        if pid:
            return _Forked(pid)
        code = 0  # the child, from here on: it never returns
        try:
            os.close(self._write)  # else the pipe never ends when the API process dies
            delivery_main(self._settings, self._read)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    async def start(self, db: Database) -> None:
        """The API has started on ``db``: let the delivery process begin (spawning it if
        ``spawn`` was not called), watch it and the spaces with webhooks."""
        if self._proc is None:
            self.spawn()
        self._ready = True
        self._wakes.ready()
        self._tasks = [
            asyncio.create_task(self._supervise(), name="delivery-process"),
            asyncio.create_task(self._watch_spaces(db), name="spaces-with-webhooks"),
        ]

    async def _supervise(self) -> None:
        pause = self.RESTART_FIRST
        while not self._stopping:
            await asyncio.sleep(self.POLL)
            proc = self._proc
            if proc is None or proc.poll() is None:
                continue
            if time.monotonic() - self.started_at >= self.STEADY:
                pause = self.RESTART_FIRST
            supervisor_log.warning(
                "delivery process exited; restarting",
                pid=proc.pid,
                returncode=proc.returncode,
                restart_in=pause,
            )
            await asyncio.sleep(pause)
            pause = min(pause * 2, self.RESTART_MAX)
            if not self._stopping:
                self.spawn()
                self.restarts += 1

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, self.STOP_WAIT)
            except subprocess.TimeoutExpired:
                supervisor_log.warning("delivery process did not stop; killed", pid=proc.pid)
                proc.kill()
                await asyncio.to_thread(proc.wait)
        for fd in (self._read, self._write):
            with suppress(OSError):
                os.close(fd)


def delivery_main(settings: Settings, wake_fd: int) -> None:
    """The body of ``serve``'s delivery process (forked, or ``crmhooks worker --wake-fd``):
    wait until the API process has started, then deliver until it is gone or SIGTERM."""
    import uvloop

    # Ctrl-C reaches the whole process group: serve stops this process itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if wait_ready(wake_fd):  # the API has migrated and started; False: it is gone
        uvloop.run(run_worker(settings, wake_fd=wake_fd))


async def run_worker(settings: Settings, *, wake_fd: int | None = None) -> None:
    """``crmhooks worker``: the dispatcher without the API, until SIGTERM or SIGINT.

    With ``wake_fd`` it is ``serve``'s delivery process: woken through that pipe
    (``delivery.wakeups``) and stopped when the pipe's writer (the API process) is gone. Its
    write transactions are never grouped (``open_database``): on SQLite a group would hold the
    write lock, which an API process on the same file waits for, until this event loop comes
    round to commit it.
    """
    db = open_database(settings.database_url, pool_size=settings.db_pool_size, group_commit=False)
    dispatcher = build_dispatcher(db, settings, build_sender(settings, build_guard(settings)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # serve's delivery process leaves Ctrl-C (sent to the whole process group) to serve.
    for sig in (signal.SIGTERM,) if wake_fd is not None else (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    wakes: WakeReader | None = None
    if wake_fd is not None:

        def gone() -> None:
            log.warning("the API process is gone; stopping")
            stop.set()

        wakes = WakeReader(
            wake_fd, on_events=dispatcher.wake, on_requeued=dispatcher.requeued, on_gone=gone
        )
        wakes.start()
    await dispatcher.start()
    log.info("worker started")
    try:
        await stop.wait()
    finally:
        if wakes is not None:
            wakes.stop()
        await dispatcher.stop()
        await db.dispose()
        trips = db.round_trips
        lock = WRITE_LOCK.summary() if db.dialect == "sqlite" else {}
        log.info(
            "worker stopped",
            db_statements=trips.statements,
            db_transactions=trips.transactions,
            db_round_trips=trips.total,
            **lock,
            **(wakes.summary() if wakes is not None else {}),
        )
