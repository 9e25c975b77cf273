"""Processes: a free loopback port, a real ``crmhooks serve`` started until it answers and
stopped, and waiting on a condition instead of sleeping."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
WAIT = 15.0  # seconds any expected delivery may take, at most


def wait_until(check: Callable[[], Any], timeout: float = WAIT, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; that value, or AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    api_key: str
    api_secret: str
    process: subprocess.Popen[str]
    # Everything the server printed, read as it comes so that the pipe never fills up.
    output: list[str] = field(default_factory=list)
    drainer: threading.Thread | None = None
    client_id: str = ""  # the Client of the space's API user, printed with the key

    def printed(self) -> str:
        """What the server printed after it started listening (all of it once it has exited)."""
        if self.process.poll() is not None and self.drainer is not None:
            self.drainer.join(5)
        return "".join(self.output)


def _drain(stream: IO[str], into: list[str]) -> None:
    for line in stream:
        into.append(line)


def spawn_serve(args: list[str], env: dict[str, str]) -> tuple[Server, str]:
    """``crmhooks serve ARGS`` on a free loopback port until it answers; what it printed."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "crmhooks", "serve", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "listening on" in line:
            break
    out = "".join(lines)
    url = f"http://127.0.0.1:{port}"
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/openapi.json", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise AssertionError(f"server did not start:\n{out}")
    key = re.search(r"api key\s+(\S+)", out)
    secret = re.search(r"api secret\s+(\S+)", out)
    client = re.search(r"client id\s+(\S+)", out)
    rest: list[str] = []
    drainer = threading.Thread(target=_drain, args=(proc.stdout, rest), daemon=True)
    drainer.start()
    server = Server(
        url,
        key.group(1) if key else "",
        secret.group(1) if secret else "",
        proc,
        rest,
        drainer,
        client_id=client.group(1) if client else "",
    )
    return server, out


def start_server(db_url: str, *, extra_env: dict[str, str] | None = None) -> Server:
    """``crmhooks serve`` on a new database, with the key it printed."""
    env = {**os.environ, "CRMHOOKS_DATABASE_URL": db_url, **(extra_env or {})}
    server, out = spawn_serve([], env)
    if not server.api_key or not server.api_secret:
        server.process.kill()
        raise AssertionError(f"server printed no key:\n{out}")
    return server


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
