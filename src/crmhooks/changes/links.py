"""Pipeliner's relation rows, kept in step with the records they link.

A Contact's accounts, a Lead's or Opportunity's accounts and contacts, an activity's accounts,
contacts, leads and opportunities are rows of relation entities (``ContactAccountRelations``,
``LeadOpptyAccountRelations``, ``LeadOpptyContactRelations``, ``ActivityRelations``). They are
written three ways, all through the one write path, in the write's transaction, with their
events:

- through their own routes;
- nested in the parent's create or update (``"account_relations": [{"account_id": ...,
  "is_primary": true}]``): on update the list replaces the parent's rows of that list (items
  with an ``id`` change that row, items without one are new, rows left out are deleted);
- through our single-link shorthands (``primary_account_id``, an activity's ``account_id``...),
  which stay on the parent as a column: for a primary link, the target of the row marked
  ``is_primary``; for an activity's link, the target of its newest row of that kind.

The shorthand column is derived from the rows after every relation write (:func:`sync`), so
filters and ``expand=primary_account`` read one column, as before relations had rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select, update

from crmhooks.errors import (
    FIELD_TYPE,
    FIELD_VALUE,
    RELATIONS_DOESNT_EXIST,
    FieldError,
    ValidationFailed,
    field_error,
)
from crmhooks.schema.registry import BUILTIN, GROUPS
from crmhooks.schema.types import EntityType, ToMany
from crmhooks.store.records import Record, existing_ids, row_to_record, scope, table_of

if TYPE_CHECKING:
    from crmhooks.changes.writer import Writer


@dataclass(frozen=True)
class Shorthand:
    """A single-link field of a parent that stands for relation rows (ours)."""

    field: str  # on the parent, e.g. "primary_account_id"
    relation: str  # the relation entity, e.g. "ContactAccountRelations"
    via: str  # the row's column naming the parent, e.g. "contact_id"
    target: str  # the row's column naming the linked record, e.g. "account_id"
    primary: bool  # True: the row marked is_primary; False: the newest row of that target
    kind: tuple[str, str] | None = None  # only rows with this (column, value): a task_id


def _primary(field: str, relation: str, via: str, target: str) -> Shorthand:
    return Shorthand(field, relation, via, target, primary=True)


def _activity(target: str) -> Shorthand:
    return Shorthand(target, "ActivityRelations", "activity_id", target, primary=False)


_LEAD_OPPTY = (
    _primary("primary_account_id", "LeadOpptyAccountRelations", "lead_oppty_id", "account_id"),
    _primary("primary_contact_id", "LeadOpptyContactRelations", "lead_oppty_id", "contact_id"),
)
_ACTIVITY = tuple(_activity(t) for t in ("account_id", "contact_id", "lead_oppty_id"))


def _document(field: str, target: str, kind: tuple[str, str] | None = None) -> Shorthand:
    return Shorthand(field, "CloudObjectRelations", "cloud_object_id", target, False, kind)


SHORTHANDS: dict[str, tuple[Shorthand, ...]] = {
    "CloudObjects": (
        _document("account_id", "account_id"),
        _document("contact_id", "contact_id"),
        _document("lead_oppty_id", "lead_oppty_id"),
        _document("task_id", "activity_id", ("activity_type", "Tasks")),
        _document("email_id", "message_id"),
        _document("appointment_id", "activity_id", ("activity_type", "Appointments")),
        _document("custom_entity_id", "custom_entity_id"),
    ),
    "Contacts": (
        _primary("primary_account_id", "ContactAccountRelations", "contact_id", "account_id"),
    ),
    "Leads": _LEAD_OPPTY,
    "Opportunities": _LEAD_OPPTY,
    "Tasks": _ACTIVITY,
    "Appointments": _ACTIVITY,
}

# relation entity -> the shorthands its rows feed (to find the parent column to derive)
_FED_BY: dict[str, list[tuple[str, Shorthand]]] = {}
for _parent, _shorthands in SHORTHANDS.items():
    for _s in _shorthands:
        _FED_BY.setdefault(_s.relation, []).append((_parent, _s))

RELATION_ENTITIES = frozenset(_FED_BY)
# Lists a parent's write may carry nested (documents are linked through the CloudObject).
_NESTED_SOURCES = RELATION_ENTITIES - {"CloudObjectRelations"}
_ACTIVITY_TYPES = ("Tasks", "Appointments")
# A row of these links its parent to exactly one record, named by one of these columns.
_ONE_OF: dict[str, tuple[str, ...]] = {
    "ActivityRelations": ("account_id", "contact_id", "lead_oppty_id", "custom_entity_id"),
    "CloudObjectRelations": (
        "account_id",
        "contact_id",
        "lead_oppty_id",
        "activity_id",
        "message_id",
        "custom_entity_id",
    ),
}


def nested_lists(et: EntityType) -> dict[str, ToMany]:
    """The to-many lists of ``et`` a write may give nested, by name."""
    return {tm.name: tm for tm in et.to_many if tm.source in _NESTED_SOURCES}


def involved(et: EntityType, body: dict[str, Any]) -> bool:
    """Whether a write of ``body`` touches relation rows (and so cannot be bulk-inserted):
    a nested list given (even empty or null), or a shorthand given a value."""
    if et.name in RELATION_ENTITIES:
        return True
    if any(name in body for name in nested_lists(et)):
        return True
    return any(body.get(s.field) is not None for s in SHORTHANDS.get(et.name, ()))


def split_nested(
    et: EntityType, body: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """The body without its nested relation lists, and those lists (checked to be lists of
    objects)."""
    lists = nested_lists(et)
    if not lists or not any(k in body for k in lists):
        return body, {}
    rest = {k: v for k, v in body.items() if k not in lists}
    nested: dict[str, list[dict[str, Any]]] = {}
    errors: list[FieldError] = []
    for name in lists:
        if name not in body:
            continue
        value = body[name]
        if value is None:
            value = []
        if not isinstance(value, list) or not all(isinstance(i, dict) for i in value):
            errors.append(field_error(name, FIELD_TYPE, "expected a list of objects"))
            continue
        nested[name] = value
    if errors:
        raise ValidationFailed(errors)
    return rest, nested


def _list_target(tm: ToMany) -> str:
    """The column a nested item of this list names its linked record by."""
    if tm.source == "ActivityRelations":
        return tm.nonnull or "lead_oppty_id"
    return "contact_id" if tm.source == "LeadOpptyContactRelations" else "account_id"


async def _live_rows(
    writer: Writer, relation: EntityType, via: str, parent_id: str
) -> list[Record]:
    t = table_of(relation)
    rows = await writer.conn.execute(
        select(t)
        .where(t.c[via] == parent_id, scope(relation, writer.ctx.space_id))
        .order_by(t.c.created, t.c.id)
    )
    return [row_to_record(relation, r) for r in rows.mappings()]


async def write_links(
    writer: Writer,
    et: EntityType,
    before: Record | None,
    after: Record,
    nested: dict[str, list[dict[str, Any]]],
) -> Record:
    """After a parent's create or update: its nested lists, then its changed shorthands; the
    parent as it is then (its shorthands derived from its rows, in its own change too)."""
    parent_id = after["id"]
    given: set[tuple[str, str]] = set()  # (relation, target column) written by nested lists
    writer.linking.add(parent_id)
    try:
        for name, items in nested.items():
            tm = nested_lists(et)[name]
            target = _list_target(tm)
            await _replace_list(writer, tm, target, parent_id, items, name, before is None)
            given.add((tm.source, target))
        for s in SHORTHANDS.get(et.name, ()):
            old = None if before is None else before.get(s.field)
            new = after.get(s.field)
            if old == new or (s.relation, s.target) in given:
                continue
            await _apply_shorthand(writer, s, parent_id, old, new)
    finally:
        writer.linking.discard(parent_id)
    values = await derived(writer, et, parent_id)
    moved = {k: v for k, v in values.items() if after.get(k) != v}
    if not moved:
        return after
    return await writer.amend(et, parent_id, after, moved)


async def derived(writer: Writer, parent: EntityType, parent_id: str) -> dict[str, Any]:
    """The parent's shorthand values, from its live relation rows."""
    rows: dict[str, list[Record]] = {}
    out: dict[str, Any] = {}
    for s in SHORTHANDS.get(parent.name, ()):
        if s.relation not in rows:
            rows[s.relation] = await _live_rows(writer, BUILTIN[s.relation], s.via, parent_id)
        out[s.field] = _derive(s, rows[s.relation])
    return out


def _derive(s: Shorthand, rows: list[Record]) -> Any:
    if s.primary:
        return next((r[s.target] for r in rows if r.get("is_primary")), None)
    return next((r[s.target] for r in reversed(_of_kind(s, rows)) if r.get(s.target)), None)


def _of_kind(s: Shorthand, rows: list[Record]) -> list[Record]:
    if s.kind is None:
        return rows
    col, value = s.kind
    return [r for r in rows if r.get(col) == value]


async def _replace_list(
    writer: Writer,
    tm: ToMany,
    target: str,
    parent_id: str,
    items: list[dict[str, Any]],
    name: str,
    creating: bool,
) -> None:
    relation = BUILTIN[tm.source]
    current = [] if creating else await _live_rows(writer, relation, tm.via, parent_id)
    current = [r for r in current if await _in_list(writer, tm, r)]
    by_id = {r["id"]: r for r in current}
    kept: set[str] = set()
    for index, item in enumerate(items):
        where = f"{name}[{index}]"
        if "id" in item:
            row_id = item["id"]
            if row_id not in by_id:
                raise ValidationFailed(
                    [field_error(f"{where}.id", RELATIONS_DOESNT_EXIST, f"no {name} row {row_id}")]
                )
            kept.add(row_id)
            changes = {k: v for k, v in item.items() if k != "id"}
            await writer.update(relation, row_id, changes)
            continue
        body = {**item, tm.via: parent_id}
        if tm.source == "ActivityRelations" and target not in item:
            raise ValidationFailed(
                [field_error(f"{where}.{target}", FIELD_VALUE, f"required in {name}")]
            )
        await writer.create(relation, body)
    for row in current:
        if row["id"] not in kept:
            await writer.delete(relation, row["id"])


async def _in_list(writer: Writer, tm: ToMany, row: Record) -> bool:
    if tm.nonnull is not None:
        return row.get(tm.nonnull) is not None
    if tm.kind is not None:
        if row.get("lead_oppty_id") is None:
            return False
        t = table_of(GROUPS["LeadOpptys"])
        kind = (
            await writer.conn.execute(select(t.c.kind).where(t.c.id == row["lead_oppty_id"]))
        ).scalar()
        return bool(kind == tm.kind)
    return True


async def _apply_shorthand(
    writer: Writer, s: Shorthand, parent_id: str, old: str | None, new: str | None
) -> None:
    relation = BUILTIN[s.relation]
    rows = _of_kind(s, await _live_rows(writer, relation, s.via, parent_id))
    if not s.primary:
        # A single link moved: the old target's row goes, the new one's comes (newest wins).
        for row in rows:
            if old is not None and row.get(s.target) == old:
                await writer.delete(relation, row["id"])
        if new is not None and not any(r.get(s.target) == new for r in rows):
            await writer.create(relation, {s.via: parent_id, s.target: new})
        return
    if new is None:
        for row in rows:
            if row.get("is_primary"):
                await writer.update(relation, row["id"], {"is_primary": False})
        return
    existing = next((r for r in rows if r.get(s.target) == new), None)
    if existing is None:
        await writer.create(relation, {s.via: parent_id, s.target: new, "is_primary": True})
    elif not existing.get("is_primary"):
        await writer.update(relation, existing["id"], {"is_primary": True})


async def prepare_relation(writer: Writer, et: EntityType, stored: dict[str, Any]) -> None:
    """A new relation row's own checks: what its activity or message is, one linked record
    where a row links one of several kinds, and no second live row linking the same two."""
    if stored.get("activity_id") is not None:
        stored["activity_type"] = await _kind_of(
            writer, "activity_id", stored["activity_id"], _ACTIVITY_TYPES
        )
    if stored.get("message_id") is not None:
        stored["message_type"] = await _kind_of(
            writer, "message_id", stored["message_id"], ("Emails",)
        )
    one_of = _ONE_OF.get(et.name)
    if one_of is not None:
        named = [c for c in one_of if stored.get(c) is not None]
        if len(named) != 1:
            raise ValidationFailed(
                [
                    field_error(
                        named[1] if named else one_of[0],
                        FIELD_VALUE,
                        f"a row of {et.name} links exactly one of {', '.join(one_of)}",
                    )
                ]
            )
    via, target = _ends(et, stored)
    t = table_of(et)
    taken = await writer.conn.execute(
        select(t.c.id).where(
            t.c[via] == stored[via],
            t.c[target] == stored[target],
            scope(et, writer.ctx.space_id),
        )
    )
    if taken.first() is not None:
        raise ValidationFailed(
            [
                field_error(
                    target, FIELD_VALUE, f"this relation exists already ({via} {stored[via]})"
                )
            ]
        )


def _ends(et: EntityType, stored: dict[str, Any]) -> tuple[str, str]:
    """The two columns of a relation row: the parent's and the linked record's."""
    _, s = _FED_BY[et.name][0]
    one_of = _ONE_OF.get(et.name)
    if one_of is None:
        return s.via, s.target
    return s.via, next(c for c in one_of if stored.get(c) is not None)


async def _kind_of(writer: Writer, field: str, record_id: str, kinds: tuple[str, ...]) -> str:
    """Which of ``kinds`` the live record ``record_id`` is, or a 422 naming ``field``."""
    for name in kinds:
        if await existing_ids(writer.conn, BUILTIN[name], writer.ctx.space_id, [record_id]):
            return name
    raise ValidationFailed(
        [
            field_error(
                field,
                RELATIONS_DOESNT_EXIST,
                f"no {' or '.join(kinds)} record with id {record_id} exists",
            )
        ]
    )


async def after_relation_write(writer: Writer, et: EntityType, row: Record) -> None:
    """After a relation row was created, changed, deleted or restored: one primary row per
    parent, and (unless the parent's own write is doing it) the parent's shorthand columns
    derived again. That column update raises no event of the parent's: the relation's own
    event says what changed."""
    fed = _FED_BY.get(et.name)
    if not fed:
        return
    first = fed[0][1]
    parent_id = row.get(first.via)
    if parent_id is None:
        return
    if first.primary and row.get("is_primary") and not row.get("is_deleted"):
        for other in await _live_rows(writer, et, first.via, parent_id):
            if other["id"] != row["id"] and other.get("is_primary"):
                await writer.update(et, other["id"], {"is_primary": False})
    if parent_id in writer.linking:
        return
    parent_name = row.get("activity_type") if et.name == "ActivityRelations" else fed[0][0]
    if parent_name is None:
        return
    parent = BUILTIN[parent_name]
    values = await derived(writer, parent, parent_id)
    t = table_of(parent)
    for name, value in values.items():
        col = t.c[name]
        differs = col.is_not(None) if value is None else or_(col.is_(None), col != value)
        await writer.conn.execute(
            update(t)
            .where(t.c.id == parent_id, t.c.space_id == writer.ctx.space_id, differs)
            .values({name: value})
        )
