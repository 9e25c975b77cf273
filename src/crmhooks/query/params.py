"""List parameters parsed once into plain values: filters, order, page, shaping.

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
from datetime import tzinfo
from enum import StrEnum
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from crmhooks.errors import ParameterInvalid
from crmhooks.limits import Limits
from crmhooks.query.shape import Shape, parse_shape
from crmhooks.schema.types import EntityType, Field, Kind
from crmhooks.schema.validate import Validation
from crmhooks.schema.values import ValueRejected, enum_value, parse_date, parse_datetime, parse_uuid

DEFAULT_PAGE = 30
MAX_PAGE = 100


class Op(StrEnum):
    EQ = "eq"
    IEQ = "ieq"
    NOT_EQ = "not-eq"
    NOT_IEQ = "not-ieq"
    CONTAINS = "contains"
    STARTS = "starts"
    ENDS = "ends"
    ICONTAINS = "icontains"
    ISTARTS = "istarts"
    IENDS = "iends"
    NULL = "null"
    NOT_NULL = "not-null"
    EMPTY = "empty"
    NOT_EMPTY = "not-empty"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    BETWEEN = "between"


NO_VALUE = frozenset({Op.NULL, Op.NOT_NULL, Op.EMPTY, Op.NOT_EMPTY})
TEXT_ONLY = frozenset(
    {Op.IEQ, Op.NOT_IEQ, Op.CONTAINS, Op.STARTS, Op.ENDS, Op.ICONTAINS, Op.ISTARTS, Op.IENDS}
)
CASE_INSENSITIVE = frozenset({Op.IEQ, Op.NOT_IEQ, Op.ICONTAINS, Op.ISTARTS, Op.IENDS})
# In a query string a comma separates values for these (docs/api.md#query-parameters).
COMMA_LISTS = frozenset({Op.EQ, Op.NOT_EQ, Op.BETWEEN})


def ascii_lower(text: str) -> str:
    """Case folding of A-Z only: the one both engines and Python compute identically."""
    if text.isascii():
        return text.lower()  # on ASCII text, exactly A-Z
    # bytes.lower() folds A-Z only, and no byte of a multi-byte UTF-8 sequence is one of them:
    # about eight times faster than str.translate with a table.
    return text.encode("utf-8", "surrogatepass").lower().decode("utf-8", "surrogatepass")


@dataclass(frozen=True)
class Target:
    """A field a parameter names: its (dotted) path, field and storage column."""

    path: str
    field: Field
    column: str | None  # None: kept in the record's JSON ``data`` under ``path``


@dataclass(frozen=True)
class Condition:
    """``target`` compared with ``op`` to ``values`` (typed for the field)."""

    target: Target
    op: Op
    values: tuple[Any, ...]


@dataclass(frozen=True)
class OrderKey:
    target: Target
    desc: bool


@dataclass(frozen=True)
class Cursor:
    values: tuple[Any, ...]  # one per order key, typed; the last key is always ``id``


@dataclass(frozen=True)
class ListQuery:
    conditions: tuple[Condition, ...]
    order: tuple[OrderKey, ...]
    limit: int
    backward: bool  # ``last`` / ``before``: read the page ending at the cursor (or the end)
    cursor: Cursor | None
    include_deleted: bool
    shape: Shape
    # The cursor is an ``after`` one (rows past it) rather than a ``before`` one (rows up to it).
    cursor_after: bool = True
    trim: int | None = None  # ``first`` N with ``last`` M: keep the last M of the N read


@dataclass(frozen=True)
class Window:
    """Which rows a list reads: ``limit`` of them, forward or backward, from which cursor, and
    how many of those it keeps (``trim``)."""

    limit: int
    backward: bool
    cursor: str | None
    cursor_after: bool
    trim: int | None


def page_window(
    first: int | None, last: int | None, after: str | None, before: str | None
) -> Window:
    """The rows ``first`` / ``last`` / ``after`` / ``before`` mean, as Pipeliner reads them.

    ``first`` N (default 30) from the start or ``after`` a cursor; ``last`` N: the last N, or the
    last N ``after`` a cursor; ``before`` a cursor (with ``last`` or ``first`` N, default 30):
    the N just before it, paging backwards; ``first`` N with ``last`` M: the last M of the first
    N (after a cursor, if given). ``after`` with ``before``, and ``first`` with ``last`` and
    ``before``, name no single window: a 400.
    """
    if after is not None and before is not None:
        raise ParameterInvalid("after and before: give one of them (a page starts at one cursor)")
    if first is not None and last is not None:
        if before is not None:
            raise ParameterInvalid(
                "first with last takes after, not before: it is the last M of the first N"
            )
        return Window(first, False, after, True, last if last < first else None)
    if before is not None:
        return Window(last or first or DEFAULT_PAGE, True, before, False, None)
    if last is not None:
        return Window(last, True, after, True, None)
    return Window(first or DEFAULT_PAGE, False, after, True, None)


# Pipeliner's published API spells it ``include-deleted``, its documentation ``include_deleted``.
INCLUDE_DELETED = ("include-deleted", "include_deleted")
_FILTER_RE = re.compile(r"^(filter|filter-op)\[([^\]]*)\]$")
_LIST_PARAMS = {"first", "last", "after", "before", "order-by", *INCLUDE_DELETED}
SHAPE_PARAMS = frozenset({"expand", "load-only", "load_only"})


def resolve(et: EntityType, path: str, where: str) -> Target:
    """The field a (possibly dotted) path names; ParameterInvalid otherwise."""
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
        return Target(path, match, f"{f.column_name}__{sub}")
    if f.kind in (Kind.OBJECT, Kind.JSON):
        raise ParameterInvalid(f"{where}: {path!r} is an object; name one of its sub-fields")
    return Target(path, f, f.column_name)


def typed_value(f: Field, raw: Any, where: str, zone: tzinfo | None = None) -> Any:
    """A filter or cursor value (query text or JSON) as the field's stored type; a date-time
    without an offset is read in ``zone`` (default UTC)."""
    try:
        if f.kind is Kind.ENUM:
            return enum_value(f, int(raw) if isinstance(raw, str) and raw.isdigit() else raw)
        if not isinstance(raw, str):
            return _typed_json(f, raw)
        if f.kind is Kind.TEXT:
            if "\x00" in raw:
                raise ValueRejected("contains a NUL character")
            return raw
        if f.kind is Kind.INTEGER:
            return _int64(int(raw))
        if f.kind is Kind.FLOAT:
            return float(raw)
        if f.kind is Kind.BOOLEAN:
            if raw.lower() in ("true", "1"):
                return True
            if raw.lower() in ("false", "0"):
                return False
            raise ValueRejected("expected true or false")
        if f.kind is Kind.DATE:
            return parse_date(raw[:10])
        if f.kind is Kind.DATETIME:
            return parse_datetime(raw, zone)
        if f.kind is Kind.UUID:
            return parse_uuid(raw)
    except (ValueError, ValueRejected) as e:
        raise ParameterInvalid(f"{where}: {raw!r} does not fit field {f.name!r}: {e}") from None
    raise ParameterInvalid(f"{where}: field {f.name!r} cannot be compared")


def _typed_json(f: Field, raw: Any) -> Any:
    if f.kind is Kind.BOOLEAN and isinstance(raw, bool):
        return raw
    if f.kind in (Kind.INTEGER, Kind.FLOAT) and isinstance(raw, int | float):
        if isinstance(raw, bool):
            raise ValueRejected(f"{raw!r} is not a number")
        return _int64(int(raw)) if f.kind is Kind.INTEGER and float(raw).is_integer() else raw
    raise ValueRejected(f"{raw!r} is not a {f.kind.value}")


def _int64(value: int) -> int:
    """Integers are stored in 64 bits; a larger one would fail in the database, not here."""
    if not -(2**63) <= value < 2**63:
        raise ValueRejected("integer out of range")
    return value


def condition(
    et: EntityType,
    path: str,
    op_name: str,
    raw: Any,
    where: str,
    zone: tzinfo | None = None,
    limits: Limits | None = None,
) -> Condition:
    """One condition from a filter value: query text, or JSON (a scalar or a list: any of)."""
    target = resolve(et, path, where)
    try:
        op = Op(op_name)
    except ValueError:
        raise ParameterInvalid(
            f"filter-op[{path}]: unknown operator {op_name!r}; one of {', '.join(Op)}"
        ) from None
    if op in NO_VALUE:
        if raw not in (None, "", []):
            raise ParameterInvalid(f"{where}: operator {op} takes no value, got {raw!r}")
        return Condition(target, op, ())
    if op in TEXT_ONLY and target.field.kind is not Kind.TEXT:
        raise ParameterInvalid(
            f"filter-op[{path}]: {op} applies to text; {path!r} is {target.field.kind.value}"
        )
    if isinstance(raw, str):
        parts: list[Any] = raw.split(",") if op in COMMA_LISTS else [raw]
    elif isinstance(raw, list):
        parts = list(raw)
    else:
        parts = [raw]
    if op is Op.BETWEEN and len(parts) != 2:
        raise ParameterInvalid(f"{where}: between takes two values, low,high; got {raw!r}")
    if not parts or any(p is None for p in parts):
        raise ParameterInvalid(f"{where}: a value is needed; use filter-op null for nulls")
    if limits is not None:
        check_values(parts, where, limits)
    values = tuple(typed_value(target.field, p, where, zone) for p in parts)
    if op in CASE_INSENSITIVE:
        values = tuple(ascii_lower(v) for v in values)
    return Condition(target, op, values)


def check_values(parts: list[Any], where: str, limits: Limits) -> None:
    """The values of one filter field within ``max_filter_values`` and, each,
    ``max_filter_value_length``."""
    if len(parts) > limits.max_filter_values:
        raise ParameterInvalid(
            f"{where}: {len(parts)} values; the limit is {limits.max_filter_values} "
            "(max_filter_values)"
        )
    for p in parts:
        if isinstance(p, str) and len(p) > limits.max_filter_value_length:
            raise ParameterInvalid(
                f"{where}: a value of {len(p)} characters; the limit is "
                f"{limits.max_filter_value_length} (max_filter_value_length)"
            )


def conditions(
    et: EntityType,
    values: Mapping[str, Any],
    ops: Mapping[str, str],
    zone: tzinfo | None = None,
    limits: Limits | None = None,
) -> tuple[Condition, ...]:
    """Conditions from ``filter`` / ``filter-op`` maps (query parameters or webhook options);
    ``zone``: the request's ``Timezone`` (webhook options are UTC); within ``limits`` when
    given."""
    for name in ops:
        if name not in values:
            raise ParameterInvalid(f"filter-op[{name}]: no filter[{name}] to apply it to")
    if limits is not None and len(values) > limits.max_filter_fields:
        raise ParameterInvalid(
            f"filter: {len(values)} fields; the limit is {limits.max_filter_fields} "
            "(max_filter_fields)"
        )
    return tuple(
        condition(et, path, ops.get(path, "eq"), raw, f"filter[{path}]", zone, limits)
        for path, raw in values.items()
    )


def page_size(params: Mapping[str, str], name: str) -> int | None:
    """``first`` / ``last``: 1..100, or None when not given."""
    raw = params.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PAGE:
        raise ParameterInvalid(f"{name}: {raw!r} is not a page size from 1 to {MAX_PAGE}")
    return int(raw)


def parse_order(
    et: EntityType, raw: str | None, limits: Limits | None = None
) -> tuple[OrderKey, ...]:
    keys: list[OrderKey] = []
    parts = (raw or "created").split(",")
    if limits is not None and len(parts) > limits.max_order_keys:
        raise ParameterInvalid(
            f"order-by: {len(parts)} keys; the limit is {limits.max_order_keys} (max_order_keys)"
        )
    for part in parts:
        name = part.strip()
        desc = name.startswith("-")
        name = name.removeprefix("-")
        if not name:
            raise ParameterInvalid(f"order-by: empty key in {raw!r}")
        target = resolve(et, name, "order-by")
        if name != "id":
            keys.append(OrderKey(target, desc))
    last_desc = keys[-1].desc if keys else False
    keys.append(OrderKey(Target("id", et.by_name["id"], "id"), last_desc))
    return tuple(keys)


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def decode_cursor(raw: str, order: tuple[OrderKey, ...], name: str) -> Cursor:
    try:
        values = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise ParameterInvalid(f"{name}: {raw!r} is not a cursor") from None
    if not isinstance(values, list) or len(values) != len(order):
        raise ParameterInvalid(f"{name}: the cursor does not fit order-by")
    typed = tuple(
        None if v is None else typed_value(k.target.field, v, name)
        for k, v in zip(order, values, strict=True)
    )
    return Cursor(typed)


def _filter_maps(params: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    values: dict[str, str] = {}
    ops: dict[str, str] = {}
    for key, raw in params.items():
        m = _FILTER_RE.fullmatch(key)
        if m:
            (values if m.group(1) == "filter" else ops)[m.group(2)] = raw
    return values, ops


def shape_of(et: EntityType, params: Mapping[str, str], limits: Limits | None = None) -> Shape:
    """``expand`` and ``load-only`` (or ``load_only``) of a read or write request."""
    if "load-only" in params and "load_only" in params:
        raise ParameterInvalid("load-only and load_only: give one of them")
    expand = params.get("expand")
    load_only = params.get("load-only", params.get("load_only"))
    return parse_shape(
        et,
        _split(expand),
        _split(load_only),
        "expand",
        "load-only" if "load-only" in params else "load_only",
        limits,
    )


def _split(raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    return [part.strip() for part in raw.split(",")]


def parse_list(
    et: EntityType,
    params: Mapping[str, str],
    limits: Limits | None = None,
    zone: tzinfo | None = None,
) -> ListQuery:
    """Parse a list request's query parameters; unknown parameters are refused, and with
    ``limits`` so are filters and shapes beyond them. Filter values without an offset are read
    in ``zone`` (the ``Timezone`` header; None: UTC)."""
    for key in params:
        if key not in _LIST_PARAMS and key not in SHAPE_PARAMS and not _FILTER_RE.fullmatch(key):
            raise ParameterInvalid(f"unknown parameter {key!r}")
    window = page_window(
        page_size(params, "first"),
        page_size(params, "last"),
        params.get("after"),
        params.get("before"),
    )
    order = parse_order(et, params.get("order-by"), limits)
    cursor = (
        None
        if window.cursor is None
        else decode_cursor(window.cursor, order, "after" if window.cursor_after else "before")
    )
    values, ops = _filter_maps(params)
    return ListQuery(
        conditions=conditions(et, values, ops, zone, limits),
        order=order,
        limit=window.limit,
        backward=window.backward,
        cursor=cursor,
        include_deleted=include_deleted(params),
        shape=shape_of(et, params, limits),
        cursor_after=window.cursor_after,
        trim=window.trim,
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


def include_deleted(params: Mapping[str, str]) -> bool:
    """``include-deleted`` or ``include_deleted`` (both spellings are Pipeliner's)."""
    dashed, underscored = INCLUDE_DELETED
    if underscored not in params:  # the common case: one lookup more than before
        return parse_bool_param(params, dashed)
    if dashed in params:
        raise ParameterInvalid("include-deleted and include_deleted: give one of them")
    return parse_bool_param(params, underscored)


VALIDATION_LEVEL = "validation-level"
_KNOWN_LEVEL_BITS = sum(Validation)


def validation_level(params: Mapping[str, str]) -> Validation:
    """``validation-level`` of a write: Pipeliner's bit mask (0, or a sum of 2, 4, 8, 16)."""
    raw = params.get(VALIDATION_LEVEL)
    if raw is None:
        return Validation(0)
    value = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 4 else None
    if value is None or value & ~_KNOWN_LEVEL_BITS:
        raise ParameterInvalid(
            f"{VALIDATION_LEVEL}: {raw!r} is not 0 or a sum of "
            + ", ".join(str(int(bit)) for bit in Validation)
        )
    return Validation(value)


TIMEZONE_HEADER = "Timezone"
MAX_ZONE_NAME = 64


@lru_cache(maxsize=64)
def _zone(name: str) -> tzinfo:
    return ZoneInfo(name)


def request_timezone(raw: str | None) -> tzinfo | None:
    """The ``Timezone`` header: an IANA zone name (``America/Chicago``); None when absent."""
    if raw is None:
        return None
    try:
        if not raw or len(raw) > MAX_ZONE_NAME:
            raise ValueError(raw)
        return _zone(raw)
    # OSError: a name that is a folder of the zone database ("US", "America") is opened as a
    # file, and that fails as IsADirectoryError, not as an unknown zone.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ParameterInvalid(
            f"{TIMEZONE_HEADER}: {raw[:MAX_ZONE_NAME]!r} is not a time zone name such as "
            "America/Chicago"
        ) from None
