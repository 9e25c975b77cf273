"""What each ``validation-level`` bit lets through ``check_write``: pure decisions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from crmhooks.errors import ParameterInvalid, ValidationFailed
from crmhooks.query.params import validation_level
from crmhooks.schema.registry import BUILTIN
from crmhooks.schema.validate import Validation, check_write

ACCOUNTS = BUILTIN["Accounts"]
OWNER = "7a0c2b55-3f1e-4d2a-8b6c-1e9f0a2d3c44"
STORED: dict[str, Any] = {  # an Account without a name, as validation-level 4 lets one be made
    "id": "5d1c5a40-0d3f-4b8e-9d55-8f2a1f0e4c11",
    "created": "2026-01-01 00:00:00.000000+00:00",
    "revision": 3,
    "name": None,
    "owner_id": OWNER,
    "city": "Rome",
}


def refused(entity: Any, body: dict[str, Any], **kw: Any) -> set[str]:
    with pytest.raises(ValidationFailed) as caught:
        check_write(entity, body, **kw)
    return {e.field_name for e in caught.value.errors}


@pytest.mark.parametrize(("raw", "bits"), [("0", 0), ("2", 2), ("6", 6), ("30", 30), ("16", 16)])
def test_levels_parse_as_bit_masks(raw: str, bits: int) -> None:
    assert validation_level({"validation-level": raw}) == Validation(bits)


@pytest.mark.parametrize("raw", ["1", "3", "32", "-2", "x", "", "2.0", "٢"])
def test_other_levels_are_refused(raw: str) -> None:
    with pytest.raises(ParameterInvalid, match="validation-level"):
        validation_level({"validation-level": raw})


def test_changed_only_skips_unchanged_fields_and_untouched_rules() -> None:
    echo = {"id": STORED["id"], "created": "2026-01-01T00:00:00Z", "city": "Milan"}
    assert refused(ACCOUNTS, echo, before=STORED) == {"id", "created"}
    out = check_write(ACCOUNTS, echo, before=STORED, level=Validation.CHANGED_ONLY)
    assert out == {"city": "Milan"}
    named = {**STORED, "name": "Acme"}
    assert refused(ACCOUNTS, {"name": None}, before=named, level=Validation.CHANGED_ONLY) == {
        "name"
    }


def test_system_only_drops_plain_required_rules_not_relations() -> None:
    owned = {"owner_id": OWNER}
    assert check_write(ACCOUNTS, owned, before=None, level=Validation.SYSTEM_ONLY) == owned
    assert refused(ACCOUNTS, {}, before=None, level=Validation.SYSTEM_ONLY) == {"owner_id"}
    assert refused(
        BUILTIN["Opportunities"], {"name": "x"}, before=None, level=Validation.SYSTEM_ONLY
    ) == {"step_id", "owner_id"}  # not closing_date or value: plain fields


def test_override_read_only_sets_history_fields_only() -> None:
    out = check_write(
        ACCOUNTS,
        {"name": "a", "owner_id": OWNER, "created": "2019-02-01 07:41:49+00:00"},
        before=None,
        level=Validation.OVERRIDE_READ_ONLY,
    )
    assert out["created"] == datetime(2019, 2, 1, 7, 41, 49, tzinfo=UTC)
    for field, value in (("modified", "2019-02-01"), ("revision", 2), ("id", STORED["id"])):
        body = {"name": "a", "owner_id": OWNER, field: value}
        assert refused(ACCOUNTS, body, before=None, level=Validation(30)) == {field}
    body = {"url": "https://example.org", "created": "2019-02-01"}
    assert "created" in refused(BUILTIN["Webhooks"], body, before=None, level=Validation(8))
