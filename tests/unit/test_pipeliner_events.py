"""Every webhook event Pipeliner publishes for an entity we implement registers, and we raise
no event name Pipeliner does not publish (``tests/data/pipeliner-api-extract.json`` is a copy of
the published API's facts: entities, fields, the 138 event names)."""

from __future__ import annotations

import json
from pathlib import Path

from crmhooks.hooks.names import BY_SINGULAR, CUSTOM_PREFIX, EVENT_NAMES

PUBLISHED: list[str] = json.loads(
    (Path(__file__).parent.parent / "data" / "pipeliner-api-extract.json").read_text()
)["webhook_events"]


def _implemented_prefixes() -> set[str]:
    return {et.event_prefix for et in BY_SINGULAR.values()} | {CUSTOM_PREFIX}


def test_the_copy_holds_the_published_list() -> None:
    assert len(PUBLISHED) == 138
    assert "ContactAccountRelation.Create" in PUBLISHED


def test_every_published_event_of_an_implemented_entity_registers() -> None:
    prefixes = _implemented_prefixes()
    wanted = {name for name in PUBLISHED if name == "*" or name.split(".")[0] in prefixes}
    assert wanted - EVENT_NAMES == set()


def test_every_event_we_raise_is_a_published_one() -> None:
    assert EVENT_NAMES - set(PUBLISHED) == set()


def test_the_relation_entities_events_register() -> None:
    for prefix in (
        "ContactAccountRelation",
        "LeadOpptyAccountRelation",
        "LeadOpptyContactRelation",
        "ActivityRelation",
    ):
        assert {f"{prefix}.Create", f"{prefix}.Update", f"{prefix}.Delete", f"{prefix}.*"} <= (
            EVENT_NAMES
        )
