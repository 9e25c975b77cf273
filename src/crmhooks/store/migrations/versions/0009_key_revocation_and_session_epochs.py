"""key revocation, expiry and session epochs

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 02:00:00

``api_keys`` gets ``revoked_at`` and ``expires_at`` (``keys revoke``, ``keys rotate``) and
``session_epoch``, which signs the key's dashboard sessions (sign-out adds one). Adds only:
nullable columns and one with a server default, so a release without them keeps inserting keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
adds_only = True  # see docs/deploy.md, Upgrading


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("session_epoch", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("session_epoch")
        batch_op.drop_column("expires_at")
        batch_op.drop_column("revoked_at")
