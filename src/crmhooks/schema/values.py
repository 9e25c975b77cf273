"""Values of each field kind: checking what a client wrote, and writing what we store.

Two shapes of a value exist: the *stored* one (``date``, ``datetime``, ``int``...) that goes to
the database, and the *wire* one (strings for dates and times, in the format of
docs/api.md#envelopes) that records carry through the write path, events and responses. These
pure functions convert.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
import uuid
from datetime import UTC, date, datetime, tzinfo
from typing import Any

from crmhooks.schema.types import Field, Kind


class ValueRejected(ValueError):
    """A value that does not fit its field; the message says why, for the error envelope."""


_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Matched whole (``fullmatch``): ``$`` would let a trailing newline through.
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}")
# A UUID already in the canonical form (lower case, dashes in place): what the server hands out
# and clients send back, taken as it is.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def format_datetime(value: datetime) -> str:
    """The wire's date-time format, ``2019-02-01 07:41:49.529970+00:00``, always UTC
    (docs/api.md#envelopes)."""
    if value.tzinfo is not UTC:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    # isoformat (in C) writes exactly this format for an aware UTC value; strftime is slower.
    return value.isoformat(sep=" ", timespec="microseconds")


def in_zone(wire: str, zone: tzinfo) -> str:
    """A date-time in the wire's format, written in ``zone``: the same instant, that zone's
    offset (``2019-02-01 01:41:49.529970-06:00``); what the ``Timezone`` header asks for."""
    try:
        shifted = datetime.fromisoformat(wire).astimezone(zone)
    except OverflowError:  # an instant near year 1 or 9999 that the zone's offset carries out
        return wire
    except ValueError:  # not a date-time (a custom field stored before its type was changed)
        return wire
    return shifted.isoformat(sep=" ", timespec="microseconds")


def parse_datetime(text: str, zone: tzinfo | None = None) -> datetime:
    """Parse the date-time forms real clients send, as a UTC value; no offset means ``zone``
    (the request's ``Timezone``), or UTC."""
    s = text.strip()
    if not s:
        raise ValueRejected("empty date-time")
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        if _DATE_RE.match(s):
            d = date.fromisoformat(s)
            dt = datetime(d.year, d.month, d.day)
        else:
            dt = datetime.fromisoformat(s)
        if dt.tzinfo is None:
            if zone is None:
                return dt.replace(tzinfo=UTC)
            dt = dt.replace(tzinfo=zone)
        # Near year 1 or 9999 an offset can carry the UTC time out of range (OverflowError).
        return dt.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueRejected(f"{text!r} is not a date-time such as 2026-01-01 00:00:00") from None


def parse_date(text: str) -> date:
    if not _DATE_RE.match(text.strip()):
        raise ValueRejected(f"{text!r} is not a date (YYYY-MM-DD)")
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ValueRejected(f"{text!r} is not a valid date") from None


def parse_uuid(text: str) -> str:
    """A canonical lower-case UUID string, or :class:`ValueRejected`."""
    if _CANONICAL_UUID.fullmatch(text):
        return text  # uuid.UUID would give it back unchanged, in ~2 µs
    if not _UUID_RE.fullmatch(text):
        raise ValueRejected(f"{text!r} is not a UUID")
    return str(uuid.UUID(text))


class _Entropy:
    """Random bytes from the system's generator, read 8 KiB at a time: one ``getrandom``
    call per ~800 ids instead of one per id. Dropped in a forked child, so that parent and
    child never hand out the same bytes; a lock keeps threads from sharing a slice."""

    SIZE = 8192
    _lock: threading.Lock
    _buf: bytes
    _pos: int

    def __init__(self) -> None:
        self.forget()

    def take(self, n: int) -> bytes:
        with self._lock:
            pos = self._pos
            if pos + n > len(self._buf):
                self._buf, pos = os.urandom(self.SIZE), 0
            self._pos = pos + n
            return self._buf[pos : pos + n]

    def forget(self) -> None:
        """A new lock (one held at the fork would never be released here) and no bytes."""
        self._lock = threading.Lock()
        self._buf, self._pos = b"", 0


_entropy = _Entropy()
os.register_at_fork(after_in_child=_entropy.forget)


def new_sorted_id() -> str:
    """A new time-ordered (version 7) UUID as text, for the records, events and delivery
    requests the server makes: 48 bits of Unix milliseconds, 12 bits of the fraction of that
    millisecond, 62 random bits (RFC 9562, method 3), in the canonical form. Ids made one after
    the other sort one after the other (to the quarter microsecond), so the rows keyed by them
    are added at the end of their indexes instead of on a random page: a transaction that
    stores a hundred requests dirties a few index pages, not a hundred (random version-4 ids
    made SQLite's commit 30% of the delivery process's CPU at chunk_size 1)."""
    ns = time.time_ns()
    ms, frac = divmod(ns, 1_000_000)
    sub = frac * 4096 // 1_000_000
    rand = int.from_bytes(_entropy.take(8), "big")
    # version 7 and the fraction's 12 bits; the RFC 4122 variant and 62 random bits
    value = (ms << 80) | (0x7000 | sub) << 64 | 0x8000_0000_0000_0000 | (rand >> 2)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def is_uuid(text: str) -> bool:
    return bool(_UUID_RE.fullmatch(text))


def _type_name(value: object) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def to_stored(f: Field, value: Any, zone: tzinfo | None = None) -> Any:
    """Check one written value against its field and return its stored form (a date-time
    without an offset is read in ``zone``, default UTC).

    ``None`` is returned as is; whether a null is allowed is the caller's decision.
    """
    if value is None:
        return None
    k = f.kind
    if k is Kind.TEXT:
        if not isinstance(value, str):
            raise ValueRejected(f"expected a string, got {_type_name(value)}")
        if f.max_length is not None and len(value) > f.max_length:
            raise ValueRejected(f"longer than {f.max_length} characters")
        if "\x00" in value:
            raise ValueRejected("contains a NUL character")
        return value
    if k is Kind.INTEGER:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueRejected(f"expected an integer, got {_type_name(value)}")
        if not -(2**63) <= value < 2**63:
            raise ValueRejected("integer out of range")
        return value
    if k is Kind.FLOAT:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueRejected(f"expected a number, got {_type_name(value)}")
        out = float(value)
        if not math.isfinite(out) or abs(out) > 1e300:
            raise ValueRejected("number out of range")
        return out
    if k is Kind.BOOLEAN:
        if not isinstance(value, bool):
            raise ValueRejected(f"expected a boolean, got {_type_name(value)}")
        return value
    if k is Kind.DATE:
        if not isinstance(value, str):
            raise ValueRejected(f"expected a date string YYYY-MM-DD, got {_type_name(value)}")
        return parse_date(value)
    if k is Kind.DATETIME:
        if not isinstance(value, str):
            raise ValueRejected(f"expected a date-time string, got {_type_name(value)}")
        return parse_datetime(value, zone)
    if k is Kind.UUID:
        if not isinstance(value, str):
            raise ValueRejected(f"expected a UUID string, got {_type_name(value)}")
        return parse_uuid(value)
    if k is Kind.ENUM:
        return enum_value(f, value)
    raise ValueRejected(f"field kind {k} cannot be written directly")  # pragma: no cover


def enum_value(f: Field, value: Any) -> int:
    """An ENUM's number from its number or its name (``"Won"`` -> 3)."""
    choices = f.choices or {}
    if isinstance(value, str) and value in choices:
        return choices[value]
    if isinstance(value, int) and not isinstance(value, bool) and value in choices.values():
        return value
    allowed = ", ".join(f"{v} ({n})" if n != str(v) else str(v) for n, v in choices.items())
    raise ValueRejected(f"{value!r} is not one of {allowed}")


def to_wire(f: Field, value: Any) -> Any:
    """The stored form of a value as the API shows it."""
    if value is None:
        return None
    if f.kind is Kind.DATETIME:
        if isinstance(value, str):  # JSON-stored custom fields keep the wire form
            return value
        return format_datetime(value)
    if f.kind is Kind.DATE:
        return value if isinstance(value, str) else value.isoformat()
    if f.kind is Kind.FLOAT:
        return float(value)
    if f.kind is Kind.BOOLEAN:
        return bool(value)
    return value
