"""End-to-end stacks for the webhook engine: a real ``crmhooks serve`` process on a real
database (SQLite, or PostgreSQL in a schema of its own), a real receiver process on loopback
(``tests.support.receiver``) that logs every request, and spaces on the server with an HTTP
client signed in."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import Engine, create_engine, func, select

from crmhooks.delivery.router import ROUTER
from crmhooks.store.engine import sync_url
from crmhooks.store.tables import deliveries, dispatch_state, events
from tests.support.databases import fresh_database, new_space
from tests.support.required import with_required
from tests.support.servers import (
    ROOT,
    WAIT,
    Server,
    free_port,
    start_server,
    stop_server,
    wait_until,
)

ALLOW_LOOPBACK = "127.0.0.0/8,::1/128"
# Short enough that a hanging receiver and the retries of a failing one fit in a test.
SERVER_ENV = {
    "CRMHOOKS_ALLOWED_TARGETS": ALLOW_LOOPBACK,
    "CRMHOOKS_REQUEST_TIMEOUT": "2",
    "CRMHOOKS_CONNECT_TIMEOUT": "2",
    "CRMHOOKS_RETRY_SCHEDULE": "0.5,0.5",
    "CRMHOOKS_LOG_LEVEL": "warning",
    "CRMHOOKS_LOG_JSON": "true",
}


# --- the receiver process ---------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One request as the receiver logged it."""

    time: float
    method: str
    path: str
    header_list: list[tuple[str, str]]
    body: bytes

    @property
    def headers(self) -> dict[str, str]:
        """Header names lower-cased (HTTP header names are case-insensitive)."""
        return {k.lower(): v for k, v in self.header_list}

    def elements(self) -> list[dict[str, Any]]:
        data = orjson.loads(self.body)
        assert isinstance(data, list), self.body[:200]
        return data


@dataclass
class Receiver:
    url: str
    port: int
    log: Path
    process: subprocess.Popen[bytes]
    verify: bool = True
    _seen: list[Received] = field(default_factory=list)
    _offset: int = 0

    def _read_new(self) -> None:
        """Parse the lines logged since the last read (a line still being written waits)."""
        with contextlib.suppress(FileNotFoundError), self.log.open("rb") as f:
            f.seek(self._offset)
            chunk = f.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]
            self._offset += len(complete)
            for line in complete.splitlines():
                raw = orjson.loads(line)
                self._seen.append(
                    Received(
                        time=raw["time"],
                        method=raw["method"],
                        path=raw["path"],
                        header_list=[(k, v) for k, v in raw["headers"]],
                        body=base64.b64decode(raw["body_b64"]),
                    )
                )

    def requests(self, path: str | None = None) -> list[Received]:
        """Every request received so far (to ``path``), in the order they arrived."""
        self._read_new()
        return [r for r in self._seen if path is None or r.path == path]

    def wait_for(self, n: int, path: str | None = None, timeout: float = WAIT) -> list[Received]:
        """At least ``n`` requests (to ``path``), waiting at most ``timeout`` seconds."""
        return list(
            wait_until(
                lambda: (got := self.requests(path)) and len(got) >= n and got,
                timeout,
                f"{n} request(s) to {path or 'the receiver'}",
            )
        )

    def add_rule(
        self,
        path: str,
        *,
        status: int = 200,
        mode: str | None = None,
        delay: float = 0.0,
        count: int | None = None,
    ) -> None:
        """Answer the next ``count`` requests to ``path`` so (``count`` None: all of them)."""
        r = httpx.post(
            f"{self.url}/_receiver/rules",
            json={"path": path, "status": status, "mode": mode, "delay": delay, "count": count},
            verify=self.verify,
        )
        assert r.status_code == 200, r.text

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the receiver exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    process.kill()
    raise AssertionError("the receiver did not start listening")


@dataclass
class Launch:
    port: int
    log: Path
    process: subprocess.Popen[bytes]
    scheme: str

    def ready(self) -> Receiver:
        _wait_listening(self.port, self.process)
        url = f"{self.scheme}://127.0.0.1:{self.port}"
        return Receiver(url, self.port, self.log, self.process, verify=self.scheme == "http")


def launch(
    directory: Path,
    *,
    status: int = 200,
    delay: float = 0.0,
    tls: tuple[Path, Path] | None = None,
    mode: str | None = None,
) -> Launch:
    """A receiver process, started; ``.ready()`` waits until it listens."""
    port = free_port()
    log = directory / f"receiver-{port}.jsonl"
    args = [sys.executable, "-m", "tests.support.receiver", "--port", str(port), "--log", str(log)]
    args += ["--status", str(status), "--delay", str(delay)]
    if tls is not None:
        args += ["--tls", str(tls[0]), str(tls[1])]
    if mode is not None:
        args += ["--mode", mode]
    stderr = (directory / f"receiver-{port}.err").open("wb")
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
    stderr.close()
    return Launch(port, log, process, "https" if tls else "http")


def start_receiver(directory: Path, **kw: Any) -> Receiver:
    return launch(directory, **kw).ready()


# --- a space on the server ---------------------------------------------------------------------


@dataclass
class Hook:
    """A webhook registered to a path of its own on the receiver."""

    id: str
    path: str
    record: dict[str, Any]  # as the create response showed it
    receiver: Receiver

    def requests(self) -> list[Received]:
        return self.receiver.requests(self.path)

    def elements(self) -> list[dict[str, Any]]:
        """Every event received, oldest first (requests may arrive out of order; a request's
        own elements keep theirs)."""
        els = [el for r in self.requests() for el in r.elements()]
        return sorted(els, key=lambda el: str(el["event_time"]))

    def names(self) -> list[str]:
        return [el["event"] for el in self.elements()]

    def wait_elements(self, n: int, timeout: float = WAIT) -> list[dict[str, Any]]:
        return list(
            wait_until(
                lambda: (els := self.elements()) and len(els) >= n and els,
                timeout,
                f"{n} event(s) at {self.path}",
            )
        )


@dataclass
class Space:
    """A space of its own on the shared server, with an HTTP client signed in to it."""

    stack: Stack
    space_id: str
    key_id: str
    http: httpx.Client
    client_id: str | None = None  # the space's API user
    hooks: list[Hook] = field(default_factory=list)

    def path(self, entity: str, *rest: str) -> str:
        return "/".join([f"/api/v100/rest/spaces/{self.space_id}/entities/{entity}", *rest])

    def request(self, method: str, entity: str, *rest: str, expect: int = 200, **kw: Any) -> Any:
        r = self.http.request(method, self.path(entity, *rest), **kw)
        assert r.status_code == expect, f"{method} {entity} {rest}: {r.status_code} {r.text}"
        return r.json()["data"] if r.status_code < 400 else r.json()

    def create(self, entity: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        """POST a record; what Pipeliner requires and ``body`` leaves out is filled in
        (tests/support/required.py)."""
        body = with_required(entity, body, self.client_id)
        data: dict[str, Any] = self.request("POST", entity, json=body, expect=201, **kw)
        return data

    def patch(self, entity: str, record_id: str, body: dict[str, Any], **kw: Any) -> Any:
        return self.request("PATCH", entity, record_id, json=body, **kw)

    def delete(self, entity: str, record_id: str, **kw: Any) -> Any:
        return self.request("DELETE", entity, record_id, **kw)

    def get(self, entity: str, *rest: str, **kw: Any) -> Any:
        return self.request("GET", entity, *rest, **kw)

    def register(
        self,
        body: dict[str, Any],
        *,
        receiver: Receiver | None = None,
        name: str | None = None,
        base: str | None = None,
    ) -> Hook:
        """POST /entities/Webhooks with ``body``, its ``url`` pointed at a fresh path of the
        receiver (or of ``base``, where nothing need listen)."""
        target = receiver or self.stack.receiver
        path = f"/hook/{name or 'h'}-{uuid.uuid4().hex[:12]}"
        data = self.create("Webhooks", {**body, "url": (base or target.url) + path})
        hook = Hook(data["id"], path, data, target)
        self.hooks.append(hook)
        return hook

    def settle(self, *hooks: Hook, timeout: float = WAIT) -> None:
        """Wait until every event so far is routed and ``hooks`` have nothing pending: what
        they will receive of it is then at the receiver."""
        self.stack.settle([h.id for h in (hooks or tuple(self.hooks))], timeout)

    def pipeline_step(self) -> str:
        pipeline = self.create("Pipelines", {"name": "Sales"})
        step = self.create("Steps", {"name": "Lead in", "pipeline_id": pipeline["id"]})
        return str(step["id"])


@dataclass
class Stack:
    """A server with its database, and the receiver its webhooks point at."""

    engine: str
    db_url: str
    server: Server
    receiver: Receiver
    db: Engine

    def new_space(self) -> Space:
        space_id = f"s{uuid.uuid4().hex[:12]}"
        issued = asyncio.run(new_space(self.db_url, space_id))
        http = httpx.Client(
            base_url=self.server.url,
            auth=httpx.BasicAuth(issued.api_key, issued.api_secret),
            timeout=30,
        )
        return Space(self, space_id, issued.key_id, http, issued.client_id)

    def settle(self, webhook_ids: Sequence[str], timeout: float = WAIT) -> None:
        def quiet() -> bool:
            with self.db.connect() as conn:
                last = conn.execute(select(func.max(events.c.seq))).scalar()
                cursor = conn.execute(
                    select(dispatch_state.c.last_seq).where(dispatch_state.c.name == ROUTER)
                ).scalar()
                if last is not None and (cursor is None or cursor < last):
                    return False
                pending = conn.execute(
                    select(func.count())
                    .select_from(deliveries)
                    .where(
                        deliveries.c.webhook_id.in_(list(webhook_ids)),
                        deliveries.c.status == "pending",
                    )
                ).scalar()
                return pending == 0

        wait_until(quiet, timeout, "the dispatcher to route and deliver every event")

    def logged(self, **match: Any) -> list[dict[str, Any]]:
        """The server's JSON log lines whose fields include ``match``."""
        found = []
        for line in self.server.printed().splitlines():
            if not line.startswith("{"):
                continue
            entry = orjson.loads(line)
            if all(entry.get(k) == v for k, v in match.items()):
                found.append(entry)
        return found

    def deliveries_of(self, webhook_id: str) -> list[dict[str, Any]]:
        with self.db.connect() as conn:
            rows = conn.execute(
                select(deliveries)
                .where(deliveries.c.webhook_id == webhook_id)
                .order_by(deliveries.c.first_seq, deliveries.c.created)
            ).mappings()
            return [dict(r) for r in rows]


def open_stack(engine: str, directory: Path, exits: contextlib.ExitStack) -> Stack:
    db_url = exits.enter_context(fresh_database(engine, directory))
    receiver = start_receiver(directory)
    exits.callback(receiver.stop)
    server = start_server(db_url, extra_env=SERVER_ENV)
    exits.callback(stop_server, server)
    db = create_engine(sync_url(db_url))
    exits.callback(db.dispose)
    return Stack(engine, db_url, server, receiver, db)


class Stacks:
    """One stack per engine, started when first asked for and kept for the module."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.exits = contextlib.ExitStack()
        self.started: dict[str, Stack] = {}

    def get(self, engine: str) -> Stack:
        if engine not in self.started:
            directory = self.factory.mktemp(f"e2e-{engine}")
            self.started[engine] = open_stack(engine, directory, self.exits)
        return self.started[engine]

    def close(self) -> None:
        died = [e for e, st in self.started.items() if st.server.process.poll() is not None]
        self.exits.close()
        assert not died, f"the server died during the tests: {died}"
