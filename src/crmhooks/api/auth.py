"""HTTP Basic authentication: API key as user, API secret as password, one space per key."""

from __future__ import annotations

import base64

from starlette.requests import Request

from crmhooks.errors import Unauthorized
from crmhooks.store.engine import Database
from crmhooks.store.keys import KeyRecord, find_key, secret_matches

_REFUSED = "authentication failed: give this space's API key and secret (HTTP Basic)"


class KeyCache:
    """Keys looked up once per process; a key's space and hash never change."""

    def __init__(self, db: Database, size: int = 10_000) -> None:
        self.db = db
        self.size = size
        self._keys: dict[str, KeyRecord] = {}

    async def get(self, api_key: str) -> KeyRecord | None:
        found = self._keys.get(api_key)
        if found is None:
            async with self.db.read() as conn:
                found = await find_key(conn, api_key)
            if found is not None:
                if len(self._keys) >= self.size:
                    self._keys.clear()
                self._keys[api_key] = found
        return found


def _credentials(request: Request) -> tuple[str, str]:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise Unauthorized(_REFUSED)
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except ValueError:  # binascii.Error, UnicodeDecodeError, or a header that is not ASCII
        raise Unauthorized(_REFUSED) from None
    if not sep or not user:
        raise Unauthorized(_REFUSED)
    return user, password


async def authenticate(request: Request, keys: KeyCache, space_id: str) -> KeyRecord:
    """The caller's key, if it is valid and issued for ``space_id``; Unauthorized otherwise.

    A key of another space gets the same answer as a wrong secret: nothing is revealed.
    """
    api_key, secret = _credentials(request)
    found = await keys.get(api_key)
    if found is None or not secret_matches(secret, found.secret_hash):
        raise Unauthorized(_REFUSED)
    if found.space_id != space_id:
        raise Unauthorized(_REFUSED)
    return found
