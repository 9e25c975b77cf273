"""The one write path: every change to a record goes through :class:`Writer`.

A writer lives inside one database transaction. Each of its methods checks the write, applies
the rules, stores the row and appends a :class:`Change` (the record before and after, and the
fields that changed) to ``writer.changes``. When the transaction block ends, every registered
:data:`Recorder` sees all the changes *inside the same transaction*, before the commit: that is
where events are stored, so a write that commits has its events and one that rolls back has none.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum
from functools import lru_cache
from typing import Any

from sqlalchemy import Table, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.changes import links
from crmhooks.changes.defaults import SpaceDefaults
from crmhooks.changes.rules import DELETE_RULES, derive
from crmhooks.errors import (
    FIELD_VALUE,
    RELATIONS_DOESNT_EXIST,
    ApiError,
    FieldError,
    MethodNotAllowed,
    NotFound,
    ValidationFailed,
    field_error,
)
from crmhooks.schema.registry import BUILTIN
from crmhooks.schema.types import EntityType
from crmhooks.schema.validate import FULL, Validation, check_write
from crmhooks.schema.values import format_datetime, new_sorted_id
from crmhooks.store.catalog import target_type
from crmhooks.store.engine import Database
from crmhooks.store.inline_sqlite import insert_rows
from crmhooks.store.records import (
    Record,
    existing_ids,
    fetch,
    row_to_record,
    table_of,
    to_columns,
    wire_value,
)


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    RESTORE = "restore"
    QUALIFY = "qualify"  # a Lead became an Opportunity (same id)
    BACK_TO_LEAD = "back_to_lead"  # an Opportunity became a Lead again


@dataclass(frozen=True)
class Change:
    """One record's change: what it was, what it is, and which fields moved."""

    entity: EntityType
    action: Action
    record_id: str
    before: Record | None
    after: Record
    # The fields that moved, (old, new); empty for a create, whose every field is new (its
    # events carry no changes; nothing reads a create's diff, and building one cost ~5% of
    # a batch create's CPU).
    changed: dict[str, tuple[Any, Any]]
    at: datetime


@dataclass(frozen=True)
class WriteContext:
    """Who writes, the request's ``Webhook-Skip-Key``, how much of the write is checked
    (``validation-level``), the zone of date-times written without an offset (``Timezone``;
    None: UTC), and what was checked before the transaction opened
    (:meth:`WritePath.precheck`)."""

    space_id: str
    key_id: str | None = None
    skip_key: str | None = None
    validation: Validation = FULL
    timezone: tzinfo | None = None
    # Webhook URLs whose names were looked up before the transaction: url -> why it is
    # refused, or None.
    targets: Mapping[str, str | None] = field(default_factory=dict, hash=False, compare=False)


Recorder = Callable[[AsyncConnection, WriteContext, Sequence[Change]], Awaitable[None]]
# An entity type's checks that need the network (the names in webhook URLs), run on the bodies
# of a write before its transaction opens, so no write of any space waits on them:
# bodies -> url -> why it is refused, or None.
Precheck = Callable[[Sequence[Any]], Awaitable[Mapping[str, str | None]]]
# An entity type's own check that needs the database or settings (webhook registration):
# (connection, context, record before or None, stored updates, now) -> stored updates.
Validator = Callable[
    [AsyncConnection, WriteContext, Record | None, dict[str, Any], datetime],
    Awaitable[dict[str, Any]],
]


# Fields whose value is unique among a space's live records of the entity type.
UNIQUE: dict[str, str] = {"CustomEntities": "api_name", "Currencies": "code"}


def writable(et: EntityType) -> EntityType:
    """``et``, or 405 if the API only reads it (Profiles)."""
    if not et.writable:
        raise MethodNotAllowed(f"{et.name} are read-only through the API")
    return et


def _diff(before: Record, after: Record) -> dict[str, tuple[Any, Any]]:
    return {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}


def is_new(item: Any) -> bool:
    """Whether a batch item asks for a new record (an object without ``id``)."""
    return isinstance(item, dict) and "id" not in item


@dataclass(frozen=True)
class NewRow:
    """A create checked and completed (``Writer.prepare_many``): its stored values, the row
    to insert and the record it shows."""

    stored: dict[str, Any]
    row: dict[str, Any]
    record: Record


@dataclass(frozen=True)
class PreparedCreates:
    """A batch of creates made ready before its write (``WritePath.prepare_creates``): the
    time its rows carry, and each item's row or error."""

    now: datetime
    items: list[NewRow | ApiError]


@dataclass
class Writer:
    conn: AsyncConnection
    ctx: WriteContext
    changes: list[Change] = field(default_factory=list)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    validators: Mapping[str, Validator] = field(default_factory=dict)
    # Records whose own write is writing their relation rows (links.write_links).
    linking: set[str] = field(default_factory=set)
    _rows_made: int = 0
    _savepoints: int = 0

    @asynccontextmanager
    async def atomic(self) -> AsyncIterator[None]:
        """A part of the transaction that fails whole: its rows and its changes go together
        (a batch item that writes relation rows besides its record)."""
        self._savepoints += 1
        name = f"crmhooks_item_{self._savepoints}"
        mark = len(self.changes)
        await self.conn.exec_driver_sql(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            await self.conn.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {name}")
            del self.changes[mark:]
            raise
        await self.conn.exec_driver_sql(f"RELEASE SAVEPOINT {name}")

    _defaults: SpaceDefaults | None = field(default=None, init=False, repr=False)

    def _space_defaults(self) -> SpaceDefaults:
        if self._defaults is None:
            deleted_too = Validation.DELETED_RELATIONS in self.ctx.validation
            self._defaults = SpaceDefaults(self.conn, self.ctx.space_id, deleted_too)
        return self._defaults

    async def _validate(
        self, et: EntityType, before: Record | None, stored: dict[str, Any]
    ) -> dict[str, Any]:
        check = self.validators.get(et.name)
        return (
            stored if check is None else await check(self.conn, self.ctx, before, stored, self.now)
        )

    async def _relation_errors(
        self, et: EntityType, items: list[dict[str, Any]]
    ) -> list[list[FieldError]]:
        """For each item, its relations to records that do not exist; one query per target.

        (Ids are made by the server, so no item can name a record created in the same call.)
        """
        defaults = self._space_defaults()
        wanted: dict[str, set[str]] = {}
        for stored in items:
            for f in et.relations:
                value = stored.get(f.name)
                target = f.target
                if value is not None and target is not None and not defaults.known(target, value):
                    wanted.setdefault(target, set()).add(value)
        found: dict[str, set[str]] = {}
        deleted_too = Validation.DELETED_RELATIONS in self.ctx.validation
        for target, values in wanted.items():
            looked_up = defaults.existing(target, values)  # with the defaults, same query
            if looked_up is not None:
                found[target] = looked_up
                continue
            found[target] = await existing_ids(
                self.conn,
                target_type(target),
                self.ctx.space_id,
                values,
                include_deleted=deleted_too,
            )
        return [
            [
                field_error(
                    f.name, RELATIONS_DOESNT_EXIST, f"no {f.target} record with id {v} exists"
                )
                for f in et.relations
                if f.target is not None
                and (v := stored.get(f.name)) is not None
                and v not in found.get(f.target, ())
                and not defaults.known(f.target, v)
            ]
            for stored in items
        ]

    async def _check_relations(self, et: EntityType, stored: dict[str, Any]) -> None:
        (errors,) = await self._relation_errors(et, [stored])
        if errors:
            raise ValidationFailed(errors)

    async def _check_unique(self, et: EntityType, stored: dict[str, Any]) -> None:
        name = UNIQUE.get(et.name)
        if name is None or name not in stored:
            return
        t = table_of(et)
        taken = await self.conn.execute(
            select(t.c.id).where(
                t.c.space_id == self.ctx.space_id,
                t.c[name] == stored[name],
                t.c.is_deleted.is_(False),
            )
        )
        if taken.first() is not None:
            raise ValidationFailed(
                [field_error(name, FIELD_VALUE, f"{stored[name]!r} exists already")]
            )

    def _record(self, change: Change) -> Record:
        self.changes.append(change)
        return change.after

    def _checked(
        self, et: EntityType, before: Record | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        """The write's stored values, checked at the request's validation level and completed
        by the entity's rules; read-only fields the request overrides keep its values."""
        stored = check_write(
            et, body, before=before, level=self.ctx.validation, zone=self.ctx.timezone
        )
        overrides = {k: v for k, v in stored.items() if et.by_name[k].read_only}
        if before is None:
            for f in et.fields:
                if f.name not in stored and not f.read_only and f.default is not None:
                    stored[f.name] = f.default
        return {**derive(et, before, stored, self.now), **overrides}

    async def _prepared(self, et: EntityType, body: dict[str, Any]) -> dict[str, Any]:
        """A create's stored values, checked and completed; relations are checked apart."""
        stored = self._checked(writable(et), None, body)
        stored = await self._space_defaults().complete(et, stored)
        return await self._validate(et, None, stored)

    def _new_row(self, et: EntityType, stored: dict[str, Any]) -> tuple[dict[str, Any], Record]:
        """The row to insert for a create, every column named, and the record it shows."""
        data: dict[str, Any] = {}
        cols = to_columns(et, stored, data)
        at = self.now
        if et.name in links.RELATION_ENTITIES:
            # Relation rows made by one write keep the order they were given in (lists are
            # shown in created order; an activity's shorthand is its newest row).
            self._rows_made += 1
            at += timedelta(microseconds=self._rows_made)
        row = {
            **_no_values(table_of(et)),
            **cols,
            "id": new_sorted_id(),
            "space_id": self.ctx.space_id,
            "created": stored.get("created") or at,
            "modified": at,
            "is_deleted": False,
            "revision": 1,
        }
        if et.discriminator:
            row[et.discriminator[0]] = et.discriminator[1]
        if et.custom:
            row["data"] = data
        return row, row_to_record(et, row)

    def _created(self, et: EntityType, after: Record) -> Record:
        change = Change(et, Action.CREATE, after["id"], None, after, {}, self.now)
        return self._record(change)

    @asynccontextmanager
    async def _unique_name(self, et: EntityType, api_name: Any) -> AsyncIterator[None]:
        """A write the live-name index may refuse: two PostgreSQL transactions can both pass
        :meth:`_check_unique` before either commits. The loser gets the same 422, on a
        savepoint so the rest of its transaction (a batch) goes on. (SQLite runs one write at a
        time, so there the check alone holds.)"""
        if et.name != "CustomEntities" or self.conn.dialect.name != "postgresql":
            yield
            return
        try:
            async with self.conn.begin_nested():
                yield
        except IntegrityError:
            raise ValidationFailed(
                [field_error("api_name", FIELD_VALUE, f"{api_name!r} exists already")]
            ) from None

    async def create(self, et: EntityType, body: dict[str, Any]) -> Record:
        if not links.involved(et, body):
            return await self._create(et, body, {})
        body, nested = links.split_nested(et, body)
        async with self.atomic():
            return await self._create(et, body, nested)

    async def _create(
        self, et: EntityType, body: dict[str, Any], nested: dict[str, list[dict[str, Any]]]
    ) -> Record:
        stored = await self._prepared(et, body)
        await self._check_relations(et, stored)
        await self._check_unique(et, stored)
        if et.name in links.RELATION_ENTITIES:
            await links.prepare_relation(self, et, stored)
        row, after = self._new_row(et, stored)
        if et.name in UNIQUE:
            async with self._unique_name(et, stored.get("api_name")):
                await insert_rows(self.conn, table_of(et), [row])
        else:  # the common case, without a context manager per create
            await insert_rows(self.conn, table_of(et), [row])
        after = self._created(et, after)
        if et.name in links.RELATION_ENTITIES:
            await links.after_relation_write(self, et, after)
        elif et.name in links.SHORTHANDS:
            after = await links.write_links(self, et, None, after, nested)
        return after

    def checks_apart(self, et: EntityType, bodies: Sequence[dict[str, Any]]) -> bool:
        """Whether :meth:`create_many` takes these bodies together: no check of theirs needs
        the rows written before them (a validator, a unique name, relation rows)."""
        return not (
            et.name in self.validators
            or et.name in UNIQUE
            or any(links.involved(et, body) for body in bodies)
        )

    async def prepare_many(
        self, et: EntityType, bodies: Sequence[dict[str, Any]]
    ) -> list[NewRow | ApiError]:
        """Each body checked and completed, with the row it makes, or the error that keeps it
        out; relations are checked by :meth:`create_many`, in the write. Reads only: it may run
        on a read connection before the write transaction opens (``WritePath.prepare_creates``).
        """
        out: list[NewRow | ApiError] = []
        for body in bodies:
            try:
                stored = await self._prepared(et, body)
            except ApiError as e:
                out.append(e)
                continue
            out.append(NewRow(stored, *self._new_row(et, stored)))
        return out

    async def create_many(
        self,
        et: EntityType,
        bodies: Sequence[dict[str, Any]],
        prepared: Sequence[NewRow | ApiError] | None = None,
    ) -> list[Record | ApiError]:
        """Many creates with one relation query per target and one insert: each item's record,
        or the error that kept it out (nothing of a failed item is written). ``prepared``: what
        :meth:`prepare_many` made of ``bodies`` already."""
        if prepared is None:
            if not self.checks_apart(et, bodies):
                return [await self._one(et, body) for body in bodies]  # checks need each row
            prepared = await self.prepare_many(et, bodies)
        out: list[Record | ApiError | None] = [None] * len(bodies)
        ready: list[tuple[int, dict[str, Any], dict[str, Any], Record]] = []
        for i, item in enumerate(prepared):
            if isinstance(item, NewRow):
                ready.append((i, item.stored, item.row, item.record))
            else:
                out[i] = item
        problems = await self._relation_errors(et, [stored for _, stored, _, _ in ready])
        rows = []
        for (i, _, row, after), errors in zip(ready, problems, strict=True):
            if errors:
                out[i] = ValidationFailed(errors)
            else:
                rows.append(row)
                out[i] = after
        if rows:
            await insert_rows(self.conn, table_of(et), rows)
        for outcome in out:
            if isinstance(outcome, dict):
                self._created(et, outcome)
        return [outcome for outcome in out if outcome is not None]

    async def _one(self, et: EntityType, body: dict[str, Any]) -> Record | ApiError:
        try:
            return await self.create(et, body)
        except ApiError as e:
            return e

    async def _load(self, et: EntityType, record_id: str, *, deleted: bool = False) -> Record:
        found = await fetch(
            self.conn, et, self.ctx.space_id, record_id, include_deleted=deleted, for_update=True
        )
        if found is None or (deleted and not found[0]["is_deleted"]):
            state = "deleted " if deleted else ""
            raise NotFound(f"no {state}{et.name} record with id {record_id}")
        return found[0]

    async def _store(
        self,
        et: EntityType,
        before: Record,
        updates: dict[str, Any],
        action: Action,
        *,
        kind: str | None = None,
    ) -> Record:
        """Write ``updates`` (stored values) over ``before`` and record the change, if any.

        ``kind`` moves a LeadOppty row to the other kind (qualify, back to lead).
        """
        after = dict(before)
        for name, value in updates.items():
            after[name] = wire_value(et.by_name[name], value)
        changed = _diff(before, after)
        if not changed and kind is None:
            return before
        data = {k: before[k] for k in before if et.custom and et.by_name[k].column_name is None}
        cols = to_columns(et, updates, data)
        if et.custom:
            cols["data"] = data
        if kind is not None:
            cols["kind"] = kind
        after["revision"] = before["revision"] + 1
        after["modified"] = format_datetime(self.now)
        t = table_of(et)
        await self.conn.execute(
            update(t)
            .where(t.c.id == before["id"], t.c.space_id == self.ctx.space_id)
            .values(**cols, modified=self.now, revision=after["revision"])
        )
        return self._record(Change(et, action, before["id"], before, after, changed, self.now))

    async def update(self, et: EntityType, record_id: str, body: dict[str, Any]) -> Record:
        if not links.involved(et, body):
            return await self._update(et, record_id, body, {})
        body, nested = links.split_nested(et, body)
        async with self.atomic():
            return await self._update(et, record_id, body, nested)

    async def _update(
        self,
        et: EntityType,
        record_id: str,
        body: dict[str, Any],
        nested: dict[str, list[dict[str, Any]]],
    ) -> Record:
        before = await self._load(writable(et), record_id)
        stored = self._checked(et, before, body)
        stored = await self._validate(et, before, stored)
        changed_relations = {k: v for k, v in stored.items() if before.get(k) != v}
        await self._check_relations(et, changed_relations)
        after = await self._store(et, before, stored, Action.UPDATE)
        if et.name in links.RELATION_ENTITIES:
            if after is not before:
                await links.after_relation_write(self, et, after)
        elif et.name in links.SHORTHANDS:
            after = await links.write_links(self, et, before, after, nested)
        return after

    async def delete(self, et: EntityType, record_id: str) -> Record:
        before = await self._load(writable(et), record_id)
        keep = DELETE_RULES.get(et.name)
        if keep is not None:
            keep(before)
        after = await self._store(et, before, {"is_deleted": True}, Action.DELETE)
        if et.name in links.RELATION_ENTITIES:
            await links.after_relation_write(self, et, after)
        return after

    async def restore(self, et: EntityType, record_id: str) -> Record:
        before = await self._load(writable(et), record_id, deleted=True)
        if et.name in links.RELATION_ENTITIES:
            live = {k: v for k, v in before.items() if k != "is_deleted"}
            await links.prepare_relation(self, et, live)
        # A record made since may have taken its name (a custom entity's, a currency's code).
        await self._check_unique(et, before)
        async with self._unique_name(et, before.get("api_name")):
            after = await self._store(et, before, {"is_deleted": False}, Action.RESTORE)
        if et.name in links.RELATION_ENTITIES:
            await links.after_relation_write(self, et, after)
        return after

    async def amend(
        self, et: EntityType, record_id: str, after: Record, values: dict[str, Any]
    ) -> Record:
        """Set derived fields of a record this writer has just written: into its own change
        (so its event shows them), or as a change of its own when this write had none."""
        change = next(
            (
                c
                for c in reversed(self.changes)
                if c.record_id == record_id and c.entity.table == et.table
            ),
            None,
        )
        if change is None:
            return await self._store(et, after, values, Action.UPDATE)
        t = table_of(et)
        await self.conn.execute(
            update(t).where(t.c.id == record_id, t.c.space_id == self.ctx.space_id).values(**values)
        )
        for name, value in values.items():
            change.after[name] = value
            if change.before is None:
                continue  # a create: every field is new, and no diff is kept
            old = change.before.get(name)
            if old == value:
                change.changed.pop(name, None)
            else:
                change.changed[name] = (old, value)
        return change.after

    async def qualify(self, record_id: str, body: dict[str, Any]) -> Record:
        """A Lead becomes an Opportunity with the same id (docs/webhooks.md#events)."""
        leads, opptys = BUILTIN["Leads"], BUILTIN["Opportunities"]
        await self._load(leads, record_id)
        allowed = {"step_id", "value", "closing_date"}
        unknown = [k for k in body if k not in allowed]
        if unknown:
            raise ValidationFailed(
                [
                    field_error(k, FIELD_VALUE, f"qualify takes only {', '.join(sorted(allowed))}")
                    for k in unknown
                ]
            )
        # The row keeps its Opportunity columns while it is a Lead: read them back.
        t = table_of(leads)
        raw = (await self.conn.execute(select(t).where(t.c.id == record_id))).mappings().one()
        before = row_to_record(opptys, raw)
        stored = check_write(opptys, body, before=before, zone=self.ctx.timezone)
        step = stored.get("step_id") or await self._first_step()
        if step is None:
            raise ValidationFailed(
                [field_error("step_id", FIELD_VALUE, "required: the space has no pipeline step")]
            )
        stored["step_id"] = step
        await self._check_relations(opptys, stored)
        stored.update(was_qualified=True, qualify_date=self.now)
        return await self._store(opptys, before, stored, Action.QUALIFY, kind="Opportunity")

    async def back_to_lead(self, record_id: str) -> Record:
        """An open or lost Opportunity becomes a Lead again, keeping its id."""
        leads, opptys = BUILTIN["Leads"], BUILTIN["Opportunities"]
        before = await self._load(opptys, record_id)
        if before.get("status") == 3:
            raise ValidationFailed(
                [field_error("status", FIELD_VALUE, "a won Opportunity cannot go back to Lead")]
            )
        lead_before = {f.name: before.get(f.name) for f in leads.fields}
        return await self._store(leads, lead_before, {}, Action.BACK_TO_LEAD, kind="Lead")

    async def _first_step(self) -> str | None:
        steps, pipelines = table_of(BUILTIN["Steps"]), table_of(BUILTIN["Pipelines"])
        row = (
            await self.conn.execute(
                select(steps.c.id)
                .join(pipelines, pipelines.c.id == steps.c.pipeline_id)
                .where(
                    steps.c.space_id == self.ctx.space_id,
                    steps.c.is_deleted.is_(False),
                    pipelines.c.is_deleted.is_(False),
                )
                .order_by(pipelines.c.created, steps.c.sort_order, steps.c.created)
                .limit(1)
            )
        ).first()
        return None if row is None else str(row[0])


@lru_cache(maxsize=256)
def _no_values(table: Table) -> dict[str, None]:
    """Every column of ``table``, None (copied for each new row, never changed)."""
    return {c.name: None for c in table.columns}


class WritePath:
    """Opens write transactions with the recorders that must see their changes.

    ``recorders`` run inside the transaction, before the commit; ``after_commit`` callbacks run
    once a transaction that changed something has committed (to wake the dispatcher).
    """

    def __init__(
        self,
        db: Database,
        recorders: Sequence[Recorder] = (),
        after_commit: Sequence[Callable[[WriteContext, Sequence[Change]], None]] = (),
        validators: Mapping[str, Validator] | None = None,
        prechecks: Mapping[str, Precheck] | None = None,
    ) -> None:
        self.db = db
        self.recorders: list[Recorder] = list(recorders)
        self.after_commit = list(after_commit)
        self.validators = dict(validators or {})
        self.prechecks = dict(prechecks or {})

    async def precheck(
        self, ctx: WriteContext, et: EntityType, bodies: Sequence[Any]
    ) -> WriteContext:
        """``ctx`` with what ``et``'s precheck found in ``bodies``; call it before :meth:`begin`
        for every write that may carry such values (creates, updates, batches)."""
        check = self.prechecks.get(et.name)
        if check is None:
            return ctx
        return replace(ctx, targets={**ctx.targets, **await check(bodies)})

    async def prepare_creates(
        self, ctx: WriteContext, et: EntityType, bodies: Sequence[Any]
    ) -> PreparedCreates | None:
        """For a batch of new records that ``Writer.create_many`` takes together, each
        checked and its row made on a read connection, before the write opens: the checks,
        defaults and rows are most of a batch's work, and SQLite's one writer (which the
        delivery process shares) is then held for the relation check and the inserts only.
        None when the batch is not of that kind (its items are checked in the write)."""
        if not bodies or not all(is_new(b) for b in bodies):
            return None
        async with self.db.read() as conn:
            writer = Writer(conn, ctx, validators=self.validators)
            if not writer.checks_apart(et, bodies):
                return None
            return PreparedCreates(writer.now, await writer.prepare_many(et, bodies))

    @asynccontextmanager
    async def begin(self, ctx: WriteContext, now: datetime | None = None) -> AsyncIterator[Writer]:
        """A write transaction and its writer; ``now``: the time its changes carry (that of
        rows prepared before it), the moment it opens if None."""
        async with self.db.write() as conn:
            writer = Writer(conn, ctx, validators=self.validators)
            if now is not None:
                writer.now = now
            yield writer
            if writer.changes:
                for record in self.recorders:
                    await record(conn, ctx, writer.changes)
        if writer.changes:
            for callback in self.after_commit:
                callback(ctx, writer.changes)
