"""HTTP Basic authentication: API key as user, API secret as password, one space per key."""

from __future__ import annotations

import base64
import time
from typing import NoReturn

from starlette.requests import Request

from crmhooks.errors import TooManyRequests, Unauthorized
from crmhooks.services.context import client_address
from crmhooks.services.keys import KeyCache
from crmhooks.services.throttle import FailureThrottle
from crmhooks.store.keys import KeyRecord, secret_matches

_REFUSED = "authentication failed: give this space's API key and secret (HTTP Basic)"
THROTTLED = "too many failed authentications from this address or with this key: retry later"


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
