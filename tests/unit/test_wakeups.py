"""The pipe serve wakes its delivery process through (``delivery.wakeups``): what is written is
read as wakes of the right kind, a full pipe never blocks nor fails the writer, and end of file
(the API process gone) is told once."""

from __future__ import annotations

import asyncio
import os

from crmhooks.delivery.wakeups import WakeReader, WakeSender


async def test_wakes_arrive_by_kind_and_end_of_file_means_the_writer_is_gone() -> None:
    read, write = os.pipe()
    seen: list[str] = []
    gone = asyncio.Event()
    reader = WakeReader(
        read,
        on_events=lambda: seen.append("events"),
        on_requeued=lambda: seen.append("requeued"),
        on_gone=gone.set,
    )
    reader.start()
    sender = WakeSender(write)
    sender.events()
    for _ in range(50):
        await asyncio.sleep(0.001)
        if seen:
            break
    assert seen == ["events"]
    sender.requeued()
    for _ in range(50):
        await asyncio.sleep(0.001)
        if len(seen) == 2:
            break
    assert seen == ["events", "requeued"]
    assert reader.summary()["wakes"] == 2
    os.close(write)
    await asyncio.wait_for(gone.wait(), 1)
    os.close(read)


def test_a_full_pipe_drops_wakes_without_blocking() -> None:
    read, write = os.pipe()
    sender = WakeSender(write)
    for _ in range(20_000):  # far more than a pipe buffer holds
        sender.events()
    assert sender.dropped > 0
    os.close(read)
    sender.events()  # the reader is gone: still no error
    os.close(write)
