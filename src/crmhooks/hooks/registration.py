"""Checking a webhook write (docs/webhooks.md#registration) beyond field types: URL, events,
options, secrets. Names in URLs are looked up before the write transaction opens
(:class:`UrlCheck`, the ``Webhooks`` precheck); the rest runs inside the write path as the
``Webhooks`` validator."""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.changes.writer import Validator, WriteContext
from crmhooks.errors import FIELD_VALUE, ValidationFailed, field_error
from crmhooks.hooks.bounds import stored_search_values
from crmhooks.hooks.subscription import compile_webhook
from crmhooks.limits import Limits
from crmhooks.netguard import Guard, Target, parse_target, resolve
from crmhooks.schema.registry import WEBHOOKS
from crmhooks.schema.values import format_datetime
from crmhooks.store.catalog import custom_types
from crmhooks.store.records import row_to_record, scope, table_of

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


async def _one_writer(conn: AsyncConnection, space_id: str) -> None:
    """Webhook writes of one space, one transaction at a time, so that two cannot both see
    room for the last webhook (SQLite has one writer anyway)."""
    if conn.dialect.name == "postgresql":
        key = f"crmhooks webhooks of {space_id}"
        await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})


async def check_room(conn: AsyncConnection, space_id: str, limits: Limits) -> None:
    """One more webhook fits in the space (the earlier items of a batch count: they are
    written before the next one is checked)."""
    await _one_writer(conn, space_id)
    t = table_of(WEBHOOKS)
    count = await conn.scalar(select(func.count()).select_from(t).where(scope(WEBHOOKS, space_id)))
    if (count or 0) >= limits.max_webhooks_per_space:
        message = (
            f"the space has {count} webhooks; the limit is {limits.max_webhooks_per_space} "
            "(max_webhooks_per_space)"
        )
        raise ValidationFailed([field_error("webhooks", FIELD_VALUE, message)], message)


async def check_search_budget(
    conn: AsyncConnection, space_id: str, webhook: dict[str, Any], limits: Limits
) -> None:
    """The space's substring filter values, this webhook's included, within the limit: every
    one of them scans the text of every event of the space."""
    own = stored_search_values(webhook.get("options"))
    if own == 0:
        return
    await _one_writer(conn, space_id)
    t = table_of(WEBHOOKS)
    query = select(t).where(scope(WEBHOOKS, space_id))
    if webhook.get("id"):  # an update: its stored options are the ones being replaced
        query = query.where(t.c.id != webhook["id"])
    rows = await conn.execute(query)
    others = sum(
        stored_search_values(row_to_record(WEBHOOKS, r)["options"]) for r in rows.mappings()
    )
    if own + others > limits.max_space_search_values:
        raise ValidationFailed(
            [
                field_error(
                    "options.entity",
                    FIELD_VALUE,
                    f"the space's webhooks would have {own + others} contains / icontains "
                    f"values; the limit is {limits.max_space_search_values} "
                    "(max_space_search_values)",
                )
            ]
        )


def make_validator(guard: Guard, limits: Limits) -> Validator:
    async def validate(
        conn: AsyncConnection,
        ctx: WriteContext,
        before: dict[str, Any] | None,
        stored: dict[str, Any],
        now: datetime,
    ) -> dict[str, Any]:
        out = dict(stored)
        if before is None:
            await check_room(conn, ctx.space_id, limits)
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
        compile_webhook(merged, await custom_types(conn, ctx.space_id), limits)
        await check_search_budget(conn, ctx.space_id, merged, limits)
        return out

    return validate
