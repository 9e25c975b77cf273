"""Checking a webhook write (contract section 6) beyond field types: URL, events, options,
secrets. Names in URLs are looked up before the write transaction opens (:class:`UrlCheck`, the
``Webhooks`` precheck); the rest runs inside the write path as the ``Webhooks`` validator."""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.changes.writer import Validator, WriteContext
from crmhooks.errors import FIELD_VALUE, ValidationFailed, field_error
from crmhooks.hooks.subscription import compile_webhook
from crmhooks.netguard import Guard, Target, parse_target, resolve
from crmhooks.schema.values import format_datetime
from crmhooks.store.catalog import custom_types

ROTATION_GRACE = timedelta(hours=24)
# (host, port) -> its addresses. The system's lookups run on threads of their own, so names that
# never answer cannot take the threads the rest of the process uses.
Lookup = Callable[[str, int], Awaitable[Sequence[str]]]
_LOOKUPS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="crmhooks-lookup")


def _refuse(name: str, message: str) -> ValidationFailed:
    return ValidationFailed([field_error(name, FIELD_VALUE, message)])


def check_url_offline(url: str, guard: Guard) -> Target:
    """What needs no lookup: an http(s) URL whose host the client can encode, no credentials,
    and not a blocked address in any of the forms the system reads as one."""
    try:
        target = parse_target(url)
    except ValueError as e:
        raise _refuse("url", str(e)) from None
    if target.credentials:
        raise _refuse(
            "url",
            "a webhook URL may not hold credentials (user@ or user:password@): every payload "
            "shows the URL; authenticate the receiver with the signature instead",
        )
    if target.address is not None and not guard.permits(target.address):
        raise _refuse("url", f"{url!r} is a blocked address: {target.address}")
    return target


async def system_lookup(host: str, port: int) -> Sequence[str]:
    return await asyncio.get_running_loop().run_in_executor(_LOOKUPS, resolve, host, port)


@dataclass(frozen=True)
class UrlCheck:
    """Checks webhook URLs before a write transaction opens: a slow DNS server must never hold
    the database writer (every space's writes wait on it)."""

    guard: Guard
    timeout: float = 2.0
    lookup: Lookup = system_lookup

    async def refusals(self, bodies: Sequence[Any]) -> dict[str, str | None]:
        """Each ``url`` of ``bodies``: why it is refused, or None; every name looked up at once.

        A name that does not resolve in ``timeout`` seconds is accepted as one that does not
        resolve at all: the sender checks the address it connects to either way.
        """
        urls = {b["url"] for b in bodies if isinstance(b, dict) and isinstance(b.get("url"), str)}
        out: dict[str, str | None] = {}
        names: dict[tuple[str, int], list[str]] = {}
        for url in urls:
            try:
                target = check_url_offline(url, self.guard)
            except ValidationFailed as e:
                out[url] = e.errors[0].message
                continue
            out[url] = None
            if target.address is None:
                names.setdefault((target.host, target.port), []).append(url)
        found = await asyncio.gather(*(self._addresses(*name) for name in names))
        for urls_of_name, addresses in zip(names.values(), found, strict=True):
            refused = self.guard.refused(addresses)
            for url in urls_of_name:
                if refused:
                    out[url] = f"{url!r} resolves to a blocked address: {', '.join(refused)}"
        return out

    async def _addresses(self, host: str, port: int) -> Sequence[str]:
        try:
            async with asyncio.timeout(self.timeout):
                return await self.lookup(host, port)
        except (TimeoutError, OSError, UnicodeError):
            return ()  # not resolvable from here (now): the sender checks when it connects


def new_standard_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def make_validator(guard: Guard) -> Validator:
    async def validate(
        conn: AsyncConnection,
        ctx: WriteContext,
        before: dict[str, Any] | None,
        stored: dict[str, Any],
        now: datetime,
    ) -> dict[str, Any]:
        out = dict(stored)
        if before is None:
            out["application_id"] = ctx.key_id
            out.setdefault("options", {})
            scheme = out.get("signature_scheme") or "pipeliner"
            if scheme == "standard-webhooks" and out.get("signature") is None:
                out["signature"] = new_standard_secret()
        else:
            new_secret = out.get("signature", before.get("signature"))
            if before.get("signature") and new_secret != before.get("signature"):
                out["previous_signature"] = before["signature"]
                out["previous_signature_until"] = now + ROTATION_GRACE
            if out.get("is_active") is True and not before.get("is_active"):
                out["disabled_reason"] = None
                out["failing_since"] = None  # a fresh start: five more days before disabling
        if "options" in out and out["options"] is None:
            out["options"] = {}
        if "url" in out:
            url = str(out["url"])
            check_url_offline(url, guard)
            # Names were looked up before the transaction opened (UrlCheck); a URL no one
            # looked up is left to the sender's check of the address it connects to.
            refusal = ctx.targets.get(url)
            if refusal is not None:
                raise _refuse("url", refusal)
        merged = {**(before or {}), **out, "created": format_datetime(now)}
        merged.pop("previous_signature_until", None)
        compile_webhook(merged, await custom_types(conn, ctx.space_id))
        return out

    return validate
