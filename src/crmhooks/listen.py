"""``crmhooks listen``: a local receiver that prints every webhook request it gets.

It checks signatures when given the secret: a ``whsec_`` secret is checked as Standard Webhooks
(``webhook-signature``), any other as Pipeliner's ``WebHook-Signature`` (hex HMAC-SHA256).
"""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from aiohttp import web
from rich.console import Console
from rich.syntax import Syntax

from crmhooks.delivery.signing import pipeliner_signature, standard_signature


def check_signature(secret: str, headers: Any, body: bytes) -> tuple[bool, str]:
    """(valid, what was checked) for one request."""
    if secret.startswith("whsec_"):
        msg_id = headers.get("webhook-id", "")
        timestamp = headers.get("webhook-timestamp", "")
        sent = headers.get("webhook-signature", "").split()
        if not timestamp.isdigit():
            return False, "webhook-timestamp missing"
        expected = standard_signature(secret, msg_id, int(timestamp), body)
        ok = any(hmac.compare_digest(expected, s) for s in sent)
        return ok, "webhook-signature (Standard Webhooks)"
    sent_hex = headers.get("WebHook-Signature", "")
    ok = hmac.compare_digest(pipeliner_signature(secret, body), sent_hex)
    return ok, "WebHook-Signature (HMAC-SHA256 of the body)"


def make_app(console: Console, signature: str | None, status: int) -> web.Application:
    count = 0

    async def receive(request: web.Request) -> web.Response:
        nonlocal count
        count += 1
        body = await request.read()
        console.rule(f"#{count}  {request.method} {request.path_qs}")
        for name, value in request.headers.items():
            console.print(f"[bold]{name}[/bold]: {value}", highlight=False)
        try:
            pretty = orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode()
            console.print(Syntax(pretty, "json", word_wrap=True))
            events = orjson.loads(body)
            if isinstance(events, list):
                names = ", ".join(str(e.get("event")) for e in events if isinstance(e, dict))
                console.print(f"{len(events)} event(s): {names}")
        except orjson.JSONDecodeError:
            console.print(body.decode("utf-8", errors="replace"))
        if signature is not None:
            ok, what = check_signature(signature, request.headers, body)
            verdict = "[green]valid[/green]" if ok else "[red]INVALID[/red]"
            console.print(f"signature {verdict}: {what}")
        return web.Response(status=status, text="ok\n")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", receive)
    return app


def run(host: str, port: int, signature: str | None, status: int) -> None:
    console = Console(force_terminal=False, soft_wrap=True)
    console.print(f"listening on http://{host}:{port}  (answering {status})")
    web.run_app(make_app(console, signature, status), host=host, port=port, print=None)
