"""Spaces and their API keys. Secrets are kept only as hashes."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.errors import CrmHooksError
from crmhooks.store.space_defaults import DEFAULT_BASE_CURRENCY, seed_space
from crmhooks.store.tables import api_keys, spaces

SPACE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class SpaceExists(CrmHooksError):
    """A space with that id is already there."""


@dataclass(frozen=True)
class IssuedKey:
    """A key as handed out once: the secret is not kept anywhere after this."""

    space_id: str
    key_id: str
    api_key: str
    api_secret: str
    client_id: str | None = None  # the space's API user, when the space was made with the key


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    space_id: str
    secret_hash: str


def hash_secret(secret: str) -> str:
    # The secret is 32 random bytes made by us, not a password a person chose: a fast hash is
    # as safe as a slow one against guessing, and keeps each request's check cheap.
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, secret_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), secret_hash)


async def space_exists(conn: AsyncConnection, space_id: str) -> bool:
    row = await conn.execute(select(spaces.c.id).where(spaces.c.id == space_id))
    return row.first() is not None


async def any_space(conn: AsyncConnection) -> bool:
    row = await conn.execute(select(spaces.c.id).limit(1))
    return row.first() is not None


async def create_space(
    conn: AsyncConnection, space_id: str, *, base_currency: str = DEFAULT_BASE_CURRENCY
) -> IssuedKey:
    """A new space with its default records and first key. Raises SpaceExists, or
    ValueError for a bad id."""
    if not SPACE_ID_RE.match(space_id):
        raise ValueError(f"{space_id!r} is not a space id ([A-Za-z0-9_-]{{1,64}})")
    if await space_exists(conn, space_id):
        raise SpaceExists(f"space {space_id!r} exists already")
    now = datetime.now(UTC)
    await conn.execute(insert(spaces).values(id=space_id, created=now))
    seeded = await seed_space(conn, space_id, now, base_currency)
    return replace(await issue_key(conn, space_id), client_id=seeded.client_id)


async def issue_key(conn: AsyncConnection, space_id: str) -> IssuedKey:
    key_id = str(uuid.uuid4())
    api_key = "ck_" + secrets.token_hex(16)
    api_secret = secrets.token_urlsafe(32)
    await conn.execute(
        insert(api_keys).values(
            id=key_id,
            space_id=space_id,
            key=api_key,
            secret_hash=hash_secret(api_secret),
            created=datetime.now(UTC),
        )
    )
    return IssuedKey(space_id, key_id, api_key, api_secret)


async def find_key(conn: AsyncConnection, api_key: str) -> KeyRecord | None:
    row = (
        await conn.execute(
            select(api_keys.c.id, api_keys.c.space_id, api_keys.c.secret_hash).where(
                api_keys.c.key == api_key
            )
        )
    ).first()
    return None if row is None else KeyRecord(row.id, row.space_id, row.secret_hash)
