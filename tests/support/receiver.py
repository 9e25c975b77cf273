"""A webhook receiver meant to run as a process of its own, for end-to-end tests.

    python -m tests.support.receiver --port P --log FILE [--status N] [--delay S]
                                     [--tls CERT KEY] [--mode garbage|hang|close]

Every request is appended to FILE as one JSON line (receive time, method, path, headers, the
raw body in base64 and as text) before it is answered, then answered with the configured status.
Modes misbehave instead of answering: ``garbage`` writes bytes that are not HTTP, ``hang`` never
answers, ``close`` drops the connection.

``POST /_receiver/rules`` with ``{"path": "/p", "status": 500, "mode": null, "count": 1}``
changes how the next ``count`` requests to that path are answered (``count`` null: all of
them); ``DELETE /_receiver/rules`` forgets every rule. These admin requests are not logged.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

ADMIN = "/_receiver/rules"
MODES = ("garbage", "hang", "close")
GARBAGE = b"\x00\x01 this is not HTTP \xff\xfe\r\n\r\n"


@dataclass
class Rule:
    status: int
    mode: str | None
    delay: float
    count: int | None  # None: for ever


class Receiver:
    def __init__(self, log: TextIO, status: int, delay: float, mode: str | None) -> None:
        self.log = log
        self.default = Rule(status, mode, delay, None)
        self.rules: dict[str, list[Rule]] = {}

    def rule_for(self, path: str) -> Rule:
        queue = self.rules.get(path, [])
        if not queue:
            return self.default
        rule = queue[0]
        if rule.count is not None:
            rule.count -= 1
            if rule.count <= 0:
                queue.pop(0)
        return rule

    async def admin(self, request: web.Request) -> web.Response:
        if request.method == "DELETE":
            self.rules.clear()
            return web.json_response({"rules": 0})
        raw: dict[str, Any] = await request.json()
        rule = Rule(
            status=int(raw.get("status", self.default.status)),
            mode=raw.get("mode"),
            delay=float(raw.get("delay", 0.0)),
            count=raw.get("count"),
        )
        if rule.mode is not None and rule.mode not in MODES:
            return web.json_response({"error": f"mode must be one of {MODES}"}, status=400)
        self.rules.setdefault(str(raw["path"]), []).append(rule)
        return web.json_response({"rules": sum(len(q) for q in self.rules.values())})

    async def receive(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        entry = {
            "time": time.time(),
            "method": request.method,
            "path": request.path,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_b64": base64.b64encode(body).decode(),
            "body": body.decode("utf-8", errors="replace"),
        }
        self.log.write(json.dumps(entry) + "\n")
        self.log.flush()
        rule = self.rule_for(request.path)
        if rule.delay > 0:
            await asyncio.sleep(rule.delay)
        transport = request.transport
        if rule.mode == "hang":
            await asyncio.sleep(3600)
        if rule.mode in ("garbage", "close") and transport is not None:
            if rule.mode == "garbage":
                transport.write(GARBAGE)
            transport.close()
            raise web.HTTPInternalServerError()  # never sent: the connection is gone
        return web.Response(status=rule.status, text="ok\n")


def make_app(receiver: Receiver) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("POST", ADMIN, receiver.admin)
    app.router.add_route("DELETE", ADMIN, receiver.admin)
    app.router.add_route("*", "/{tail:.*}", receiver.receive)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--status", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--mode", choices=MODES)
    args = parser.parse_args(argv)
    context = None
    if args.tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls[0], args.tls[1])
    with args.log.open("a", encoding="utf-8") as log:
        receiver = Receiver(log, args.status, args.delay, args.mode)
        web.run_app(
            make_app(receiver),
            host=args.host,
            port=args.port,
            ssl_context=context,
            print=None,
            access_log=None,
            handle_signals=True,
            shutdown_timeout=0.5,
        )


if __name__ == "__main__":
    main()
