"""What a create leaves out and the space decides: default relations and the base currency.

Pipeliner files a new record under the creator's default sales unit and the first activity or
record type of the space; here that is the space's oldest live record of the target type (a new
space gets one of each from ``store.space_defaults``). A space's first currency is its base.
One query per writer, however many records a batch creates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from sqlalchemy import Executable, bindparam, false, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from crmhooks.schema.registry import BUILTIN, DEFAULTED_RELATIONS
from crmhooks.schema.types import EntityType
from crmhooks.store.catalog import target_type
from crmhooks.store.inline_sqlite import driver_rows
from crmhooks.store.records import by_ids, scope, table_of


def _oldest_parts(targets: tuple[str, ...]) -> list[Any]:
    """One SELECT per target: its oldest live record in the space."""
    parts = []
    for target in targets:
        et = BUILTIN[target]
        t = table_of(et)
        live = [t.c.space_id == bindparam("space_id"), t.c.is_deleted == false()]
        if et.discriminator:
            live.append(t.c[et.discriminator[0]] == et.discriminator[1])
        oldest = (
            select(literal(target).label("target"), t.c.id)
            .where(*live)
            .order_by(t.c.created, t.c.id)
            .limit(1)
            .subquery()
        )
        parts.append(select(oldest.c.target, oldest.c.id))
    return parts


@cache
def _lookup_query(
    oldest: tuple[str, ...], asked: tuple[str, ...], include_deleted: bool
) -> Executable:
    """Each ``oldest`` target's oldest live record and, in the same statement, which of the
    ids bound to ``ids_<n>`` are records of the ``asked`` targets (tagged ``=<target>``): one
    round trip for both, built once per shape (building costs more than running it)."""
    # One flat UNION ALL: SQLite takes no parenthesised compound inside another.
    parts = _oldest_parts(oldest)
    for n, target in enumerate(asked):
        et = target_type(target)
        t = table_of(et)
        where = by_ids(
            et,
            bindparam("space_id"),
            bindparam(f"ids_{n}", expanding=True),
            include_deleted=include_deleted,
        )
        parts.append(select(literal(f"={target}").label("target"), t.c.id).where(where))
    return parts[0] if len(parts) == 1 else union_all(*parts)


async def lookup(
    conn: AsyncConnection,
    space_id: str,
    oldest: Sequence[str],
    asked: Mapping[str, set[str]],
    *,
    include_deleted: bool,
) -> tuple[dict[str, str | None], dict[str, set[str]]]:
    """The defaults of ``oldest`` and which ``asked`` ids exist, per target: one query (on the
    SQLite driver itself where it can, ``inline_sqlite.driver_rows``: it is part of every
    create)."""
    targets = tuple(sorted(asked))
    params: dict[str, Any] = {"space_id": space_id}
    for n, target in enumerate(targets):
        params[f"ids_{n}"] = sorted(asked[target])
    query = _lookup_query(tuple(oldest), targets, include_deleted)
    rows = await driver_rows(conn, query, params)
    defaults: dict[str, str | None] = dict.fromkeys(oldest)
    exist: dict[str, set[str]] = {t: set() for t in targets}
    for tag, record_id in rows:
        if tag.startswith("="):
            exist[tag[1:]].add(str(record_id))
        else:
            defaults[str(tag)] = str(record_id)
    return defaults, exist


async def has_base_currency(conn: AsyncConnection, space_id: str) -> bool:
    currencies = BUILTIN["Currencies"]
    t = table_of(currencies)
    row = await conn.execute(
        select(t.c.id).where(scope(currencies, space_id), t.c.is_base.is_(True)).limit(1)
    )
    return row.first() is not None


@dataclass
class SpaceDefaults:
    """The defaults of one space, looked up once per writer."""

    conn: AsyncConnection
    space_id: str
    include_deleted: bool = False  # validation-level 16: relations may name deleted records
    _ids: dict[str, str | None] = field(default_factory=dict)
    # Relation ids looked up with the defaults (the create's own), and those found.
    _asked: dict[str, set[str]] = field(default_factory=dict)
    _found: dict[str, set[str]] = field(default_factory=dict)

    def existing(self, target: str, values: set[str]) -> set[str] | None:
        """Which of ``values`` exist, when all were looked up with the defaults of the create
        just completed; else None (they are looked up again)."""
        asked = self._asked.pop(target, None)  # good for the check that follows only
        found = self._found.pop(target, set())
        if asked is None or not values <= asked:
            return None
        return values & found

    def known(self, target: str, value: str) -> bool:
        """Whether ``value`` is the default of ``target`` found live in this transaction (so
        a relation to it needs no existence check)."""
        return self._ids.get(target) == value

    async def complete(self, et: EntityType, stored: dict[str, Any]) -> dict[str, Any]:
        """A create's stored values with the relations it left out set to the defaults."""
        missing = {
            f.name: f.target
            for f in et.relations
            if f.name in DEFAULTED_RELATIONS and f.name not in stored and f.target
        }
        unknown = sorted({t for t in missing.values() if t not in self._ids})
        # What an earlier create looked up may have changed since: only this one's counts.
        self._asked, self._found = {}, {}
        if unknown:
            # The relations the create names are checked next: looked up in the same query.
            asked: dict[str, set[str]] = {}
            for f in et.relations:
                value = stored.get(f.name)
                if isinstance(value, str) and f.target and f.name not in missing:
                    asked.setdefault(f.target, set()).add(value)
            defaults, found = await lookup(
                self.conn, self.space_id, unknown, asked, include_deleted=self.include_deleted
            )
            self._ids.update(defaults)
            for target, values in asked.items():
                self._asked.setdefault(target, set()).update(values)
                self._found.setdefault(target, set()).update(found[target])
        out = stored
        for name, target in missing.items():
            if self._ids[target] is not None:
                out = {**out, name: self._ids[target]}
        if et.name == "Currencies":
            # Only a space without one (none seeded) gets its first currency as the base.
            out = {**out, "is_base": not await has_base_currency(self.conn, self.space_id)}
        return out
