"""New ids (``schema.values.new_id``): random version-4 UUIDs in the canonical text form."""

from __future__ import annotations

import uuid

from crmhooks.schema.values import is_uuid, new_id


def test_new_ids_are_canonical_random_version_4_uuids() -> None:
    made = [new_id() for _ in range(10_000)]
    assert len(set(made)) == len(made)
    for text in made[:1000]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # lower case, dashes where uuid puts them
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert is_uuid(text)
    # Every random bit varies: no position of the text is the same in all of them.
    fixed = {i for i in range(36) if len({t[i] for t in made}) == 1}
    assert fixed == {8, 13, 14, 18, 23}  # the dashes and the version digit
