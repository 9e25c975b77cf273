"""rendered records with their events

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 06:00:00

Events get ``rendered``: the record as a webhook shows it by default, JSON text made in the
write that changed it, so that routing does not render it again. Nullable; events without it
(written by an older release) are rendered by routing as before. Adds only: a release without
the column keeps working beside this one (see docs/deploy.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
adds_only = True  # see docs/deploy.md, Upgrading


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rendered", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("rendered")
