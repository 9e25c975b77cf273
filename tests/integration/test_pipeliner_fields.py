"""Our fields against Pipeliner's published ones: they differ only where docs/api.md says so.

For every built-in entity type whose singular name is an entity of the published API
(``tests/data/pipeliner-api-extract.json``, a copy of the reference extract), the table
"Differences from the published fields" in docs/api.md lists, per entity, the fields we show
that Pipeliner does not publish, the published fields we do not implement, and the fields whose
required-on-create or readOnly flag differs. These tests fail when the code and the table
disagree in either direction: a new field without its row, a listed difference that is no longer
one, a row without a reason.

The names we show are read from a record rendered by the API (one per entity), so the
comparison follows what clients receive, not only the registry.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import insert

from crmhooks.schema.registry import BUILTIN
from crmhooks.schema.types import EntityType
from crmhooks.store.engine import open_database
from crmhooks.store.tables import table_for
from tests.support.api import Api

ROOT = Path(__file__).resolve().parents[2]
EXTRACT = ROOT / "tests" / "data" / "pipeliner-api-extract.json"
DOCS = ROOT / "docs" / "api.md"
HEADING = "### Differences from the published fields"
COLUMNS = ["Entity", "ours only", "not implemented", "required differs", "readOnly differs", "why"]
HOOK_URL = "http://93.184.216.34/hook"  # a public literal: registration needs no lookup

Sided = tuple[frozenset[str], frozenset[str]]  # (Pipeliner sets the flag, we set the flag)


@cache
def published() -> dict[str, Any]:
    entities: dict[str, Any] = orjson.loads(EXTRACT.read_bytes())["entities"]
    return entities


def compared() -> list[EntityType]:
    """Our entity types that the published API has too (by singular name)."""
    return [et for et in BUILTIN.values() if et.singular in published()]


# -- the documented table ----------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    ours_only: frozenset[str]
    missing: frozenset[str]
    required: Sided | None  # None: the extract did not read the published create input
    read_only: Sided
    why: str


def _names(cell: str) -> frozenset[str]:
    return frozenset(re.findall(r"`([^`]+)`", cell))


def _sided(cell: str) -> Sided | None:
    if cell == "not read":
        return None
    theirs: frozenset[str] = frozenset()
    ours: frozenset[str] = frozenset()
    if cell in ("", "-"):
        return theirs, ours
    for part in cell.split(";"):
        side, _, names = part.strip().partition(":")
        assert side in ("Pipeliner", "ours"), f"{cell!r}: each part starts 'Pipeliner:' or 'ours:'"
        if side == "Pipeliner":
            theirs |= _names(names)
        else:
            ours |= _names(names)
    return theirs, ours


def documented() -> dict[str, Row]:
    """The rows of the table under HEADING in docs/api.md, by entity."""
    section = DOCS.read_text(encoding="utf-8").split(HEADING, 1)
    assert len(section) == 2, f"docs/api.md has no {HEADING!r}"
    lines = [line.strip() for line in section[1].splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip("|").split("|")])
    assert table[0] == COLUMNS, table[0]
    rows: dict[str, Row] = {}
    for cells in table[2:]:
        assert len(cells) == len(COLUMNS), cells
        entity, ours_only, missing, required, read_only, why = cells
        assert entity not in rows, f"two rows for {entity}"
        sided_ro = _sided(read_only)
        assert sided_ro is not None, f"{entity}: readOnly flags are always compared"
        rows[entity] = Row(_names(ours_only), _names(missing), _sided(required), sided_ro, why)
    return rows


# -- what the published API and our registry say -----------------------------------------------


def shown_names(et: EntityType) -> frozenset[str]:
    """The keys a record of ``et`` has on the wire, from the registry."""
    out: set[str] = set()
    for f in et.fields:
        if f.hidden:
            continue
        out.add(f.name)
        if f.target is not None:
            out.update(f.shown_names)
    out.update(link.name for link in et.kind_links)
    out.update(tm.name for tm in et.to_many)
    return frozenset(out)


def published_required(entity: dict[str, Any]) -> frozenset[str] | None:
    listed = entity["required_on_create"]
    if listed is None:
        return None
    flagged = {name for name, f in entity["fields"].items() if f.get("required")}
    return frozenset(flagged | set(listed))


def required_differences(et: EntityType) -> Sided | None:
    theirs = published_required(published()[et.singular])
    if theirs is None:
        return None
    ours = frozenset(f.name for f in et.fields if f.required and not f.hidden)
    return theirs - ours, ours - theirs


def read_only_differences(et: EntityType) -> Sided:
    """Over the fields both sides have; a published flag the extract did not read is skipped."""
    fields = published()[et.singular]["fields"]
    ours = {f.name: f.read_only for f in et.fields if not f.hidden and f.name in fields}
    theirs = {name: fields[name].get("readOnly") for name in ours}
    return (
        frozenset(n for n, ro in ours.items() if theirs[n] is True and not ro),
        frozenset(n for n, ro in ours.items() if theirs[n] is False and ro),
    )


def field_differences(et: EntityType, shown: frozenset[str]) -> tuple[frozenset[str], ...]:
    names = frozenset(published()[et.singular]["fields"])
    return shown - names, names - shown


# -- the tests ---------------------------------------------------------------------------------


def _diff(what: str, expected: frozenset[str], listed: frozenset[str]) -> list[str]:
    out = []
    if expected - listed:
        out.append(f"{what}: not listed {sorted(expected - listed)}")
    if listed - expected:
        out.append(f"{what}: listed but no difference {sorted(listed - expected)}")
    return out


def test_the_table_has_one_row_with_a_reason_per_entity_we_share() -> None:
    rows = documented()
    ours = {et.singular for et in compared()}
    assert set(rows) == ours, (
        f"rows for entities we do not compare: {sorted(set(rows) - ours)}; "
        f"entities without a row: {sorted(ours - set(rows))}"
    )
    for entity, row in rows.items():
        assert row.why not in ("", "-"), f"{entity}: the row gives no reason"


def test_required_and_read_only_flags_differ_only_where_documented() -> None:
    rows = documented()
    problems = []
    for et in compared():
        row = rows[et.singular]
        required = required_differences(et)
        if required is None or row.required is None:
            if required != row.required:
                problems.append(f"{et.singular}: required is 'not read' on one side only")
        else:
            problems += _diff(f"{et.singular} required (Pipeliner)", required[0], row.required[0])
            problems += _diff(f"{et.singular} required (ours)", required[1], row.required[1])
        read_only = read_only_differences(et)
        problems += _diff(f"{et.singular} readOnly (Pipeliner)", read_only[0], row.read_only[0])
        problems += _diff(f"{et.singular} readOnly (ours)", read_only[1], row.read_only[1])
    assert not problems, "\n".join(problems)


async def test_the_fields_we_show_differ_only_where_documented(api: Api, db_url: str) -> None:
    records = await _one_record_each(api, db_url)
    rows = documented()
    problems = []
    for et in compared():
        shown = frozenset(records[et.name])
        # The registry and the rendered record agree, so the flags read above are the shown ones.
        assert shown == shown_names(et), (et.name, shown ^ shown_names(et))
        ours_only, missing = field_differences(et, shown)
        row = rows[et.singular]
        problems += _diff(f"{et.singular} ours only", ours_only, row.ours_only)
        problems += _diff(f"{et.singular} not implemented", missing, row.missing)
    assert not problems, "\n".join(problems)


def test_the_check_sees_a_new_field_and_a_stale_row() -> None:
    """The comparison itself fails both ways (a check that could not fail would prove nothing)."""
    account = BUILTIN["Accounts"]
    shown = shown_names(account)
    row = documented()["Account"]
    ours_only, _ = field_differences(account, shown | {"shoe_size"})
    assert _diff("x", ours_only, row.ours_only) == ["x: not listed ['shoe_size']"]
    _, missing = field_differences(account, shown | {"industry_id"})
    assert _diff("x", missing, row.missing) == ["x: listed but no difference ['industry_id']"]


async def _one_record_each(api: Api, db_url: str) -> dict[str, dict[str, Any]]:
    """One record of every compared entity type, as a single read shows it."""
    acme = await api.create("Accounts", {"name": "Acme"})
    ann = await api.create(
        "Contacts",
        {
            "first_name": "Ann",
            "account_relations": [{"account_id": acme["id"], "is_primary": True}],
        },
    )
    pipeline = await api.create("Pipelines", {"name": "Sales"})
    step = await api.create("Steps", {"name": "New", "pipeline_id": pipeline["id"]})
    await api.create(
        "Leads",
        {
            "name": "Lead",
            "account_relations": [{"account_id": acme["id"], "is_primary": True}],
            "contact_relations": [{"contact_id": ann["id"], "is_primary": True}],
        },
    )
    oppty = await api.create("Opportunities", {"name": "Deal", "step_id": step["id"]})
    product = await api.create("Products", {"name": "Widget"})
    await api.create(
        "OpptyProductRelations", {"oppty_id": oppty["id"], "product_id": product["id"]}
    )
    await api.create("Tasks", {"subject": "Call", "account_id": acme["id"]})
    await api.create("Appointments", {"subject": "Meet"})
    await api.create("Emails", {"subject": "Hello"})
    await api.create("CloudObjects", {"filename": "a.pdf", "account_id": acme["id"]})
    await api.create(
        "Notes", {"note": "n", "owner_id": api.space.client_id, "account_id": acme["id"]}
    )
    await api.create("ProductCategories", {"name": "Hardware"})
    await api.create("Webhooks", {"url": HOOK_URL, "events": ["*"], "insecure_ssl": False})
    await _insert_profile(db_url, api.space.space_id)
    out = {}
    for et in compared():
        listed = (await api.get(et.name, params={"first": "1"})).json()["data"]
        assert listed, f"no {et.name} to show"
        r = await api.get(et.name, listed[0]["id"])
        assert r.status_code == 200, r.text
        out[et.name] = r.json()["data"]
    return out


async def _insert_profile(db_url: str, space_id: str) -> None:
    """Profiles are read-only through the API: the test writes one to the table."""
    now = datetime.now(UTC)
    row = {"id": str(uuid.uuid4()), "space_id": space_id, "created": now, "modified": now}
    db = open_database(db_url)
    try:
        async with db.write() as conn:
            await conn.execute(
                insert(table_for("profiles")).values(**row, is_deleted=False, revision=1)
            )
    finally:
        await db.dispose()
