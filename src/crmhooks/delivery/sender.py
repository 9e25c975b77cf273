"""Sending one request: aiohttp on a shared pool, the address guard at connection time.

The guard resolves the host itself, refuses the request if any address is blocked, and hands
aiohttp the addresses it checked, so no second lookup (DNS rebinding) can slip between check
and connect. Redirects are not followed; a 3xx is a failure like any other non-2xx.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from crmhooks.delivery.signing import headers
from crmhooks.hooks.subscription import Subscription
from crmhooks.netguard import Guard, literal_ip

MAX_RESPONSE_BODY = 16 * 1024


class BlockedTarget(OSError):
    """The target resolves to an address webhooks may not reach."""


class GuardedResolver(AbstractResolver):
    """Resolves (through the system unless told otherwise), then refuses blocked addresses.

    aiohttp connects to exactly the addresses this returns, so an address is checked once and
    used as checked: no second lookup can swap in another (DNS rebinding).
    """

    def __init__(self, guard: Guard, inner: AbstractResolver | None = None) -> None:
        self.guard = guard
        self._inner = inner or aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        refused = self.guard.refused(str(r["host"]) for r in found)
        if refused:
            raise BlockedTarget(f"{host} resolves to a blocked address: {', '.join(refused)}")
        return found

    async def close(self) -> None:
        await self._inner.close()


@dataclass(frozen=True)
class Outcome:
    status: int | None
    latency_ms: float
    error: str | None
    body: str | None
    retry_after: str | None
    started: datetime


class Sender:
    """One aiohttp session (one connection pool) for every webhook request."""

    def __init__(
        self,
        guard: Guard,
        *,
        connect_timeout: float = 5.0,
        total_timeout: float = 15.0,
        pool_size: int = 512,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self.guard = guard
        self._resolver = resolver
        self.timeout = aiohttp.ClientTimeout(total=total_timeout, sock_connect=connect_timeout)
        self.pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None
        self._insecure = ssl.create_default_context()
        self._insecure.check_hostname = False
        self._insecure.verify_mode = ssl.CERT_NONE

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.pool_size,
                limit_per_host=0,
                resolver=GuardedResolver(self.guard, self._resolver),
                ttl_dns_cache=None,
                use_dns_cache=False,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self.timeout, auto_decompress=True
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, sub: Subscription, msg_id: str, body: bytes) -> Outcome:
        started = datetime.now(UTC)
        t0 = time.perf_counter()

        def done(
            status: int | None,
            error: str | None,
            text: str | None = None,
            retry_after: str | None = None,
        ) -> Outcome:
            ms = (time.perf_counter() - t0) * 1000
            return Outcome(status, ms, error, text, retry_after, started)

        host = urlsplit(sub.url).hostname or ""
        ip = literal_ip(host)
        if ip is not None and not self.guard.permits(ip):
            return done(None, f"blocked target address {ip}")
        hdrs = headers(sub, msg_id, int(time.time()), body, started)
        kwargs: dict[str, Any] = {"ssl": self._insecure} if sub.insecure_ssl else {}
        try:
            async with self.session().post(
                sub.url, data=body, headers=hdrs, allow_redirects=False, **kwargs
            ) as resp:
                raw = await resp.content.read(MAX_RESPONSE_BODY)
                text = raw.decode("utf-8", errors="replace")
                return done(resp.status, None, text, resp.headers.get("Retry-After"))
        except BlockedTarget as e:
            return done(None, str(e))
        except aiohttp.ClientConnectorError as e:
            # aiohttp wraps what the resolver raised; the guard's refusal is the error to show.
            if isinstance(e.os_error, BlockedTarget):
                return done(None, str(e.os_error))
            return done(None, f"{type(e).__name__}: {e}"[:1000])
        except TimeoutError:
            return done(None, "timed out")
        except aiohttp.ClientError as e:
            return done(None, f"{type(e).__name__}: {e}"[:1000])
        except (OSError, ValueError) as e:
            return done(None, f"{type(e).__name__}: {e}"[:1000])
        except asyncio.CancelledError:
            raise
