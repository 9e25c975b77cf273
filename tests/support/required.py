"""What Pipeliner requires on create and most tests do not care about.

Pipeliner refuses an Account, Contact, Opportunity or Appointment without ``owner_id``, an
Opportunity without ``closing_date`` and ``value``, an Appointment without ``end_date`` and an
Email without ``direction`` and ``uid`` (``MISSING_REQUIRED`` in
tests/integration/test_bad_input.py holds each refusal). The test clients' ``create`` fill
these in, with the space's API user as owner, unless the body names them: a test that is
about one of them writes it itself, or posts through ``http`` directly.
"""

from __future__ import annotations

from typing import Any

REQUIRED_OWNER = frozenset({"Accounts", "Contacts", "Opportunities", "Appointments"})
FIXED: dict[str, dict[str, Any]] = {
    "Opportunities": {"closing_date": "2026-12-31", "value": {"base_value": 0}},
    "Appointments": {"end_date": "2026-12-31T10:00:00Z"},
    "Emails": {"direction": 1, "uid": "1"},
}


def with_required(entity: str, body: Any, owner_id: str | None) -> Any:
    """``body`` with the fields above it leaves out; a body that is not an object unchanged."""
    if not isinstance(body, dict):
        return body
    filled: dict[str, Any] = dict(FIXED.get(entity, {}))
    if entity in REQUIRED_OWNER and owner_id:
        filled["owner_id"] = owner_id
    return {**filled, **body}
