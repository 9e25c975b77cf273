"""The pure decisions behind the Pipeliner collections: note links, the base currency, a new
space's records, event names."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from crmhooks.changes.rules import keep_base_currency, one_note_link
from crmhooks.errors import ValidationFailed
from crmhooks.hooks.names import EVENT_NAMES, candidates
from crmhooks.schema.registry import BUILTIN
from crmhooks.store.space_defaults import default_rows

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def test_a_note_keeps_one_link_through_a_patch_that_moves_it() -> None:
    before = {"account_id": "a", "contact_id": None}
    assert one_note_link(before, {"account_id": None, "contact_id": "c"}, NOW) == {
        "account_id": None,
        "contact_id": "c",
    }
    with pytest.raises(ValidationFailed) as raised:
        one_note_link(before, {"contact_id": "c"}, NOW)
    assert [e.field_name for e in raised.value.errors] == ["account_id", "contact_id"]
    with pytest.raises(ValidationFailed):
        one_note_link(None, {"note": "n"}, NOW)


def test_only_the_base_currency_is_kept_from_deletion() -> None:
    keep_base_currency({"code": "EUR", "is_base": False})
    with pytest.raises(ValidationFailed) as raised:
        keep_base_currency({"code": "USD", "is_base": True})
    assert raised.value.errors[0].field_name == "is_base"


def test_a_new_space_gets_one_of_each_default_record_with_a_base_currency() -> None:
    rows = default_rows("acme", NOW, "eur")
    assert set(rows) == {
        "sales_units",
        "task_types",
        "appointment_types",
        "account_types",
        "contact_types",
        "clients",
        "currencies",
    }
    assert {r["space_id"] for r in rows.values()} == {"acme"}
    assert len({r["id"] for r in rows.values()}) == len(rows)
    currency = rows["currencies"]
    assert (currency["code"], currency["symbol"], currency["is_base"]) == ("EUR", "€", True)
    # Every default row names only columns its table has.
    by_table = {et.table: et for et in BUILTIN.values()}
    for table, row in rows.items():
        columns = {f.name for f in by_table[table].fields} | {"space_id"}
        assert set(row) <= columns, table


def test_notes_and_currencies_raise_their_events_and_the_others_none() -> None:
    assert {"Note.Create", "Note.Update", "Note.Delete", "Note.*"} <= EVENT_NAMES
    assert {"Currency.Create", "Currency.Update", "Currency.Delete", "Currency.*"} <= EVENT_NAMES
    assert candidates("Note.Create") == ("Note.Create", "Note.*", "*")
    quiet = ("SalesUnit", "TaskType", "AppointmentType", "AccountType", "ContactType")
    quiet += ("ProductCategory", "Profile")
    assert not any(name.startswith(quiet) for name in EVENT_NAMES)
