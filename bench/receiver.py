"""The webhook receiver of ``bench/end_to_end.py``: one process, an asyncio protocol with the
httptools parser on uvloop (the design of the peers kit's receiver, so crmhooks and the peers
are received and timed the same way). Loopback only; it exits by itself after ``--max-seconds``.

POST <any path>  -> 200; counts requests, bytes and events (a JSON array counts its elements,
                    anything else counts as one) and remembers, per request, its receive time and
                    each event's ``id``, ``event_time`` and entity id.
GET /stats       -> {"requests", "events", "unique", "bytes", "first_ts", "last_ts"}
                    (receive times, epoch seconds)
GET /latency     -> {"n", "p50_ms", "p99_ms", "max_ms"}: receive time minus ``event_time``
GET /arrivals    -> {entity id: first receive time}, for matching arrivals to writes
GET /sample      -> the first element of the last POST (the shape actually sent)
GET /reset       -> clears everything

Run: ``python -m bench.receiver --port 8990``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import time
from typing import Any, cast

import httptools
import orjson
import uvloop


def _epoch(t: object) -> float:
    if isinstance(t, int | float):
        return float(t)
    return datetime.datetime.fromisoformat(str(t)).timestamp()


def nearest_rank(values: list[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0..1) of sorted ``values``."""
    return values[min(len(values) - 1, max(0, round(q * len(values)) - 1))]


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = self.events = self.bytes = 0
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.ids: set[str] = set()
        self.sample: object = None
        # (receive time, [(event_time, entity id), ...]) per request; parsed only on demand
        self.stamps: list[tuple[float, list[tuple[object, object]]]] = []

    def record(self, body: bytes) -> None:
        now = time.time()
        self.requests += 1
        self.bytes += len(body)
        if self.first_ts is None:
            self.first_ts = now
        self.last_ts = now
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        items = data if isinstance(data, list) else [data]
        self.sample = items[0] if items else None
        self.events += len(items)
        times: list[tuple[object, object]] = []
        for e in items:
            if isinstance(e, dict):
                if "id" in e:
                    self.ids.add(str(e["id"]))
                entity = e.get("entity")
                eid = entity.get("id") if isinstance(entity, dict) else None
                times.append((e.get("event_time"), eid))
        self.stamps.append((now, times))

    def counts(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "events": self.events,
            "unique": len(self.ids),
            "bytes": self.bytes,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
        }

    def latency(self) -> dict[str, Any]:
        lat = sorted(
            recv - _epoch(t) for recv, items in self.stamps for t, _ in items if t is not None
        )
        if not lat:
            return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
        return {
            "n": len(lat),
            **{
                k: round(nearest_rank(lat, q) * 1000, 2)
                for k, q in (("p50_ms", 0.5), ("p99_ms", 0.99), ("max_ms", 1.0))
            },
        }

    def arrivals(self) -> dict[str, float]:
        seen: dict[str, float] = {}
        for recv, items in self.stamps:
            for _, eid in items:
                if eid is not None:
                    seen.setdefault(str(eid), recv)
        return seen


STATS = Stats()


def handle(method: bytes, path: bytes, body: bytes) -> tuple[int, bytes]:
    if method == b"POST":
        STATS.record(body)
        return 200, b'{"ok":true}'
    path = path.split(b"?", 1)[0]
    if path == b"/stats":
        return 200, orjson.dumps(STATS.counts())
    if path == b"/latency":
        return 200, orjson.dumps(STATS.latency())
    if path == b"/arrivals":
        return 200, orjson.dumps(STATS.arrivals())
    if path == b"/sample":
        return 200, orjson.dumps(STATS.sample)
    if path == b"/reset":
        STATS.reset()
        return 200, b'{"ok":true}'
    return 404, b'{"ok":false}'


def response(status: int, body: bytes) -> bytes:
    reason = b"OK" if status == 200 else b"Not Found"
    head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    return head % (status, reason, len(body)) + body


class RawProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.body = b"", []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        status, out = handle(self.parser.get_method(), self.url, b"".join(self.body))
        self.transport.write(response(status, out))
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(port: int, max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(RawProtocol, "127.0.0.1", port, backlog=1024)
    async with server:
        await asyncio.sleep(max_seconds)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.receiver", description=__doc__)
    ap.add_argument("--port", type=int, default=8990)
    ap.add_argument("--max-seconds", type=float, default=1800.0)
    args = ap.parse_args(argv)
    uvloop.run(serve(args.port, args.max_seconds))


if __name__ == "__main__":
    main()
