"""a version counter for webhooks

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 16:00:00

Every change to webhooks or custom entity definitions adds one to a counter in the same
transaction (a row of ``dispatch_state``), so a routing process in any process sees the change
before any event committed after it, for the price of one indexed read per routing step.
Adds only: a release without it keeps working beside one with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
adds_only = True  # see docs/deploy.md, Upgrading

_state = sa.table(
    "dispatch_state",
    sa.column("name", sa.String()),
    sa.column("last_seq", sa.BigInteger()),
    sa.column("updated", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    now = datetime.now(UTC)
    if op.get_bind().dialect.name == "sqlite":
        now = now.replace(tzinfo=None)  # stored as naive UTC text, as the app stores it
    op.bulk_insert(_state, [{"name": "webhooks", "last_seq": 0, "updated": now}])


def downgrade() -> None:
    op.execute(_state.delete().where(_state.c.name == "webhooks"))
