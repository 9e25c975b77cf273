"""The database tables, built from the entity registry.

One table per storage group (Leads and Opportunities share ``lead_opptys``; every custom entity's
records share ``custom_entity_records``), each with the system columns, one column per field
(an OBJECT field gets one per sub-field, ``value__base_value``) and a JSON ``data`` column where
fields are declared at run time. The alembic migrations are generated from this module and a test
checks that they still match it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    TypeDecorator,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeEngine

from crmhooks.schema.registry import BUILTIN, CUSTOM_DISCRIMINATOR, CUSTOM_RECORD_TABLE
from crmhooks.schema.types import SYSTEM_FIELDS, Field, Kind

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on both engines.

    SQLite keeps them as naive UTC text (sortable); PostgreSQL as ``timestamptz``.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")
ID = String(36)


def column_type(f: Field) -> TypeEngine[Any]:
    k = f.kind
    if k is Kind.TEXT:
        return String(f.max_length) if f.max_length and f.max_length <= 4000 else Text()
    types: dict[Kind, TypeEngine[Any]] = {
        Kind.INTEGER: BigInteger(),
        Kind.FLOAT: Double(),
        Kind.BOOLEAN: Boolean(create_constraint=False),
        Kind.DATE: Date(),
        Kind.DATETIME: UTCDateTime(),
        Kind.UUID: ID,
        Kind.ENUM: SmallInteger(),
        Kind.JSON: JSONType,
    }
    return types[k]


def field_columns(f: Field) -> list[tuple[str, Field]]:
    """The (column name, field) pairs a field is stored in."""
    if f.column_name is None:
        return []
    if f.kind is Kind.OBJECT:
        return [(f"{f.column_name}__{s.name}", s) for s in f.subfields]
    return [(f.column_name, f)]


spaces = Table(
    "spaces",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("created", UTCDateTime(), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", ID, primary_key=True),
    Column("space_id", String(64), ForeignKey("spaces.id"), nullable=False, index=True),
    Column("key", String(64), nullable=False, unique=True),
    Column("secret_hash", String(128), nullable=False),
    Column("created", UTCDateTime(), nullable=False),
    # Revoked now (``keys revoke``) or from a time on (the old key of ``keys rotate``).
    Column("revoked_at", UTCDateTime(), nullable=True),
    Column("expires_at", UTCDateTime(), nullable=True),
    # Signs the key's dashboard sessions: one more on sign-out or revocation ends all of them.
    Column("session_epoch", Integer(), nullable=False, server_default="0"),
)


def _entity_tables() -> dict[str, Table]:
    groups: dict[str, dict[str, Column[Any]]] = {}
    discriminators: dict[str, str] = {}
    relation_columns: dict[str, list[str]] = {}
    for et in BUILTIN.values():
        cols = groups.setdefault(et.table, {})
        if et.discriminator:
            discriminators[et.table] = et.discriminator[0]
        for f in et.fields:
            if f in SYSTEM_FIELDS:
                continue
            for name, sub in field_columns(f):
                if name not in cols:
                    cols[name] = Column(name, column_type(sub), nullable=True)
                    if f.is_relation:
                        relation_columns.setdefault(et.table, []).append(name)
    # A to-many list's rows are found by the column that names their parent (a relation, or
    # an ActivityRelation's activity_id, which may name a Task or an Appointment).
    for et in BUILTIN.values():
        for tm in et.to_many:
            listed = relation_columns.setdefault(BUILTIN[tm.source].table, [])
            if tm.via not in listed:
                listed.append(tm.via)
    # Custom entity records: name and owner as columns, declared fields in ``data``.
    groups[CUSTOM_RECORD_TABLE] = {
        "name": Column("name", String(255), nullable=True),
        "owner_id": Column("owner_id", ID, nullable=True),
        "data": Column("data", JSONType, nullable=False),
    }
    discriminators[CUSTOM_RECORD_TABLE] = CUSTOM_DISCRIMINATOR
    relation_columns[CUSTOM_RECORD_TABLE] = ["owner_id"]

    tables: dict[str, Table] = {}
    for table_name, cols in groups.items():
        disc = discriminators.get(table_name)
        lead = ["space_id", *([disc] if disc else [])]
        system: list[Column[Any]] = [
            Column("id", ID, primary_key=True),
            Column("space_id", String(64), nullable=False),
        ]
        if disc:
            system.append(Column(disc, String(64), nullable=False))
        system += [
            Column("created", UTCDateTime(), nullable=False),
            Column("modified", UTCDateTime(), nullable=False),
            Column("is_deleted", Boolean(create_constraint=False), nullable=False),
            Column("revision", BigInteger(), nullable=False),
        ]
        table = Table(table_name, metadata, *system, *cols.values())
        Index(None, *(table.c[c] for c in (*lead, "created", "id")))
        Index(None, *(table.c[c] for c in (*lead, "modified", "id")))
        # The live records of a space, for the count behind a list's ``total``. Partial, so that
        # it never looks better to a planner than a relation index for a filtered list.
        live = table.c.is_deleted == false()
        Index(
            f"ix_{table_name}_live",
            *(table.c[c] for c in lead),
            sqlite_where=live,
            postgresql_where=live,
        )
        for rc in relation_columns.get(table_name, []):
            # Ending in the default order: a page of one owner's (or one parent's) records is
            # read in order from the index, without a sort and without visiting other records.
            Index(None, *(table.c[c] for c in ("space_id", rc, "created", "id")))
        tables[table_name] = table
    return tables


TABLES = _entity_tables()

# One live definition per custom entity name in a space. The writer checks it (a 422 naming
# api_name); the index holds it when two transactions check at once (PostgreSQL).
_definitions = TABLES["custom_entities"]
Index(
    "ux_custom_entities_live_api_name",
    _definitions.c.space_id,
    _definitions.c.api_name,
    unique=True,
    sqlite_where=_definitions.c.is_deleted == false(),
    postgresql_where=_definitions.c.is_deleted == false(),
)

# The outbox: every event a committed write raised, in commit order (``seq``). Plain JSON, not
# JSONB: it is written once and read back whole, and keeps the order of the keys.
SEQ = BigInteger().with_variant(Integer(), "sqlite")  # SQLite: an alias of the rowid
events = Table(
    "events",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("id", ID, nullable=False, unique=True),
    Column("space_id", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    Column("entity", String(64), nullable=False),
    Column("record_id", ID, nullable=False),
    Column("record", JSON(), nullable=False),
    Column("changes", JSON(), nullable=True),
    Column("related_entity", String(64), nullable=True),
    Column("related_id", ID, nullable=True),
    Column("related", JSON(), nullable=True),
    Column("skip_key", String(255), nullable=True),
    Column("burst_id", ID, nullable=False),
    Column("key_id", ID, nullable=True),
    Column("occurred", UTCDateTime(), nullable=False),
    # The record as a webhook shows it by default (the API's rendering, no expand or
    # load-only), JSON text made in the write that changed it: routing splices it into the
    # body as it is. Null for events that had none made (older releases, linked events).
    Column("rendered", Text(), nullable=True),
)
Index(None, events.c.occurred)
Index("ix_events_space_seq", events.c.space_id, events.c.seq)  # the change feed

# How far the router has turned events into deliveries.
dispatch_state = Table(
    "dispatch_state",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("last_seq", BigInteger(), nullable=False),
    Column("updated", UTCDateTime(), nullable=False),
)

# Events of a space past its matching budget in a routing step, routed in later steps in seq
# order (``delivery.budget``); behind the router's cursor, which has moved past them.
routing_deferred = Table(
    "routing_deferred",
    metadata,
    Column("space_id", String(64), primary_key=True),
    Column("seq", SEQ, primary_key=True, autoincrement=False),
)

# One delivery is one HTTP request to one webhook (``webhook-id``), tried until it succeeds.
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", ID, primary_key=True),
    Column("webhook_id", ID, nullable=False),
    Column("space_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # pending, delivered, failed
    Column("event_ids", JSON(), nullable=False),
    Column("event_count", Integer(), nullable=False),
    Column("first_seq", BigInteger(), nullable=False),
    Column("attempts", Integer(), nullable=False),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("lease_until", UTCDateTime(), nullable=True),
    Column("created", UTCDateTime(), nullable=False),
    Column("delivered_at", UTCDateTime(), nullable=True),
    Column("last_status", Integer(), nullable=True),
    Column("last_error", Text(), nullable=True),
    # The chunks of one burst with a chunk_delay: chunk N waits N x delay after chunk 0 is sent.
    Column("chunk_group", ID, nullable=True),
    Column("chunk_index", Integer(), nullable=True),
    # Planned by a replay (POST /entities/Webhooks/{id}/replay): sent with webhook-replay: true.
    Column("replay", Boolean(create_constraint=False), nullable=False, server_default=false()),
)
Index(None, deliveries.c.status, deliveries.c.next_attempt_at)
# A webhook's queue in claim order, and the webhooks with a queue (one probe each).
Index(
    None,
    deliveries.c.status,
    deliveries.c.webhook_id,
    deliveries.c.next_attempt_at,
    deliveries.c.first_seq,
)
Index(None, deliveries.c.webhook_id, deliveries.c.created)
Index(None, deliveries.c.chunk_group, deliveries.c.chunk_index)

# The requests claimed and not finished, per webhook: what every process holds now.
Index(
    "ix_deliveries_leased",
    deliveries.c.webhook_id,
    deliveries.c.lease_until,
    sqlite_where=deliveries.c.lease_until.is_not(None),
    postgresql_where=deliveries.c.lease_until.is_not(None),
)

# The body of each request, written once when it is routed. Apart from the row that changes at
# every claim and outcome: SQLite rewrites a whole row when one column changes, and a body of
# a hundred events is ~100 KB.
delivery_bodies = Table(
    "delivery_bodies",
    metadata,
    Column("delivery_id", ID, primary_key=True),
    Column("body", Text(), nullable=False),
)

# The records of each request not finished yet: a request of a webhook waits while an earlier
# one (lower first_seq) of the same webhook still carries an event of one of its records.
delivery_records = Table(
    "delivery_records",
    metadata,
    Column("delivery_id", ID, primary_key=True),
    Column("record_id", ID, primary_key=True),
    Column("webhook_id", ID, nullable=False),
    Column("first_seq", BigInteger(), nullable=False),
)
Index(
    None,
    delivery_records.c.webhook_id,
    delivery_records.c.record_id,
    delivery_records.c.first_seq,
)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", SEQ, primary_key=True, autoincrement=True),
    Column("delivery_id", ID, nullable=False, index=True),
    Column("attempt", Integer(), nullable=False),
    Column("started", UTCDateTime(), nullable=False),
    Column("status_code", Integer(), nullable=True),
    Column("latency_ms", Double(), nullable=False),
    Column("error", Text(), nullable=True),
    Column("response_body", Text(), nullable=True),
)


def table_for(name: str) -> Table:
    return TABLES[name]
