"""Several processes on one PostgreSQL database: API processes and delivery workers started and
stopped one by one, writing through any of them, and what each webhook path received."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from tests.support.databases import new_space
from tests.support.servers import ROOT, Server
from tests.support.stack import Received, Receiver


@dataclass
class Cluster:
    apis: list[Server]
    workers: list[subprocess.Popen[bytes]]
    receiver: Receiver
    auth: tuple[str, str]
    env: dict[str, str]
    directory: Path
    # The space written to, and the receiver paths of its webhooks start with ``prefix``: tests
    # sharing the processes each take a space and a prefix of their own.
    space: str = "default"
    prefix: str = ""
    owner: str = ""  # the space's API user; "": the one the first API process printed

    def api(self, i: int) -> str:
        return self.apis[i % len(self.apis)].url

    @property
    def base(self) -> str:
        return f"/api/v100/rest/spaces/{self.space}/entities"

    def requests(self, path: str) -> list[Received]:
        """What the receiver got at ``path`` (under this cluster's prefix)."""
        return self.receiver.requests(self.prefix + path)

    def in_new_space(self) -> Cluster:
        """The same processes, writing to a new space whose webhooks get paths of their own."""
        space = f"s{uuid.uuid4().hex[:12]}"
        key = asyncio.run(new_space(self.env["CRMHOOKS_DATABASE_URL"], space))
        auth = (key.api_key, key.api_secret)
        owner = key.client_id or ""
        return replace(self, auth=auth, space=space, prefix=f"/{space}", owner=owner)

    def start_worker(self) -> subprocess.Popen[bytes]:
        n = len(self.workers)
        out = (self.directory / f"worker-{n}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "crmhooks", "worker"],
            env=self.env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        self.workers.append(proc)
        return proc

    def stop_workers(self) -> None:
        """SIGTERM to every worker still running; SIGKILL to one that does not stop."""
        for w in self.workers:
            if w.poll() is None:
                w.terminate()
        for w in self.workers:
            try:
                w.wait(15)
            except subprocess.TimeoutExpired:
                w.kill()


def register(c: Cluster, path: str, events: list[str], chunk_size: int) -> str:
    body = {
        "url": c.receiver.url + c.prefix + path,
        "events": events,
        "insecure_ssl": False,
        "options": {"chunk_size": chunk_size},
    }
    r = httpx.post(c.api(0) + c.base + "/Webhooks", auth=c.auth, json=body, timeout=30)
    assert r.status_code == 201, r.text
    return str(r.json()["data"]["id"])


def batch(c: Cluster, i: int, items: list[dict[str, Any]]) -> list[str]:
    """batch-modify Accounts; new ones are owned by the space's API user."""
    owner = c.owner or c.apis[0].client_id
    items = [it if "id" in it else {"owner_id": owner, **it} for it in items]
    r = httpx.post(
        c.api(i) + c.base + "/Accounts/batch-modify", auth=c.auth, json=items, timeout=60
    )
    assert r.status_code == 200, r.text[:500]
    ids = r.json()["data"]
    assert all(isinstance(x, str) for x in ids), ids[:3]
    return list(ids)


@dataclass
class Seen:
    """What one webhook's path received: each request's webhook-id and elements, in order."""

    requests: list[tuple[str, list[dict[str, Any]]]]

    def element_ids(self) -> dict[str, set[str]]:
        """Event id -> the webhook-ids (requests) that carried it."""
        out: dict[str, set[str]] = defaultdict(set)
        for msg_id, elements in self.requests:
            for el in elements:
                out[el["id"]].add(msg_id)
        return out

    def count(self) -> int:
        return len(self.element_ids())


def seen(c: Cluster, path: str) -> Seen:
    return Seen([(r.headers["webhook-id"], r.elements()) for r in c.requests(path)])


def wait_all(c: Cluster, expected: dict[str, int], timeout: float = 180) -> dict[str, Seen]:
    """Every expected event at its path; the requests are parsed only once enough arrived."""
    needed = {p: n // (10 if p == "/creates" else 1) for p, n in expected.items()}
    deadline = time.monotonic() + timeout
    while True:
        counts = {p: len(c.requests(p)) for p in expected}
        if all(counts[p] >= needed[p] for p in expected):
            got = {p: seen(c, p) for p in expected}
            if all(got[p].count() >= n for p, n in expected.items()):
                return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s: requests {counts} of {needed}")
        time.sleep(0.5)


def assert_record_order(requests: list[tuple[str, list[dict[str, Any]]]]) -> None:
    """Per record, the first arrival of each event comes in revision order."""
    firsts: dict[str, dict[str, int]] = defaultdict(dict)  # record -> event id -> position
    revision: dict[str, int] = {}
    position = 0
    for _, elements in requests:
        for el in elements:
            position += 1
            record = el["entity"]["id"]
            firsts[record].setdefault(el["id"], position)
            revision[el["id"]] = el["entity"]["revision"]
    for record, events in firsts.items():
        in_arrival = [revision[e] for e in sorted(events, key=events.__getitem__)]
        assert in_arrival == sorted(in_arrival), f"{record} arrived out of order: {in_arrival}"
