"""Spaces and their API keys. Secrets are kept only as hashes."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.errors import CrmHooksError
from crmhooks.store.space_defaults import DEFAULT_BASE_CURRENCY, seed_space
from crmhooks.store.tables import api_keys, spaces

SPACE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_GRACE_SECONDS = 366 * 86400  # a rotation is not a way to make a key live for ever


class SpaceExists(CrmHooksError):
    """A space with that id is already there."""


class UnknownSpace(CrmHooksError):
    """No space has that id."""


class UnknownKey(CrmHooksError):
    """The space has no key by that name."""


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
    revoked_at: datetime | None = None
    expires_at: datetime | None = None
    session_epoch: int = 0

    def usable(self, now: datetime) -> bool:
        """Whether the key still opens its space at ``now`` (not revoked, not expired)."""
        return key_usable(self.revoked_at, self.expires_at, now)


@dataclass(frozen=True)
class KeyListing:
    """A key as ``keys list`` shows it: never its secret."""

    api_key: str
    created: datetime
    revoked_at: datetime | None
    expires_at: datetime | None


def key_usable(revoked_at: datetime | None, expires_at: datetime | None, now: datetime) -> bool:
    """A key is usable until it is revoked and until its expiry time (both exclusive)."""
    if revoked_at is not None and revoked_at <= now:
        return False
    return expires_at is None or now < expires_at


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
    if not SPACE_ID_RE.fullmatch(space_id):  # match would let a final newline through
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


_RECORD = (
    api_keys.c.id,
    api_keys.c.space_id,
    api_keys.c.secret_hash,
    api_keys.c.revoked_at,
    api_keys.c.expires_at,
    api_keys.c.session_epoch,
)


async def find_key(conn: AsyncConnection, api_key: str) -> KeyRecord | None:
    """The key as stored, revoked or not (callers ask :meth:`KeyRecord.usable`)."""
    row = (await conn.execute(select(*_RECORD).where(api_keys.c.key == api_key))).first()
    if row is None:
        return None
    return KeyRecord(
        row.id, row.space_id, row.secret_hash, row.revoked_at, row.expires_at, row.session_epoch
    )


async def list_keys(conn: AsyncConnection, space_id: str) -> list[KeyListing]:
    """The space's keys, oldest first. Raises UnknownSpace."""
    if not await space_exists(conn, space_id):
        raise UnknownSpace(f"there is no space {space_id!r}")
    rows = await conn.execute(
        select(api_keys.c.key, api_keys.c.created, api_keys.c.revoked_at, api_keys.c.expires_at)
        .where(api_keys.c.space_id == space_id)
        .order_by(api_keys.c.created, api_keys.c.key)
    )
    return [KeyListing(r.key, r.created, r.revoked_at, r.expires_at) for r in rows]


async def _space_key(conn: AsyncConnection, space_id: str, api_key: str) -> KeyRecord:
    if not await space_exists(conn, space_id):
        raise UnknownSpace(f"there is no space {space_id!r}")
    found = await find_key(conn, api_key)
    if found is None or found.space_id != space_id:
        raise UnknownKey(f"space {space_id!r} has no key {api_key!r}")
    return found


async def revoke_key(conn: AsyncConnection, space_id: str, api_key: str) -> bool:
    """Revoke a key of the space now, ending its dashboard sessions. False if it already was.

    Raises UnknownSpace or UnknownKey."""
    found = await _space_key(conn, space_id, api_key)
    now = datetime.now(UTC)
    if not found.usable(now):
        return False
    await conn.execute(
        update(api_keys)
        .where(api_keys.c.id == found.key_id)
        .values(revoked_at=now, session_epoch=api_keys.c.session_epoch + 1)
    )
    return True


async def rotate_key(
    conn: AsyncConnection, space_id: str, api_key: str, grace_seconds: float
) -> tuple[IssuedKey, datetime]:
    """A new key for the space; the old one works ``grace_seconds`` more (at most: an earlier
    expiry stays). The new key and when the old one stops. Raises UnknownSpace or UnknownKey,
    or ValueError for a negative grace or an old key already unusable."""
    if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:  # also refuses NaN
        raise ValueError(f"--grace must be 0 to {MAX_GRACE_SECONDS} seconds, not {grace_seconds}")
    found = await _space_key(conn, space_id, api_key)
    now = datetime.now(UTC)
    if not found.usable(now):
        raise ValueError(f"key {api_key!r} is revoked or expired already")
    ends = now + timedelta(seconds=grace_seconds)
    if found.expires_at is not None:
        ends = min(ends, found.expires_at)
    await conn.execute(
        update(api_keys).where(api_keys.c.id == found.key_id).values(expires_at=ends)
    )
    return await issue_key(conn, space_id), ends


async def end_sessions(conn: AsyncConnection, key_id: str) -> None:
    """End every dashboard session of a key (they are signed with its session epoch)."""
    await conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id)
        .values(session_epoch=api_keys.c.session_epoch + 1)
    )
