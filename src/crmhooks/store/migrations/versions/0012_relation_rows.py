"""relation rows

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 02:05:00

Pipeliner's to-many links as rows of their own: ContactAccountRelations,
LeadOpptyAccountRelations, LeadOpptyContactRelations, ActivityRelations and
CloudObjectRelations. Every link the single-link columns hold today (a Contact's or LeadOppty's
primary account, a LeadOppty's primary contact, an activity's account, contact and
lead/opportunity, a document's one link) becomes a row, so an upgraded
database shows the same links in the new lists. The columns stay: they are derived from the rows
from now on. Adds only: a release without relation rows keeps working beside this one (its writes
do not add rows; see docs/deploy.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
adds_only = True  # see docs/deploy.md, Upgrading

# Frozen here: the column types as this revision creates them.
_ID = sa.String(length=36)
_TIME = sa.DateTime(timezone=True)


def _bool() -> sa.Boolean:
    return sa.Boolean(create_constraint=False)


def _relation_table(name: str, *columns: sa.Column, indexed: Sequence[str]) -> None:  # type: ignore[type-arg]
    op.create_table(
        name,
        sa.Column("id", _ID, nullable=False),
        sa.Column("space_id", sa.String(length=64), nullable=False),
        sa.Column("created", _TIME, nullable=False),
        sa.Column("modified", _TIME, nullable=False),
        sa.Column("is_deleted", _bool(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        *columns,
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{name}")),
    )
    live = sa.text("is_deleted = false")
    op.create_index(f"ix_{name}_live", name, ["space_id"], sqlite_where=live, postgresql_where=live)
    op.create_index(op.f(f"ix_{name}_space_id_created_id"), name, ["space_id", "created", "id"])
    op.create_index(op.f(f"ix_{name}_space_id_modified_id"), name, ["space_id", "modified", "id"])
    for col in indexed:
        op.create_index(
            op.f(f"ix_{name}_space_id_{col}_created_id"), name, ["space_id", col, "created", "id"]
        )


def _uuid() -> str:
    """A random version-4 UUID in SQL, one per row."""
    if op.get_bind().dialect.name == "postgresql":
        return "gen_random_uuid()::text"
    return (
        "lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' ||"
        " substr(lower(hex(randomblob(2))), 2) || '-a' || substr(lower(hex(randomblob(2))), 2)"
        " || '-' || lower(hex(randomblob(6)))"
    )


def _move(table: str, columns: str, select: str) -> None:
    op.execute(
        f"INSERT INTO {table} (id, space_id, created, modified, is_deleted, revision, {columns})"
        f" SELECT {_uuid()}, space_id, created, created, false, 1, {select}"
    )


def upgrade() -> None:
    _relation_table(
        "contact_account_relations",
        sa.Column("contact_id", _ID, nullable=True),
        sa.Column("account_id", _ID, nullable=True),
        sa.Column("is_primary", _bool(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("position", sa.String(length=255), nullable=True),
        sa.Column("relationship", sa.SmallInteger(), nullable=True),
        sa.Column("is_assistant", _bool(), nullable=True),
        sa.Column("is_sibling", _bool(), nullable=True),
        indexed=("contact_id", "account_id"),
    )
    _relation_table(
        "lead_oppty_account_relations",
        sa.Column("lead_oppty_id", _ID, nullable=True),
        sa.Column("account_id", _ID, nullable=True),
        sa.Column("is_primary", _bool(), nullable=True),
        indexed=("lead_oppty_id", "account_id"),
    )
    _relation_table(
        "lead_oppty_contact_relations",
        sa.Column("lead_oppty_id", _ID, nullable=True),
        sa.Column("contact_id", _ID, nullable=True),
        sa.Column("is_primary", _bool(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("relationship", sa.SmallInteger(), nullable=True),
        indexed=("lead_oppty_id", "contact_id"),
    )
    _relation_table(
        "activity_relations",
        sa.Column("activity_id", _ID, nullable=True),
        sa.Column("activity_type", sa.String(length=32), nullable=True),
        sa.Column("account_id", _ID, nullable=True),
        sa.Column("contact_id", _ID, nullable=True),
        sa.Column("lead_oppty_id", _ID, nullable=True),
        sa.Column("custom_entity_id", _ID, nullable=True),
        indexed=("activity_id", "account_id", "contact_id", "lead_oppty_id", "custom_entity_id"),
    )
    _relation_table(
        "cloud_object_relations",
        sa.Column("cloud_object_id", _ID, nullable=True),
        sa.Column("account_id", _ID, nullable=True),
        sa.Column("contact_id", _ID, nullable=True),
        sa.Column("lead_oppty_id", _ID, nullable=True),
        sa.Column("activity_id", _ID, nullable=True),
        sa.Column("activity_type", sa.String(length=32), nullable=True),
        sa.Column("message_id", _ID, nullable=True),
        sa.Column("message_type", sa.String(length=32), nullable=True),
        sa.Column("custom_entity_id", _ID, nullable=True),
        indexed=(
            "cloud_object_id",
            "account_id",
            "contact_id",
            "lead_oppty_id",
            "activity_id",
            "message_id",
            "custom_entity_id",
        ),
    )
    # Today's links, as rows.
    for link, column, kind in (
        ("account_id", "account_id", None),
        ("contact_id", "contact_id", None),
        ("lead_oppty_id", "lead_oppty_id", None),
        ("task_id", "activity_id", "Tasks"),
        ("appointment_id", "activity_id", "Appointments"),
        ("email_id", "message_id", "Emails"),
        ("custom_entity_id", "custom_entity_id", None),
    ):
        columns, values = f"cloud_object_id, {column}", f"id, {link}"
        if kind is not None:
            columns += f", {column[:-3]}_type"
            values += f", '{kind}'"
        _move(
            "cloud_object_relations",
            columns,
            f"{values} FROM cloud_objects WHERE {link} IS NOT NULL",
        )
    _move(
        "contact_account_relations",
        "contact_id, account_id, is_primary, is_assistant, is_sibling",
        "id, primary_account_id, true, false, false FROM contacts"
        " WHERE primary_account_id IS NOT NULL",
    )
    for target in ("account", "contact"):
        _move(
            f"lead_oppty_{target}_relations",
            f"lead_oppty_id, {target}_id, is_primary",
            f"id, primary_{target}_id, true FROM lead_opptys WHERE primary_{target}_id IS NOT NULL",
        )
    for table, kind in (("tasks", "Tasks"), ("appointments", "Appointments")):
        for link in ("account_id", "contact_id", "lead_oppty_id"):
            _move(
                "activity_relations",
                f"activity_id, activity_type, {link}",
                f"id, '{kind}', {link} FROM {table} WHERE {link} IS NOT NULL",
            )


def downgrade() -> None:
    for name in (
        "cloud_object_relations",
        "activity_relations",
        "lead_oppty_contact_relations",
        "lead_oppty_account_relations",
        "contact_account_relations",
    ):
        op.drop_table(name)
