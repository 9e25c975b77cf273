"""``serve``'s delivery process starts first and waits: it imports while the API process does,
and opens the database only once the API process says it has started
(``delivery.wakeups.wait_ready``)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from crmhooks.delivery.wakeups import WakeSender, wait_ready
from crmhooks.settings import Settings
from crmhooks.worker import DeliveryProcess


def test_wait_ready_returns_on_the_first_record_and_false_at_end_of_file() -> None:
    read, write = os.pipe()
    try:
        sender = WakeSender(write)
        os.set_blocking(read, False)  # as a reader before it may have left the pipe
        woke: list[bool] = []
        waiter = threading.Thread(target=lambda: woke.append(wait_ready(read)))
        waiter.start()
        time.sleep(0.2)
        assert woke == []  # nothing written: still waiting
        sender.ready()
        waiter.join(5)
        assert woke == [True]
        os.close(write)
        write = -1
        assert wait_ready(read) is False
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)


def test_the_delivery_process_opens_nothing_before_the_api_starts_and_ends_with_it(
    tmp_path: Path,
) -> None:
    db_file = tmp_path / "late.db"
    settings = Settings(database_url=f"sqlite:///{db_file}", public_url="http://127.0.0.1:1")
    child = DeliveryProcess(settings)
    child.spawn()
    proc = child._proc
    assert proc is not None
    try:
        time.sleep(3.0)  # long enough to have imported and opened the database, were it not waiting
        assert proc.poll() is None
        assert not db_file.exists()  # it has not touched the database
    finally:
        # The API process stops before it started (a failed migration, say): its end of
        # the pipe closes and the waiting delivery process ends by itself, with status 0.
        os.close(child._write)
        assert proc.wait(15) == 0
        os.close(child._read)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its parent's wait is missing


def test_serve_forks_its_delivery_process_first_and_the_child_ends_with_it(
    tmp_path: Path,
) -> None:
    """The child exists by the time ``serve`` prints anything (it was forked first), and a
    SIGKILL of ``serve`` ends it: the forked copy did not keep the pipe's write end open."""
    env = {
        **os.environ,
        "CRMHOOKS_DATABASE_URL": f"sqlite:///{tmp_path / 'first.db'}",
        "PYTHONPATH": os.pathsep.join(sys.path),
        "PYTHONUNBUFFERED": "1",
    }
    serve = subprocess.Popen(
        [sys.executable, "-m", "crmhooks", "serve", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert serve.stdout is not None
        serve.stdout.readline()  # its first line: the space it created, after migrating
        children = Path(f"/proc/{serve.pid}/task/{serve.pid}/children").read_text().split()
        assert len(children) == 1
        child = int(children[0])
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        assert b"serve" in cmdline  # a copy of serve, not a fresh `crmhooks worker`
        time.sleep(1.0)  # let it begin delivering
        assert _alive(child)
        serve.kill()
        serve.wait(10)
        deadline = time.monotonic() + 15
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait(20)
