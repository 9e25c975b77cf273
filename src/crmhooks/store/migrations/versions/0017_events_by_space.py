"""events by space

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01 16:00:00

An index on ``events (space_id, seq)``: the change feed (``GET /events``) reads one space's
events in seq order from a cursor without scanning the other spaces' events. Adds only.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
adds_only = True  # see docs/deploy.md, Upgrading


def upgrade() -> None:
    op.create_index("ix_events_space_seq", "events", ["space_id", "seq"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_events_space_seq", table_name="events")
