"""Checking a write's body against its entity type: pure, no database.

How much is checked follows Pipeliner's ``validation-level`` bit mask (:class:`Validation`).
"""

from __future__ import annotations

from datetime import tzinfo
from enum import IntFlag
from typing import Any

from crmhooks.errors import (
    FIELD_READ_ONLY,
    FIELD_REQUIRED,
    FIELD_TYPE,
    FIELD_UNKNOWN,
    FIELD_VALUE,
    FieldError,
    ValidationFailed,
    field_error,
)
from crmhooks.schema.types import EntityType, Field, Kind
from crmhooks.schema.values import ValueRejected, to_stored, to_wire

Stored = dict[str, Any]


class Validation(IntFlag):
    """Pipeliner's ``validation-level`` bits; 0 (none set) checks every field of the write."""

    CHANGED_ONLY = 2  # only the fields the write changes
    SYSTEM_ONLY = 4  # only what the server relies on: no required-field rules for plain fields
    OVERRIDE_READ_ONLY = 8  # a write may set the read-only fields in OVERRIDABLE
    DELETED_RELATIONS = 16  # a relation may name a soft-deleted record


FULL = Validation(0)

# Read-only fields a write may set with Validation.OVERRIDE_READ_ONLY: facts of a record's
# history that an import from another system must be able to carry over. Never: ``id``,
# ``modified`` (incremental sync depends on it moving on each change), ``revision``,
# ``is_deleted`` (its own routes), computed values (``amount``), and anything of the entity
# types the server itself relies on (ENTITIES_CHECKED_WHOLE).
OVERRIDABLE = frozenset({"created", "won_date", "lost_date", "qualify_date", "was_qualified"})
# Never relaxed by SYSTEM_ONLY or OVERRIDE_READ_ONLY: delivery and the catalog rely on
# every field of a webhook and of a custom entity definition.
ENTITIES_CHECKED_WHOLE = frozenset({"Webhooks", "CustomEntities"})
NOT_NULL_OVERRIDES = frozenset({"created"})


def _check_object(
    f: Field, value: Any, errors: list[FieldError], zone: tzinfo | None
) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        errors.append(field_error(f.name, FIELD_TYPE, "expected an object"))
        return None
    subs = {s.name: s for s in f.subfields}
    out: dict[str, Any] = {name: None for name in subs}
    for key, sub_value in value.items():
        sub = subs.get(key)
        if sub is None:
            allowed = ", ".join(subs)
            errors.append(
                field_error(f"{f.name}.{key}", FIELD_UNKNOWN, f"unknown; allowed: {allowed}")
            )
            continue
        try:
            out[key] = to_stored(sub, sub_value, zone)
        except ValueRejected as e:
            errors.append(field_error(f"{f.name}.{key}", FIELD_TYPE, str(e)))
    return out


def _unknown_message(entity: EntityType, key: str) -> str:
    if entity.field(f"{key}_id") is not None:
        return f"unknown field; write the relation as {key}_id"
    return f"{entity.name} has no field {key!r}"


def overridable(entity: EntityType, f: Field, level: Validation) -> bool:
    """Whether this write may set read-only field ``f`` (validation-level bit 8)."""
    return (
        Validation.OVERRIDE_READ_ONLY in level
        and f.name in OVERRIDABLE
        and not f.hidden
        and entity.name not in ENTITIES_CHECKED_WHOLE
    )


def _same_as_stored(f: Field, value: Any, before: dict[str, Any], zone: tzinfo | None) -> bool:
    """Whether a written value is what the record holds already (so it changes nothing)."""
    if f.kind is Kind.JSON:
        return bool(value == before.get(f.name))
    try:
        if f.kind is Kind.OBJECT:
            if not isinstance(value, dict) or set(value) != {s.name for s in f.subfields}:
                return False
            wire: Any = {s.name: to_wire(s, to_stored(s, value[s.name], zone)) for s in f.subfields}
        else:
            wire = to_wire(f, to_stored(f, value, zone))
    except ValueRejected:
        return False
    return bool(wire == before.get(f.name))


def unchanged_fields(
    entity: EntityType, body: dict[str, Any], before: dict[str, Any], zone: tzinfo | None = None
) -> set[str]:
    """The fields of a patch whose value is the stored one (validation-level bit 2 skips them)."""
    out = set()
    for key, value in body.items():
        f = entity.field(key)
        if f is not None and not f.hidden and _same_as_stored(f, value, before, zone):
            out.add(key)
    return out


def _required_rules_apply(entity: EntityType, f: Field, level: Validation) -> bool:
    """SYSTEM_ONLY leaves a plain field's required rule out, never a relation's (the server
    links records through them) nor those of the entities it relies on."""
    if Validation.SYSTEM_ONLY not in level or entity.name in ENTITIES_CHECKED_WHOLE:
        return True
    return f.is_relation


def _nul_in(value: Any, path: str) -> str | None:
    """The path of the first string (value or key) in a JSON value that holds U+0000."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for k, v in value.items():
            if "\x00" in str(k):
                return path
            found = _nul_in(v, f"{path}.{k}")
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _nul_in(v, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def check_write(
    entity: EntityType,
    body: dict[str, Any],
    *,
    before: dict[str, Any] | None,
    level: Validation = FULL,
    zone: tzinfo | None = None,
) -> Stored:
    """The stored values of a create (``before`` is None) or a patch, or ValidationFailed.

    Checks unknown and read-only fields, types, nulls and required fields, as far as ``level``
    asks; relations to existing records are checked later, against the database. Types are
    checked at every level: a value is stored in its field's type or not at all. A date-time
    without an offset is read in ``zone`` (the request's ``Timezone``; None: UTC).
    """
    creating = before is None
    skip: set[str] = set()
    if before is not None and Validation.CHANGED_ONLY in level:
        skip = unchanged_fields(entity, body, before, zone)
    errors: list[FieldError] = []
    out: Stored = {}
    for key, value in body.items():
        if key in skip:
            continue
        f = entity.field(key)
        if f is None:
            errors.append(field_error(key, FIELD_UNKNOWN, _unknown_message(entity, key)))
            continue
        if f.read_only and not overridable(entity, f, level):
            errors.append(field_error(key, FIELD_READ_ONLY, "read-only; set by the server"))
            continue
        if f.fixed_after_create and not creating:
            assert before is not None
            if value != before.get(key):
                errors.append(field_error(key, FIELD_READ_ONLY, "cannot change after create"))
            continue
        if value is None and (
            (f.required and _required_rules_apply(entity, f, level)) or f.name in NOT_NULL_OVERRIDES
        ):
            errors.append(field_error(key, FIELD_REQUIRED, "required; may not be null"))
            continue
        if f.kind is Kind.OBJECT:
            out[key] = _check_object(f, value, errors, zone)
        elif f.kind is Kind.JSON:
            where = _nul_in(value, key)
            if where is not None:
                # PostgreSQL's JSON cannot hold U+0000; refused on every engine alike.
                errors.append(field_error(key, FIELD_VALUE, f"{where} contains a NUL character"))
                continue
            out[key] = value
        else:
            try:
                out[key] = to_stored(f, value, zone)
            except ValueRejected as e:
                errors.append(field_error(key, FIELD_TYPE, str(e)))
    if creating:
        for f in entity.fields:
            if f.required and f.name not in body and _required_rules_apply(entity, f, level):
                errors.append(field_error(f.name, FIELD_REQUIRED, "required"))
    errors += _one_of_errors(entity, before, out, level)
    if errors:
        raise ValidationFailed(errors)
    return out


def _one_of_errors(
    entity: EntityType, before: dict[str, Any] | None, out: Stored, level: Validation
) -> list[FieldError]:
    """At least one field of each group must have a value; CHANGED_ONLY checks a group only
    when the write changes one of its fields, SYSTEM_ONLY (plain fields' rules) never."""
    if Validation.SYSTEM_ONLY in level and entity.name not in ENTITIES_CHECKED_WHOLE:
        return []
    errors = []
    for group in entity.one_of_required:
        untouched = not any(name in out for name in group)
        if before is not None and Validation.CHANGED_ONLY in level and untouched:
            continue
        merged = {**(before or {}), **out}
        if not any(merged.get(name) not in (None, "") for name in group):
            errors.append(
                field_error(group[0], FIELD_REQUIRED, f"one of {', '.join(group)} is required")
            )
    return errors
