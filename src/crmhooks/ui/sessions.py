"""Signed session cookies and CSRF tokens: pure functions of secrets, values and the time.

A session cookie is ``<payload>.<mac>``, both base64url: the payload names the API key (and so
the space) and when the session began; the MAC is HMAC-SHA256 under a signing key derived from
the server's secret, the key's stored hash *and* the key's session epoch, so a session ends when
its key is replaced, revoked or signed out of (each adds one to the epoch, docs/dashboard.md), and
one space's sessions say nothing about another's. The cookie is signed, not encrypted: it holds
nothing the person signed in does not know.

The CSRF token of a session is an HMAC of the session's nonce: the same on every form of one
session, different in every session, unknowable without the signing key. The sign-in form,
before any session exists, uses a double-submit token instead: a random value in a cookie that
the form must repeat.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import orjson

SESSION_COOKIE = "crmhooks_session"
SIGNIN_COOKIE = "crmhooks_signin"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
MAX_COOKIE = 4096


@dataclass(frozen=True)
class Claims:
    """What a session cookie says: whose key, which space, since when (Unix seconds)."""

    api_key: str
    space_id: str
    issued_at: int
    nonce: str


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signing_key(server_secret: bytes, key_id: str, secret_hash: str, epoch: int = 0) -> bytes:
    """The key that signs the sessions of one API key in one of its session epochs."""
    parts = [b"crmhooks-ui-session", key_id.encode(), secret_hash.encode()]
    # Epoch 0 signs as releases before epochs did: an upgrade does not sign everyone out.
    message = b"\0".join(parts + ([str(epoch).encode()] if epoch else []))
    return hmac.new(server_secret, message, hashlib.sha256).digest()


def _mac(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, b"session\0" + payload.encode(), hashlib.sha256).digest())


def issue(key: bytes, api_key: str, space_id: str, now: int, nonce: str | None = None) -> str:
    """A new session cookie value for this key and space."""
    claims = {"k": api_key, "s": space_id, "t": now, "n": nonce or secrets.token_urlsafe(16)}
    payload = _b64(orjson.dumps(claims))
    return f"{payload}.{_mac(key, payload)}"


def peek(cookie: str | None) -> Claims | None:
    """The claims of a cookie *without checking its signature*: only to find the key to check
    it with. None if it is not shaped like a session cookie."""
    # Issued cookies are ASCII: anything else is not one (and would not compare in constant time).
    if not cookie or len(cookie) > MAX_COOKIE or not cookie.isascii() or cookie.count(".") != 1:
        return None
    payload = cookie.split(".", 1)[0]
    try:
        raw = orjson.loads(_unb64(payload))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        return None
    if not isinstance(raw, dict):
        return None
    k, s, t, n = raw.get("k"), raw.get("s"), raw.get("t"), raw.get("n")
    if not (isinstance(k, str) and isinstance(s, str) and isinstance(n, str)):
        return None
    if isinstance(t, bool) or not isinstance(t, int):
        return None
    return Claims(k, s, t, n)


def verify(key: bytes, cookie: str | None, now: int, max_age: int) -> Claims | None:
    """The claims of a cookie signed with ``key`` and younger than ``max_age`` seconds."""
    claims = peek(cookie)
    if claims is None or cookie is None:
        return None
    payload, mac = cookie.split(".", 1)
    if not hmac.compare_digest(mac, _mac(key, payload)):
        return None
    if not 0 <= now - claims.issued_at <= max_age:
        return None
    return claims


def csrf_token(key: bytes, claims: Claims) -> str:
    """The CSRF token of one session."""
    return _b64(hmac.new(key, b"csrf\0" + claims.nonce.encode(), hashlib.sha256).digest())


def tokens_match(expected: str | None, given: str | None) -> bool:
    """Whether a submitted token equals the expected one (in constant time); never for empty."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode(errors="backslashreplace"))


def new_signin_token() -> str:
    """A random double-submit token for the sign-in form."""
    return secrets.token_urlsafe(24)
