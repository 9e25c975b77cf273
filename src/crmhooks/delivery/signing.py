"""Signatures of webhook requests (docs/webhooks.md#signatures-and-secrets): pure functions of
secret and bytes."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime

from crmhooks import __version__
from crmhooks.hooks.subscription import Subscription

USER_AGENT = f"crmhooks/{__version__}"


def pipeliner_signature(secret: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of the raw body, keyed with the secret's UTF-8 bytes."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def standard_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, keyed with the whsec_ bytes."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(
    sub: Subscription,
    msg_id: str,
    timestamp: int,
    body: bytes,
    now: datetime,
    *,
    replay: bool = False,
) -> dict[str, str]:
    """Every header of one attempt of one request (``replay``: planned by a replay)."""
    out = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
    }
    if replay:
        out["webhook-replay"] = "true"
    if sub.signature is None:
        return out
    if sub.scheme == "standard-webhooks":
        secrets = [sub.signature]
        if sub.previous_signature and sub.previous_until and now < sub.previous_until:
            secrets.append(sub.previous_signature)
        out["webhook-signature"] = " ".join(
            standard_signature(s, msg_id, timestamp, body) for s in secrets
        )
    else:
        out["WebHook-Signature"] = pipeliner_signature(sub.signature, body)
    return out
