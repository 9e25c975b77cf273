"""List parameters parsed once into plain values: filters, order, page, include-deleted.

The parsed form is what both back ends read: ``query.sql`` compiles it for the list API and
``query.memory`` evaluates it against one record (webhook filters). Every mistake is a
``ParameterInvalid`` that names the parameter and the value at fault.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from crmhooks.errors import ParameterInvalid
from crmhooks.schema.types import EntityType, Field, Kind
from crmhooks.schema.values import ValueRejected, enum_value, parse_date, parse_datetime, parse_uuid

DEFAULT_PAGE = 30
MAX_PAGE = 100


class Op(StrEnum):
    EQ = "eq"


@dataclass(frozen=True)
class Condition:
    """``path`` compared with ``op`` to any of ``values`` (already typed for the field)."""

    path: str
    field: Field
    column: str | None  # None: kept in the record's JSON data
    op: Op
    values: tuple[Any, ...]


@dataclass(frozen=True)
class OrderKey:
    path: str
    field: Field
    column: str
    desc: bool


@dataclass(frozen=True)
class Cursor:
    values: tuple[Any, ...]  # one per order key, typed; the last key is always ``id``


@dataclass(frozen=True)
class ListQuery:
    conditions: tuple[Condition, ...]
    order: tuple[OrderKey, ...]
    limit: int
    backward: bool  # ``last`` / ``before``: read the page ending at the cursor
    cursor: Cursor | None
    include_deleted: bool


_FILTER_RE = re.compile(r"^(filter|filter-op)\[([^\]]*)\]$")
_LIST_PARAMS = {"first", "last", "after", "before", "order-by", "include-deleted"}
# Parameters of issue-3 features are known here so they are rejected by name, not as typos.
_KNOWN_ELSEWHERE = {"expand", "load-only", "load_only"}


def resolve(et: EntityType, path: str, where: str) -> tuple[Field, str | None]:
    """The field a (possibly dotted) path names and its column; ParameterInvalid otherwise."""
    head, _, sub = path.partition(".")
    f = et.field(head)
    if f is None:
        raise ParameterInvalid(f"{where}: {et.name} has no field {head!r}")
    if sub:
        if f.kind is not Kind.OBJECT:
            raise ParameterInvalid(f"{where}: field {head!r} has no sub-field {sub!r}")
        match = next((s for s in f.subfields if s.name == sub), None)
        if match is None:
            raise ParameterInvalid(f"{where}: {head!r} has no sub-field {sub!r}")
        return match, f"{f.column_name}__{sub}"
    if f.kind in (Kind.OBJECT, Kind.JSON):
        raise ParameterInvalid(f"{where}: {path!r} is an object; name one of its sub-fields")
    return f, f.column_name


def typed_value(f: Field, raw: Any, where: str) -> Any:
    """A filter or cursor value as the field's stored type."""
    try:
        if f.kind is Kind.ENUM:
            return enum_value(f, int(raw) if isinstance(raw, str) and raw.isdigit() else raw)
        if not isinstance(raw, str):
            return _typed_json(f, raw)
        text = raw
        if f.kind is Kind.TEXT:
            return text
        if f.kind is Kind.INTEGER:
            return int(text)
        if f.kind is Kind.FLOAT:
            return float(text)
        if f.kind is Kind.BOOLEAN:
            if text.lower() in ("true", "1"):
                return True
            if text.lower() in ("false", "0"):
                return False
            raise ValueRejected("expected true or false")
        if f.kind is Kind.DATE:
            return parse_date(text[:10]) if len(text) > 10 else parse_date(text)
        if f.kind is Kind.DATETIME:
            return parse_datetime(text)
        if f.kind is Kind.UUID:
            return parse_uuid(text)
    except (ValueError, ValueRejected) as e:
        raise ParameterInvalid(f"{where}: {raw!r} does not fit field {f.name!r}: {e}") from None
    raise ParameterInvalid(f"{where}: field {f.name!r} cannot be compared")


def _typed_json(f: Field, raw: Any) -> Any:
    if f.kind is Kind.BOOLEAN and isinstance(raw, bool):
        return raw
    if f.kind in (Kind.INTEGER, Kind.FLOAT) and isinstance(raw, int | float):
        return raw
    raise ValueRejected(f"{raw!r} is not a {f.kind.value}")


def _page_size(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise ParameterInvalid(f"{name}: {raw!r} is not a page size from 1 to {MAX_PAGE}")
    return int(raw)


def parse_order(et: EntityType, raw: str | None) -> tuple[OrderKey, ...]:
    keys: list[OrderKey] = []
    for part in (raw or "created").split(","):
        name = part.strip()
        desc = name.startswith("-")
        name = name.lstrip("-")
        if not name:
            raise ParameterInvalid(f"order-by: empty key in {raw!r}")
        f, column = resolve(et, name, "order-by")
        if column is None:
            raise ParameterInvalid(f"order-by: {name!r} cannot be sorted on")
        if name != "id":
            keys.append(OrderKey(name, f, column, desc))
    last_desc = keys[-1].desc if keys else False
    keys.append(OrderKey("id", et.by_name["id"], "id", last_desc))
    return tuple(keys)


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def decode_cursor(raw: str, order: tuple[OrderKey, ...], name: str) -> Cursor:
    try:
        values = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise ParameterInvalid(f"{name}: {raw!r} is not a cursor") from None
    if not isinstance(values, list) or len(values) != len(order):
        raise ParameterInvalid(f"{name}: cursor does not fit order-by")
    typed = tuple(
        None if v is None else typed_value(k.field, v, name)
        for k, v in zip(order, values, strict=True)
    )
    return Cursor(typed)


def parse_conditions(et: EntityType, params: Mapping[str, str]) -> tuple[Condition, ...]:
    values: dict[str, str] = {}
    ops: dict[str, str] = {}
    for key, raw in params.items():
        m = _FILTER_RE.match(key)
        if m:
            (values if m.group(1) == "filter" else ops)[m.group(2)] = raw
    for name in ops:
        if name not in values:
            raise ParameterInvalid(f"filter-op[{name}]: no filter[{name}] to apply it to")
    out: list[Condition] = []
    for path, raw in values.items():
        where = f"filter[{path}]"
        f, column = resolve(et, path, where)
        op_name = ops.get(path, "eq")
        try:
            op = Op(op_name)
        except ValueError:
            raise ParameterInvalid(f"filter-op[{path}]: unknown operator {op_name!r}") from None
        typed = tuple(typed_value(f, part, where) for part in raw.split(","))
        out.append(Condition(path, f, column, op, typed))
    return tuple(out)


def parse_list(et: EntityType, params: Mapping[str, str]) -> ListQuery:
    """Parse a list request's query parameters; unknown parameters are refused."""
    for key in params:
        if key in _LIST_PARAMS or _FILTER_RE.match(key):
            continue
        if key in _KNOWN_ELSEWHERE:
            raise ParameterInvalid(f"{key}: not supported yet")
        raise ParameterInvalid(f"unknown parameter {key!r}")
    first, last = _page_size(params, "first"), _page_size(params, "last")
    after, before = params.get("after"), params.get("before")
    if first is not None and last is not None:
        raise ParameterInvalid("first and last: give one of them")
    if after is not None and before is not None:
        raise ParameterInvalid("after and before: give one of them")
    order = parse_order(et, params.get("order-by"))
    backward = last is not None or before is not None
    raw_cursor = before if backward else after
    cursor = (
        None
        if raw_cursor is None
        else decode_cursor(raw_cursor, order, "before" if backward else "after")
    )
    return ListQuery(
        conditions=parse_conditions(et, params),
        order=order,
        limit=last or first or DEFAULT_PAGE,
        backward=backward,
        cursor=cursor,
        include_deleted=parse_bool_param(params, "include-deleted"),
    )


def parse_bool_param(params: Mapping[str, str], name: str) -> bool:
    raw = params.get(name)
    if raw is None:
        return False
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise ParameterInvalid(f"{name}: {raw!r} is not true or false")
