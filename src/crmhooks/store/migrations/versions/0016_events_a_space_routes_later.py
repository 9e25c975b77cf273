"""events a space routes later

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01 15:00:00

``routing_deferred``: the events of a space that went past its matching budget in a routing
step (docs/webhooks.md, Isolation), routed in later steps in seq order. Adds only: a router of
an older release ignores the table, so events deferred there wait (none is lost) until a
router of this release routes again.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
adds_only = True  # see docs/deploy.md, Upgrading


def upgrade() -> None:
    op.create_table(
        "routing_deferred",
        sa.Column("space_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.PrimaryKeyConstraint("space_id", "seq"),
    )


def downgrade() -> None:
    op.drop_table("routing_deferred")
