"""Custom entities: checking a definition, and the entity type its records follow."""

from __future__ import annotations

import re
from typing import Any

from crmhooks.errors import FIELD_TYPE, FIELD_VALUE, FieldError, field_error
from crmhooks.schema.registry import (
    CUSTOM_DISCRIMINATOR,
    CUSTOM_RECORD_TABLE,
    OWNER,
    STANDARD_EVENTS,
    text,
)
from crmhooks.schema.types import SYSTEM_FIELDS, EntityType, Field, Kind, ToMany, with_system

# Both also serve as JSON-schema patterns (api.openapi), so they keep ^...$; match them with
# fullmatch: re's $ also matches before a final newline ("CE_Bid\n").
API_NAME_RE = re.compile(r"^CE_[A-Za-z0-9_]{1,60}$")
FIELD_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
FIELD_KINDS = {
    "text": Kind.TEXT,
    "integer": Kind.INTEGER,
    "float": Kind.FLOAT,
    "boolean": Kind.BOOLEAN,
    "date": Kind.DATE,
    "datetime": Kind.DATETIME,
    "uuid": Kind.UUID,
}
MAX_FIELDS = 200
_BASE_FIELDS = (text("name", required=True), OWNER)
RESERVED = {f.name for f in SYSTEM_FIELDS} | {f.name for f in _BASE_FIELDS} | {"owner"}


def is_api_name(value: str) -> bool:
    return API_NAME_RE.fullmatch(value) is not None


def check_api_name(value: str) -> list[FieldError]:
    if is_api_name(value):
        return []
    return [
        field_error(
            "api_name",
            FIELD_VALUE,
            f"{value!r} is not a custom entity api name: it must start with CE_ and hold only "
            "letters, digits and _",
        )
    ]


def check_fields(value: Any) -> tuple[list[dict[str, str]], list[FieldError]]:
    """Check a definition's ``fields`` list; return it normalised, or the errors."""
    if not isinstance(value, list | tuple):
        return [], [field_error("fields", FIELD_TYPE, "expected a list of {api_name, type}")]
    errors: list[FieldError] = []
    seen: set[str] = set()
    out: list[dict[str, str]] = []
    if len(value) > MAX_FIELDS:
        errors.append(field_error("fields", FIELD_VALUE, f"at most {MAX_FIELDS} fields"))
    for i, item in enumerate(value):
        where = f"fields[{i}]"
        if not isinstance(item, dict) or set(item) != {"api_name", "type"}:
            errors.append(field_error(where, FIELD_TYPE, 'expected {"api_name": ..., "type": ...}'))
            continue
        name, kind = item["api_name"], item["type"]
        if not isinstance(name, str) or not FIELD_NAME_RE.fullmatch(name):
            errors.append(field_error(f"{where}.api_name", FIELD_VALUE, f"{name!r} is not a name"))
        elif name in RESERVED:
            errors.append(field_error(f"{where}.api_name", FIELD_VALUE, f"{name!r} is reserved"))
        elif name in seen:
            errors.append(field_error(f"{where}.api_name", FIELD_VALUE, f"{name!r} twice"))
        if kind not in FIELD_KINDS:
            errors.append(
                field_error(
                    f"{where}.type",
                    FIELD_VALUE,
                    f"{kind!r} is not one of {', '.join(FIELD_KINDS)}",
                )
            )
        if isinstance(name, str):
            seen.add(name)
        out.append({"api_name": str(name), "type": str(kind)})
    return out, errors


def record_type(api_name: str, fields: list[dict[str, str]]) -> EntityType:
    """The entity type of a custom entity's records, from its definition."""
    declared = tuple(
        Field(f["api_name"], FIELD_KINDS[f["type"]], column=None, max_length=10_000) for f in fields
    )
    return EntityType(
        name=api_name,
        singular=api_name,
        table=CUSTOM_RECORD_TABLE,
        fields=with_system(*_BASE_FIELDS, *declared),
        events=STANDARD_EVENTS,
        event_prefix="CustomEntity",
        to_many=(ToMany("documents", "CloudObjectRelations", "custom_entity_id"),),
        discriminator=(CUSTOM_DISCRIMINATOR, api_name),
        custom=True,
    )
