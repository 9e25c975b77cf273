"""HTTP Basic authentication: API key as user, API secret as password, one space per key."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn

from starlette.requests import Request

from crmhooks.api.throttle import FailureThrottle
from crmhooks.errors import TooManyRequests, Unauthorized
from crmhooks.store.engine import Database
from crmhooks.store.keys import KeyRecord, find_key, secret_matches

_REFUSED = "authentication failed: give this space's API key and secret (HTTP Basic)"
THROTTLED = "too many failed authentications from this address or with this key: retry later"


@dataclass(frozen=True)
class _Entry:
    record: KeyRecord
    read_at: float  # monotonic


class KeyCache:
    """Keys as stored, each read again from the database once it is ``ttl`` seconds old.

    A revoked, expired or deleted key stops working in every process within ``ttl`` plus one
    read, while a busy key costs one indexed read per ``ttl`` instead of one per request.
    Concurrent requests for a key whose entry is stale share one read.
    """

    def __init__(
        self,
        db: Database,
        size: int = 10_000,
        ttl: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.size = size
        self.ttl = ttl
        self.clock = clock
        self._keys: dict[str, _Entry] = {}
        self._reading: dict[str, asyncio.Task[KeyRecord | None]] = {}

    async def get(self, api_key: str) -> KeyRecord | None:
        """The key if it exists and is usable now (not revoked, not expired); else None."""
        entry = self._keys.get(api_key)
        if entry is None or self.clock() - entry.read_at >= self.ttl:
            found = await self._read_once(api_key)
        else:
            found = entry.record
        if found is None or not found.usable(datetime.now(UTC)):
            return None
        return found

    def forget(self, api_key: str) -> None:
        """Read this key from the database on its next use (after this process changed it)."""
        self._keys.pop(api_key, None)

    async def _read_once(self, api_key: str) -> KeyRecord | None:
        task = self._reading.get(api_key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._read(api_key))
            self._reading[api_key] = task
            task.add_done_callback(lambda done: self._done_reading(api_key, done))
        # Shielded: one caller going away must not cancel the read the others wait for.
        return await asyncio.shield(task)

    def _done_reading(self, api_key: str, task: asyncio.Task[KeyRecord | None]) -> None:
        if self._reading.get(api_key) is task:
            del self._reading[api_key]

    async def _read(self, api_key: str) -> KeyRecord | None:
        read_at = self.clock()
        async with self.db.read() as conn:
            found = await find_key(conn, api_key)
        if found is None:
            self._keys.pop(api_key, None)
        else:
            if len(self._keys) >= self.size and api_key not in self._keys:
                self._keys.clear()
            self._keys[api_key] = _Entry(found, read_at)
        return found


def _credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except ValueError:  # binascii.Error, UnicodeDecodeError, or a header that is not ASCII
        return None
    if not sep or not user:
        return None
    return user, password


def client_address(request: Request) -> str:
    """The client's address (the proxy's, unless the server trusts its forwarded headers)."""
    return request.client.host if request.client else ""


def refuse(throttle: FailureThrottle, address: str, api_key: str, error: Unauthorized) -> NoReturn:
    """Count a failed authentication and raise ``error``, or 429 once over a budget."""
    wait = throttle.failed(address, api_key, time.monotonic())
    if wait:
        raise TooManyRequests(THROTTLED, wait)
    raise error


async def authenticate(
    request: Request, keys: KeyCache, throttle: FailureThrottle, space_id: str
) -> KeyRecord:
    """The caller's key, if it is valid and issued for ``space_id``; Unauthorized otherwise,
    or TooManyRequests after too many failures from the caller's address or with its key.

    A key of another space gets the same answer as a wrong secret: nothing is revealed.
    Valid credentials are never throttled.
    """
    given = _credentials(request)
    found = await keys.get(given[0]) if given is not None else None
    if (
        given is None
        or found is None
        or not secret_matches(given[1], found.secret_hash)
        or found.space_id != space_id
    ):
        refuse(throttle, client_address(request), given[0] if given else "", Unauthorized(_REFUSED))
    return found
