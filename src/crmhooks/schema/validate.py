"""Checking a write's body against its entity type: pure, no database."""

from __future__ import annotations

from typing import Any

from crmhooks.errors import (
    FIELD_READ_ONLY,
    FIELD_REQUIRED,
    FIELD_TYPE,
    FIELD_UNKNOWN,
    FieldError,
    ValidationFailed,
    field_error,
)
from crmhooks.schema.types import EntityType, Field, Kind
from crmhooks.schema.values import ValueRejected, to_stored

Stored = dict[str, Any]


def _check_object(f: Field, value: Any, errors: list[FieldError]) -> dict[str, Any] | None:
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
            out[key] = to_stored(sub, sub_value)
        except ValueRejected as e:
            errors.append(field_error(f"{f.name}.{key}", FIELD_TYPE, str(e)))
    return out


def _unknown_message(entity: EntityType, key: str) -> str:
    if entity.field(f"{key}_id") is not None:
        return f"unknown field; write the relation as {key}_id"
    return f"{entity.name} has no field {key!r}"


def check_write(
    entity: EntityType, body: dict[str, Any], *, before: dict[str, Any] | None
) -> Stored:
    """The stored values of a create (``before`` is None) or a patch, or ValidationFailed.

    Checks unknown and read-only fields, types, nulls and required fields; relations to
    existing records are checked later, against the database.
    """
    creating = before is None
    errors: list[FieldError] = []
    out: Stored = {}
    for key, value in body.items():
        f = entity.field(key)
        if f is None:
            errors.append(field_error(key, FIELD_UNKNOWN, _unknown_message(entity, key)))
            continue
        if f.read_only:
            errors.append(field_error(key, FIELD_READ_ONLY, "read-only; set by the server"))
            continue
        if f.fixed_after_create and not creating:
            assert before is not None
            if value != before.get(key):
                errors.append(field_error(key, FIELD_READ_ONLY, "cannot change after create"))
            continue
        if value is None and f.required:
            errors.append(field_error(key, FIELD_REQUIRED, "required; may not be null"))
            continue
        if f.kind is Kind.OBJECT:
            out[key] = _check_object(f, value, errors)
        elif f.kind is Kind.JSON:
            out[key] = value
        else:
            try:
                out[key] = to_stored(f, value)
            except ValueRejected as e:
                errors.append(field_error(key, FIELD_TYPE, str(e)))
    if creating:
        for f in entity.fields:
            if f.required and f.name not in body:
                errors.append(field_error(f.name, FIELD_REQUIRED, "required"))
    for group in entity.one_of_required:
        merged = {**(before or {}), **out}
        if not any(merged.get(name) not in (None, "") for name in group):
            errors.append(
                field_error(group[0], FIELD_REQUIRED, f"one of {', '.join(group)} is required")
            )
    if errors:
        raise ValidationFailed(errors)
    return out
