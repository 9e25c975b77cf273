"""one live custom entity definition per name

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 02:20:00

Restoring a deleted definition could leave two live definitions of one ``api_name`` in a
space. A partial unique index makes that impossible; any such pair already stored keeps its
oldest definition live and the later ones are marked deleted first (their records are the same
rows either way: records are keyed by the api name).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
adds_only = True  # see docs/deploy.md, Upgrading


def upgrade() -> None:
    op.execute(
        sa.text(
            "UPDATE custom_entities SET is_deleted = :yes WHERE is_deleted = :no AND EXISTS ("
            " SELECT 1 FROM custom_entities older WHERE older.space_id = custom_entities.space_id"
            " AND older.api_name = custom_entities.api_name AND older.is_deleted = :no"
            " AND (older.created < custom_entities.created OR (older.created ="
            " custom_entities.created AND older.id < custom_entities.id)))"
        ).bindparams(yes=True, no=False)
    )
    with op.batch_alter_table("custom_entities", schema=None) as batch_op:
        batch_op.create_index(
            "ux_custom_entities_live_api_name",
            ["space_id", "api_name"],
            unique=True,
            sqlite_where=sa.text("is_deleted = 0"),
            postgresql_where=sa.text("is_deleted = false"),
        )


def downgrade() -> None:
    with op.batch_alter_table("custom_entities", schema=None) as batch_op:
        batch_op.drop_index("ux_custom_entities_live_api_name")
