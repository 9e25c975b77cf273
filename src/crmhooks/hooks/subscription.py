"""A webhook record checked and compiled into what matching and rendering need.

The same function checks a registration (its errors become a 422 naming the value) and builds
the in-memory :class:`Subscription` the dispatcher matches events against, so what was accepted
is exactly what runs.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from crmhooks.errors import (
    FIELD_TYPE,
    FIELD_UNKNOWN,
    FIELD_VALUE,
    FieldError,
    ParameterInvalid,
    ValidationFailed,
    field_error,
)
from crmhooks.hooks.bounds import (
    SEARCH_OPS,
    body_error,
    element_records,
    options_bytes,
    search_values,
)
from crmhooks.hooks.names import BY_SINGULAR, EVENT_NAMES
from crmhooks.limits import Limits, current
from crmhooks.netguard import shown_url
from crmhooks.query.params import Condition, conditions
from crmhooks.query.shape import Shape, check_paths, parse_shape
from crmhooks.schema.custom import is_api_name
from crmhooks.schema.registry import BUILTIN
from crmhooks.schema.types import EntityType
from crmhooks.schema.values import is_uuid, parse_datetime

SCHEMES = ("pipeliner", "standard-webhooks")
OPTION_KEYS = {
    "custom_entity_api_name",
    "entity",
    "related_entity",
    "skip_keys",
    "chunk_size",
    "chunk_delay",
}
ENTITY_KEYS = {"expand", "load-only", "load_only", "filter", "filter-op", "on-field-change"}
SHAPE_KEYS = {"expand", "load-only", "load_only"}
# The records an event's ``related_entity`` can be (docs/webhooks.md#the-body).
RELATED_TYPES = ("CloudObjects", "TaskComments", "AppointmentComments", "Opportunities")


@dataclass(frozen=True)
class EntityOptions:
    conditions: tuple[Condition, ...] = ()
    on_field_change: frozenset[str] = frozenset()
    shape: Shape = field(default_factory=Shape)


@dataclass(frozen=True)
class Subscription:
    """A webhook as the dispatcher uses it."""

    id: str
    space_id: str
    url: str
    events: frozenset[str]
    insecure_ssl: bool
    is_active: bool
    created: datetime
    client_id: str | None
    signature: str | None
    scheme: str
    previous_signature: str | None
    previous_until: datetime | None
    chunk_size: int
    chunk_delay: float
    skip_keys: frozenset[str]
    custom_entities: frozenset[str] | None
    entity: Mapping[str, EntityOptions]
    related: Mapping[str, Shape]  # related entity type name -> shape
    webhook: dict[str, Any]  # the ``webhook`` object of each payload element


class _Errors:
    def __init__(self) -> None:
        self.items: list[FieldError] = []

    def add(self, where: str, kind: tuple[str, int], message: str) -> None:
        self.items.append(field_error(where, kind, message))


def _str_list(value: Any, where: str, errors: _Errors) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        errors.add(where, FIELD_TYPE, "expected a list of strings")
        return []
    return list(value)


def _shape(
    et: EntityType, raw: Mapping[str, Any], where: str, errors: _Errors, limits: Limits | None
) -> Shape:
    expand = _str_list(raw.get("expand", []), f"{where}.expand", errors)
    load_key = "load-only" if "load-only" in raw else "load_only"
    load = raw.get(load_key)
    loads = None if load is None else _str_list(load, f"{where}.{load_key}", errors)
    try:
        return parse_shape(et, expand, loads, f"{where}.expand", f"{where}.{load_key}", limits)
    except ParameterInvalid as e:
        errors.add(where, FIELD_VALUE, e.message)
        return Shape()


def _entity_options(
    et: EntityType, raw: Any, where: str, errors: _Errors, limits: Limits | None
) -> EntityOptions:
    if not isinstance(raw, dict):
        errors.add(where, FIELD_TYPE, "expected an object")
        return EntityOptions()
    for key in raw:
        if key not in ENTITY_KEYS:
            errors.add(f"{where}.{key}", FIELD_UNKNOWN, f"unknown option {key!r}")
    shape = _shape(et, raw, where, errors, limits)
    filters, ops = raw.get("filter", {}), raw.get("filter-op", {})
    conds: tuple[Condition, ...] = ()
    if not isinstance(filters, dict) or not isinstance(ops, dict):
        errors.add(f"{where}.filter", FIELD_TYPE, "filter and filter-op are objects")
    else:
        try:
            conds = conditions(et, filters, {k: str(v) for k, v in ops.items()}, limits=limits)
            # All must hold, so the cheap ones go first: a scan of a long text runs only when
            # the rest of the filter passed.
            conds = tuple(sorted(conds, key=lambda c: c.op in SEARCH_OPS))
        except ParameterInvalid as e:
            errors.add(f"{where}.filter", FIELD_VALUE, e.message)
    changed = _str_list(raw.get("on-field-change", []), f"{where}.on-field-change", errors)
    if limits is not None and len(changed) > limits.max_shape_entries:
        errors.add(
            f"{where}.on-field-change",
            FIELD_VALUE,
            f"{len(changed)} entries; the limit is {limits.max_shape_entries} (max_shape_entries)",
        )
        changed = []
    for name in changed:
        if et.field(name) is None:
            errors.add(f"{where}.on-field-change", FIELD_VALUE, f"{et.name} has no field {name!r}")
    return EntityOptions(conds, frozenset(changed), shape)


def _related(raw: Any, errors: _Errors, limits: Limits | None) -> dict[str, Shape]:
    if raw is None:
        return {}
    where = "options.related_entity"
    if not isinstance(raw, dict):
        errors.add(where, FIELD_TYPE, "expected an object")
        return {}
    for key in raw:
        if key not in SHAPE_KEYS:
            errors.add(f"{where}.{key}", FIELD_UNKNOWN, f"unknown option {key!r}")
    out: dict[str, Shape] = {}
    # A path needs to fit one of the related types; each type keeps the paths that fit it.
    expand = _str_list(raw.get("expand", []), f"{where}.expand", errors)
    load_key = "load-only" if "load-only" in raw else "load_only"
    loads = raw.get(load_key)
    load_list = None if loads is None else _str_list(loads, f"{where}.{load_key}", errors)
    if limits is not None:
        try:  # the limits alone: each related type checks the paths that fit it below
            check_paths(expand, f"{where}.expand", limits, expand=True)
            check_paths(load_list or [], f"{where}.{load_key}", limits, expand=False)
        except ParameterInvalid as e:
            errors.add(where, FIELD_VALUE, e.message)
            return {}
    used: set[str] = set()
    for name in RELATED_TYPES:
        et = BUILTIN[name]
        fit = [p for p in expand if _fits(et, [p], None)]
        fit_load = None
        if load_list is not None:
            fit_load = [p for p in load_list if _fits(et, fit, [p])]
        out[name] = parse_shape(et, fit, fit_load)
        used.update(fit, fit_load or [])
    for p in [*expand, *(load_list or [])]:
        if p not in used:
            errors.add(where, FIELD_VALUE, f"{p!r} fits none of {', '.join(RELATED_TYPES)}")
    return out


def _fits(et: EntityType, expand: list[str], load: list[str] | None) -> bool:
    try:
        parse_shape(et, expand, load)
    except ParameterInvalid:
        return False
    return True


def _events(value: Any, errors: _Errors) -> frozenset[str]:
    names = _str_list(value, "events", errors)
    if isinstance(value, list) and not value:
        errors.add("events", FIELD_VALUE, "at least one event is needed")
    for name in names:
        if name not in EVENT_NAMES:
            errors.add("events", FIELD_VALUE, f"unknown event {name!r}")
    return frozenset(names)


def _number(raw: Any, where: str, low: float, high: float | None, errors: _Errors) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        errors.add(where, FIELD_TYPE, f"expected a number, got {raw!r}")
        return low
    if raw < low or (high is not None and raw > high):
        bounds = f"from {low:g} to {high:g}" if high is not None else f"at least {low:g}"
        errors.add(where, FIELD_VALUE, f"{raw!r} is not {bounds}")
        return low
    return float(raw)


def check_signature(scheme: str, signature: str | None, errors: _Errors) -> None:
    if scheme not in SCHEMES:
        errors.add("signature_scheme", FIELD_VALUE, f"{scheme!r} is not one of {SCHEMES}")
        return
    if signature is None:
        return
    if scheme == "pipeliner" and not is_uuid(signature):
        errors.add("signature", FIELD_VALUE, "for the pipeliner scheme the secret is a UUID")
    if scheme == "standard-webhooks":
        try:
            key = base64.b64decode(signature.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if not signature.startswith("whsec_") or not 24 <= len(key) <= 64:
            errors.add("signature", FIELD_VALUE, "expected whsec_ and 24 to 64 bytes in base64")


def compile_webhook(
    record: Mapping[str, Any],
    custom_types: Mapping[str, EntityType],
    limits: Limits | None = None,
) -> Subscription:
    """Check a webhook record and compile it; ValidationFailed names every bad value.

    With ``limits`` (a webhook being written) its costs are checked too; without (a stored
    webhook being loaded) they are not, and the process's limits cap its expanded lists.
    """
    errors = _Errors()
    events = _events(record.get("events"), errors)
    options = record.get("options") or {}
    entity_opts: dict[str, EntityOptions] = {}
    skip_keys: list[str] = []
    custom: frozenset[str] | None = None
    chunk_size, chunk_delay = 100.0, 0.0
    if not isinstance(options, dict):
        errors.add("options", FIELD_TYPE, "expected an object")
        options = {}
    if limits is not None and options_bytes(options) > limits.max_options_bytes:
        errors.add(
            "options",
            FIELD_VALUE,
            f"{options_bytes(options)} bytes of JSON; the limit is {limits.max_options_bytes} "
            "(max_options_bytes)",
        )
        raise ValidationFailed(errors.items)  # checking more would cost what the limit saves
    for key in options:
        if key not in OPTION_KEYS:
            errors.add(f"options.{key}", FIELD_UNKNOWN, f"unknown option {key!r}")
    if "custom_entity_api_name" in options:
        names = _str_list(
            options["custom_entity_api_name"], "options.custom_entity_api_name", errors
        )
        for name in names:
            if not is_api_name(name):
                errors.add("options.custom_entity_api_name", FIELD_VALUE, f"{name!r} is not CE_...")
        custom = frozenset(names)
    entity = options.get("entity", {})
    if not isinstance(entity, dict):
        errors.add("options.entity", FIELD_TYPE, "expected an object keyed by entity name")
        entity = {}
    types: dict[str, EntityType] = {}
    for key, raw in entity.items():
        et = BY_SINGULAR.get(key) or custom_types.get(key)
        if et is None:
            errors.add(f"options.entity.{key}", FIELD_VALUE, f"unknown entity {key!r}")
            continue
        types[key] = et
        entity_opts[key] = _entity_options(et, raw, f"options.entity.{key}", errors, limits)
    related = _related(options.get("related_entity"), errors, limits)
    if "skip_keys" in options:
        skip_keys = _str_list(options["skip_keys"], "options.skip_keys", errors)
    if "chunk_size" in options:
        raw_size = options["chunk_size"]
        if isinstance(raw_size, float) and not raw_size.is_integer():
            errors.add("options.chunk_size", FIELD_VALUE, f"{raw_size!r} is not a whole number")
        chunk_size = _number(raw_size, "options.chunk_size", 1, 100, errors)
    if "chunk_delay" in options:
        chunk_delay = _number(options["chunk_delay"], "options.chunk_delay", 0, 86_400, errors)
    scheme = str(record.get("signature_scheme") or "pipeliner")
    check_signature(scheme, record.get("signature"), errors)
    cap = (limits or current()).webhook_list_records
    entity_opts = {
        k: replace(o, shape=replace(o.shape, list_cap=cap)) for k, o in entity_opts.items()
    }
    related = {k: replace(s, list_cap=cap) for k, s in related.items()}
    if limits is not None and not errors.items:
        _check_costs(types, entity_opts, related, int(chunk_size), limits, errors)
    if errors.items:
        raise ValidationFailed(errors.items)
    until = record.get("previous_signature_until")
    return Subscription(
        id=str(record.get("id")),
        space_id=str(record.get("space_id", "")),
        url=str(record["url"]),
        events=events,
        insecure_ssl=bool(record.get("insecure_ssl")),
        is_active=bool(record.get("is_active", True)),
        created=parse_datetime(record["created"]) if record.get("created") else datetime.min,
        client_id=record.get("client_id"),
        signature=record.get("signature"),
        scheme=scheme,
        previous_signature=record.get("previous_signature"),
        previous_until=parse_datetime(until) if until else None,
        chunk_size=int(chunk_size),
        chunk_delay=chunk_delay,
        skip_keys=frozenset(skip_keys),
        custom_entities=custom,
        entity=entity_opts,
        related=related,
        webhook=payload_webhook(record, options),
    )


def _check_costs(
    types: Mapping[str, EntityType],
    entity: Mapping[str, EntityOptions],
    related: Mapping[str, Shape],
    chunk_size: int,
    limits: Limits,
    errors: _Errors,
) -> None:
    searches = sum(search_values(o.conditions) for o in entity.values())
    if searches > limits.max_webhook_search_values:
        errors.add(
            "options.entity",
            FIELD_VALUE,
            f"{searches} contains / icontains values over all filters; the limit is "
            f"{limits.max_webhook_search_values} (max_webhook_search_values)",
        )
    shaped = {k: (types[k], o.shape) for k, o in entity.items()}
    per_element = element_records(shaped, related, limits.webhook_list_records)
    problem = body_error(per_element, chunk_size, limits)
    if problem is not None:
        errors.add("options.entity", FIELD_VALUE, problem)


def payload_webhook(record: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """The ``webhook`` object of a request's body (docs/webhooks.md#the-body)."""
    return {
        "id": record.get("id"),
        # A password stored before registration refused credentials is not sent out.
        "url": shown_url(str(record["url"])) if record.get("url") else record.get("url"),
        "events": record.get("events"),
        "insecure_ssl": bool(record.get("insecure_ssl")),
        "options": dict(options),
        "is_deleted": bool(record.get("is_deleted", False)),
        "created": record.get("created"),
        "modified": record.get("modified"),
        "application_id": record.get("application_id"),
        "client_id": record.get("client_id"),
    }
