"""a webhook's queue in claim order

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 14:45:00

The dispatcher claims each webhook's requests on their own (status, webhook, due time, commit
order) and finds the webhooks with a queue by one index probe each.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
adds_only = True  # see docs/deploy.md, Upgrading

NAME = "ix_deliveries_status_webhook_id_next_attempt_at_first_seq"


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(
            NAME, ["status", "webhook_id", "next_attempt_at", "first_seq"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(NAME)
