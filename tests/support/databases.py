"""Databases for the tests: which engines run, a PostgreSQL schema of one's own (the one place
that creates and drops them), a migrated SQLite template, clearing a migrated database between
tests, and a space with a key in it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from crmhooks.store.engine import open_database, sync_url
from crmhooks.store.keys import IssuedKey, create_space
from crmhooks.store.migrate import upgrade
from crmhooks.store.tables import dispatch_state, metadata
from crmhooks.store.webhook_version import WEBHOOKS_VERSION

PG_URL = os.environ.get("CRMHOOKS_TEST_POSTGRES_URL")
ENGINES = ["sqlite", *(["postgresql"] if PG_URL else [])]


def with_schema(url: str, schema: str) -> str:
    """``url`` with ``schema`` as its search path (a libpq option)."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


@contextmanager
def pg_schema(prefix: str) -> Iterator[str]:
    """A new, empty schema in the PostgreSQL test database: its URL; dropped on the way out,
    whatever happened."""
    assert PG_URL is not None, "CRMHOOKS_TEST_POSTGRES_URL is not set"
    schema = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(sync_url(PG_URL))
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = with_schema(PG_URL, schema)
        try:
            yield url
        finally:
            if url in _clearing:
                _clearing.pop(url).dispose()
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


@contextmanager
def fresh_database(engine: str, directory: Path, prefix: str = "crmhooks_e2e") -> Iterator[str]:
    """An empty database (nothing migrated): an SQLite file in ``directory``, or a new
    PostgreSQL schema."""
    if engine == "sqlite":
        yield f"sqlite:///{directory / 'crmhooks.db'}"
        return
    with pg_schema(prefix) as url:
        yield url


def migrated_sqlite(path: Path) -> Path:
    """An SQLite file at ``path`` with every migration applied (a template to copy)."""
    upgrade(f"sqlite:///{path}")
    return path


# One connection kept per database that ``clear`` empties: it runs before every PostgreSQL test.
_clearing: dict[str, Engine] = {}
# DELETE, not TRUNCATE: on tables this small it is about twenty times faster. All of them in
# one round trip.
_DELETE_ALL = ";\n".join(f'DELETE FROM "{t.name}"' for t in reversed(metadata.sorted_tables))


def clear(url: str) -> None:
    """Every row of a migrated database deleted, leaving what the migrations put there."""
    engine = _clearing.get(url)
    if engine is None:
        engine = _clearing[url] = create_engine(sync_url(url))
    with engine.begin() as conn:
        conn.exec_driver_sql(_DELETE_ALL)
        # The row migration 0008 put there, as a migrated database has it.
        conn.execute(
            dispatch_state.insert().values(
                name=WEBHOOKS_VERSION, last_seq=0, updated=datetime.now(UTC)
            )
        )


async def new_space(db_url: str, space_id: str) -> IssuedKey:
    """A space ``space_id`` with an API key, straight in the database."""
    db = open_database(db_url)
    try:
        async with db.write() as conn:
            return await create_space(conn, space_id)
    finally:
        await db.dispose()


# For a test whose behaviour is decided before any engine-specific SQL (parsing, validation,
# HTTP, pages): it runs on SQLite only instead of once per engine.
engine_independent = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
