"""Checking a webhook write (contract section 6) beyond field types: URL, events, options,
secrets. Runs inside the write path as the ``Webhooks`` validator."""

from __future__ import annotations

import asyncio
import base64
import secrets
import socket
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.changes.writer import Validator, WriteContext
from crmhooks.errors import FIELD_VALUE, ValidationFailed, field_error
from crmhooks.hooks.bounds import stored_search_values
from crmhooks.hooks.subscription import compile_webhook
from crmhooks.limits import Limits
from crmhooks.netguard import Guard, literal_ip, resolve
from crmhooks.schema.registry import WEBHOOKS
from crmhooks.schema.values import format_datetime
from crmhooks.store.catalog import custom_types
from crmhooks.store.records import row_to_record, scope, table_of

ROTATION_GRACE = timedelta(hours=24)


def _refuse(name: str, message: str) -> ValidationFailed:
    return ValidationFailed([field_error(name, FIELD_VALUE, message)])


async def check_url(url: str, guard: Guard) -> None:
    """http(s) with a host that does not resolve to a blocked address."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise _refuse("url", f"{url!r} is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _refuse("url", f"{url!r} is not an http or https URL with a host")
    host = parts.hostname
    ip = literal_ip(host)
    if ip is not None:
        addresses: list[str] = [str(ip)]
    else:
        try:
            addresses = list(await asyncio.to_thread(resolve, host, port))
        except (socket.gaierror, UnicodeError, OSError):
            return  # not resolvable from here; the sender checks again at connection time
    refused = guard.refused(addresses)
    if refused:
        raise _refuse("url", f"{url!r} resolves to a blocked address: {', '.join(refused)}")


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
            await check_url(str(out["url"]), guard)
        merged = {**(before or {}), **out, "created": format_datetime(now)}
        merged.pop("previous_signature_until", None)
        compile_webhook(merged, await custom_types(conn, ctx.space_id), limits)
        await check_search_budget(conn, ctx.space_id, merged, limits)
        return out

    return validate
