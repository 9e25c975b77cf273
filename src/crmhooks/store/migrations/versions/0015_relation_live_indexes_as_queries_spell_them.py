"""relation tables' live indexes as queries spell them

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 10:30:00

Migration 0012 made the partial index of live rows of each relation table with
``WHERE is_deleted = false``. SQLite uses a partial index only for a query whose WHERE contains
the index's condition as written, and queries (and every other table's index) say
``is_deleted = 0``: these five indexes were never used there. They are made again with
``is_deleted = 0`` on SQLite; PostgreSQL reads both spellings alike and is left as it is.
Indexes only: a release without this keeps working beside it (see docs/deploy.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
adds_only = True  # see docs/deploy.md, Upgrading

# Frozen here: the relation tables of migration 0012.
_TABLES = (
    "contact_account_relations",
    "lead_oppty_account_relations",
    "lead_oppty_contact_relations",
    "activity_relations",
    "cloud_object_relations",
)


def _remake(condition: str) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for name in _TABLES:
        op.drop_index(f"ix_{name}_live", table_name=name)
        op.create_index(f"ix_{name}_live", name, ["space_id"], sqlite_where=sa.text(condition))


def upgrade() -> None:
    _remake("is_deleted = 0")


def downgrade() -> None:
    _remake("is_deleted = false")
