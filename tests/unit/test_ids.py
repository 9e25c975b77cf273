"""New ids (``schema.values.new_sorted_id``): time-ordered version-7 UUIDs in the canonical
text form."""

from __future__ import annotations

import os
import time
import uuid

from crmhooks.schema.values import is_uuid, new_sorted_id


def test_new_ids_are_canonical_version_7_uuids() -> None:
    made = [new_sorted_id() for _ in range(10_000)]
    assert len(set(made)) == len(made)
    for text in made[:1000]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # lower case, dashes where uuid puts them
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert is_uuid(text)
    # The 62 random bits vary: no position after the variant digit is the same in all of them.
    fixed = {i for i in range(20, 36) if len({t[i] for t in made}) == 1}
    assert fixed == {23}  # the dash


def test_ids_made_one_after_another_sort_in_that_order_and_carry_the_time() -> None:
    before = time.time_ns() // 1_000_000
    made = [new_sorted_id() for _ in range(10_000)]
    after = time.time_ns() // 1_000_000
    # The time and its fraction (the first 15 hex digits after the version) never go back.
    stamps = [t[:8] + t[9:13] + t[15:18] for t in made]
    assert stamps == sorted(stamps)
    ms = [int(t[:8] + t[9:13], 16) for t in (made[0], made[-1])]
    assert before <= ms[0] <= ms[1] <= after
    assert len(set(stamps)) > 1  # the stamp moves as time does
    # Made a millisecond apart, whole ids sort in the order made (as index keys do).
    first = new_sorted_id()
    time.sleep(0.002)
    assert first < new_sorted_id()


def test_a_forked_child_does_not_repeat_its_parents_random_bits() -> None:
    """The random bytes are read ahead in blocks (``_Entropy``): a child forked with some of
    them unread (``serve`` forks its delivery process) must not hand out the same ones."""
    new_sorted_id()  # the block is read, most of it unused
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids' random parts, then out without any clean-up
        os.write(write, " ".join(new_sorted_id()[19:] for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {new_sorted_id()[19:] for _ in range(50)}
    assert len(child) == 50
    assert not child & parent
