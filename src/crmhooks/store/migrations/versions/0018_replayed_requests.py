"""replayed requests

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02 10:00:00

``deliveries.replay``: the request was planned by a replay
(``POST /entities/Webhooks/{id}/replay``) and is sent with the header ``webhook-replay: true``.
Adds only: the column defaults to false, so the requests an older release plans are live ones,
and an older release sends a replayed request without the header.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
adds_only = True  # see docs/deploy.md, Upgrading


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(
            sa.Column(
                "replay",
                sa.Boolean(create_constraint=False),
                nullable=False,
                server_default=sa.false(),
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("replay")
