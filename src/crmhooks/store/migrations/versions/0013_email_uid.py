"""email uid

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 05:10:00

Emails get Pipeliner's ``uid`` (the message's IMAP UID), which a create now requires as
published. Existing Emails keep a null ``uid``; the rule applies to creates only. Adds only: a
release without the column keeps working beside this one (see docs/deploy.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
adds_only = True  # see docs/deploy.md, Upgrading


def upgrade() -> None:
    with op.batch_alter_table("emails", schema=None) as batch_op:
        batch_op.add_column(sa.Column("uid", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("emails", schema=None) as batch_op:
        batch_op.drop_column("uid")
