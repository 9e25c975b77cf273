"""request bodies in a table of their own

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 14:05:00

A request's body is written once, when it is routed; its ``deliveries`` row changes at every
claim and outcome. SQLite rewrites a whole row when one column changes, so the body (up to
~100 KB for a hundred events) moves to ``delivery_bodies``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
adds_only = False  # see docs/deploy.md, Upgrading


def upgrade() -> None:
    op.create_table(
        "delivery_bodies",
        sa.Column("delivery_id", sa.String(length=36), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("delivery_id", name=op.f("pk_delivery_bodies")),
    )
    op.execute("INSERT INTO delivery_bodies (delivery_id, body) SELECT id, body FROM deliveries")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("body")


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("body", sa.Text(), nullable=False, server_default=""))
    op.execute(
        "UPDATE deliveries SET body = (SELECT body FROM delivery_bodies"
        " WHERE delivery_bodies.delivery_id = deliveries.id)"
    )
    op.drop_table("delivery_bodies")
