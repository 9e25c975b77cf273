"""Sending one request: aiohttp on a shared pool, the address guard at connection time.

Three checks, none of them left to aiohttp: the URL's host as aiohttp reads it (an address in
any form is checked before anything else); the resolver's answers (it resolves the host itself,
refuses the request if any address is blocked, and hands aiohttp the addresses it checked, so
no second lookup (DNS rebinding) can slip between check and connect); and last the peer of the
connected socket, before TLS or any byte of the request. Redirects are not followed; a 3xx is
a failure like any other non-2xx.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from datetime import UTC, datetime
from typing import Any

import aiohappyeyeballs
import aiohttp
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest
from aiohttp.helpers import ceil_timeout

from crmhooks.delivery.model import SendResult
from crmhooks.delivery.signing import headers
from crmhooks.hooks.subscription import Subscription
from crmhooks.netguard import Guard, literal_ip, parse_target

MAX_RESPONSE_BODY = 16 * 1024
# URLs whose checks are kept (``HttpSender._refusal``): far more than the webhooks one process
# sends to at once; the whole map is dropped when it fills.
CHECKED_URLS = 4096


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


def _refused_address(guard: Guard, address: str) -> str | None:
    """``address`` if it may not be reached (or is no address at all), else None."""
    try:
        ip = literal_ip(address)
    except ValueError:
        return address
    return address if ip is None or not guard.permits(ip) else None


class GuardedConnector(aiohttp.TCPConnector):
    """A connector that checks the addresses it is given and the peer it connected to.

    The check of the peer is the one that holds whatever path led aiohttp to an address (a
    literal it did not hand to the resolver, say): it runs on the connected socket, before TLS
    starts or any byte of the request is written. This mirrors aiohttp's own
    ``_wrap_create_connection`` (3.14), with the check between connect and use.
    """

    def __init__(self, guard: Guard, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.guard = guard

    async def _wrap_create_connection(
        self,
        *args: Any,
        addr_infos: list[AddrInfoType],
        req: ClientRequest,
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 (aiohttp's signature, overridden)
        client_error: type[Exception] = aiohttp.ClientConnectorError,
        **kwargs: Any,
    ) -> tuple[asyncio.Transport, ResponseHandler]:
        refused = [a for info in addr_infos if (a := _refused_address(self.guard, info[4][0]))]
        if refused:
            blocked = BlockedTarget(f"blocked target address {', '.join(refused)}")
            raise client_error(req.connection_key, blocked)
        try:
            async with ceil_timeout(timeout.sock_connect, ceil_threshold=timeout.ceil_threshold):
                sock = await aiohappyeyeballs.start_connection(
                    addr_infos=addr_infos,
                    local_addr_infos=self._local_addr_infos,
                    happy_eyeballs_delay=self._happy_eyeballs_delay,
                    interleave=self._interleave,
                    loop=self._loop,
                    socket_factory=self._socket_factory,
                )
        except OSError as exc:
            if exc.errno is None and isinstance(exc, asyncio.TimeoutError):
                raise
            raise client_error(req.connection_key, exc) from exc
        peer = str(sock.getpeername()[0])
        if _refused_address(self.guard, peer):
            sock.close()
            raise client_error(req.connection_key, BlockedTarget(f"connected to blocked {peer}"))
        # Connected and checked: aiohttp's own path from here (TLS, its error mapping).
        if kwargs.get("ssl") and self._ssl_shutdown_timeout:
            kwargs["ssl_shutdown_timeout"] = self._ssl_shutdown_timeout
        return await super()._wrap_existing_connection(
            *args, req=req, timeout=timeout, client_error=client_error, sock=sock, **kwargs
        )


class HttpSender:
    """The :class:`~crmhooks.delivery.model.Sender` of production: one aiohttp session (one
    connection pool) for every webhook request."""

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
        self._checked: dict[str, str | None] = {}  # URL -> why it is refused (None: it is not)
        self._insecure = ssl.create_default_context()
        self._insecure.check_hostname = False
        self._insecure.verify_mode = ssl.CERT_NONE

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = GuardedConnector(
                self.guard,
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

    def _refusal(self, url: str) -> str | None:
        """Why ``url`` may not be sent to before any connection (not a target, a blocked
        literal address), or None. A pure function of the URL and the guard, both fixed for
        this sender, so it is worked out once per URL (~6 µs, against a request's ~80)."""
        try:
            return self._checked[url]
        except KeyError:
            pass
        try:
            target = parse_target(url)
        except ValueError as e:
            why: str | None = f"not a target: {e}"[:1000]
        else:
            blocked = target.address is not None and not self.guard.permits(target.address)
            why = f"blocked target address {target.address}" if blocked else None
        if len(self._checked) >= CHECKED_URLS:
            self._checked.clear()
        self._checked[url] = why
        return why

    async def send(
        self, sub: Subscription, msg_id: str, body: bytes, *, replay: bool = False
    ) -> SendResult:
        started = datetime.now(UTC)
        t0 = time.perf_counter()

        def done(
            status: int | None,
            error: str | None,
            text: str | None = None,
            retry_after: str | None = None,
        ) -> SendResult:
            ms = (time.perf_counter() - t0) * 1000
            return SendResult(status, ms, error, text, retry_after, started)

        refused = self._refusal(sub.url)
        if refused is not None:
            return done(None, refused)
        hdrs = headers(sub, msg_id, int(time.time()), body, started, replay=replay)
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
